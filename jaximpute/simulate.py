r"""Monte Carlo study: multilevel vs single-level imputation of random-intercept data.

The seed's slides warn that single-level imputation "will introduce substantial bias under any
mechanism" when the analysis is multilevel. This module makes that claim checkable: it generates
two-level data, deletes values at random given a complete auxiliary variable (MAR), imputes them
with jaximpute's two-level joint model (``cluster ~ y x z``) and with the single-level model that
ignores clusters (``y x z``), analyses every imputed data set, pools by Rubin's rules
(:mod:`jaximpute.pool`), and compares with listwise deletion and the complete data.

Population model
----------------
J clusters of n rows (default J = 50, n = 20); ``icc`` is the intraclass correlation of x, of y
and of z (the study uses 0.2 and 0.5). For cluster j and row i:

.. code-block:: text

    x_ij = a_j + w_ij                     a_j ~ N(0, icc),            w_ij ~ N(0, 1 - icc)
    y_ij = bW w_ij + bB a_j + c_j + e_ij  c_j ~ N(0, kappa icc),      e_ij ~ N(0, s_e2)
    z_ij = g y_ij + d_j + f_ij            d_j ~ N(0, s_z2 icc),       f_ij ~ N(0, s_z2 (1 - icc))

with bW = 0.5 (within-cluster slope), bB = 1.0 (between-cluster slope of y on the latent cluster
mean a_j of x), kappa = 0.25, g = 0.6, s_z2 = 1 - g^2 (bB^2 + kappa) = 0.55 and

    s_e2 = (1 - icc) (bB^2 + kappa - bW^2)   (= 1 - icc with the defaults).

Variance of y: between part bB^2 icc + kappa icc = (bB^2 + kappa) icc; within part
bW^2 (1 - icc) + s_e2 = (bB^2 + kappa)(1 - icc). So Var(y) = bB^2 + kappa = 1.25 and the ICC of y
is exactly ``icc``. (With bB = 1, Var(y) = 1 would force Var(c) = 0: y's cluster means would be an
exact function of x's latent means, a boundary case for the imputation model's random-intercept
variance; kappa > 0 keeps the population away from it.) Likewise Var(z) = g^2 (bB^2 + kappa) +
s_z2 = 1 and ICC(z) = icc; corr(y, z) = g sqrt(bB^2 + kappa) = 0.67. z has its own cluster
component d_j so that y's cluster mean is not an exact function of x's and z's (same reason).
The joint distribution of (x, y, z) is a two-level normal with free within- and between-cluster
covariance matrices, i.e. exactly the model ``cluster ~ y x z`` imputes under.

Missing data (MAR given the complete z)
---------------------------------------
P(y_ij missing) = logistic(alpha + gamma z_ij),  P(x_ij missing) = logistic(alpha - gamma z_ij),
independently, gamma = 1. Since z ~ N(0, 1), alpha is solved (Gauss-Hermite quadrature) so that
E[logistic(alpha + gamma z)] equals ``missing_rate`` (default 0.275) for both variables; the
realised rates are returned with the results. High z (hence high y) makes y missing and x
observed, low z the reverse, so complete cases are a selected sample.

Analysis of one data set (vectorised over any leading axes)
-----------------------------------------------------------
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

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .pool import rubin

__all__ = ["Design", "SimData", "generate", "ampute", "missing_intercept", "analyse",
           "complete_data_bias", "impute_and_analyse", "run_study", "summarise", "METHODS",
           "PARAMETERS", "to_markdown"]

METHODS = ("multilevel", "single-level", "listwise", "complete")
PARAMETERS = ("within slope", "between slope", "ICC(y)")
MODELS = {"multilevel": "cluster ~ y x z", "single-level": "y x z"}
NAMES = ("cluster", "y", "x", "z")


@dataclass(frozen=True)
class Design:
    """One condition of the study (see the module docstring for the formulas)."""

    icc: float = 0.5
    clusters: int = 50            # J
    cluster_size: int = 20        # n
    b_within: float = 0.5         # bW
    b_between: float = 1.0        # bB
    kappa: float = 0.25           # Var(c_j) / icc
    z_on_y: float = 0.6           # g
    gamma: float = 1.0            # log-odds of missingness per unit of z
    missing_rate: float = 0.275   # expected share missing, for y and for x

    @property
    def rows(self) -> int:
        return self.clusters * self.cluster_size

    @property
    def var_y(self) -> float:
        return self.b_between ** 2 + self.kappa

    @property
    def var_c(self) -> float:
        return self.kappa * self.icc

    @property
    def var_e(self) -> float:
        return (1.0 - self.icc) * (self.var_y - self.b_within ** 2)

    @property
    def var_z_noise(self) -> float:
        """s_z2: variance of z - g y, so that Var(z) = 1."""
        s = 1.0 - self.z_on_y ** 2 * self.var_y
        if s <= 0:
            raise ValueError("z_on_y too large: Var(z) would exceed 1")
        return s

    @property
    def true_within(self) -> float:
        return self.b_within

    @property
    def true_between(self) -> float:
        """Regression slope of ybar_j on xbar_j (exact estimand of the cluster-means OLS)."""
        icc, n = self.icc, self.cluster_size
        return (self.b_between * icc + self.b_within * (1 - icc) / n) / (icc + (1 - icc) / n)

    @property
    def true_icc(self) -> float:
        return self.icc

    def truth(self) -> dict:
        return {"within slope": self.true_within, "between slope": self.true_between,
                "ICC(y)": self.true_icc}

    @property
    def df_com(self) -> dict:
        return {"within slope": self.rows - self.clusters - 1, "between slope": self.clusters - 2}


@dataclass
class SimData:
    """R replications, rows cluster-major: arrays (R, J, n); cluster ids 1..J."""

    y: np.ndarray
    x: np.ndarray
    z: np.ndarray
    miss_y: np.ndarray | None = None
    miss_x: np.ndarray | None = None

    @property
    def reps(self) -> int:
        return self.y.shape[0]

    def stacked(self, with_missing: bool = True) -> np.ndarray:
        """(R, N, 4) array with columns cluster, y, x, z (np.nan where deleted)."""
        r, j, n = self.y.shape
        cl = np.broadcast_to(np.arange(1, j + 1, dtype=np.float64)[:, None], (j, n))
        y, x = self.y, self.x
        if with_missing and self.miss_y is not None:
            y = np.where(self.miss_y, np.nan, y)
            x = np.where(self.miss_x, np.nan, x)
        out = np.stack([np.broadcast_to(cl, (r, j, n)), y, x, self.z], axis=-1)
        return out.reshape(r, j * n, 4)


def generate(design: Design, reps: int, rng: np.random.Generator) -> SimData:
    """Draw ``reps`` complete data sets from the population model (module docstring)."""
    d = design
    j, n = d.clusters, d.cluster_size
    a = rng.normal(0.0, np.sqrt(d.icc), (reps, j, 1))
    w = rng.normal(0.0, np.sqrt(1.0 - d.icc), (reps, j, n))
    c = rng.normal(0.0, np.sqrt(d.var_c), (reps, j, 1))
    e = rng.normal(0.0, np.sqrt(d.var_e), (reps, j, n))
    dz = rng.normal(0.0, np.sqrt(d.var_z_noise * d.icc), (reps, j, 1))
    fz = rng.normal(0.0, np.sqrt(d.var_z_noise * (1.0 - d.icc)), (reps, j, n))
    x = a + w
    y = d.b_within * w + d.b_between * a + c + e
    z = d.z_on_y * y + dz + fz
    return SimData(y=y, x=x, z=z)


def missing_intercept(rate: float, gamma: float) -> float:
    """alpha with E[logistic(alpha + gamma Z)] = rate for Z ~ N(0, 1) (Gauss-Hermite, 80 nodes)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()

    def excess(alpha):
        return float(np.sum(weights / (1.0 + np.exp(-(alpha + gamma * nodes))))) - rate

    return float(optimize.brentq(excess, -20.0, 20.0, xtol=1e-12))


