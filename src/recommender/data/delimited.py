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
from typing import NoReturn

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

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: What an integer id must be, in error messages.
INT_ID_EXPECTED = "an integer id, written in digits"
#: Added to it for the ``csv`` source, whose ids can be read as text instead.
CSV_ID_TYPE_HINT = " (or set csv.id_type: str to read ids as text, kept exactly as written)"
#: An integer in digits (after surrounding whitespace is trimmed).
_DIGITS = r"^[+-]?[0-9]+$"
#: Something a float parser would read as a number (for a hint when an id is ``3.0``).
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_INT64_DIGITS = 19
_INT64_MAX_DIGITS, _INT64_MIN_DIGITS = str(INT64_MAX), str(INT64_MIN)[1:]
#: The largest magnitude up to which every integer is exactly a float64.
_FLOAT_EXACT = 2**53


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
        """Column ``name`` as int64 (timestamps, codes); never rounded through a float.

        Fields written in digits are parsed exactly; a field like ``978300760.0`` or ``1e3`` is
        read as a number and taken if it is a whole number small enough for a float to hold
        exactly (up to 2**53). Empty, non-numeric, fractional or out-of-range fields are
        DataErrors.
        """
        values = self.column(name)
        self._require_filled(name, values, expected)
        raw = pa.array(values.array)
        try:
            return pc.cast(raw, pa.int64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        # Something is not plain digits: read every field as a number (a DataError names the
        # first that is not one), then the fields in digits exactly, the others via the float.
        numbers = self._numbers(name, values, expected, kind="an integer")
        text = _trim(raw)
        digits = _mask(pc.match_substring_regex(text, _DIGITS))
        self._raise_out_of_range(name, values, text, digits, expected)
        other = ~digits
        fractional = other & (numbers != np.round(numbers))
        inexact = other & (np.abs(numbers) > _FLOAT_EXACT)
        for bad, problem in (
            (fractional, "is not an integer"),
            (inexact, "is too large to be read exactly unless written in digits (above 2**53)"),
        ):
            if bad.any():
                row = int(np.argmax(bad))
                raise self._fail(name, row, f"{values.iloc[row]!r} {problem}", expected)
        out = numbers.astype("int64")
        out[digits] = _parse_digits(text.filter(pa.array(digits)))
        return out

    def int_ids(self, name: str, expected: str = INT_ID_EXPECTED) -> np.ndarray:
        """An integer id column as int64, parsed exactly (never through a float).

        Accepted: an optional sign and decimal digits, within int64, surrounding spaces and tabs
        ignored (``" 12 "`` is 12). Refused, with file, line and column named: any other form
        (``3.0``, ``1e3``, ``0x10``, ``1,000``), an id outside int64, and two spellings of one
        number (``007`` and ``7``, ``+7`` and ``7``), which would merge two ids into one.

        Args:
            name: The column.
            expected: What an id should be, for the error message (e.g. with a hint that ids
                can be read as text instead).
        """
        values = self.column(name)
        self._require_filled(name, values, expected)
        raw = pa.array(values.array)
        # Fast path: pyarrow parses every field, and none is a second spelling of its number
        # (a leading zero, -0, or hex: pyarrow reads 0x10 as 16; it refuses a leading +).
        ids = _to_int64(raw)
        if ids is not None and not _any_odd_spelling(raw):  # (0x10 is an odd spelling too)
            return ids
        text = _trim(raw)
        sign = _sign(text)
        unsigned = _drop_plus(text, sign)
        if unsigned is not raw:  # else the parse above stands (often: a few zero-padded ids)
            ids = _to_int64(unsigned)
        if ids is None or _hex(unsigned) or _plus_minus(text, sign):
            self._raise_not_digits(name, values, text, expected)
        self._raise_merged_spellings(name, values, text, sign, ids, expected)
        return ids

    def _raise_not_digits(
        self, name: str, values: pd.Series, text: pa.Array, expected: str
    ) -> NoReturn:
        """The DataError for the first field that is not an integer in digits within int64."""
        digits = _mask(pc.match_substring_regex(text, _DIGITS))
        if not digits.all():
            row = int(np.argmin(digits))
            problem = f"{values.iloc[row]!r} is not an integer written in digits"
            if _mask(pc.match_substring_regex(text.slice(row, 1), _NUMBER))[0]:
                problem += (
                    " (an id is never read through a decimal or an exponent: rounding can turn"
                    " two ids into one)"
                )
            raise self._fail(name, row, problem, expected)
        self._raise_out_of_range(name, values, text, digits, expected)
        raise DataError(self.path, "cannot be read as integers", column=name, expected=expected)

    def _raise_out_of_range(
        self, name: str, values: pd.Series, text: pa.Array, digits: np.ndarray, expected: str
    ) -> None:
        """A DataError at the first field in digits (per ``digits``) outside int64, if any."""
        # Where ``digits`` holds, trimming signs and zeros leaves the magnitude's digits, and
        # of two digit strings of one length the greater text is the greater number.
        magnitude = pc.ascii_ltrim(text, characters="+-0")
        length = _mask(pc.binary_length(magnitude), dtype="int64")
        negative = _mask(pc.starts_with(text, "-"))
        above_max = _mask(pc.greater(magnitude, _INT64_MAX_DIGITS))
        below_min = _mask(pc.greater(magnitude, _INT64_MIN_DIGITS))
        edge = np.where(negative, below_min, above_max)
        over = digits & ((length > _INT64_DIGITS) | ((length == _INT64_DIGITS) & edge))
        if over.any():
            row = int(np.argmax(over))
            raise self._fail(
                name,
                row,
                f"{values.iloc[row]!r} is outside the 64-bit integer range "
                f"({INT64_MIN} to {INT64_MAX})",
                expected,
            )

    def _raise_merged_spellings(
        self,
        name: str,
        values: pd.Series,
        text: pa.Array,
        sign: np.ndarray,
        ids: np.ndarray,
        expected: str,
    ) -> None:
        """A DataError if one number is written two ways (``007`` and ``7``): ids would merge.

        ``text`` holds valid integers (trimmed), ``sign`` their sign codes (see :func:`_sign`).
        """
        odd = _mask(_odd_spelling(text))
        if not odd.any():
            return  # every field is its number's one canonical spelling
        suspects = np.flatnonzero(np.isin(ids, np.unique(ids[odd])))
        # For one number, a spelling is fixed by its length and its sign character. (Lengths
        # of the whole column, chunk by chunk: ``take`` would first concatenate the text.)
        length = _mask(pc.cast(pc.binary_length(text), pa.int32()), dtype="int32")[suspects]
        spelling = length.astype("int64") * 3 + sign[suspects]
        spellings = pd.DataFrame(
            {"id": ids[suspects], "spelling": spelling, "row": suspects}
        ).drop_duplicates(["id", "spelling"])
        clash = spellings["id"].duplicated(keep=False).to_numpy()
        if not clash.any():
            return
        first = spellings[clash]
        number = first["id"].iloc[0]
        row_a, row_b = (int(r) for r in first.loc[first["id"] == number, "row"].iloc[:2])
        raise self._fail(
            name,
            row_b,
            f"{values.iloc[row_b]!r} and {values.iloc[row_a]!r} (line {self.line_of(row_a)}) "
            f"are both the integer {number}: read as integers, two ids would become one",
            expected,
        )

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
        """An id column: int64 (see :meth:`int_ids`), or str when ``id_type`` is ``"str"``.

        Text ids are kept exactly as written (whitespace included); only an empty field is an
        error.
        """
        if id_type == "int":
            return self.int_ids(name, expected=INT_ID_EXPECTED + CSV_ID_TYPE_HINT)
        values = self.column(name)
        self._require_filled(name, values, "a non-empty id")
        return values.astype("str").reset_index(drop=True)


def _mask(array: pa.Array | pa.ChunkedArray, dtype: str = "bool") -> np.ndarray:
    """A pyarrow result as a numpy array (nulls as False / 0)."""
    filled = pc.fill_null(array, False if pa.types.is_boolean(array.type) else 0)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=dtype)


