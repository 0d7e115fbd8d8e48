"""The fitter stops only at a minimum of the bounded problem (lme4's theta, diagonal >= 0).

The deviance is even in every column of Lambda, so any Lambda with a zero column has a zero
theta-gradient; these tests start fits exactly there and on data where the old fitter stopped
there, and check them against an independent bounded fit (``reference_lmm``: numpy + scipy).
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

from jaximpute import analyze, lmm
from reference_lmm import fit_random_intercept


def _low_icc(seed: int, j: int = 50, n: int = 15) -> pd.DataFrame:
    """The design that showed the defect: y = 2 + .5 x + u + e, var(u) = .05, var(e) = 4."""
    rng = np.random.RandomState(seed)
    cl = np.repeat(np.arange(j), n)
    x = rng.normal(size=j * n)
    y = 2 + 0.5 * x + rng.normal(scale=np.sqrt(0.05), size=j)[cl] + rng.normal(scale=2, size=j * n)
    return pd.DataFrame({"y": y, "x": x, "cl": cl})


def test_low_icc_fits_reach_the_bounded_optimum():
    """20 data sets of the reported design in one batch-free loop: each log-likelihood at least
    the independent bounded fit's (within 1e-9 relative), and theta > 0 wherever that fit's is
    clearly interior. The old fitter stopped at theta = 0 on most of them, up to 3.8 below."""
    interior = 0
    for seed in range(20):
        frame = _low_icc(seed)
        fit = lmm.fit_lmm("y ~ x + (1|cl)", frame)
        ref = fit_random_intercept(frame["y"], np.column_stack([np.ones(len(frame)), frame["x"]]),
                                   frame["cl"])
        assert fit.loglik[0] >= ref["loglik"] - 1e-9 * abs(ref["loglik"]), seed
        assert fit.converged[0]
        if ref["tau"] / ref["s2"] > 1e-3:
            interior += 1
            assert fit.theta[0, 0] > 0.01, seed
            assert fit.psi[0, 0, 0] == pytest.approx(ref["tau"], rel=1e-4)
            assert not fit.singular[0]
        else:
            assert fit.singular[0]
    assert interior >= 10          # the design puts most optima inside, a few on the boundary


def _run(q, theta0, frames, formula, reml=False):
    """The batch fitter from a chosen start (the public entry points start at lme4's)."""
    f = lmm.parse_formula(formula)
    ys, xs, zs, g, unit = lmm.design_arrays(f, frames)
    num_units = 0 if unit is None else int(unit.max()) + 1
    with jax.enable_x64(True):
        fit = jax.jit(lmm.batched_fitter(q, reml, 100, int(g.max()) + 1, False, num_units))(
            ys, xs, zs, g, None, np.asarray(theta0, float), unit)
        return {k: np.asarray(v) for k, v in jax.device_get(fit).items()}


@pytest.mark.parametrize("reml", [False, True])
def test_a_start_on_the_boundary_is_left(reml):
    """Started at theta = 0 exactly (a stationary point whatever the data), the fit moves to the
    interior optimum: the boundary check, not the gradient, decides. With the check switched off
    (a mutation), this fit stays at 0 and the test fails."""
    frame = _low_icc(5)
    fit = _run(1, [0.0], [frame], "y ~ x + (1|cl)", reml)
    ref = lmm.fit_lmm("y ~ x + (1|cl)", frame, reml=reml)
    assert fit["theta"][0, 0] == pytest.approx(ref.theta[0, 0], rel=1e-4)
    assert fit["theta"][0, 0] > 0.1
    assert fit["kkt"][0] and fit["converged"][0]


def _slopes(seed=1, j=60, n=12, tau=((0.5, 0.1, 0.0), (0.1, 0.3, 0.05), (0.0, 0.05, 0.2))):
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(j), n)
    x1, x2 = rng.standard_normal(j * n), rng.standard_normal(j * n)
    u = rng.multivariate_normal(np.zeros(3), np.asarray(tau), size=j)
    y = 1 + 0.5 * x1 - 0.2 * x2 + u[cl, 0] + u[cl, 1] * x1 + u[cl, 2] * x2 + rng.standard_normal(j * n)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "cl": cl})


