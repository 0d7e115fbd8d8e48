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
