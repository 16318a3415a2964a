"""What tests in every folder share: the tiny datasets, real child processes and scratch repos.

``conftest.py`` files turn these into fixtures; tests import the helpers directly
(``from support import tiny_params``). Everything that starts a process binds 127.0.0.1 and
stops it again.
"""

from __future__ import annotations

import ast
import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

# free_port and free_ports are re-exported: tests and benchmarks import them from here.
from recommender.core import processes
from recommender.core.processes import free_port as free_port
from recommender.core.processes import free_ports as free_ports
from recommender.core.telemetry import QUIET, TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# --- the tiny pipeline dataset ------------------------------------------------------------------

#: The seeded synthetic data every pipeline-level test runs on (~6 s to train a model on 2 cores).
TINY_SYNTHETIC = {"n_users": 150, "n_items": 200, "n_ratings": 6000}
#: params.yaml sections for it: thresholds it passes, and short training.
TINY = {
    "synthetic": TINY_SYNTHETIC,
    "validate": {"min_ratings": 100},
    "train": {
        "epochs": 4,
        "patience": 3,
        "batch_size": 256,
        "learning_rate": 0.01,
        # The default family brings its own training knobs, sized for MovieLens: small data
        # wants the same short, fast training as the others.
        "two_tower": {"batch_size": 256, "learning_rate": 0.01, "patience": 3, "epochs": 4},
    },
    "register": {"bootstrap_resamples": 500},
}


def tiny_raw(**overrides: dict) -> dict[str, Any]:
    """:data:`TINY` with per-section overrides merged in (one level deep), as a plain mapping."""
    raw: dict[str, Any] = {name: dict(values) for name, values in TINY.items()}
    for name, values in overrides.items():
        raw[name] = {**raw.get(name, {}), **values}
    return raw


def tiny_params(**overrides: dict) -> Any:
    """Validated params for the tiny dataset (see :func:`tiny_raw`)."""
    from recommender.core.config import parse_params

    return parse_params(tiny_raw(**overrides))


# --- the real MovieLens 100K ----------------------------------------------------------------------

#: Where the ingest stage downloads ``data.source: movielens-100k`` to (git-ignored).
ML100K_DOWNLOADS = ROOT / "data" / "raw" / "movielens-100k"


def ml100k_candidates() -> list[Path]:
    """Where the tests look for MovieLens 100K, in order: ``$ML100K_DIR`` alone when it is set;
    else ``../shared/data/ml-100k`` beside the checkout, then the ingest stage's download folder.
    The set is read in place: its license forbids copying it into the repository."""
    if os.environ.get("ML100K_DIR"):
        return [Path(os.environ["ML100K_DIR"])]
    return [ROOT.parent / "shared" / "data" / "ml-100k", ML100K_DOWNLOADS / "ml-100k"]


def find_ml100k() -> Path | None:
    """The first of :func:`ml100k_candidates` holding ``u.data``, or None."""
    return next((p for p in ml100k_candidates() if (p / "u.data").is_file()), None)


# --- the tiny matrix for model tests ------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """One split's ratings as index arrays."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray


@dataclass(frozen=True)
class Synthetic:
    """A synthetic dataset following the preprocess contract (row 0 = unknown).

    Attributes:
        train, val, test: Warm splits (users and items all seen in train).
        cold: Ratings of ``cold_items``, which appear in no other split.
        item_features: ``(n_items + 1, n_genres + 2)`` genre multi-hot, year_norm, year_missing.
        user_features: ``(n_users + 1, 3)`` age bucket, gender, occupation codes (0 = unknown).
        user_cardinalities: Number of codes per user feature column, 0 included.
    """

    n_users: int
    n_items: int
    train: Split
    val: Split
    test: Split
    cold: Split
    cold_items: np.ndarray
    item_features: np.ndarray
    user_features: np.ndarray
    user_cardinalities: tuple[int, int, int]
    global_mean: float


