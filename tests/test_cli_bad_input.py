"""Bad input to every subcommand (issue 18): one clear message, exit status 2, no traceback, and
no output; nothing the user gave is changed.

The first tests are the faults reported one by one; `test_every_subcommand_refuses_bad_input`
feeds `run`, `analyze`, `simulate` and `merge` a table of malformed arguments and files.
"""

from __future__ import annotations

import pytest

from jaximpute.cli import main

GOOD_DATA = "".join(f"{j},{(i * 7 + j) % 5 + 0.5},{'-99' if (i + j) % 4 == 0 else (i * 3 + j) % 7 + 0.25}\n"
                    for j in range(1, 9) for i in range(6))

SCRIPT = """DATA: data.csv;
VARIABLES: cluster y x;
MISSING: -99;
MODEL: cluster ~ y x;
SEED: 1;
BURN: 20;
THIN: 5;
NIMPS: 2;
OUTFILE: imps.csv;
"""

STUDY = """[study]
reps = 2
batch = 2
seed = 1
methods = ["listwise", "complete"]

[imputation]
nimps = 2
burn = 10
thin = 2
chains = 2

[[conditions]]
clusters = 6
cluster_size = 4
"""


def stacked(rows_per_imputation=(12, 12, 12), extra_field_row=None) -> str:
    """A stacked file: imputation number, cluster, y, x; `extra_field_row` (1-based) gets a 5th field."""
    lines = []
    for m, n in enumerate(rows_per_imputation, start=1):
        for i in range(n):
            lines.append(f"{m},{i % 4 + 1},{(i * 7 + m) % 5 + 0.5},{(i * 3) % 7 + 0.25}")
    if extra_field_row is not None:
        lines[extra_field_row - 1] += ",7"
    return "\n".join(lines) + "\n"


