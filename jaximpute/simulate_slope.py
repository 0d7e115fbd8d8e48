r"""Monte Carlo study: imputation compatible with a random-slope model with an interaction.

The seed's point (and issue 4's): imputations must come from a model that knows the analysis's
random slope and interaction. This study generates two-level data from such a model, deletes
values in the outcome, the level-1 predictor and the level-2 predictor (MAR), imputes them with

- ``focal``: jaximpute's focal model ``cluster ~ y:x w x*w; OUTCOME: y;`` (random slope of x,
  the x*w product; supporting blocks for x and w),
- ``random intercept``: the random-intercept joint model ``cluster ~ y x w`` (no random slope,
  no product),
- ``focal, x continuous``: the focal model with an ordinal x imputed as continuous (below),

analyses every imputed data set with the analysis model (the project's JAX mixed-model fit,
REML, as lme4's default), pools by Rubin's rules, and compares with listwise deletion and the
complete data.

Population model
----------------
J clusters of n rows. For cluster j and row i:

.. code-block:: text

    w_j  ~ N(0, 1)                                             (level 2)
    x_ij = g w_j + a_j + f_ij,   a_j ~ N(0, var_a),  f_ij ~ N(0, var_f)
    y_ij = b0 + b1 x_ij + b2 w_j + b3 x_ij w_j + u0_j + u1_j x_ij + e_ij
    (u0_j, u1_j) ~ N(0, [[tau00, tau01], [tau01, tau11]]),   e_ij ~ N(0, s2)

Defaults: b = (0, 0.5, 0.3, 0.25), tau = (0.3, 0.05, 0.1), s2 = 0.5, g = 0.3, var_a = 0.2,
var_f = 0.8. The analysis model, ``y ~ x + w + x:w + (x | cluster)``, is the population model, so
its complete-data REML estimates are consistent; the estimands are the population values.

Missing data (MAR)
------------------
- y and x: each row is, with probability 1/2, a row where y may be deleted, else one where x may
  be. In the first kind, y is deleted with probability logistic(gamma x_ij); in the second, x is
  deleted with probability logistic(gamma y_ij) (gamma = 1). The deleting probability depends
  only on a value that stays observed, so the mechanism is MAR; about 25% of each is missing,
  and a row never loses both.
- w: deleted for a cluster with probability logistic(alpha_w + gamma_w ybar_obs_j), where
  ybar_obs_j is the mean of the cluster's observed y values (0 if none): MAR at level 2;
  alpha_w = logit(0.2), gamma_w = 1 (about 20% of clusters).

Ordinal x (issue 5)
-------------------
With ``Design(cuts=...)`` the level-1 predictor is ordinal: the x above is a latent variable,
cut at ``cuts`` into codes 0..K-1, and the analysis model (and y's population model) uses the
codes, as a researcher's analysis would. The selections then use x - (K-1)/2 and
y - (b0 + b1 (K-1)/2) in place of x and y (both 0 for a continuous x), so the missing rates stay
near 25%. Methods: ``focal`` imputes x as ORDINAL (a probit supporting block, categories by
enumeration), ``focal, x continuous`` the same model with x treated as normal (imputed values
off the codes). Both supporting models for x are regressions on w with a random intercept; the
probit one is correctly specified here.

Analysis and pooling
--------------------
Each data set: REML fit of ``y ~ x + w + x:w + (x | cluster)`` (``jaximpute.lmm.fit_arrays``,
which matches lme4 to 1e-4). Fixed effects pooled by Rubin's rules with Barnard & Rubin's df,
complete-data df J - 2 (the level-2 df that governs w, x:w and the random slope's mean); the
intervals of the complete-data and listwise analyses use the same t reference. Variance
components are pooled by their mean over imputations (as mitml's testEstimates does). Listwise
deletion fits the rows with y, x and w all observed.

Reference: Enders, C. K., Du, H., & Keller, B. T. (2020). A model-based imputation procedure for
multilevel regression models with random coefficients, interaction effects, and nonlinear terms.
*Psychological Methods*, 25, 88-112 (the design's shape and its comparison methods).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .pool import rubin
from .simulate import markdown_table, records_frame

METHODS = ("focal", "focal, x continuous", "focal, two-level", "random intercept", "single-level",
           "listwise", "complete")
FIXED = ("(Intercept)", "x", "w", "x:w")
VARIANCES = ("var(u0)", "var(u1)", "cov(u0,u1)", "residual")
VARIANCE3 = "var(v)"              # three-level designs: the level-3 intercept variance
PARAMETERS = FIXED + VARIANCES + (VARIANCE3,)
MODELS = {"focal": ("cluster ~ y:x w x*w", "y"), "focal, x continuous": ("cluster ~ y:x w x*w", "y"),
          "random intercept": ("cluster ~ y x w", None)}
NAMES = ("cluster", "y", "x", "w")


@dataclass(frozen=True)
class Design:
    clusters: int = 50
    cluster_size: int = 20
    b: tuple = (0.0, 0.5, 0.3, 0.25)
    tau00: float = 0.3
    tau01: float = 0.05
    tau11: float = 0.1
    s2: float = 0.5
    g: float = 0.3
    var_a: float = 0.2
    var_f: float = 0.8
    gamma: float = 1.0
    w_rate: float = 0.2
    w_gamma: float = 1.0
    cuts: tuple = ()      # ordinal x: the latent x is cut here into codes 0..len(cuts)
    mechanism: str = "MAR"   # MAR, MCAR or MNAR (jaximpute.study.generate; this module's own
                             # numpy generator draws MAR only)
    units: int = 0        # three-level designs: K level-3 units of clusters / K clusters each
    tau3: float = 0.2     # and the variance of y's level-3 random intercept
    var_x3: float = 0.1   # and of x's level-3 part

    @property
    def name(self) -> str:
        return (f"K={self.units}, " if self.units else "") + f"J={self.clusters}, n={self.cluster_size}"

    @property
    def unit_of_cluster(self) -> np.ndarray:
        """(J,) the level-3 unit (0..K-1) of each cluster: consecutive clusters share a unit."""
        return np.arange(self.clusters) // (self.clusters // self.units)

    @property
    def ordinal(self) -> bool:
        return bool(self.cuts)

    @property
    def x_centre(self) -> float:
        """Where the MAR selection on x is centred: 0, or the middle code of an ordinal x."""
        return len(self.cuts) / 2.0 if self.cuts else 0.0

    @property
    def y_centre(self) -> float:
        """Where the selections on y are centred: y's mean at x = x_centre, w = 0 (b0 when x is
        continuous), so an ordinal x's codes 0..K-1 do not raise the missing rates."""
        return self.b[0] + self.b[1] * self.x_centre

    def truth(self) -> dict:
        out = dict(zip(FIXED, self.b))
        out.update({"var(u0)": self.tau00, "var(u1)": self.tau11, "cov(u0,u1)": self.tau01,
                    "residual": self.s2})
        if self.units:
            out[VARIANCE3] = self.tau3
        return out


