"""Tests for jaximpute.script: the seed's scripts parse, and malformed scripts fail clearly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jaximpute.errors import ScriptError
from jaximpute.script import Config, ModelTerm, Name, Pos, parse_script, read_script

# --------------------------------------------------------------------------------------------
# The scripts of the seed document (shared/reference), verbatim
# --------------------------------------------------------------------------------------------

RANDOM_INTERCEPT = """\
DATA: ~/desktop/examples/data.csv;
VARNAMES: cluster y x;
MISSING: -99;
MODEL: cluster ~ y x;
SEED: 90291;
BURN: 1000;
THIN: 1000;
NIMPS: 20;
OUTFILE: ~/desktop/examples/imps.csv;
OPTIONS: stacked;
CHAINS: 2 processors 2;
"""

# The seed shows this one with trailing blanks on every line; keep them.
RANDOM_SLOPE = """\
DATA: ~/desktop/examples/data.csv;  
VARNAMES: cluster y x;  
MISSING: -99;  
MODEL: cluster ~ y:x;  
OUTCOME: y;  
SEED: 90291;  
BURN: 1000;  
THIN: 1000;  
NIMPS: 20;  
OUTFILE: ~/desktop/examples/imps.csv;  
OPTIONS: stacked;  
CHAINS: 2 processors 2;
"""

_PROBSOLVE_HEAD = """\
DATA: ~/desktop/examples/probsolve.csv;
VARIABLES: school condition esolpercent student abilitygrp
           female stanmath frlunch wave months probsolve efficacy;
ORDINAL: condition efficacy frlunch;
OUTCOME: probsolve;
MISSING: -99;
MODEL: student ~ probsolve:months efficacy stanmath
       condition months*condition frlunch;
