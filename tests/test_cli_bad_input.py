"""Bad input to every subcommand (issue 18): one clear message, exit status 2, no traceback, and
no output; nothing the user gave is changed.

The first tests are the faults reported one by one; `test_every_subcommand_refuses_bad_input`
feeds `run`, `analyze`, `simulate` and `merge` a table of malformed arguments and files.
"""

from __future__ import annotations

import json

import pytest

from jaximpute.cli import main

from test_cli_errors import BASE as SCRIPT, GOOD_DATA     # the same good script and data

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


# ------------------------------------------------------------------- every subcommand, a table

DIR = object()          # a folder where the case's file would be
CLAIMED = object()      # a results folder claimed by study.toml's study, with no batches yet
BINARY = bytes(range(256)) * 8          # NUL bytes and invalid UTF-8: a spreadsheet, an image
RUN = ["run", "script.imp", "--no-progress"]
ANALYZE = ["analyze", "imps.csv", "--names", "cluster y x", "--formula", "y ~ x + (1|cluster)"]
SIMULATE = ["simulate", "study.toml", "--out", "res", "--quiet"]
MERGE = ["merge", "study.toml", "shard", "--out", "merged"]
RUN_FILES = {"script.imp": SCRIPT, "data.csv": GOOD_DATA}
ANALYZE_FILES = {"imps.csv": stacked()}


def bad(name, argv, files, fragments):
    return pytest.param(argv, files, fragments, id=name)