def generate_and_delete(d: Design, rng: np.random.Generator):
    """One replication: complete (N, 4) and incomplete (N, 4) arrays, columns NAMES (two-level
    designs; three-level ones are drawn on device only, ``study_program.generate``)."""
    if d.units:
        raise ValueError("generate_and_delete draws two-level designs; use study_program.generate")
    j, n = d.clusters, d.cluster_size
    w = rng.normal(0.0, 1.0, j)
    x = (d.g * w + rng.normal(0.0, np.sqrt(d.var_a), j))[:, None] + rng.normal(0.0, np.sqrt(d.var_f), (j, n))
    if d.ordinal:
        x = np.searchsorted(np.asarray(d.cuts), x).astype(float)      # codes 0..K-1
    u = rng.multivariate_normal([0.0, 0.0], [[d.tau00, d.tau01], [d.tau01, d.tau11]], j)
    b0, b1, b2, b3 = d.b
    y = (b0 + b1 * x + (b2 * w)[:, None] + b3 * x * w[:, None] + u[:, :1] + u[:, 1:] * x
         + rng.normal(0.0, np.sqrt(d.s2), (j, n)))
    ww = np.broadcast_to(w[:, None], (j, n))
    cl = np.broadcast_to(np.arange(1, j + 1, dtype=float)[:, None], (j, n))
    full = np.stack([cl, y, x, ww], axis=-1).reshape(j * n, 4)
    # MAR deletion (module docstring)
    kind_y = rng.random((j, n)) < 0.5
    logistic = lambda t: 1.0 / (1.0 + np.exp(-t))
    miss_y = kind_y & (rng.random((j, n)) < logistic(d.gamma * (x - d.x_centre)))
    miss_x = ~kind_y & (rng.random((j, n)) < logistic(d.gamma * (y - d.y_centre)))
    y_obs = np.where(miss_y, np.nan, y)
    cnt = (~miss_y).sum(axis=1)
    ybar = np.where(cnt > 0, np.nansum(y_obs, axis=1) / np.maximum(cnt, 1) - d.y_centre, 0.0)
    alpha_w = np.log(d.w_rate / (1.0 - d.w_rate))
    miss_w = rng.random(j) < logistic(alpha_w + d.w_gamma * ybar)
    inc = full.copy()
    inc[:, 1] = np.where(miss_y, np.nan, y).ravel()
    inc[:, 2] = np.where(miss_x, np.nan, x).ravel()
    inc[:, 3] = np.where(np.broadcast_to(miss_w[:, None], (j, n)), np.nan, ww).ravel()
    return full, inc


