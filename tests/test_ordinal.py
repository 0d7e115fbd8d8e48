"""Probit pieces for ordinal variables (kernels/ordinal.py) against closed forms (issue 5)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from jaximpute.kernels.ordinal import category_log_prob, threshold_step, truncated_normal

N = 20000


@pytest.mark.parametrize("lo,hi", [(-np.inf, 0.0), (0.0, np.inf), (-0.5, 1.2), (2.0, 2.5),
                                   (-np.inf, -6.0), (8.0, np.inf), (12.0, 12.3), (13.0, 13.2),
                                   (-13.5, -12.9)])
@pytest.mark.slow
def test_truncated_normal_matches_scipy(lo, hi):
    u = jax.random.uniform(jax.random.key(3), (N,))
    z = np.asarray(truncated_normal(u, jnp.float32(0.0), jnp.float32(lo), jnp.float32(hi)), np.float64)
    assert np.all(np.isfinite(z)) and np.all((z >= lo - 1e-4) & (z <= hi + 1e-4))
    assert stats.kstest(z, stats.truncnorm(lo, hi).cdf).pvalue > 1e-4


@pytest.mark.parametrize("a", [20.0, 40.0, -40.0])
def test_truncated_normal_far_in_a_tail_stays_finite_and_inside(a):
    """Intervals 20 and 40 SD from the mean: the draw is finite, inside, and near the bound
    (the conditional mean of N(0,1) above a is about a + 1/a)."""
    u = jax.random.uniform(jax.random.key(4), (1000,))
    lo, hi = (a, np.inf) if a > 0 else (-np.inf, a)
    z = np.asarray(truncated_normal(u, jnp.float32(0.0), jnp.float32(lo), jnp.float32(hi)))
    assert np.all(np.isfinite(z))
    assert np.all(z >= lo) and np.all(z <= hi)
    assert abs(abs(z.mean()) - (abs(a) + 1 / abs(a))) < 0.02


def test_category_log_prob_matches_differences_of_normal_cdfs():
    tau = jnp.array([-jnp.inf, 0.0, 0.8, 1.9, jnp.inf])
    mu = jnp.array([-1.0, 0.3, 2.0, 9.0, -9.0, 0.5])
    cat = jnp.array([1, 2, 3, 4, 1, 4])
    got = np.asarray(category_log_prob(tau, cat, mu), np.float64)
    t = np.asarray(tau, np.float64)
    want = np.log(stats.norm.cdf(t[np.asarray(cat)] - np.asarray(mu))
                  - stats.norm.cdf(t[np.asarray(cat) - 1] - np.asarray(mu)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("scale", [0.25, 1.5])
def test_threshold_step_samples_the_threshold_posterior(scale):
    """K = 3 (one free threshold tau_2 > 0) with fixed linear predictors: the chain of Cowles
    steps must have the posterior mean of tau_2 under a flat prior, computed by quadrature of
    prod_i P(v_i | tau_2, mu_i) over tau_2 > 0. With the wide proposal (SD 1.5) the truncation
    at 0 binds often, so a wrong Hastings ratio shows."""
    rng = np.random.default_rng(7)
    n = 60
    mu = rng.normal(0.5, 1.0, n)
    z = mu + rng.normal(size=n)
    cat = 1 + (z > 0) + (z > 1.0)
    t_mu, t_cat = jnp.asarray(mu, jnp.float32), jnp.asarray(cat)
    w = jnp.ones(n)

    def loglik(t2):
        t = np.array([-np.inf, 0.0, t2, np.inf])
        p = stats.norm.cdf(t[cat] - mu) - stats.norm.cdf(t[cat - 1] - mu)
        return np.sum(np.log(p))
    grid_max = max(loglik(x) for x in np.linspace(0.05, 4, 200))
    f = lambda x: np.exp(loglik(x) - grid_max)
    norm = integrate.quad(f, 0, 8, limit=200)[0]
    mean = integrate.quad(lambda x: x * f(x), 0, 8, limit=200)[0] / norm
    var = integrate.quad(lambda x: x * x * f(x), 0, 8, limit=200)[0] / norm - mean ** 2

    def chain(key):
        def step(tau, k):
            u = jax.random.uniform(k, (2,))
            tau, acc, _ = threshold_step(u[:1], u[1], tau, t_cat, t_mu, w, scale)
            return tau, (tau[2], acc)
        tau0 = jnp.array([-jnp.inf, 0.0, 1.0, jnp.inf])
        _, (draws, acc) = jax.lax.scan(step, tau0, jax.random.split(key, 4000))
        return draws[500:], acc
    draws, acc = jax.vmap(chain)(jax.random.split(jax.random.key(11), 16))
    draws = np.asarray(draws, np.float64)
    assert 0.1 < float(np.mean(acc)) < 0.95
    # MC SE from batch means (16 chains x 35 batches of 100)
    bm = draws.reshape(16, 35, 100).mean(axis=2).ravel()
    se = bm.std(ddof=1) / np.sqrt(bm.size)
    assert abs(draws.mean() - mean) < 4.5 * se, (draws.mean(), mean, se)
    assert abs(draws.var() / var - 1) < 0.15


def test_all_category_log_probs_match_one_at_a_time():
    from jaximpute.kernels.ordinal import all_category_log_probs

    tau = jnp.array([-jnp.inf, 0.0, 0.8, 1.9, jnp.inf])
    mu = jnp.array([-3.0, -0.5, 0.4, 1.2, 2.5, 6.0, -6.0])
    got = np.stack(all_category_log_probs(tau, mu, 4), -1).astype(np.float64)
    for c in range(1, 5):
        want = np.asarray(category_log_prob(tau, jnp.full(mu.shape, c), mu), np.float64)
        # relative precision where the probability is not tiny; tiny ones only need to stay tiny
        big = want > np.log(1e-6)
        np.testing.assert_allclose(got[big, c - 1], want[big], rtol=2e-3, atol=2e-5)
        assert np.all(got[~big, c - 1] < np.log(1e-5))
