"""Mixed-model fits against lme4 (docs/design/pooling.md): fixed effects, SEs, variance
components and the log-likelihood within 1e-4 relative, ML and REML, on three data sets (random
intercept; random slope; the seed's analysis shape with a cross-level interaction).

The reference numbers are recorded in fixtures/lmm/lme4_fits.csv by fixtures/lmm/lme4_fits.R
(lme4 with tight optimiser tolerances); when R is installed the same script is also run live.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaximpute.lmm import FormulaError, fit_lmm, parse_formula

FIX = Path(__file__).resolve().parent / "fixtures" / "lmm"
MODELS = {
    "ri": ("ri.csv", "y ~ x + w + (1 | g)"),
    "rs": ("rs.csv", "y ~ x + (x | g)"),
    "seed": ("seed.csv", "probsolve ~ months + efficacy + stanmath + condition + months:condition + (months | student)"),
}
RTOL = 1e-4


def compare(reference: pd.DataFrame, model: str, reml: bool):
    file, formula = MODELS[model]
    fit = fit_lmm(formula, pd.read_csv(FIX / file), reml=reml)
    assert fit.converged.all()
    ref = reference[(reference.model == model) & (reference.reml == reml)]
    ours = {}
    names = fit.formula.fixed_names
    for i, n in enumerate(names):
        ours[("beta", n)] = fit.beta[0, i]
        ours[("se", n)] = fit.se[0, i]
    for k, v in fit.variance_components().items():
        ours[("vc", k)] = v[0]
    ours[("loglik", "loglik")] = fit.loglik[0]
    for row in ref.itertuples():
        mine = ours[(row.kind, row.term)]
        # relative to the value, or to the scale of its group for values near 0
        scale = max(abs(row.value), 1e-3 if row.kind != "vc" else 1e-2)
        assert abs(mine - row.value) <= RTOL * scale, (model, reml, row.kind, row.term, mine, row.value)


@pytest.fixture(scope="module")
def recorded():
    ref = pd.read_csv(FIX / "lme4_fits.csv")
    ref["reml"] = ref["reml"].astype(str).str.upper() == "TRUE"
    return ref


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("reml", [False, True])
def test_agrees_with_recorded_lme4(recorded, model, reml):
    compare(recorded, model, reml)


@pytest.mark.peer
@pytest.mark.slow
def test_agrees_with_live_lme4(tmp_path):
    if shutil.which("Rscript") is None:
        pytest.skip("R is not installed (CI installs it)")
    out = tmp_path / "live.csv"
    proc = subprocess.run(["Rscript", "lme4_fits.R", str(out)], cwd=FIX, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    live = pd.read_csv(out)
    live["reml"] = live["reml"].astype(str).str.upper() == "TRUE"
    for model in MODELS:
        for reml in (False, True):
            compare(live, model, reml)


@pytest.mark.slow
def test_batch_of_fits_equals_single_fits():
    df = pd.read_csv(FIX / "rs.csv")
    rng = np.random.default_rng(0)
    frames = [df.assign(y=df.y + rng.normal(0, 0.3, len(df))) for _ in range(3)]
    batch = fit_lmm("y ~ x + (x | g)", frames)
    for i, fr in enumerate(frames):
        one = fit_lmm("y ~ x + (x | g)", fr)
        np.testing.assert_allclose(batch.beta[i], one.beta[0], rtol=1e-8)
        np.testing.assert_allclose(batch.psi[i], one.psi[0], rtol=1e-6, atol=1e-10)


@pytest.mark.slow
def test_singular_fit_has_zero_slope_variance():
    """Every cluster's own slope is exactly 0.5 (the noise is made orthogonal to x within each
    cluster), so the ML slope variance is on the boundary, 0 (lme4: a singular fit)."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(50), 10)
    x = rng.normal(size=g.size)
    e = rng.normal(size=g.size)
    for j in range(50):
        rows = g == j
        xc = x[rows] - x[rows].mean()
        e[rows] -= xc * (xc @ e[rows]) / (xc @ xc)
    y = 1 + 0.5 * x + rng.normal(size=50)[g] + e
    fit = fit_lmm("y ~ x + (x | g)", pd.DataFrame({"g": g, "x": x, "y": y}))
    vc = fit.variance_components()
    assert vc["x~~x|g"][0] < 1e-3
    assert vc["Intercept~~Intercept|g"][0] > 0.5
    assert np.isfinite(fit.se).all()


