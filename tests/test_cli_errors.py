"""Bad input through the command line: one clear message, exit status 2, no traceback, no file.

Each case writes a script and a data file into a fresh folder, runs `jaximpute run`, and checks
that stderr holds exactly one line `jaximpute: error: ...` naming the file (and row/column or
line/column where there is one) and the expected fragment, and that the folder holds only the
inputs afterwards, unchanged.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from jaximpute.cli import main

GOOD_DATA = "".join(f"{j},{(i * 7 + j) % 5 + 0.5},{'-99' if (i + j) % 4 == 0 else (i * 3 + j) % 7 + 0.25}\n"
                    for j in range(1, 9) for i in range(6))

BASE = """DATA: data.csv;
VARIABLES: cluster y x;
MISSING: -99;
MODEL: cluster ~ y x;
SEED: 1;
BURN: 20;
THIN: 5;
NIMPS: 2;
OUTFILE: imps.csv;
"""


def case(name, script, fragments, data=GOOD_DATA, extra=None):
    return pytest.param(script, data, fragments, extra, id=name)


CASES = [
    case("unknown-command", BASE + "MODLE: x;\n", ["script.imp:10:1", "unknown command 'MODLE'", "did you mean 'MODEL'"]),
    case("misspelt-option", BASE + "OPTIONS: stacked psrr;\n", ["script.imp:10", "OPTIONS", "psrr", "did you mean 'psr'"]),
    case("burn-not-integer", BASE.replace("BURN: 20;", "BURN: ten;"), ["script.imp:6:7", "BURN", "'ten'"]),
    case("missing-semicolon", BASE.replace("BURN: 20;", "BURN: 20"), ["script.imp:6", "';' is probably missing"]),
    case("unknown-model-variable", BASE.replace("~ y x;", "~ y xx;"), ["script.imp:4", "MODEL", "'xx'", "did you mean 'x'"]),
    case("slope-on-level-2", BASE.replace("~ y x;", "~ y:x;\nOUTCOME: y;"),
         ["script.imp:4", "random slope 'y:x'", "level 2"],
         data="".join(f"{j},{(i * 7 + j) % 5 + 0.5},{j % 3 + 0.25}\n" for j in range(1, 9) for i in range(6))),
    case("collinear-predictors", BASE.replace("VARIABLES: cluster y x;", "VARIABLES: cluster y x w v;").replace(
        "~ y x;", "~ y x w v;\nFIXED: w v;"), ["script.imp:4", "'v' is a linear combination of", "'w'", "collinear"],
         data="".join(f"{j},{(i * 7 + j) % 5 + 0.5},{'-99' if (i + j) % 4 == 0 else (i * 3 + j) % 7 + 0.25},"
                      f"{i + j % 3},{2 * (i + j % 3) + 1}\n" for j in range(1, 9) for i in range(6))),
    case("product-without-outcome", BASE.replace("~ y x;", "~ y x y*x;"), ["script.imp:4", "product term", "OUTCOME"]),
    case("product-holds-outcome", BASE.replace("~ y x;", "~ y x y*x;") + "OUTCOME: y;\n",
         ["script.imp:4", "product", "OUTCOME"]),
    case("power-term", BASE.replace("~ y x;", "~ y x x*x;") + "OUTCOME: y;\n",
         ["script.imp:4", "x*x", "twice"]),
    case("ordinal-too-many-categories", BASE + "ORDINAL: y;\n", ["script.imp:10", "'y' has 48 distinct", "2 to 20 categories"],
         data="".join(f"{j},{i * 8 + j},{'-99' if (i + j) % 4 == 0 else (i * 3 + j) % 7 + 0.25}\n"
                      for j in range(1, 9) for i in range(6))),
    case("nominal-not-yet", BASE + "NOMINAL: x;\n", ["script.imp:10", "NOMINAL", "not supported yet"]),
    case("three-level-id-not-whole", BASE.replace("cluster ~ y x;", "cluster y ~ x;"),
         ["data.csv", "column 2 (y)", "whole-number ids"]),
    case("three-level-ids-one-to-one", BASE.replace("VARIABLES: cluster y x;", "VARIABLES: cluster room y x;")
         .replace("cluster ~ y x;", "cluster room ~ y x;"), ["data.csv", "cluster and room", "same clusters"],
         data="".join(f"{j},{j + 10},{(i * 3 + j) % 7 + 0.25},{i + j}\n" for j in range(1, 9) for i in range(6))),
    case("nimps-without-outfile", BASE.replace("OUTFILE: imps.csv;\n", ""), ["OUTFILE", "required"]),
    case("outfile-folder-missing", BASE.replace("OUTFILE: imps.csv;", "OUTFILE: nowhere/imps.csv;"), ["nowhere", "does not exist"]),
    case("outfile-is-data", BASE.replace("OUTFILE: imps.csv;", "OUTFILE: data.csv;"), ["data.csv", "overwrite"]),
    case("data-file-missing", BASE.replace("DATA: data.csv;", "DATA: dta.csv;"), ["dta.csv"]),
    case("burn-missing", BASE.replace("BURN: 20;\n", ""), ["BURN", "required"]),
    # a script that cannot run says so before its data are read
    case("burn-missing-bad-data", BASE.replace("BURN: 20;\n", ""), ["BURN", "required"],
         data="1,abc,3\n" + GOOD_DATA),
    case("thin-missing", BASE.replace("THIN: 5;\n", ""), ["THIN", "required"]),
    case("column-count", BASE, ["data.csv", "row 3", "columns", "expected 3"],
         data=GOOD_DATA.replace("1,2.5,3.25\n", "1,2.5,3.25,7\n", 1) if "1,2.5,3.25\n" in GOOD_DATA
         else "1,2,3\n1,2,3\n1,2,3,4\n" + GOOD_DATA),
    case("non-numeric", BASE, ["data.csv", "row 2", "column 2", "(y)", "'abc'"],
         data="1,2,3\n1,abc,3\n" + GOOD_DATA),
    case("missing-cluster-id", BASE, ["data.csv", "row 2", "(cluster)", "cluster id is missing"],
         data="1,2,3\n-99,2,3\n" + GOOD_DATA),
    case("variable-all-missing", BASE, ["data.csv", "(x)", "no observed values"],
         data="".join(f"{j},{i + j * 0.5},-99\n" for j in range(1, 5) for i in range(4))),
    case("constant-variable", BASE, ["data.csv", "(x)", "same value"],
         data="".join(f"{j},{i + j * 0.5},4\n" for j in range(1, 5) for i in range(4))),
    case("fixed-incomplete", BASE + "FIXED: x;\n", ["script.imp:10", "FIXED", "'x' has", "missing"]),
    case("empty-data", BASE, ["data.csv", "empty"], data=""),
    case("header-unknown-name", BASE.replace("VARIABLES: cluster y x;\n", ""), ["script.imp:3", "'x'", "did you mean"],
         data="cluster,y,xx\n" + GOOD_DATA),
    case("header-duplicate-names", BASE.replace("VARIABLES: cluster y x;\n", ""), ["data.csv", "row 1", "both named 'y'"],
         data="cluster,y,y\n" + GOOD_DATA),
    case("separate-without-star", BASE + "OPTIONS: separate;\n", ["OUTFILE", "*"]),
    # issue 18: values whose spread underflows are not "the same value on every row"
    case("tiny-values", BASE, ["data.csv", "column 3 (x)", "so small that their spread underflows",
                               "rescale"],
         data="".join(f"{j},{(i * 7 + j) % 5 + 0.5},{((i * 3 + j) % 7 + 0.25) * 1e-300!r}\n"
                      for j in range(1, 9) for i in range(6))),
    case("huge-values", BASE, ["data.csv", "column 2 (y)", "too large for the sampler's floating point",
                               "rescale"],
         data="".join(f"{j},{((i * 7 + j) % 5 + 0.5) * 1e200!r},{(i * 3 + j) % 7 + 0.25}\n"
                      for j in range(1, 9) for i in range(6))),
    # issue 18: a schedule the sampler cannot run is refused before the data are read
    case("burn-zero", BASE.replace("BURN: 20;", "BURN: 0;"), ["script.imp:6", "BURN", "at least 1"]),
    case("nimps-past-the-sweep-counter", BASE.replace("NIMPS: 2;", "NIMPS: 1000000000;"),
         ["script.imp:8", "NIMPS: 1000000000 imputations", "2147483647", "32-bit", "at most 858993450"]),
    case("nimps-past-memory", BASE.replace("NIMPS: 2;", "NIMPS: 10000000000;\nCHAINS: 64;")
         .replace("THIN: 5;", "THIN: 1;"), ["script.imp:8", "NIMPS", "imputed data sets of 48 rows and "
                                            "3 columns", "memory", "expected at most about"]),
]


@pytest.mark.parametrize("script,data,fragments,extra", CASES)
def test_bad_input_gives_one_clear_message(tmp_path, capsys, monkeypatch, script, data, fragments, extra):
    (tmp_path / "script.imp").write_text(script)
    (tmp_path / "data.csv").write_text(data)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.chdir(tmp_path)
    code = main(["run", "script.imp", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    errors = [l for l in err if l.startswith("jaximpute: error:")]
    assert len(errors) == 1, err
    msg = errors[0]
    for frag in fragments:
        assert frag in msg, (frag, msg)
    assert not any("Traceback" in l for l in err)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before        # no output file, inputs unchanged


def test_console_script_prints_no_traceback(tmp_path):
    (tmp_path / "script.imp").write_text(BASE.replace("~ y x;", "~ y zz;"))
    (tmp_path / "data.csv").write_text(GOOD_DATA)
    proc = subprocess.run([sys.executable, "-m", "jaximpute.cli", "run", "script.imp"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("jaximpute: error: script.imp:4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "script.imp"]


def test_missing_script_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "nope.imp"]) == 2
    assert "nope.imp" in capsys.readouterr().err
