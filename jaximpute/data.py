"""Reading the data to impute: delimited text files and pandas DataFrames.

Two file layouts are accepted, detected per file: comma-separated (a comma anywhere in the first
non-empty line) and whitespace-separated (Blimp's `.dat` files: spaces and/or tabs). Missing values
are empty fields, `NA`, `NaN`, `.` (Stata/SAS) and the script's missing code, which is compared
numerically so that a code of -99 also matches `-99.0` in the file.

Parsing is fast (pandas' C parser, after a cheap per-line field count); only when that parser
refuses the file do we walk it token by token, to name the exact row, column and text that is
wrong. Every problem is a single `DataError` naming the file, the 1-based row (the line number in
the file), the column (number and name) and what was expected.
"""

from __future__ import annotations

import decimal
import difflib
import io
import itertools
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import DataError, did_you_mean

__all__ = ["DataTable", "read_table", "from_dataframe", "MISSING_TOKENS"]

# Texts that mean "missing" in any column (besides the numeric missing code).
MISSING_TOKENS = ("", "NA", "na", "N/A", "NaN", "nan", "NAN", ".")
_MISSING_SET = frozenset(MISSING_TOKENS)

# Bytes of a file we look at to recognise a binary file (Excel, SPSS .sav, ...).
_SNIFF_BYTES = 8192


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays field-wise is ambiguous
class DataTable:
    """The data as read: one float64 column per variable, NaN where a value is missing."""

    names: tuple[str, ...]  # column names
    values: np.ndarray  # float64 (N, V); np.nan marks a missing value
    source: str  # file path as given, or '<DataFrame>'
    integer_columns: np.ndarray  # bool (V,): every observed value is a whole number
    missing_code: float | None  # the code that meant missing in the input
    header_row: bool  # whether the file had a header row (always True for a DataFrame)

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_columns(self) -> int:
        return int(self.values.shape[1])


# --------------------------------------------------------------------------------------------
# small helpers shared by the file and DataFrame readers


def _code_value(missing_code) -> float | None:
    """The missing code as a float (None stays None); a non-number is a DataError."""
    if missing_code is None:
        return None
    try:
        code = float(missing_code)
    except (TypeError, ValueError):
        raise DataError(f"the missing code {missing_code!r} is not a number") from None
    if not math.isfinite(code):
        raise DataError(f"the missing code {missing_code!r} must be a finite number")
    return code


def _code_text(code: float | None) -> str:
    """The code as a user wrote it: -99.0 -> '-99'."""
    if code is None:
        return ""
    return str(int(code)) if code == int(code) else repr(code)


def _expected(code: float | None, frame: bool = False) -> str:
    if code is None:
        if frame:
            return "expected a number or a missing value (NaN, None or pd.NA)"
        return "expected a number or a missing value (empty, NA or .)"
    return f"expected a number or the missing code {_code_text(code)}"


def _show(token: str, limit: int = 40) -> str:
    """Quote a token for a message, shortened so that one bad cell cannot flood the terminal."""
    token = token if len(token) <= limit else token[: limit - 3] + "..."
    return "'" + token.encode("unicode_escape").decode("ascii").replace("'", "\\'") + "'"


def _integer_columns(values: np.ndarray) -> np.ndarray:
    """True for a column whose observed values are all whole numbers (vacuously for none)."""
    with np.errstate(invalid="ignore"):
        whole = (values == np.floor(values)) | np.isnan(values)
    return whole.all(axis=0)


def _apply_code(values: np.ndarray, code: float | None) -> None:
    """Turn the missing code into NaN, in place (numeric comparison: -99 matches -99.0)."""
    if code is not None:
        values[values == code] = np.nan


# --------------------------------------------------------------------------------------------
# files