def ampute(data: SimData, design: Design, rng: np.random.Generator) -> SimData:
    """Delete y and x at random given z (MAR): see the module docstring."""
    alpha = missing_intercept(design.missing_rate, design.gamma)
    p_y = 1.0 / (1.0 + np.exp(-(alpha + design.gamma * data.z)))
    p_x = 1.0 / (1.0 + np.exp(-(alpha - design.gamma * data.z)))
    u = rng.random((2,) + data.z.shape)
    return replace(data, miss_y=u[0] < p_y, miss_x=u[1] < p_x)


# ------------------------------------------------------------------------------- analysis

def analyse(y, x, weight=None) -> dict:
    """Within slope, between slope (with SEs and df) and ICC(y) of data sets (..., J, n).

    ``weight`` (..., J, n) in {0, 1} selects rows (listwise deletion); clusters with no selected
    row are dropped. Returns a dict of arrays with the leading shape: ``within``,
    ``within_se``, ``within_df``, ``between``, ``between_se``, ``between_df``, ``icc``.
    """
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.ones_like(y) if weight is None else np.asarray(weight, dtype=np.float64)
    nj = w.sum(axis=-1)                                        # (..., J)
    has = (nj > 0).astype(np.float64)
    safe = np.where(nj > 0, nj, 1.0)
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
    se_w = np.sqrt((res * res).sum(axis=(-2, -1)) / df_w / sxx)

    # between: OLS of cluster means with intercept, J_eff points
    mx = (has * xb).sum(axis=-1) / j_eff
    my = (has * yb).sum(axis=-1) / j_eff
    dx = (xb - mx[..., None]) * has
    dy = (yb - my[..., None]) * has
    bxx = (dx * dx).sum(axis=-1)
    b_b = (dx * dy).sum(axis=-1) / bxx
    rb = dy - b_b[..., None] * dx
    df_b = j_eff - 2.0
    se_b = np.sqrt((rb * rb).sum(axis=-1) / df_b / bxx)

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


