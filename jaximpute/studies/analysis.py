r"""The simulation studies' analyses: how every data set of a population is analysed and the
imputed ones pooled, the per-replication records, and their summary.

Each population (:mod:`jaximpute.studies.populations`) has its analysis (``analysis_of``):
``direct`` analyses a batch of complete or listwise-deleted data sets, ``pooled`` the NIMPS
imputed copies of every data set of a batch and pools them; both run inside the batch's device
program (:mod:`jaximpute.studies.program`), and ``records_direct`` / ``records_pooled`` turn
what comes back into per-replication records (estimate, SE, 95% t interval, FMI) on the host.

Random slope
------------
Each data set: REML fit of ``y ~ x + w + x:w + (x | cluster)`` (``+ (1 | unit)`` in a
three-level design; ``jaximpute.lmm``'s fitter, which matches lme4 to 1e-4). Fixed effects
pooled by Rubin's rules with Barnard & Rubin's df, complete-data df J - 2 (the level-2 df that
governs w, x:w and the random slope's mean); the intervals of the complete-data and listwise
analyses use the same t reference. Variance components are pooled by their mean over
imputations (as mitml's testEstimates does). Listwise deletion fits the rows with y, x and w all
observed.

Random intercept
----------------
Each data set (``analyse``, vectorised over any leading axes):

- Within-cluster slope: OLS of (y_ij - ybar_j) on (x_ij - xbar_j) through the origin (the fixed-
  effects / cluster-mean-centred regression), SE from the residual variance with
  df = N - J - 1. Since x_ij - xbar_j = w_ij - wbar_j and y_ij - ybar_j = bW (w_ij - wbar_j) +
  (e_ij - ebar_j), the estimator is exactly unbiased for **bW** with an exact t reference.
- Between-cluster slope: OLS of ybar_j on xbar_j (J points, with intercept), df = J - 2. The
  pairs (xbar_j, ybar_j) are i.i.d. bivariate normal, so E[ybar | xbar] is linear and the OLS slope
  is exactly unbiased (in finite J, not only as J -> infinity) for the population regression
  slope of ybar_j on xbar_j:

      Cov(ybar_j, xbar_j) = bB icc + bW (1 - icc)/n,   Var(xbar_j) = icc + (1 - icc)/n,

      beta_between = (bB icc + bW (1 - icc)/n) / (icc + (1 - icc)/n)

  (0.9167 for icc = 0.2, 0.9762 for icc = 0.5 with n = 20). It is not bB: observed cluster means
  carry sampling error (the contextual-effect attenuation of Luedtke et al. 2008); the estimand is
  the probability limit of this estimator, which is what unbiased imputation must reproduce.
- ICC of y: one-way ANOVA estimator, s2_b = (MSB - MSW)/n0, ICC = s2_b / (s2_b + MSW) with
  n0 = (N - sum n_j^2 / N)/(J - 1) (= n when balanced); estimand: the true ICC ``icc``. (A ratio
  estimator, so it has a small finite-sample bias of its own, visible in the complete-data row.)
  It is not truncated at 0.

Listwise deletion analyses the rows where both x and y are observed (cluster sizes then vary;
clusters with no complete row are dropped), with the same formulas and the df they imply.
Pooling: slopes by Rubin's rules with Barnard & Rubin's df (df_com as above); the ICC, a variance
component, by its mean over imputations (as mitml). Coverage and CI width use the pooled t
intervals (listwise and complete data: the complete-data t intervals).

References: Luedtke, O., Marsh, H. W., Robitzsch, A., et al. (2008). The multilevel latent
covariate model. *Psychological Methods*, 13, 203-229. Enders, C. K., Mistler, S. A., & Keller,
B. T. (2016). Multilevel multiple imputation: a review and evaluation of joint modeling and
chained equations imputation. *Psychological Methods*, 21, 222-240.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy import stats

from ..pool import rules
from .populations import Design, RandomIntercept, RandomSlope

FIXED = ("(Intercept)", "x", "w", "x:w")
VARIANCES = ("var(u0)", "var(u1)", "cov(u0,u1)", "residual")
VARIANCE3 = "var(v)"              # three-level designs: the level-3 intercept variance
FIT_OUTPUTS = ("beta", "vcov", "psi", "sigma2", "converged", "singular", "psi3")


def t_interval(est, se, df, level=0.95):
    q = stats.t.ppf(0.5 + level / 2.0, df)
    return est - q * se, est + q * se


# ------------------------------------------------------------------------------ random slope

def design_arrays(data, xp=np):
    """y (..., N), X (..., N, 4) = [1, x, w, x w], Z (..., N, 2) = [1, x] from (..., N, 4);
    `xp` numpy, or jax.numpy inside a device program."""
    y, x, w = data[..., 1], data[..., 2], data[..., 3]
    one = xp.ones_like(x)
    return y, xp.stack([one, x, w, x * w], -1), xp.stack([one, x], -1)


def variances(fit, xp=np):
    """The variance components of VARIANCES (and VARIANCE3 for three-level fits) from fits'
    psi, sigma2 (and psi3): (M, 4) or (M, 5)."""
    psi = fit["psi"]
    parts = [psi[:, 0, 0], psi[:, 1, 1], psi[:, 0, 1], fit["sigma2"]]
    return xp.stack(parts + ([fit["psi3"]] if "psi3" in fit else []), -1)


def variance_names(count: int) -> tuple:
    """The names of the columns of `variances`."""
    return VARIANCES + ((VARIANCE3,) if count > len(VARIANCES) else ())


def reml_fits(data, d: RandomSlope, weight=None):
    """REML fits of y ~ x + w + x:w + (x | cluster) (+ (1 | unit) in a three-level design) to
    (M, N, 4) float64 data sets, on device (``lmm.batched_fitter``, the vmapped fitter, traced
    into the calling program)."""
    from ..lmm import batched_fitter, start_theta

    y, xs, zs = design_arrays(data, jnp)
    g = jnp.asarray(np.repeat(np.arange(d.clusters), d.cluster_size))
    theta0 = jnp.asarray(start_theta(2, bool(d.units)))      # lme4's start: Lambda~ = I
    unit = jnp.asarray(d.unit_of_cluster, jnp.int32) if d.units else None
    fitter = batched_fitter(2, True, 100, d.clusters, weight is not None, d.units)
    return fitter(y, xs, zs, g, weight, theta0, unit)


def pooled_records(r: dict, converged, variances) -> dict:
    """Per-replication records from pooled fixed effects (`r`: Rubin's estimate, std_error, df
    and fmi, each (reps, 4)), whether every imputation's fit converged (reps,), and the variance
    components' means over imputations (reps, 4 or 5)."""
    lo, hi = t_interval(r["estimate"], r["std_error"], r["df"])
    out = {p: {"estimate": r["estimate"][:, k], "se": r["std_error"][:, k], "lower": lo[:, k],
               "upper": hi[:, k], "fmi": r["fmi"][:, k], "converged": converged}
           for k, p in enumerate(FIXED)}
    nan = np.full(len(converged), np.nan)
    for k, p in enumerate(variance_names(variances.shape[1])):
        out[p] = {"estimate": variances[:, k], "se": nan, "lower": nan, "upper": nan, "fmi": nan,
                  "converged": converged}
    return out