def read_table(
    path,
    names: Sequence[str] | None = None,
    missing_code=None,
    *,
    names_origin: str = "VARIABLES",
    own_leading: int = 0,
) -> DataTable:
    """Read a comma- or whitespace-separated data file.

    With `names` (the script's VARIABLES) the file has no header row, except that a first row
    made only of non-numbers is taken for one and skipped when its names are `names` in the same
    order (regardless of case); a header row that names the columns otherwise is refused, since
    skipping it would rename columns silently. Every row must have len(names) fields. Without
    `names` the first row must be a header of names. `names_origin` is how messages refer to
    where `names` came from; the first `own_leading` names are the caller's own (a stacked
    file's imputation column): a header row's names there are not compared, and messages count
    them apart from `names_origin`'s.
    """
    source = str(path)
    code = _code_value(missing_code)
    if names is not None:
        names = tuple(str(n) for n in names)
        _check_unique(names, lambda i, j, n: f"{source}: {names_origin} names {_show(n)} twice")
        if not names:
            raise DataError(f"{source}: {names_origin} lists no names")

    raw, encoding = _read_bytes(path, source)
    lines = raw.decode(encoding).split("\n")
    first = _first_nonblank(lines)
    if first is None:
        raise DataError(f"{source}: the file is empty; expected rows of numbers")
    last = _last_nonblank(lines)
    comma = "," in lines[first]
    split = _csv_split if comma else str.split
    first_fields = [_unquote(f) for f in split(lines[first])]

    if names is None:
        names = _header_names(first_fields, source, first + 1, code, names_origin)
        header = True
    else:
        header = _looks_like_header(first_fields)
        if header and len(first_fields) != len(names):
            raise DataError(
                f"{source}: row {first + 1} (a header row) has {_columns(len(first_fields))}; "
                f"expected {len(names)} ({_names_count(names, own_leading, names_origin)})"
                + _separator_hint(lines[first], comma)
            )
        if header:
            _check_header_names(first_fields, names, own_leading, source, first + 1, names_origin)
    start = first + 1 if header else first
    if start > last:
        raise DataError(f"{source}: the file has a header row but no data rows")

    _check_field_counts(lines, start, last, comma, len(names), source,
                        _names_count(names, own_leading, names_origin))
    values = _parse_fast(raw, encoding, comma, start, last - start + 1, len(names))
    if values is None:  # the C parser refused some token: find it, or parse the slow way
        values = _parse_slow(lines, start, last, comma, names, source, code)
    _check_finite(values, lines, start, comma, names, source)
    _apply_code(values, code)
    return DataTable(
        names=tuple(names),
        values=values,
        source=source,
        integer_columns=_integer_columns(values),
        missing_code=code,
        header_row=header,
    )


