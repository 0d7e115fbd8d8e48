"""The simulation populations' generators (jaximpute.studies.populations), drawn on device:
a data set per replication key, the populations' moments, codes, missing rates and the
mechanisms the studies rely on.

Tolerances are Monte Carlo errors: the clusters of a data set are independent draws in both
populations, so a rate's or share's standard error is the SD of its per-cluster values over
sqrt(number of clusters)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from jaximpute.studies.populations import RandomIntercept, RandomSlope, generate_batch, missing_intercept

CUTS = (-1.3, -0.45, 0.45, 1.3)


def _cluster_se(values, clusters: int) -> float:
    """MC SE of the mean of `values` (reps, N) whose clusters of N / clusters rows are
    independent: the SD of the cluster means over sqrt(their number)."""
    per = values.reshape(-1, values.shape[-1] // clusters).mean(axis=-1)
    return float(per.std(ddof=1) / np.sqrt(per.size))


@pytest.mark.parametrize("cuts", [(), CUTS], ids=["continuous x", "ordinal x"])
def test_slope_generator_codes_rates_and_mar(cuts):
    d = RandomSlope(200, 20, cuts=cuts)
    full, inc = generate_batch(1, 0, np.arange(10), d)
    obs = ~np.isnan(inc)
    assert np.array_equal(inc[obs], full[obs])                  # deletion only
    miss = np.isnan(inc)
    # y and x: 25% each in expectation (half the rows are at risk, at logistic(centred value),
    # whose mean is 1/2 since the centred x and y are symmetric about 0); within 4 MC SEs
    for col in (1, 2):
        se = _cluster_se(miss[..., col].astype(float), 200)
        assert abs(miss[..., col].mean() - 0.25) < 4 * se, (col, miss[..., col].mean(), se)
    # w: about 20% of clusters, a little more where y runs high (a sanity range; 2,000
    # clusters give an SE near 0.009)
    assert 0.15 < miss[..., 3].mean() < 0.32
    assert not (miss[..., 1] & miss[..., 2]).any()  # a row never loses both
    x = full[..., 2]
    if cuts:
        assert set(np.unique(x)) == {0.0, 1.0, 2.0, 3.0, 4.0}
        # the latent x is N(0, g^2 + var_a + var_f): the codes' shares are its normal
        # probabilities between the cuts
        sd = np.sqrt(d.g ** 2 + d.var_a + d.var_f)
        expected = np.diff(stats.norm.cdf(np.concatenate([[-np.inf], CUTS, [np.inf]]) / sd))
        for c in range(5):
            hit = (x == c).astype(float)
            assert abs(hit.mean() - expected[c]) < 4 * _cluster_se(hit, 200), (c, hit.mean(), expected[c])
    # MAR: y's missingness rises with the (observed) x of its row (by about 0.19 here; the
    # difference's SE is below 0.01)
    lo, hi = x < np.median(x), x > np.median(x)
    assert miss[..., 1][hi].mean() > miss[..., 1][lo].mean() + 0.1


def test_slope_generator_is_per_replication_and_draws_the_population():
    d = RandomSlope(clusters=30, cluster_size=10)
    a_full, a_inc = generate_batch(5, 1, np.arange(6), d)
    b_full, b_inc = generate_batch(5, 1, np.arange(3, 6), d)
    np.testing.assert_array_equal(a_inc[3:], b_inc)        # a data set does not depend on its batch
    assert not np.array_equal(generate_batch(5, 0, [0], d)[0], a_full[:1])   # conditions differ
    full, _ = generate_batch(3, 0, np.arange(300), d)
    # the population's x slope pooled over replications: regress y on [1, x, w, x w] (OLS is
    # unbiased for the fixed effects here); 300 x 300 rows give an SE near 0.004
    y, x, w = full[..., 1].ravel(), full[..., 2].ravel(), full[..., 3].ravel()
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(x), x, w, x * w]), y, rcond=None)[0]
    np.testing.assert_allclose(coef, d.b, atol=0.03)
    # the cluster column and w are constant within clusters
    assert (full[0, :, 0] == np.repeat(np.arange(1, 31), 10)).all()
    assert (np.ptp(full[0, :, 3].reshape(30, 10), axis=1) == 0).all()


@pytest.mark.parametrize("mechanism", ["MCAR", "MAR", "MNAR"])
def test_slope_generator_mechanisms(mechanism):
    """Rates near 25% (y, x) and 20% (w clusters), and each mechanism's dependence: MCAR on
    nothing, MAR on the other variable, MNAR on the deleted value itself. With 400 x 200 rows a
    rate's SE is about 0.0015 and a difference of conditional rates about 0.004; the MAR/MNAR
    effects are near 0.2, so 0.05 and 0.02 bounds are wide of both."""
    d = RandomSlope(clusters=20, cluster_size=10, mechanism=mechanism)
    full, inc = generate_batch(3, 0, np.arange(400), d)
    miss = np.isnan(inc)
    y, x = full[..., 1], full[..., 2]
    assert abs(miss[..., 1].mean() - 0.25) < 0.05 and abs(miss[..., 2].mean() - 0.25) < 0.05
    assert not (miss[..., 1] & miss[..., 2]).any()
    w_miss = miss[..., 3].reshape(len(full), 20, 10)[..., 0]
    assert abs(w_miss.mean() - 0.2) < 0.05

    def gap(m, v):       # missing rate where v is above its median minus below
        hi = v > np.median(v)
        return m[hi].mean() - m[~hi].mean()

    dep_other, dep_self = gap(miss[..., 1], x), gap(miss[..., 1], y)
    if mechanism == "MCAR":
        assert abs(dep_other) < 0.02 and abs(dep_self) < 0.02
    elif mechanism == "MAR":
        assert dep_other > 0.05 and gap(miss[..., 2], y) > 0.05
    else:
        assert dep_self > 0.05 and gap(miss[..., 2], x) > 0.05
        assert dep_self > gap(miss[..., 1], x) + 0.02


@pytest.mark.slow
def test_three_level_generator_draws_the_level3_variance():
    """The complete data of a three-level design, fitted with the analysis model (REML), give
    the population's level-3 variance and fixed effects on average over 200 replications
    (tolerance 4 Monte Carlo SEs); a two-level design's generator stream is unchanged by the
    three-level draws (they come last)."""
    from jaximpute.lmm import fit_arrays
    from jaximpute.studies.analysis import design_arrays
    d = RandomSlope(clusters=60, cluster_size=5, units=20, tau3=0.3)
    full, _ = generate_batch(9, 0, np.arange(200), d)
    y, xm, zm = design_arrays(full)
    fit = fit_arrays(y, xm, zm, np.repeat(np.arange(60), 5), 60, reml=True, unit=d.unit_of_cluster)
    for est, true in ((fit["psi3"], 0.3), (fit["beta"][:, 1], d.b[1]), (fit["beta"][:, 3], d.b[3])):
        assert abs(est.mean() - true) < 4 * est.std(ddof=1) / np.sqrt(len(est)), (est.mean(), true)
    two = RandomSlope(clusters=60, cluster_size=5)
    f2, _ = generate_batch(9, 0, np.arange(3), two)
    f3, _ = generate_batch(9, 0, np.arange(3), RandomSlope(clusters=60, cluster_size=5, units=20,
                                                           tau3=0.0, var_x3=0.0))
    np.testing.assert_allclose(f3, f2, atol=1e-6)


@pytest.mark.parametrize("icc", [0.2, 0.5])
def test_intercept_generator_moments_and_missing_rates(icc):
    """Var(y) = bB^2 + kappa, Var(x) = Var(z) = 1 (means 0, so the mean square estimates the
    variance), ICC(y) = icc; y and x each 27.5% missing in expectation (alpha solved for
    z ~ N(0, 1)), y where z is high and x where z is low (MAR given the complete z); within 4
    Monte Carlo SEs from per-cluster values (the clusters are independent draws)."""
    d = RandomIntercept(icc=icc)
    full, inc = generate_batch(7, 0, np.arange(400), d)
    y, x, z = full[..., 1], full[..., 2], full[..., 3]
    for v, var in ((y, d.var_y), (x, 1.0), (z, 1.0)):
        sq = v * v
        assert abs(sq.mean() - var) < 4 * _cluster_se(sq, d.clusters), (sq.mean(), var)
    # ICC(y): the variance of the cluster means is icc Var(y) + (1 - icc) Var(y) / n
    means = y.reshape(-1, d.cluster_size).mean(axis=-1)
    between = icc * d.var_y + (1 - icc) * d.var_y / d.cluster_size
    sq = means * means
    assert abs(sq.mean() - between) < 4 * sq.std(ddof=1) / np.sqrt(sq.size)
    miss = np.isnan(inc)
    assert not miss[..., [0, 3]].any()                      # cluster and z complete
    for col in (1, 2):
        m = miss[..., col].astype(float)
        assert abs(m.mean() - d.missing_rate) < 4 * _cluster_se(m, d.clusters), (col, m.mean())
    # MAR: E[z | y missing] = E[z logistic(alpha + z)] / rate, about +0.6 (and -0.6 for x)
    assert z[miss[..., 1]].mean() > 0.3 and z[miss[..., 2]].mean() < -0.3
    obs = ~miss
    assert np.array_equal(inc[obs], full[obs])


def test_missing_intercept_gives_the_rate():
    a = missing_intercept(0.275, 1.0)
    zz = np.random.default_rng(0).normal(size=2_000_000)
    # the logistic's mean over 2e6 normal draws has an SE near 1e-4
    assert np.mean(1 / (1 + np.exp(-(a + zz)))) == pytest.approx(0.275, abs=1e-3)
