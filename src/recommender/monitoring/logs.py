"""The service's inference log, read back: one JSON object a line, as the contract fixes it.

The service logs each endpoint through ``bentoml.monitor(<endpoint>)`` (BentoML's log-file
exporter): every worker appends JSON lines to ``<log_dir>/<endpoint>/data/data.<worker>.log``,
rotated daily to ``data.<worker>.log.<YYYY-MM-DD>``. :data:`CONTRACT` lists each endpoint's
columns (``/tmp/loop/contract.md``, issue 23); BentoML's own ``timestamp``, ``request_id`` and
``trace_id`` are ignored.

The files are streamed line by line and only the requested columns are kept, as compact arrays:
numbers in :mod:`array` buffers, ids as int codes of an :class:`Interner` (one per kind of id, so
codes of ``recommend`` and ``feedback`` rows can be compared), lists of ids flattened with offsets.
A line that is not a JSON object, lacks a column or holds a value of the wrong type is counted
(:attr:`LogStats.malformed`, with a few examples naming the file and line) and skipped, never
fatal; a truncated last line (a server killed mid-write) is one of those.

Usage::

    frame, stats = read_log("logs/inference", "feedback", since=t0, until=t1)
    columns, stats = scan_log("logs/inference", "recommend", t0, t1, ["time", "items"])
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Kinds of column. ``user``/``item``: one raw id (int or str) kept as a code of the users' or
#: items' :class:`Interner`; ``users``/``items``: a list of them; ``count``: only the length of a
#: list (``predict``'s pairs); ``any``: the JSON value as is.
STR, OPT_STR, FLOAT, OPT_FLOAT, INT, BOOL = "str", "str?", "float", "float?", "int", "bool"
USER, ITEM, USERS, ITEMS, COUNT, ANY = "user", "item", "users", "items", "count", "any"

_COMMON = {
    "x_request_id": STR,
    "time": FLOAT,
    "latency_ms": FLOAT,
    "model_name": STR,
    "model_version": STR,
}
#: Each endpoint's columns, in the contract's order, with their kinds.
CONTRACT: dict[str, dict[str, str]] = {
    "recommend": {
        **_COMMON,
        "user_id": USER,
        "k": INT,
        "exclude_rated": BOOL,
        "genres": ANY,
        "items": ITEMS,
        "scores": ANY,
        "cold_start": BOOL,
    },
    "similar_items": {
        **_COMMON,
        "item_id": ITEM,
        "k": INT,
        "items": ITEMS,
        "scores": ANY,
        "unknown_item": BOOL,
    },
    "predict": {
        **_COMMON,
        "user_ids": USERS,
        "item_ids": ITEMS,
        "scores": ANY,
        "unknown_users": INT,
        "unknown_items": INT,
    },
    "feedback": {
        **_COMMON,
        "user_id": USER,
        "item_id": ITEM,
        "rating": OPT_FLOAT,
        "event": OPT_STR,
        "event_time": FLOAT,
        "served_request_id": OPT_STR,
    },
}
ENDPOINTS = tuple(CONTRACT)
#: How many malformed lines :class:`LogStats` quotes (file, line number, what is wrong).
MAX_EXAMPLES = 5


@dataclass
class LogStats:
    """What reading one endpoint's log found.

    Attributes:
        endpoint: The endpoint (monitor name).
        files: Data files read (live and rotated).
        lines: Non-blank lines read.
        records: Well-formed records inside the window (the rows returned).
        malformed: Lines skipped: not a JSON object, a column missing or of the wrong type.
        outside_window: Well-formed records whose ``time`` is outside ``[since, until)``.
        truncated: Of the malformed lines, files' last lines with no newline (cut mid-write).
        examples: Up to :data:`MAX_EXAMPLES` malformed lines as ``file:line: problem``.
    """

    endpoint: str
    files: int = 0
    lines: int = 0
    records: int = 0
    malformed: int = 0
    outside_window: int = 0
    truncated: int = 0
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Interner:
    """Raw ids (int or str) <-> dense int codes 0..n-1, in order of first sight."""

    def __init__(self) -> None:
        self.codes: dict[Any, int] = {}
        self.values: list[Any] = []

    def code(self, raw: Any) -> int:
        found = self.codes.get(raw)
        if found is None:
            found = self.codes[raw] = len(self.values)
            self.values.append(raw)
        return found

    def __len__(self) -> int:
        return len(self.values)

    def raw(self) -> np.ndarray:
        """The raw ids by code (an object array)."""
        out = np.empty(len(self.values), dtype=object)
        out[:] = self.values
        return out


@dataclass
class Interners:
    """The id tables one monitor run shares across endpoints: users and items."""

    user: Interner = field(default_factory=Interner)
    item: Interner = field(default_factory=Interner)


class Bad(Exception):
    """A record's column is missing or holds a value of the wrong type."""