class SlopeAnalysis:
    """The random slope's analysis (module docstring)."""

    parameters = FIXED + VARIANCES + (VARIANCE3,)
    intervals = "fixed effects"        # the parameters with intervals

    @staticmethod
    def truth(d: RandomSlope) -> dict:
        """The estimands: the population values (the analysis model is the population model)."""
        out = dict(zip(FIXED, d.b))
        out.update({"var(u0)": d.tau00, "var(u1)": d.tau11, "cov(u0,u1)": d.tau01, "residual": d.s2})
        if d.units:
            out[VARIANCE3] = d.tau3
        return out

    @staticmethod
    def text(designs) -> str:
        unit = (" (+ (1 | unit) in three-level conditions)" if any(d.units for d in designs) else "")
        return (f"analysis `y ~ x + w + x:w + (x | cluster)`{unit} by REML, pooled by Rubin's rules "
                "(df.com = J - 2)")

    @staticmethod
    def direct(d: RandomSlope, method: str, full, inc) -> dict:
        """Fits of the complete data sets, or of the listwise-deleted ones: (B, N, 4) float64
        -> fit arrays (B, ...); on device."""
        if method == "complete":
            fit = reml_fits(full, d)
        else:
            keep = ~jnp.isnan(inc[..., 1:]).any(axis=-1)
            fit = reml_fits(jnp.nan_to_num(inc), d, weight=keep.astype(jnp.float64))
        return {k: fit[k] for k in FIT_OUTPUTS if k in fit}

    @staticmethod
    def pooled(d: RandomSlope, imputed) -> dict:
        """Fits of (B, M, N, 4) imputed data sets pooled per replication: Rubin's estimate,
        std_error, df and fmi (B, 4), whether all M fits converged (B,), the variance
        components' means (B, 4 or 5); on device."""
        b, nimps = imputed.shape[:2]
        fit = reml_fits(imputed.reshape((b * nimps,) + imputed.shape[2:]), d)
        est = fit["beta"].reshape(b, nimps, -1)
        var = jnp.diagonal(fit["vcov"], axis1=-2, axis2=-1).reshape(b, nimps, -1)
        pooled = rules(est, var, d.clusters - 2.0, jnp)
        return {"estimate": pooled["estimate"], "std_error": pooled["std_error"],
                "df": pooled["df"], "fmi": pooled["fmi"],
                "converged": fit["converged"].reshape(b, nimps).all(axis=1),
                "variances": variances(fit, jnp).reshape(b, nimps, -1).mean(axis=1)}

    @staticmethod
    def records_direct(fit, d: RandomSlope) -> dict:
        """Per-replication records of one unimputed analysis per replication."""
        est, se = fit["beta"], np.sqrt(np.diagonal(fit["vcov"], axis1=-2, axis2=-1))
        df = np.full_like(est, d.clusters - 2.0)
        lo, hi = t_interval(est, se, df)
        out = {p: {"estimate": est[:, k], "se": se[:, k], "lower": lo[:, k], "upper": hi[:, k],
                   "fmi": np.full(len(est), np.nan), "converged": fit["converged"]}
               for k, p in enumerate(FIXED)}
        var = variances(fit)
        nan = np.full(len(est), np.nan)
        for k, p in enumerate(variance_names(var.shape[1])):
            out[p] = {"estimate": var[:, k], "se": nan, "lower": nan, "upper": nan, "fmi": nan,
                      "converged": out[FIXED[0]]["converged"]}
        return out

    @staticmethod
    def records_pooled(out: dict, d: RandomSlope) -> dict:
        """Per-replication records from what ``pooled`` returned."""
        return pooled_records(out, out["converged"], out["variances"])