def complete_data_bias(design: Design, reps: int = 40_000, seed: int = 1,
                       chunk: int = 5_000) -> dict:
    """Bias of the complete-data estimators themselves (no missing data), by Monte Carlo.

    Returns parameter -> (bias, MC SE). The slopes are exactly unbiased (module docstring); the
    ANOVA ICC is a ratio estimator and is slightly biased downwards in finite samples. Used to
    tell an estimator's own bias from one that imputation adds.
    """
    rng = np.random.default_rng(seed)
    parts = {"within": [], "between": [], "icc": []}
    for start in range(0, reps, chunk):
        s = generate(design, min(chunk, reps - start), rng)
        res = analyse(s.y, s.x)
        for k in parts:
            parts[k].append(res[k])
    out = {}
    for k, par in (("within", "within slope"), ("between", "between slope"), ("icc", "ICC(y)")):
        v = np.concatenate(parts[k])
        out[par] = (float(v.mean() - design.truth()[par]), float(v.std(ddof=1) / np.sqrt(len(v))))
    return out


def _t_interval(est, se, df, level=0.95):
    q = stats.t.ppf(0.5 + level / 2.0, df)
    return est - q * se, est + q * se


def _records_direct(res: dict) -> dict:
    """Per-replication results of one (unimputed) analysis: parameter -> dict of arrays."""
    out = {}
    for p, key in (("within slope", "within"), ("between slope", "between")):
        est, se, df = res[key], res[key + "_se"], res[key + "_df"]
        lo, hi = _t_interval(est, se, df)
        out[p] = {"estimate": est, "se": se, "df": df, "lower": lo, "upper": hi,
                  "fmi": np.full_like(est, np.nan)}
    nan = np.full_like(res["icc"], np.nan)
    out["ICC(y)"] = {"estimate": res["icc"], "se": nan, "df": nan, "lower": nan, "upper": nan,
                     "fmi": nan}
    return out


def _records_pooled(res: dict, design: Design) -> dict:
    """Pool analyses of (R, M) imputed data sets: slopes by Rubin's rules, ICC by its mean."""
    out = {}
    dfc = design.df_com
    for p, key in (("within slope", "within"), ("between slope", "between")):
        r = rubin(res[key][..., None], (res[key + "_se"] ** 2)[..., None], df_com=dfc[p])
        est, se, df = r["estimate"][..., 0], r["std_error"][..., 0], r["df"][..., 0]
        lo, hi = _t_interval(est, se, df)
        out[p] = {"estimate": est, "se": se, "df": df, "lower": lo, "upper": hi,
                  "fmi": r["fmi"][..., 0]}
    icc = res["icc"].mean(axis=-1)
    nan = np.full_like(icc, np.nan)
    out["ICC(y)"] = {"estimate": icc, "se": nan, "df": nan, "lower": nan, "upper": nan,
                     "fmi": nan}
    return out


def impute_and_analyse(data: SimData, design: Design, method: str, *, nimps: int, burn: int,
                       thin: int, chains: int, seed: int):
    """Impute a batch with one model, analyse every imputation and pool.

    Returns (records, final-window PSR max per replication (R,), seconds).
    """
    from .api import impute_many   # imported here: JAX starts only when imputing

    arr = data.stacked()
    t0 = time.perf_counter()
    imputed, psr = impute_many(arr, list(NAMES), MODELS[method], nimps=nimps, burn=burn,
                               thin=thin, chains=chains, seed=seed)
    secs = time.perf_counter() - t0
    r, j, n = data.y.shape
    if np.isnan(imputed[..., 1:3]).any():
        raise RuntimeError(f"{method} imputation left missing values")
    yi = imputed[..., 1].reshape(r, nimps, j, n)
    xi = imputed[..., 2].reshape(r, nimps, j, n)
    res = analyse(yi, xi)
    psr_final = np.nanmax(np.asarray(psr)[:, -1, :], axis=-1)
    return _records_pooled(res, design), psr_final, secs