def _number(value: Any, name: str, nullable: bool) -> float:
    kind = type(value)
    if kind is float or kind is int:
        if value != value or value in (math.inf, -math.inf):
            raise Bad(f"column {name!r}: {value!r} is not a finite number")
        return float(value)
    if value is None and nullable:
        return math.nan
    raise Bad(f"column {name!r}: expected a number{' or null' if nullable else ''}, got {value!r}")


_ID_TYPES = {int, str}


def _id(value: Any, name: str) -> Any:
    kind = type(value)
    if kind is int or kind is str:
        return value
    raise Bad(f"column {name!r}: expected an id (int or str), got {value!r}")


class Column:
    """One requested column: converts a record's value (raising :class:`Bad`), then stores it.

    Conversion and storage are apart so that a record is stored whole or not at all.
    """

    def __init__(self, name: str, kind: str, interners: Interners) -> None:
        self.name, self.kind = name, kind
        self.offsets: array | None = None
        self.strings: Interner | None = None
        self.ids: Interner | None = None
        self.values: Any
        if kind in (FLOAT, OPT_FLOAT):
            self.values = array("d")
        elif kind in (INT, COUNT):
            self.values = array("q")
        elif kind == BOOL:
            self.values = array("b")
        elif kind in (STR, OPT_STR):
            self.values, self.strings = array("i"), Interner()
        elif kind in (USER, ITEM, USERS, ITEMS):
            self.values = array("i")
            self.ids = interners.user if kind in (USER, USERS) else interners.item
            if kind in (USERS, ITEMS):
                self.offsets = array("q", [0])
        elif kind == ANY:
            self.values = []
        else:
            raise ValueError(f"unknown column kind {kind!r}")
        self.convert: Callable[[Any], Any] = getattr(self, f"_{_METHOD[kind]}")

    def _float(self, value: Any) -> float:
        return _number(value, self.name, self.kind == OPT_FLOAT)

    def _int(self, value: Any) -> int:
        if type(value) is not int or not -(2**63) <= value < 2**63:
            raise Bad(f"column {self.name!r}: expected a 64-bit integer, got {value!r}")
        return int(value)

    def _bool(self, value: Any) -> int:
        if type(value) is not bool:
            raise Bad(f"column {self.name!r}: expected true or false, got {value!r}")
        return 1 if value else 0

    def _str(self, value: Any) -> int:
        if type(value) is str or (value is None and self.kind == OPT_STR):
            assert self.strings is not None
            return self.strings.code(value)
        raise Bad(f"column {self.name!r}: expected a string, got {value!r}")

    def _id(self, value: Any) -> int:
        assert self.ids is not None
        return self.ids.code(_id(value, self.name))

    def _ids(self, value: Any) -> list[int]:
        if type(value) is not list:
            raise Bad(f"column {self.name!r}: expected a list of ids, got {value!r}")
        assert self.ids is not None
        if not set(map(type, value)) <= _ID_TYPES:
            bad = next(v for v in value if type(v) not in _ID_TYPES)
            raise Bad(f"column {self.name!r}: expected ids (int or str), got {bad!r}")
        try:  # every id seen before: the common case, a dict lookup each
            return list(map(self.ids.codes.__getitem__, value))
        except KeyError:
            return list(map(self.ids.code, value))

    def _count(self, value: Any) -> int:
        if type(value) is not list:
            raise Bad(f"column {self.name!r}: expected a list, got {value!r}")
        return len(value)

    def _any(self, value: Any) -> Any:
        return value

    def store(self, converted: Any) -> None:
        if self.offsets is None:
            self.values.append(converted)
        else:
            self.values.extend(converted)
            self.offsets.append(len(self.values))

    def __len__(self) -> int:
        return len(self.values) if self.offsets is None else len(self.offsets) - 1

    def array(self) -> np.ndarray:
        """The stored values as a NumPy array (codes for ids and strings; flat for lists)."""
        if self.kind == ANY:
            out = np.empty(len(self.values), dtype=object)
            out[:] = self.values
            return out
        if not len(self.values):
            return np.zeros(0, dtype=_DTYPES[self.kind])
        # A read-only view of the buffer: call once the scan is over (the array cannot grow).
        return np.frombuffer(self.values, dtype=_DTYPES[self.kind])

    def offsets_array(self) -> np.ndarray:
        assert self.offsets is not None
        return np.frombuffer(self.offsets, dtype=np.int64)