def make_synthetic(
    n_users: int = 300,
    n_items: int = 200,
    n_ratings: int = 15_000,
    rank: int = 4,
    n_genres: int = 8,
    n_cold: int = 20,
    noise: float = 0.3,
    seed: int = 0,
) -> Synthetic:
    """Ratings ``mu + b_u + b_i + u . v + noise``, rounded to 1..5, with taste driven by features.

    Item factors and biases are mostly a function of genres, user factors mostly a function of the
    user's codes, so a content model can predict items it never saw rated.
    """
    rng = np.random.default_rng(seed)
    genres = (rng.random((n_items, n_genres)) < 0.25).astype(np.float32)
    genres[np.arange(n_items), rng.integers(0, n_genres, n_items)] = 1.0  # at least one genre
    year = rng.random(n_items).astype(np.float32)
    genre_vec = rng.normal(0, 0.6, (n_genres, rank))
    v = genres @ genre_vec / np.sqrt(genres.sum(1, keepdims=True))
    v = v + rng.normal(0, 0.15, (n_items, rank))
    b_i = genres @ rng.normal(0, 0.35, n_genres) + 0.4 * (year - 0.5) + rng.normal(0, 0.1, n_items)

    cards = (5, 3, 6)  # codes 1..c-1 are used; 0 stays "unknown"
    codes = np.stack([rng.integers(1, c, n_users) for c in cards], axis=1)
    code_vec = [rng.normal(0, 0.5, (c, rank)) for c in cards]
    u = sum(code_vec[k][codes[:, k]] for k in range(3)) + rng.normal(0, 0.2, (n_users, rank))
    b_u = rng.normal(0, 0.3, n_users)

    # Distinct (user, item) pairs; every user and item has at least one (before splitting).
    flat = rng.choice(n_users * n_items, size=n_ratings, replace=False)
    per_user = np.arange(n_users) * n_items + rng.integers(0, n_items, n_users)
    per_item = rng.integers(0, n_users, n_items) * n_items + np.arange(n_items)
    flat = np.unique(np.concatenate([flat, per_user, per_item]))
    uu, ii = flat // n_items, flat % n_items
    truth = 3.5 + b_u[uu] + b_i[ii] + np.einsum("ij,ij->i", u[uu], v[ii])
    rating = np.clip(np.round(truth + rng.normal(0, noise, truth.size)), 1, 5).astype(np.float32)
    user_idx, item_idx = (uu + 1).astype(np.int32), (ii + 1).astype(np.int32)

    cold_items = rng.choice(np.arange(1, n_items + 1), n_cold, replace=False).astype(np.int32)
    is_cold = np.isin(item_idx, cold_items)
    warm = np.flatnonzero(~is_cold)
    rng.shuffle(warm)
    n_test, n_val = len(warm) // 10, len(warm) // 10
    parts = {
        "test": warm[:n_test],
        "val": warm[n_test : n_test + n_val],
        "train": warm[n_test + n_val :],
    }

    def split(rows: np.ndarray) -> Split:
        return Split(user_idx[rows], item_idx[rows], rating[rows])

    item_features = np.zeros((n_items + 1, n_genres + 2), dtype=np.float32)
    item_features[1:, :n_genres] = genres
    item_features[1:, n_genres] = year
    item_features[0, n_genres + 1] = 1.0  # row 0: unknown, year missing
    user_features = np.zeros((n_users + 1, 3), dtype=np.int32)
    user_features[1:] = codes
    train = split(parts["train"])
    return Synthetic(
        n_users=n_users,
        n_items=n_items,
        train=train,
        val=split(parts["val"]),
        test=split(parts["test"]),
        cold=split(np.flatnonzero(is_cold)),
        cold_items=np.sort(cold_items),
        item_features=item_features,
        user_features=user_features,
        user_cardinalities=cards,
        global_mean=float(train.rating.mean()),
    )


# --- child processes ----------------------------------------------------------------------------