def design_arrays(data, xp=np):
    """y (..., N), X (..., N, 4) = [1, x, w, x w], Z (..., N, 2) = [1, x] from (..., N, 4);
    `xp` numpy, or jax.numpy inside a device program."""
    y, x, w = data[..., 1], data[..., 2], data[..., 3]
    one = xp.ones_like(x)
    return y, xp.stack([one, x, w, x * w], -1), xp.stack([one, x], -1)


def fit_batch(data, cluster_index, num_clusters, weight=None, chunk: int = 2000):
    """REML fits of the analysis model to (M, N, 4) data sets: dict of (M, ...) arrays."""
    from .lmm import fit_arrays   # JAX starts only when fitting

    parts = []
    for s in range(0, data.shape[0], chunk):
        y, xm, zm = design_arrays(data[s:s + chunk])
        wt = None if weight is None else weight[s:s + chunk]
        parts.append(fit_arrays(y, xm, zm, cluster_index, num_clusters, weight=wt, reml=True))
    fit = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return fit


def variances(fit, xp=np):
    """The variance components of VARIANCES (and VARIANCE3 for three-level fits) from fits'
    psi, sigma2 (and psi3): (M, 4) or (M, 5)."""
    psi = fit["psi"]
    parts = [psi[:, 0, 0], psi[:, 1, 1], psi[:, 0, 1], fit["sigma2"]]
    return xp.stack(parts + ([fit["psi3"]] if "psi3" in fit else []), -1)


def variance_names(count: int) -> tuple:
    """The names of the columns of `variances`."""
    return VARIANCES + ((VARIANCE3,) if count > len(VARIANCES) else ())


def _t_interval(est, se, df, level=0.95):
    q = stats.t.ppf(0.5 + level / 2.0, df)
    return est - q * se, est + q * se


def records_direct(fit, d: Design) -> dict:
    """Per-replication results of one unimputed analysis per replication."""
    est, se = fit["beta"], np.sqrt(np.diagonal(fit["vcov"], axis1=-2, axis2=-1))
    df = np.full_like(est, d.clusters - 2.0)
    lo, hi = _t_interval(est, se, df)
    out = {p: {"estimate": est[:, k], "se": se[:, k], "lower": lo[:, k], "upper": hi[:, k],
               "fmi": np.full(len(est), np.nan), "converged": fit["converged"]}
           for k, p in enumerate(FIXED)}
    var = variances(fit)
    nan = np.full(len(est), np.nan)
    for k, p in enumerate(variance_names(var.shape[1])):
        out[p] = {"estimate": var[:, k], "se": nan, "lower": nan, "upper": nan, "fmi": nan,
                  "converged": out[FIXED[0]]["converged"]}
    return out


def records_pooled(fit, reps: int, nimps: int, d: Design) -> dict:
    """Pool (reps * nimps) fits, imputation-major within replication, by Rubin's rules."""
    est = fit["beta"].reshape(reps, nimps, -1)
    var = np.diagonal(fit["vcov"], axis1=-2, axis2=-1).reshape(reps, nimps, -1)
    conv = fit["converged"].reshape(reps, nimps).all(axis=1)
    return pooled_records(rubin(est, var, df_com=d.clusters - 2.0), conv,
                          variances(fit).reshape(reps, nimps, -1).mean(axis=1))


