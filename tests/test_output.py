"""Writing imputed data: layouts, number texts, refusing to overwrite inputs, atomicity, speed."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pandas as pd
import pytest

import jaximpute.output as output
from jaximpute.data import DataTable, read_table
from jaximpute.errors import OutputError
from jaximpute.output import format_column, write_separate, write_stacked

nan = np.nan


def make_table(values, integer=None, code=-99.0, names=None):
    values = np.asarray(values, dtype=np.float64)
    if integer is None:
        integer = np.all((values == np.floor(values)) | np.isnan(values), axis=0)
    names = names or tuple(f"v{j}" for j in range(values.shape[1]))
    return DataTable(tuple(names), values, "data.csv", np.asarray(integer), code, False)


def small():
    """3 rows: id (integer), y (continuous, one missing), g (integer code, one missing)."""
    table = make_table([[1, 2.5, 0], [1, nan, 1], [2, 3.25, nan]], names=("id", "y", "g"))
    imps = np.array(
        [
            [[1, 2.5, 0], [1, 0.1, 1], [2, 3.25, 1]],
            [[1, 2.5, 0], [1, -1.75, 1], [2, 3.25, 0.5]],  # 0.5: a continuous draw of an integer
        ],
        dtype=np.float64,
    )
    imps[:, 1, 1] = imps[:, 1, 1].astype(np.float32)  # the sampler's precision
    return table, imps


def lines(path):
    return path.read_text().splitlines()


def files_in(folder):
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------------------------
# stacked


def test_stacked_layout_and_integers(tmp_path):
    table, imps = small()
    out = write_stacked(tmp_path / "imps.csv", table, imps)
    assert out == tmp_path / "imps.csv"
    assert lines(out) == [
        "1,1,2.5,0",
        "1,1,0.1,1",
        "1,2,3.25,1",
        "2,1,2.5,0",
        "2,1,-1.75,1",
        "2,2,3.25,0.5",
    ]


def test_stacked_round_trip_with_pandas(tmp_path):
    rng = np.random.default_rng(3)
    n, v, m = 200, 4, 5
    data = np.round(rng.normal(size=(n, v)) * 10, 2)
    data[:, 0] = np.repeat(np.arange(20), 10)
    miss = rng.random((n, v)) < 0.3
    miss[:, 0] = False
    observed = np.where(miss, nan, data)
    table = make_table(observed)
    imps = np.repeat(observed[None], m, axis=0)
    draws = rng.normal(size=(m, n, v)).astype(np.float32).astype(np.float64) * 10
    imps[:, miss] = draws[:, miss]
    path = write_stacked(tmp_path / "imps.csv", table, imps)
    back = pd.read_csv(path, header=None).to_numpy()
    assert back.shape == (m * n, v + 1)
    assert np.array_equal(back[:, 0], np.repeat(np.arange(1, m + 1), n))
    # observed values come back exactly; imputed ones as the same float32
    assert np.array_equal(back[:, 1:].reshape(m, n, v)[:, ~miss], imps[:, ~miss])
    got = back[:, 1:].reshape(m, n, v)[:, miss].astype(np.float32)
    assert np.array_equal(got, imps[:, miss].astype(np.float32))


def test_round_trip_from_a_file_read_with_read_table(tmp_path):
    src = tmp_path / "data.csv"
    src.write_text("1,2.75,-99\n2,-99,0.1\n")
    table = read_table(src, ["id", "x", "y"], -99)
    imps = np.array([np.nan_to_num(table.values, nan=1.5)])
    write_stacked(tmp_path / "imps.csv", table, imps, include_original=True)
    assert lines(tmp_path / "imps.csv") == [
        "0,1,2.75,-99",
        "0,2,-99,0.1",
        "1,1,2.75,1.5",
        "1,2,1.5,0.1",
    ]


def test_include_original_writes_the_missing_code(tmp_path):
    table, imps = small()
    out = write_stacked(tmp_path / "imps.csv", table, imps, include_original=True)
    rows = lines(out)
    assert rows[:3] == ["0,1,2.5,0", "0,1,-99,1", "0,2,3.25,-99"]
    assert rows[3].startswith("1,") and len(rows) == 9


def test_missing_written_as_na_without_a_code(tmp_path):
    table, imps = small()
    table = make_table(table.values, code=None, names=table.names)
    imps[0, 2, 2] = nan  # still missing: a variable outside the model
    out = write_stacked(tmp_path / "imps.csv", table, imps, include_original=True)
    rows = lines(out)
    assert rows[1] == "0,1,NA,1"
    assert rows[5] == "1,2,3.25,NA"
    back = pd.read_csv(out, header=None)
    assert back.isna().sum().sum() == 3


def test_still_missing_values_keep_the_code(tmp_path):
    table, imps = small()
    imps[:, 2, 2] = nan
    rows = lines(write_stacked(tmp_path / "imps.csv", table, imps))
    assert rows[2] == "1,2,3.25,-99"


def test_stacked_header(tmp_path):
    table, imps = small()
    rows = lines(write_stacked(tmp_path / "imps.csv", table, imps, header=True))
    assert rows[0] == "imputation,id,y,g"
    back = pd.read_csv(tmp_path / "imps.csv")
    assert list(back.columns) == ["imputation", "id", "y", "g"]
    assert len(back) == 6


def test_float32_imputations_accepted(tmp_path):
    table, imps = small()
    out = write_stacked(tmp_path / "imps.csv", table, imps.astype(np.float32))
    assert lines(out)[1] == "1,1,0.1,1"


# --------------------------------------------------------------------------------------------
# separate


def test_separate_files_and_list_file(tmp_path):
    table, imps = small()
    files = write_separate(tmp_path / "imp*.csv", table, imps)
    assert files == [tmp_path / "imp1.csv", tmp_path / "imp2.csv"]
    assert lines(files[0]) == ["1,2.5,0", "1,0.1,1", "2,3.25,1"]
    assert lines(files[1])[2] == "2,3.25,0.5"
    assert lines(tmp_path / "implist.csv") == ["imp1.csv", "imp2.csv"]
    assert files_in(tmp_path) == ["imp1.csv", "imp2.csv", "implist.csv"]
    for m, path in enumerate(files):
        back = pd.read_csv(path, header=None).to_numpy()
        assert np.array_equal(back.astype(np.float32), imps[m].astype(np.float32))


def test_separate_header(tmp_path):
    table, imps = small()
    files = write_separate(tmp_path / "imp*.dat", table, imps, header=True)
    assert lines(files[0])[0] == "id,y,g"
    assert lines(tmp_path / "implist.dat") == ["imp1.dat", "imp2.dat"]


def test_separate_needs_a_star(tmp_path):
    table, imps = small()
    with pytest.raises(OutputError, match=r"needs a '\*'"):
        write_separate(tmp_path / "imps.csv", table, imps)
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------------------------
# never overwrite an input


def test_protect_refuses_the_data_file(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("original\n")
    table, imps = small()
    with pytest.raises(OutputError, match="overwrite the input file") as info:
        write_stacked(tmp_path / "sub" / ".." / "data.csv", table, imps, protect=[data])
    assert "data.csv" in str(info.value)
    assert data.read_text() == "original\n"
    assert files_in(tmp_path) == ["data.csv"]


def test_protect_relative_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "run.imp"
    script.write_text("DATA: x;\n")
    table, imps = small()
    with pytest.raises(OutputError, match="run.imp"):
        write_stacked("run.imp", table, imps, protect=[str(script), None])
    assert script.read_text() == "DATA: x;\n"


def test_protect_through_a_symlink(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("keep\n")
    (tmp_path / "link.csv").symlink_to(data)
    table, imps = small()
    with pytest.raises(OutputError):
        write_stacked(tmp_path / "link.csv", table, imps, protect=[data])
    assert data.read_text() == "keep\n"


def test_protect_in_separate_checks_every_file_first(tmp_path):
    data = tmp_path / "imp2.csv"  # an unlucky input name
    data.write_text("input\n")
    table, imps = small()
    with pytest.raises(OutputError, match="imp2.csv"):
        write_separate(tmp_path / "imp*.csv", table, imps, protect=[data])
    assert data.read_text() == "input\n"
    assert files_in(tmp_path) == ["imp2.csv"]  # imp1.csv was not written either


def test_protect_covers_the_list_file(tmp_path):
    data = tmp_path / "implist.csv"
    data.write_text("input\n")
    table, imps = small()
    with pytest.raises(OutputError, match="implist.csv"):
        write_separate(tmp_path / "imp*.csv", table, imps, protect=[data])
    assert files_in(tmp_path) == ["implist.csv"]


def test_missing_folder_is_an_error(tmp_path):
    table, imps = small()
    with pytest.raises(OutputError, match="does not exist"):
        write_stacked(tmp_path / "nowhere" / "imps.csv", table, imps)
    assert not (tmp_path / "nowhere").exists()


def test_target_is_a_folder(tmp_path):
    table, imps = small()
    (tmp_path / "imps.csv").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        write_stacked(tmp_path / "imps.csv", table, imps)


def test_unwritable_folder(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    table, imps = small()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            write_stacked(locked / "imps.csv", table, imps)
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------------------------
# atomicity


def failing_after(monkeypatch, calls_ok, exc):
    """Let `calls_ok` temp files be written, then fail half-way through the next one."""
    real = output._write_fd
    count = {"n": 0}

    def write(fd, text):
        count["n"] += 1
        if count["n"] > calls_ok:
            with os.fdopen(fd, "w") as fh:
                fh.write(text[: len(text) // 2])  # a partial file on disk, then the failure
            raise exc
        real(fd, text)

    monkeypatch.setattr(output, "_write_fd", write)


def test_stacked_failure_leaves_nothing(tmp_path, monkeypatch):
    failing_after(monkeypatch, 0, OSError(28, "No space left on device"))
    table, imps = small()
    with pytest.raises(OutputError, match="imps.csv: cannot write the output file"):
        write_stacked(tmp_path / "imps.csv", table, imps)
    assert files_in(tmp_path) == []


def test_failure_keeps_the_previous_output(tmp_path, monkeypatch):
    table, imps = small()
    target = write_stacked(tmp_path / "imps.csv", table, imps)
    before = target.read_text()
    failing_after(monkeypatch, 0, OSError(28, "No space left on device"))
    with pytest.raises(OutputError):
        write_stacked(target, table, imps * 2)
    assert target.read_text() == before
    assert files_in(tmp_path) == ["imps.csv"]


def test_separate_failure_mid_way_leaves_nothing(tmp_path, monkeypatch):
    failing_after(monkeypatch, 1, OSError(5, "Input/output error"))
    table, imps = small()
    with pytest.raises(OutputError, match="imp2.csv"):
        write_separate(tmp_path / "imp*.csv", table, imps)
    assert files_in(tmp_path) == []


def test_interrupt_cleans_up_and_propagates(tmp_path, monkeypatch):
    failing_after(monkeypatch, 1, KeyboardInterrupt())
    table, imps = small()
    with pytest.raises(KeyboardInterrupt):
        write_separate(tmp_path / "imp*.csv", table, imps)
    assert files_in(tmp_path) == []


def test_rename_failure_cleans_temps(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(output.os, "replace", refuse)
    table, imps = small()
    with pytest.raises(OutputError, match="Permission denied"):
        write_separate(tmp_path / "imp*.csv", table, imps)
    assert files_in(tmp_path) == []


def test_a_full_disk_is_named_and_keeps_the_previous_file(tmp_path, monkeypatch):
    """ENOSPC / EFBIG (a full disk, a quota, a file-size limit) say so in the one line."""
    table, imps = small()
    target = write_stacked(tmp_path / "imps.csv", table, imps)
    before = target.read_text()
    failing_after(monkeypatch, 0, OSError(27, "File too large"))
    with pytest.raises(OutputError, match=r"imps.csv: cannot write the output file \(File too large: "
                                          r"the disk is full .*\); nothing was written there"):
        write_stacked(target, table, imps * 2)
    assert target.read_text() == before and files_in(tmp_path) == ["imps.csv"]


def test_write_atomic_puts_a_whole_file_in_place_or_none(tmp_path):
    """The studies' and analyze's files: written by a callback into a temporary file, renamed
    when whole; a callback that fails leaves the old file and no temporary one."""
    target = tmp_path / "summary.csv"
    output.write_atomic(target, lambda tmp: tmp.write_text("a,b\n1,2\n"))
    assert target.read_text() == "a,b\n1,2\n" and target in output.written()

    def half(tmp):
        tmp.write_text("a,b\n")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="summary.csv: cannot write the output file .*disk is full"):
        output.write_atomic(target, half)
    with pytest.raises(KeyboardInterrupt):
        output.write_atomic(target, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert target.read_text() == "a,b\n1,2\n" and files_in(tmp_path) == ["summary.csv"]
    assert not output._temporary


def test_infinite_imputation_writes_nothing(tmp_path):
    table, imps = small()
    imps[1, 2, 1] = np.inf
    with pytest.raises(OutputError, match=r"imputation 2, row 3, column 2 \(y\) is infinite"):
        write_stacked(tmp_path / "imps.csv", table, imps)
    assert files_in(tmp_path) == []


def test_wrong_shape_is_a_programming_error(tmp_path):
    table, imps = small()
    with pytest.raises(ValueError):
        write_stacked(tmp_path / "imps.csv", table, imps[:, :2])


def test_output_file_mode_is_not_private(tmp_path):
    table, imps = small()
    mode = stat.S_IMODE(write_stacked(tmp_path / "imps.csv", table, imps).stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


# --------------------------------------------------------------------------------------------
# number texts


def test_format_column_basics():
    values = np.array([1, 2.5, nan, -99, 1e7, 73.123456789, np.float32(0.1), -0.0])
    assert format_column(values, True, -99.0) == [
        "1", "2.5", "-99", "-99", "10000000", "73.123456789", "0.1", "0",
    ]
    assert format_column(np.array([nan, 0.5]), False, None) == ["NA", "0.5"]
    assert format_column(np.array([nan]), False, 999.5) == ["999.5"]


def test_huge_whole_values():
    assert format_column(np.array([2.0**60]), True, None) == [str(2**60)]
    assert float(format_column(np.array([1e20]), False, None)[0]) == 1e20


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 1.0, 37.0, 1e4, 1e8, 1e20])
def test_float32_texts_round_trip_and_are_short(scale):
    rng = np.random.default_rng(int(scale * 1000) % 2**32)
    x = (rng.normal(size=20_000) * scale).astype(np.float32)
    texts = format_column(x.astype(np.float64), False, None)
    assert np.array_equal(np.array(texts, dtype=np.float64).astype(np.float32), x)
    # never longer than 9 significant digits, the float32 worst case
    digits = [len(t.split("e")[0].replace("-", "").replace(".", "").lstrip("0")) for t in texts]
    assert max(digits) <= 9


def test_float64_observed_values_are_not_rounded():
    x = np.array([0.1, 73.123456789012, 1 / 3])
    texts = format_column(x, False, None)
    assert [float(t) for t in texts] == x.tolist()


def test_write_speed(tmp_path):
    """20 imputations x 6,496 rows x 12 columns (the seed document's example) in well under 1 s."""
    rng = np.random.default_rng(0)
    m, n, v = 20, 6496, 12
    data = np.round(rng.normal(size=(n, v)) * 10, 2)
    data[:, :5] = rng.integers(0, 1000, size=(n, 5))
    miss = rng.random((n, v)) < 0.3
    observed = np.where(miss, nan, data)
    table = make_table(observed)
    imps = np.repeat(observed[None], m, axis=0)
    imps[:, miss] = (rng.normal(size=(m, n, v)) * 10).astype(np.float32)[:, miss]
    start = time.perf_counter()
    write_stacked(tmp_path / "imps.csv", table, imps, include_original=True)
    stacked = time.perf_counter() - start
    start = time.perf_counter()
    write_separate(tmp_path / "imp*.csv", table, imps)
    separate = time.perf_counter() - start
    assert stacked < 1.0 and separate < 1.0, (stacked, separate)
