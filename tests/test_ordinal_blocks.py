"""Ordinal outcomes in the sampler: probit blocks with thresholds (issue 5, first part)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaximpute.api import impute
from jaximpute.posterior import to_original_units


def probit_data(seed, j=300, n=8, codes=(1, 2, 3, 4), taus=(0.0, 0.7, 1.5)):
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(j), n)
    x = rng.normal(1.0, 2.0, j * n)
    z = 0.3 + 0.7 * x + rng.normal(0, np.sqrt(0.5), j)[cl] + rng.normal(size=j * n)
    cat = np.searchsorted(np.asarray(taus), z)            # 0..K-1
    return pd.DataFrame({"cluster": cl, "v": np.asarray(codes, float)[cat], "x": x})


@pytest.mark.slow
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
    # acceptance rates of the threshold step: tuned toward 0.35 in burn-in, then reported
    acc = res.report.acceptance
    assert acc["variable"].tolist() == ["v"] and acc["thresholds"].tolist() == [2]
    assert 0.2 < float(acc["after burn-in"].iloc[0]) < 0.5
    assert 0.3 < float(acc["ridge move (after)"].iloc[0]) < 0.6
    assert "THRESHOLD UPDATES" in render(res.report)


@pytest.mark.slow
def test_binary_probit_random_intercept_model_recovers_known_parameters():
    """Binary is the two-category case: threshold fixed at 0, no threshold step (nothing in the
    acceptance table), codes 0/1. Complete data from a random-intercept probit model; the
    posterior means of the intercept, slope and random-intercept variance lie within 3.5
    posterior SDs of the generating values (false-failure chance about 0.1%)."""
    df = probit_data(11, j=400, codes=(0, 1), taus=(0.0,))
    res = impute(df, "cluster ~ v", fixed=["x"], ordinal=["v"], nimps=0, burn=1000, thin=1,
                 chains=4, seed=12, iterations=1500, options=["estimates"])
    draws = to_original_units(res.spec, res.raw.structure, res.raw.post_trace[:, 0])
    draws = draws.reshape(-1, draws.shape[-1])
    names = list(res.estimates["parameter"])
    assert not any(n.startswith("threshold") for n in names)
    for name, value in {"fix eff: Intercept": 0.3, "fix eff: x": 0.7, "ran eff var: Intercept": 0.5}.items():
        i = names.index(name)
        m, sd = draws[:, i].mean(), draws[:, i].std()
        assert abs(m - value) < 3.5 * sd, (name, m, value, sd)
    assert len(res.report.acceptance) == 0


@pytest.mark.slow
def test_incomplete_binary_outcome_and_predictor_keep_their_codes():
    """A binary outcome (codes 0/1) and a binary level-1 predictor (codes 1/2), both 20%
    missing: imputed values are codes, observed ones untouched, and the imputed outcome follows
    the predictor as the data do."""
    rng = np.random.default_rng(13)
    j, n = 150, 8
    cl = np.repeat(np.arange(j), n)
    b = (rng.normal(size=j)[cl] * 0.5 + rng.normal(size=j * n) > 0).astype(float)        # 0/1
    y = (0.2 + 1.2 * b + rng.normal(0, 0.6, j)[cl] + rng.normal(size=j * n) > 0.8).astype(float)
    df = pd.DataFrame({"cluster": cl, "y": y, "b": b + 1.0})                              # b: 1/2
    inc = df.copy()
    inc.loc[rng.random(j * n) < 0.2, "y"] = np.nan
    inc.loc[rng.random(j * n) < 0.2, "b"] = np.nan
    res = impute(inc, "cluster ~ y b", outcome="y", ordinal=["y", "b"], nimps=4, burn=400,
                 thin=50, chains=2, seed=14)
    for d in res.imputations:
        assert set(np.unique(d.y)) <= {0.0, 1.0} and set(np.unique(d.b)) <= {1.0, 2.0}
        keep = inc.notna()
        assert np.array_equal(d.y[keep.y], df.y[keep.y]) and np.array_equal(d.b[keep.b], df.b[keep.b])
    miss_y = inc.y.isna().to_numpy() & inc.b.notna().to_numpy()
    imputed = np.stack([d.y.to_numpy()[miss_y] for d in res.imputations])
    bb = df.b.to_numpy()[miss_y]
    assert imputed[:, bb == 2].mean() > imputed[:, bb == 1].mean() + 0.2


@pytest.mark.slow
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
    cats = res.report.categories
    assert cats["code"].tolist() == ["1", "2", "4"]
    assert cats["observed"].sum() == (~miss).sum()
    assert abs(cats["imputed"].astype(float).sum() - miss.sum()) < 1e-6
    assert "ORDINAL VARIABLES" in res.report.text
    imputed = np.concatenate([d.v[miss] for d in res.imputations])
    xs = np.concatenate([df.x[miss] for _ in res.imputations])
    assert imputed[xs > np.median(xs)].mean() > imputed[xs <= np.median(xs)].mean() + 0.3


def _enumeration_case(level2: bool, seed: int, codes=(-1.0, 0.2, 1.5)):
    """y ~ 1 + x + w + x*w + random (1, x); x ~ 1 + w + random 1; w ~ 1 (level 2), with x (or,
    for level2, w) ordinal: codes (-1.0, 0.2, 1.5) and thresholds (0, 0.9) by default, or two
    codes (binary) and the one threshold 0."""
    import jax.numpy as jnp

    from jaximpute.kernels.state import BlockState, Probit
    from test_conditionals_slopes import J, N_PER, data, model, random_state

    st, ca = model(slope=True, product=True)
    v = 2 if level2 else 1
    b = st.block_of(v)
    blocks = list(st.blocks)
    blocks[b] = blocks[b]._replace(codes=codes)
    st = st._replace(blocks=tuple(blocks), incomplete=(v,))
    rng = np.random.default_rng(seed)
    bs = list(random_state(st, rng))
    n = J * N_PER if not level2 else J
    tau = jnp.asarray([-np.inf, 0.0, 0.9, np.inf][:len(codes)] + [np.inf], jnp.float32)
    bs[b] = BlockState(bs[b].beta, bs[b].u, bs[b].sigma, jnp.float32(1.0),
                       Probit(jnp.zeros(n), tau, jnp.float32(0.2)))
    vals = data(rng)
    pick = rng.integers(0, len(codes), J if level2 else J * N_PER)
    if level2:
        vals[:, 2] = np.repeat(np.asarray(codes)[pick], N_PER)
    else:
        vals[:, 1] = np.asarray(codes)[pick]
    return st, ca, tuple(bs), vals, codes, v


def _brute_force_probs(st, bs, vals, codes, v, level2):
    """P(v = code_k | rest) for every row (cluster) by writing the log joint density out."""
    from scipy import stats as st_

    from test_conditionals_slopes import J, N_PER

    y, x, w = vals[:, 0], vals[:, 1], vals[:, 2]
    cl = np.repeat(np.arange(J), N_PER)
    yb, xb, wb = (np.asarray(b.beta, np.float64) for b in bs)
    uy, ux = np.asarray(bs[0].u, np.float64), np.asarray(bs[1].u, np.float64)
    tau = np.asarray(bs[st.block_of(v)].probit.tau, np.float64)

    def loglik_rows(x, w):
        mu_y = yb[0] + yb[1] * x + yb[2] * w + yb[3] * x * w + uy[cl, 0] + uy[cl, 1] * x
        mu_x = xb[0] + xb[1] * w + ux[cl, 0]
        ly = -0.5 * (y - mu_y) ** 2 / float(bs[0].s2)
        if level2:       # w ordinal (level 2), x continuous
            return ly + -0.5 * (x - mu_x) ** 2 / float(bs[1].s2)
        cat = np.searchsorted(np.asarray(codes), x) + 1     # x ordinal: its probit probability
        return ly + np.log(st_.norm.cdf(tau[cat] - mu_x) - st_.norm.cdf(tau[cat - 1] - mu_x))

    def own_w(wj):
        if not level2:
            return -0.5 * (wj - wb[0]) ** 2 / float(bs[2].s2)
        cat = np.searchsorted(np.asarray(codes), wj) + 1
        return np.log(st_.norm.cdf(tau[cat] - wb[0]) - st_.norm.cdf(tau[cat - 1] - wb[0]))

    cols = []
    for c in codes:
        if level2:
            ww = np.full(J * N_PER, c)
            lr = loglik_rows(x, ww).reshape(J, N_PER).sum(1) + own_w(c)
        else:
            lr = loglik_rows(np.full(J * N_PER, c), w)
        cols.append(lr)
    lw = np.stack(cols, -1)
    p = np.exp(lw - lw.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


# codes as the kernels see them: standardised values (binary 0/1 with p = 0.4 becomes -0.8, 1.2;
# closer codes keep some level-2 clusters uncertain, so the frequency check has something to see)
@pytest.mark.parametrize("codes", [(-1.0, 0.2, 1.5), (-0.3, 0.4)], ids=["3 categories", "binary"])
@pytest.mark.parametrize("level2", [False, True])
@pytest.mark.slow
def test_ordinal_predictor_categories_match_brute_force(level2, codes):
    """An incomplete ordinal or binary predictor (level 1 with a random slope and in a product,
    or level 2 in a cross-level product): the category probabilities the sampler uses equal
    those of the model's joint density written out in numpy, and the drawn categories follow
    them."""
    import jax
    import jax.numpy as jnp

    from jaximpute.kernels.impute import category_log_weights, impute_variable
    from test_conditionals import check_mean, keys, rs

    st, ca, bs, vals, codes, v = _enumeration_case(level2, seed=21 + level2 + 2 * len(codes), codes=codes)
    x = jnp.asarray(vals, jnp.float32)
    lw = np.stack(category_log_weights(st, v, bs, x, ca)[0], -1).astype(np.float64)
    got = np.exp(lw - lw.max(-1, keepdims=True))
    got /= got.sum(-1, keepdims=True)
    want = _brute_force_probs(st, bs, vals, codes, v, level2)
    np.testing.assert_allclose(got, want, atol=2e-4)
    if not (level2 and len(codes) == 2):
        # some cells are genuinely uncertain (the 5 binary level-2 clusters here are not: each
        # sums 4 rows of child evidence; the probabilities above are still checked)
        assert ((want > 0.05) & (want < 0.95)).any()
    n = want.shape[0]
    idx = jnp.arange(n)
    from test_conditionals_slopes import N_PER
    rows = slice(None) if not level2 else slice(None, None, N_PER)
    s = np.asarray(jax.vmap(lambda k: impute_variable(rs(k), st, 0, bs, x, ca, idx)[0][rows, v])(keys()))
    for k, c in enumerate(codes):          # frequency of each category against its probability
        p = want[:, k]
        check_mean((np.abs(s - c) < 1e-4).astype(float), p, np.sqrt(np.maximum(p * (1 - p), 1e-12)))


@pytest.mark.slow
def test_ridge_move_keeps_the_posterior():
    """The intercept-threshold shift (kernels.ordinal.ridge_step) is a Metropolis move, so with
    and without it the posterior means of the intercept and thresholds agree within Monte Carlo
    error (SE from each run's bulk ESS). (An acceptance test with the wrong sign makes the chain
    diverge, which this test reports; subtler errors may need a longer run to show.)"""
    from jaximpute.kernels import rhat
    from jaximpute.kernels.structure import SamplerOptions

    df = probit_data(8, j=40, n=6)

    def posterior(ridge=True):
        res = impute(df, "cluster ~ v", fixed=["x"], ordinal=["v"], nimps=0, burn=500, thin=1,
                     chains=8, seed=9, iterations=4000, options="estimates",
                     sampler=SamplerOptions(ridge=ridge))
        draws = to_original_units(res.spec, res.raw.structure, res.raw.post_trace[:, 0])
        names = list(res.estimates["parameter"])
        idx = [names.index(p) for p in ("fix eff: Intercept", "threshold: tau2", "threshold: tau3")]
        d = draws[:, :, idx]
        ess = np.asarray(rhat.ess(d.astype(np.float32)), np.float64)
        return d.mean(axis=(0, 1)), d.std(axis=(0, 1)) / np.sqrt(ess)

    with_move = posterior()
    without = posterior(ridge=False)
    z = (with_move[0] - without[0]) / np.hypot(with_move[1], without[1])
    assert np.all(np.abs(z) < 4.5), (with_move, without, z)


def test_a_parent_of_an_ordinal_block_conditions_on_its_latent_responses():
    """x (continuous, missing) predicts an ordinal y: x's conditional uses y's probit block
    through its latent responses z_y ~ N(eta_y(x), 1), not through y's codes
    (docs/design/model.md, ordinal blocks: the augmented model). Checked against the log density
    with y's term written as N(z_y; ., 1)."""
    import jax.numpy as jnp

    from jaximpute.kernels.impute import conditional
    from jaximpute.kernels.state import BlockState, Probit
    from test_conditionals_slopes import J, N_PER, brute_force_level1, data, model, random_state

    st, ca = model(slope=True, product=True)
    codes = (-0.8, 0.4, 1.3)
    blocks = list(st.blocks)
    blocks[0] = blocks[0]._replace(codes=codes)
    st = st._replace(blocks=tuple(blocks), incomplete=(1,))
    rng = np.random.default_rng(31)
    bs = list(random_state(st, rng))
    z = rng.normal(size=J * N_PER)
    tau = jnp.asarray([-np.inf, 0.0, 0.9, np.inf], jnp.float32)
    bs[0] = BlockState(bs[0].beta, bs[0].u, bs[0].sigma, jnp.float32(1.0),
                       Probit(jnp.asarray(z, jnp.float32), tau, jnp.float32(0.2)))
    vals = data(rng)
    vals[:, 0] = np.asarray(codes)[rng.integers(0, 3, J * N_PER)]      # y's codes: unused here
    mean, prec = conditional(st, 1, tuple(bs), jnp.asarray(vals, jnp.float32), ca)
    with_z = vals.copy()
    with_z[:, 0] = z                          # brute force: y's density is that of z, variance 1
    exp_mean, exp_prec = brute_force_level1(with_z, st, tuple(bs), 1)
    np.testing.assert_allclose(np.asarray(mean), exp_mean, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(prec), exp_prec, rtol=2e-4)


