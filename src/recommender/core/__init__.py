"""What every stage shares: the typed params, errors, atomic writers, the dataset schema, the
stage runner and the telemetry switch. Light imports only (no TensorFlow, no MLflow)."""
