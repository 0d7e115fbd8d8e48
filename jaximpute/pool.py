"""Rubin's rules for pooling estimates from multiply imputed data sets.

This follows ``mitml::testEstimates`` (mitml 0.4; see POOLING.md) exactly. For m imputations
with estimates Q_l (k parameters) and sampling (co)variances U_l:

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
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["rubin", "pool", "pool_mean"]


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
    qbar = q.mean(axis=-2)
    dev = q - qbar[..., None, :]
    b = (dev * dev).sum(axis=-2) / (m - 1)
    if full:
        w_full = u.mean(axis=-3)
        b_full = np.einsum("...li,...lj->...ij", dev, dev) / (m - 1)
        t_full = w_full + (1.0 + 1.0 / m) * b_full
        w = np.diagonal(w_full, axis1=-2, axis2=-1).copy()
    else:
        w = u.mean(axis=-2)
    total = w + (1.0 + 1.0 / m) * b
    se = np.sqrt(total)
    with np.errstate(divide="ignore", invalid="ignore"):
        tval = qbar / se
        # r = 0 whenever B = 0 (also when W = 0): the limit, not 0/0
        r = np.where(b > 0, (1.0 + 1.0 / m) * b / np.where(b > 0, w, 1.0), 0.0)
        # v_m = (m-1)(1 + 1/r)^2 -> infinity as r -> 0; written as 1/v_m to avoid 1/0
        inv_vm = np.where(r > 0, 1.0 / ((m - 1) * (1.0 + 1.0 / np.where(r > 0, r, 1.0)) ** 2), 0.0)
        if df_com is None:
            inv_v = inv_vm
        else:
            vcom = np.broadcast_to(np.asarray(df_com, dtype=np.float64), qbar.shape)
            lam = r / (r + 1.0)
            v_obs = (1.0 - lam) * ((vcom + 1.0) / (vcom + 3.0)) * vcom
            inv_obs = np.where(np.isinf(vcom), 0.0, 1.0 / np.where(np.isinf(vcom), 1.0, v_obs))
            inv_v = inv_vm + inv_obs
        df = np.where(inv_v > 0, 1.0 / np.where(inv_v > 0, inv_v, 1.0), np.inf)
        fmi = (r + 2.0 / (df + 3.0)) / (r + 1.0)
        lam_t = np.where(total > 0, (1.0 + 1.0 / m) * b / np.where(total > 0, total, 1.0), 0.0)
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
