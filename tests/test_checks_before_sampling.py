"""Checks made before sampling (jaximpute.spec): data a model cannot be fitted to are refused with
the variables, rows or clusters named, where they used to end after sampling with a generic
"non-finite draws" message. Each case also runs just inside the limit, so the check is shown to
separate the two (a check that refused everything would fail here)."""

from __future__ import annotations

import numpy as np
import pytest

from jaximpute.api import configure
from jaximpute.data import DataTable
from jaximpute.errors import ModelError
from jaximpute.spec import NEAR_COLLINEAR, build_spec


def _spec(columns: dict, model: str, **kw):
    names = list(columns)
    table = DataTable(tuple(names), np.column_stack([np.asarray(c, float) for c in columns.values()]),
                      "<test>", np.zeros(len(names), bool), None, False)
    return build_spec(configure(names, model, nimps=2, burn=10, thin=5, **kw), table)


def _data(eps: float, seed: int = 1):
    """aux2 = 2 aux + eps noise; aux and y incomplete (so these are modelled, not FIXED)."""
    rng = np.random.default_rng(seed)
    j, n = 40, 10
    cl = np.repeat(np.arange(j), n)
    aux = rng.normal(size=j * n) + rng.normal(size=j)[cl]
    y = 0.5 * aux + rng.normal(size=j)[cl] + rng.normal(size=j * n)
    aux2 = 2 * aux + eps * rng.normal(size=j * n)
    y[rng.random(j * n) < 0.3] = np.nan
    aux[rng.random(j * n) < 0.2] = np.nan
    return {"c": cl, "y": y, "aux": aux, "aux2": aux2}


@pytest.mark.parametrize("eps,how", [(0.0, "exactly"), (1e-4, "nearly")])
def test_collinear_modelled_predictors_are_named(eps, how):
    """Before: 'non-finite draws ... (nearly) collinear' after all the sampling, naming neither."""
    with pytest.raises(ModelError) as e:
        _spec(_data(eps), "c ~ y aux aux2")
    msg = str(e.value)
    assert "'aux2' is a linear combination of" in msg and "'aux'" in msg and how in msg
    assert "rows where all are observed" in msg


def test_predictors_short_of_collinear_pass():
    """eps = 1e-2 (singular value ratio 1.9e-3): the sampler imputes these data with finite
    draws; the check lets them through."""
    spec = _spec(_data(1e-2), "c ~ y aux aux2")
    assert {v.name for v in spec.x_vars} >= {"y", "aux", "aux2"}
    assert NEAR_COLLINEAR < 1.9e-3


def test_outcome_that_is_a_function_of_its_predictors_is_named():
    rng = np.random.default_rng(2)
    cl = np.repeat(np.arange(30), 5)
    x = rng.normal(size=150)
    y = 3.0 + 2.0 * x
    y[::6] = np.nan
    with pytest.raises(ModelError, match="'y' is a linear combination of 'Intercept' and 'x'.*no residual variance"):
        _spec({"c": cl, "y": y, "x": x}, "c ~ y:x", outcome="y")
    y[1::6] += 0.5 * rng.normal(size=y[1::6].size)       # a residual: fine
    _spec({"c": cl, "y": y, "x": x}, "c ~ y:x", outcome="y")


def test_a_single_cluster_is_named():
    rng = np.random.default_rng(3)
    y, x = rng.normal(size=20), rng.normal(size=20)
    y[0] = np.nan
    with pytest.raises(ModelError, match=r"one cluster \(c = 4, all 20 rows\).*at least two clusters"):
        _spec({"c": np.full(20, 4.0), "y": y, "x": x}, "c ~ y x")
    _spec({"c": np.repeat([4.0, 5.0], 10), "y": y, "x": x}, "c ~ y x")


