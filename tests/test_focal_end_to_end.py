"""The seed's random-slope script and its analysis example (Ex8.2/8.4 without ORDINAL), end to
end through the command line on the bundled data, then analysed and pooled (issue 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaximpute.analyze import analyze
from jaximpute.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NAMES = ("school condition esolpercent student abilitygrp female stanmath frlunch wave months "
         "probsolve efficacy").split()


def copy_script(tmp_path, name, data, replacements):
    shutil.copy(CONFIGS / data, tmp_path / data)
    text = (CONFIGS / name).read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.slow
def test_seed_random_slope_script(tmp_path, monkeypatch, capsys):
    copy_script(tmp_path, "random_slope.imp", "random_intercept.csv",
                [("BURN: 1000;", "BURN: 300;"), ("THIN: 1000;", "THIN: 20;")])
    monkeypatch.chdir(tmp_path)
    assert main(["run", "random_slope.imp", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "y (focal model, level 1) ~ Intercept + x + random Intercept + x | cluster" in out
    assert "x (supporting, level 1) ~ Intercept + random Intercept | cluster" in out
    imps = pd.read_csv(tmp_path / "imps_random_slope.csv", header=None).to_numpy()
    data = pd.read_csv(tmp_path / "random_intercept.csv", header=None).to_numpy()
    assert imps.shape == (20 * len(data), 4)
    miss = data == -99
    for m in range(20):
        block = imps[m * len(data):(m + 1) * len(data), 1:]
        assert np.allclose(block[~miss], data[~miss]) and np.all(np.isfinite(block))
        assert not np.any(block == -99)


def test_seed_analysis_example_imputes_and_pools(tmp_path, monkeypatch, capsys):
    """Ex8.4's model (random slope of months, months*condition, incomplete probsolve, efficacy
    (level 1), stanmath and frlunch (level 2)); a short run, then the seed's analysis pooled.
    The data were drawn (configs/make_probsolve_data.py) with months slope 0.68, condition x
    months 0.63, efficacy 0.72, stanmath 0.05 and frlunch -1.5; the pooled estimates must find them within
    4 pooled SEs."""
    copy_script(tmp_path, "ex8_4_continuous.imp", "probsolve.csv",
                [("BURN: 5000;", "BURN: 1000;"), ("THIN: 2500;", "THIN: 50;"),
                 ("NIMPS: 20;", "NIMPS: 10;")])
    monkeypatch.chdir(tmp_path)
    assert main(["run", "ex8_4_continuous.imp", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for line in ("probsolve (focal model, level 1) ~ Intercept + months + efficacy + stanmath + "
                 "condition + months*condition + frlunch + random Intercept + months | student",
                 "efficacy (supporting, level 1) ~ Intercept + stanmath + frlunch + months + "
                 "condition + random Intercept | student",
                 "stanmath (supporting, level 2, one row per student) ~ Intercept + frlunch + condition",
                 "frlunch (supporting, level 2, one row per student) ~ Intercept + condition"):
        assert line in out
    imps = pd.read_csv(tmp_path / "imps_ex8_4.csv", header=None, names=["imputation"] + NAMES)
    data = pd.read_csv(tmp_path / "probsolve.csv", header=None, names=NAMES).replace(-99, np.nan)
    n = len(data)
    assert len(imps) == 10 * n and not imps.isna().any().any() and not (imps == -99).any().any()
    for m in range(1, 11):
        d = imps[imps.imputation == m].drop(columns="imputation").reset_index(drop=True)
        obs = data.notna()
        assert np.allclose(d[obs].fillna(0), data[obs].fillna(0))
        # level-2 values imputed once per student
        assert (d.groupby("student")["stanmath"].nunique() == 1).all()
        assert (d.groupby("student")["frlunch"].nunique() == 1).all()
    frames = [g.drop(columns="imputation") for _, g in imps.groupby("imputation")]
    res = analyze(frames, "probsolve ~ months + efficacy + stanmath + condition + months:condition "
                          "+ frlunch + (months|student)")
    tab = res.table().set_index("term")
    for term, true in (("months", 0.68), ("months:condition", 0.63), ("efficacy", 0.72),
                       ("stanmath", 0.05), ("frlunch", -1.5)):
        est, se = tab.loc[term, "estimate"], tab.loc[term, "std_error"]
        assert abs(est - true) < 4 * se, (term, est, se)


def test_non_finite_draws_stop_the_run_with_a_clear_error():
    """A guard behind the collinearity check: NaN draws raise a ModelError naming the first
    parameter, before any file is written."""
    from types import SimpleNamespace

    import pytest

    from jaximpute.api import _check_finite
    from jaximpute.errors import ModelError

    labels = [("y", "fixed", "Intercept"), ("y", "fixed", "x"), ("y", "errvar", "residual")]
    raw = SimpleNamespace(saved_params=np.array([[[[0.1, np.nan, 1.0]]]]),
                          post_trace=np.zeros((0, 1, 1, 3)), imputations=np.zeros((1, 1, 1, 4)))
    spec = SimpleNamespace(prior=SimpleNamespace(name="prior2"))
    with pytest.raises(ModelError, match=r"non-finite draws \(first in the model of 'y': fix eff 'x'\); "
                                         r"likely cause: its predictors are \(nearly\) collinear"):
        _check_finite(spec, raw, labels, "s.imp")
    # the earliest draw decides, not the order of the labels: the residual variance went first
    raw.saved_params = np.array([[[[0.1, 0.2, np.inf]]], [[[0.1, np.nan, np.nan]]]])
    with pytest.raises(ModelError, match=r"err var 'residual'\); likely cause: its outcome is \(nearly\) "
                                         r"a function of its predictors"):
        _check_finite(spec, raw, labels, "s.imp")
    raw.saved_params = np.zeros((1, 1, 1, 3))
    _check_finite(spec, raw, labels, "s.imp")                  # finite: no error
