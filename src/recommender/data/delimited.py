"""Reading delimited text files with errors that point at a line.

:func:`read_table` is the one reader every source uses (MovieLens files included). It parses every
field as text with pyarrow's multithreaded CSV reader, then converts columns with checks that name
the file, line, column and value at fault, so a broken file stops ingest with a sentence a user
can act on instead of a traceback. What is *not* a parse error passes through untouched for the
``validate`` stage to judge: an empty rating becomes NaN, a rating of 7 stays 7.0, duplicate pairs
stay duplicated.

Finding the line of a problem costs a second pass over the file with the ``csv`` module, so it
only happens once something is wrong. Line numbers assume one record per line (no quoted field
spanning lines), which holds for every rating file we know of.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from recommender.core.errors import DataError

log = logging.getLogger(__name__)

#: Separators we suggest when a line splits into a single field.
_LIKELY_SEPS = ("::", ",", ";", "\t", "|")
#: Multi-character separators (ML-1M's ``::``) are rewritten to this before parsing, because
#: both pyarrow and the ``csv`` module split on single characters only.
_UNIT_SEP = "\x1f"


@dataclass
class _Source:
    """Where the text comes from, and how to split it (shared by both parsing passes)."""

    path: Path
    encoding: str
    sep: str  # as configured, for messages
    field_sep: str  # what the parsers split on
    quoting: int
    sep_name: str
    text: str | None = None  # the whole text, when a multi-character separator was rewritten

    def records(self) -> Generator[tuple[int, list[str]], None, None]:
        """(line number, fields) of every record, blank lines included (as ``[]``)."""
        handle: io.TextIOBase
        if self.text is None:
            handle = self.path.open(encoding=self.encoding, newline="")
        else:
            handle = io.StringIO(self.text, newline="")
        with handle:
            reader = csv.reader(handle, delimiter=self.field_sep, quoting=self.quoting)  # type: ignore[arg-type]
            for fields in reader:
                yield reader.line_num, fields

    def first_record(self) -> list[str]:
        records = self.records()
        try:
            return next(records, (1, []))[1]
        finally:
            records.close()

    def sep_hint(self, line: str) -> str:
        others = [s for s in _LIKELY_SEPS if s != self.sep and s in line]
        hint = f"is {self.sep_name} right? it is {self.sep!r}"
        if others:
            hint += f", but the line contains {others[0]!r}"
        return hint


@dataclass
class RawTable:
    """A delimited file read as text: one str column per field, NaN where a field is empty.

    Attributes:
        path: The file it came from (for error messages).
        frame: One column per field, labelled 0..n-1; every value str or NaN.
        names: Column name -> position (from the header, or the names the caller gave).
    """

    path: Path
    frame: pd.DataFrame
    names: dict[str, int] = field(default_factory=dict)
    source: _Source | None = field(default=None, repr=False)
    header: bool = False

    def __len__(self) -> int:
        return len(self.frame)

    def line_of(self, row: int) -> int:
        """The 1-based line number of ``frame`` row ``row`` (blank lines are not rows)."""
        if self.source is None:
            return row + 1 + int(self.header)
        records = self.source.records()
        if self.header:
            next(records, None)
        seen = -1
        for line, fields in records:
            seen += bool(fields)
            if seen == row:
                return line
        return row + 1 + int(self.header)

    def column(self, name: str) -> pd.Series:
        """The raw text of column ``name``; a DataError lists the columns found if it is absent."""
        if name not in self.names:
            found = ", ".join(repr(n) for n in self.names)
            raise DataError(
                self.path,
                f"no column {name!r} (columns found: {found})",
                column=name,
                expected=f"a column named {name!r} in the header",
            )
        return self.frame[self.names[name]]

    def _fail(self, name: str, row: int, problem: str, expected: str) -> DataError:
        return DataError(self.path, problem, row=self.line_of(row), column=name, expected=expected)

    def _require_filled(self, name: str, values: pd.Series, expected: str) -> None:
        empty = values.isna().to_numpy()
        if empty.any():
            row = int(np.argmax(empty))
            raise self._fail(name, row, "the field is empty", expected)

    def _numbers(
        self, name: str, values: pd.Series, expected: str, kind: str = "a number"
    ) -> np.ndarray:
        """Convert to float64 (NaN where empty); a non-numeric field is a DataError."""
        try:
            # pyarrow's cast is ~10x faster than pd.to_numeric on large files; it refuses
            # anything unusual (spaces, text), and then the slow path below finds out which.
            return pc.cast(pa.array(values.array), pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
            pass
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isnan(numbers) & values.notna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise self._fail(name, row, f"{values.iloc[row]!r} is not {kind}", expected)
        return numbers

    def ints(self, name: str, expected: str = "an integer") -> np.ndarray:
        """Column ``name`` as int64; empty, non-numeric or fractional fields are DataErrors."""
        values = self.column(name)
        self._require_filled(name, values, expected)
        try:
            return pc.cast(pa.array(values.array), pa.int64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError):
            pass
        numbers = self._numbers(name, values, expected, kind="an integer")
        fractional = numbers != np.round(numbers)
        if fractional.any():
            row = int(np.argmax(fractional))
            raise self._fail(name, row, f"{values.iloc[row]!r} is not an integer", expected)
        return numbers.astype("int64")

    def optional_ints(self, name: str, expected: str = "an integer or nothing") -> pd.Series:
        """Column ``name`` as nullable Int64 (``<NA>`` where empty)."""
        values = self.column(name)
        numbers = self._numbers(name, values, expected, kind="an integer")
        fractional = ~np.isnan(numbers) & (numbers != np.round(numbers))
        if fractional.any():
            row = int(np.argmax(fractional))
            raise self._fail(name, row, f"{values.iloc[row]!r} is not an integer", expected)
        return pd.Series(pd.array(numbers, dtype="Float64").astype("Int64"))

    def floats(self, name: str, expected: str = "a number") -> np.ndarray:
        """Column ``name`` as float64: empty fields become NaN (for ``validate`` to judge)."""
        return self._numbers(name, self.column(name), expected)

    def text(self, name: str) -> pd.Series:
        """Column ``name`` as str, ``""`` where empty."""
        return self.column(name).fillna("").astype("str").reset_index(drop=True)

    def ids(self, name: str, id_type: str) -> np.ndarray | pd.Series:
        """An id column: int64, or str (non-empty) when ``id_type`` is ``"str"``."""
        if id_type == "int":
            return self.ints(name, expected="an integer id (or set csv.id_type: str)")
        values = self.column(name)
        self._require_filled(name, values, "a non-empty id")
        return values.astype("str").reset_index(drop=True)


def _decode_error(path: Path, encoding: str) -> DataError | None:
    """The first byte that is not valid ``encoding``, with its offset and line; None if none."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return DataError(
            path,
            f"byte 0x{raw[exc.start]:02x} at offset {exc.start} is not valid {encoding} text",
            row=line,
            expected=f"a file encoded in {encoding} (or set the right encoding, e.g. latin-1)",
        )
    return None