def pooled_records(r: dict, converged, variances) -> dict:
    """Per-replication records from pooled fixed effects (`r`: Rubin's estimate, std_error, df
    and fmi, each (reps, 4)), whether every imputation's fit converged (reps,), and the variance
    components' means over imputations (reps, 4 or 5)."""
    lo, hi = _t_interval(r["estimate"], r["std_error"], r["df"])
    out = {p: {"estimate": r["estimate"][:, k], "se": r["std_error"][:, k], "lower": lo[:, k],
               "upper": hi[:, k], "fmi": r["fmi"][:, k], "converged": converged}
           for k, p in enumerate(FIXED)}
    nan = np.full(len(converged), np.nan)
    for k, p in enumerate(variance_names(variances.shape[1])):
        out[p] = {"estimate": variances[:, k], "se": nan, "lower": nan, "upper": nan, "fmi": nan,
                  "converged": converged}
    return out


def _frame(records: dict, cond: str, method: str, rep0: int, psr=None) -> pd.DataFrame:
    return records_frame(records, method, rep0, psr, condition=cond)


def method_records(method: str, full, inc, d: Design, g, *, nimps: int, burn: int, thin: int,
                   chains: int, seed: int | None, models=MODELS, options=()):
    """One method on a batch of replications: (records, last-window PSR per replication or None,
    imputation seconds or None). `full` and `inc` are the (B, N, 4) complete and incomplete data
    sets, `g` the cluster index of each row; `models` maps imputation methods to (MODEL, OUTCOME);
    `options` as in `impute_many` (a prior)."""
    from .api import impute_many   # JAX starts only when imputing

    if method == "complete":
        return records_direct(fit_batch(full, g, d.clusters), d), None, None
    if method == "listwise":
        keep = ~np.isnan(inc[..., 1:]).any(axis=-1)
        return records_direct(fit_batch(np.nan_to_num(inc), g, d.clusters, weight=keep.astype(float)), d), None, None
    assert seed is not None                 # every imputation method has its engine seed
    t0 = time.perf_counter()
    model, outcome = models[method]
    ordinal = ("x",) if d.ordinal and method == "focal" else ()
    imputed, burn_psr = impute_many(inc, list(NAMES), model, outcome=outcome, ordinal=ordinal,
                                    nimps=nimps, burn=burn, thin=thin, chains=chains, seed=seed,
                                    options=options)
    if np.isnan(imputed).any():
        raise RuntimeError(f"{method} imputation left missing values")
    psr = np.nanmax(np.asarray(burn_psr)[:, -1, :], axis=-1)
    t_imp = time.perf_counter() - t0
    nb = len(inc)
    fit = fit_batch(imputed.reshape(nb * nimps, -1, 4), g, d.clusters)
    return records_pooled(fit, nb, nimps, d), psr, t_imp


def run_study(designs=(Design(50, 20), Design(100, 10)), reps: int = 200, *, nimps: int = 20,
              burn: int = 2000, thin: int = 100, chains: int = 2, seed: int = 20261124,
              batch: int = 100, methods=("focal", "random intercept", "listwise", "complete"),
              log=None):
    """Run the study; returns (summary DataFrame, per-replication DataFrame).

    Replication r of condition k draws its data from its own generator, spawned from
    ``SeedSequence(seed)``, so the data do not depend on ``batch``; each batch of ``batch``
    data sets is imputed by one compiled program (an engine seed drawn per condition, method
    and batch). ``attrs`` of the summary hold realised missing rates, timings and settings.
    """
    root = np.random.SeedSequence(seed)
    frames: list = []
    rates: dict = {}
    timing: dict = {}
    for d, cseq in zip(designs, root.spawn(len(designs))):
        data_seq, engine_seq = cseq.spawn(2)
        rep_seqs = data_seq.spawn(reps)
        engine_rng = np.random.default_rng(engine_seq)
        g = np.repeat(np.arange(d.clusters), d.cluster_size)
        miss = []
        for start in range(0, reps, batch):
            stop = min(start + batch, reps)
            pairs = [generate_and_delete(d, np.random.default_rng(s)) for s in rep_seqs[start:stop]]
            full = np.stack([p[0] for p in pairs])
            inc = np.stack([p[1] for p in pairs])
            miss.append(np.isnan(inc[..., 1:]).mean(axis=1))
            for method in methods:
                t0 = time.perf_counter()
                eseed = None if method in ("complete", "listwise") else int(engine_rng.integers(1, 2**31 - 1))
                rec, psr, t_imp = method_records(method, full, inc, d, g, nimps=nimps, burn=burn,
                                                 thin=thin, chains=chains, seed=eseed)
                if t_imp is not None:
                    timing[(d.name, method, "impute")] = timing.get((d.name, method, "impute"), 0.0) + t_imp
                secs = time.perf_counter() - t0
                timing[(d.name, method, "total")] = timing.get((d.name, method, "total"), 0.0) + secs
                frames.append(_frame(rec, d.name, method, start, psr))
                if log:
                    extra = f", max last-window PSR {np.nanmax(psr):.3f}" if psr is not None else ""
                    log(f"{d.name}: {method} reps {start + 1}-{stop} in {secs:.1f} s{extra}")
        m = np.concatenate(miss)
        rates[d.name] = dict(zip(("y", "x", "w"), m.mean(axis=0).round(4).tolist()))
    reps_df = pd.concat(frames, ignore_index=True)
    summary = summarise(reps_df, designs)
    summary.attrs.update(missing_rates=rates, timing={" / ".join(k): v for k, v in timing.items()},
                         settings={"reps": reps, "nimps": nimps, "burn": burn, "thin": thin,
                                   "chains": chains, "seed": seed, "batch": batch,
                                   "designs": [asdict(d) for d in designs]})
    return summary, reps_df


