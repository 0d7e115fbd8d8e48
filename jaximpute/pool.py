"""Rubin's rules for pooling estimates from multiply imputed data sets.

This follows ``mitml::testEstimates`` (mitml 0.4; see docs/design/pooling.md) exactly. For m
imputations with estimates Q_l (k parameters) and sampling (co)variances U_l:

    Qbar = mean_l Q_l                    W = mean_l U_l
    B    = sum_l (Q_l - Qbar)(Q_l - Qbar)' / (m - 1)
    T    = W + (1 + 1/m) B               SE = sqrt(diag T),   t = Qbar / SE
    r    = (1 + 1/m) diag(B) / diag(W)                         (relative increase in variance, RIV)
    v_m  = (m - 1) (1 + 1/r)^2                                 (Rubin 1987, eq. 3.1.6)

and, when a complete-data degrees of freedom v_com is given (Barnard & Rubin 1999):

    lambda = r / (r + 1),   v_obs = (1 - lambda) v_com (v_com + 1) / (v_com + 3),
    v      = 1 / (1/v_m + 1/v_obs)

    FMI = (r + 2 / (v + 3)) / (r + 1)     (with the adjusted v when v_com is given)
    p   = 2 (1 - F_t(|t|; v))             (two-sided)

References
----------
Rubin, D. B. (1987). *Multiple Imputation for Nonresponse in Surveys*. Wiley.
Barnard, J., & Rubin, D. B. (1999). Small-sample degrees of freedom with multiple imputation.
*Biometrika*, 86(4), 948-955.
Grund, S., Robitzsch, A., & Luedtke, O. mitml: Tools for multiple imputation in multilevel
modeling (R package), ``testEstimates`` (the reference implementation matched here).

The between-imputation variance B = 0 (e.g. a parameter that imputation does not touch) is a
limit, handled without dividing by zero: r = 0, v_m = infinity, so v = infinity without v_com and
v = v_obs = v_com (v_com + 1)/(v_com + 3) with it (slightly below v_com, exactly as mitml reports),
and FMI = 2 / (v + 3) (0 without v_com). Variance components are pooled by their mean across
imputations with no standard error (``pool_mean``), as mitml does.

Two entry points: ``pool`` for one analysis (a DataFrame like mitml's table) and ``rubin``, the
same arithmetic vectorised over any leading axes (e.g. thousands of simulated replications).

Multi-parameter tests as ``mitml::testModels`` / ``testConstraints`` (see the section below):
``d1`` (Li, Raghunathan & Rubin 1991; Reiter 2007 df), ``d2`` (Li, Meng, Raghunathan & Rubin
1991) with ``wald_statistics`` / ``lr_statistics``, and ``d3`` (Meng & Rubin 1992).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["rubin", "rules", "pool", "pool_mean", "pool_results", "d1", "d2", "d3", "lr_statistics", "f_pvalue",
           "wald_statistics"]


def rules(q, u, df_com, xp):
    """Rubin's rules for the variances only, in array module `xp` (numpy, or jax.numpy inside a
    device program: a simulation study pools on device). q, u: (..., m, k) estimates and squared
    standard errors. Returns estimate, within, between, total, std_error, t, riv, df, fmi and
    lambda, each (..., k); the module docstring has the formulas and the B = 0 limits."""
    m = q.shape[-2]
    qbar = q.mean(axis=-2)
    dev = q - qbar[..., None, :]
    b = (dev * dev).sum(axis=-2) / (m - 1)
    w = u.mean(axis=-2)
    total = w + (1.0 + 1.0 / m) * b
    se = xp.sqrt(total)
    tval = qbar / se
    # r = 0 whenever B = 0 (also when W = 0): the limit, not 0/0
    r = xp.where(b > 0, (1.0 + 1.0 / m) * b / xp.where(b > 0, w, 1.0), 0.0)
    # v_m = (m-1)(1 + 1/r)^2 -> infinity as r -> 0; written as 1/v_m to avoid 1/0
    inv_vm = xp.where(r > 0, 1.0 / ((m - 1) * (1.0 + 1.0 / xp.where(r > 0, r, 1.0)) ** 2), 0.0)
    if df_com is None:
        inv_v = inv_vm
    else:
        vcom = xp.broadcast_to(xp.asarray(df_com, dtype=qbar.dtype), qbar.shape)
        lam = r / (r + 1.0)
        v_obs = (1.0 - lam) * ((vcom + 1.0) / (vcom + 3.0)) * vcom
        inv_obs = xp.where(xp.isinf(vcom), 0.0, 1.0 / xp.where(xp.isinf(vcom), 1.0, v_obs))
        inv_v = inv_vm + inv_obs
    df = xp.where(inv_v > 0, 1.0 / xp.where(inv_v > 0, inv_v, 1.0), xp.inf)
    fmi = (r + 2.0 / (df + 3.0)) / (r + 1.0)
    lam_t = xp.where(total > 0, (1.0 + 1.0 / m) * b / xp.where(total > 0, total, 1.0), 0.0)
    return {"estimate": qbar, "within": w, "between": b, "total": total, "std_error": se, "t": tval,
            "riv": r, "df": df, "fmi": fmi, "lambda": lam_t}


def rubin(q, u, df_com=None) -> dict:
    """Rubin's rules over the imputation axis, vectorised over leading axes.

    Parameters
    ----------
    q : array (..., m, k)
        Estimates of k parameters from m imputed data sets (any leading axes, e.g. replications).
    u : array (..., m, k) or (..., m, k, k)
        Their squared standard errors, or full sampling covariance matrices.
    df_com : float or array broadcastable to (..., k), optional
        Complete-data degrees of freedom; gives the Barnard & Rubin (1999) small-sample df.
        ``None`` or ``inf`` gives Rubin's (1987) large-sample df.

    Returns
    -------
    dict of arrays, each (..., k) unless stated: ``estimate`` (Qbar), ``within`` (diag W),
    ``between`` (diag B), ``total`` (diag T), ``std_error``, ``t``, ``df``, ``p`` (two-sided),
    ``riv`` (r), ``lambda`` ((1 + 1/m) B / T), ``fmi``, ``m`` (int), and ``total_cov``
    (..., k, k) when full covariance matrices were given.
    """
    q = np.asarray(q, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if q.ndim < 2:
        raise ValueError("q must have shape (..., m, k)")
    m, k = q.shape[-2], q.shape[-1]
    if m < 2:
        raise ValueError(f"Rubin's rules need at least 2 imputations, got m = {m}")
    full = u.shape == q.shape + (k,)
    if not full and u.shape != q.shape:
        raise ValueError(f"u must have shape {q.shape} (variances) or {q.shape + (k,)} "
                         f"(covariances), got {u.shape}")
    if full:
        dev = q - q.mean(axis=-2)[..., None, :]
        w_full = u.mean(axis=-3)
        b_full = np.einsum("...li,...lj->...ij", dev, dev) / (m - 1)
        t_full = w_full + (1.0 + 1.0 / m) * b_full
        u = np.diagonal(u, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        res = rules(q, u, df_com, np)
    qbar, w, b, total, se, tval, r, df, fmi, lam_t = (res[k] for k in (
        "estimate", "within", "between", "total", "std_error", "t", "riv", "df", "fmi", "lambda"))
    p = 2.0 * stats.t.sf(np.abs(tval), df)
    out = {"estimate": qbar, "within": w, "between": b, "total": total, "std_error": se,
           "t": tval, "df": df, "p": p, "riv": r, "lambda": lam_t, "fmi": fmi, "m": m}
    if full:
        out["total_cov"] = t_full
    return out


def pool(estimates, variances, df_com=None, names=None) -> pd.DataFrame:
    """Pool one analysis of m imputed data sets by Rubin's rules (as ``mitml::testEstimates``).

    Parameters
    ----------
    estimates : array (m, k) or (m,)
        Estimates of k parameters (rows: imputations).
    variances : array (m, k) or (m,), or (m, k, k)
        Squared standard errors, or full sampling covariance matrices.
    df_com : float or sequence of k floats, optional
        Complete-data degrees of freedom (Barnard & Rubin 1999 df); ``None`` gives Rubin's (1987).
    names : sequence of k str, optional
        Row labels (default ``Parameter.1`` ...).

    Returns
    -------
    DataFrame with columns estimate, std_error, t, df, p (two-sided), riv, fmi, one row per
    parameter. With covariance input the pooled total covariance T is in ``.attrs["T"]``.

    References: Rubin (1987); Barnard & Rubin (1999); see the module docstring.
    """
    q = np.asarray(estimates, dtype=np.float64)
    u = np.asarray(variances, dtype=np.float64)
    if q.ndim == 1:
        q = q[:, None]
        if u.ndim == 1:
            u = u[:, None]
    if q.ndim != 2:
        raise ValueError("estimates must have shape (m, k) or (m,)")
    res = rubin(q, u, df_com)
    k = q.shape[1]
    names = list(names) if names is not None else [f"Parameter.{i + 1}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} names for {k} parameters")
    frame = pd.DataFrame({c: res[c] for c in ("estimate", "std_error", "t", "df", "p", "riv", "fmi")},
                         index=pd.Index(names, name="parameter"))
    if "total_cov" in res:
        frame.attrs["T"] = res["total_cov"]
    frame.attrs["m"] = res["m"]
    frame.attrs["df_com"] = df_com
    return frame


def pool_mean(values, axis: int = -2):
    """Pool variance components (variances, ICCs) by their mean over imputations, no SE (mitml)."""
    return np.mean(np.asarray(values, dtype=np.float64), axis=axis)


# ------------------------------------------------------------------------ multi-parameter tests
#
# D1, D2 and D3 as ``mitml::testModels`` / ``mitml::testConstraints`` (mitml 0.4.4) compute them:
# the internal ``mitml:::.D1`` and ``mitml:::.D2`` and the D3 branch of ``testModels`` were read
# and their arithmetic (including its edge cases) followed; the formulas are the papers':
#
# Li, K. H., Raghunathan, T. E., & Rubin, D. B. (1991). Large-sample significance levels from
#   multiply imputed data using moment-based statistics and an F reference distribution.
#   *JASA*, 86, 1065-1073.                                                              (D1)
# Reiter, J. P. (2007). Small-sample degrees of freedom for multi-component significance tests
#   with multiple imputation for missing data. *Biometrika*, 94(2), 502-508.   (D1 with v_com)
# Li, K.-H., Meng, X.-L., Raghunathan, T. E., & Rubin, D. B. (1991). Significance levels from
#   repeated p-values with multiply-imputed data. *Statistica Sinica*, 1, 65-92.       (D2)
# Meng, X.-L., & Rubin, D. B. (1992). Performing likelihood ratio tests with multiply-imputed
#   data sets. *Biometrika*, 79(1), 103-111.                                           (D3)
#
# Every function works over leading axes (e.g. simulated replications): the imputation axis is
# the last one of ``stats`` / the one before the parameter axes of ``q`` and ``u``. Results are
# dicts of arrays (0-d for a single test): F, df1, df2, p, riv, m. Division by zero follows IEEE
# (and R) rules, so the same inputs give the same inf / nan that mitml reports.


def f_pvalue(f, df1, df2):
    """Upper-tail F probability ``P(F(df1, df2) > f)``, as R's ``pf(f, df1, df2, lower.tail =
    FALSE)``: ``df2 = inf`` gives the chi-square limit ``P(chi2(df1) > df1 f)`` (scipy's F
    returns nan there), a negative ``f`` gives 1, and nan or a non-positive df gives nan."""
    f, df1, df2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (f, df1, df2)))
    with np.errstate(invalid="ignore", over="ignore"):
        inf2 = np.isinf(df2) & (df2 > 0)
        finite = stats.f.sf(f, df1, np.where(inf2, 1.0, df2))
        limit = stats.chi2.sf(df1 * np.maximum(f, 0.0), df1)
        out = np.where(inf2, limit, finite)
        bad = np.isnan(f) | ~(df1 > 0) | ~(df2 > 0)
        out = np.where(bad, np.nan, out)
    return out[()] if out.ndim == 0 else out


def _li_df(r, t, k):
    """Li, Raghunathan & Rubin's (1991, eq. 1.12 and the t <= 4 case) denominator df, with
    t = k (m - 1), as mitml's ``.D1`` (no v_com) and its D3 use it."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv_r = 1.0 / r
        big = 4.0 + (t - 4.0) * (1.0 + (1.0 - 2.0 / t) * inv_r) ** 2
        small = t * (1.0 + 1.0 / k) * (1.0 + inv_r) ** 2 / 2.0
    return np.where(t > 4, big, small)