# ------------------------------------------------------------------------------ random intercept

INTERCEPT_PARAMETERS = ("within slope", "between slope", "ICC(y)")
SLOPES = (("within slope", "within"), ("between slope", "between"))


def analyse(y, x, weight=None, xp=np) -> dict:
    """Within slope, between slope (with SEs and df) and ICC(y) of data sets (..., J, n)
    (module docstring); `xp` numpy, or jax.numpy inside a device program.

    ``weight`` (..., J, n) in {0, 1} selects rows (listwise deletion); clusters with no selected
    row are dropped. Returns a dict of arrays with the leading shape: ``within``,
    ``within_se``, ``within_df``, ``between``, ``between_se``, ``between_df``, ``icc``.
    """
    y = xp.asarray(y, dtype=xp.float64)
    x = xp.asarray(x, dtype=xp.float64)
    w = xp.ones_like(y) if weight is None else xp.asarray(weight, dtype=xp.float64)
    nj = w.sum(axis=-1)                                        # (..., J)
    has = (nj > 0).astype(xp.float64)
    safe = xp.where(nj > 0, nj, 1.0)
    xb = (w * x).sum(axis=-1) / safe
    yb = (w * y).sum(axis=-1) / safe
    n_tot = nj.sum(axis=-1)
    j_eff = has.sum(axis=-1)

    # within: cluster-mean-centred OLS through the origin
    xc = (x - xb[..., None]) * w
    yc = (y - yb[..., None]) * w
    sxx = (xc * xc).sum(axis=(-2, -1))
    b_w = (xc * yc).sum(axis=(-2, -1)) / sxx
    res = yc - b_w[..., None, None] * xc
    df_w = n_tot - j_eff - 1.0
    se_w = xp.sqrt((res * res).sum(axis=(-2, -1)) / df_w / sxx)

    # between: OLS of cluster means with intercept, J_eff points
    mx = (has * xb).sum(axis=-1) / j_eff
    my = (has * yb).sum(axis=-1) / j_eff
    dx = (xb - mx[..., None]) * has
    dy = (yb - my[..., None]) * has
    bxx = (dx * dx).sum(axis=-1)
    b_b = (dx * dy).sum(axis=-1) / bxx
    rb = dy - b_b[..., None] * dx
    df_b = j_eff - 2.0
    se_b = xp.sqrt((rb * rb).sum(axis=-1) / df_b / bxx)

    # ICC of y: one-way ANOVA estimator (unbalanced form)
    grand = (w * y).sum(axis=(-2, -1)) / n_tot
    ssb = (nj * (yb - grand[..., None]) ** 2).sum(axis=-1)
    ssw = (yc * yc).sum(axis=(-2, -1))
    msb = ssb / (j_eff - 1.0)
    msw = ssw / (n_tot - j_eff)
    n0 = (n_tot - (nj * nj).sum(axis=-1) / n_tot) / (j_eff - 1.0)
    s2b = (msb - msw) / n0
    icc = s2b / (s2b + msw)
    return {"within": b_w, "within_se": se_w, "within_df": df_w,
            "between": b_b, "between_se": se_b, "between_df": df_b, "icc": icc}