@pytest.mark.parametrize("level2", [False, True])
def test_imputed_category_and_latent_response_are_drawn_together(level2):
    """After an incomplete ordinal predictor is imputed, the block's latent z at each imputed cell
    lies inside the threshold interval of the category just drawn, and given the category it is
    N(mu, 1) truncated to that interval (its mean checked against the closed form), so parents
    that condition on z (docs/design/model.md, step 7) see a state the model can produce."""
    import jax
    import jax.numpy as jnp
    from scipy import stats as st_

    from jaximpute.kernels.impute import category_log_weights, impute_variable
    from test_conditionals import keys, rs

    st, ca, bs, vals, codes, v = _enumeration_case(level2, seed=41 + level2)
    x = jnp.asarray(vals, jnp.float32)
    b = st.block_of(v)
    n = bs[b].probit.z.shape[0]
    idx = jnp.arange(n)
    _, mu = category_log_weights(st, v, bs, x, ca, idx)
    from test_conditionals_slopes import N_PER
    rows = slice(None) if not level2 else slice(None, None, N_PER)

    def one(k):
        xs, blocks = impute_variable(rs(k), st, 0, bs, x, ca, idx)
        return xs[rows, v], blocks[b].probit.z
    codes_drawn, z = (np.asarray(a, np.float64) for a in jax.vmap(one)(keys()))
    tau = np.asarray(bs[b].probit.tau, np.float64)
    cat = np.searchsorted(np.asarray(codes), codes_drawn - 1e-4)       # 0-based category
    assert np.all((z > tau[cat] - 1e-5) & (z <= tau[cat + 1] + 1e-5))
    # E[z | category] = mu + (phi(a) - phi(b)) / (Phi(b) - Phi(a)), a, b the interval minus mu
    m = np.broadcast_to(np.asarray(mu, np.float64), z.shape)
    a, bb = tau[cat] - m, tau[cat + 1] - m
    expect = m + (st_.norm.pdf(a) - st_.norm.pdf(bb)) / (st_.norm.cdf(bb) - st_.norm.cdf(a))
    with np.errstate(invalid="ignore"):          # inf * 0 at the open ends: 0
        ta, tb = np.nan_to_num(a * st_.norm.pdf(a)), np.nan_to_num(bb * st_.norm.pdf(bb))
    var = 1 + (ta - tb) / (
        st_.norm.cdf(bb) - st_.norm.cdf(a)) - ((st_.norm.pdf(a) - st_.norm.pdf(bb)) / (
            st_.norm.cdf(bb) - st_.norm.cdf(a))) ** 2
    resid = (z - expect).ravel()
    zscore = resid.sum() / np.sqrt(var.sum())
    assert abs(zscore) < 4.0, zscore


