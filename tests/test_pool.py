"""Rubin's rules (jaximpute.pool) against hand computations and mitml::testEstimates."""

import math
import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats

from jaximpute.pool import pool, pool_mean, rubin

# ------------------------------------------------------------------------ Rubin's rules


def test_pool_hand_computed_m3():
    # Q = (1, 2, 3), U = 0.5 each: Qbar = 2, W = 0.5, B = 1, T = 0.5 + (4/3) 1 = 11/6,
    # r = (4/3)/0.5 = 8/3, v_m = 2 (1 + 3/8)^2 = 3.78125
    out = pool([1.0, 2.0, 3.0], [0.5, 0.5, 0.5])
    row = out.iloc[0]
    assert row["estimate"] == pytest.approx(2.0)
    assert row["std_error"] == pytest.approx(math.sqrt(11 / 6))
    assert row["t"] == pytest.approx(2.0 / math.sqrt(11 / 6))
    assert row["riv"] == pytest.approx(8 / 3)
    assert row["df"] == pytest.approx(3.78125)
    assert row["fmi"] == pytest.approx((8 / 3 + 2 / (3.78125 + 3)) / (8 / 3 + 1))
    assert row["p"] == pytest.approx(2 * stats.t.sf(2.0 / math.sqrt(11 / 6), 3.78125))
    # Barnard & Rubin with v_com = 10: lambda = 8/11, v_obs = (3/11)(11/13) 10 = 30/13
    adj = pool([1.0, 2.0, 3.0], [0.5, 0.5, 0.5], df_com=10).iloc[0]
    v = 1 / (1 / 3.78125 + 13 / 30)
    assert adj["df"] == pytest.approx(v)
    assert adj["fmi"] == pytest.approx((8 / 3 + 2 / (v + 3)) / (8 / 3 + 1))
    assert adj["std_error"] == pytest.approx(row["std_error"])


def test_pool_m2():
    # Q = (1, 3), U = (1, 1): Qbar = 2, W = 1, B = 2, T = 1 + 1.5 * 2 = 4, r = 3,
    # v_m = (2 - 1)(1 + 1/3)^2 = 16/9
    row = pool(np.array([[1.0], [3.0]]), np.array([[1.0], [1.0]])).iloc[0]
    assert (row["estimate"], row["std_error"], row["riv"]) == pytest.approx((2.0, 2.0, 3.0))
    assert row["df"] == pytest.approx(16 / 9)
    assert row["fmi"] == pytest.approx((3 + 2 / (16 / 9 + 3)) / 4)


def test_pool_between_zero():
    q = np.array([[2.0, 1.0], [2.0, 1.5]])
    u = np.array([[0.1, 0.2], [0.3, 0.2]])
    plain = rubin(q, u)
    adj = rubin(q, u, df_com=30)
    assert plain["riv"][0] == 0.0 and plain["fmi"][0] == 0.0
    assert np.isinf(plain["df"][0])
    assert plain["std_error"][0] == pytest.approx(math.sqrt(0.2))
    assert plain["p"][0] == pytest.approx(2 * stats.norm.sf(2.0 / math.sqrt(0.2)))
    # with v_com the Barnard-Rubin df is its B -> 0 limit v_obs = v_com (v_com+1)/(v_com+3),
    # exactly what mitml::testEstimates reports (28.1818... for v_com = 30), and FMI = 2/(v+3)
    assert adj["riv"][0] == 0.0
    assert adj["df"][0] == pytest.approx(30 * 31 / 33)
    assert adj["fmi"][0] == pytest.approx(2 / (30 * 31 / 33 + 3))
    # B = 0 and W = 0 (a constant): still no 0/0
    c = rubin(np.array([[1.0], [1.0]]), np.zeros((2, 1)))
    assert c["riv"][0] == 0.0 and np.isinf(c["df"][0])


# mitml 0.4.4, recorded with:
#   q <- matrix(c(1.0,1.2,0.9,1.3, 2,2,2,2, -0.3,0.1,0.05,-0.2), nrow=3, byrow=TRUE)
#   u <- matrix(c(0.04,0.05,0.045,0.05, 0.1,0.1,0.12,0.1, 0.02,0.03,0.025,0.02), nrow=3, byrow=TRUE)
#   testEstimates(qhat=q, uhat=u); testEstimates(qhat=q, uhat=u, df.com=30)
MITML_Q = np.array([[1.0, 1.2, 0.9, 1.3], [2, 2, 2, 2], [-0.3, 0.1, 0.05, -0.2]]).T
MITML_U = np.array([[0.04, 0.05, 0.045, 0.05], [0.1, 0.1, 0.12, 0.1], [0.02, 0.03, 0.025, 0.02]]).T
MITML = {
    None: {"estimate": [1.1, 2.0, -0.0875],
           "std_error": [0.296507447910953, 0.324037034920393, 0.265263234039950],
           "t": [3.709856220307662, 6.172133998483676, -0.329861016422736],
           "df": [13.3563, np.inf, 6.83574545114072],
           "p": [2.51019799290209e-03, 6.73743505430480e-10, 7.51382487820001e-01],
           "riv": [0.900900900900901, 0.0, 1.962719298245614],
           "fmi": [0.538259487126618, 0.0, 0.731105120462513]},
    30: {"df": [7.02630297551739, 28.18181818181818, 3.97743088864362],
         "p": [7.50567094066090e-03, 1.12194398660392e-06, 7.58145847741479e-01],
         "fmi": [0.5788709032291549, 0.0641399416909621, 0.7592206771577965]},
}