def complete_data_bias(design: RandomIntercept, reps: int = 40_000, seed: int = 1,
                       chunk: int = 5_000) -> dict:
    """Bias of the complete-data estimators themselves (no missing data), by Monte Carlo over
    `reps` data sets drawn by the population's generator (condition 0 of `seed`).

    Returns parameter -> (bias, MC SE). The slopes are exactly unbiased (module docstring); the
    ANOVA ICC is a ratio estimator and is slightly biased downwards in finite samples. Used to
    tell an estimator's own bias from one that imputation adds.
    """
    from .populations import generate_batch

    d = design
    parts: dict[str, list] = {"within": [], "between": [], "icc": []}
    for start in range(0, reps, chunk):
        full, _ = generate_batch(seed, 0, np.arange(start, min(start + chunk, reps)), d)
        grid = full.reshape(len(full), d.clusters, d.cluster_size, -1)
        res = analyse(grid[..., 1], grid[..., 2])
        for k in parts:
            parts[k].append(res[k])
    truth = InterceptAnalysis.truth(d)
    out = {}
    for k, par in (("within", "within slope"), ("between", "between slope"), ("icc", "ICC(y)")):
        v = np.concatenate(parts[k])
        out[par] = (float(v.mean() - truth[par]), float(v.std(ddof=1) / np.sqrt(len(v))))
    return out


def _intercept_records(est, se, df, fmi, icc) -> dict:
    """Per-replication records of the two slopes (columns of `est`, `se`, `df`, `fmi`, each
    (reps, 2)) and of the ICC (reps,), which has no interval."""
    lo, hi = t_interval(est, se, df)
    out = {p: {"estimate": est[:, k], "se": se[:, k], "df": df[:, k], "lower": lo[:, k],
               "upper": hi[:, k], "fmi": fmi[:, k]} for k, (p, _) in enumerate(SLOPES)}
    nan = np.full_like(icc, np.nan)
    out["ICC(y)"] = {"estimate": icc, "se": nan, "df": nan, "lower": nan, "upper": nan, "fmi": nan}
    return out