def test_an_imputed_ordinal_outcome_keeps_its_latent_response():
    """A missing ordinal outcome with no child block: the category comes from z ~ N(mu, 1), and
    that z is what the block's state holds afterwards (inside the category's interval)."""
    import jax
    import jax.numpy as jnp

    from jaximpute.kernels.impute import impute_variable
    from jaximpute.kernels.state import BlockState, Probit
    from test_conditionals import keys, rs
    from test_conditionals_slopes import J, N_PER, data, model, random_state

    st, ca = model(slope=True, product=True)
    codes = (0.0, 1.0)                                  # binary outcome y
    blocks = list(st.blocks)
    blocks[0] = blocks[0]._replace(codes=codes)
    st = st._replace(blocks=tuple(blocks), incomplete=(0,))
    rng = np.random.default_rng(51)
    bs = list(random_state(st, rng))
    tau = jnp.asarray([-np.inf, 0.0, np.inf], jnp.float32)
    bs[0] = BlockState(bs[0].beta, bs[0].u, bs[0].sigma, jnp.float32(1.0),
                       Probit(jnp.zeros(J * N_PER, jnp.float32), tau, jnp.float32(0.2)))
    vals = data(rng)
    vals[:, 0] = np.asarray(codes)[rng.integers(0, 2, J * N_PER)]
    x = jnp.asarray(vals, jnp.float32)
    idx = jnp.arange(J * N_PER)

    def one(k):
        xs, b = impute_variable(rs(k), st, 0, tuple(bs), x, ca, idx)
        return xs[:, 0], b[0].probit.z
    y, z = (np.asarray(a) for a in jax.vmap(one)(keys()))
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert np.array_equal(y == 1.0, z > 0.0)
    assert 0.1 < (y == 1.0).mean() < 0.9