"""

EX8_1 = _PROBSOLVE_HEAD + """\
NIMPS: 2;
BURN: 10000;
THIN: 1;
SEED: 90291;
OUTFILE: ~/desktop/examples/imp*.csv;
OPTIONS: separate psr;
CHAINS: 2 processors 2;
"""

EX8_2 = _PROBSOLVE_HEAD + """\
NIMPS: 20;
BURN: 5000;
THIN: 2500;
SEED: 90291;
OUTFILE: ~/desktop/examples/imp*.csv;
OPTIONS: separate;
CHAINS: 2 processors 2;
"""

EX8_4 = _PROBSOLVE_HEAD + """\
NIMPS: 20;
BURN: 5000;
THIN: 2500;
SEED: 90291;
OUTFILE: ~/desktop/examples/imps.csv;
OPTIONS: stacked;
CHAINS: 2 processors 2;
"""

PROBSOLVE_VARIABLES = ("school condition esolpercent student abilitygrp female stanmath frlunch "
                       "wave months probsolve efficacy").split()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fake home folder, so '~' expands to a known place on every machine."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    return tmp_path


def texts(names):
    return [n.text for n in names]


def term_summary(terms):
    return [(t.kind, tuple(n.text for n in t.names)) for t in terms]


def test_random_intercept_script(home):
    s = parse_script(RANDOM_INTERCEPT, "ri.imp")
    assert s.path == Path("ri.imp")
    assert s.data == home / "desktop/examples/data.csv"
    assert texts(s.variables) == ["cluster", "y", "x"]
    assert s.missing == -99.0
    assert texts(s.cluster_ids) == ["cluster"]
    assert term_summary(s.model) == [("var", ("y",)), ("var", ("x",))]
    assert s.outcome is None
    assert (s.seed, s.burn, s.thin, s.nimps, s.iterations) == (90291, 1000, 1000, 20, None)
    assert (s.chains, s.processors) == (2, 2)
    assert s.outfile == home / "desktop/examples/imps.csv"
    assert s.output_format == "stacked" and not s.stacked0 and not s.header
    assert not s.psr and not s.estimates and s.prior == "prior2"
    assert s.options == frozenset({"stacked"})
    assert list(s.commands) == ["DATA", "VARIABLES", "MISSING", "MODEL", "SEED", "BURN", "THIN",
                                "NIMPS", "OUTFILE", "OPTIONS", "CHAINS"]
    assert s.commands["MODEL"] == Pos(4, 1)
    assert s.model_pos == Pos(4, 8)
    assert s.cluster_ids[0].pos == Pos(4, 8)
    assert s.model[0].names[0] == Name("y", Pos(4, 18))


def test_random_slope_script(home):
    s = parse_script(RANDOM_SLOPE, "rs.imp")
    assert term_summary(s.model) == [("slope", ("y", "x"))]
    assert s.outcome == Name("y", Pos(5, 10))
    assert s.model[0].pos == Pos(4, 18)
    assert texts(s.cluster_ids) == ["cluster"]
    assert s.output_format == "stacked"


@pytest.mark.parametrize("text, nimps, burn, thin, fmt, outfile, options", [
    (EX8_1, 2, 10000, 1, "separate", "imp*.csv", {"separate", "psr"}),
    (EX8_2, 20, 5000, 2500, "separate", "imp*.csv", {"separate"}),
    (EX8_4, 20, 5000, 2500, "stacked", "imps.csv", {"stacked"}),
])
def test_probsolve_scripts(home, text, nimps, burn, thin, fmt, outfile, options):
    s = parse_script(text, "ex8.imp")
    assert s.data == home / "desktop/examples/probsolve.csv"
    assert texts(s.variables) == PROBSOLVE_VARIABLES
    assert texts(s.ordinal) == ["condition", "efficacy", "frlunch"]
    assert s.outcome.text == "probsolve"
    assert texts(s.cluster_ids) == ["student"]
    assert term_summary(s.model) == [
        ("slope", ("probsolve", "months")), ("var", ("efficacy",)), ("var", ("stanmath",)),
        ("var", ("condition",)), ("product", ("months", "condition")), ("var", ("frlunch",)),
    ]
    # A term continued on the next line keeps its own position.
    assert s.model[3].pos == Pos(8, 8)
    assert s.variables[5] == Name("female", Pos(3, 12))
    assert (s.nimps, s.burn, s.thin, s.seed) == (nimps, burn, thin, 90291)
    assert (s.chains, s.processors) == (2, 2)
    assert s.output_format == fmt
    assert s.outfile == home / "desktop/examples" / outfile
    assert s.options == frozenset(options)
    assert s.psr == ("psr" in options)


# --------------------------------------------------------------------------------------------
# Malformed scripts: one error, at the right place, naming the command and what was expected
# --------------------------------------------------------------------------------------------

V = "VARIABLES: c y x w;\n"  # line 1 of many cases below

BAD = {
    # id: (script, line, col, command (or None for errors outside a command), fragment)
    "unknown command": (V + "MODLE: c ~ y x;\n", 2, 1, None,
                        "unknown command 'MODLE' (did you mean 'MODEL'?); expected one of DATA, "),
    "misspelt option": ("MODEL: c ~ y;\nOPTIONS: stacked sepraate;\n", 2, 18, "OPTIONS",
                        "unknown option 'sepraate' (did you mean 'separate'?)"),
    "BURN not an integer": ("MODEL: c ~ y;\nSEED: 1;\nBURN: ten;\n", 3, 7, "BURN",
                            "'ten' is not a whole number; expected an integer of at least 1 such as 1000"),
    "BURN a float": ("MODEL: c ~ y;\nBURN: 1.5;\n", 2, 7, "BURN", "'1.5' is not a whole number"),
    "BURN two values": ("MODEL: c ~ y;\nBURN: 100 200;\n", 2, 11, "BURN", "more than one value"),
    "BURN empty": ("MODEL: c ~ y;\nBURN: ;\n", 2, 1, "BURN", "no value given"),
    "negative NIMPS": ("MODEL: c ~ y;\nNIMPS: -5;\n", 2, 8, "NIMPS",
                       "-5 is negative; expected a non-negative integer"),
    "THIN zero": ("MODEL: c ~ y;\nTHIN: 0;\n", 2, 7, "THIN", "0 is too small; expected an integer of at least 1"),
    "CHAINS zero": ("MODEL: c ~ y;\nCHAINS: 0;\n", 2, 9, "CHAINS", "at least 1"),
    "SEED too large": ("MODEL: c ~ y;\nSEED: 9223372036854775808;\n", 2, 7, "SEED", "too large"),
    "missing ';' between statements": ("MODEL: c ~ y;\nBURN: 100\nTHIN: 10;\n", 2, 10, "BURN",
                                       "runs into 'THIN:' on line 3, so a ';' is probably missing"),
    "missing ';' after MODEL": ("MODEL: c ~ y x\nOUTCOME: y;\n", 1, 15, "MODEL",
                                "a ';' is probably missing"),
    "missing ';' before a misspelt command": ("MODEL: c ~ y;\nSEED: 5\nBRUN: 10;\n", 2, 8, "SEED",
                                              "runs into 'BRUN:'"),
    "missing ':'": ("MODEL: c ~ y;\nBURN 100;\n", 2, 6, "BURN", "no ':' after the command name"),
    "unknown MODEL variable": (V + "MODEL: c ~ y xx w;\n", 2, 14, "MODEL",
                               "unknown variable 'xx' (did you mean 'x'?); expected a name from VARIABLES"),
    "dangling ':'": (V + "MODEL: c ~ y: x w:;\n", 2, 18, "MODEL", "dangling ':' after 'w'"),
    "leading ':'": (V + "MODEL: c ~ :y;\n", 2, 12, "MODEL", "dangling ':' with no name before it"),
    "slope with two ':'": (V + "MODEL: c ~ y:x:w;\nOUTCOME: y;\n", 2, 12, "MODEL", "'y:x:w' has more than one ':'"),
    "slope mixed with product": (V + "MODEL: c ~ y:x*w;\n", 2, 15, "MODEL", "mixes ':' and '*'"),
    "bad character in MODEL": (V + "MODEL: c ~ y + x;\n", 2, 14, "MODEL", "unexpected '+'"),
    "two '~'": (V + "MODEL: c ~ y ~ x;\n", 2, 14, "MODEL", "a second '~'"),
    "empty MODEL": (V + "MODEL: # nothing yet\n;\n", 2, 1, "MODEL", "the model is empty"),
    "nothing right of '~'": (V + "MODEL: c ~ ;\n", 2, 10, "MODEL", "nothing right of '~'"),
    "three ids left of '~'": (V + "MODEL: c y x ~ w;\n", 2, 12, "MODEL",
                              "3 ids left of '~' ('c y x'); expected one cluster id, or two"),
    "duplicate term": (V + "MODEL: c ~ y x Y;\n", 2, 16, "MODEL", "the term 'Y' is listed twice"),
    "duplicate VARIABLES name": ("VARIABLES: c y x\n   Y;\nMODEL: c ~ y;\n", 2, 4, "VARIABLES",
                                 "'Y' is listed twice, at line 1 column 14 and here"),
    "duplicate command": (V + "MODEL: c ~ y;\nBURN: 10;\nburn: 20;\n", 4, 1, "BURN",
                          "given twice, on line 3 and line 4"),
    "VARNAMES after VARIABLES": (V + "VARNAMES: c y;\nMODEL: c ~ y;\n", 2, 1, "VARNAMES",
                                 "given twice, on line 1 (as VARIABLES) and line 2"),
    "OUTCOME not in MODEL": (V + "MODEL: c ~ y x;\nOUTCOME: w;\n", 3, 10, "OUTCOME", "'w' is not in MODEL"),
    "OUTCOME unknown": (V + "MODEL: c ~ y x;\nOUTCOME: z;\n", 3, 10, "OUTCOME", "unknown variable 'z'"),
    "random slope without OUTCOME": (V + "MODEL: c ~ y:x;\n", 2, 12, "MODEL",
                                     "the random slope 'y:x' needs an OUTCOME; expected 'OUTCOME: y;'"),
    "random slope of another outcome": (V + "MODEL: c ~ y x:w;\nOUTCOME: y;\n", 2, 14, "MODEL",
                                        "not in the model of OUTCOME 'y'"),
    "stacked with separate": ("MODEL: c ~ y;\nOUTFILE: imp*.csv;\nOPTIONS: stacked separate;\n", 3, 18,
                              "OPTIONS", "'separate' conflicts with 'stacked'; expected one output format"),
    "separate without '*'": ("MODEL: c ~ y;\nOUTFILE: imps.csv;\nOPTIONS: sep;\n", 2, 10, "OUTFILE",
                             "'imps.csv' has no '*' but the output is separate"),
    "stacked with '*'": ("MODEL: c ~ y;\nOUTFILE: imp*.csv;\n", 2, 10, "OUTFILE",
                         "has a '*' but the output is stacked"),
    "bad CHAINS form": ("MODEL: c ~ y;\nCHAINS: 2 procs 2;\n", 2, 11, "CHAINS",
                        "'procs' is not 'processors' (did you mean 'processors'?); expected 'k' or 'k processors p'"),
    "CHAINS without processor count": ("MODEL: c ~ y;\nCHAINS: 2 processors;\n", 2, 1, "CHAINS",
                                       "no number after 'processors'"),
    "MISSING not a number": ("MODEL: c ~ y;\nMISSING: none;\n", 2, 10, "MISSING",
                             "'none' is not a number; expected one number such as -99, or NA"),
    "cluster id used as a term": (V + "MODEL: c ~ y c;\n", 2, 14, "MODEL",
                                  "cluster id 'c' is also used as a model term"),
    "CLUSTERID differs from MODEL": (V + "CLUSTERID: c w;\nMODEL: c ~ y;\n", 2, 12, "CLUSTERID",
                                     "'c w' differs from the ids left of '~' in MODEL on line 3"),
    "missing MODEL": ("DATA: x.csv;\nBURN: 10;\n", 1, 1, "MODEL", "required but not given"),
    "empty script": ("# only a comment\n", 1, 1, "MODEL", "required but not given"),
    "two priors": ("MODEL: c ~ y;\nOPTIONS: prior1 estimates prior3;\n", 2, 27, "OPTIONS",
                   "'prior3' conflicts with 'prior1'; expected one prior"),
    "psr and nopsr": ("MODEL: c ~ y;\nOPTIONS: nopsr psr;\n", 2, 16, "OPTIONS", "'psr' conflicts with 'nopsr'"),
    "unterminated quote in DATA": ('DATA: "my data.csv;\nMODEL: c ~ y;\n', 1, 7, "DATA",
                                   "unterminated quote"),
    "text after a quoted path": ('DATA: "a.csv"  b;\nMODEL: c ~ y;\n', 1, 16, "DATA",
                                 "after the quoted file name"),
    "DATA runs on": ("DATA: a.csv\nVARIABLES c y;\nMODEL: c ~ y;\n", 1, 12, "DATA",
                     "runs on to line 2 ('VARIABLES c y'), so a ';' is probably missing"),
    "ORDINAL unknown variable": (V + "ORDINAL: y xs;\nMODEL: c ~ y x;\n", 2, 12, "ORDINAL",
                                 "unknown variable 'xs' (did you mean 'x'?)"),
    "name starting with a digit": ("VARIABLES: c 2y;\nMODEL: c ~ y;\n", 1, 14, "VARIABLES",
                                   "'2y' is not a valid name"),
    "range counting down": ("VARIABLES: c a4-a1;\nMODEL: c ~ a1;\n", 1, 14, "VARIABLES", "'a4-a1' counts down"),
    "range with two prefixes": ("VARIABLES: c a1-b4;\nMODEL: c ~ a1;\n", 1, 14, "VARIABLES", "is not a range"),
    "range without an end": ("VARIABLES: c a1-;\nMODEL: c ~ a1;\n", 1, 16, "VARIABLES", "has no end"),
    "unknown SAVE item": ("MODEL: c ~ y;\nSAVE: stakced = imps.csv;\n", 2, 7, "SAVE",
                          "unknown SAVE item 'stakced' (did you mean 'stacked'?)"),
    "SAVE and OUTFILE": ("MODEL: c ~ y;\nOUTFILE: a.csv;\nSAVE: stacked = b.csv;\n", 3, 17, "SAVE",
                         "a second output file (OUTFILE on line 2)"),
    "SAVE separate with OPTIONS stacked": ("MODEL: c ~ y;\nOPTIONS: stacked;\nSAVE: separate = i*.csv;\n", 3, 7,
                                           "SAVE", "'separate' conflicts with 'stacked' on line 2"),
    "ORDINAL and NOMINAL": (V + "ORDINAL: y;\nNOMINAL: x Y;\nMODEL: c ~ y x;\n", 3, 12, "NOMINAL",
                            "'Y' is both ORDINAL and NOMINAL"),
    # The earliest problem wins, even when it is found only by checking statements together.
    "earliest error wins": (V + "MODEL: c ~ y q;\nBURN: ten;\n", 2, 14, "MODEL", "unknown variable 'q'"),
    "earliest error wins, local first": (V + "BURN: ten;\nMODEL: c ~ y q;\n", 2, 7, "BURN", "'ten'"),
    "local error before a syntax error": ("BURN: -1;\nMODEL: c ~ y;\nTHIN: 5\nSEED: 1;\n", 1, 7, "BURN",
                                          "-1 is negative"),
}


@pytest.mark.parametrize("text, line, col, command, fragment", list(BAD.values()), ids=list(BAD))
def test_malformed_script(text, line, col, command, fragment):
    with pytest.raises(ScriptError) as info:
        parse_script(text, "ex.imp")
    message = str(info.value)
    prefix = f"ex.imp:{line}:{col}: " + (f"{command}: " if command else "")
    assert message.startswith(prefix), message
    assert fragment in message, message
    assert "; expected " in message, message
    assert "\n" not in message


def test_at_least_twenty_malformed_cases():
    assert len(BAD) >= 20


def test_string_scripts_are_named_script():
    with pytest.raises(ScriptError, match=r"^<script>:1:1: unknown command 'BRUN' \(did you mean 'BURN'\?\)"):
        parse_script("BRUN: 10;")


def test_read_script_rejects_non_utf8(tmp_path):
    path = tmp_path / "latin1.imp"
    path.write_bytes("MODEL: c ~ y;\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ScriptError) as info:
        read_script(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2:6: "), message
    assert "not UTF-8" in message and "expected a script saved as UTF-8" in message


def test_read_script_missing_file(tmp_path):
    path = tmp_path / "nope.imp"
    with pytest.raises(ScriptError) as info:
        read_script(path)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot read the script"), message
    assert "expected a readable script file" in message


def test_read_script_directory(tmp_path):
    with pytest.raises(ScriptError, match="cannot read the script"):
        read_script(tmp_path)


def test_read_script_reads_and_resolves(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "ex.imp"
    path.write_text("\ufeffDATA: data.csv;\nMODEL: c ~ y;\nOUTFILE: ../out/imps.csv;\n", encoding="utf-8")
    s = read_script(path)
    assert s.path == path
    assert s.data == tmp_path / "sub" / "data.csv"
    assert s.outfile == tmp_path / "out" / "imps.csv"  # '..' is normalised away
    assert s.commands["DATA"] == Pos(1, 1)  # the byte-order mark is no column


def test_read_script_error_names_the_file_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ex.imp").write_text("MODEL: c ~ y;\nBURN: -3;\n")
    with pytest.raises(ScriptError, match=r"^ex\.imp:2:7: BURN: -3 is negative"):
        read_script("ex.imp")


# --------------------------------------------------------------------------------------------
# The language's conveniences
# --------------------------------------------------------------------------------------------


def test_ranges_expand():
    s = parse_script("VARIABLES: id a1-a4 b08 - b10, z;\nMODEL: id ~ a1 a4 b09;")
    assert texts(s.variables) == ["id", "a1", "a2", "a3", "a4", "b08", "b09", "b10", "z"]
    assert s.variables[2].pos == Pos(1, 15)  # an expanded name points at its range
    assert s.model[2].names[0].text == "b09"


def test_ranges_in_other_lists():
    s = parse_script("VARIABLES: id y1-y3 x;\nORDINAL: y2-y3;\nFIXED: x;\nMODEL: id ~ y1 y2 y3 x;")
    assert texts(s.ordinal) == ["y2", "y3"]
    assert texts(s.fixed) == ["x"]


def test_comments_whitespace_and_case():
    text = """
    # a comment line; with a semicolon that does not count
    data :   data.csv ;   # trailing comment
    Variables:Cluster  Y   # the outcome
       X;
    model:
        cluster ~       # ids
        y :x ,x ;
    outcome: Y; varnames_are_not_here: 1;
    """
    with pytest.raises(ScriptError, match="unknown command 'varnames_are_not_here'"):
        parse_script(text)
    s = parse_script(text.replace(" varnames_are_not_here: 1;", ""))
    assert texts(s.variables) == ["Cluster", "Y", "X"]
    # Names are matched case-insensitively and stored in their VARIABLES spelling.
    assert texts(s.cluster_ids) == ["Cluster"]
    assert term_summary(s.model) == [("slope", ("Y", "X")), ("var", ("X",))]
    assert s.outcome.text == "Y"
    assert s.model[0].names[1].pos == Pos(8, 12)  # positions are where the name was written
    assert s.commands["MODEL"] == Pos(6, 5)


def test_without_variables_names_are_kept_as_written():
    s = parse_script("MODEL: School Student ~ Y x a*b*c;\nORDINAL: q;")
    assert texts(s.cluster_ids) == ["School", "Student"]
    assert term_summary(s.model) == [("var", ("Y",)), ("var", ("x",)), ("product", ("a", "b", "c"))]
    assert texts(s.ordinal) == ["q"]  # checked later, against the data's header
    assert s.variables is None


def test_single_level_model_and_commas():
    s = parse_script("MODEL: y, x, z;")
    assert s.cluster_ids == ()
    assert term_summary(s.model) == [("var", ("y",)), ("var", ("x",)), ("var", ("z",))]
    assert s.model_pos == Pos(1, 8)


def test_clusterid_command():
    s = parse_script("VARIABLES: school student y x;\nCLUSTERID: school student;\nMODEL: y x;")
    assert texts(s.cluster_ids) == ["school", "student"]
    s = parse_script("CLUSTERID: Student;\nMODEL: student ~ y;")  # same ids, case aside
    assert texts(s.cluster_ids) == ["student"]


def test_missing_final_semicolon_and_defaults():
    s = parse_script("MODEL: c ~ y\n# no ';' at the end of the file\n")
    assert term_summary(s.model) == [("var", ("y",))]
    assert s.nimps == 0 and s.chains == 2 and s.processors is None
    assert s.seed is None and s.burn is None and s.thin is None and s.iterations is None
    assert s.data is None and s.outfile is None and s.missing is None
    assert s.output_format == "stacked" and s.prior == "prior2" and s.options == frozenset()


def test_numbers():
    s = parse_script("MODEL: c ~ y;\nCLUSTERID: c;\nMISSING: -9.5e1;\nSEED: 0;\nBURN: 1;\nCHAINS: 4;\nITERATIONS: 500;")
    assert s.missing == -95.0
    assert (s.seed, s.burn, s.chains, s.processors, s.iterations) == (0, 1, 4, None, 500)
    assert isinstance(s.seed, int)


def test_options():
    s = parse_script("MODEL: c ~ y;\nOUTFILE: imp*.csv;\nOPTIONS: SEP, PSR estimates prior3 header;")
    assert s.output_format == "separate"
    assert s.options == frozenset({"sep", "psr", "estimates", "prior3", "header"})
    assert s.psr and s.estimates and s.header and s.prior == "prior3" and not s.stacked0
    s = parse_script("MODEL: c ~ y;\nOPTIONS: stacked0 nopsr;")
    assert s.stacked0 and s.output_format == "stacked" and not s.psr


def test_save_forms(tmp_path):
    script = tmp_path / "ex.imp"
    s = parse_script("MODEL: c ~ y;\nSAVE: stacked = imps.csv;", script)
    assert s.outfile == tmp_path / "imps.csv" and s.output_format == "stacked"
    assert s.commands["SAVE"] == Pos(2, 1)
    s = parse_script('MODEL: c ~ y;\nSAVE: separate = "my imps/imp*.csv";\nOPTIONS: psr;', script)
    assert s.outfile == tmp_path / "my imps" / "imp*.csv" and s.output_format == "separate"
    with pytest.raises(ScriptError, match=r"ex\.imp:3:17: SAVE: a second output file \(SAVE on line 2\)"):
        parse_script("MODEL: c ~ y;\nSAVE: stacked = a.csv;\nSAVE: stacked = b.csv;", "ex.imp")


def test_paths_resolve_against_the_script_folder(tmp_path, monkeypatch, home):
    s = parse_script("DATA: data/in.csv;\nMODEL: c ~ y;\nOUTFILE: /abs/out.csv;", tmp_path / "a" / "ex.imp")
    assert s.data == tmp_path / "a" / "data" / "in.csv"
    assert s.outfile == Path(os.path.abspath("/abs/out.csv"))
    monkeypatch.chdir(tmp_path)
    s = parse_script("DATA: 'with space; and #.csv';\nMODEL: c ~ y;")  # from a string: the cwd
    assert s.data == tmp_path / "with space; and #.csv"
    s = parse_script("DATA: ~/d.csv;\nMODEL: c ~ y;", "rel/ex.imp")  # a relative script path
    assert s.data == home / "d.csv"
    s = parse_script("DATA: d.csv;\nMODEL: c ~ y;", "rel/ex.imp")
    assert s.data == tmp_path / "rel" / "d.csv"


def test_multiline_values():
    s = parse_script("VARIABLES:\n  c\n  y\n  x;\nMODEL:\n  c\n  ~\n  y\n  x\n;\nBURN:\n 7\n;")
    assert texts(s.variables) == ["c", "y", "x"]
    assert term_summary(s.model) == [("var", ("y",)), ("var", ("x",))]
    assert s.burn == 7
    assert s.variables[2].pos == Pos(4, 3)


def test_slope_continuing_a_model_line_is_no_missing_semicolon():
    # `y:x` may start a MODEL line; only `COMMAND: ` there looks like a missing ';'.
    s = parse_script("MODEL: c ~ x\n  y:x;\nOUTCOME: y;")
    assert term_summary(s.model) == [("var", ("x",)), ("slope", ("y", "x"))]


def test_windows_line_ends():
    s = parse_script("MODEL: c ~ y;\r\nBURN: 5;\r\n")
    assert s.burn == 5 and s.commands["BURN"] == Pos(2, 1)


# --------------------------------------------------------------------------------------------
# Config.error: the lead's later checks use the same message shape
# --------------------------------------------------------------------------------------------


def test_script_error_by_position_and_command():
    s = parse_script("MODEL: c ~ y zz;\nBURN: 10;", "ex.imp")
    err = s.error(s.model[1].names[0].pos, "unknown variable 'zz'; expected a column of data.csv")
    assert isinstance(err, ScriptError)
    assert str(err) == "ex.imp:1:14: MODEL: unknown variable 'zz'; expected a column of data.csv"
    assert str(s.error("burn", "too short; expected more")) == "ex.imp:2:1: BURN: too short; expected more"
    assert str(s.error("DATA", "no data; expected a file")) == "ex.imp:1:1: DATA: no data; expected a file"
    assert str(s.error("VARNAMES", "x; expected y")).startswith("ex.imp:1:1: VARIABLES: ")


def test_script_is_frozen():
    s = parse_script("MODEL: c ~ y;")
    assert isinstance(s, Config)
    with pytest.raises(AttributeError):
        s.burn = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.commands["BURN"] = Pos(1, 1)  # type: ignore[index]
    assert isinstance(s.model[0], ModelTerm)
