"""The parameter-expansion move for random slopes leaves the posterior unchanged (issue 4).

`kernels.blocks.scale_slopes` rescales each random slope and its row and column of Sigma by a
Metropolis-Hastings step. Its Hastings ratio holds a Jacobian, the inverse-Wishart prior's power
and a proposal ratio; an error in any of them changes the posterior of the slope variance by a
large amount on a small data set (one power of g shifts the posterior of log var(slope) by about
half its posterior variance, some 0.5 here). So the sampler with the move and without it must
give the same posterior mean of log var(slope), within Monte Carlo error (SE from the bulk ESS
of each run), for the intercept variance (also rescaled here: no child block uses it) and the
slope variance; and the move must mix the slope variance better (a higher ESS).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaximpute.api import impute
from jaximpute.kernels import rhat
from jaximpute.kernels.structure import SamplerOptions
from jaximpute.posterior import to_original_units


@pytest.fixture(scope="module")
def small_slope_data():
    rng = np.random.default_rng(5)
    j, n = 15, 6
    cl = np.repeat(np.arange(j), n)
    x = rng.normal(0, 1, j * n)
    u = rng.multivariate_normal([0, 0], [[0.5, 0.1], [0.1, 0.2]], j)[cl]
    y = 1 + 0.5 * x + u[:, 0] + u[:, 1] * x + rng.normal(0, 1.0, j * n)
    return pd.DataFrame({"cluster": cl, "y": y, "x": x})


def _log_variances(df, prior, expansion=True):
    """Posterior mean, its MC SE and the bulk ESS of log var(intercept) and log var(slope)."""
    res = impute(df, "cluster ~ y:x", outcome="y", nimps=0, burn=500, thin=1, chains=8, seed=3,
                 iterations=15000, options=["estimates", prior],
                 sampler=SamplerOptions(expansion=expansion))
    draws = to_original_units(res.spec, res.raw.structure, res.raw.post_trace[:, 0])
    names = list(res.estimates["parameter"])
    idx = [names.index("ran eff var: Intercept"), names.index("ran eff var: x")]
    lv = np.log(draws[:, :, idx])                                 # (T, C, 2)
    ess = np.asarray(rhat.ess(lv.astype(np.float32)), np.float64)
    return lv.mean(axis=(0, 1)), lv.std(axis=(0, 1)) / np.sqrt(ess), ess


@pytest.mark.parametrize("prior", ["prior2", "prior1"])
@pytest.mark.slow
def test_expansion_move_keeps_the_posterior(small_slope_data, prior):
    mean1, se1, ess1 = _log_variances(small_slope_data, prior)
    mean0, se0, ess0 = _log_variances(small_slope_data, prior, expansion=False)
    z = (mean1 - mean0) / np.hypot(se1, se0)
    assert np.all(np.abs(z) < 4.5), (mean1, mean0, z)
    # the slope variance mixes better with the move
    assert ess1[1] > 1.3 * ess0[1], (ess1, ess0)