def _shape_error(src: _Source, n_fields: int, header: bool, detail: str) -> DataError:
    """Find the first line whose number of fields is wrong and describe it."""
    expected = f"{n_fields} fields separated by {src.sep!r} on every line"
    records = src.records()
    if header:
        next(records, None)
    for line, fields in records:
        if not fields or len(fields) == n_fields:
            continue
        shown = src.sep.join(fields)[:80]
        if len(fields) == 1:
            problem = f"found 1 column, expected {n_fields}; {src.sep_hint(shown)}"
        elif len(fields) < n_fields:
            problem = f"found {len(fields)} columns, expected {n_fields} (truncated line?)"
        else:
            problem = f"found {len(fields)} columns, expected {n_fields}"
        return DataError(src.path, f"{problem}: {shown!r}", row=line, expected=expected)
    return DataError(src.path, f"cannot be parsed: {detail}", expected=expected)


def read_table(
    path: str | Path,
    *,
    sep: str,
    encoding: str = "utf-8",
    header: bool = True,
    names: Sequence[str] | None = None,
    required: Sequence[str] = (),
    quoting: int = csv.QUOTE_MINIMAL,
    what: str = "a delimited text file",
    sep_name: str = "the separator",
) -> RawTable:
    """Read a delimited file as text, checking its shape line by line.

    Args:
        path: The file.
        sep: Field separator; may be several characters (``"::"``).
        encoding: Text encoding; a byte that does not decode is reported with its offset and line.
        header: Whether the first line names the columns.
        names: Column names when there is no header (their number is the fields each line needs).
        required: Header columns that must exist (checked here so that a wrong separator is
            reported as such rather than as a missing column).
        quoting: ``csv.QUOTE_MINIMAL`` (double quotes group fields) or ``csv.QUOTE_NONE``
            (MovieLens' raw files, where a quote is just a character).
        what: What the file should be, for error messages.
        sep_name: What sets the separator, for the hint when a line has a single field
            (``csv.sep`` for user files).

    Returns:
        The table (blank lines skipped).

    Raises:
        DataError: The file is missing or empty, does not decode, lacks a required column, or a
            line has the wrong number of fields.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file", expected=what)
    if not path.is_file():
        raise DataError(path, "is not a file", expected=what)
    if path.stat().st_size == 0:
        raise DataError(path, "the file is empty (0 bytes)", expected=what)
    if not header and not names:
        raise ValueError("read_table needs names when the file has no header")

    src = _Source(path, encoding, sep, sep, quoting, sep_name)
    try:
        if len(sep) > 1:
            src.text = path.read_text(encoding=encoding).replace(sep, _UNIT_SEP)
            src.field_sep = _UNIT_SEP
        first = src.first_record()
    except UnicodeDecodeError:
        error = _decode_error(path, encoding) or DataError(path, f"not valid {encoding} text")
        raise error from None

    if header:
        columns = [f.strip().lstrip("\ufeff") for f in first]
        if not columns:
            raise DataError(path, "the first line is empty", row=1, expected="a header line")
        if len(columns) == 1 and len(required) > 1:
            raise DataError(
                path,
                f"found 1 column, expected {len(required)}; {src.sep_hint(columns[0])}",
                row=1,
                expected=f"a header naming {', '.join(required)}",
            )
    else:
        columns = list(names or [])
    n_fields = len(columns)

    labels = [str(i) for i in range(n_fields)]
    stream: io.BytesIO | Path
    if src.text is not None:
        stream, pa_encoding = io.BytesIO(src.text.encode("utf-8")), "utf8"
    else:
        # pyarrow parses UTF-8 natively; any other encoding goes through a (slower) transcoder.
        native = codecs.lookup(encoding).name == "utf-8"
        stream, pa_encoding = path, "utf8" if native else encoding
    try:
        table = pa_csv.read_csv(
            stream,
            read_options=pa_csv.ReadOptions(
                skip_rows=int(header), column_names=labels, encoding=pa_encoding
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=src.field_sep,
                quote_char='"' if quoting != csv.QUOTE_NONE else False,
                ignore_empty_lines=True,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(labels, pa.string()),
                strings_can_be_null=True,
                null_values=[""],
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        decode = _decode_error(path, encoding) if src.text is None else None
        if decode is not None:
            raise decode from None
        raise _shape_error(src, n_fields, header, str(exc)) from None

    if table.num_rows == 0:
        problem = "has a header but no data rows" if header else "has no data rows"
        raise DataError(path, problem, expected=what)
    frame = table.to_pandas()
    frame.columns = range(n_fields)

    positions: dict[str, int] = {}
    for i, name in enumerate(columns):
        positions.setdefault(name, i)
    for name in required:
        if name not in positions:
            found = ", ".join(repr(c) for c in columns)
            raise DataError(
                path,
                f"no column {name!r} (columns found: {found})",
                row=1,
                column=name,
                expected=f"a header naming {', '.join(required)}",
            )
    return RawTable(path=path, frame=frame, names=positions, source=src, header=header)
