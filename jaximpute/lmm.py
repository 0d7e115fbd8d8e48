"""Linear mixed models by maximum likelihood (and REML), fitted in JAX over many data sets at once.

One grouping factor, a random intercept and random slopes with an unstructured covariance:

    y = X beta + Z b + e,   b_j ~ N(0, sigma2 Lambda Lambda'),   e ~ N(0, sigma2 I)

The deviance is profiled over beta and sigma2 and minimised over theta, the lower triangle of the
relative covariance factor Lambda (column-major, as lme4 orders it), exactly as lme4 does (Bates,
Maechler, Bolker & Walker 2015, J. Stat. Softw. 67(1), sec. 3). Because the clusters are
independent, everything needed is a handful of per-cluster cross-products (X'X, X'Z, Z'Z, X'y,
Z'y, y'y), computed once; each deviance evaluation is then O(J q^3), with A_j = Lambda'Z_j'Z_j
Lambda + I:

    X'V^-1X = sum_j X_j'X_j - B_j' A_j^-1 B_j,      B_j = Lambda'Z_j'X_j     (times sigma2)
    r2      = y'V^-1y - beta' X'V^-1y
    ML:   -2 l = sum_j log|A_j| + N (1 + log(2 pi r2 / N))
    REML: -2 l = sum_j log|A_j| + log|X'V^-1X| + (N - p)(1 + log(2 pi r2 / (N - p)))

theta is optimised with optax's L-BFGS (zoom line search), vmapped over imputations and data sets
in one program that loops until every fit's deviance gradient is below GTOL (or a step cap); the deviance is even in
each diagonal entry of Lambda, so theta needs no bounds and a singular fit (a variance of 0) is an
ordinary interior minimum at 0. Everything runs in float64.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import optax
import pandas as pd

from .errors import JaxImputeError, did_you_mean
from .kernels import linalg


class FormulaError(JaxImputeError):
    """A model formula that cannot be parsed or names unknown columns."""


# ------------------------------------------------------------------------------ formulas

@dataclass(frozen=True)
class Formula:
    """An lme4-style formula: response ~ fixed terms + (random terms | group)."""

    text: str
    response: str
    fixed: tuple[tuple[str, ...], ...]     # () is the intercept; ('a', 'b') is a:b
    random: tuple[tuple[str, ...], ...]    # random-effect terms, () the intercept
    group: str | None

    @staticmethod
    def term_name(term: tuple[str, ...], intercept: str = "(Intercept)") -> str:
        return ":".join(term) if term else intercept

    @property
    def fixed_names(self) -> list[str]:
        return [self.term_name(t) for t in self.fixed]

    @property
    def random_names(self) -> list[str]:
        return [self.term_name(t, "Intercept") for t in self.random]

    @property
    def variables(self) -> list[str]:
        names = [self.response] + [v for t in self.fixed + self.random for v in t]
        if self.group:
            names.append(self.group)
        return list(dict.fromkeys(names))


_NAME = r"[A-Za-z_.][A-Za-z0-9_.]*"


def _parse_terms(text: str, where: str, full: str) -> tuple[list[tuple[str, ...]], bool]:
    """Parse `a + b + a:b + a*b - 1` into terms (without the intercept) and whether the
    intercept is kept."""
    terms: list[tuple[str, ...]] = []
    intercept = True
    text = text.strip()
    if not text:
        raise FormulaError(f"formula '{full}': empty {where}; expected terms such as x + z")
    tokens = re.split(r"\s*([+-])\s*", "+" + text)
    if tokens[0] != "":
        raise FormulaError(f"formula '{full}': cannot read '{text}'")
    pairs = list(zip(tokens[1::2], tokens[2::2]))
    for sign, tok in pairs:
        tok = tok.strip()
        if tok in ("0", "1"):
            intercept = sign == "+" and tok == "1"     # '+ 1' keeps it; '+ 0' and '- 1' drop it
            continue
        if sign == "-":
            raise FormulaError(f"formula '{full}': removing '{tok}' is not supported; "
                               "expected '- 1' only")
        if "*" in tok:
            parts = [p.strip() for p in tok.split("*")]
            if not all(re.fullmatch(_NAME, p) for p in parts):
                raise FormulaError(f"formula '{full}': cannot read the term '{tok}'")
            # a*b expands to a + b + a:b (all sub-products, as R does)
            from itertools import combinations
            for k in range(1, len(parts) + 1):
                for combo in combinations(parts, k):
                    terms.append(tuple(combo))
            continue
        parts = [p.strip() for p in tok.split(":")]
        if not all(re.fullmatch(_NAME, p) for p in parts):
            raise FormulaError(f"formula '{full}': cannot read the term '{tok}'; expected names "
                               "joined by ':' or '*'")
        terms.append(tuple(parts))
    seen = []
    for t in terms:
        if t not in seen:
            seen.append(t)
    return seen, intercept


def parse_formula(text: str) -> Formula:
    """Parse `y ~ a + b + a:b + (a | g)` (one random-effects group at most)."""
    if text.count("~") != 1:
        raise FormulaError(f"formula '{text}': expected one '~' between the response and the terms")
    lhs, rhs = (s.strip() for s in text.split("~"))
    if not re.fullmatch(_NAME, lhs):
        raise FormulaError(f"formula '{text}': the response '{lhs}' is not a column name")
    bars = re.findall(r"\(([^()]*)\|([^()]*)\)", rhs)
    if len(bars) > 1:
        raise FormulaError(f"formula '{text}': only one random-effects term (... | group) is "
                           "supported; crossed and nested factors come later")
    fixed_text = re.sub(r"\+?\s*\([^()]*\|[^()]*\)", "", rhs).strip()
    fixed_text = fixed_text.strip("+ ").strip() or "1"
    if "(" in fixed_text or "|" in fixed_text:
        raise FormulaError(f"formula '{text}': cannot read '{fixed_text}'; random effects are "
                           "written (terms | group)")
    fixed, intercept = _parse_terms(fixed_text, "fixed part", text)
    fixed = ([()] if intercept else []) + fixed
    random: list[tuple[str, ...]] = []
    group = None
    if bars:
        rterms, rint = _parse_terms(bars[0][0], "random part", text)
        random = ([()] if rint else []) + rterms
        group = bars[0][1].strip()
        if not re.fullmatch(_NAME, group):
            raise FormulaError(f"formula '{text}': the grouping factor '{group}' is not a column name")
        if not random:
            raise FormulaError(f"formula '{text}': the random part has no terms")
    if not fixed:
        raise FormulaError(f"formula '{text}': no fixed effects")
    return Formula(text, lhs, tuple(fixed), tuple(random), group)


def model_matrices(formula: Formula, frame: pd.DataFrame):
    """(y, X, Z, group codes) for one data frame; errors name unknown columns."""
    cols = list(frame.columns)
    for v in formula.variables:
        if v not in frame.columns:
            raise FormulaError(f"formula '{formula.text}': unknown column '{v}'"
                               f"{did_you_mean(v, cols)}; expected one of {', '.join(map(str, cols))}")

    def build(terms):
        out = np.ones((len(frame), len(terms)))
        for k, t in enumerate(terms):
            for v in t:
                out[:, k] *= frame[v].to_numpy(dtype=float)
        return out

    y = frame[formula.response].to_numpy(dtype=float)
    x = build(formula.fixed)
    z = build(formula.random) if formula.group else np.zeros((len(frame), 0))
    g = (pd.factorize(frame[formula.group], sort=True)[0] if formula.group
         else np.zeros(len(frame), int))
    bad = ~np.isfinite(y) | ~np.isfinite(x).all(1) | ~np.isfinite(z).all(1)
    if bad.any():
        raise FormulaError(f"formula '{formula.text}': row {int(np.flatnonzero(bad)[0]) + 1} has a "
                           "missing or non-finite value in a model variable; expected complete data "
                           "(analyse imputed data sets)")
    return y, x, z, g


# ------------------------------------------------------------------------------ statistics

def cluster_stats(y, x, z, g, num_clusters: int, weight=None):
    """Per-cluster cross-products, float64; x (N, p), z (N, q), y (N,), g (N,) -> dict.

    `weight` (N,) of 0/1 leaves rows out (listwise deletion in a batch of same-shaped data
    sets); the deviance sees only these sums and the row count, so the fit is the fit of the
    kept rows."""
    seg = lambda a: jax.ops.segment_sum(a, g, num_clusters)
    if weight is not None:
        keep = weight > 0
        y = jnp.where(keep, y, 0.0)
        x = jnp.where(keep[:, None], x, 0.0)
        z = jnp.where(keep[:, None], z, 0.0)
    return {
        "xx": seg(x[:, :, None] * x[:, None, :]),
        "xz": seg(x[:, :, None] * z[:, None, :]),
        "zz": seg(z[:, :, None] * z[:, None, :]),
        "xy": seg(x * y[:, None]),
        "zy": seg(z * y[:, None]),
        "yy": seg(y * y),
        "n": seg(jnp.ones_like(y) if weight is None else keep.astype(y.dtype)),
    }


def theta_to_lambda(theta, q: int):
    """Lower-triangular Lambda from theta in lme4's column-major order."""
    lam = jnp.zeros((q, q), theta.dtype)
    rows, cols = [], []
    for c in range(q):
        for r in range(c, q):
            rows.append(r)
            cols.append(c)
    return lam.at[jnp.array(rows), jnp.array(cols)].set(theta)