BAD_INPUT = [
    # run: the script
    bad("run/no-script-given", ["run"], {}, ["required", "script"]),
    bad("run/script-missing", ["run", "nope.imp"], {}, ["nope.imp", "cannot read the script"]),
    bad("run/script-is-a-folder", RUN, {"script.imp": DIR}, ["script.imp", "cannot read the script"]),
    bad("run/script-empty", RUN, {"script.imp": "", "data.csv": GOOD_DATA}, ["script.imp", "MODEL"]),
    bad("run/script-binary", RUN, {"script.imp": BINARY}, ["script.imp:2:118", "not UTF-8"]),
    bad("run/script-is-data", ["run", "data.csv"], {"data.csv": GOOD_DATA}, ["data.csv:1:1"]),
    # run: the data
    bad("run/data-missing", RUN, {"script.imp": SCRIPT}, ["data.csv", "file not found"]),
    bad("run/data-empty", RUN, {**RUN_FILES, "data.csv": ""}, ["data.csv", "empty"]),
    bad("run/data-binary", RUN, {**RUN_FILES, "data.csv": BINARY}, ["data.csv", "binary file"]),
    bad("run/data-is-a-folder", RUN, {**RUN_FILES, "data.csv": DIR}, ["data.csv", "folder"]),
    bad("run/data-ragged", RUN, {**RUN_FILES, "data.csv": "1,2,3\n1,2\n" + GOOD_DATA},
        ["data.csv", "row 2 has 2 columns; expected 3"]),
    bad("run/data-not-a-number", RUN, {**RUN_FILES, "data.csv": "1,2,3\n1,two,3\n" + GOOD_DATA},
        ["data.csv", "row 2, column 2 (y)", "'two'"]),
    # run: the options
    bad("run/unknown-option", [*RUN, "--bogus"], RUN_FILES, ["unrecognized arguments: --bogus"]),
    bad("run/bad-platform", [*RUN, "--platform", "quantum"], RUN_FILES,
        ["error: run: argument --platform", "'quantum'", "jaximpute run --help"]),
    bad("run/outfile-is-a-folder", [*RUN, "--outfile", "sub"], {**RUN_FILES, "sub": DIR},
        ["--outfile", "'sub' is a folder"]),
    bad("run/outfile-folder-missing", [*RUN, "--outfile", "nowhere/imps.csv"], RUN_FILES,
        ["--outfile", "'nowhere' does not exist"]),
    bad("run/outfile-under-a-file", [*RUN, "--outfile", "data.csv/imps.csv"], RUN_FILES,
        ["--outfile", "'data.csv' is a file, not a folder"]),
    bad("run/outfile-is-the-script", [*RUN, "--outfile", "script.imp"], RUN_FILES,
        ["script.imp", "overwrite"]),
    # analyze: the file
    bad("analyze/file-missing", ANALYZE, {}, ["imps.csv", "file not found"]),
    bad("analyze/file-empty", ANALYZE, {"imps.csv": ""}, ["imps.csv", "empty"]),
    bad("analyze/file-binary", ANALYZE, {"imps.csv": BINARY}, ["imps.csv", "binary file"]),
    bad("analyze/file-is-a-folder", ANALYZE, {"imps.csv": DIR}, ["imps.csv", "folder"]),
    bad("analyze/file-ragged", ANALYZE, {"imps.csv": stacked(extra_field_row=3)},
        ["imps.csv", "row 3 has 5 columns", "--names"]),
    bad("analyze/file-not-a-number", ANALYZE, {"imps.csv": stacked().replace("\n1,2,", "\n1,two,", 1)},
        ["imps.csv", "row 2, column 2 (cluster)", "'two'"]),
    bad("analyze/imputation-not-whole", ANALYZE, {"imps.csv": stacked().replace("1,", "1.5,", 1)},
        ["imps.csv", "column 1", "imputation number"]),
    bad("analyze/one-imputation", ANALYZE, {"imps.csv": stacked((12,))},
        ["imps.csv: holds 1 imputed data set", "at least 2"]),
    bad("analyze/uneven-imputations", ANALYZE, {"imps.csv": stacked((12, 12, 9))},
        ["imps.csv", "imputation 3 has 9 rows"]),
    bad("analyze/list-file-names-a-missing-file", ANALYZE,
        {"imps.csv": "imp1.csv\nimp2.csv\n", "imp1.csv": GOOD_DATA},
        ["imps.csv", "list file", "'imp2.csv' does not exist"]),
    # analyze: the options
    bad("analyze/no-formula", ANALYZE[:4], ANALYZE_FILES, ["--formula", "required"]),
    bad("analyze/formula-unreadable", [*ANALYZE[:4], "--formula", "y ~ x +"], ANALYZE_FILES, ["y ~ x +"]),
    bad("analyze/formula-unknown-variable", [*ANALYZE[:4], "--formula", "y ~ q + (1|cluster)"],
        ANALYZE_FILES, ["'q'"]),
    bad("analyze/names-too-few", ["analyze", "imps.csv", "--names", "cluster y", "--formula", "y ~ x"],
        ANALYZE_FILES, ["imps.csv", "row 1 has 4 columns; expected 3", "--names"]),
    bad("analyze/names-and-script", [*ANALYZE, "--script", "s.imp"], ANALYZE_FILES,
        ["--script", "not allowed with argument --names"]),
    bad("analyze/missing-not-a-number", [*ANALYZE, "--missing", "abc"], ANALYZE_FILES,
        ["--missing", "'abc' is not a number"]),
    bad("analyze/df-com-not-positive", [*ANALYZE, "--df-com", "-3"], ANALYZE_FILES,
        ["--df-com", "-3", "positive"]),
    bad("analyze/script-missing", [*ANALYZE[:2], "--script", "s.imp", *ANALYZE[4:]], ANALYZE_FILES,
        ["s.imp", "cannot read the script"]),
    bad("analyze/script-without-variables", [*ANALYZE[:2], "--script", "s.imp", *ANALYZE[4:]],
        {**ANALYZE_FILES, "s.imp": "MODEL: cluster ~ y x;\n"}, ["s.imp", "VARIABLES", "required"]),
    bad("analyze/output-folder-missing", [*ANALYZE, "--output", "nowhere/pooled.csv"], ANALYZE_FILES,
        ["--output", "'nowhere' does not exist"]),
    bad("analyze/output-is-the-input", [*ANALYZE, "--output", "imps.csv"], ANALYZE_FILES,
        ["--output", "input file"]),
    bad("analyze/unknown-option", [*ANALYZE, "--bogus"], ANALYZE_FILES, ["unrecognized arguments: --bogus"]),
    # simulate
    bad("simulate/config-missing", SIMULATE, {}, ["study.toml", "cannot read the config"]),
    bad("simulate/config-is-a-folder", SIMULATE, {"study.toml": DIR}, ["study.toml", "cannot read the config"]),
    bad("simulate/config-empty", SIMULATE, {"study.toml": ""}, ["study.toml", "empty", "[[conditions]]"]),
    bad("simulate/config-binary", SIMULATE, {"study.toml": BINARY}, ["study.toml", "not UTF-8"]),
    bad("simulate/config-not-toml", SIMULATE, {"study.toml": "reps = = 3\n"}, ["study.toml", "not valid TOML"]),
    bad("simulate/section-not-a-table", SIMULATE, {"study.toml": "study = 5\n" + STUDY.split("\n", 5)[5]},
        ["study.toml", "study", "expected a [study] table"]),
    bad("simulate/population-array", SIMULATE, {"study.toml": STUDY + "[[population]]\ns2 = 1\n"},
        ["study.toml", "population", "expected a [population] table"]),
    bad("simulate/conditions-not-tables", SIMULATE,
        {"study.toml": "conditions = [1, 2]\n" + STUDY.split("[[conditions]]")[0]},
        ["study.toml", "conditions", "expected [[conditions]] tables"]),
    bad("simulate/reps-not-a-number", SIMULATE, {"study.toml": STUDY.replace("reps = 2", "reps = \"ten\"")},
        ["study.toml", "[study].reps", "positive whole number"]),
    bad("simulate/negative-variance", SIMULATE, {"study.toml": STUDY + "[population]\ntau00 = -1\n"},
        ["study.toml", "tau00 = -1"]),
    bad("simulate/bad-shard", [*SIMULATE, "--shard", "3/2"], {"study.toml": STUDY}, ["--shard '3/2'"]),
    bad("simulate/out-is-a-file", SIMULATE, {"study.toml": STUDY, "res": "notes\n"},
        ["--out", "'res' is a file"]),
    bad("simulate/out-of-another-study", SIMULATE,
        {"study.toml": STUDY, "res/study.json": json.dumps({"fingerprint": "0", "source": "x.toml"})},
        ["res", "different study"]),
    bad("simulate/out-with-a-broken-study-json", SIMULATE, {"study.toml": STUDY, "res/study.json": "{"},
        ["res/study.json", "not a study record"]),
    bad("simulate/unknown-option", [*SIMULATE, "--bogus"], {"study.toml": STUDY},
        ["unrecognized arguments: --bogus"]),
    # merge
    bad("merge/config-missing", MERGE, {"shard": DIR}, ["study.toml", "cannot read the config"]),
    bad("merge/no-out", MERGE[:3], {"study.toml": STUDY}, ["--out", "required"]),
    bad("merge/folder-missing", MERGE, {"study.toml": STUDY}, ["shard", "does not exist"]),
    bad("merge/folder-is-a-file", MERGE, {"study.toml": STUDY, "shard": "notes\n"},
        ["shard", "is a file, not a folder"]),
    bad("merge/folder-without-study-json", MERGE, {"study.toml": STUDY, "shard": DIR},
        ["shard", "no study.json"]),
    bad("merge/folder-of-another-study", MERGE,
        {"study.toml": STUDY, "shard/study.json": json.dumps({"fingerprint": "0"})}, ["shard", "different study"]),
    bad("merge/broken-study-json", MERGE, {"study.toml": STUDY, "shard/study.json": BINARY},
        ["shard/study.json", "not a study record"]),
    bad("merge/no-finished-batches", MERGE, {"study.toml": STUDY, "shard": CLAIMED},
        ["no finished batches in shard"]),
    bad("merge/broken-batch-file", MERGE,
        {"study.toml": STUDY, "shard": CLAIMED, "shard/reps/c000-b00000.csv": BINARY},
        ["shard/reps/c000-b00000.csv", "cannot read"]),
    bad("merge/empty-batch-file", MERGE,
        {"study.toml": STUDY, "shard": CLAIMED, "shard/reps/c000-b00000.csv": ""},
        ["shard/reps/c000-b00000.csv", "cannot read"]),
    bad("merge/out-is-a-file", MERGE, {"study.toml": STUDY, "shard": CLAIMED, "merged": "notes\n"},
        ["--out", "'merged' is a file"]),
    # the command line itself
    bad("unknown-subcommand-option", ["--bogus"], {}, ["unrecognized arguments: --bogus"]),
]


