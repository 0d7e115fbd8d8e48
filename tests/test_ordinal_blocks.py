"""Ordinal outcomes in the sampler: probit blocks with thresholds (issue 5, first part)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaximpute.api import impute
from jaximpute.run import to_original_units


def probit_data(seed, j=300, n=8, codes=(1, 2, 3, 4), taus=(0.0, 0.7, 1.5)):
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(j), n)
    x = rng.normal(1.0, 2.0, j * n)
    z = 0.3 + 0.7 * x + rng.normal(0, np.sqrt(0.5), j)[cl] + rng.normal(size=j * n)
    cat = np.searchsorted(np.asarray(taus), z)            # 0..K-1
    return pd.DataFrame({"cluster": cl, "v": np.asarray(codes, float)[cat], "x": x})


def test_probit_random_intercept_model_recovers_known_parameters():
    """Complete data from a random-intercept probit model with 4 categories (thresholds 0, 0.7,
    1.5): posterior means of the intercept, slope, random-intercept variance and the two free
    thresholds lie within 3.5 posterior SDs of the generating values (the posterior SD is about
    the sampling SE here, so this is a check of the estimator, with chance of a false failure
    about 0.2% for 5 parameters)."""
    df = probit_data(1)
    res = impute(df, "cluster ~ v", fixed=["x"], ordinal=["v"], nimps=0, burn=1000, thin=1,
                 chains=4, seed=2, iterations=1500, options=["estimates", "psr"])
    draws = to_original_units(res.spec, res.raw.structure, res.raw.post_trace[:, 0])
    draws = draws.reshape(-1, draws.shape[-1])
    names = list(res.estimates["parameter"])
    truth = {"fix eff: Intercept": 0.3, "fix eff: x": 0.7, "ran eff var: Intercept": 0.5,
             "threshold: tau2": 0.7, "threshold: tau3": 1.5}
    for name, value in truth.items():
        i = names.index(name)
        m, sd = draws[:, i].mean(), draws[:, i].std()
        assert abs(m - value) < 3.5 * sd, (name, m, value, sd)
    assert res.estimates["psr"].max() < 1.1
    from jaximpute.report import render
    assert "Threshold" in render(res.report)         # the PSR table's Threshold column


def test_incomplete_ordinal_outcome_keeps_its_codes():
    """Codes 1, 2, 4 (not consecutive), 20% missing: every imputed value is one of the codes,
    observed values are untouched, and the imputed categories follow the model (more high codes
    where x is high)."""
    df = probit_data(3, j=100, codes=(1, 2, 4), taus=(0.0, 1.0))
    rng = np.random.default_rng(4)
    miss = rng.random(len(df)) < 0.2
    inc = df.copy()
    inc.loc[miss, "v"] = np.nan
    res = impute(inc, "cluster ~ v x", outcome="v", ordinal=["v"], nimps=5, burn=300, thin=20,
                 chains=2, seed=5)
    for d in res.imputations:
        assert set(np.unique(d.v)) <= {1.0, 2.0, 4.0}
        assert np.array_equal(d.v[~miss], df.v[~miss])
    imputed = np.concatenate([d.v[miss] for d in res.imputations])
    xs = np.concatenate([df.x[miss] for _ in res.imputations])
    assert imputed[xs > np.median(xs)].mean() > imputed[xs <= np.median(xs)].mean() + 0.3


def test_ordinal_predictor_is_refused_until_enumeration_lands():
    from jaximpute.errors import ModelError

    df = probit_data(5, j=30)
    df.loc[::7, "v"] = np.nan
    df["y"] = df.x + np.random.default_rng(0).normal(size=len(df))
    with pytest.raises(ModelError, match="ordinal variable 'v' as a predictor"):
        impute(df, "cluster ~ y v", ordinal=["v"], nimps=2, burn=10, thin=2)