def _result(f, k, v, r, m):
    f = np.asarray(f, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    k_arr = np.broadcast_to(np.asarray(k, dtype=np.float64), f.shape)
    out = {"F": f, "df1": k_arr, "df2": v, "p": np.asarray(f_pvalue(f, k_arr, v)), "riv": r,
           "m": int(m)}
    return {key: (val[()] if isinstance(val, np.ndarray) and val.ndim == 0 else val)
            for key, val in out.items()}


def d1(q, u, df_com=None, q0=None) -> dict:
    """D1: the pooled Wald test of Li, Raghunathan & Rubin (1991), as ``mitml:::.D1``.

    Tests H0: Q = q0 for k parameters from m imputations, with ``Qbar`` the mean estimate,
    ``Ubar`` the mean covariance and ``B`` the between-imputation covariance (divisor m - 1):

        r   = (1 + 1/m) tr(B Ubar^-1) / k                      (average RIV, "ARIV")
        F   = (Qbar - q0)' [(1 + r) Ubar]^-1 (Qbar - q0) / k
        t   = k (m - 1)
        df2 = 4 + (t - 4) (1 + (1 - 2/t) / r)^2                if t > 4
            = t (1 + 1/k) (1 + 1/r)^2 / 2                      otherwise      (Li et al. 1991)

    With a complete-data df ``df_com`` (v_com), df2 is Reiter's (2007) small-sample df:
    a = r t / (t - 2), v* = v_com (v_com + 1) / (v_com + 3), c0 = 1/(t - 4),
    c1 = v* - 2 (1 + a), c2 = v* - 4 (1 + a),

        z   = 1/c2 + c0 [a^2 c1 / ((1 + a)^2 c2) + 8 a^2 c1 / ((1 + a) c2^2)
                         + 4 a^2 / ((1 + a) c2) + 4 a^2 / (c2 c1) + 16 a^2 c1 / c2^3 + 8 a^2 / c2^2]
        df2 = 4 + 1/z

    exactly as mitml evaluates it, including its t <= 4 behaviour (Reiter's expansion assumes
    t > 4): at t = 4 (k = 1, m = 5) c0 = inf and mitml reports df2 = 4 (z = inf) for r > 0.
    r = 0 (no between-imputation variance) gives df2 = inf without ``df_com`` (p from the
    chi-square limit, as R's ``pf``), and v* + 4 with it.

    Parameters
    ----------
    q : array (..., m, k)     estimates of the k tested parameters (or constraints)
    u : array (..., m, k, k)  their sampling covariance matrices (k = 1 also as (..., m, 1))
    df_com : float, optional  complete-data degrees of freedom (Reiter 2007)
    q0 : array (k,), optional the null values (default 0)

    Returns
    -------
    dict with ``F``, ``df1`` (= k), ``df2``, ``p`` (upper tail of F(df1, df2)), ``riv`` (r),
    ``m``; arrays over the leading axes, 0-d for a single test.
    """
    q = np.asarray(q, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if q.ndim < 2:
        raise ValueError("q must have shape (..., m, k)")
    m, k = q.shape[-2], q.shape[-1]
    if u.shape == q.shape and k == 1:
        u = u[..., None]
    if u.shape != q.shape + (k,):
        raise ValueError(f"u must have shape {q.shape + (k,)}, got {u.shape}")
    if m < 2:
        raise ValueError(f"D1 needs at least 2 imputations, got m = {m}")
    if q0 is not None:
        q = q - np.asarray(q0, dtype=np.float64)
    qbar = q.mean(axis=-2)
    ubar = u.mean(axis=-3)
    dev = q - qbar[..., None, :]
    b = np.einsum("...li,...lj->...ij", dev, dev) / (m - 1)
    r = (1.0 + 1.0 / m) * np.trace(np.linalg.solve(ubar, b), axis1=-2, axis2=-1) / k
    quad = np.einsum("...i,...i->...", qbar, np.linalg.solve(ubar, qbar[..., None])[..., 0])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        f = quad / (1.0 + r) / k
        t = float(k * (m - 1))
        if df_com is None:
            v = _li_df(r, t, k)
        else:
            vcom = np.asarray(df_com, dtype=np.float64)
            a = r * t / (t - 2.0)
            vstar = ((vcom + 1.0) / (vcom + 3.0)) * vcom
            c0 = np.float64(1.0) / np.float64(t - 4.0)
            c1 = vstar - 2.0 * (1.0 + a)
            c2 = vstar - 4.0 * (1.0 + a)
            a2 = a * a
            z = (1.0 / c2 + c0 * (a2 * c1 / ((1.0 + a) ** 2 * c2))
                 + c0 * (8.0 * a2 * c1 / ((1.0 + a) * c2 ** 2) + 4.0 * a2 / ((1.0 + a) * c2))
                 + c0 * (4.0 * a2 / (c2 * c1) + 16.0 * a2 * c1 / c2 ** 3)
                 + c0 * (8.0 * a2 / c2 ** 2))
            v = 4.0 + 1.0 / z
    return _result(f, k, v, r, m)


def wald_statistics(q, u, q0=None):
    """Per-imputation Wald statistics d_l = (Q_l - q0)' U_l^-1 (Q_l - q0), (..., m, k) and
    (..., m, k, k) -> (..., m): D2's input for ``use = "wald"`` (mitml's ``testModels`` and
    ``testConstraints``)."""
    q = np.asarray(q, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if u.shape == q.shape and q.shape[-1] == 1:
        u = u[..., None]
    if q0 is not None:
        q = q - np.asarray(q0, dtype=np.float64)
    return np.einsum("...i,...i->...", q, np.linalg.solve(u, q[..., None])[..., 0])


def d2(stats, k, ariv="default") -> dict:
    """D2: pooling of m chi-square statistics (Li, Meng, Raghunathan & Rubin 1991), as
    ``mitml:::.D2``.

    From the per-imputation statistics d_l (Wald statistics, see ``wald_statistics``, or
    likelihood-ratio statistics, see ``lr_statistics``) on k degrees of freedom:

        r   = (1 + 1/m) var(sqrt(d_l))            (sample variance, divisor m - 1)
        F   = (mean(d_l)/k - (m + 1)/(m - 1) r) / (1 + r)
        df2 = k^(-3/m) (m - 1) (1 + 1/r)^2

    A negative statistic gives nan (the square root), as in R. ``ariv = "positive"`` reports
    ``riv = max(0, r)`` but, exactly as ``mitml::testModels`` and ``testConstraints`` do it,
    leaves F and df2 at their default values (mitml clips r only after ``.D2`` has used it).

    Parameters
    ----------
    stats : array (..., m)   chi-square statistics
    k : int                  their degrees of freedom (number of tested parameters)
    ariv : "default" | "positive"

    Returns
    -------
    dict with ``F``, ``df1`` (= k), ``df2``, ``p``, ``riv``, ``m``.
    """
    d = np.asarray(stats, dtype=np.float64)
    if d.ndim < 1:
        raise ValueError("stats must have shape (..., m)")
    m = d.shape[-1]
    if m < 2:
        raise ValueError(f"D2 needs at least 2 imputations, got m = {m}")
    if ariv not in ("default", "positive"):
        raise ValueError(f"ariv must be 'default' or 'positive', got {ariv!r}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = (1.0 + 1.0 / m) * np.var(np.sqrt(d), axis=-1, ddof=1)
        f = (d.mean(axis=-1) / k - (m + 1.0) / (m - 1.0) * r) / (1.0 + r)
        v = float(k) ** (-3.0 / m) * (m - 1) * (1.0 + 1.0 / r) ** 2
    out = _result(f, k, v, r, m)
    if ariv == "positive":
        out["riv"] = np.maximum(0.0, out["riv"])
    return out


def _all_equal(x, y, tolerance=1.5e-8):
    """R's ``isTRUE(all.equal(x, y))`` for two numbers: the difference relative to |x| (absolute
    when |x| <= tolerance) at most ``tolerance``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    diff = np.abs(x - y)
    scale = np.abs(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(np.isfinite(scale) & (scale > tolerance), diff / np.where(scale > 0, scale, 1.0), diff)
    return (rel <= tolerance) | ((x == y) & ~np.isnan(x))


def lr_statistics(loglik_full, loglik_null):
    """Likelihood-ratio statistics -2 (l_null - l_full) per imputation, as ``mitml::testModels``
    forms them for D2 with ``use = "likelihood"``: a pair of log-likelihoods that R's
    ``all.equal`` calls equal (relative difference <= 1.5e-8) gives exactly 0."""
    full = np.asarray(loglik_full, dtype=np.float64)
    null = np.asarray(loglik_null, dtype=np.float64)
    diff = np.where(_all_equal(full, null), 0.0, null - full)
    return -2.0 * diff


def d3(lr_own, lr_pooled, k, ariv="default") -> dict:
    """D3: the pooled likelihood-ratio test of Meng & Rubin (1992), as ``mitml::testModels``.

    ``lr_own[l] = -2 (l_null,l - l_full,l)`` with each model's log-likelihood of data set l at
    that model's own estimates on data set l, and ``lr_pooled[l]`` the same at each model's
    pooled estimates (``mitml`` averages, for lme4 fits, the fixed effects, the random-effect
    covariance matrix and the residual variance, all on their natural scale; see
    ``jaximpute.lmm.loglik_at``). With dbar = mean(lr_own), dtilde = mean(lr_pooled):

        r   = (m + 1) / (k (m - 1)) (dbar - dtilde)
        F   = dtilde / (k (1 + r))
        df2 = Li et al.'s (1991) df with t = k (m - 1), as for D1 without v_com

    ``ariv = "positive"`` uses max(0, r) throughout (F, df2 and riv), as mitml does for D3.
    k is the difference in the number of model parameters (fixed effects plus variance
    parameters; mitml uses the ``df`` of ``logLik``).

    Returns
    -------
    dict with ``F``, ``df1`` (= k), ``df2``, ``p``, ``riv``, ``m``.
    """
    own = np.asarray(lr_own, dtype=np.float64)
    pooled = np.asarray(lr_pooled, dtype=np.float64)
    if own.shape != pooled.shape or own.ndim < 1:
        raise ValueError(f"lr_own and lr_pooled must have the same shape (..., m), got "
                         f"{own.shape} and {pooled.shape}")
    m = own.shape[-1]
    if m < 2:
        raise ValueError(f"D3 needs at least 2 imputations, got m = {m}")
    if ariv not in ("default", "positive"):
        raise ValueError(f"ariv must be 'default' or 'positive', got {ariv!r}")
    dbar = own.mean(axis=-1)
    dtilde = pooled.mean(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = (m + 1.0) / (k * (m - 1.0)) * (dbar - dtilde)
        if ariv == "positive":
            r = np.maximum(0.0, r)
        f = dtilde / (k * (1.0 + r))
        v = _li_df(r, float(k * (m - 1)), k)
    return _result(f, k, v, r, m)


def pool_results(results, df_com=None, names=None) -> pd.DataFrame:
    """Pool per-imputation fits that the user brings, by Rubin's rules (`pool`).

    Each item is a statsmodels-like results object (with `.params` and `.cov_params()`, e.g.
    `smf.ols(...).fit()`; for mixed models with `.fe_params`, such as `smf.mixedlm(...).fit()`,
    only the fixed effects are pooled), or a pair `(estimates, covariance)` of arrays.
    Names come from the first result's params index when it has one.
    """
    qs, us = [], []
    for i, r in enumerate(results):
        if hasattr(r, "params") and hasattr(r, "cov_params"):
            params = r.fe_params if hasattr(r, "fe_params") else r.params
            cov = r.cov_params()
            if names is None and hasattr(params, "index"):
                names = [str(n) for n in params.index]
            if hasattr(cov, "loc") and hasattr(params, "index"):
                cov = cov.loc[params.index, params.index]
            qs.append(np.asarray(params, dtype=np.float64))
            us.append(np.asarray(cov, dtype=np.float64))
        else:
            try:
                q, u = r
            except (TypeError, ValueError):
                raise TypeError(f"result {i + 1}: expected a fitted model with .params and "
                                ".cov_params(), or a pair (estimates, covariance)") from None
            qs.append(np.atleast_1d(np.asarray(q, dtype=np.float64)))
            us.append(np.asarray(u, dtype=np.float64))
    if len({q.shape for q in qs}) != 1:
        raise ValueError("every imputation's fit must have the same parameters")
    q = np.stack(qs)
    u = np.stack(us)
    if u.ndim == 3 and u.shape[1:] != (q.shape[1], q.shape[1]):
        raise ValueError(f"covariance matrices must be {q.shape[1]} x {q.shape[1]}")
    return pool(q, u, df_com=df_com, names=names)