class InterceptAnalysis:
    """The random intercept's analysis (module docstring)."""

    parameters = INTERCEPT_PARAMETERS
    intervals = "slopes"               # the parameters with intervals

    @staticmethod
    def truth(d: RandomIntercept) -> dict:
        """The estimands (module docstring): bW, the slope of ybar_j on xbar_j, and icc."""
        return {"within slope": d.true_within, "between slope": d.true_between, "ICC(y)": d.icc}

    @staticmethod
    def text(designs) -> str:
        return ("analysis: within-cluster slope (OLS of cluster-mean-centred y on x, df.com = "
                "N - J - 1) and between-cluster slope (OLS of the cluster means, df.com = J - 2), "
                "pooled by Rubin's rules, and the ANOVA ICC of y, pooled by its mean")

    @staticmethod
    def _grid(d: RandomIntercept, data, col: int):
        """Column `col` of (..., N, 4) data sets as (..., J, n): rows are cluster-major."""
        return data[..., col].reshape(data.shape[:-2] + (d.clusters, d.cluster_size))

    @staticmethod
    def direct(d: RandomIntercept, method: str, full, inc) -> dict:
        """``analyse`` of the complete data sets, or of the rows with y and x observed:
        (B, N, 4) float64 -> arrays (B,); on device."""
        g = InterceptAnalysis._grid
        if method == "complete":
            return analyse(g(d, full, 1), g(d, full, 2), xp=jnp)
        keep = (~jnp.isnan(inc[..., 1:]).any(axis=-1)).astype(jnp.float64)
        data = jnp.nan_to_num(inc)
        return analyse(g(d, data, 1), g(d, data, 2), keep.reshape(keep.shape[:-1] + (d.clusters, d.cluster_size)),
                       xp=jnp)

    @staticmethod
    def pooled(d: RandomIntercept, imputed) -> dict:
        """``analyse`` of (B, M, N, 4) imputed data sets, pooled per replication: the slopes by
        Rubin's rules (estimate, std_error, df, fmi, each (B, 2)), the ICC by its mean (B,);
        on device."""
        g = InterceptAnalysis._grid
        res = analyse(g(d, imputed, 1), g(d, imputed, 2), xp=jnp)          # (B, M) each
        q = jnp.stack([res[key] for _, key in SLOPES], -1)
        u = jnp.stack([res[key + "_se"] ** 2 for _, key in SLOPES], -1)
        pooled = rules(q, u, [float(d.df_com[p]) for p, _ in SLOPES], jnp)
        return {"estimate": pooled["estimate"], "std_error": pooled["std_error"],
                "df": pooled["df"], "fmi": pooled["fmi"], "icc": res["icc"].mean(axis=-1)}

    @staticmethod
    def records_direct(out: dict, d: RandomIntercept) -> dict:
        cols = lambda suffix: np.stack([out[key + suffix] for _, key in SLOPES], -1)  # noqa: E731
        est = cols("")
        return _intercept_records(est, cols("_se"), cols("_df"), np.full_like(est, np.nan), out["icc"])

    @staticmethod
    def records_pooled(out: dict, d: RandomIntercept) -> dict:
        return _intercept_records(out["estimate"], out["std_error"], out["df"], out["fmi"], out["icc"])


def analysis_of(d: Design):
    """The analysis of a design's population."""
    return InterceptAnalysis if isinstance(d, RandomIntercept) else SlopeAnalysis


def truth_of(d: Design) -> dict:
    """The true values of the parameters the design's analysis estimates."""
    return analysis_of(d).truth(d)


# ------------------------------------------------------------------------------ records

def records_frame(records: dict, method: str, rep0: int, psr=None, **condition) -> pd.DataFrame:
    """Per-replication records (parameter -> column arrays) as one long frame, with the
    condition's columns (e.g. condition="J=50, n=20") first, then method, parameter and
    replication number."""
    frames = []
    for p, cols in records.items():
        f = pd.DataFrame(cols)
        f.insert(0, "rep", np.arange(rep0, rep0 + len(f)))
        f.insert(0, "parameter", p)
        f.insert(0, "method", method)
        for i, (name, value) in enumerate(condition.items()):
            f.insert(i, name, value)
        f["psr"] = np.nan if psr is None else psr
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def summarise(reps_df: pd.DataFrame, conditions) -> pd.DataFrame:
    """Per condition, method and parameter: truth, mean, bias, relative bias %, MC SE, RMSE,
    coverage (of the parameters with intervals), CI width, SE / SD (mean standard error over the
    SD of the estimates: below 1, intervals too narrow), FMI, PSR, share of converged fits (where
    the analysis is fitted iteratively), and the mean paired difference from the complete-data
    estimate of the same replication with its MC SE: the part of the bias that the missing data
    and their handling add, free of the estimator's own finite-sample bias and of most of the
    data-sampling noise. `conditions`: the study's (name, design) pairs."""
    by_name = {c.name: c.design for c in conditions}
    complete = reps_df[reps_df["method"] == "complete"].set_index(["condition", "parameter", "rep"])["estimate"]
    rows = []
    for (cond, method, par), g in reps_df.groupby(["condition", "method", "parameter"], sort=False):
        truth = truth_of(by_name[cond])[par]
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
        row = {
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
        }
        if "converged" in g:
            row["converged"] = g["converged"].mean()
        rows.append({**row, "diff_complete": diff, "diff_mc_se": diff_se})
    out = pd.DataFrame(rows)
    design = conditions[0].design
    om = {m: i for i, m in enumerate(design.METHODS)}
    op = {p: i for i, p in enumerate(analysis_of(design).parameters)}
    oc = {c.name: i for i, c in enumerate(conditions)}
    out = out.assign(_c=out["condition"].map(oc), _p=out["parameter"].map(op), _m=out["method"].map(om))
    return out.sort_values(["_c", "_p", "_m"]).drop(columns=["_c", "_p", "_m"]).reset_index(drop=True)
