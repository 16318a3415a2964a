"""The benchmark reports git tracks name no path of the machine that made them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import ROOT

#: A path from the file system's root (``/home/...``, ``/tmp/...``) or a drive (``C:\\...``).
ABSOLUTE = re.compile(r"""(?:^|[\s"'`(=,\[])(/(?:[\w.-]+/)+[\w.-]*|[A-Za-z]:\\[^\s"']*)""")
TRACKED_REPORTS = sorted(
    p for pattern in ("bench*.json", "bench*.md") for p in (ROOT / "reports").glob(pattern)
)


@pytest.mark.parametrize("report", TRACKED_REPORTS, ids=lambda p: p.name)
def test_benchmark_reports_hold_no_absolute_paths(report: Path) -> None:
    text = report.read_text()
    assert str(ROOT.parent) not in text
    assert ABSOLUTE.findall(text) == []


def test_the_pattern_finds_absolute_paths() -> None:
    assert ABSOLUTE.findall('"data": "/home/me/ml-100k"') == ["/home/me/ml-100k"]
    assert ABSOLUTE.findall("read from C:\\data\\ml-100k") == ["C:\\data\\ml-100k"]
    assert ABSOLUTE.findall("`u1.base / u1.test`, ml-100k/u1.base, 0.9/1.0") == []