# ------------------------------------------------------------------------------- the study

def records_frame(records: dict, method: str, rep0: int, psr=None, **condition) -> pd.DataFrame:
    """Per-replication records (parameter -> column arrays) as one long frame, with the
    condition's columns (e.g. icc=0.2) first, then method, parameter and replication number."""
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


def _to_frame(records: dict, icc: float, method: str, rep0: int, psr=None) -> pd.DataFrame:
    return records_frame(records, method, rep0, psr, icc=icc)


def run_study(iccs=(0.2, 0.5), reps: int = 500, *, nimps: int = 20, burn: int = 500,
              thin: int = 100, chains: int = 2, seed: int = 20240611, batch: int = 250,
              methods=METHODS, design: Design | None = None, log=None):
    """Run the study; returns (summary DataFrame, per-replication DataFrame).

    For each ICC condition, ``reps`` replications are generated (replication r of condition k
    draws its data from its own generator, spawned from ``SeedSequence(seed)``, so the data do
    not depend on ``batch``), deleted (MAR), imputed in batches of ``batch`` data sets per
    compiled program (engine seed drawn per condition, method and batch; the imputations, unlike
    the data, depend on the batch size), analysed and pooled. ``design`` supplies the other
    design constants (its ``icc`` is replaced by each condition's). The summary's ``attrs`` hold
    the realised missing rates and the imputation times.
    """
    base = design or Design()
    root = np.random.SeedSequence(seed)
    cond_seqs = root.spawn(len(iccs))
    frames, miss_rates, timing = [], {}, {}
    for ci, icc in enumerate(iccs):
        d = replace(base, icc=float(icc))
        data_seq, engine_seq = cond_seqs[ci].spawn(2)
        rep_seqs = data_seq.spawn(reps)
        engine_rng = np.random.default_rng(engine_seq)
        my, mx, mboth = [], [], []
        for start in range(0, reps, batch):
            stop = min(start + batch, reps)
            parts = []
            for s in rep_seqs[start:stop]:
                g = np.random.default_rng(s)
                parts.append(ampute(generate(d, 1, g), d, g))
            data = SimData(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("y", "x", "z", "miss_y", "miss_x")))
            my.append(data.miss_y.mean(axis=(1, 2)))
            mx.append(data.miss_x.mean(axis=(1, 2)))
            mboth.append((data.miss_y | data.miss_x).mean(axis=(1, 2)))
            for method in methods:
                if method == "complete":
                    frames.append(_to_frame(_records_direct(analyse(data.y, data.x)), icc,
                                            method, start))
                elif method == "listwise":
                    keep = ~(data.miss_y | data.miss_x)
                    frames.append(_to_frame(_records_direct(analyse(data.y, data.x, keep)), icc,
                                            method, start))
                else:
                    eseed = int(engine_rng.integers(1, 2**31 - 1))
                    rec, psr, secs = impute_and_analyse(data, d, method, nimps=nimps, burn=burn,
                                                        thin=thin, chains=chains, seed=eseed)
                    frames.append(_to_frame(rec, icc, method, start, psr))
                    timing[(icc, method)] = timing.get((icc, method), 0.0) + secs
                    if log:
                        log(f"icc {icc}: {method} reps {start + 1}-{stop} imputed in {secs:.1f} s "
                            f"(max final-window PSR {np.nanmax(psr):.3f})")
        miss_rates[icc] = {"y": float(np.mean(np.concatenate(my))),
                           "x": float(np.mean(np.concatenate(mx))),
                           "x or y (incomplete rows)": float(np.mean(np.concatenate(mboth)))}
    reps_df = pd.concat(frames, ignore_index=True)
    summary = summarise(reps_df, base)
    summary.attrs["missing_rates"] = miss_rates
    summary.attrs["imputation_seconds"] = timing
    summary.attrs["settings"] = {"reps": reps, "nimps": nimps, "burn": burn, "thin": thin,
                                 "chains": chains, "seed": seed, "batch": batch,
                                 "design": asdict(base)}
    return summary, reps_df


