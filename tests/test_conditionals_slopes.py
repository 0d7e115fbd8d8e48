"""Missing-value conditionals with random slopes and interactions, against brute force (issue 4).

docs/design/model.md, step 7: a child's linear predictor is affine in the missing value v, with
a row-specific slope when v has a random slope or sits in a product, and a level-2 v sums its
child terms over the cluster's rows. The kernels compute that conditional from `affine_in`;
these tests compute it without any kernel code: the log joint density of the whole model is
written out in numpy as a function of the one missing value, evaluated at v = -1, 0, 1, and the
Gaussian read off the quadratic (exact, since the log density is quadratic in v). The sampler's
draws are then checked against it (z-tolerances as in test_conditionals.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaximpute.kernels.clusters import ClusterArrays
from jaximpute.kernels.impute import conditional, impute_variable
from jaximpute.kernels.state import BlockState
from jaximpute.kernels.structure import VAR, Block, Factor, Prior, Structure, Term

from test_conditionals import check_mean, check_var, keys, rs

J, N_PER = 5, 4
ONE = Term(())
X, W = Term((Factor(VAR, 1),)), Term((Factor(VAR, 2),))
XW = Term((Factor(VAR, 1), Factor(VAR, 2)))


def model(slope: bool, product: bool):
    """y ~ 1 + x + w (+ x*w) + random 1 (+ x); x ~ 1 + w + random 1; w ~ 1 (level 2)."""
    y_terms = (ONE, X, W) + ((XW,) if product else ())
    y_rand = (ONE, X) if slope else (ONE,)
    blocks = (Block(0, 1, y_terms, y_rand, "y"), Block(1, 1, (ONE, W), (ONE,), "x"),
              Block(2, 2, (ONE,), (), "w"))
    n = J * N_PER
    st = Structure(3, (1, 1, 2), (), blocks, Prior("prior2"), n, J, N_PER, ())
    ca = ClusterArrays(jnp.repeat(jnp.arange(J), N_PER), jnp.arange(J) * N_PER, jnp.ones(n), jnp.ones(J))
    return st, ca


def random_state(st, rng):
    out = []
    for blk in st.blocks:
        q = blk.num_random
        out.append(BlockState(jnp.asarray(rng.normal(size=blk.num_fixed), jnp.float32),
                              jnp.asarray(rng.normal(size=(J, q)), jnp.float32),
                              jnp.eye(q, dtype=jnp.float32),
                              jnp.float32(rng.uniform(0.5, 1.5))))
    return tuple(out)


def data(rng):
    v = rng.normal(size=(J * N_PER, 3))
    v[:, 2] = np.repeat(rng.normal(size=J), N_PER)
    return v


def log_joint(v, st, bs):
    """log p(y, x, w | parameters, random effects), written out for `model` (float64)."""
    v = np.asarray(v, np.float64)
    y, x, w = v[:, 0], v[:, 1], v[:, 2]
    cl = np.repeat(np.arange(J), N_PER)
    yb, xb, wb = (np.asarray(b.beta, np.float64) for b in bs)
    uy, ux = np.asarray(bs[0].u, np.float64), np.asarray(bs[1].u, np.float64)
    yblk = st.blocks[0]
    mu_y = yb[0] + yb[1] * x + yb[2] * w + uy[cl, 0]
    if len(yblk.terms) == 4:
        mu_y = mu_y + yb[3] * x * w
    if yblk.num_random == 2:
        mu_y = mu_y + uy[cl, 1] * x
    mu_x = xb[0] + xb[1] * w + ux[cl, 0]
    w_j = w[::N_PER]
    norm = lambda r, s2: -0.5 * np.sum(r * r) / s2
    return (norm(y - mu_y, float(bs[0].s2)) + norm(x - mu_x, float(bs[1].s2))
            + norm(w_j - wb[0], float(bs[2].s2)))


def gaussian_from_quadratic(f):
    """Mean and precision of exp(f(t)) for a quadratic f, from f(-1), f(0), f(1)."""
    fm, f0, fp = f(-1.0), f(0.0), f(1.0)
    prec = -(fp - 2 * f0 + fm)
    slope = (fp - fm) / 2
    return slope / prec, prec


def _brute_force(v, st, bs, col, cells):
    """Mean and precision of the missing value at each cell (a list of row index sets that
    share one value), read off the log joint density as a function of that value."""
    means, precs = [], []
    for rows in cells:
        def f(t, rows=rows):
            vv = v.copy()
            vv[rows, col] = t
            return log_joint(vv, st, bs)
        m, p = gaussian_from_quadratic(f)
        means.append(m)
        precs.append(p)
    return np.array(means), np.array(precs)


def brute_force_level1(v, st, bs, col):
    return _brute_force(v, st, bs, col, [[i] for i in range(v.shape[0])])


def brute_force_level2(v, st, bs, col):
    return _brute_force(v, st, bs, col, [list(range(j * N_PER, (j + 1) * N_PER)) for j in range(J)])


def _check(st, ca, bs, v, col, level):
    x = jnp.asarray(v, jnp.float32)
    st = st._replace(incomplete=(col,))
    mean, prec = conditional(st, col, bs, x, ca)
    exp_mean, exp_prec = (brute_force_level1 if level == 1 else brute_force_level2)(v, st, bs, col)
    np.testing.assert_allclose(np.asarray(mean), exp_mean, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(prec), exp_prec, rtol=2e-4)
    idx = jnp.arange(J * N_PER if level == 1 else J)
    rows = slice(None) if level == 1 else slice(None, None, N_PER)
    s = np.asarray(jax.vmap(lambda k: impute_variable(rs(k), st, 0, bs, x, ca, idx)[0][rows, col])(keys()))
    check_mean(s, exp_mean, 1 / np.sqrt(exp_prec))
    check_var(s, 1 / exp_prec)
    return exp_prec


@pytest.mark.slow
def test_predictor_with_a_random_slope():
    """x has a random slope in y's block: its slope in y is b1 + u1_j, different per cluster."""
    rng = np.random.default_rng(11)
    st, ca = model(slope=True, product=False)
    bs = random_state(st, rng)
    v = data(rng)
    prec = _check(st, ca, bs, v, 1, level=1)
    # the slope really is cluster-specific: precisions differ between clusters
    assert np.ptp(prec.reshape(J, N_PER).mean(axis=1)) > 0.1


