"""Writing the imputed data sets.

Two layouts, as Blimp writes them (see docs/design/script.md, "Outputs"):

- stacked: one comma-separated file; the first column is the imputation number (0 = the original
  data, with `include_original`), then every variable in input order; rows in input order within
  each imputation. R's `read.csv(header = FALSE)`, Stata's `import delimited` + `mi import flong`
  and SPSS's `data list free` read it as is.
- separate: one file per imputation (`*` in the name replaced by 1..M) plus a list file (`*`
  replaced by `list`) naming them one a line, which Mplus reads with `TYPE = IMPUTATION`.

Numbers: whole values are written as integers; other values with the fewest digits that read back
as the same float32 (the sampler's precision). Values that carry more precision than a float32
(observed data read from the file as float64) get the shortest text that reads back as the same
float64, so the observed data are never rounded. Values still missing keep the missing code (`NA`
when the input had none).

Safety: every file is first written to a temporary file in the target folder (flushed to disk)
and renamed over the target only when all files are complete, so a failed or interrupted run
leaves no partial output; no target may be one of the inputs (`protect`), and a missing folder is
an error, not created. The same holds for the other files jaximpute writes (`write_atomic`: the
studies' batches and summaries, analyze's table). A process that must stop at once (the command
line on Ctrl-C or SIGTERM, jaximpute.interrupt) calls `stop_writing`: it waits for renames in
progress, so a set of files is replaced whole or not at all, and removes the temporary files.
Renames into one folder hold a lock on the folder (flock), so two processes writing the same
separate files leave one process's set, not a mix.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from .data import DataTable
from .errors import OutputError

__all__ = ["write_stacked", "write_separate", "format_column", "atomic_write_text",
           "write_atomic", "stop_writing", "written"]

# Whole values below this magnitude are written as integers in any column (exact, and shorter
# than '1e+07' style text); in integer columns every whole value that fits an int64 is.
_WHOLE_LIMIT = 1e15
_WHOLE_LIMIT_INTEGER = 2.0**63

# Decimal digits tried for a float32 value; 9 always reads back as the same float32.
_FLOAT32_DIGITS = (8, 7, 6)


# --------------------------------------------------------------------------------------------
# number formatting


def format_column(values: np.ndarray, integer: bool, missing_code) -> list[str]:
    """Texts for one column: NaN -> the missing code (or NA), whole -> integer, else a float.

    `integer` (the column's values in the input were all whole) lets whole values of any int64
    size print as integers; in other columns only those below 1e15 do.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    return _format(v, bool(integer), _missing_text(missing_code)).tolist()


def _missing_text(missing_code) -> str:
    if missing_code is None:
        return "NA"
    code = float(missing_code)
    return str(int(code)) if code.is_integer() else repr(code)


def _format(v: np.ndarray, integer: bool, missing: str) -> np.ndarray:
    """Vectorised core of format_column, returning an object array of str."""
    out = np.empty(v.shape, dtype=object)
    nan = np.isnan(v)
    out[nan] = missing
    limit = _WHOLE_LIMIT_INTEGER if integer else _WHOLE_LIMIT
    with np.errstate(invalid="ignore"):
        whole = ~nan & (v == np.floor(v)) & (np.abs(v) < limit)
    if whole.any():
        out[whole] = list(map(str, v[whole].astype(np.int64).tolist()))
    rest = ~(nan | whole)
    if rest.any():
        out[rest] = _format_floats(v[rest])
    return out


def _format_floats(v: np.ndarray) -> np.ndarray:
    """Shortest round-trip text: float32 precision where the value is a float32, else float64."""
    out = np.empty(v.shape, dtype=object)
    with np.errstate(over="ignore"):
        single = np.isfinite(v) & (v.astype(np.float32).astype(np.float64) == v)
    if (~single).any():
        out[~single] = [repr(x) for x in v[~single].tolist()]  # Python's repr is shortest float64
    if single.any():
        sub = v[single]
        digits = _float32_digits(sub)
        texts = np.empty(sub.shape, dtype=object)
        for d in np.unique(digits).tolist():
            pick = digits == d
            spec = f".{d}g"
            texts[pick] = [format(x, spec) for x in sub[pick].tolist()]
        out[single] = texts
    return out


def _float32_digits(x: np.ndarray) -> np.ndarray:
    """Fewest significant digits (6..9) whose rounding of each float32 value reads back exactly.

    Decided with float64 arithmetic instead of formatting and re-parsing strings (which costs
    ~10x more): round x to d digits as n / 10**p, convert back to float32, compare. Where the
    float64 product lies too close to a rounding tie to be sure which way '%.dg' rounds, or
    where powers of ten are not exact, we keep 9 digits, which always read back exactly.
    Fewer than 6 digits need no separate try: '%.6g' drops trailing zeros.
    """
    k = np.full(x.shape, 9, dtype=np.int64)
    a = np.abs(x)
    ok = (a >= 1e-15) & (a < 1e15)  # keeps every 10**|p| below exact in float64 (<= 1e22)
    if not ok.any():
        return k
    xs, av = x[ok], a[ok]
    e = np.floor(np.log10(av)).astype(np.int64)
    e = np.where(av < 10.0 ** e, e - 1, e)  # log10 may be one off next to powers of ten
    e = np.where(av >= 10.0 ** (e + 1), e + 1, e)
    target = xs.astype(np.float32)
    kk = np.full(xs.shape, 9, dtype=np.int64)
    for d in _FLOAT32_DIGITS:  # descending, so the smallest passing d is the one kept
        p = d - 1 - e
        scale = 10.0 ** np.abs(p)
        scaled = np.where(p >= 0, xs * scale, xs / scale)
        n = np.round(scaled)
        clear = np.abs(np.abs(scaled - np.trunc(scaled)) - 0.5) > 1e-6
        back = np.where(p >= 0, n / scale, n * scale)
        kk[clear & (back.astype(np.float32) == target)] = d
    k[ok] = kk
    return k


# --------------------------------------------------------------------------------------------
# the two layouts


def write_stacked(
    path,
    table: DataTable,
    imputations: np.ndarray,
    *,
    include_original: bool = False,
    header: bool = False,
    protect: Iterable = (),
) -> Path:
    """One file: imputation number, then every column; imputation 0 = the original data."""
    imps = _check_imputations(table, imputations)
    target = _as_path(path)
    _refuse_inputs([target], protect)
    _check_folder(target.parent, target)
    _check_finite(imps, table)
    m, n, _ = imps.shape
    first = 0 if include_original else 1
    columns = _text_columns(table, imps, include_original)
    numbers = np.repeat(np.array([str(i) for i in range(first, m + 1)], dtype=object), n)
    columns.insert(0, numbers.tolist())
    head = ["imputation", *table.names] if header else None
    _atomic_write({target: _csv_text(columns, head)})
    return target


def write_separate(
    pattern,
    table: DataTable,
    imputations: np.ndarray,
    *,
    header: bool = False,
    protect: Iterable = (),
) -> list[Path]:
    """One file per imputation ('*' -> 1..M) plus the list file ('*' -> 'list'); returns the files.

    The list file holds the data file names relative to its own folder (which is theirs), one a
    line, as Mplus' TYPE = IMPUTATION reads them.
    """
    imps = _check_imputations(table, imputations)
    pattern = _as_path(pattern)
    if "*" not in pattern.name:
        raise OutputError(
            f"{pattern}: a separate-files output name needs a '*' to be replaced by the "
            "imputation number (e.g. imp*.csv)"
        )
    if "*" in str(pattern.parent):
        raise OutputError(f"{pattern}: the '*' must be in the file name, not in the folder")
    folder = pattern.parent
    m, n, _ = imps.shape
    files = [folder / pattern.name.replace("*", str(i)) for i in range(1, m + 1)]
    list_file = folder / pattern.name.replace("*", "list")
    _refuse_inputs([*files, list_file], protect)
    _check_folder(folder, pattern)
    _check_finite(imps, table)
    columns = _text_columns(table, imps, include_original=False)
    head = list(table.names) if header else None
    contents = {
        f: _csv_text([c[i * n : (i + 1) * n] for c in columns], head) for i, f in enumerate(files)
    }
    contents[list_file] = "".join(f.name + "\n" for f in files)
    _atomic_write(contents)
    return files


def _check_imputations(table: DataTable, imputations) -> np.ndarray:
    """(M, N, V) matching the table; a wrong shape is a programming error, not a user's."""
    imps = np.asarray(imputations)
    if imps.ndim != 3 or imps.shape[1:] != table.values.shape or imps.shape[0] < 1:
        raise ValueError(
            f"imputations must have shape (M >= 1, {table.values.shape[0]}, "
            f"{table.values.shape[1]}); got {imps.shape}"
        )
    if not np.issubdtype(imps.dtype, np.floating):
        imps = imps.astype(np.float64)
    return imps


def _check_finite(imps: np.ndarray, table: DataTable) -> None:
    """An infinite imputed value means the sampler diverged: write nothing rather than 'inf'."""
    bad = np.isinf(imps)
    if bad.any():
        m, i, j = (int(k) for k in np.argwhere(bad)[0])
        raise OutputError(
            f"imputation {m + 1}, row {i + 1}, column {j + 1} ({table.names[j]}) is infinite; "
            "the sampler diverged, so no imputed data were written"
        )


def _text_columns(table: DataTable, imps: np.ndarray, include_original: bool) -> list[list[str]]:
    """Per column, the texts of all imputations stacked (the original data first if asked).

    Most cells of an imputed data set are observed values repeated in every imputation, so each
    column's original values are formatted once and only the cells that differ are formatted again.
    """
    m, n, v = imps.shape
    blocks = m + 1 if include_original else m
    missing = _missing_text(table.missing_code)
    columns = []
    for j in range(v):
        integer = bool(table.integer_columns[j])
        orig = table.values[:, j].astype(np.float64)
        orig_text = _format(orig, integer, missing)
        imp = imps[:, :, j].astype(np.float64)
        differs = ~((imp == orig) | (np.isnan(imp) & np.isnan(orig)))
        if include_original:
            differs = np.concatenate([np.zeros((1, n), dtype=bool), differs])
            imp = np.concatenate([orig[None, :], imp])
        text = np.tile(orig_text, blocks)
        flat = differs.ravel()
        if flat.any():
            text[flat] = _format(imp.ravel()[flat], integer, missing)
        columns.append(text.tolist())
    return columns


def _csv_field(name: str) -> str:
    """Quote a header name only where CSV requires it."""
    if any(c in name for c in ',"\n\r'):
        return '"' + name.replace('"', '""') + '"'
    return name


def _csv_text(columns: list[list[str]], header: list[str] | None) -> str:
    body = "\n".join(map(",".join, zip(*columns)))
    if header is not None:
        body = ",".join(map(_csv_field, header)) + "\n" + body
    return body + "\n"


# --------------------------------------------------------------------------------------------
# file safety


def atomic_write_text(path, text: str, *, protect=()) -> Path:
    """Write one text file atomically (tables, reports), never over an input."""
    target = _as_path(path)
    _refuse_inputs([target], protect)
    _check_folder(target.parent if str(target.parent) else Path("."), target)
    _atomic_write({target: text})
    return target


def _as_path(path) -> Path:
    return Path(os.path.expanduser(str(path)))


def _refuse_inputs(targets: list[Path], protect: Iterable) -> None:
    """No output may replace an input (the data file, the script), however the path is spelled."""
    inputs = [_as_path(p) for p in protect if p is not None]
    for target in targets:
        if target.is_dir():
            raise OutputError(f"{target}: is a folder; expected a file name for the output")
        for source in inputs:
            if _same_file(target, source):
                raise OutputError(
                    f"{target}: this output would overwrite the input file {source}; "
                    "choose another output file name"
                )


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)  # also catches hard links and case-insensitive names
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _check_folder(folder: Path, target: Path) -> None:
    if not folder.exists():
        raise OutputError(f"{target}: the folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise OutputError(f"{target}: {folder} is not a folder")


def _atomic_write(contents: Mapping[Path, str]) -> None:
    """Write every file to a temporary file beside it, then rename them all into place.

    On any failure (or Ctrl-C) every temporary file is removed, so no target is ever partial.
    """
    temps: dict[Path, str] = {}
    current = next(iter(contents))
    try:
        for current, text in contents.items():
            fd, tmp = _temporary_beside(current)
            temps[current] = tmp
            _write_fd(fd, text)
            os.chmod(tmp, _new_file_mode(current))
        _commit(temps)
    except BaseException as exc:
        _discard(temps.values())
        if isinstance(exc, OSError):
            raise _write_error(current, exc) from None
        raise


def write_atomic(path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` fills a temporary file beside `path` (pandas' to_csv, matplotlib's savefig,
    Path.write_text), which replaces `path` once it is complete and on disk: a reader (or a
    process that stopped) never sees a partial file, and processes that finish together
    (--distributed) each leave a whole one. A system error names the file (OutputError)."""
    target = _as_path(path)
    fd, tmp = _temporary_beside(target)
    try:
        os.close(fd)
        write(Path(tmp))
        _fsync(tmp)
        os.chmod(tmp, _new_file_mode(target))
        _commit({target: tmp})
    except BaseException as exc:
        _discard([tmp])
        if isinstance(exc, OSError):
            raise _write_error(target, exc) from None
        raise
    return target


def _write_error(target: Path, exc: OSError, untouched: bool = True) -> OutputError:
    """`target` could not be written: the system's reason, and (`untouched`: no file of the
    set was put in place) that an older file of that name is as it was."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        reason += ": the disk is full or the file is larger than the system allows"
    tail = "; nothing was written there (a previous file of that name is unchanged)"
    return OutputError(f"{target}: cannot write the output file ({reason})"
                       + (tail if untouched else ""))


# The temporary files being written now and the renames that put them in place, for a process
# that must stop at once (stop_writing). The lock is reentrant: it is taken by the thread that
# writes, and by the one that stops the process (the command line's main thread).
_guard = threading.RLock()
_temporary: set[str] = set()
_written: list[Path] = []


def _temporary_beside(target: Path) -> tuple[int, str]:
    """A new temporary file in `target`'s folder, hidden (.NAME.xxxx.tmp) and registered for
    stop_writing; created under the guard, so a stop cannot miss it."""
    with _guard:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        _temporary.add(tmp)
    return fd, tmp


def _discard(temps: Iterable[str]) -> None:
    for tmp in list(temps):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        _temporary.discard(tmp)


def _commit(temps: dict[Path, str]) -> None:
    """Rename every temporary file over its target, all or none as far as a stop goes (the
    guard), and with each target folder locked against other processes doing the same."""
    with ExitStack() as stack:
        with _guard:
            folders = sorted({str(t.parent.resolve()) for t in temps})
            handles = [stack.enter_context(_FolderLock(f)) for f in folders]
            for i, target in enumerate(list(temps)):
                try:
                    os.replace(temps[target], target)
                except OSError as e:
                    raise _write_error(target, e, untouched=i == 0) from None
                _temporary.discard(temps.pop(target))
                _written.append(target)
        for h in handles:                 # durable: a stop need not wait for this
            h.sync()


class _FolderLock:
    """An exclusive flock on a folder while files are renamed into it (other processes writing
    there wait); where the system cannot lock a folder (some network file systems), none."""

    def __init__(self, folder: str):
        self.folder = folder
        self.fd: int | None = None

    def __enter__(self) -> "_FolderLock":
        try:
            import fcntl
            self.fd = os.open(self.folder, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except (ImportError, OSError, AttributeError):
            pass                          # keeps the fd (if any) for sync, and is closed below
        return self

    def sync(self) -> None:
        """The renames themselves on disk (the folder's entries), where the system allows."""
        if self.fd is not None:
            try:
                os.fsync(self.fd)
            except OSError:
                pass

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)             # releases the lock


def stop_writing(timeout: float = 10.0) -> None:
    """Prepare this process to end at once (os._exit): wait (up to `timeout` seconds) for the
    renames in progress, so that a set of files is replaced whole, then remove every temporary
    file this process is writing. The guard is kept, so no rename starts afterwards: call this
    only just before the process ends."""
    _guard.acquire(timeout=timeout)
    _discard(_temporary)


def written() -> list[Path]:
    """The files this process has put in place (stop messages say what is on disk)."""
    return list(_written)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_fd(fd: int, text: str) -> None:
    """One write of the whole file, flushed to disk before it may replace anything."""
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _new_file_mode(target: Path) -> int:
    """mkstemp makes files private (0600); give outputs the mode a plain open() would."""
    try:
        return target.stat().st_mode & 0o7777  # replacing an old output: keep its mode
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:  # reading it this way does not change it
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