def _profiled(theta, s, q: int, reml: bool):
    """Deviance and the pieces the estimates need, at theta."""
    lam = theta_to_lambda(theta, q)
    a = jnp.einsum("ka,jkl,lb->jab", lam, s["zz"], lam) + jnp.eye(q)
    la = linalg.cholesky(a)                                          # (J, q, q)
    logdet_a = 2.0 * jnp.sum(jnp.log(jnp.diagonal(la, axis1=-2, axis2=-1)))
    b = jnp.einsum("ka,jpk->jap", lam, s["xz"])                      # (J, q, p)
    c = jnp.einsum("ka,jk->ja", lam, s["zy"])                        # (J, q)
    # A_j^-1 [B_j | c_j] in one unrolled q x q solve, the p + 1 columns as a batch axis: one
    # solve per column made the traced program (and its compile time) grow with p
    rhs = jnp.concatenate([b, c[:, :, None]], axis=-1)               # (J, q, p + 1)
    sol = jnp.swapaxes(linalg.chol_solve(la[:, None], jnp.swapaxes(rhs, -1, -2)), -1, -2)
    ainv_b, ainv_c = sol[:, :, :-1], sol[:, :, -1]
    xvx = jnp.sum(s["xx"], 0) - jnp.einsum("jap,jar->pr", b, ainv_b)
    xvy = jnp.sum(s["xy"], 0) - jnp.einsum("jap,ja->p", b, ainv_c)
    yvy = jnp.sum(s["yy"]) - jnp.sum(c * ainv_c)
    # one p x p system per fit (a batch of fits, not of clusters): LAPACK is fine here
    lx = jnp.linalg.cholesky(xvx)
    beta = jax.scipy.linalg.cho_solve((lx, True), xvy)
    r2 = yvy - beta @ xvy
    n = jnp.sum(s["n"])
    p = xvx.shape[-1]
    if reml:
        dof = n - p
        logdet_x = 2.0 * jnp.sum(jnp.log(jnp.diagonal(lx)))
        dev = logdet_a + logdet_x + dof * (1.0 + jnp.log(2.0 * jnp.pi * r2 / dof))
    else:
        dof = n
        dev = logdet_a + n * (1.0 + jnp.log(2.0 * jnp.pi * r2 / n))
    return dev, beta, xvx, r2 / dof, lam