_METHOD = {
    FLOAT: "float", OPT_FLOAT: "float", INT: "int", BOOL: "bool", STR: "str", OPT_STR: "str",
    USER: "id", ITEM: "id", USERS: "ids", ITEMS: "ids", COUNT: "count", ANY: "any",
}  # fmt: skip
#: Codes of ids and strings: C ints (32 bits), half the memory of int64 for millions of items.
_LONG = np.dtype(f"i{array('i').itemsize}")
_DTYPES: dict[str, Any] = {
    FLOAT: np.float64, OPT_FLOAT: np.float64, INT: np.int64, COUNT: np.int64, BOOL: np.int8,
    STR: _LONG, OPT_STR: _LONG, USER: _LONG, ITEM: _LONG, USERS: _LONG, ITEMS: _LONG,
}  # fmt: skip


def log_files(log_dir: str | Path, endpoint: str) -> list[Path]:
    """The endpoint's data files, live and rotated (``data.*.log*``), in name order."""
    folder = Path(log_dir) / endpoint / "data"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("data.*.log*") if p.is_file())


def _columns_for(
    endpoint: str, fields: Sequence[str] | Mapping[str, str] | None, interners: Interners
) -> dict[str, Column]:
    if endpoint not in CONTRACT:
        raise ValueError(f"unknown endpoint {endpoint!r}: expected one of {', '.join(ENDPOINTS)}")
    schema = CONTRACT[endpoint]
    if fields is None:
        wanted: Mapping[str, str] = schema
    elif isinstance(fields, Mapping):
        wanted = fields
    else:
        wanted = {name: schema.get(name, "") for name in fields}
    unknown = [name for name in wanted if name not in schema]
    if unknown:
        raise ValueError(f"{endpoint} has no column(s) {unknown}: its columns are {list(schema)}")
    return {name: Column(name, kind, interners) for name, kind in wanted.items()}


def scan_log(
    log_dir: str | Path,
    endpoint: str,
    since: float | None = None,
    until: float | None = None,
    fields: Sequence[str] | Mapping[str, str] | None = None,
    interners: Interners | None = None,
) -> tuple[dict[str, Column], LogStats]:
    """Stream ``endpoint``'s log and keep ``fields`` of the records with ``since <= time < until``.

    Args:
        log_dir: The service's ``serve.log_dir``.
        endpoint: One of :data:`ENDPOINTS`.
        since, until: The window in unix seconds (``None``: open on that side).
        fields: Column names (their contract kinds), or names with a kind of their own
            (``{"user_ids": COUNT}``); ``None``: every column.
        interners: Id tables to share with other scans (default: fresh ones).

    Returns:
        The columns by name (each as long as ``stats.records``) and the :class:`LogStats`.
    """
    interners = interners or Interners()
    columns = _columns_for(endpoint, fields, interners)
    stats = LogStats(endpoint)
    for path in log_files(log_dir, endpoint):
        stats.files += 1
        _scan_file(path, list(columns.values()), since, until, stats)
    return columns, stats