_MLFLOW_TARGETS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the block runs.

    The socket stays bound but never listens, so no other process (another test's server) can
    take the port meanwhile, and a client gets "connection refused" at once.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for processes a test starts: telemetry off, quiet, loopback not proxied.

    MLflow's ``set_tracking_uri``/``set_registry_uri`` write ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` into this process's environment, so after any in-process MLflow use
    they may name another test's store: a child gets them only when ``extra`` names them.
    """
    env = {k: v for k, v in os.environ.items() if k not in _MLFLOW_TARGETS}
    env.update(TELEMETRY_OFF)
    env.update(QUIET)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it dies or times out."""
    try:
        processes.wait_http(url, timeout=timeout, proc=proc, interval=0.5, what=f"server at {url}")
    except processes.NotReady as exc:
        pytest.fail(f"{exc}:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in a group of its own (``start_new_session=True``), its workers
    included: SIGTERM, SIGKILL after 30 s."""
    processes.stop_group(proc)


@dataclass
class Server:
    """A running server process and where it answers."""

    url: str
    proc: subprocess.Popen
    log: Path


def start_server(
    args: list[str], ready_path: str, env: dict[str, str], log: Path, timeout: float = 180
) -> Server:
    """Start ``args`` (which must listen on ``--port`` :func:`free_port`'s port, appended here)
    on 127.0.0.1 and return once ``ready_path`` answers 200; on any failure, stop it again."""
    port = free_port()
    proc = processes.start_in_group(
        [*args, "--host", "127.0.0.1", "--port", str(port)], log, env=env, cwd=log.parent
    )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_http(server.url + ready_path, proc, log, timeout)
    except BaseException:
        stop(proc)  # never leave a server behind, whatever went wrong
        raise
    return server


# --- scratch DVC repositories -------------------------------------------------------------------


def run_checked(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run a command; on failure, fail the test with its output."""
    proc = subprocess.run(
        args, cwd=cwd, env=env or child_env(), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_scratch_repo(folder: Path) -> Path:
    """A git + DVC repository holding a copy of the project's pipeline and code.

    DVC then sees the same dependency graph a user's clone has; the code the stages run is the
    installed ``recommender`` package.
    """
    repo = folder / "project"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("pipeline", "src", "serving", ".dvc"):
        shutil.copytree(
            ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache")
        )
    shutil.copy(ROOT / "requirements.lock", repo / "requirements.lock")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run_checked(["git", "init", "-q"], repo)
    run_checked([*git, "add", "-A"], repo)
    run_checked([*git, "commit", "-qm", "init"], repo)
    return repo


def change_first_user_id(vocab: Path) -> None:
    """Change one byte of a bundle's ``vocab.json``: the first user id's first digit (1 <-> 0),
    which, loaded, would swap two users' predictions."""
    text = vocab.read_text()
    at = text.index("null,\n    ", text.index('"user"')) + len("null,\n    ")
    assert text[at].isdigit(), text[at - 20 : at + 20]
    vocab.write_text(text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1 :])


# --- the library's imports, read with ast -------------------------------------------------------


def imported_names(path: Path, package: str) -> set[str]:
    """Dotted names ``path`` imports anywhere in its body (relative imports resolved)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # may be submodules
    return names


def listeners(pid: int) -> set[tuple[str, int]]:
    """(address, port) of each TCP socket process ``pid`` listens on (IPv4-mapped IPv6 shown as
    IPv4): its socket inodes matched against the namespace's /proc/net/tcp{,6}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            # Each 32-bit word is in host (little-endian) byte order.
            words = [bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, len(hex_addr), 8)]
            addr = ipaddress.ip_address(b"".join(words))
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
                addr = addr.ipv4_mapped
            found.add((str(addr), int(hex_port, 16)))
    return found


def load_benchmark(name: str, filename: str, heavy: frozenset[str]) -> Any:
    """``benchmarks/<filename>`` imported as module ``name``; fails if importing it loads any
    of ``heavy`` (a benchmark's report code must stay cheap to test)."""
    import importlib.util

    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    loaded = heavy & (set(sys.modules) - before)
    assert not loaded, f"importing benchmarks/{filename} loads {loaded}"
    return module
