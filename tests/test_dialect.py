"""The two script languages (jaximpute.dialect): which one a script is read in, how Blimp 3/4's
MODEL becomes the configuration, and agreement with Blimp 4.1's printed posteriors on the Blimp
book's examples (tests/fixtures/blimp_book: scripts as rblimp writes them, Blimp's output)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaximpute.errors import ScriptError
from jaximpute.script import parse_script, read_script

BOOK = Path(__file__).resolve().parent / "fixtures" / "blimp_book"
V = "VARIABLES: school y x w score;\n"


def test_blimp2_scripts_stay_blimp2():
    seed = parse_script(V + "MODEL: school ~ y:x w;\nOUTCOME: y;\nBURN: 10;")
    assert seed.dialect == "Blimp 2" and seed.dialect_reason == "the random slope 'y:x' in MODEL on line 2"
    assert [t.text for t in seed.model] == ["y:x", "w"]
    plain = parse_script(V + "MODEL: school ~ y x;\nBURN: 10;\nTHIN: 5;")
    assert plain.dialect == "Blimp 2" and "no mark of Blimp 3/4" in plain.dialect_reason
    assert [n.text for n in plain.cluster_ids] == ["school"]


def test_blimp34_equation_becomes_the_focal_model():
    c = parse_script(V + "CLUSTERID: school;\nMODEL: y ~ intercept x w x*w | x;\nBURN: 10;\n"
                         "ITER: 1000;\nNIMPS: 20;")
    assert c.dialect == "Blimp 3/4"
    assert c.outcome.text == "y" and [n.text for n in c.cluster_ids] == ["school"]
    assert [(t.kind, t.text) for t in c.model] == [("slope", "y:x"), ("var", "w"), ("product", "x*w")]
    # Blimp 4.1: 4 chains by default; ITER counts all chains' iterations; NIMPS spread evenly
    assert (c.chains, c.iterations, c.thin) == (4, 250, 50)
    assert c.estimates
    joint = parse_script(V + "CLUSTERID: school;\nMODEL: intercept -> y x w;\nBURN: 10;\nITER: 100;")
    assert joint.outcome is None and [t.text for t in joint.model] == ["y", "x", "w"]


def test_a_single_level_blimp34_script_is_not_a_two_level_model():
    """Before: 'score ~ y x' ran as a two-level model with 'score' as the cluster id."""
    c = parse_script(V + "MODEL: score ~ y x;\nBURN: 10;\nITER: 100;")
    assert c.dialect == "Blimp 3/4" and c.cluster_ids == () and c.outcome.text == "score"


def test_a_script_that_reads_both_ways_is_refused_with_both_spellings():
    with pytest.raises(ScriptError) as e:
        parse_script(V + "MODEL: score ~ y x;\nBURN: 10;\nITERATIONS: 100;")
    msg = str(e.value)
    assert "reads two ways" in msg and "'CLUSTERID: score;'" in msg and "score ~ intercept y x" in msg


def test_marks_of_both_languages_are_refused():
    with pytest.raises(ScriptError, match=r"<script>:4:1: the script mixes Blimp 2's language \(OUTCOME "
                                          r"on line 4\) with Blimp 3/4's \(CLUSTERID beside an outcome"):
        parse_script(V + "CLUSTERID: school;\nMODEL: y ~ x | x;\nOUTCOME: y;\nBURN: 10;")


@pytest.mark.parametrize("text,what", [
    ("CENTER: groupmean = x;\nMODEL: y ~ x;", "CENTER: not supported yet"),
    ("MODEL: y ~ x.mean x;", "'.mean', '.latent', '.lag' and '.missing' terms are not supported yet"),
    ("MODEL: y ~ x@b1 w;", "labels and fixed values ('@') are not supported yet"),
    ("MODEL: y x ~ w;", "several outcomes on one left side are not supported yet"),
    ("MODEL: y ~ x;\n  x ~ w;", "a second equation or a block label in MODEL"),
    ("MODEL: y ~ x w^2;", "powers ('^') are not supported yet"),
])
def test_what_blimp34_has_and_jaximpute_not_yet_is_named(text, what):
    with pytest.raises(ScriptError, match=None) as e:
        parse_script(V + "CLUSTERID: school;\n" + text + "\nBURN: 10;\nITER: 100;")
    assert what in str(e.value), str(e.value)


# ---------------------------------------------------------------- agreement with Blimp 4.1

def _blimp(name: str) -> pd.DataFrame:
    tab = pd.read_csv(BOOK / f"{name}.expected.csv")
    return tab[tab.table == "outcome_model"].set_index("parameter")


OURS = {"L2 : Var(Intercept)": "ran eff var: Intercept", "L2 : Var(visit)": "ran eff var: visit",
        "L2 : Cov(visit,Intercept)": "ran eff var: visit~Intercept", "Residual Var.": "err var: residual",
        "Intercept": "fix eff: Intercept", "visit": "fix eff: visit"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ex7_3_mod0", "ex7_3_mod1"])
def test_blimp_book_random_effects_models_agree_with_blimp(name):
    """The book's 7.3 (medtriallong.csv: 1,296 rows of 324 persons), run exactly as its script
    says (BURN 10,000/25,000 per chain; ITER 10,000/25,000 over 4 chains): each posterior median
    within 4 Monte Carlo SEs of Blimp's (both runs' SEs, 1.25 sd / sqrt(ESS) each), each
    posterior SD within 20% of Blimp's."""
    from jaximpute.api import run_script
    res = run_script(BOOK / f"{name}.imp", progress=False)
    assert res.config.dialect == "Blimp 3/4"
    ours = res.estimates.set_index("parameter")
    blimp = _blimp(name)
    compared = 0
    for label, row in blimp.iterrows():
        if row.section not in ("Variances", "Coefficients"):
            continue
        mine = ours.loc[OURS[label]]
        mc = 1.25 * row["sd"] * np.sqrt(1 / mine["ess"] + 1 / row["n_eff"])
        assert abs(mine["median"] - row["median"]) <= 4 * mc, (label, mine["median"], row["median"], mc)
        assert abs(mine["sd"] / row["sd"] - 1) <= 0.2, (label, mine["sd"], row["sd"])
        compared += 1
    assert compared == (3 if name == "ex7_3_mod0" else 6)


def test_the_report_names_the_language(tmp_path):
    cfg = read_script(BOOK / "ex7_3_mod0.imp")
    cfg = dataclasses.replace(cfg, burn=20, iterations=10)
    from jaximpute.api import run
    from jaximpute.data import read_table
    table = read_table(cfg.data, None, cfg.missing)
    text = run(cfg, table, progress=False).report.text
    assert "Blimp 3/4 (CLUSTERID beside an outcome left of '~' in MODEL on line 19)" in text
