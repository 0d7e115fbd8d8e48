"""Multi-parameter tests D1, D2, D3 (jaximpute.pool, analyze.compare / test_constraints)
against mitml::testModels and mitml::testConstraints.

Fixtures in tests/fixtures/mitml/, each with the script that made it:
- pool_tests.R -> pool_inputs.csv, pool_results.csv: fixed inputs (estimates, covariances,
  chi-square statistics, log-likelihoods) and mitml's D1 / D2 / D3 on them. Agreement: 1e-6
  relative (in practice ~1e-14; testConstraints ~1e-8, since mitml differentiates numerically).
- make_imputations.py -> imputations.csv (5 imputed data sets, 40 clusters of 8, random slope);
  lme4_tests.R -> lme4_results.csv (testModels / testConstraints over lme4 fits),
  lme4_logliks.csv and lme4_pooled_params.csv (what D3 evaluates). Agreement: 1e-4 relative,
  since our fits and lme4's agree to the optimisers' tolerance (in practice ~1e-7).
Tests marked ``peer`` rerun the R scripts (skipped when Rscript is missing).
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaximpute import analyze
from jaximpute.lmm import fit_lmm, loglik_at
from jaximpute.pool import d1, d2, d3, f_pvalue, lr_statistics, pool, wald_statistics

FIX = Path(__file__).resolve().parent / "fixtures" / "mitml"
COLS = ["F", "df1", "df2", "p", "riv"]
FORMULAS = {"full1": "y ~ x + w + (x | g)", "full2": "y ~ x + w + x:w + (x | g)",
            "null": "y ~ x + (x | g)"}


def _read(path) -> pd.DataFrame:
    # keep "" (no df_com) and the model name "null" as strings
    frame = pd.read_csv(path, keep_default_na=False, na_values=[])
    for c in COLS:
        if c in frame.columns:
            frame[c] = frame[c].astype(float)       # "Inf", "NaN" as R writes them
    return frame


def _num(v):
    return None if v == "" else float(v)


def _agree(mine, theirs, rtol, label=""):
    mine = np.asarray(mine, dtype=float)
    theirs = np.asarray(theirs, dtype=float)
    np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=1e-300, equal_nan=True, err_msg=label)


# ------------------------------------------------------------------------ fixed inputs

def load_inputs(folder: Path) -> dict:
    """pool_inputs.csv -> {case: {"q": (m, k), "u": (m, k, k), "stat"/"ll"/...: (m,)}}."""
    raw = _read(folder / "pool_inputs.csv")
    raw["value"] = raw["value"].astype(float)
    out = {}
    for case, sub in raw.groupby("case", sort=False):
        m = int(sub["imp"].max())
        entry = {}
        if (sub["kind"] == "q").any():
            k = int(sub.loc[sub.kind == "q", "i"].max())
            q = np.zeros((m, k))
            u = np.zeros((m, k, k))
            for r in sub.itertuples():
                if r.kind == "q":
                    q[r.imp - 1, r.i - 1] = r.value
                elif r.kind == "u":
                    u[r.imp - 1, r.i - 1, r.j - 1] = r.value
            entry.update(q=q, u=u)
        for kind in ("stat", "ll", "ll0", "llp", "llp0"):
            part = sub[sub.kind == kind].sort_values("imp")
            if len(part):
                entry[kind] = part["value"].to_numpy()
        out[case] = entry
    return out


def ours_fixed(row, inputs) -> dict:
    """Our result for one row of pool_results.csv."""
    x = inputs[row.case]
    k = int(row.k)
    if row.test == "D1":
        return d1(x["q"], x["u"], df_com=_num(row.df_com))
    if row.test == "D2wald":
        return d2(wald_statistics(x["q"], x["u"]), k)
    if row.test == "D2":
        return d2(x["stat"], k)
    if row.test.startswith("constraints_"):
        cons = row.constraints.split(";")
        lmat, const = analyze.parse_constraints(cons, ["b1", "b2", "b3"])
        q = x["q"] @ lmat.T + const
        u = np.einsum("ip,mpr,jr->mij", lmat, x["u"], lmat)
        if row.test == "constraints_D1":
            return d1(q, u, df_com=_num(row.df_com))
        return d2(wald_statistics(q, u), k)
    if row.test == "D2lik":
        return d2(lr_statistics(x["ll"], x["ll0"]), k)
    if row.test == "D3":
        return d3(-2 * (x["ll0"] - x["ll"]), -2 * (x["llp0"] - x["llp"]), k, ariv=row.ariv)
    raise AssertionError(row.test)


FIXED_INPUTS = load_inputs(FIX)
FIXED_RESULTS = _read(FIX / "pool_results.csv")


@pytest.mark.parametrize("row", list(FIXED_RESULTS.itertuples()),
                         ids=lambda r: f"{r.case}-{r.test}-{r.df_com or 'nodf'}-{r.ariv}-{r.Index}")
def test_fixed_inputs_match_mitml(row):
    mine = ours_fixed(row, FIXED_INPUTS)
    _agree([mine[c] for c in COLS], [getattr(row, c) for c in COLS], 1e-6, str(row))


def test_fixed_results_cover_the_edge_cases():
    r = FIXED_RESULTS
    assert np.isinf(r.df2).any()                       # B = 0: df2 = inf, chi-square p
    assert np.isnan(r.df2).any()                       # Reiter's df at t = 2: NaN, as mitml
    assert (r.df2 == 4).any()                          # Reiter's df at t = 4: 4, as mitml
    assert (r.F < 0).any() and (r.p[r.F < 0] == 1).all()
    assert (r.riv < 0).any()                           # D3's r < 0 by default
    assert {"D1", "D2", "D2wald", "D2lik", "D3", "constraints_D1", "constraints_D2"} <= set(r.test)


# ------------------------------------------------------------------------ hand checks

def test_d1_one_parameter_is_squared_rubin_t():
    rng = np.random.default_rng(3)
    q = rng.normal(1.0, 0.2, (6, 1))
    u = rng.uniform(0.05, 0.1, (6, 1, 1))
    res = d1(q, u)
    tab = pool(q, u[:, :, 0]).iloc[0]
    assert res["F"] == pytest.approx(tab["t"] ** 2, rel=1e-12)
    assert res["riv"] == pytest.approx(tab["riv"], rel=1e-12)
    assert res["df1"] == 1 and res["m"] == 6
    # Li et al.'s df with t = k (m - 1) = 5 > 4
    r = tab["riv"]
    assert res["df2"] == pytest.approx(4 + (5 - 4) * (1 + (1 - 2 / 5) / r) ** 2, rel=1e-12)
    # the null value q0 shifts the estimates
    shifted = d1(q + 0.3, u, q0=[0.3])
    assert shifted["F"] == pytest.approx(res["F"], rel=1e-12)


def test_d2_identical_statistics():
    res = d2([4.0, 4.0, 4.0], 2)
    assert res["riv"] == 0 and np.isinf(res["df2"])
    assert res["F"] == pytest.approx(2.0)
    # df2 = inf: the chi-square limit, as R's pf(F, k, Inf)
    assert res["p"] == pytest.approx(np.exp(-2.0), rel=1e-12)
    assert f_pvalue(-1.0, 3, 10) == 1.0 and np.isnan(f_pvalue(1.0, 3, -1.0))


def test_lr_statistics_zero_all_equal_pairs():
    full = np.array([-500.0, -480.0, -490.0])
    # relative differences: 6e-3, 1e-10 (all.equal: 0), 2e-9 (all.equal: 0), 2e-7 (kept)
    full = np.append(full, -490.0)
    null = np.array([-503.0, -480.0 * (1 + 1e-10), -490.0 - 1e-6, -490.0 - 1e-4])
    out = lr_statistics(full, null)
    assert out[0] == pytest.approx(6.0) and out[1] == 0.0 and out[2] == 0.0
    assert out[3] == pytest.approx(2e-4)


def test_tests_vectorise_over_leading_axes():
    x = FIXED_INPUTS["d1_k2_m5"]
    q = np.stack([x["q"], x["q"] * 1.1])
    u = np.stack([x["u"], x["u"] * 0.9])
    both = d1(q, u, df_com=50)
    for i in range(2):
        one = d1(q[i], u[i], df_com=50)
        for c in COLS:
            assert both[c][i] == pytest.approx(one[c], rel=1e-13)
    s = np.stack([FIXED_INPUTS["d2_k2_m5"]["stat"], FIXED_INPUTS["d2_k2_m5"]["stat"][::-1] * 2])
    two = d2(s, 2)
    assert two["F"][0] == pytest.approx(d2(s[0], 2)["F"]) and two["F"].shape == (2,)
    lr = np.stack([np.arange(1.0, 6.0), np.arange(2.0, 7.0)])
    three = d3(lr, lr * 0.8, 2)
    assert three["F"][1] == pytest.approx(d3(lr[1], lr[1] * 0.8, 2)["F"])


def test_parse_constraints():
    names = ["(Intercept)", "x", "w", "x:w"]
    lmat, c = analyze.parse_constraints(["w == x", "2*`x:w` - 1", "(Intercept) + x/2 == 3",
                                         "-(x - w) * 3"], names)
    np.testing.assert_array_equal(lmat, [[0, -1, 1, 0], [0, 0, 0, 2], [1, 0.5, 0, 0],
                                         [0, -3, 3, 0]])
    np.testing.assert_array_equal(c, [0, -1, -3, 0])
    lmat, _ = analyze.parse_constraints("x:w - Intercept", names)
    np.testing.assert_array_equal(lmat, [[-1, 0, 0, 1]])
    from jaximpute.errors import DataError
    with pytest.raises(DataError, match="unknown parameter 'ww'.*did you mean 'w'"):
        analyze.parse_constraints(["ww"], names)
    with pytest.raises(DataError, match="not linear"):
        analyze.parse_constraints(["x * w"], names)
    with pytest.raises(DataError, match="no parameter"):
        analyze.parse_constraints(["3 == 3"], names)


# ------------------------------------------------------------------------ lme4 end to end

@pytest.fixture(scope="module")
def frames():
    d = pd.read_csv(FIX / "imputations.csv")
    return [g.drop(columns="imputation").reset_index(drop=True)
            for _, g in d.groupby("imputation", sort=True)]


@pytest.fixture(scope="module")
def fits(frames):
    out = {(name, False): fit_lmm(f, frames) for name, f in FORMULAS.items()}
    for name in ("full1", "full2"):
        out[(name, True)] = fit_lmm(FORMULAS[name], frames, reml=True)
    assert all(f.converged.all() for f in out.values())
    return out


@pytest.mark.slow
def test_loglik_at_own_estimates_is_fit_loglik(fits, frames):
    for (name, reml), fit in fits.items():
        ll = loglik_at(FORMULAS[name], frames, None if reml else fit.beta, fit.psi, fit.sigma2,
                       reml=reml)
        np.testing.assert_allclose(ll, fit.loglik, rtol=0, atol=1e-8)


def test_loglik_at_matches_mitml_d3_likelihood(fits, frames):
    """Our log-likelihoods agree with lme4's at the fits (~1e-12) and, at mitml's pooled
    estimates (beta, Tau, sigma2 averaged), with lme4's devfun2 as mitml's D3 evaluates it."""
    lls = _read(FIX / "lme4_logliks.csv")
    params = _read(FIX / "lme4_pooled_params.csv")
    for name, formula in FORMULAS.items():
        sub = lls[lls.model == name].sort_values("imputation")
        np.testing.assert_allclose(fits[(name, False)].loglik, sub.loglik, rtol=0, atol=1e-6)
        p = params[params.model == name].set_index("name")["value"].astype(float)
        fixed = [n for n in p.index if not n.startswith(("tau", "sigma2"))]
        psi = np.array([[p["tau11"], p["tau21"]], [p["tau21"], p["tau22"]]])
        ll = loglik_at(formula, frames, p[fixed].to_numpy(), psi, p["sigma2"])
        np.testing.assert_allclose(ll, sub.loglik_pooled, rtol=0, atol=1e-9)


def test_d2_d3_on_lme4_logliks_match_mitml():
    """D2 (likelihood) and D3 from lme4's own log-likelihoods: mitml's numbers to ~1e-12."""
    lls = _read(FIX / "lme4_logliks.csv")
    res = _read(FIX / "lme4_results.csv")
    get = lambda model, col: lls[lls.model == model].sort_values("imputation")[col].to_numpy()
    for full, k in (("full1", 1), ("full2", 2)):
        ref = res[(res.test == "testModels") & (res.comparison == full) & ~res.reml]
        lik = ref[(ref.method == "D2") & (ref.use == "likelihood")].iloc[0]
        mine = d2(lr_statistics(get(full, "loglik"), get("null", "loglik")), k)
        _agree([mine[c] for c in COLS], [lik[c] for c in COLS], 1e-6, f"{full} D2 likelihood")
        row = ref[ref.method == "D3"].iloc[0]
        mine = d3(-2 * (get("null", "loglik") - get(full, "loglik")),
                  -2 * (get("null", "loglik_pooled") - get(full, "loglik_pooled")), k)
        _agree([mine[c] for c in COLS], [row[c] for c in COLS], 1e-6, f"{full} D3")


def _check_lme4_results(results: pd.DataFrame, fits, frames, rtol=1e-4):
    for row in results.itertuples():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if row.test == "testModels":
                reml = bool(row.reml) and not (row.method == "D3" or row.use == "likelihood")
                # mitml refits REML fits by ML for D2 (likelihood) and D3: the ML fits are those
                out = analyze.compare_fits(fits[(row.comparison, reml)], fits[("null", False)],
                                           row.method, frames=frames, use=row.use,
                                           df_com=_num(row.df_com))
            else:
                cons = row.comparison.split(";")
                out = analyze.test_constraints(None, FORMULAS["full2"], cons, row.method,
                                               df_com=_num(row.df_com), fit=fits[("full2", False)])
        mine = out[analyze.TEST_COLUMNS].iloc[0].to_numpy()
        _agree(mine, [getattr(row, c) for c in COLS], rtol, str(row))


def test_compare_matches_mitml_on_lme4_fits(fits, frames):
    _check_lme4_results(_read(FIX / "lme4_results.csv"), fits, frames)


def test_compare_fits_the_models_and_refits_reml_by_ml(fits, frames):
    """compare() itself: REML requested, D3 refits by ML (as mitml), so the result is the
    ML one; D1 with a REML fit uses the REML estimates."""
    out = analyze.compare(frames, FORMULAS["full1"], FORMULAS["null"], "D3", reml=True)
    assert out.attrs["refit"] and out.attrs["use"] == "likelihood" and out.attrs["m"] == 5
    ml = analyze.compare_fits(fits[("full1", False)], fits[("null", False)], "D3", frames=frames)
    _agree(out.to_numpy(), ml.to_numpy(), 1e-9)
    d1_reml = analyze.compare_fits(fits[("full1", True)], FORMULAS["null"], "D1")
    assert d1_reml.attrs["parameters"] == ["w"] and d1_reml.attrs["reml"]
    assert list(d1_reml.columns) == ["F.value", "df1", "df2", "P(>F)", "RIV"]
    with pytest.warns(UserWarning, match="ignored"):
        analyze.compare_fits(fits[("full1", False)], fits[("null", False)], "D3", frames=frames,
                             df_com=30)
    from jaximpute.errors import DataError
    with pytest.raises(DataError, match="not to be nested"):
        analyze.compare(frames, FORMULAS["null"], FORMULAS["full1"], "D1")
    with pytest.raises(DataError, match="expected the first"):
        analyze.compare_fits(fits[("null", False)], fits[("full1", False)], "D2",
                             use="likelihood")


# ------------------------------------------------------------------------ live R

def _rscript(script: str, outdir: Path):
    if shutil.which("Rscript") is None:
        pytest.skip("R is not installed (CI installs it)")
    try:
        proc = subprocess.run(["Rscript", script, str(outdir)], cwd=FIX, capture_output=True,
                              text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("Rscript timed out")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.peer
@pytest.mark.slow
def test_live_mitml_on_fixed_inputs(tmp_path):
    _rscript("pool_tests.R", tmp_path)
    inputs = load_inputs(tmp_path)
    results = _read(tmp_path / "pool_results.csv")
    assert len(results) == len(FIXED_RESULTS)
    for row in results.itertuples():
        mine = ours_fixed(row, inputs)
        _agree([mine[c] for c in COLS], [getattr(row, c) for c in COLS], 1e-6, str(row))


@pytest.mark.peer
@pytest.mark.slow
def test_live_mitml_on_lme4_fits(tmp_path, fits, frames):
    _rscript("lme4_tests.R", tmp_path)
    live = _read(tmp_path / "lme4_results.csv")
    recorded = _read(FIX / "lme4_results.csv")
    assert len(live) == len(recorded)
    _check_lme4_results(live, fits, frames)
