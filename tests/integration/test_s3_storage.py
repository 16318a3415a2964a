"""S3 object storage on a real SeaweedFS (``recommender.stack.seaweedfs``): DVC's remote.

One SeaweedFS serves the module on 127.0.0.1. The pipeline's outputs go through ``dvc push`` and
come back through ``dvc pull`` into a scratch repository with no cache and no outputs, byte for
byte, with keys from the environment and then from DVC's local config; the server refuses a wrong
key or secret, to boto3 and to DVC alike. (MLflow's artifacts
in S3: ``test_mlflow_server.py``.)
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support import child_env, closed_port, make_scratch_repo, run_checked, tiny_raw

from recommender.stack.seaweedfs import SeaweedFS, SeaweedFSError, start_seaweedfs

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.e2e]

BUCKET = "recommender"
_AWS_KEYS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    with start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), bucket=BUCKET) as server:
        yield server


def _env(repo: Path, **extra: str) -> dict[str, str]:
    # No S3 keys but those a test gives: the runner's own must not make a refusal pass.
    env = child_env(MLFLOW_TRACKING_URI=f"sqlite:///{repo.parent / 'mlflow.db'}", **extra)
    for key in _AWS_KEYS:
        if key not in extra:
            env.pop(key, None)
    return env


def _dvc(
    repo: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = env or _env(repo)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _digests(repo: Path, outs: list[str]) -> dict[str, str]:
    files = [p for out in outs for p in _files(repo / out)]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def _cached_outs(repo: Path) -> list[str]:
    """The outputs on disk that DVC caches (and so pushes): not those marked ``cache: false``."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    found = []
    for stage in stages.values():
        for out in stage.get("outs", []):
            path, options = next(iter(out.items())) if isinstance(out, dict) else (out, None)
            if (options or {}).get("cache", True) and (repo / path).exists():
                found.append(path)
    return found


def _s3_client(s3: SeaweedFS, config: object = None, **override: str):  # noqa: ANN202
    import boto3

    return boto3.client("s3", config=config, **{**s3.boto3_kwargs(), **override})


def test_a_bad_bucket_name_fails_before_anything_starts(tmp_path: Path) -> None:
    # SeaweedFS itself would only log a warning and run without the bucket.
    with pytest.raises(SeaweedFSError, match=r"'Models' is not a valid S3 bucket name"):
        start_seaweedfs(tmp_path, bucket="Models")
    assert not (tmp_path / "seaweedfs.log").exists()


def test_a_taken_port_fails_with_the_servers_own_reason(tmp_path: Path) -> None:
    with closed_port() as port, pytest.raises(SeaweedFSError) as failed:
        start_seaweedfs(tmp_path, s3_port=port, timeout=60)
    message = str(failed.value)
    assert "exited with 1" in message and f"port {port} for S3" in message, message
    assert not (tmp_path / "s3-identities.json").exists()  # the keys do not outlive the attempt


def test_objects_round_trip_and_wrong_credentials_are_refused(s3: SeaweedFS) -> None:
    from boto3.s3.transfer import TransferConfig
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    # Its usage telemetry is on unless told otherwise; every component on loopback.
    assert {"-master.telemetry=false", "-ip.bind=127.0.0.1"} <= set(s3.proc.args)
    client = _s3_client(s3)
    # Two 5 MiB parts: the multipart upload DVC and MLflow use for large files.
    payload = hashlib.sha256(b"seed").digest() * (10 * 1024 * 1024 // 32 + 1)
    parts = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    client.upload_fileobj(io.BytesIO(payload), BUCKET, "probe/multipart.bin", Config=parts)
    back = io.BytesIO()
    client.download_fileobj(BUCKET, "probe/multipart.bin", back)
    assert back.getvalue() == payload

    wrong_secret = _s3_client(s3, aws_secret_access_key=s3.secret_access_key[::-1])
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        wrong_secret.get_object(Bucket=BUCKET, Key="probe/multipart.bin")
    unknown_key = _s3_client(s3, aws_access_key_id="NOSUCHKEY0000000")
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        unknown_key.list_objects_v2(Bucket=BUCKET)
    anonymous = _s3_client(s3, config=Config(signature_version=UNSIGNED))
    with pytest.raises(ClientError, match="AccessDenied|Forbidden|403"):
        anonymous.get_object(Bucket=BUCKET, Key="probe/multipart.bin")


def test_dvc_push_then_pull_restores_the_pipeline_outputs(s3: SeaweedFS, tmp_path: Path) -> None:
    repo = make_scratch_repo(tmp_path)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for name, values in tiny_raw().items():
        params[name] = {**(params.get(name) or {}), **values}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # The data stages: the models folder is pushed the same way (a directory of files), without
    # the cost of importing TensorFlow and training here.
    _dvc(repo, "repro", "preprocess")

    # The remote as the README tells users to set it: URL and endpoint in .dvc/config (committed).
    prefix = "dvc-store"
    _dvc(repo, "remote", "add", "-d", "storage", f"s3://{BUCKET}/{prefix}")
    _dvc(repo, "remote", "modify", "storage", "endpointurl", s3.endpoint_url)
    outs = _cached_outs(repo)
    assert {"data/interim", "data/processed"} <= set(outs), outs
    before = _digests(repo, outs)
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    cached = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}

    # Keys from the environment, as a CI job passes them. A wrong secret: refused, and DVC says so.
    wrong = _env(repo, **{**s3.client_env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    refused = _dvc(repo, "push", "--with-deps", "preprocess", env=wrong, check=False)
    assert refused.returncode != 0
    assert "Forbidden" in refused.stderr, refused.stderr
    assert _s3_client(s3).list_objects_v2(Bucket=BUCKET, Prefix=prefix)["KeyCount"] == 0
    _dvc(repo, "push", "--with-deps", "preprocess", env=_env(repo, **s3.client_env()))
    listed = _s3_client(s3).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    stored = {o["Key"] for page in listed for o in page.get("Contents", [])}
    assert stored == {f"{prefix}/files/md5/{name}" for name in cached}

    shutil.rmtree(repo / ".dvc" / "cache")
    for out in outs:
        if (repo / out).is_dir():
            shutil.rmtree(repo / out)
        else:
            (repo / out).unlink()
    # Keys from DVC's git-ignored local config, none in the environment.
    _dvc(repo, "remote", "modify", "--local", "storage", "access_key_id", s3.access_key_id)
    _dvc(repo, "remote", "modify", "--local", "storage", "secret_access_key", s3.secret_access_key)
    assert s3.secret_access_key not in (repo / ".dvc" / "config").read_text()
    run_checked(["git", "check-ignore", "-q", ".dvc/config.local"], repo)
    _dvc(repo, "pull", "--with-deps", "preprocess")

    assert _digests(repo, outs) == before
    # Restored: nothing to rerun but the feedback stage, which DVC always runs (it reads the
    # service's log, which grows outside the pipeline).
    status = json.loads(_dvc(repo, "status", "--json", "--with-deps", "preprocess").stdout)
    assert status == {"feedback": ["always changed"]}, status