GTOL = 1e-5   # |d deviance / d theta| below which a fit stops moving (deviance units)


def _optimizer(s, q: int, reml: bool):
    fun = lambda th: _profiled(th, s, q, reml)[0]
    return fun, optax.lbfgs(), optax.value_and_grad_from_state(fun)


def _fit_start(s, theta0, q: int, reml: bool):
    fun, opt, _ = _optimizer(s, q, reml)
    return (theta0, opt.init(theta0), theta0, fun(theta0), jnp.array(False))


def _fit_step(s, carry, q: int, reml: bool):
    """One L-BFGS step (optax, zoom line search). A fit whose gradient is below GTOL is done: it
    feeds the optimiser a zero gradient, so its line search ends at once and it stops moving
    while the rest of the batch finishes."""
    fun, opt, value_and_grad = _optimizer(s, q, reml)
    th, state, best, best_val, done = carry
    value, grad = value_and_grad(th, state=state)
    done = done | (jnp.max(jnp.abs(grad)) < GTOL)
    grad = jnp.where(done, 0.0, grad)
    updates, state = opt.update(grad, state, th, value=value, grad=grad, value_fn=fun)
    th = optax.apply_updates(th, updates)
    # keep the best point seen: on a flat, numerically noisy deviance (a singular fit, say)
    # L-BFGS can wander off after converging; the best point cannot
    val = fun(th)
    better = jnp.isfinite(val) & (val < best_val)
    return (th, state, jnp.where(better, th, best), jnp.where(better, val, best_val), done)