def test_predictor_in_an_interaction():
    """x sits in x*w: its slope in y is b1 + b3 w_j."""
    rng = np.random.default_rng(12)
    st, ca = model(slope=False, product=True)
    bs = random_state(st, rng)
    _check(st, ca, bs, data(rng), 1, level=1)


@pytest.mark.slow
def test_level2_predictor_in_a_cross_level_interaction_with_a_random_slope():
    """w (level 2) is a predictor of y (main effect and x*w, beside x's random slope) and of x:
    its conditional sums both children's terms over the cluster's rows."""
    rng = np.random.default_rng(13)
    st, ca = model(slope=True, product=True)
    bs = random_state(st, rng)
    _check(st, ca, bs, data(rng), 2, level=2)


def test_random_slope_predictor_in_an_interaction():
    rng = np.random.default_rng(14)
    st, ca = model(slope=True, product=True)
    bs = random_state(st, rng)
    _check(st, ca, bs, data(rng), 1, level=1)


@pytest.mark.slow
def test_fixed_effects_and_random_slopes_joint_draw():
    """y's block with a random intercept and slope (q = 2, correlated): (beta, u) drawn together
    equals the dense Gaussian posterior built in numpy (flat beta, u_j ~ N(0, Sigma))."""
    from jaximpute.kernels import blocks as kb

    rng = np.random.default_rng(15)
    st, ca = model(slope=True, product=True)
    bs = list(random_state(st, rng))
    sigma = np.array([[0.8, 0.3], [0.3, 0.5]])
    bs[0] = bs[0]._replace(sigma=jnp.asarray(sigma, jnp.float32))
    bs = tuple(bs)
    v = data(rng)
    x = jnp.asarray(v, jnp.float32)
    blk, b0 = st.blocks[0], bs[0]
    rows, w = kb.rows_of(st, blk, x, ca)
    lat = kb.latents_at(st, blk, bs, ca)
    t = kb.design(blk.terms, rows, lat)
    z = kb.design(blk.random, rows, lat)
    cz = jnp.zeros(J)
    y = rows[:, 0]

    def draw(k):
        beta, u = kb.draw_beta_u(rs(k), st, blk, b0, y, t, z, w, ca, cz, cz)
        return jnp.concatenate([beta, u.reshape(-1)])
    s = np.asarray(jax.vmap(draw)(keys()))
    # dense posterior: columns beta (p), then u_j0, u_j1 for each cluster j
    tn, zn = np.asarray(t, np.float64), np.asarray(z, np.float64)
    p = tn.shape[1]
    cl = np.repeat(np.arange(J), N_PER)
    d = np.zeros((J * N_PER, p + 2 * J))
    d[:, :p] = tn
    for r in range(J * N_PER):
        d[r, p + 2 * cl[r]:p + 2 * cl[r] + 2] = zn[r]
    s2 = float(b0.s2)
    h = d.T @ d / s2
    h[p:, p:] += np.kron(np.eye(J), np.linalg.inv(sigma))
    cov = np.linalg.inv(h)
    mean = cov @ (d.T @ np.asarray(y, np.float64) / s2)
    check_mean(s, mean, np.sqrt(np.diag(cov)))
    check_var(s, np.diag(cov))
    # the within-cluster correlation of intercept and slope effects, through their sum
    check_var(s[:, p] + s[:, p + 1], cov[p, p] + cov[p + 1, p + 1] + 2 * cov[p, p + 1])
