"""Servers as child processes on this machine: free loopback ports, a process group of their own,
waiting until they answer, and stopping them with everything they started.

    port = free_port()
    proc = start_in_group(["some-server", "--port", str(port)], log=folder / "server.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc, timeout=60)
    except NotReady as exc:
        stop_group(proc)
        raise SomeError(f"{exc}; its log: {folder / 'server.log'}") from None
    ...
    stop_group(proc)   # SIGTERM to the whole group, SIGKILL to what is left after the timeout

The standard library only (the tracking stack, the tests and the benchmarks use it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

#: Every server the project starts binds here.
LOOPBACK = "127.0.0.1"


class NotReady(Exception):
    """A process exited before it was ready (``returncode`` is set), or was not ready in time."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


# --- ports --------------------------------------------------------------------------------------


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct TCP ports nothing listens on right now (the OS picks them).

    They are bound all at once while picked, so they differ from each other (gRPC servers share a
    port silently, SO_REUSEPORT, so two must never get one). Another process may still take one
    before the caller binds it: pass a port to the server right away.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# --- starting and waiting -----------------------------------------------------------------------


def start_in_group(
    args: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen:
    """Start ``args`` in a session (so a process group) of its own, output to ``log``.

    Its pid leads the group, so :func:`stop_group` reaches every process it starts (server
    workers); being in a session of its own, a Ctrl-C at the caller's terminal does not reach it.
    """
    with open(log, "w") as out:
        return subprocess.Popen(
            list(args),
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    proc: subprocess.Popen | None = None,
    interval: float = 0.25,
    what: str = "the process",
) -> None:
    """Call ``ready`` until it returns True.

    Raises:
        NotReady: ``proc`` exited first (``returncode`` set; "<what> exited with N"), or
            ``timeout`` seconds passed ("<what> was not ready within N s").
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise NotReady(f"{what} exited with {proc.returncode}", proc.returncode)
        if ready():
            return
        if time.monotonic() >= deadline:
            raise NotReady(f"{what} was not ready within {timeout:.0f} s")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2) -> bool:
    """Whether ``url`` answers a GET with 200 (no proxy: the servers are on loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:  # refused, reset, timed out, or an HTTP error status (URLError is an OSError)
        return False


def wait_http(
    url: str,
    *,
    timeout: float,
    proc: subprocess.Popen | None = None,
    interval: float = 0.25,
    what: str | None = None,
) -> None:
    """:func:`wait_until` ``url`` answers 200 (see there for :class:`NotReady`)."""
    wait_until(
        lambda: http_ok(url), timeout=timeout, proc=proc, interval=interval, what=what or url
    )


# --- stopping -----------------------------------------------------------------------------------


def stop_group(process: subprocess.Popen | int, timeout: float = 30, kill_wait: float = 10) -> None:
    """Stop the process group ``process`` leads, every member included, and wait until it is gone.

    SIGTERM to the group; SIGKILL to whatever is left of it after ``timeout`` seconds. A leader
    that is this process's child is reaped (a zombie keeps its group alive). Nothing to do when
    the group is gone already. ``process`` must have been started in a group of its own
    (:func:`start_in_group`, ``start_new_session=True``); a pid (say, from a pid file) that is
    alive but does not lead its group is refused, so a stale file never stops someone else's.

    Raises:
        ValueError: ``process`` is alive and not a group leader.
    """
    pid = process if isinstance(process, int) else process.pid
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) != pid:
            raise ValueError(f"process {pid} does not lead a process group: not stopping it")
    if not _signal(pid, signal.SIGTERM) or _wait_gone(process, timeout):
        return
    if _signal(pid, signal.SIGKILL):
        _wait_gone(process, kill_wait)


def _signal(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False if the group does not exist."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies, dead but not yet reaped by
    their parent, do not count: an orphan's parent is init, which may be slow to reap in a
    container). Read from ``/proc`` where there is one, else whether the group exists."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return _signal(pgid, 0)
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # it ended while we looked
            continue
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _wait_gone(process: subprocess.Popen | int, timeout: float) -> bool:
    """Wait until no member of the group is left (reaping the leader); whether it is gone."""
    pid = process if isinstance(process, int) else process.pid
    deadline = time.monotonic() + timeout
    while True:
        _reap(process)
        if not group_alive(pid):
            _reap(process)  # it may have died between the two looks
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _reap(process: subprocess.Popen | int) -> None:
    if isinstance(process, subprocess.Popen):
        process.poll()  # sets its returncode
        return
    with contextlib.suppress(ChildProcessError):  # not our child: its parent reaps it
        os.waitpid(process, os.WNOHANG)