def _fit_finish(s, theta, q: int, reml: bool):
    fun = lambda th: _profiled(th, s, q, reml)[0]
    dev, beta, xvx, sigma2, lam = _profiled(theta, s, q, reml)
    grad = jax.grad(fun)(theta)
    vcov = sigma2 * jnp.linalg.inv(xvx)
    psi = sigma2 * lam @ lam.T
    return {"theta": theta, "deviance": dev, "beta": beta, "vcov": vcov, "sigma2": sigma2,
            "psi": psi, "grad_norm": jnp.max(jnp.abs(grad))}


@dataclass
class LMMFit:
    """Fits of one formula to M data sets (a leading axis on every array)."""

    formula: Formula
    reml: bool
    beta: np.ndarray        # (M, p)
    vcov: np.ndarray        # (M, p, p)
    psi: np.ndarray         # (M, q, q) random-effect covariance
    sigma2: np.ndarray      # (M,)
    loglik: np.ndarray      # (M,) log-likelihood (REML criterion's log-likelihood with reml)
    theta: np.ndarray       # (M, len(theta))
    converged: np.ndarray   # (M,) bool: gradient of the deviance below tolerance
    nobs: int
    ngroups: int

    @property
    def se(self) -> np.ndarray:
        return np.sqrt(np.diagonal(self.vcov, axis1=-2, axis2=-1))

    def variance_components(self) -> dict[str, np.ndarray]:
        """lme4/mitml-named variance components, each (M,)."""
        names = self.formula.random_names
        g = self.formula.group
        out = {}
        for i in range(len(names)):
            for j in range(i + 1):
                out[f"{names[j]}~~{names[i]}|{g}"] = self.psi[:, j, i]
        out["Residual~~Residual"] = self.sigma2
        if names and names[0] == "Intercept":
            out[f"ICC|{g}"] = self.psi[:, 0, 0] / (self.psi[:, 0, 0] + self.sigma2)
        return out


@functools.lru_cache(maxsize=None)
def _batched_fit(q: int, reml: bool, steps: int):
    """One jitted, vmapped fitter per static setting, so repeated analyses of same-shaped data
    reuse the compiled program instead of tracing a fresh closure each call."""
    def fit(stats, theta0):
        carry = jax.vmap(lambda st: _fit_start(st, theta0, q, reml))(stats)
        step = jax.vmap(lambda st, c: _fit_step(st, c, q, reml))

        # iterate until every fit in the batch is done (or `steps`): a batch-level loop, so
        # converged batches stop early instead of spinning through the remaining steps
        def cond(c):
            it, carry = c
            return (it < steps) & ~jnp.all(carry[4])

        def body(c):
            it, carry = c
            return it + 1, step(stats, carry)

        _, carry = jax.lax.while_loop(cond, body, (0, carry))
        th, _, best, best_val, done = carry
        # the current point unless it is worse than the best seen (beyond rounding)
        cur_val = jax.vmap(lambda st, t: _profiled(t, st, q, reml)[0])(stats, th)
        keep = jnp.isfinite(cur_val) & (cur_val <= best_val + 1e-10 * jnp.abs(best_val))
        theta = jnp.where(keep[:, None], th, best)
        out = jax.vmap(lambda st, t: _fit_finish(st, t, q, reml))(stats, theta)
        out["done"] = done
        return out

    return jax.jit(fit)