def _read_bytes(path, source: str) -> tuple[bytes, str]:
    """The file's bytes with newlines normalised to '\\n', and the encoding to decode them."""
    p = Path(os.path.expanduser(str(path)))
    try:
        with open(p, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise DataError(f"{source}: file not found{_similar_file(p)}") from None
    except IsADirectoryError:
        raise DataError(f"{source}: is a folder, not a data file") from None
    except PermissionError:
        raise DataError(f"{source}: cannot read the file (permission denied)") from None
    except OSError as exc:
        raise DataError(f"{source}: cannot read the file ({exc.strerror or exc})") from None
    if b"\x00" in raw[:_SNIFF_BYTES]:
        raise DataError(
            f"{source}: looks like a binary file (Excel, SPSS .sav, ...); "
            "save the data as comma- or whitespace-separated text"
        )
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark written by Excel
        raw = raw[3:]
    # Windows and old-Mac line ends: one convention so that row numbers match the file's lines.
    raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    try:
        raw.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        encoding = "latin-1"  # never fails; any non-number is then reported with its row
    return raw, encoding


def _similar_file(p: Path) -> str:
    """' (did you mean 'x.csv'?)' for a file next to `p` with a similar name (typos in DATA)."""
    try:
        entries = list(itertools.islice(p.parent.iterdir(), 2000)) if p.parent.is_dir() else []
    except OSError:
        return ""
    # compare stems too: every 'x.csv' looks like 'y.csv' on its whole name
    stem = p.stem.lower()
    close = [
        q.name
        for q in entries
        if q.is_file() and difflib.SequenceMatcher(None, q.stem.lower(), stem).ratio() >= 0.6
    ]
    return did_you_mean(p.name, close)


def _first_nonblank(lines: list[str]) -> int | None:
    return next((i for i, line in enumerate(lines) if line.strip()), None)


def _last_nonblank(lines: list[str]) -> int:
    i = len(lines) - 1
    while not lines[i].strip():
        i -= 1
    return i


def _csv_split(line: str) -> list[str]:
    return line.split(",")


def _unquote(field: str) -> str:
    """Strip blanks and one pair of double quotes (R's write.csv quotes header names)."""
    field = field.strip()
    if len(field) >= 2 and field[0] == field[-1] == '"':
        field = field[1:-1].strip()
    return field


def _number(token: str) -> float | None:
    """The value of a token, NaN for a missing-value token, None for a non-number.

    Python's float() also accepts '1_000' and surrounding blanks; the C parser does not, and the
    two must agree on what a number is, so those are refused here too.
    """
    if token in _MISSING_SET:
        return math.nan
    if "_" in token:
        return None
    try:
        return float(token)
    except ValueError:
        return None


def _looks_like_header(fields: list[str]) -> bool:
    """A row with no number in it that is not simply a row of missing values."""
    return all(_number(f) is None for f in fields)


def _check_unique(names: Sequence[str], message) -> None:
    seen: dict[str, int] = {}
    for j, name in enumerate(names):
        if name in seen:
            raise DataError(message(seen[name], j, name))
        seen[name] = j


def _header_names(fields, source, row, code, names_origin) -> tuple[str, ...]:
    """Names from a file's header row (no VARIABLES given)."""
    for j, field in enumerate(fields):
        if _number(field) is not None and field not in _MISSING_SET:
            raise DataError(
                f"{source}: row {row}, column {j + 1} holds the number {_show(field)}, so the "
                f"file has no header row of names; give the names in {names_origin}"
            )
    for j, field in enumerate(fields):
        if not field:
            raise DataError(
                f"{source}: row {row}, column {j + 1}: the header row has an empty name; "
                "expected a name for every column"
            )
    _check_unique(
        fields,
        lambda i, j, n: f"{source}: row {row}: columns {i + 1} and {j + 1} are both named "
        f"{_show(n)}; expected different names",
    )
    return tuple(fields)


def _check_header_names(fields, names, unchecked, source, row, names_origin) -> None:
    """A header row beside given names must repeat them, in order (case aside): otherwise
    skipping it would silently give the file's columns other names (`cluster,x,y` read with
    VARIABLES `cluster y x` swaps x and y)."""
    for j in range(unchecked, len(names)):
        if fields[j].lower() != names[j].lower():
            shown = ",".join(fields)
            raise DataError(
                f"{source}: row {row} is a header row ({_show(shown, 80)}) whose names differ "
                f"from {names_origin} ({' '.join(names[unchecked:])}): column {j + 1} is "
                f"{_show(fields[j])} in the file but {_show(names[j])} in {names_origin}; expected "
                f"the same names in the same order: reorder {names_origin} to match the file's "
                "columns, or remove the header row"
            )


def _names_count(names: Sequence[str], own: int, origin: str) -> str:
    """Where a row's number of fields comes from: 'the number of names in VARIABLES', or with
    the caller's own leading columns, 'the imputation column and the 3 names in --names'."""
    if not own:
        return f"the number of names in {origin}"
    given = len(names) - own
    return (f"the {' and '.join(names[:own])} column{'s' if own > 1 else ''} and the "
            f"{given} name{'s' if given != 1 else ''} in {origin}")


def _check_field_counts(lines, start, last, comma, n_names, source, counted) -> None:
    """Every data row has exactly one field per name (the C parser would pad short rows)."""
    block = lines[start : last + 1]
    if comma:
        counts = np.fromiter((line.count(",") + 1 for line in block), np.int64, len(block))
    else:
        counts = np.fromiter((len(line.split()) for line in block), np.int64, len(block))
    # a blank line inside the data is an error, not a row of missing values
    blank = np.fromiter((not line.strip() for line in block), bool, len(block))
    counts[blank] = 0
    bad = np.flatnonzero(counts != n_names)
    if bad.size:
        i = int(bad[0])
        row = start + i + 1
        if counts[i] == 0:
            raise DataError(
                f"{source}: row {row} is empty; expected {n_names} columns ({counted})"
            )
        raise DataError(
            f"{source}: row {row} has {_columns(int(counts[i]))}; expected {n_names} ({counted})"
            + _separator_hint(lines[start + i], comma)
        )


def _columns(n: int) -> str:
    return "1 column" if n == 1 else f"{n} columns"


def _separator_hint(line: str, comma: bool) -> str:
    if not comma and "," in line:
        return "; the first row has no comma, so the file is read as whitespace-separated"
    if ";" in line:
        return "; values separated by ';' are not supported (use commas or blanks)"
    return ""


def _parse_fast(raw, encoding, comma, skip, nrows, ncols) -> np.ndarray | None:
    """Parse the data rows with pandas' C parser; None when some token is not a number."""
    try:
        frame = pd.read_csv(
            io.BytesIO(raw),
            sep="," if comma else r"\s+",
            header=None,
            names=list(range(ncols)),
            skiprows=skip,
            nrows=nrows,
            dtype=np.float64,
            na_values=list(MISSING_TOKENS),
            keep_default_na=False,
            skip_blank_lines=False,
            encoding=encoding,
            engine="c",
        )
    except (ValueError, TypeError, pd.errors.ParserError):
        return None
    values = frame.to_numpy(dtype=np.float64)
    if values.shape != (nrows, ncols):  # should not happen after the field counts; be safe
        return None
    return np.ascontiguousarray(values)


def _parse_slow(lines, start, last, comma, names, source, code) -> np.ndarray:
    """Token-by-token parse that stops at the first non-number with a precise message."""
    split = _csv_split if comma else str.split
    out = np.empty((last - start + 1, len(names)), dtype=np.float64)
    for i in range(start, last + 1):
        for j, field in enumerate(split(lines[i])):
            token = _unquote(field)
            value = _number(token)
            if value is None:
                raise DataError(_not_a_number(source, i + 1, j, names, token, code, i == start))
            out[i - start, j] = value
    return out


def _not_a_number(source, row, j, names, token, code, first_row) -> str:
    message = f"{source}: row {row}, column {j + 1} ({names[j]}): {_show(token)} is not a number; "
    message += _expected(code)
    if first_row and row == 1:
        message += " (a header row must hold only names, none of them numbers)"
    return message


def _check_finite(values, lines, start, comma, names, source) -> None:
    """'inf', '-Infinity' or '1e400' parse as numbers but cannot be data."""
    bad = np.isinf(values)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        split = _csv_split if comma else str.split
        token = _unquote(split(lines[start + i])[j])
        raise DataError(
            f"{source}: row {start + i + 1}, column {j + 1} ({names[j]}): {_show(token)} is not "
            "a finite number; expected a finite number or a missing value"
        )


# --------------------------------------------------------------------------------------------
# DataFrames


def from_dataframe(df: pd.DataFrame, missing_code=None) -> DataTable:
    """A DataTable from a DataFrame: numeric and bool columns; NA/None/NaN and the code missing."""
    source = "<DataFrame>"
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    code = _code_value(missing_code)
    names = tuple(str(c) for c in df.columns)
    if not names:
        raise DataError(f"{source}: the DataFrame has no columns")
    if len(df) == 0:
        raise DataError(f"{source}: the DataFrame has no rows")
    _check_unique(
        names,
        lambda i, j, n: f"{source}: columns {i + 1} and {j + 1} are both named {_show(n)}; "
        "expected different names",
    )
    values = np.empty((len(df), len(names)), dtype=np.float64)
    for j in range(len(names)):
        values[:, j] = _frame_column(df.iloc[:, j], j, names[j], df.index, source, code)
    _apply_code(values, code)
    return DataTable(
        names=names,
        values=values,
        source=source,
        integer_columns=_integer_columns(values),
        missing_code=code,
        header_row=True,
    )


def _frame_column(col: pd.Series, j, name, index, source, code) -> np.ndarray:
    where = f"{source}: column {j + 1} ({name})"
    dtype = col.dtype
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
    ):
        out = col.to_numpy(dtype=np.float64, na_value=np.nan)
    elif (isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(dtype)
          or pd.api.types.is_string_dtype(dtype)):
        out = _object_column(col, where, index, code)
    else:
        raise DataError(f"{where} holds {dtype} values; {_expected(code, frame=True)}")
    bad = np.flatnonzero(np.isinf(out))
    if bad.size:
        k = int(bad[0])
        raise DataError(
            f"{where}, row {k + 1} (index {index[k]!r}): {out[k]} is not a finite number; "
            "expected a finite number or a missing value"
        )
    return out


def _object_column(col: pd.Series, where, index, code) -> np.ndarray:
    """Element by element: real numbers and NA-likes pass, anything else names its row."""
    out = np.empty(len(col), dtype=np.float64)
    for k, item in enumerate(col.astype(object).tolist()):
        if item is None or (not isinstance(item, str) and _is_na(item)):
            out[k] = np.nan
        elif isinstance(item, (numbers.Real, decimal.Decimal)):  # bool, int, float, numpy scalars
            out[k] = float(item)
        else:
            hint = ""
            if isinstance(item, str):
                hint = " (the column holds text; convert it with pd.to_numeric)"
            raise DataError(
                f"{where}, row {k + 1} (index {index[k]!r}): {_show(str(item))} is not a number; "
                f"{_expected(code, frame=True)}{hint}"
            )
    return out


def _is_na(item) -> bool:
    try:
        return bool(pd.isna(item))
    except (TypeError, ValueError):
        return False
