"""recommender.core.processes on real processes and real ports (each test well under a second,
except the SIGKILL case's half-second grace)."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import closed_port

from recommender.core.processes import (
    NotReady,
    free_port,
    free_ports,
    group_alive,
    http_ok,
    port_free,
    start_in_group,
    stop_group,
    wait_http,
    wait_until,
)

#: A child that starts a grandchild (in its group), writes the grandchild's pid, and waits.
#: With IGNORE_TERM set, both ignore SIGTERM (a server that will not stop cleanly).
PARENT = """
import os, signal, subprocess, sys, time
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the grandchild (SIG_IGN is)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(child.pid))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def start_family(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, int]:
    """A child in a group of its own and its grandchild's pid, once the grandchild runs."""
    pid_file = tmp_path / "grandchild.pid"
    proc = start_in_group(
        [sys.executable, "-c", PARENT, str(pid_file)],
        tmp_path / "family.log",
        env={**os.environ, **env},
    )
    wait_until(pid_file.is_file, timeout=30, proc=proc, interval=0.02, what="the parent")
    return proc, int(pid_file.read_text())


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_stop_group_ends_the_child_and_what_it_started(tmp_path: Path) -> None:
    proc, grandchild = start_family(tmp_path)
    assert os.getpgid(proc.pid) == proc.pid and os.getpgid(grandchild) == proc.pid
    assert proc.pid != os.getpgid(0)  # not the test's own group
    stop_group(proc, timeout=10)
    assert proc.returncode is not None  # reaped
    assert not running(grandchild)
    assert not group_alive(proc.pid)
    stop_group(proc)  # a second stop has nothing to do


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_a_group_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    proc, grandchild = start_family(tmp_path, IGNORE_TERM="1")
    started = time.monotonic()
    stop_group(proc.pid, timeout=0.5)  # by pid, as `python -m recommender.stack down` does
    assert 0.5 <= time.monotonic() - started < 10
    assert not running(proc.pid) and not running(grandchild)
    assert not group_alive(proc.pid)
    proc.wait(timeout=5)  # reaped already by stop_group's waitpid: Popen copes


def test_a_pid_that_does_not_lead_its_group_is_refused(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # our group
    try:
        with pytest.raises(ValueError, match="does not lead a process group"):
            stop_group(proc)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(port_free(p) for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        assert not port_free(s.getsockname()[1])


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_wait_http_returns_once_the_url_answers_200(http_server: str) -> None:
    wait_http(http_server + "/", timeout=10)
    assert not http_ok(http_server + "/no-such-file")  # 404
    with closed_port() as port:
        assert not http_ok(f"http://127.0.0.1:{port}/")


def test_wait_until_says_the_process_exited_with_its_status(tmp_path: Path) -> None:
    proc = start_in_group([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log")
    with pytest.raises(NotReady, match="the server exited with 3") as failed:
        wait_until(lambda: False, timeout=30, proc=proc, interval=0.02, what="the server")
    assert failed.value.returncode == 3


def test_wait_until_gives_up_after_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(NotReady, match="x was not ready within 0 s") as failed:
        wait_until(lambda: False, timeout=0.2, interval=0.02, what="x")
    assert failed.value.returncode is None
    assert time.monotonic() - started < 5