def summarise(reps_df: pd.DataFrame, design: Design | None = None) -> pd.DataFrame:
    """Per condition, method and parameter: truth, mean, bias, relative bias %, MC SE of the bias
    (SD/sqrt(R)), RMSE, 95% coverage and its MC SE, mean CI width, mean FMI, max and share > 1.05
    of the final-window PSR (imputation methods).

    When the complete-data analysis is among the methods, also ``diff_complete``: the mean
    paired difference between a method's estimate and the complete-data estimate of the same
    replication, and ``diff_mc_se`` its Monte Carlo SE (SD of the differences / sqrt(R)). This
    is the part of the bias that the missing data and their handling add; it removes the
    estimator's own finite-sample bias (the ANOVA ICC's) and most of the data-sampling noise,
    so it is the sharper check of an imputation method.
    """
    base = design or Design()
    rows = []
    order_m = {m: i for i, m in enumerate(METHODS)}
    order_p = {p: i for i, p in enumerate(PARAMETERS)}
    complete = reps_df[reps_df["method"] == "complete"].set_index(["icc", "parameter", "rep"])[
        "estimate"]
    for (icc, method, par), g in reps_df.groupby(["icc", "method", "parameter"], sort=False):
        truth = replace(base, icc=float(icc)).truth()[par]
        est = g["estimate"].to_numpy()
        r = len(est)
        bias = est.mean() - truth
        has_ci = np.isfinite(g["lower"].to_numpy()).all()
        cover = ((g["lower"] <= truth) & (truth <= g["upper"])).mean() if has_ci else np.nan
        psr = g["psr"].to_numpy()
        diff = diff_se = np.nan
        if len(complete):
            ref = complete.reindex(pd.MultiIndex.from_arrays(
                [np.full(r, icc), np.full(r, par, dtype=object), g["rep"].to_numpy()])).to_numpy()
            if np.isfinite(ref).all():
                dd = est - ref
                diff, diff_se = dd.mean(), dd.std(ddof=1) / np.sqrt(r)
        rows.append({
            "icc": icc, "method": method, "parameter": par, "reps": r, "true": truth,
            "mean": est.mean(), "bias": bias, "rel_bias_pct": 100.0 * bias / truth,
            "mc_se": est.std(ddof=1) / np.sqrt(r),
            "rmse": np.sqrt(np.mean((est - truth) ** 2)),
            "coverage": cover,
            "coverage_mc_se": np.sqrt(cover * (1 - cover) / r) if has_ci else np.nan,
            "ci_width": (g["upper"] - g["lower"]).mean() if has_ci else np.nan,
            "fmi": g["fmi"].mean() if np.isfinite(g["fmi"]).any() else np.nan,
            "max_psr": np.nanmax(psr) if np.isfinite(psr).any() else np.nan,
            "share_psr_gt_1.05": np.mean(psr > 1.05) if np.isfinite(psr).any() else np.nan,
            "diff_complete": diff, "diff_mc_se": diff_se,
        })
    out = pd.DataFrame(rows)
    out["_m"] = out["method"].map(order_m)
    out["_p"] = out["parameter"].map(order_p)
    return out.sort_values(["icc", "_p", "_m"]).drop(columns=["_m", "_p"]).reset_index(drop=True)


def to_markdown(summary: pd.DataFrame) -> str:
    """The summary as a GitHub markdown table (no extra dependency)."""
    cols = ["icc", "parameter", "method", "true", "mean", "bias", "rel_bias_pct", "mc_se", "rmse",
            "coverage", "ci_width", "fmi", "max_psr", "diff_complete", "diff_mc_se"]
    head = ["ICC", "parameter", "method", "true", "mean", "bias", "rel. bias %", "MC SE",
            "RMSE", "coverage", "CI width", "FMI", "max PSR", "diff. vs complete", "its MC SE"]
    fmt = {"icc": "{:.1f}", "true": "{:.4f}", "mean": "{:.4f}", "bias": "{:+.4f}",
           "rel_bias_pct": "{:+.1f}", "mc_se": "{:.4f}", "rmse": "{:.4f}", "coverage": "{:.3f}",
           "ci_width": "{:.4f}", "fmi": "{:.3f}", "max_psr": "{:.3f}", "diff_complete": "{:+.4f}",
           "diff_mc_se": "{:.4f}"}
    keep = [i for i, c in enumerate(cols) if c in summary.columns]
    return markdown_table(summary, [cols[i] for i in keep], [head[i] for i in keep], fmt)


def markdown_table(summary: pd.DataFrame, cols, head, fmt) -> str:
    """Rows of a study summary as a markdown table: blank cells for missing values, and no
    paired difference on the complete-data rows (it is the reference)."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c in ("diff_complete", "diff_mc_se") and r["method"] == "complete":
                cells.append("")
            elif isinstance(v, str):
                cells.append(v)
            elif v is None or (isinstance(v, float) and not np.isfinite(v)):
                cells.append("")
            else:
                cells.append(fmt[c].format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
