"""The simulation studies' analyses (jaximpute.studies.analysis): the random-intercept analysis
against the regressions it stands for, its estimands checked by Monte Carlo, and the same
analysis on device. Rubin's rules: tests/test_pool.py; the random slope's REML fits:
tests/test_lmm.py; both inside the batch program: tests/test_studies_program.py."""

import math

import numpy as np
import pytest
from scipy import stats

from jaximpute.studies.analysis import InterceptAnalysis, analyse
from jaximpute.studies.populations import RandomIntercept, generate_batch


def _lstsq(y, x_design, coef):
    beta, *_ = np.linalg.lstsq(x_design, y, rcond=None)
    resid = y - x_design @ beta
    df = len(y) - x_design.shape[1]
    cov = resid @ resid / df * np.linalg.inv(x_design.T @ x_design)
    return beta[coef], math.sqrt(cov[coef, coef]), df


def _grid(d: RandomIntercept, data):
    """(R, N, 4) data sets as (R, J, n, 4): rows are cluster-major."""
    return data.reshape(len(data), d.clusters, d.cluster_size, -1)


def test_analysis_matches_regressions_with_and_without_deletion():
    d = RandomIntercept(icc=0.3, clusters=8, cluster_size=6)
    full, inc = (_grid(d, a) for a in generate_batch(3, 0, [0], d))
    y_all, x_all = full[..., 1], full[..., 2]
    observed = ~np.isnan(inc[..., 1:3]).any(axis=-1)
    assert 0 < observed.sum() < observed.size              # listwise deletion drops rows
    for keep in (np.ones_like(y_all, bool), observed):
        res = analyse(y_all, x_all, keep)
        k = keep[0].ravel()
        cl = np.repeat(np.arange(8), 6)[k]
        y, x = y_all[0].ravel()[k], x_all[0].ravel()[k]
        ids = np.unique(cl)
        dummies = (cl[:, None] == ids[None, :]).astype(float)
        b, se, df = _lstsq(y, np.column_stack([x, dummies]), 0)     # fixed-effects regression
        assert res["within"][0] == pytest.approx(b)
        assert res["within_se"][0] == pytest.approx(se)
        assert res["within_df"][0] == df
        xb = np.array([x[cl == j].mean() for j in ids])
        yb = np.array([y[cl == j].mean() for j in ids])
        b, se, df = _lstsq(yb, np.column_stack([np.ones_like(xb), xb]), 1)
        assert res["between"][0] == pytest.approx(b)
        assert res["between_se"][0] == pytest.approx(se)
        assert res["between_df"][0] == df
        # ANOVA ICC written out directly
        nj = np.array([(cl == j).sum() for j in ids])
        msb = (nj * (yb - y.mean()) ** 2).sum() / (len(ids) - 1)
        msw = sum(((y[cl == j] - y[cl == j].mean()) ** 2).sum() for j in ids) / (len(y) - len(ids))
        n0 = (len(y) - (nj ** 2).sum() / len(y)) / (len(ids) - 1)
        s2b = (msb - msw) / n0
        assert res["icc"][0] == pytest.approx(s2b / (s2b + msw))


@pytest.mark.slow
def test_analysis_on_device_equals_numpy():
    """The batch program analyses with the same function in jax.numpy (float64): listwise
    deletion on the incomplete data (missing cells zeroed, weight 0) gives the numpy analysis
    of the complete values with the same weights."""
    import jax
    d = RandomIntercept(icc=0.3, clusters=8, cluster_size=6)
    full, inc = generate_batch(3, 0, np.arange(3), d)
    keep = ~np.isnan(inc[..., 1:]).any(axis=-1)
    g = _grid(d, full)
    with jax.enable_x64(True):
        for method, weight in (("complete", None), ("listwise", keep.reshape(3, 8, 6))):
            got = InterceptAnalysis.direct(d, method, jax.numpy.asarray(full), jax.numpy.asarray(inc))
            ref = analyse(g[..., 1], g[..., 2], weight)
            for k, v in ref.items():
                np.testing.assert_allclose(np.asarray(got[k]), v, rtol=1e-12, err_msg=f"{method} {k}")


@pytest.mark.slow
def test_complete_data_analysis_is_unbiased_for_the_stated_estimands():
    """The derivations of the estimands, checked by Monte Carlo over data sets of the
    population's generator (no imputation, fast)."""
    for ci, icc in enumerate((0.2, 0.5)):
        d = RandomIntercept(icc=icc)
        full, _ = generate_batch(11, ci, np.arange(3000), d)
        g = _grid(d, full)
        res = analyse(g[..., 1], g[..., 2])
        r = len(full)
        truth = InterceptAnalysis.truth(d)
        for key, par in (("within", "within slope"), ("between", "between slope")):
            est = res[key]
            assert abs(est.mean() - truth[par]) < 4 * est.std(ddof=1) / math.sqrt(r)
            cover = np.mean(np.abs(est - truth[par]) <= stats.t.ppf(0.975, res[key + "_df"]) *
                            res[key + "_se"])
            assert abs(cover - 0.95) < 4 * math.sqrt(0.95 * 0.05 / r)
        # the ANOVA ICC is a ratio estimator with a small downward bias of its own (about
        # -0.005 at icc = 0.5, J = 50, n = 20: analysis.complete_data_bias); allowance 0.01
        icc_hat = res["icc"]
        assert abs(icc_hat.mean() - icc) < 4 * icc_hat.std(ddof=1) / math.sqrt(r) + 0.01
    assert RandomIntercept(icc=0.5).true_between == pytest.approx((0.5 + 0.5 * 0.5 / 20) / (0.5 + 0.5 / 20))