def _clusters_with_one_odd_value(odd: int = 1):
    rng = np.random.default_rng(4)
    cl = np.repeat(np.arange(30), 6)
    w = np.repeat(rng.normal(size=30), 6).round(2)
    w[40:40 + odd] += 1.0                      # cluster 6 (rows 36-41)
    y = w + rng.normal(size=180)
    y[::5] = np.nan
    return {"c": cl, "y": y, "w": w}


def test_a_level2_variable_with_a_stray_value_asks_for_a_choice():
    """Before: w silently became level 1 and was imputed with values varying within clusters."""
    cols = _clusters_with_one_odd_value()
    with pytest.raises(Exception) as e:
        _spec(cols, "c ~ y w")
    msg = str(e.value)
    assert "column 3 (w) has one value per cluster in 29 of the 30 clusters" in msg
    assert "cluster 6, where 5 rows have" in msg and "has " in msg
    assert "level1='w'" in msg
    spec = _spec(cols, "c ~ y w", level1="w")             # the explicit choice: level 1
    assert spec.var("w").level == 1
    cols["w"][40] -= 1.0                                   # corrected: level 2, no question
    assert _spec(cols, "c ~ y w").var("w").level == 2


def test_a_level1_variable_is_not_questioned():
    """A variable that varies within many clusters is level 1 without a word (here 3 of 30
    clusters vary: more than 5%)."""
    cols = _clusters_with_one_odd_value()
    cols["w"][[40, 70, 100]] += 1.0
    assert _spec(cols, "c ~ y w").var("w").level == 1


def test_level1_in_a_script(tmp_path):
    from jaximpute.script import parse_script
    cfg = parse_script("VARIABLES: c y w;\nMODEL: c ~ y w;\nLEVEL1VARIABLES: w;\nBURN: 10;", None)
    assert [n.text for n in cfg.level1] == ["w"]
    with pytest.raises(Exception, match="LEVEL1VARIABLES: unknown variable 'v'"):
        parse_script("VARIABLES: c y w;\nMODEL: c ~ y w;\nLEVEL1VARIABLES: v;\nBURN: 10;", None)


def test_a_level2_model_with_fewer_clusters_than_coefficients_is_named():
    """w (level 2) observed in 3 of 10 clusters, regressed on an intercept and two FIXED level-2
    predictors (and y's cluster mean): no more observed clusters than coefficients cannot be
    estimated. y's own model, where w is imputed in the other clusters, is not judged from the
    3 clusters where all are observed."""
    rng = np.random.default_rng(5)
    cl = np.repeat(np.arange(10), 8)
    w, z, v = (np.repeat(rng.normal(size=10), 8) for _ in range(3))
    w[cl >= 3] = np.nan
    y = rng.normal(size=80) + w * 0
    with pytest.raises(ModelError, match=r"'w' is observed in 3 clusters, but its model has 3 coefficients \(Intercept, z, v\)"):
        _spec({"c": cl, "y": y, "w": w, "z": z, "v": v}, "c ~ y w", fixed="z v")
    w[cl >= 3] = np.repeat(rng.normal(size=7), 8)[: int((cl >= 3).sum())]
    w[cl >= 5] = np.nan                                    # five observed clusters: enough
    _spec({"c": cl, "y": y, "w": w, "z": z, "v": v}, "c ~ y w", fixed="z v")


def test_impute_many_names_the_data_set_that_breaks_the_model():
    """The model is set up from the first data set; a variable complete there but incomplete in
    a later one was a bare ValueError."""
    from jaximpute.api import impute_many
    from jaximpute.errors import DataError
    rng = np.random.default_rng(0)
    d = rng.normal(size=(3, 40, 3))
    d[:, :, 0] = np.repeat(np.arange(8), 5)
    d[:, 5, 1] = np.nan
    d[2, 3, 2] = np.nan
    with pytest.raises(DataError, match=r"column 3 \(x\) is complete in data set 1.*incomplete in data set 3"):
        impute_many(d, ["c", "y", "x"], "c ~ y x", nimps=2, burn=10, thin=5)