def summarise(reps_df: pd.DataFrame, designs) -> pd.DataFrame:
    """Per condition, method and parameter: truth, mean, bias, relative bias %, MC SE, RMSE,
    coverage (fixed effects), CI width, SE / SD (mean standard error over the SD of the
    estimates: below 1, intervals too narrow), FMI, PSR, share of converged fits, and the mean paired
    difference from the complete-data estimate of the same replication with its MC SE."""
    by_name = {d.name: d for d in designs}
    complete = reps_df[reps_df["method"] == "complete"].set_index(["condition", "parameter", "rep"])["estimate"]
    rows = []
    for (cond, method, par), g in reps_df.groupby(["condition", "method", "parameter"], sort=False):
        truth = by_name[cond].truth()[par]
        est = g["estimate"].to_numpy()
        r = len(est)
        bias = est.mean() - truth
        has_ci = np.isfinite(g["lower"].to_numpy()).all()
        cover = float(((g["lower"] <= truth) & (truth <= g["upper"])).mean()) if has_ci else np.nan
        diff = diff_se = np.nan
        if len(complete):
            idx = pd.MultiIndex.from_arrays([np.full(r, cond, dtype=object), np.full(r, par, dtype=object),
                                             g["rep"].to_numpy()])
            ref = complete.reindex(idx).to_numpy()
            if np.isfinite(ref).all():
                dd = est - ref
                diff, diff_se = dd.mean(), dd.std(ddof=1) / np.sqrt(r)
        psr = g["psr"].to_numpy()
        rows.append({
            "condition": cond, "method": method, "parameter": par, "reps": r, "true": truth,
            "mean": est.mean(), "bias": bias,
            "rel_bias_pct": 100.0 * bias / truth if truth else np.nan,
            "mc_se": est.std(ddof=1) / np.sqrt(r), "rmse": np.sqrt(np.mean((est - truth) ** 2)),
            "coverage": cover,
            "coverage_mc_se": np.sqrt(cover * (1 - cover) / r) if has_ci else np.nan,
            "ci_width": float((g["upper"] - g["lower"]).mean()) if has_ci else np.nan,
            # calibration of the standard errors: mean SE over the SD of the estimates
            "se_ratio": float(g["se"].mean() / est.std(ddof=1)) if has_ci else np.nan,
            "fmi": g["fmi"].mean() if np.isfinite(g["fmi"]).any() else np.nan,
            "max_psr": np.nanmax(psr) if np.isfinite(psr).any() else np.nan,
            "converged": g["converged"].mean(),
            "diff_complete": diff, "diff_mc_se": diff_se,
        })
    out = pd.DataFrame(rows)
    om = {m: i for i, m in enumerate(METHODS)}
    op = {p: i for i, p in enumerate(PARAMETERS)}
    oc = {d.name: i for i, d in enumerate(designs)}
    out = out.assign(_c=out["condition"].map(oc), _p=out["parameter"].map(op), _m=out["method"].map(om))
    return out.sort_values(["_c", "_p", "_m"]).drop(columns=["_c", "_p", "_m"]).reset_index(drop=True)


# headers and number formats of the summary's columns, for the markdown tables
COLUMN_HEADS = {"condition": "condition", "parameter": "parameter", "method": "method", "reps": "reps",
                "true": "true", "mean": "mean", "rel_bias_pct": "rel. bias %", "mc_se": "MC SE",
                "rmse": "RMSE", "coverage": "coverage", "ci_width": "CI width", "se_ratio": "SE / SD",
                "fmi": "FMI", "max_psr": "max PSR", "diff_complete": "diff. vs complete",
                "diff_mc_se": "its MC SE", "seconds_per_rep": "s / rep"}
