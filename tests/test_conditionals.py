"""Each Gibbs conditional against its closed form (docs/design/model.md, "What must be shown true").

Draws are taken many times from one fixed state (vmapped over keys). Means are checked with
z-scores against the exact mean using the exact standard deviation / sqrt(n); variances with the
sampling SD of a sample variance of normal draws, sqrt(2/(n-1)) relative. With 6 or fewer checks
per test at |z| < 4.5 the chance of a false failure is below 1e-4 per test.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaximpute.kernels import blocks as kb
from jaximpute.kernels import draws, linalg
from jaximpute.kernels.clusters import ClusterArrays
from jaximpute.kernels.impute import conditional, impute_variable
from jaximpute.kernels.state import BlockState
from jaximpute.kernels.stream import Stream
from jaximpute.kernels.structure import LATENT, VAR, Block, Factor, Prior, Structure, Term

NDRAWS = 20000
Z = 4.5


def keys(n=NDRAWS, seed=0):
    return jax.random.split(jax.random.key(seed), n)


def rs(key, size=512):
    """A random stream (kernels.stream) with room for one draw of any update tested here."""
    return Stream.from_key(key, size, size)


def check_mean(samples, mean, sd):
    z = (np.mean(samples, axis=0) - mean) / (sd / np.sqrt(samples.shape[0]))
    assert np.all(np.abs(z) < Z), z


def check_var(samples, var):
    rel = np.var(samples, axis=0, ddof=1) / var - 1.0
    assert np.all(np.abs(rel) < Z * np.sqrt(2.0 / (samples.shape[0] - 1))), rel


def test_unrolled_linalg_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4, 4))
    a = a @ np.swapaxes(a, 1, 2) + 4 * np.eye(4)
    b = rng.normal(size=(5, 4))
    l = np.asarray(linalg.cholesky(jnp.asarray(a)))
    np.testing.assert_allclose(l, np.linalg.cholesky(a), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(linalg.chol_solve(jnp.asarray(l), jnp.asarray(b)),
                               np.linalg.solve(a, b[..., None])[..., 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(linalg.spd_inverse(jnp.asarray(a)), np.linalg.inv(a),
                               rtol=1e-4, atol=1e-5)


def test_mvn_from_precision():
    prec = np.array([[2.0, 0.6, 0.1], [0.6, 1.5, -0.3], [0.1, -0.3, 1.0]])
    lin = np.array([1.0, -2.0, 0.5])
    cov = np.linalg.inv(prec)
    mean = cov @ lin
    s = np.asarray(jax.vmap(lambda k: draws.mvn_from_precision(rs(k), jnp.asarray(prec, jnp.float32),
                                                                jnp.asarray(lin, jnp.float32)))(keys()))
    check_mean(s, mean, np.sqrt(np.diag(cov)))
    check_var(s, np.diag(cov))
    # the covariance of the first two components, through the variance of their sum
    check_var(s[:, 0] + s[:, 1], cov[0, 0] + cov[1, 1] + 2 * cov[0, 1])


def test_scaled_inv_chi2_moments():
    ss, df = 30.0, 12.0
    s = np.asarray(jax.vmap(lambda k: draws.scaled_inv_chi2(rs(k), jnp.float32(ss), df))(keys()))
    mean = ss / (df - 2)
    var = 2 * ss**2 / ((df - 2) ** 2 * (df - 4))
    check_mean(s, mean, np.sqrt(var))
    # the precision 1/s2 is exactly Gamma(df/2, rate ss/2): check its variance
    check_var(1.0 / s, 2 * df / ss**2)


@pytest.mark.slow
def test_inverse_wishart_moments():
    scale = np.array([[2.0, 0.5], [0.5, 1.0]])
    df = 14.0
    q = 2
    s = np.asarray(jax.vmap(lambda k: draws.inverse_wishart(rs(k), jnp.asarray(scale, jnp.float32), df))(keys()))
    mean = scale / (df - q - 1)
    # Var(Sigma_ii) = 2 S_ii^2 / ((df-q-1)^2 (df-q-3))
    var_diag = 2 * np.diag(scale) ** 2 / ((df - q - 1) ** 2 * (df - q - 3))
    check_mean(s[:, [0, 1], [0, 1]], np.diag(mean), np.sqrt(var_diag))
    var_off = ((df - q + 1) * scale[0, 1] ** 2 + (df - q - 1) * scale[0, 0] * scale[1, 1]) / (
        (df - q) * (df - q - 1) ** 2 * (df - q - 3))
    check_mean(s[:, 0, 1], mean[0, 1], np.sqrt(var_off))
    assert np.allclose(s[:, 0, 1], s[:, 1, 0])


# ------------------------------------------------------------------ a small two-level model

J, N_PER = 6, 5


def small_model(level2_w=False, latent=True):
    """Blocks: y ~ 1 + x (+ latent mean of x) (+ w); x ~ 1; w ~ 1 (level 2)."""
    terms = [Term(()), Term((Factor(VAR, 1),))]
    if latent:
        terms.append(Term((Factor(LATENT, 1),)))
    if level2_w:
        terms.append(Term((Factor(VAR, 2),)))
    blocks = [Block(0, 1, tuple(terms), (Term(()),), "y"), Block(1, 1, (Term(()),), (Term(()),), "x")]
    levels = (1, 1)
    if level2_w:
        blocks.append(Block(2, 2, (Term(()),), (), "w"))
        levels = (1, 1, 2)
    n = J * N_PER
    st = Structure(len(levels), levels, (), tuple(blocks), Prior("prior2"), n, J, N_PER, ())
    ca = ClusterArrays(jnp.repeat(jnp.arange(J), N_PER), jnp.arange(J) * N_PER,
                       jnp.ones(n), jnp.ones(J))
    return st, ca


def state_for(st, rng):
    bs = []
    for blk in st.blocks:
        q = blk.num_random
        bs.append(BlockState(jnp.asarray(rng.normal(size=blk.num_fixed), jnp.float32),
                             jnp.asarray(rng.normal(size=(J, q)), jnp.float32),
                             jnp.eye(q, dtype=jnp.float32) * 0.7,
                             jnp.float32(rng.uniform(0.5, 1.5))))
    return tuple(bs)


def test_beta_conditional():
    rng = np.random.default_rng(1)
    st, ca = small_model()
    bstate = state_for(st, rng)
    x = jnp.asarray(rng.normal(size=(J * N_PER, 2)), jnp.float32)
    blk, bs = st.blocks[0], bstate[0]
    rows, w = kb.rows_of(st, blk, x, ca)
    lat = kb.latents_at(st, blk, bstate, ca)
    t = kb.design(blk.terms, rows, lat)
    zu = kb.random_part(st, blk, bs, rows, lat, ca)
    s = np.asarray(jax.vmap(lambda k: kb.draw_beta(rs(k), bs, rows[:, 0] - zu, t, w))(keys()))
    tt = np.asarray(t, np.float64)
    cov = float(bs.s2) * np.linalg.inv(tt.T @ tt)
    mean = np.linalg.solve(tt.T @ tt, tt.T @ np.asarray(rows[:, 0] - zu, np.float64))
    check_mean(s, mean, np.sqrt(np.diag(cov)))
    check_var(s, np.diag(cov))


def joint_gaussian(rows_design, rows_target, rows_var, clusters, tau):
    """Exact posterior of (beta, u_1..u_J) for Gaussian 'observations' target ~ N(D theta, var)
    with flat beta and u_j ~ N(0, tau): dense numpy precision, no shared code with the kernels."""
    d = np.asarray(rows_design, np.float64)
    h = d.T @ (d / np.asarray(rows_var)[:, None])
    p = d.shape[1] - J
    h[p:, p:] += np.eye(J) / tau
    lin = d.T @ (np.asarray(rows_target, np.float64) / np.asarray(rows_var))
    cov = np.linalg.inv(h)
    return cov @ lin, cov


def _check_joint(st, ca, bstate, x, b, design_fn):
    blk, bs = st.blocks[b], bstate[b]
    rows, w = kb.rows_of(st, blk, x, ca)
    lat = kb.latents_at(st, blk, bstate, ca)
    t = kb.design(blk.terms, rows, lat)
    z = kb.design(blk.random, rows, lat)
    cp, cl = kb.latent_child_terms(st, b, bstate, x, ca)
    y = rows[:, blk.outcome]
    def draw(k):
        beta, u = kb.draw_beta_u(rs(k), st, blk, bs, y, t, z, w, ca, cp, cl)
        return jnp.concatenate([beta, u[:, 0]])
    s = jax.vmap(draw)(keys())
    s = np.asarray(s)
    design, target, var = design_fn(t)
    mean, cov = joint_gaussian(design, target, var, J, float(bs.sigma[0, 0]))
    sd = np.sqrt(np.diag(cov))
    check_mean(s, mean, sd)
    check_var(s, np.diag(cov))
    # one covariance: the intercept with the first cluster effect, through their sum
    p = blk.num_fixed
    check_var(s[:, 0] + s[:, p], cov[0, 0] + cov[p, p] + 2 * cov[0, p])


def test_beta_and_random_intercept_joint_draw():
    """y's block: (beta, u) drawn together equals the exact joint Gaussian posterior."""
    rng = np.random.default_rng(6)
    st, ca = small_model()
    bstate = state_for(st, rng)
    x = jnp.asarray(rng.normal(size=(J * N_PER, 2)), jnp.float32)
    cl = np.repeat(np.arange(J), N_PER)
    onehot = (cl[:, None] == np.arange(J)[None, :]).astype(float)
    s2 = float(bstate[0].s2)

    def design_fn(t):
        return (np.hstack([np.asarray(t, np.float64), onehot]), np.asarray(x[:, 0], np.float64),
                np.full(J * N_PER, s2))
    _check_joint(st, ca, bstate, x, 0, design_fn)