def _any(mask: pa.Array | pa.ChunkedArray) -> bool:
    return bool(pc.any(mask).as_py())


# The helpers below use prefix and substring tests rather than regular expressions where they
# can: on 25M fields that is several times faster.


def _to_int64(text: pa.Array) -> np.ndarray | None:
    """pyarrow's integer parse (optional ``-``, decimal digits or ``0x`` hex), or None."""
    try:
        return np.asarray(pc.cast(text, pa.int64()).to_numpy(zero_copy_only=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _starts_with(text: pa.Array, prefixes: Sequence[str]) -> bool:
    return any(_any(pc.starts_with(text, p)) for p in prefixes)


def _hex(text: pa.Array) -> bool:
    """Whether a field is hex to pyarrow's integer parse (``0x10`` is 16 to it)."""
    return _starts_with(text, ("0x", "0X", "-0x", "-0X"))


def _trim(text: pa.Array) -> pa.Array:
    """Without surrounding spaces and tabs (a copy only when some field has them)."""
    if _starts_with(text, (" ", "\t")) or any(_any(pc.ends_with(text, s)) for s in (" ", "\t")):
        return pc.ascii_trim(text, characters=" \t")
    return text


def _sign(text: pa.Array) -> np.ndarray:
    """Per field: 0 without a sign, 1 for a leading ``+``, 2 for a leading ``-``."""
    plus = _mask(pc.starts_with(text, "+"), dtype="int8")
    minus = _mask(pc.starts_with(text, "-"), dtype="int8")
    return plus + 2 * minus


def _drop_plus(text: pa.Array, sign: np.ndarray) -> pa.Array:
    """The fields without a leading ``+`` (which pyarrow's integer parse refuses)."""
    plus = sign == 1
    if not plus.any():
        return text
    return pc.if_else(pa.array(plus), pc.utf8_slice_codeunits(text, 1), text)


def _plus_minus(text: pa.Array, sign: np.ndarray) -> bool:
    """Whether a field starts ``+-`` (which :func:`_drop_plus` would turn into a number)."""
    return bool((sign == 1).any()) and _any(pc.starts_with(text, "+-"))


def _odd_spelling(text: pa.Array) -> pa.Array:
    """Integer fields not in their number's canonical spelling: ``+7``, ``007``, ``-0``."""
    leading_zero = pc.and_(pc.starts_with(text, "0"), pc.not_equal(text, "0"))
    return pc.or_(pc.or_(leading_zero, pc.starts_with(text, "-0")), pc.starts_with(text, "+"))


def _any_odd_spelling(text: pa.Array) -> bool:
    """Whether :func:`_odd_spelling` holds anywhere (the cheap tests first)."""
    if _any(pc.starts_with(text, "-0")) or _any(pc.starts_with(text, "+")):
        return True
    zero = pc.starts_with(text, "0")
    return _any(zero) and _any(pc.and_(zero, pc.not_equal(text, "0")))


def _parse_digits(text: pa.Array) -> np.ndarray:
    """Fields that are an optional sign and digits, within int64, as int64 (exact)."""
    ids = _to_int64(_drop_plus(text, _sign(text)))
    if ids is None:
        raise ValueError("_parse_digits takes fields in digits within int64 only")
    return ids


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
    _check_file(path, what)
    if not header and not names:
        raise ValueError("read_table needs names when the file has no header")
    src, first = _open_source(path, encoding, sep, quoting, sep_name)
    columns = _header_columns(path, src, first, required) if header else list(names or [])
    frame = _parse_fields(path, src, encoding, len(columns), header, quoting)
    if len(frame) == 0:
        problem = "has a header but no data rows" if header else "has no data rows"
        raise DataError(path, problem, expected=what)
    positions = _column_positions(path, columns, required)
    return RawTable(path=path, frame=frame, names=positions, source=src, header=header)


def _check_file(path: Path, what: str) -> None:
    """Refuse a path that is missing, not a file, or empty."""
    if not path.exists():
        raise DataError(path, "no such file", expected=what)
    if not path.is_file():
        raise DataError(path, "is not a file", expected=what)
    if path.stat().st_size == 0:
        raise DataError(path, "the file is empty (0 bytes)", expected=what)


def _open_source(
    path: Path, encoding: str, sep: str, quoting: int, sep_name: str
) -> tuple[_Source, list[str]]:
    """The file as a :class:`_Source` (a multi-character separator replaced by one character)
    and its first record; a byte that does not decode is reported with its offset and line."""
    src = _Source(path, encoding, sep, sep, quoting, sep_name)
    try:
        if len(sep) > 1:
            src.text = path.read_text(encoding=encoding).replace(sep, _UNIT_SEP)
            src.field_sep = _UNIT_SEP
        first = src.first_record()
    except UnicodeDecodeError:
        error = _decode_error(path, encoding) or DataError(path, f"not valid {encoding} text")
        raise error from None
    return src, first


def _header_columns(
    path: Path, src: _Source, first: list[str], required: Sequence[str]
) -> list[str]:
    """The column names of the header line; a single one where several are required means a
    wrong separator, and says so."""
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
    return columns


def _parse_fields(
    path: Path, src: _Source, encoding: str, n_fields: int, header: bool, quoting: int
) -> pd.DataFrame:
    """Every data line's ``n_fields`` fields as text (columns ``0..n_fields-1``), by pyarrow;
    a line of another shape, or a byte that does not decode, is reported where it is."""
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
    frame = table.to_pandas()
    frame.columns = range(n_fields)
    return frame


def _column_positions(path: Path, columns: list[str], required: Sequence[str]) -> dict[str, int]:
    """Each header name's first position; a required name missing is an error naming them all."""
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
    return positions