COLUMN_FORMATS = {"true": "{:.3f}", "mean": "{:.4f}", "rel_bias_pct": "{:+.1f}", "mc_se": "{:.4f}",
                  "rmse": "{:.4f}", "coverage": "{:.3f}", "ci_width": "{:.4f}", "se_ratio": "{:.3f}",
                  "fmi": "{:.3f}", "max_psr": "{:.3f}", "diff_complete": "{:+.4f}", "diff_mc_se": "{:.4f}",
                  "seconds_per_rep": "{:.3f}", "reps": "{:.0f}"}


def to_markdown(summary: pd.DataFrame, cols=("condition", "parameter", "method", "true", "mean",
                                             "rel_bias_pct", "mc_se", "rmse", "coverage", "se_ratio",
                                             "fmi", "max_psr", "diff_complete", "diff_mc_se")) -> str:
    return markdown_table(summary, list(cols), [COLUMN_HEADS[c] for c in cols], COLUMN_FORMATS)


def run_or_render(args, designs, methods, command: str, log=print):
    """The study scripts' common main part: run the study with the parsed `args` (and save the
    replications when `args.save_reps` is set), or re-summarise saved ones (`args.render`).
    Returns (summary, settings, missing rates, timing, runtime seconds, command)."""
    import json
    t0 = time.perf_counter()
    if args.render:
        reps_df = pd.read_csv(args.render)
        meta = json.loads(args.render.with_suffix(".json").read_text())
        return (summarise(reps_df, designs), meta["settings"], meta["missing_rates"], meta["timing"],
                meta["runtime"], meta.get("command", command))
    summary, reps_df = run_study(designs, reps=args.reps, nimps=args.nimps, burn=args.burn,
                                 thin=args.thin, chains=args.chains, seed=args.seed,
                                 batch=args.batch, methods=methods, log=log)
    settings, rates, timing = (summary.attrs["settings"], summary.attrs["missing_rates"],
                               summary.attrs["timing"])
    runtime = time.perf_counter() - t0
    if args.save_reps:
        reps_df.to_csv(args.save_reps, index=False)
        args.save_reps.with_suffix(".json").write_text(json.dumps(
            {"settings": settings, "missing_rates": rates, "timing": timing, "runtime": runtime,
             "command": command}, indent=1))
    return summary, settings, rates, timing, runtime, command


def page_tail(summary, rates: dict, timing: dict, command: str, runtime: float) -> str:
    """The end of a study's docs page: realised missing rates, the results table, the command
    that reruns it, and where the time went."""
    import os
    import platform

    import jax
    rate_rows = "\n".join(f"| {c} | {m['y']:.3f} | {m['x']:.3f} | {m['w']:.3f} |" for c, m in rates.items())
    time_rows = "\n".join(f"| {k} | {v:.0f} s |" for k, v in timing.items())
    return f"""Realised missing rates:

| condition | y | x | w |
|---|---|---|---|
{rate_rows}

## Results

{to_markdown(summary)}

## Rerun

    {command}

Runtime {runtime / 60:.1f} min on {platform.machine()} ({os.cpu_count()} cores), jax {jax.__version__};
time per method:

| condition / method / part | seconds |
|---|---|
{time_rows}
"""


def study_args(argv, description: str, doc, *, reps: int, batch: int, seed: int, quick_help: str):
    """The study scripts' command line: --reps/--burn/--nimps default to the full study (reps,
    3000, 20) or, with --quick, to a smoke run (20, 1000, 10); the page `doc` is written unless
    --quick (or --out elsewhere)."""
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--reps", type=int, default=None, help=f"replications per condition (default {reps})")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--burn", type=int, default=None, help="burn-in sweeps per chain (default 3000)")
    p.add_argument("--thin", type=int, default=100)
    p.add_argument("--nimps", type=int, default=None, help="imputations (default 20)")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--batch", type=int, default=batch, help="data sets per compiled program")
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--save-reps", type=Path, default=None)
    p.add_argument("--render", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    for k, (q, f) in {"reps": (20, reps), "burn": (1000, 3000), "nimps": (10, 20)}.items():
        if getattr(a, k) is None:
            setattr(a, k, q if a.quick else f)
    if a.out is None and not a.quick:
        a.out = doc
    return a
