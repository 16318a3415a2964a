"""The window of log a monitor run reads: ``[until - window_hours, until)`` in unix seconds."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from recommender.core.errors import ConfigError


@dataclass(frozen=True)
class Window:
    """``since`` (None: the start of the log) to ``until`` (exclusive), unix seconds."""

    since: float | None
    until: float
    hours: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": iso(self.since) if self.since is not None else None,
            "until": iso(self.until),
            "since_unix": self.since,
            "until_unix": self.until,
            "hours": self.hours,
        }


def iso(seconds: float) -> str:
    """Unix seconds as an ISO time in UTC (``2026-12-07T14:00:00Z``)."""
    import datetime as dt

    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: str | float, where: str) -> float:
    """Unix seconds from a number or an ISO date/time (naive means UTC)."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{where}: {value!r} is not a time (expected ISO, e.g. '2026-12-07T14:00', UTC, "
            "or unix seconds)"
        ) from exc
    if stamp is pd.NaT:
        raise ConfigError(f"{where}: a time is required, got {value!r}")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return float(stamp.timestamp())


def parse_hours(text: str) -> float | None:
    """``--window-hours``: a positive number of hours, or ``all`` (the whole log)."""
    if text.strip().lower() in ("all", "none", "null"):
        return None
    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if not hours > 0 or math.isinf(hours):
        raise ConfigError(f"--window-hours: {text!r} is not a positive number of hours (or 'all')")
    return hours


def resolve_window(
    until: str | float | None,
    hours: float | None,
    *,
    until_from: str = "monitor.until",
    now: float | None = None,
) -> Window:
    """The window ending at ``until`` (None: now) and ``hours`` long (None: the whole log)."""
    end = time.time() if now is None else now
    if until is not None:
        end = parse_time(until, until_from)
    if hours is not None and not hours > 0:
        raise ConfigError(f"the window must be positive hours (or null: all), got {hours!r}")
    since = end - hours * 3600.0 if hours is not None else None
    return Window(since, end, hours)