def fit_lmm(formula: str | Formula, frames, *, reml: bool = False, steps: int = 100,
            tol: float = 1e-3) -> LMMFit:
    """Fit an lme4-style formula to one DataFrame or a list of same-shaped DataFrames.

    Data sets are fitted in one vmapped program; every data set must have the same rows and
    clusters (imputations of one data set do). `converged` flags fits whose deviance gradient
    (in theta) is above `tol` after `steps` L-BFGS steps.
    """
    f = parse_formula(formula) if isinstance(formula, str) else formula
    frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
    mats = [model_matrices(f, fr) for fr in frames]
    g = mats[0][3]
    j = int(g.max()) + 1 if len(g) else 1
    q = len(f.random)
    if q == 0:
        raise FormulaError(f"formula '{f.text}': no random effects; expected a term like (1 | group)")
    ys, xs, zs = (np.stack([m[k] for m in mats]) for k in range(3))
    fit = fit_arrays(ys, xs, zs, g, j, reml=reml, steps=steps)
    return LMMFit(f, reml, fit["beta"], fit["vcov"], fit["psi"], fit["sigma2"],
                  -0.5 * fit["deviance"], fit["theta"], fit["done"] | (fit["grad_norm"] < tol),
                  len(g), j)


def fit_arrays(ys, xs, zs, g, num_clusters: int, *, weight=None, reml: bool = False,
               steps: int = 100) -> dict[str, np.ndarray]:
    """The fitter on design arrays: ys (M, N), xs (M, N, p), zs (M, N, q), cluster index g (N,)
    in 0..num_clusters-1, optional 0/1 row weights (M, N). Returns numpy arrays with a leading
    M axis: beta, vcov, psi, sigma2, deviance, theta, grad_norm, done. For simulation studies,
    where the design matrices are built directly rather than from a formula and data frames."""
    q = np.shape(zs)[-1]
    with jax.enable_x64(True):
        gj = jnp.asarray(g)
        args = [jnp.asarray(ys, jnp.float64), jnp.asarray(xs, jnp.float64), jnp.asarray(zs, jnp.float64)]
        if weight is None:
            stats = jax.vmap(lambda y, x, z: cluster_stats(y, x, z, gj, num_clusters))(*args)
        else:
            stats = jax.vmap(lambda y, x, z, w: cluster_stats(y, x, z, gj, num_clusters, w))(
                *args, jnp.asarray(weight, jnp.float64))
        # lme4's start: Lambda = I
        theta0 = jnp.asarray([1.0 if r == c else 0.0 for c in range(q) for r in range(c, q)])
        fit = jax.device_get(_batched_fit(q, reml, steps)(stats, theta0))
    return {k: np.asarray(v) for k, v in fit.items()}