def snapshot(folder) -> dict:
    """Every file under `folder` (relative path -> bytes; folders as None)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(folder.rglob("*"))}


def refused(argv, folder, capsys, monkeypatch) -> str:
    """Run the command line in `folder`; assert exit status 2, exactly one line on stderr (the
    error), no traceback, and that no file under `folder` was added, removed or changed.
    Returns the message."""
    monkeypatch.chdir(folder)
    before = snapshot(folder)
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaximpute: error: "), err
    assert "Traceback" not in err + out
    assert snapshot(folder) == before
    return lines[0]


def has(message: str, *fragments: str) -> None:
    for f in fragments:
        assert f in message, (f, message)


# ------------------------------------------------------------------- the reported faults


def test_outfile_under_a_file_says_it_is_a_file(tmp_path, capsys, monkeypatch):
    """OUTFILE data.csv/out.csv, data.csv a file: not 'folder ... does not exist'."""
    (tmp_path / "script.imp").write_text(SCRIPT.replace("OUTFILE: imps.csv;", "OUTFILE: data.csv/out.csv;"))
    (tmp_path / "data.csv").write_text(GOOD_DATA)
    msg = refused(["run", "script.imp"], tmp_path, capsys, monkeypatch)
    has(msg, "OUTFILE", "data.csv' is a file, not a folder")
    assert "does not exist" not in msg


@pytest.mark.parametrize("out", ["results", "results/sub"])
def test_simulate_out_that_is_a_file(tmp_path, capsys, monkeypatch, out):
    (tmp_path / "study.toml").write_text(STUDY)
    (tmp_path / "results").write_text("my notes\n")
    msg = refused(["simulate", "study.toml", "--out", out, "--quiet"], tmp_path, capsys, monkeypatch)
    has(msg, "--out", "'results' is a file, not a folder", "expected a folder")


def test_merge_out_that_is_a_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "study.toml").write_text(STUDY)
    (tmp_path / "shard").mkdir()
    (tmp_path / "merged").write_text("my notes\n")
    msg = refused(["merge", "study.toml", "shard", "--out", "merged"], tmp_path, capsys, monkeypatch)
    has(msg, "--out", "'merged' is a file, not a folder")


def test_analyze_uneven_imputations_names_file_and_imputations(tmp_path, capsys, monkeypatch):
    """It blamed the formula; the file, the imputations and their row counts are named now."""
    (tmp_path / "imps.csv").write_text(stacked((12, 10, 12)))
    msg = refused(["analyze", "imps.csv", "--names", "cluster y x", "--formula", "y ~ x + (1|cluster)"],
                  tmp_path, capsys, monkeypatch)
    has(msg, "imps.csv", "imputation 2 has 10 rows", "imputations 1 and 3 have 12", "same rows")
    assert "formula" not in msg


def test_analyze_uneven_separate_files_names_the_file(tmp_path, capsys, monkeypatch):
    rows = stacked((12, 11)).splitlines()
    (tmp_path / "imp1.csv").write_text("\n".join(r.split(",", 1)[1] for r in rows[:12]) + "\n")
    (tmp_path / "imp2.csv").write_text("\n".join(r.split(",", 1)[1] for r in rows[12:]) + "\n")
    (tmp_path / "implist.csv").write_text("imp1.csv\nimp2.csv\n")
    msg = refused(["analyze", "implist.csv", "--names", "cluster y x", "--formula", "y ~ x + (1|cluster)"],
                  tmp_path, capsys, monkeypatch)
    has(msg, "implist.csv", "imp2.csv has 11 rows", "imp1.csv has 12")


@pytest.mark.parametrize("how,origin", [(["--names", "cluster y x"], "3 names in --names"),
                                        (["--script", "names.imp"], "3 names in the VARIABLES of names.imp")])
def test_analyze_ragged_row_cites_the_names_given(tmp_path, capsys, monkeypatch, how, origin):
    (tmp_path / "imps.csv").write_text(stacked(extra_field_row=6))
    (tmp_path / "names.imp").write_text("VARIABLES: cluster y x;\nMODEL: cluster ~ y x;\n")
    msg = refused(["analyze", "imps.csv", *how, "--formula", "y ~ x + (1|cluster)"],
                  tmp_path, capsys, monkeypatch)
    has(msg, "imps.csv", "row 6 has 5 columns", "expected 4 (the imputation column and the " + origin)
    if how[0] == "--names":
        assert "VARIABLES" not in msg


def test_header_row_that_reorders_variables_is_refused(tmp_path, capsys, monkeypatch):
    """cluster,x,y,aux read with VARIABLES cluster y x aux swapped x and y without a word."""
    rows = GOOD_DATA.replace("\n", ",1\n")
    (tmp_path / "data.csv").write_text("cluster,x,y,aux\n" + rows)
    (tmp_path / "script.imp").write_text(SCRIPT.replace("cluster y x;", "cluster y x aux;"))
    msg = refused(["run", "script.imp", "--no-progress"], tmp_path, capsys, monkeypatch)
    has(msg, "data.csv: row 1 is a header row ('cluster,x,y,aux')", "VARIABLES (cluster y x aux)",
        "column 2 is 'x' in the file but 'y' in VARIABLES", "reorder VARIABLES", "remove the header row")


def test_header_row_with_the_variables_names_is_skipped(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text("cluster,y,x\n" + GOOD_DATA)
    (tmp_path / "script.imp").write_text(SCRIPT)
    assert main(["run", "script.imp", "--quiet"]) == 0
    assert (tmp_path / "imps.csv").read_text().count("\n") == 2 * GOOD_DATA.count("\n")


def test_simulate_negative_variance_is_named_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    """It ran, failed with "column 2 (y) has no observed values", and left a study.json that
    refused the corrected rerun; now the config is refused as it loads."""
    (tmp_path / "study.toml").write_text(STUDY + "\n[population]\ns2 = -0.5\n")
    msg = refused(["simulate", "study.toml", "--out", "res", "--quiet"], tmp_path, capsys, monkeypatch)
    has(msg, "study.toml: [population]: s2 = -0.5; expected a positive number")
    assert not (tmp_path / "res").exists()
