"""The local stack: PostgreSQL, SeaweedFS (S3) and an MLflow server with a login, on 127.0.0.1."""