@pytest.mark.parametrize("df_com", [None, 30])
def test_pool_matches_recorded_mitml(df_com):
    out = pool(MITML_Q, MITML_U, df_com=df_com)
    for col, ref in MITML[df_com].items():
        np.testing.assert_allclose(out[col].to_numpy(), ref, rtol=1e-6, atol=1e-12, err_msg=col)


@pytest.mark.peer
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="R is not installed")
def test_pool_matches_live_mitml():
    code = ("suppressMessages(library(mitml)); "
            "q <- matrix(c(1.0,1.2,0.9,1.3, 2,2,2,2, -0.3,0.1,0.05,-0.2), nrow=3, byrow=TRUE); "
            "u <- matrix(c(0.04,0.05,0.045,0.05, 0.1,0.1,0.12,0.1, 0.02,0.03,0.025,0.02), "
            "nrow=3, byrow=TRUE); "
            "e <- testEstimates(qhat=q, uhat=u, df.com=30)$estimates; "
            "write.table(format(e, digits=17), quote=FALSE, col.names=FALSE, row.names=FALSE)")
    try:
        res = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("Rscript timed out")
    if res.returncode != 0:
        pytest.skip(f"mitml unavailable: {res.stderr.strip()[-200:]}")
    ref = np.array([[float(v) for v in line.split()] for line in res.stdout.strip().splitlines()])
    out = pool(MITML_Q, MITML_U, df_com=30)
    cols = ["estimate", "std_error", "t", "df", "p", "riv", "fmi"]
    np.testing.assert_allclose(out[cols].to_numpy(), ref, rtol=1e-6, atol=1e-12)


def test_rubin_vectorised_matches_pool_and_covariances():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(3, 4, 5, 2))                  # (reps, groups, m, k)
    u = rng.uniform(0.1, 1.0, size=(3, 4, 5, 2))
    res = rubin(q, u, df_com=np.array([40.0, 12.0]))
    for i in range(3):
        for j in range(4):
            ref = pool(q[i, j], u[i, j], df_com=[40.0, 12.0])
            for col in ("estimate", "std_error", "t", "df", "p", "riv", "fmi"):
                np.testing.assert_allclose(res[col][i, j], ref[col].to_numpy(), rtol=1e-12)
    # full covariance matrices: same diagonal results, plus T
    a = rng.normal(size=(5, 2, 2))
    cov = a @ np.swapaxes(a, -1, -2) + np.eye(2)
    qq = rng.normal(size=(5, 2))
    full = rubin(qq, cov)
    diag = rubin(qq, np.diagonal(cov, axis1=-2, axis2=-1))
    for col in ("std_error", "df", "fmi"):
        np.testing.assert_allclose(full[col], diag[col], rtol=1e-12)
    dev = qq - qq.mean(0)
    np.testing.assert_allclose(full["total_cov"], cov.mean(0) + 1.2 * dev.T @ dev / 4, rtol=1e-12)
    assert pool(qq, cov).attrs["T"].shape == (2, 2)
    with pytest.raises(ValueError):
        rubin(np.ones((1, 2)), np.ones((1, 2)))
    assert pool_mean(np.array([[0.2, 0.4], [0.4, 0.6]]), axis=0).tolist() == pytest.approx([0.3, 0.5])




class _FakeResults:
    """The two attributes of a statsmodels results object that pool_results reads."""

    def __init__(self, params, cov, fe=None):
        import pandas as pd
        self.params = pd.Series(params, index=["Intercept", "x", "Group Var"][:len(params)])
        self._cov = pd.DataFrame(cov, index=self.params.index, columns=self.params.index)
        if fe is not None:
            self.fe_params = self.params.iloc[:fe]

    def cov_params(self):
        return self._cov


def test_pool_results_accepts_statsmodels_like_fits_and_pairs():
    rng = np.random.default_rng(1)
    qs = rng.normal(size=(4, 2))
    covs = [np.array([[0.2, 0.01], [0.01, 0.1]]) * (1 + 0.1 * i) for i in range(4)]
    direct = pool(qs, np.stack(covs), names=["Intercept", "x"])
    fits = [_FakeResults(q, c) for q, c in zip(qs, covs)]
    from jaximpute.pool import pool_results
    np.testing.assert_allclose(pool_results(fits).to_numpy(), direct.to_numpy())
    assert list(pool_results(fits).index) == ["Intercept", "x"]
    pairs = list(zip(qs, covs))
    np.testing.assert_allclose(pool_results(pairs).to_numpy(), direct.to_numpy())
    # a mixed model: only the fixed effects (fe_params) are pooled
    mixed = [_FakeResults(np.append(q, 0.5), np.pad(c, ((0, 1), (0, 1))) + np.diag([0, 0, 0.01]), fe=2)
             for q, c in zip(qs, covs)]
    np.testing.assert_allclose(pool_results(mixed).to_numpy(), direct.to_numpy())
    with pytest.raises(TypeError, match="expected a fitted model"):
        pool_results([1.0, 2.0])