def test_random_intercept_with_latent_child_joint_draw():
    """x's random intercept is also y's latent predictor: the joint (beta_x, u_x) posterior gains
    y's likelihood g u_j; checked against the dense Gaussian posterior built in numpy."""
    rng = np.random.default_rng(2)
    st, ca = small_model()
    bstate = state_for(st, rng)
    x = jnp.asarray(rng.normal(size=(J * N_PER, 2)), jnp.float32)
    cl = np.repeat(np.arange(J), N_PER)
    onehot = (cl[:, None] == np.arange(J)[None, :]).astype(float)
    yb, xb = bstate[0], bstate[1]
    g = float(yb.beta[2])
    xn, yn = np.asarray(x[:, 1], np.float64), np.asarray(x[:, 0], np.float64)
    ry = yn - float(yb.beta[0]) - float(yb.beta[1]) * xn - np.asarray(yb.u[:, 0], np.float64)[cl]

    def design_fn(t):
        own = np.hstack([np.ones((J * N_PER, 1)), onehot])
        child = np.hstack([np.zeros((J * N_PER, 1)), g * onehot])
        return (np.vstack([own, child]), np.concatenate([xn, ry]),
                np.concatenate([np.full(J * N_PER, float(xb.s2)), np.full(J * N_PER, float(yb.s2))]))
    _check_joint(st, ca, bstate, x, 1, design_fn)