@pytest.mark.parametrize("text,fragment", [
    ("y x + (1|g)", "one '~'"),
    ("y ~ x + (1|g) + (1|h) + (1|k)", "at most two random-effects terms"),
    ("y ~ x + (x|g) + (x|h)", "one must be a random intercept of the level-3 group"),
    ("y ~ x + (x|g) + (1|g)", "share the group 'g'"),
    ("y ~ x + z^2 + (1|g)", "cannot read the term"),
    ("y ~ x - z + (1|g)", "removing"),
])
def test_formula_errors(text, fragment):
    with pytest.raises(FormulaError, match=None) as e:
        parse_formula(text)
    assert fragment in str(e.value)


def test_formula_terms_and_unknown_column():
    f = parse_formula("y ~ a*b + c + (1 + a | g)")
    assert f.fixed_names == ["(Intercept)", "a", "b", "a:b", "c"]
    assert f.random_names == ["Intercept", "a"]
    assert parse_formula("y ~ 0 + a + (0 + a | g)").fixed_names == ["a"]
    df = pd.DataFrame({"y": [1.0, 2.0], "x": [1.0, 3.0], "g": [1, 2]})
    with pytest.raises(FormulaError) as e:
        fit_lmm("y ~ xx + (1|g)", df)
    assert "unknown column 'xx'" in str(e.value) and "did you mean 'x'" in str(e.value)


@pytest.mark.parametrize("q", [1, 2, 3])
@pytest.mark.parametrize("reml", [False, True])
@pytest.mark.slow
def test_deviance_gradient_equals_autodiff(q, reml):
    """The fitter's written-out gradient of the profiled deviance (lmm._profiled) is the
    reverse-mode derivative of the deviance it returns, at random theta, for q = 1..3 random
    effects, p = 3 fixed effects, ML and REML. Rounding is about 1e-15 relative; 1e-9 leaves room
    and still fails on any wrong term (each is O(1) relative)."""
    import jax
    import jax.numpy as jnp

    from jaximpute import lmm
    rng = np.random.default_rng(10 + q)
    j, size, p = 30, 8, 3
    g = np.repeat(np.arange(j), size)
    x = np.column_stack([np.ones(g.size)] + [rng.normal(size=g.size) for _ in range(p - 1)])
    z = np.column_stack([np.ones(g.size)] + [rng.normal(size=g.size) for _ in range(q - 1)])
    y = x @ rng.normal(size=p) + (z * rng.normal(size=(j, q))[g]).sum(1) + rng.normal(size=g.size)
    with jax.enable_x64(True):
        lay = lmm.cluster_layout(lmm.cluster_stats(*(jnp.asarray(a) for a in (y, x, z, g)), j))
        for _ in range(3):
            theta = jnp.asarray(rng.normal(0.3, 0.5, q * (q + 1) // 2))
            _, grad, _ = lmm._profiled(theta, lay, q, reml)
            auto = jax.grad(lambda t: lmm._profiled(t, lay, q, reml)[0])(theta)
            np.testing.assert_allclose(np.asarray(grad), np.asarray(auto), rtol=1e-9,
                                       atol=1e-9 * float(jnp.max(jnp.abs(auto))))


def test_design_arrays_match_model_matrices_and_name_bad_sets():
    from jaximpute.lmm import design_arrays, model_matrices
    df = pd.read_csv(FIX / "rs.csv")
    f = parse_formula("y ~ x*x + (x | g)")
    frames = [df, df.assign(y=df.y + 1.0, x=df.x * 2.0)]
    ys, xs, zs, g, _ = design_arrays(f, frames)
    for k, fr in enumerate(frames):
        y, x, z, g1, _ = model_matrices(f, fr)
        np.testing.assert_array_equal(ys[k], y)
        np.testing.assert_array_equal(xs[k], x)
        np.testing.assert_array_equal(zs[k], z)
        np.testing.assert_array_equal(g, g1)
    with pytest.raises(FormulaError, match="data set 2 has 9 rows"):
        fit_lmm("y ~ x + (x | g)", [df, df.iloc[:9]])
    with pytest.raises(FormulaError, match="data set 2's 'g' column differs"):
        fit_lmm("y ~ x + (x | g)", [df, df.assign(g=df.g[::-1].to_numpy())])
    with pytest.raises(FormulaError, match="data set 2, row 3"):
        fit_lmm("y ~ x + (x | g)", [df, df.assign(y=df.y.where(df.index != 2))])