def loglik_at(formula: str | Formula, frames, beta, psi, sigma2, *, reml: bool = False) -> np.ndarray:
    """Log-likelihood of each data set at given parameters (not at its own estimates).

    For D3 (Meng & Rubin 1992; ``mitml::testModels(..., method = "D3")``), which evaluates every
    imputed data set's likelihood at the pooled estimates. With V_j = sigma2 I + Z_j psi Z_j'
    and residuals r = y - X beta, the ML log-likelihood is

        -2 l = sum_j log|A_j| + N log(2 pi sigma2) + (r'r - sum_j c_j' A_j^-1 c_j) / sigma2,
        A_j = L' Z_j'Z_j L + I,   c_j = L' Z_j'r_j,   L L' = psi / sigma2,

    from the per-cluster cross-products of ``cluster_stats`` (of X, Z and the residuals), the
    same algebra as the profiled deviance (Bates et al. 2015, sec. 3) but at fixed beta, psi,
    sigma2 instead of profiled ones. L is a symmetric square root of psi / sigma2 from its
    eigen-decomposition, so a singular psi (a variance of 0) is allowed. At a fit's own
    estimates this is ``LMMFit.loglik``.

    With ``reml=True`` it is the restricted log-likelihood at (psi, sigma2),

        -2 l_R = sum_j log|A_j| + log|X'V^-1X sigma2| + (N - p) log(2 pi sigma2) + r'V^-1r,

    with r at the GLS estimate of beta given psi / sigma2 (the restricted likelihood does not
    depend on beta; pass ``beta=None``), which is ``LMMFit.loglik`` of a REML fit at its own
    psi and sigma2.

    Parameters
    ----------
    formula : str or Formula
    frames : DataFrame or list of M DataFrames (the clusters may differ between them)
    beta : array (p,) or (M, p)       common or per-data-set fixed effects (ignored with reml)
    psi : array (q, q) or (M, q, q)   random-effect covariance matrix (``LMMFit.psi``)
    sigma2 : float or array (M,)      residual variance

    Returns
    -------
    array (M,) of log-likelihoods.
    """
    f = parse_formula(formula) if isinstance(formula, str) else formula
    frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
    n_sets = len(frames)
    p, q = len(f.fixed), len(f.random)
    if q == 0:
        raise FormulaError(f"formula '{f.text}': no random effects; expected a term like (1 | group)")
    psi = np.broadcast_to(np.asarray(psi, dtype=np.float64), (n_sets, q, q))
    sigma2 = np.broadcast_to(np.asarray(sigma2, dtype=np.float64), (n_sets,))
    if not reml:
        if beta is None:
            raise ValueError("loglik_at: beta is needed for the ML log-likelihood")
        beta = np.broadcast_to(np.asarray(beta, dtype=np.float64), (n_sets, p))
    out = np.empty(n_sets)
    for i, frame in enumerate(frames):
        y, x, z, g = model_matrices(f, frame)
        j = int(g.max()) + 1 if len(g) else 1
        s2 = float(sigma2[i])
        w, vecs = np.linalg.eigh(psi[i] / s2)
        lam = vecs * np.sqrt(np.clip(w, 0.0, None))               # lam lam' = psi / sigma2

        def crossprod(resp):
            with jax.enable_x64(True):
                st = cluster_stats(jnp.asarray(resp), jnp.asarray(x), jnp.asarray(z),
                                   jnp.asarray(g), j)
                return {k: np.asarray(v) for k, v in jax.device_get(st).items()}

        st = crossprod(y)
        a = np.einsum("ka,jkl,lb->jab", lam, st["zz"], lam) + np.eye(q)
        logdet_a = float(np.sum(np.linalg.slogdet(a)[1]))
        if reml:
            bmat = np.einsum("ka,jpk->jap", lam, st["xz"])             # (J, q, p)
            cy = np.einsum("ka,jk->ja", lam, st["zy"])
            xvx = st["xx"].sum(0) - np.einsum("jap,jar->pr", bmat, np.linalg.solve(a, bmat))
            xvy = st["xy"].sum(0) - np.einsum("jap,ja->p", bmat, np.linalg.solve(a, cy[..., None])[..., 0])
            b_i = np.linalg.solve(xvx, xvy)
        else:
            b_i = beta[i]
        rs = crossprod(y - x @ b_i)                                    # residual cross-products
        c = np.einsum("ka,jk->ja", lam, rs["zy"])
        quad = float(rs["yy"].sum() - np.einsum("ja,ja->", c, np.linalg.solve(a, c[..., None])[..., 0]))
        n = len(y)
        if reml:
            dev = (logdet_a + float(np.linalg.slogdet(xvx)[1])
                   + (n - p) * np.log(2.0 * np.pi * s2) + quad / s2)
        else:
            dev = logdet_a + n * np.log(2.0 * np.pi * s2) + quad / s2
        out[i] = -0.5 * dev
    return out