# The reader's hot loop: one pass per line, no function call it can avoid.
def _scan_file(
    path: Path, columns: list[Column], since: float | None, until: float | None, stats: LogStats
) -> None:
    loads = json.loads
    lo = -math.inf if since is None else since
    hi = math.inf if until is None else until
    pairs = [(c.name, c.convert) for c in columns]
    stores = [c.store for c in columns]
    with path.open("rb") as f:
        lineno = 0
        for line in f:
            lineno += 1
            if not line.strip():
                continue
            stats.lines += 1
            try:
                record = loads(line)
                if type(record) is not dict:
                    raise Bad(f"not a JSON object: {type(record).__name__}")
                t = record.get("time")
                if type(t) is not float and type(t) is not int:
                    raise Bad(f"column 'time': expected unix seconds, got {t!r}")
                if not lo <= t < hi:
                    if t - t != 0:  # NaN or infinite
                        raise Bad(f"column 'time': {t!r} is not a finite number")
                    stats.outside_window += 1
                    continue
                row = [convert(record[name]) for name, convert in pairs]
            except KeyError as exc:
                _malformed(stats, path, lineno, line, f"no column {exc.args[0]!r}")
                continue
            except (Bad, ValueError, TypeError, OverflowError, RecursionError) as exc:
                what = str(exc) if isinstance(exc, Bad) else f"not JSON ({exc})"
                _malformed(stats, path, lineno, line, what)
                continue
            for store, value in zip(stores, row, strict=True):
                store(value)
            stats.records += 1


def _malformed(stats: LogStats, path: Path, lineno: int, line: bytes, problem: str) -> None:
    stats.malformed += 1
    if not line.endswith(b"\n"):  # only a file's last line can lack its newline
        stats.truncated += 1
        problem = f"truncated last line ({problem})"
    if len(stats.examples) < MAX_EXAMPLES:
        stats.examples.append(f"{path}:{lineno}: {problem[:200]}")


def _raw_ids(interner: Interner) -> np.ndarray:
    """Raw ids by code: int64 when every id is an int, else objects."""
    values = interner.values
    if values and all(type(v) is int for v in values):
        try:
            return np.asarray(values, dtype=np.int64)
        except OverflowError:  # an id past 64 bits stays a Python int
            return interner.raw()
    return interner.raw() if values else np.zeros(0, dtype=np.int64)


def _frame_column(column: Column) -> Any:
    kind, values = column.kind, column.array()
    if kind == BOOL:
        return values.astype(bool)
    if kind in (STR, OPT_STR):  # pandas' text dtype, nulls as NaN, empty or not
        assert column.strings is not None
        text = column.strings.raw()[values] if len(values) else np.zeros(0, dtype=object)
        return pd.Series(text, dtype="str")
    if kind in (USER, ITEM):
        assert column.ids is not None
        return _raw_ids(column.ids)[values] if len(values) else np.zeros(0, dtype=np.int64)
    if kind in (USERS, ITEMS):
        assert column.ids is not None
        raw, offsets = column.ids.raw()[values], column.offsets_array()
        out = np.empty(len(offsets) - 1, dtype=object)
        out[:] = [raw[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        return out
    return values.copy()


def read_log(
    log_dir: str | Path,
    endpoint: str,
    since: float | None = None,
    until: float | None = None,
) -> tuple[pd.DataFrame, LogStats]:
    """Read ``endpoint``'s inference log into a frame of the contract's columns.

    Rows are the well-formed records with ``since <= time < until`` (unix seconds; ``None``
    leaves that side open), in file order (files by name, then line). Ids keep their raw type
    (int64 columns when every id is an int); text columns have pandas' ``str`` dtype, ``NaN``
    where null (``event``, ``served_request_id``); ``rating`` is NaN where null; list columns
    hold Python lists. An empty or missing log gives an empty frame with the same columns.

    Raises:
        ValueError: ``endpoint`` is not one of :data:`ENDPOINTS`.
    """
    columns, stats = scan_log(log_dir, endpoint, since, until)
    frame = pd.DataFrame({name: _frame_column(c) for name, c in columns.items()})
    return frame, stats