@pytest.mark.parametrize("start", [[0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0]])
@pytest.mark.slow
def test_q3_starts_with_zero_columns_reach_the_optimum(start):
    """q = 3 started with every, two and one column of Lambda zero: the check adds one missing
    direction a round, and the fit ends where the start at lme4's ends."""
    frame = _slopes()
    formula = "y ~ x1 + x2 + (x1 + x2 | cl)"
    fit = _run(3, start, [frame], formula)
    ref = lmm.fit_lmm(formula, frame)
    assert fit["deviance"][0] <= -2 * ref.loglik[0] + 1e-8 * abs(ref.loglik[0])
    np.testing.assert_allclose(fit["psi"][0], ref.psi[0], atol=1e-4 * ref.psi[0].max())
    assert fit["converged"][0]


@pytest.mark.slow
def test_three_level_start_on_the_level3_boundary():
    """lambda3 = 0 is as stationary as theta = 0; the check moves it when schools vary."""
    rng = np.random.default_rng(3)
    k, j, n = 30, 4, 5
    school = np.repeat(np.arange(k), j * n)
    cls = np.repeat(np.arange(k * j), n)
    y = rng.normal(0, 0.7, k)[school] + rng.normal(0, 0.5, k * j)[cls] + rng.standard_normal(k * j * n)
    frame = pd.DataFrame({"y": y, "x": rng.standard_normal(k * j * n), "cl": cls % j, "sch": school})
    formula = "y ~ x + (1 | cl) + (1 | sch)"
    fit = _run(1, [1.0, 0.0], [frame], formula)
    ref = lmm.fit_lmm(formula, frame)
    assert fit["psi3"][0] == pytest.approx(ref.psi3[0], rel=1e-4)
    assert fit["psi3"][0] > 0.1
    assert fit["deviance"][0] == pytest.approx(-2 * ref.loglik[0], rel=1e-10)


def test_a_failing_member_leaves_the_batch_alone():
    """One data set whose deviance cannot be evaluated (a constant response: r'r = 0) in a batch
    of good ones: the loop ends, that fit says it did not converge, the others equal their own
    single fits."""
    frames = [_low_icc(s) for s in range(4)]
    bad = frames[2].copy()
    bad["y"] = 1.0
    fit = lmm.fit_lmm("y ~ x + (1|cl)", frames[:2] + [bad] + frames[3:])
    assert not fit.converged[2]
    for k in (0, 1, 3):
        one = lmm.fit_lmm("y ~ x + (1|cl)", frames[k])
        assert fit.loglik[k] == pytest.approx(one.loglik[0], rel=1e-12)
        assert fit.converged[k]


@pytest.mark.slow
def test_singular_fits_are_reported():
    """A true zero variance (as Dyestuff2): theta below lme4's 1e-4 is flagged, and the pooled
    table says so in its text and in its DataFrame; an interior fit is not flagged."""
    rng = np.random.default_rng(11)
    frames = []
    cl = np.repeat(np.arange(30), 5)
    for _ in range(3):
        e = rng.standard_normal(150)
        y = e - np.bincount(cl, e)[cl] / 5            # no variation between cluster means at all
        frames.append(pd.DataFrame({"y": y, "x": rng.standard_normal(150), "cl": cl}))
    res = analyze.analyze(frames, "y ~ x + (1|cl)")
    sing = res.singular
    assert sing.dtype == bool and sing.tolist() == [True] * 3
    tab = res.table()
    assert tab.attrs["singular_fits"] == 3
    assert (tab.dropna(subset=["singular_fits"])["singular_fits"] == 3).all()
    assert "boundary (singular) fit in 3 of 3" in res.text
    # theta is below the tolerance exactly where the flag is set
    assert np.array_equal(sing, res.fit.theta[:, 0] < lmm.SINGULAR_TOL)
    interior = analyze.analyze([_low_icc(5), _low_icc(5)], "y ~ x + (1|cl)")
    assert not interior.singular.any() and "singular" not in interior.text
