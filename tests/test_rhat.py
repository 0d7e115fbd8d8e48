"""Convergence diagnostics (kernels/rhat.py) on draws whose answer is known."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaximpute.kernels import rhat


def test_burnin_windows_follow_blimp():
    # row r compares iterations floor(r*BURN/40)+1 to r*BURN/20
    # (docs/design/model.md, "Convergence (PSR)")
    w = rhat.burnin_windows(1000)
    assert len(w) == 20
    assert w[0] == (25, 50) and w[-1] == (500, 1000)
    assert rhat.burnin_windows(5000)[16] == (2125, 4250)


@pytest.mark.parametrize("burn,chains", [pytest.param(5000, 2, marks=pytest.mark.slow),
                                         pytest.param(1000, 3, marks=pytest.mark.slow), (40, 2), (7, 2)])
def test_burnin_table_equals_split_rhat_window_by_window(burn, chains):
    """The all-windows-at-once table equals split R-hat of each window's slice computed in
    float64, within float32 rounding (1e-5 on values near 1; observed 8e-7), with NaN exactly
    where a window is too short or a parameter does not vary (the last column is constant; a
    large offset makes naive float32 sums lose the spread)."""
    import jax
    rng = np.random.default_rng(burn)
    tr = (np.cumsum(rng.normal(size=(burn, chains, 5)), 0) * 0.05
          + rng.normal(size=(burn, chains, 5)) + 500.0).astype(np.float32)
    tr[:, :, 4] = 3.0
    got = np.asarray(rhat.burnin_table(jnp.asarray(tr)))
    with jax.enable_x64(True):
        ref = np.stack([np.asarray(rhat.split_rhat(jnp.asarray(tr[a:b], jnp.float64)))
                        for a, b in rhat.burnin_windows(burn)])
    short = np.array([(b - a) // 2 < 2 for a, b in rhat.burnin_windows(burn)])
    assert np.isnan(got[short]).all()
    # the constant column: NaN (even float64 sums can leave a few ulps of 'variance' there)
    assert np.isnan(got[:, 4]).all()
    np.testing.assert_allclose(got[~short, :4], ref[~short, :4], atol=1e-5)


def test_split_rhat_near_one_for_iid_and_large_for_shifted_chains():
    rng = np.random.default_rng(0)
    iid = rng.normal(size=(2000, 4, 3))
    r = np.asarray(rhat.split_rhat(jnp.asarray(iid)))
    assert np.all(np.abs(r - 1) < 0.01)
    shifted = iid + np.array([0.0, 0.0, 0.0, 1.0])[None, :, None]
    assert np.all(np.asarray(rhat.split_rhat(jnp.asarray(shifted))) > 1.05)
    # one chain that drifts: split R-hat still sees it
    drift = (np.linspace(0, 3, 2000)[:, None, None] + rng.normal(size=(2000, 1, 1)))
    assert float(rhat.split_rhat(jnp.asarray(drift))[0]) > 1.1


@pytest.mark.slow
def test_rank_normalized_rhat_handles_heavy_tails():
    rng = np.random.default_rng(1)
    cauchy = rng.standard_cauchy(size=(2000, 4, 1))
    r = float(rhat.rank_normalized_split_rhat(jnp.asarray(cauchy))[0])
    assert abs(r - 1) < 0.01


@pytest.mark.slow
def test_ess_of_iid_and_ar1_draws():
    rng = np.random.default_rng(2)
    n, c = 4000, 4
    iid = rng.normal(size=(n, c, 1))
    e = float(rhat.ess(jnp.asarray(iid))[0])
    assert 0.85 * n * c < e < 1.15 * n * c
    # AR(1) with rho = 0.8: ESS = n c (1 - rho) / (1 + rho)
    x = np.zeros((n, c))
    for t in range(1, n):
        x[t] = 0.8 * x[t - 1] + rng.normal(size=c)
    e = float(rhat.ess(jnp.asarray(x[:, :, None]))[0])
    expected = n * c * 0.2 / 1.8
    assert 0.75 * expected < e < 1.25 * expected