def make_files(folder, files) -> None:
    from jaximpute.studies.config import load_study
    from jaximpute.studies.runner import _claim_folder
    for rel, content in files.items():
        path = folder / rel
        if content is DIR:
            path.mkdir(parents=True, exist_ok=True)
        elif content is CLAIMED:
            _claim_folder(load_study(folder / "study.toml"), path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)


@pytest.mark.parametrize("argv,files,fragments", BAD_INPUT)
def test_every_subcommand_refuses_bad_input(tmp_path, capsys, monkeypatch, argv, files, fragments):
    """Exit status 2, exactly one line on stderr naming the problem, no traceback, no file
    written and none changed."""
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")        # --platform would set it for the process
    make_files(tmp_path, files)
    has(refused(argv, tmp_path, capsys, monkeypatch), *fragments)


def test_simulate_distributed_without_a_scheduler(tmp_path, capsys, monkeypatch):
    """jax.distributed.initialize's ValueError outside a SLURM or MPI job was a traceback."""
    import jax

    def no_scheduler(*args, **kwargs):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", no_scheduler)
    (tmp_path / "study.toml").write_text(STUDY)
    msg = refused([*SIMULATE, "--distributed"], tmp_path, capsys, monkeypatch)
    has(msg, "--distributed", "coordinator_address should be defined", "scheduler")