@pytest.mark.slow
def test_level1_missing_value_conditional_matches_bivariate_normal():
    """x missing, y observed: x | y from the joint normal of (x, y) given the cluster effects."""
    rng = np.random.default_rng(3)
    st, ca = small_model(latent=False)
    st = st._replace(incomplete=(1,))
    bstate = state_for(st, rng)
    x = jnp.asarray(rng.normal(size=(J * N_PER, 2)), jnp.float32)
    mean, prec = conditional(st, 1, bstate, x, ca)
    yb, xb = bstate[0], bstate[1]
    mu_x = float(xb.beta[0]) + np.repeat(np.asarray(xb.u[:, 0], np.float64), N_PER)
    s2x = float(xb.s2)
    a = float(yb.beta[0]) + np.repeat(np.asarray(yb.u[:, 0], np.float64), N_PER)
    b, s2y = float(yb.beta[1]), float(yb.s2)
    y = np.asarray(x[:, 0], np.float64)
    cov_xy, var_y = b * s2x, b * b * s2x + s2y
    cond_mean = mu_x + cov_xy / var_y * (y - a - b * mu_x)
    cond_var = s2x - cov_xy**2 / var_y
    np.testing.assert_allclose(np.asarray(mean), cond_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(1 / np.asarray(prec), cond_var, rtol=1e-4)
    # and the sampler draws from it (all rows missing)
    idx = jnp.arange(J * N_PER)
    s = np.asarray(jax.vmap(lambda k: impute_variable(rs(k), st, 0, bstate, x, ca, idx)[0][:, 1])(keys()))
    check_mean(s, cond_mean, np.sqrt(cond_var))
    check_var(s, cond_var)


@pytest.mark.slow
def test_level2_missing_value_conditional_sums_cluster_rows():
    """w (level 2) missing: its conditional multiplies its own normal by all child rows."""
    rng = np.random.default_rng(4)
    st, ca = small_model(level2_w=True, latent=False)
    st = st._replace(incomplete=(2,))
    bstate = state_for(st, rng)
    xv = rng.normal(size=(J * N_PER, 3))
    xv[:, 2] = np.repeat(rng.normal(size=J), N_PER)
    x = jnp.asarray(xv, jnp.float32)
    mean, prec = conditional(st, 2, bstate, x, ca)
    yb, wb = bstate[0], bstate[2]
    c, s2y = float(yb.beta[2]), float(yb.s2)
    resid = (xv[:, 0] - float(yb.beta[0]) - float(yb.beta[1]) * xv[:, 1]
             - np.repeat(np.asarray(yb.u[:, 0], np.float64), N_PER))
    # joint of (w_j, y_j1..y_jn): w ~ N(mu_w, s2w); resid_i = c w + e_i
    mu_w, s2w = float(wb.beta[0]), float(wb.s2)
    exp_mean, exp_var = [], []
    for j in range(J):
        r = resid[j * N_PER:(j + 1) * N_PER]
        cov_wr = np.full(N_PER, c * s2w)
        cov_r = c * c * s2w * np.ones((N_PER, N_PER)) + s2y * np.eye(N_PER)
        k = np.linalg.solve(cov_r, cov_wr)
        exp_mean.append(mu_w + k @ (r - c * mu_w))
        exp_var.append(s2w - k @ cov_wr)
    np.testing.assert_allclose(np.asarray(mean), exp_mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(1 / np.asarray(prec), exp_var, rtol=1e-4)
    idx = jnp.arange(J)
    s = np.asarray(jax.vmap(lambda k: impute_variable(rs(k), st, 0, bstate, x, ca, idx)[0][::N_PER, 2])(keys()))
    check_mean(s, np.array(exp_mean), np.sqrt(exp_var))
    check_var(s, np.array(exp_var))
    # every row of a cluster holds the cluster's one value
    one = np.asarray(impute_variable(rs(jax.random.key(9)), st, 0, bstate, x, ca, idx)[0][:, 2])
    assert np.all(one.reshape(J, N_PER) == one.reshape(J, N_PER)[:, :1])


def test_missing_outcome_without_children_draws_from_its_block():
    rng = np.random.default_rng(5)
    st, ca = small_model(latent=True)
    bstate = state_for(st, rng)
    x = jnp.asarray(rng.normal(size=(J * N_PER, 2)), jnp.float32)
    mean, prec = conditional(st, 0, bstate, x, ca)
    blk = st.blocks[0]
    rows, _ = kb.rows_of(st, blk, x, ca)
    mu = kb.linear_predictor(st, blk, bstate[0], rows, kb.latents_at(st, blk, bstate, ca), ca)
    np.testing.assert_allclose(mean, mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prec, 1 / bstate[0].s2, rtol=1e-6)
