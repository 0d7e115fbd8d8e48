"""Linear mixed models by maximum likelihood (and REML), fitted in JAX over many data sets at once.

One grouping factor, a random intercept and random slopes with an unstructured covariance:

    y = X beta + Z b + e,   b_j ~ N(0, sigma2 Lambda Lambda'),   e ~ N(0, sigma2 I)

and, for three-level data, a random intercept across the level-3 units that hold the groups,
``y ~ x + (x | student) + (1 | school)``: v_k ~ N(0, sigma2 lambda3^2) (``_profiled3``).

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

theta is optimised by L-BFGS (Liu & Nocedal 1989; optax's ``scale_by_lbfgs`` gives the direction)
with a backtracking line search, vmapped over imputations and data sets in one program that loops,
one deviance-and-gradient evaluation per iteration, until every fit has converged (or a step cap).
The gradient is written out (see ``_profiled``), not taken by autodiff. The random-effect columns
are standardised first (``_standardize``), so variables on any scale start alike.

lme4 minimises over a bounded theta (Lambda's diagonal >= 0), which covers every positive
semi-definite covariance. The deviance is even in each column of Lambda, so L-BFGS runs
unbounded and each column's sign is set afterwards (``_lme4_theta``); but that symmetry also
makes every Lambda with a zero column a stationary point, minimum or not (a random-intercept fit
that reaches theta = 0 has a zero gradient there whatever the data). So a fit is not done when
its gradient vanishes: the boundary check (``_boundary_check``) tests the bounded problem's
optimality conditions on the deviance as a function of Sigma = Lambda Lambda' (d deviance / d
Sigma positive semi-definite), evaluates the deviance along the direction that could lower it,
and restarts L-BFGS from a better point when there is one. Boundary fits are flagged as lme4's
isSingular flags them. Everything runs in float64.
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

from . import xla_options
from .errors import JaxImputeError, did_you_mean
from .nesting import constant_within, pairs


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
    group3: str | None = None              # three-level data: the level-3 group, (1 | group3)

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
        names += [g for g in (self.group, self.group3) if g]
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
    """Parse `y ~ a + b + a:b + (a | g)`: one random-effects group, or two nested ones for
    three-level data, `(a | student) + (1 | school)`, the level-3 group with an intercept only.
    When both have an intercept only, the data decide which holds the other (``nested_codes``)."""
    if text.count("~") != 1:
        raise FormulaError(f"formula '{text}': expected one '~' between the response and the terms")
    lhs, rhs = (s.strip() for s in text.split("~"))
    if not re.fullmatch(_NAME, lhs):
        raise FormulaError(f"formula '{text}': the response '{lhs}' is not a column name")
    bars = re.findall(r"\(([^()]*)\|([^()]*)\)", rhs)
    if len(bars) > 2:
        raise FormulaError(f"formula '{text}': at most two random-effects terms (... | group) are "
                           "supported, for three-level data; crossed factors come later")
    group3 = None
    if len(bars) == 2:
        simple = [_parse_terms(b[0], "random part", text) == ([], True) for b in bars]
        if not any(simple):
            raise FormulaError(f"formula '{text}': with two random-effects terms, one must be a "
                               "random intercept of the level-3 group, e.g. (x | student) + (1 | school)")
        outer = 1 if simple[1] else 0                  # the level-3 term: intercept only
        group3 = bars[outer][1].strip()
        if not re.fullmatch(_NAME, group3):
            raise FormulaError(f"formula '{text}': the grouping factor '{group3}' is not a column name")
        bars = [bars[1 - outer]]
        if bars[0][1].strip() == group3:
            raise FormulaError(f"formula '{text}': the two random-effects terms share the group "
                               f"'{group3}'; expected a level-2 and a level-3 group")
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
    return Formula(text, lhs, tuple(fixed), tuple(random), group, group3)


def nested_codes(formula: Formula, frame: pd.DataFrame):
    """(formula, level-2 codes (N,), level-3 unit of each level-2 group (J,) or None) for one
    frame. A level-2 group is a (level-3 group, level-2 id) pair, so ids may recur across
    units, numbered unit by unit. With two intercept-only terms the id constant within the
    other's groups is level 3 (the formula comes back with the groups in that order); ids that
    neither nest nor recur (crossed factors) are refused."""
    if not formula.group3:
        g = (pd.factorize(frame[formula.group], sort=True)[0] if formula.group
             else np.zeros(len(frame), int))
        return formula, g, None
    a, b = frame[formula.group].to_numpy(), frame[formula.group3].to_numpy()
    if formula.random == ((),) and constant_within(a, b) and not constant_within(b, a):
        # two random intercepts, written inner last: swap so that group3 holds group
        formula = Formula(formula.text, formula.response, formula.fixed, formula.random,
                          formula.group3, formula.group)
        a, b = b, a
    if constant_within(a, b):
        raise FormulaError(f"formula '{formula.text}': every {formula.group3} holds a single "
                           f"{formula.group}; expected {formula.group} groups nested in "
                           f"{formula.group3}, several in some")
    p = pairs(b, a)
    return formula, p.cluster, p.unit_of_cluster


def model_matrices(formula: Formula, frame: pd.DataFrame):
    """(y, X, Z, group codes, level-3 unit of each group or None) for one data frame; errors
    name unknown columns."""
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
    _, g, unit = nested_codes(formula, frame)
    bad = ~np.isfinite(y) | ~np.isfinite(x).all(1) | ~np.isfinite(z).all(1)
    if bad.any():
        raise FormulaError(f"formula '{formula.text}': row {int(np.flatnonzero(bad)[0]) + 1} has a "
                           "missing or non-finite value in a model variable; expected complete data "
                           "(analyse imputed data sets)")
    return y, x, z, g, unit


def design_arrays(formula: Formula, frames: list[pd.DataFrame]):
    """(ys (M, N), xs (M, N, p), zs (M, N, q), group codes (N,), level-3 unit of each group (J,)
    or None) for M same-shaped data sets.

    The data sets must share their rows and clusters (imputations of one data set do); the
    first one's group codes serve all, and a data set whose length or grouping column differs
    is an error naming it. Equivalent to stacking ``model_matrices`` of each frame, built from
    one (M, N, variables) array rather than frame by frame (1,000 small frames took 0.3 s).
    """
    y0, x0, z0, g, unit = model_matrices(formula, frames[0])
    if len(frames) == 1:
        return y0[None], x0[None], z0[None], g, unit
    ids = [c for c in (formula.group, formula.group3) if c]
    names = [v for v in formula.variables if v not in ids]
    n = len(frames[0])
    vals = np.empty((len(frames), n, len(names)))
    first_group = [frames[0][c].to_numpy() for c in ids]
    for k, fr in enumerate(frames):
        missing = [v for v in formula.variables if v not in fr.columns]
        if missing or len(fr) != n:
            if missing:
                model_matrices(formula, fr)          # raises the unknown-column error
            raise FormulaError(f"formula '{formula.text}': data set {k + 1} has {len(fr)} rows, "
                               f"data set 1 has {n}; expected imputations of one data set "
                               "(same rows and clusters)")
        for c, first in zip(ids, first_group):
            if not np.array_equal(fr[c].to_numpy(), first):
                raise FormulaError(f"formula '{formula.text}': data set {k + 1}'s '{c}' column "
                                   "differs from data set 1's; expected imputations of one data "
                                   "set (same rows and clusters)")
        for i, v in enumerate(names):        # column by column: fr[names] costs a pandas take
            vals[k, :, i] = fr[v].to_numpy(dtype=float)
    col = {v: vals[:, :, i] for i, v in enumerate(names)}

    def build(terms):
        out = np.ones(vals.shape[:2] + (len(terms),))
        for t_, term in enumerate(terms):
            for v in term:
                out[:, :, t_] *= col[v]
        return out

    ys, xs = col[formula.response], build(formula.fixed)
    zs = build(formula.random) if formula.group else np.zeros(vals.shape[:2] + (0,))
    bad = ~np.isfinite(ys) | ~np.isfinite(xs).all(-1) | ~np.isfinite(zs).all(-1)
    if bad.any():
        k, row = (int(i[0]) for i in np.nonzero(bad))
        raise FormulaError(f"formula '{formula.text}': data set {k + 1}, row {row + 1} has a missing "
                           "or non-finite value in a model variable; expected complete data "
                           "(analyse imputed data sets)")
    return ys, xs, zs, g, unit


# ------------------------------------------------------------------------------ statistics

def cluster_stats(y, x, z, g, num_clusters: int, weight=None, sums: bool = False):
    """Per-cluster cross-products, float64; x (N, p), z (N, q), y (N,), g (N,) -> dict.

    `weight` (N,) of 0/1 leaves rows out (listwise deletion in a batch of same-shaped data
    sets); the deviance sees only these sums and the row count, so the fit is the fit of the
    kept rows. `sums` adds the plain per-cluster sums of x, y and z that three-level fits need."""
    seg = lambda a: jax.ops.segment_sum(a, g, num_clusters)
    if weight is not None:
        keep = weight > 0
        y = jnp.where(keep, y, 0.0)
        x = jnp.where(keep[:, None], x, 0.0)
        z = jnp.where(keep[:, None], z, 0.0)
    extra = {"x1": seg(x), "y1": seg(y), "z1": seg(z)} if sums else {}
    return {
        **extra,
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


def cluster_layout(s):
    """The per-cluster cross-products of ``cluster_stats`` for one data set, laid out for the
    deviance: Z'Z entry by entry as (J,) vectors (q is tiny: the q x q algebra is written out
    elementwise over clusters, which XLA fuses into a few vectorised loops), [X y]'z_k as (J, p + 1)
    arrays, and [X y]'[X y] summed over clusters once (it does not depend on theta).

    As einsums over (J, q, q) blocks the same algebra ran 2.5x slower and its gradient 3.5x
    slower (see benchmarks/bench_analysis.py, part 3).
    """
    q = s["zz"].shape[-1]
    xy = jnp.sum(s["xy"], 0)
    ww = jnp.block([[jnp.sum(s["xx"], 0), xy[:, None]], [xy[None, :], jnp.sum(s["yy"])[None, None]]])
    out = {"zz": [[s["zz"][:, k, m] for m in range(q)] for k in range(q)],
           "wz": [jnp.concatenate([s["xz"][:, :, k], s["zy"][:, k:k + 1]], -1) for k in range(q)],
           "ww": ww, "n": jnp.sum(s["n"])}
    if "x1" in s:         # three-level fits: per-cluster sums of [X y] and Z, and the row counts
        out.update(w1=jnp.concatenate([s["x1"], s["y1"][:, None]], -1), z1=[s["z1"][:, k] for k in range(q)],
                   nj=s["n"])
    return out


def _lower_of(theta, q: int):
    """Lambda as a q x q list of scalars (None above the diagonal), lme4's column-major theta."""
    lam = [[None] * q for _ in range(q)]
    t = 0
    for c in range(q):
        for r in range(c, q):
            lam[r][c] = theta[t]
            t += 1
    return lam


def _cholesky_lists(a):
    """Lower Cholesky factor of a symmetric matrix given as a list of lists of (J,) arrays."""
    n = len(a)
    low = [[None] * n for _ in range(n)]
    for j in range(n):
        low[j][j] = jnp.sqrt(a[j][j] - sum(low[j][k] ** 2 for k in range(j)))
        for i in range(j + 1, n):
            low[i][j] = (a[i][j] - sum(low[i][k] * low[j][k] for k in range(j))) / low[j][j]
    return low


def _forward_lists(low, b):
    """Solve L x = b, L lower-triangular (lists of (J,) arrays), b a list of (J,) arrays."""
    x = []
    for i in range(len(low)):
        x.append((b[i] - sum(low[i][k] * x[k] for k in range(i))) / low[i][i])
    return x


def _backward_lists(low, b):
    """Solve L'x = b, L lower-triangular (lists of arrays), b a list of arrays."""
    n = len(low)
    x = [None] * n
    for i in reversed(range(n)):
        x[i] = (b[i] - sum(low[k][i] * x[k] for k in range(i + 1, n))) / low[i][i]
    return x


def _inverse_lists(low):
    """A^-1 = L^-T L^-1 from A's lower Cholesky factor (lists of (J,) arrays), as lists."""
    n = len(low)
    li = [[None] * n for _ in range(n)]
    for i in range(n):
        li[i][i] = 1.0 / low[i][i]
        for j in range(i):
            li[i][j] = -sum(low[i][k] * li[k][j] for k in range(j, i)) * li[i][i]
    return [[sum(li[k][b] * li[k][c] for k in range(max(b, c), n)) for c in range(n)] for b in range(n)]


def _cluster_factors(lam, s, q: int):
    """The per-cluster pieces of the profiled deviance at Lambda (`lam`, lists): Z'Z Lambda,
    the Cholesky factor L_j of A_j = Lambda'Z_j'Z_j Lambda + I (as lists of (J,) arrays and of
    (J, 1) columns), sum_j log|A_j|, v -> Lambda'v, and U_j = L_j^-1 Lambda'Z_j'W_j, q x (J, p + 1)."""
    zz, wz = s["zz"], s["wz"]
    zzl = [[sum(zz[k][m] * lam[m][b] for m in range(b, q)) for b in range(q)] for k in range(q)]
    a = [[None] * q for _ in range(q)]
    for i in range(q):
        for j in range(i + 1):
            a[i][j] = a[j][i] = (sum(lam[k][i] * zzl[k][j] for k in range(i, q))
                                 + (1.0 if i == j else 0.0))
    la = _cholesky_lists(a)
    logdet_a = 2.0 * sum(jnp.sum(jnp.log(la[i][i])) for i in range(q))
    lam_t = lambda v: [sum(lam[k][c] * v[k] for k in range(c, q)) for c in range(q)]   # noqa: E731
    la_cols = [[None if e is None else e[:, None] for e in row] for row in la]
    u = _forward_lists(la_cols, lam_t(wz))                   # L^-1 Lambda'Z'W: q x (J, p + 1)
    return zzl, la, la_cols, logdet_a, lam_t, u


def _profile(g, logdet_v, n, p: int, reml: bool):
    """The deviance profiled over beta and sigma2 from W'V^-1W (`g`, W = [X y], V in units of
    sigma2) and log|V| (Bates et al. 2015, eqs. 34 and 41): (deviance, {"beta", "xvx",
    "sigma2"}, the Cholesky factor of X'V^-1X)."""
    xvx, xvy, yvy = g[:p, :p], g[:p, p], g[p, p]
    lx = jnp.linalg.cholesky(xvx)                            # one p x p system per fit
    beta = jax.scipy.linalg.cho_solve((lx, True), xvy)
    r2 = yvy - beta @ xvy
    dof = n - p if reml else n
    dev = logdet_v + dof * (1.0 + jnp.log(2.0 * jnp.pi * r2 / dof))
    if reml:
        dev = dev + 2.0 * jnp.sum(jnp.log(jnp.diagonal(lx)))
    return dev, {"beta": beta, "xvx": xvx, "sigma2": r2 / dof}, lx


def _profiled(theta, s, q: int, reml: bool):
    """Profiled deviance at theta, its gradient, and {"beta", "xvx", "sigma2"} (X'V^-1X in
    units of sigma2).

    `s` is one data set's ``cluster_layout``. With V_j = I + Z_j Lambda Lambda'Z_j' (units of
    sigma2), A_j = Lambda'Z_j'Z_j Lambda + I = L_j L_j' and W = [X y]:

    deviance (Bates et al. 2015, eqs. 34 and 41):
        W_j'Z_j Lambda A_j^-1 Lambda'Z_j'W_j = U_j'U_j,  U_j = L_j^-1 Lambda'Z_j'W_j, so
        X'V^-1X, X'V^-1y and y'V^-1y are blocks of W'W - sum_j U_j'U_j (forward solves only).
    gradient in Lambda (lower triangle; theta is its column-major list), from
        d log|A_j| = 2 tr(Z_j'Z_j Lambda A_j^-1 dLambda'),
        d r2 = -2 sum_j w_j' dLambda Lambda'w_j at the GLS beta (envelope theorem), with
            w_j = Z_j'V_j^-1 r_j = Z_j'r_j - Z_j'Z_j Lambda A_j^-1 Lambda'Z_j'r_j,
        and for REML d log|X'V^-1X| = -2 sum_j tr(Lambda'W_j C W_j' dLambda),
            W_j = Z_j'V_j^-1 X_j, C = (X'V^-1X)^-1.
    Written out over the tiny q axis and elementwise over clusters, this costs about one more
    forward pass; reverse-mode autodiff of the same code compiled 40% slower and ran 3x slower
    (tests/test_lmm.py checks the two agree).
    """
    lam = _lower_of(theta, q)
    wz = s["wz"]
    p = wz[0].shape[-1] - 1
    zzl, la, la_cols, logdet_a, lam_t, u = _cluster_factors(lam, s, q)
    g = s["ww"] - sum(uc.T @ uc for uc in u)                 # W'V^-1W, (p + 1, p + 1)
    dev, aux, lx = _profile(g, logdet_a, s["n"], p, reml)
    beta, xvx = aux["beta"], aux["xvx"]
    dof = s["n"] - p if reml else s["n"]
    r2 = aux["sigma2"] * dof

    # gradient
    sol = _backward_lists(la_cols, u)                        # A^-1 Lambda'Z'W
    vw = [wz[k] - sum(zzl[k][b][:, None] * sol[b] for b in range(q)) for k in range(q)]  # Z'V^-1W
    w = [vk[:, :p] @ -beta + vk[:, p] for vk in vw]         # Z'V^-1 r
    lw = lam_t(w)
    ainv = _inverse_lists(la)
    m = [[sum(zzl[k][b] * ainv[b][c] for b in range(q)) for c in range(q)] for k in range(q)]
    grad_lam = {}                                            # m: (Z'Z Lambda A^-1)_kc
    for c in range(q):
        for k in range(c, q):
            grad_lam[k, c] = jnp.sum(2.0 * m[k][c] - (2.0 * dof / r2) * w[k] * lw[c])
    pm = None
    if reml:
        xinv = jax.scipy.linalg.cho_solve((lx, True), jnp.eye(p, dtype=xvx.dtype))
        wc = [vk[:, :p] @ xinv for vk in vw]
        pm = [[jnp.sum(wc[k] * vw[m_][:, :p], -1) for m_ in range(q)] for k in range(q)]
        for c in range(q):
            for k in range(c, q):
                grad_lam[k, c] = grad_lam[k, c] - 2.0 * jnp.sum(sum(pm[k][m_] * lam[m_][c]
                                                                    for m_ in range(c, q)))
    grad = jnp.stack([grad_lam[r, c] for c in range(q) for r in range(c, q)])
    # G = d deviance / d Sigma, Sigma = Lambda Lambda', for the boundary check (the theta-gradient
    # above is 2 G Lambda): with K_j = Lambda A_j^-1 Lambda' and w_j, Z_j'V_j^-1X_j as above,
    #   G = sum_j Z_j'Z_j - Z_j'Z_j K_j Z_j'Z_j - (dof / r2) w_j w_j' [- Z_j'V_j^-1X_j C X_j'V_j^-1Z_j]
    gsig: list[list] = [[None] * q for _ in range(q)]
    for k in range(q):
        for l in range(k + 1):
            e = s["zz"][k][l] - sum(m[k][c] * zzl[l][c] for c in range(q)) - (dof / r2) * w[k] * w[l]
            if reml:
                assert pm is not None
                e = e - pm[k][l]
            gsig[k][l] = gsig[l][k] = jnp.sum(e)
    return dev, grad, {**aux, "gsig": jnp.stack([jnp.stack(r) for r in gsig])}


def _profiled3(theta, s, q: int, reml: bool, unit, num_units: int):
    """`_profiled` for three-level data: theta is lme4's theta of Lambda followed by lambda3,
    the level-3 intercept's SD relative to sigma; `unit` (J,) holds each group's level-3 unit.

    Units are independent, and a unit's V_k = diag_j(V_j) + lambda3^2 11' (units of sigma2), so
    the matrix determinant lemma and the Woodbury identity over each unit give
        log|V_k|   = sum_j log|A_j| + log(1 + lambda3^2 c_k),      c_k = sum_j 1'V_j^-1 1,
        W'V_k^-1 W = sum_j W_j'V_j^-1 W_j - lambda3^2 / (1 + lambda3^2 c_k) h_k h_k',
                                                                   h_k = sum_j W_j'V_j^-1 1,
    with, as in `_profiled`, W_j'V_j^-1 1 = W_j'1 - U_j't_j and 1'V_j^-1 1 = n_j - t_j't_j,
    t_j = L_j^-1 Lambda'Z_j'1 (Searle, Casella & McCulloch 1992, Variance Components, app. M).
    The rest (GLS beta, profiled sigma2, ML or REML deviance) is `_profiled`'s. The gradient
    is taken by reverse-mode autodiff: the three-level deviance is new and this keeps it in
    one place; `_profiled`'s written-out gradient was 3x faster, which three-level analyses may
    want later.
    """
    (dev, aux), grad = jax.value_and_grad(_deviance3, has_aux=True)(theta, s, q, reml, unit, num_units)
    return dev, grad, aux


def _deviance3(theta, s, q: int, reml: bool, unit, num_units: int):
    """(deviance, aux) of ``_profiled3``, without the gradient."""
    lam = _lower_of(theta[:-1], q)
    l3sq = theta[-1] * theta[-1]
    p = s["wz"][0].shape[-1] - 1
    _, la, _, logdet_a, lam_t, u = _cluster_factors(lam, s, q)
    t1 = _forward_lists(la, lam_t(s["z1"]))                  # q x (J,)
    h = jax.ops.segment_sum(s["w1"] - sum(uk * tk[:, None] for uk, tk in zip(u, t1)), unit, num_units)
    c = jax.ops.segment_sum(s["nj"] - sum(tk * tk for tk in t1), unit, num_units)
    f = l3sq / (1.0 + l3sq * c)
    g = s["ww"] - sum(uc.T @ uc for uc in u) - (h * f[:, None]).T @ h
    return _profile(g, logdet_a + jnp.sum(jnp.log1p(l3sq * c)), s["n"], p, reml)[:2]


def _deviance2(theta, s, q: int, reml: bool):
    """The deviance of ``_profiled`` alone (the boundary check's evaluations need no gradient)."""
    _, _, _, logdet_a, _, u = _cluster_factors(_lower_of(theta, q), s, q)
    p = s["wz"][0].shape[-1] - 1
    return _profile(s["ww"] - sum(uc.T @ uc for uc in u), logdet_a, s["n"], p, reml)[0]


GTOL = 1e-7      # |d deviance / d theta| below which a fit has converged (deviance units)
ARMIJO = 1e-4    # sufficient-decrease constant of the backtracking line search
MIN_STEP = 1e-12  # a line search that has shrunk its step below this has stalled
NOISE = 1e-13    # relative rounding noise of the deviance (a sum over every row and cluster)
FIRST_MOVE = 0.9  # the largest change of any entry of theta in the first step from a start
# The boundary check: where G = d deviance / d Sigma has an eigenvalue below -NEGATIVE_G times
# max(1, |deviance|), the deviance is evaluated at Sigma + t v v' for these t (relative
# covariances of the standardised random-effect columns), and a gain above ESCAPE_GAIN
# (relative) moves the fit there. At an interior minimum G is 0 up to the gradient's tolerance.
NEGATIVE_G = 1e-8
ESCAPE_STEPS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
ESCAPE_GAIN = 1e-10
# A smallest eigenvalue of the standardised Sigma~ below SNAP whose removal changes the deviance
# by less than ESCAPE_GAIN is removed: the optimum is on the boundary (lme4 puts theta at 0 there)
SNAP = 1e-6
SINGULAR_TOL = 1e-4  # lme4's isSingular: a diagonal entry of theta below this is on the boundary


def _direction(opt, grad, state, theta):
    """optax's L-BFGS direction (Liu & Nocedal 1989) from the accepted point theta; the steepest
    descent direction if that is not a descent direction (a memory spoilt by rounding)."""
    upd, state = opt.update(grad, state, theta)
    d = -upd
    return jnp.where(grad @ d < 0.0, d, -grad), state


def _decrease(grad, d):
    """The decrease of the deviance that a full L-BFGS step is expected to bring, -g'd / 2 =
    g'H^-1 g / 2 (the Newton decrement's square over 2, with optax's inverse-Hessian estimate):
    a scale-free measure of how far a fit is from its minimum, where the raw gradient is not (a
    steeply curved deviance keeps a gradient of 1e-3 when the next step would change it by 1e-11)."""
    return -0.5 * (grad @ d)


def _converged(dev, grad, d):
    """Nothing left to gain: a gradient below GTOL, or an expected decrease below the rounding
    noise of the deviance (1e-15 of it); a further step could only chase rounding errors. (At
    1e-13 and GTOL = 1e-5, flat deviances such as cbpp's stopped 8e-5 (relative) short of
    lme4's variance; at these settings every fit of the lme4 battery is within 2e-5.)"""
    return (jnp.max(jnp.abs(grad)) < GTOL) | (_decrease(grad, d) < 1e-15 * jnp.maximum(1.0, jnp.abs(dev)))


def _fit_start(theta0, p: int, q: int = 0):
    """The state before the first evaluation: a zero-length step from theta0 that the first
    loop iteration accepts whatever the deviance (its reference deviance is +inf), so the program
    evaluates the deviance in one place only. `aux` holds _profiled's aux for p fixed effects
    (with q, its q x q G; ``_profiled3`` has none), written out (shaping it by eval_shape would
    trace the deviance a second time)."""
    z = jnp.zeros_like(theta0)
    aux = {"beta": jnp.zeros(p, theta0.dtype), "xvx": jnp.zeros((p, p), theta0.dtype),
           "sigma2": jnp.zeros((), theta0.dtype)}
    if q:
        aux["gsig"] = jnp.zeros((q, q), theta0.dtype)
    return dict(theta=theta0, dev=jnp.array(jnp.inf, theta0.dtype), grad=z,
                aux=aux, state=optax.scale_by_lbfgs().init(theta0), d=z,
                step=jnp.array(0.0, theta0.dtype), done=jnp.array(False),
                stalled=jnp.array(False), fresh=jnp.array(True), jump=jnp.array(False),
                moves=jnp.array(-1))


def _fit_step(s, c, q: int, reml: bool, profiled=_profiled):
    """One deviance evaluation of a fit: try theta + step * d; accept it if it decreases the
    deviance enough (Armijo), then take optax's L-BFGS direction from there; otherwise shrink the
    step by safeguarded quadratic interpolation (Nocedal & Wright 2006, sec. 3.5).

    Every loop iteration costs exactly one value-and-gradient evaluation, and the program holds
    one copy of it: with optax.lbfgs's zoom line search (nested loops, several copies of the
    evaluation) the fitting program compiled for 3.8 s, against lme4's 20 ms per fit.
    A fit that has converged or stalled stays where it is while the rest of the batch finishes.
    `moves` counts accepted steps, from -1 (the start, accepted by the first evaluation);
    `fresh` marks a point whose L-BFGS memory is empty (a start, or a move by the boundary check).
    """
    opt = optax.scale_by_lbfgs()
    trial = c["theta"] + c["step"] * c["d"]
    dev, grad, aux = profiled(trial, s, q, reml)      # the program's only deviance evaluation
    slope = c["grad"] @ c["d"]
    active = ~(c["done"] | c["stalled"])
    finite = jnp.isfinite(dev) & jnp.all(jnp.isfinite(grad))
    ok = finite & (c["jump"] | (dev <= c["dev"] + ARMIJO * c["step"] * slope))
    accept = active & ok
    d_new, state_new = _direction(opt, grad, c["state"], trial)
    # from a fresh memory the direction is the raw gradient, in deviance units: move theta by
    # at most FIRST_MOVE and let the line search shrink it. Less than 1: from theta = 1 a move
    # of 1 along a positive 1-d gradient lands exactly on theta = 0, where the deviance (even in
    # theta) is stationary whatever the data (the boundary check would move it, a round later).
    # 0.9 took the fewest evaluations of 0.25, 0.5, 0.75, 0.9 and 1 on bench_analysis's batch
    first_step = FIRST_MOVE / jnp.maximum(jnp.max(jnp.abs(d_new)), 1e-30)
    # quadratic through dev(0), its slope and dev(step); kept within [0.1, 0.5] of the step
    t = c["step"]
    curv = jnp.where(jnp.isfinite(dev), dev - c["dev"] - slope * t, jnp.inf)
    t_quad = jnp.where(curv > 0, -slope * t * t / (2.0 * curv), 0.5 * t)
    shrink = jnp.clip(t_quad, 0.1 * t, 0.5 * t)
    # a trial that failed where a full step was expected to bring a decrease below the
    # deviance's rounding noise: nothing measurable is left to gain, and shrinking the step would only
    # spend evaluations until MIN_STEP (four fits of bench_analysis's 1,000 took the whole
    # batch from 13 evaluations to 22 that way)
    futile = (active & ~ok & finite & jnp.isfinite(c["dev"])
              & (_decrease(c["grad"], c["d"]) < NOISE * jnp.maximum(1.0, jnp.abs(c["dev"]))))
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)
    out = dict(theta=pick(trial, c["theta"]), dev=pick(dev, c["dev"]), grad=pick(grad, c["grad"]),
               aux=pick(aux, c["aux"]), state=pick(state_new, c["state"]), d=pick(d_new, c["d"]),
               step=jnp.where(accept, jnp.where(c["fresh"], first_step, 1.0),
                              jnp.where(active, shrink, t)),
               done=c["done"] | (accept & _converged(dev, grad, d_new)) | futile,
               fresh=c["fresh"] & ~accept, jump=c["jump"] & ~accept, moves=c["moves"] + accept)
    out["stalled"] = c["stalled"] | (active & ~ok & (shrink * jnp.max(jnp.abs(c["d"])) < MIN_STEP))
    return out


# ------------------------------------------------------------------------ the boundary

def _standardize(lay, q: int):
    """The layout of Z D, D = diag(1 / root mean square of each random-effect column), and D.

    The fitter works in these units (Lambda = D Lambda~, still lower-triangular with the same
    signs on the diagonal), so a slope on a variable measured in thousands and one measured in
    thousandths start alike at Lambda~ = I and one quasi-Newton scale suits all entries of
    theta; a column of zeros keeps D = 1."""
    ss = [jnp.sum(lay["zz"][k][k]) for k in range(q)]
    d = [jnp.where(v > 0, jnp.sqrt(lay["n"] / jnp.where(v > 0, v, 1.0)), 1.0) for v in ss]
    out = dict(lay, zz=[[lay["zz"][k][m] * (d[k] * d[m]) for m in range(q)] for k in range(q)],
               wz=[lay["wz"][k] * d[k] for k in range(q)])
    if "z1" in lay:
        out["z1"] = [lay["z1"][k] * d[k] for k in range(q)]
    return out, jnp.stack(d)


def _sigma_deviance(cov, s3, s, q: int, reml: bool, unit=None, num_units: int = 0):
    """The profiled deviance as a function of the relative covariance Sigma = Lambda Lambda'
    itself (and s3 = lambda3^2 for three-level data), defined on the whole PSD cone, the
    boundary included: with K_j = (I + Sigma Z_j'Z_j)^-1 Sigma = Lambda A_j^-1 Lambda',
    log|A_j| = log|I + Sigma Z_j'Z_j| and W_j'Z_j Lambda A_j^-1 Lambda'Z_j'W_j = W_j'Z_j K_j Z_j'W_j
    (the push-through identity; the three-level terms as in ``_profiled3``).

    At a Sigma of lower rank Lambda gives no gradient in the missing directions (the deviance is
    even in every column of Lambda), where this function does: the boundary check uses it."""
    zz = jnp.stack([jnp.stack(row, -1) for row in s["zz"]], -2)          # (J, q, q)
    wz = jnp.stack(s["wz"], -2)                                           # (J, q, p + 1)
    p = wz.shape[-1] - 1
    m = jnp.eye(q) + cov @ zz
    k = jnp.linalg.solve(m, jnp.broadcast_to(cov, m.shape))
    logdet = jnp.sum(jnp.linalg.slogdet(m)[1])
    g = s["ww"] - jnp.einsum("jka,jkl,jlb->ab", wz, k, wz)
    if num_units:
        z1 = jnp.stack(s["z1"], -1)                                       # (J, q)
        kz = jnp.einsum("jkl,jl->jk", k, z1)
        c = jax.ops.segment_sum(s["nj"] - jnp.sum(z1 * kz, -1), unit, num_units)
        h = jax.ops.segment_sum(s["w1"] - jnp.einsum("jka,jk->ja", wz, kz), unit, num_units)
        f = s3 / (1.0 + s3 * c)
        g = g - (h * f[:, None]).T @ h
        logdet = logdet + jnp.sum(jnp.log1p(s3 * c))
    return _profile(g, logdet, s["n"], p, reml)[0]


def _psd_cholesky(a, q: int):
    """A lower-triangular L with L L' = a for a positive semi-definite a (a zero pivot gives a
    zero column, where a plain Cholesky factorisation gives NaN)."""
    low = [[jnp.zeros((), a.dtype)] * q for _ in range(q)]
    scale = jnp.max(jnp.abs(jnp.diagonal(a)))
    for j in range(q):
        dj = a[j, j] - sum(low[j][k] ** 2 for k in range(j))
        pos = dj > 1e-14 * scale
        low[j][j] = jnp.sqrt(jnp.where(pos, dj, 0.0))
        for i in range(j + 1, q):
            low[i][j] = jnp.where(pos, (a[i, j] - sum(low[i][k] * low[j][k] for k in range(j)))
                                  / jnp.where(pos, low[j][j], 1.0), 0.0)
    return jnp.stack([low[r][c] for c in range(q) for r in range(c, q)])


def _sigma_gradient3(theta, s, q: int, reml: bool, unit, num_units: int):
    """Three-level fits: (G, d deviance / d s3) at theta, by autodiff of ``_sigma_deviance``
    (``_profiled`` writes G out for two-level fits)."""
    lam = theta_to_lambda(theta[:-1], q)
    return jax.grad(_sigma_deviance, argnums=(0, 1))(lam @ lam.T, theta[-1] ** 2, s, q, reml,
                                                      unit, num_units)


def _check_points(theta, v, q: int, three: bool):
    """The points the boundary check evaluates, as rows of theta: Sigma + t v v' for t in
    ESCAPE_STEPS (and s3 + t in three-level fits), then the nearest boundary points (Sigma~ less
    its smallest eigencomponent; and lambda3 = 0 in three-level fits), with whether each one's
    dropped eigenvalue is small (above rounding, so there is something to drop, and below SNAP)."""
    lam = theta_to_lambda(theta[:-1] if three else theta, q)
    cov = lam @ lam.T
    ts = jnp.asarray(ESCAPE_STEPS, theta.dtype)
    cands = jax.vmap(lambda t: _psd_cholesky(cov + t * jnp.outer(v, v), q))(ts)
    w, u = jnp.linalg.eigh(cov)
    edge = _psd_cholesky(cov - w[0] * jnp.outer(u[:, 0], u[:, 0]), q)[None]
    small = (w[0] > 1e-12 * jnp.maximum(1.0, jnp.trace(cov))) & (w[0] < SNAP)
    if not three:
        return jnp.concatenate([cands, edge]), small[None]
    s3 = theta[-1:]
    keep = jnp.broadcast_to(theta[:-1], cands.shape)
    points = jnp.concatenate([
        jnp.concatenate([cands, jnp.broadcast_to(s3, (len(ts), 1))], -1),
        jnp.concatenate([keep, jnp.sqrt(theta[-1] ** 2 + ts)[:, None]], -1),
        jnp.concatenate([edge, s3[None]], -1),
        theta.at[-1].set(0.0)[None]])
    small3 = (theta[-1] ** 2 > 1e-24) & (theta[-1] ** 2 < SNAP)
    return points, jnp.stack([small, small3])


def _boundary_check(c, lay, q: int, deviance, gradient3=None):
    """The optimality conditions of the bounded problem, for a batch of fits that L-BFGS has
    left: (which fits a better point was found for, theta there).

    lme4 minimises over Lambda with a non-negative diagonal, that is over every positive
    semi-definite Sigma. A point with a zero theta-gradient is a minimum over that cone only if
    G = d deviance / d Sigma is positive semi-definite as well (the zero theta-gradient, 2 G
    Lambda, then gives G Sigma = 0: the KKT conditions of the cone). For q = 1 this is the
    one-sided derivative in the variance at 0, which the theta-gradient, 0 there by symmetry,
    cannot show. Where G's lowest eigenvalue is below -NEGATIVE_G (relative), its eigenvector v
    is the direction that lowers the deviance, and the deviance at Sigma + t v v' over
    ESCAPE_STEPS (and at s3 + t for the level-3 intercept) tests the boundary against the
    interior: a gain above ESCAPE_GAIN sends the fit there. Every fit is also compared with its
    nearest boundary point (``_check_points``), where the deviance may be lower (a second
    minimum) or equal (an optimum on the boundary that L-BFGS, unbounded, approaches without
    reaching: there lme4's bound puts theta at 0, and so does this).

    The escape points are evaluated only when some fit of the batch needs them, so interior
    fits cost one eigen-decomposition of G and a deviance at the boundary point.
    `gradient3(theta, layout)` gives (G, d deviance / d s3) for three-level fits; two-level
    fits carry G from ``_profiled``."""
    theta, dev = c["theta"], c["dev"]
    three = gradient3 is not None
    floor = -NEGATIVE_G * jnp.maximum(1.0, jnp.abs(dev))
    if three:
        gsig, g3 = jax.vmap(gradient3)(theta, lay)
        need3 = g3 < floor
    else:
        gsig = c["aux"]["gsig"]
        need3 = jnp.zeros(dev.shape, bool)
    w, vecs = jnp.linalg.eigh(0.5 * (gsig + jnp.swapaxes(gsig, -1, -2)))
    need = jnp.isfinite(dev) & ((w[:, 0] < floor) | need3)
    k = len(ESCAPE_STEPS) * (1 + three)
    points, small = jax.vmap(lambda th, v: _check_points(th, v, q, three))(theta, vecs[:, :, 0])
    # one point of every fit per pass, over the boundary points only unless some fit needs the
    # escape points: a loop with one copy of the deviance, which a batch-level branch would
    # need twice (a second of compile)
    def evaluate(i, devs):
        return devs.at[:, i].set(jax.vmap(deviance)(points[:, i], lay))

    devs = jax.lax.fori_loop(jnp.where(jnp.any(need), 0, k), points.shape[1], evaluate,
                             jnp.full(points.shape[:2], jnp.inf, dev.dtype))
    devs = jnp.where(jnp.isfinite(devs), devs, jnp.inf)
    pick = lambda d: jnp.argmin(d, -1)[:, None]                            # noqa: E731
    i_esc, i_b = pick(devs[:, :k]), k + pick(devs[:, k:])
    best = jnp.where(need, jnp.take_along_axis(devs, i_esc, -1)[:, 0], dev)
    dev_b = jnp.take_along_axis(devs, i_b, -1)[:, 0]
    small = jnp.take_along_axis(small, i_b - k, -1)[:, 0]
    at = lambda i: jnp.take_along_axis(points, i[:, :, None], 1)[:, 0]     # noqa: E731
    tol = ESCAPE_GAIN * jnp.maximum(1.0, jnp.abs(dev))
    escape = need & (dev - best > tol)
    to_b = jnp.isfinite(dev_b) & ((dev - dev_b > tol) | (small & (dev_b - dev <= tol)))
    to_b = to_b & ~(escape & (best < dev_b))
    return escape | to_b, jnp.where(to_b[:, None], at(i_b), jnp.where(escape[:, None], at(i_esc), theta))


def _restart(c, escape, theta_new):
    """A fit that the boundary check moves: the next evaluation accepts theta_new whatever its
    deviance (`jump`; the check found it lower, or equal on the boundary) and L-BFGS goes on
    from there with an empty memory. Until then the fit keeps its point and deviance, so a move
    left pending by the last round changes nothing."""
    init = optax.scale_by_lbfgs().init(c["theta"])
    moved = dict(c, d=theta_new - c["theta"], step=jnp.ones_like(c["step"]), state=init,
                 jump=jnp.array(True), done=jnp.array(False),
                 stalled=jnp.array(False), fresh=jnp.array(True), moves=jnp.zeros_like(c["moves"]))
    return jax.tree.map(lambda a, b: jnp.where(escape, a, b), moved, c)


def _lme4_theta(theta, d, q: int, three: bool):
    """theta in lme4's bounded parameterisation from the fitter's: Lambda = D Lambda~ with each
    column's sign chosen to make its diagonal non-negative (the deviance is even in each column,
    so this is the same fit), and |lambda3|."""
    lam = theta_to_lambda(theta[:-1] if three else theta, q)
    lam = d[:, None] * lam * jnp.where(jnp.diagonal(lam) < 0, -1.0, 1.0)[None, :]
    out = jnp.stack([lam[r, c] for c in range(q) for r in range(c, q)])
    return jnp.concatenate([out, jnp.abs(theta[-1:])]) if three else out


def _singular(theta, q: int):
    """lme4's isSingular: a diagonal entry of theta (or lambda3) below SINGULAR_TOL."""
    diag = [t for t, (r, c) in enumerate((r, c) for c in range(q) for r in range(c, q)) if r == c]
    diag += list(range(q * (q + 1) // 2, theta.shape[-1]))
    return jnp.any(theta[jnp.asarray(diag)] < SINGULAR_TOL)


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
    converged: np.ndarray   # (M,) bool: the bounded problem's optimality conditions hold
    nobs: int
    ngroups: int
    psi3: np.ndarray | None = None   # (M,) level-3 intercept variance (three-level formulas)
    ngroups3: int = 0
    singular: np.ndarray | None = None   # (M,) bool: a boundary fit, as lme4's isSingular

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
        if self.formula.group3:
            assert self.psi3 is not None
            out[f"Intercept~~Intercept|{self.formula.group3}"] = self.psi3
        out["Residual~~Residual"] = self.sigma2
        if names and names[0] == "Intercept" and not self.formula.group3:   # as mitml: one group only
            out[f"ICC|{g}"] = self.psi[:, 0, 0] / (self.psi[:, 0, 0] + self.sigma2)
        return out


@functools.lru_cache(maxsize=None)
def _batched_fit(q: int, reml: bool, steps: int, num_clusters: int, weighted: bool, num_units: int = 0):
    """One jitted, vmapped fitter per static setting, so repeated analyses of same-shaped data
    reuse the compiled program instead of tracing a fresh closure each call."""
    return jax.jit(batched_fitter(q, reml, steps, num_clusters, weighted, num_units),
                   compiler_options=xla_options.options(xla_options.FITTER))


def batched_fitter(q: int, reml: bool, steps: int, num_clusters: int, weighted: bool, num_units: int = 0):
    """The vmapped fitter as a plain function, for a program of its caller's (a simulation
    batch fits inside its own program): fit(ys (M, N), xs (M, N, p), zs (M, N, q), g (N,),
    weight (M, N) or None, theta0, unit) -> dict of (M, ...) arrays, the cross-products formed
    in the same program. Trace it with 64-bit types on. With `num_units` (three-level data)
    `unit` (J,) gives each group's level-3 unit, theta0 ends with lambda3, and the result
    holds psi3, the level-3 intercept variance.

    theta0 is the start in the units of the standardised random-effect columns
    (``_standardize``; the identity is lme4's start on standardised data). The fit runs in
    rounds: L-BFGS until every fit in the batch has converged, stalled or taken `steps` steps,
    then the boundary check (``_boundary_check``) of every fit; the fits it moves run another
    round, at most q + 2 rounds in all. `theta` comes back in lme4's bounded parameterisation;
    `kkt` says that the last check found nothing better, `converged` adds the gradient's test,
    `singular` is lme4's isSingular. A fit that fails (a NaN deviance, a stalled line search)
    keeps its last accepted point and its flags say so; the rest of the batch is unaffected."""
    three = bool(num_units)
    rounds = q + 2 + three

    def fit(ys, xs, zs, g, weight, theta0, unit=None):
        if weighted:
            stats = jax.vmap(lambda y, x, z, w: cluster_stats(y, x, z, g, num_clusters, w, three))(
                ys, xs, zs, weight)
        else:
            stats = jax.vmap(lambda y, x, z: cluster_stats(y, x, z, g, num_clusters, sums=three))(ys, xs, zs)
        lay, scale = jax.vmap(lambda st: _standardize(cluster_layout(st), q))(stats)
        prof = ((lambda th, st_, q_, r_: _profiled3(th, st_, q_, r_, unit, num_units)) if three
                else _profiled)
        step = jax.vmap(lambda st, c: _fit_step(st, c, q, reml, prof))
        gradient3 = ((lambda th, st: _sigma_gradient3(th, st, q, reml, unit, num_units)) if three
                     else None)
        deviance = ((lambda th, st: _deviance3(th, st, q, reml, unit, num_units)[0]) if three
                    else (lambda th, st: _deviance2(th, st, q, reml)))
        carry = jax.vmap(lambda _: _fit_start(theta0, xs.shape[-1], 0 if three else q))(stats["yy"])

        # L-BFGS until every fit in the batch has converged or stalled, or has taken `steps`
        # steps (each may need several evaluations; 20 per step at most): a batch-level loop, so
        # converged batches stop early instead of spinning through the remaining steps
        def descend(carry):
            def cond(c):
                it, carry = c
                busy = ~(carry["done"] | carry["stalled"]) & (carry["moves"] < steps)
                return (it < 20 * steps) & jnp.any(busy)

            def body(c):
                it, carry = c
                return it + 1, step(lay, carry)

            return jax.lax.while_loop(cond, body, (0, carry))

        def round_cond(r):
            k, _, _, pending = r
            return (k < rounds) & jnp.any(pending)

        def round_body(r):
            k, evals, carry, _ = r
            it, carry = descend(carry)
            escape, theta_new = _boundary_check(carry, lay, q, deviance, gradient3)
            return k + 1, evals + it, jax.vmap(_restart)(carry, escape, theta_new), escape

        _, evals, c, pending = jax.lax.while_loop(
            round_cond, round_body, (0, 0, carry, jnp.ones(stats["yy"].shape[0], bool)))
        theta = jax.vmap(lambda t, d: _lme4_theta(t, d, q, three))(c["theta"], scale)
        lam = jax.vmap(lambda t: theta_to_lambda(t, q))(theta[:, :-1] if three else theta)
        sigma2 = c["aux"]["sigma2"]
        extra = {"psi3": sigma2 * theta[:, -1] ** 2} if three else {}
        out = {**extra, "theta": theta, "deviance": c["dev"], "beta": c["aux"]["beta"],
               "vcov": sigma2[:, None, None] * jnp.linalg.inv(c["aux"]["xvx"]),
               "sigma2": sigma2, "psi": sigma2[:, None, None] * jnp.einsum("mab,mcb->mac", lam, lam),
               "grad_norm": jnp.max(jnp.abs(c["grad"]), -1), "done": c["done"],
               "decrease": jax.vmap(_decrease)(c["grad"], c["d"]), "kkt": ~pending,
               "singular": jax.vmap(lambda t: _singular(t, q))(theta),
               "steps": c["moves"], "evaluations": jnp.broadcast_to(evals, c["moves"].shape)}
        out["converged"] = _flag_converged(out, 1e-3)
        return out

    return fit


def _flag_converged(fit, tol: float):
    """A fit has converged when the boundary check found nothing better (``kkt``) and its
    deviance gradient is below `tol` or a further L-BFGS step is expected to raise the
    log-likelihood by less than 1e-6 (lme4 judges convergence by a gradient scaled by the
    Hessian for the same reason: a raw gradient is not scale-free)."""
    return fit["kkt"] & (fit["done"] | (fit["grad_norm"] < tol) | (fit["decrease"] < 2e-6))


def fit_lmm(formula: str | Formula, frames, *, reml: bool = False, steps: int = 100,
            tol: float = 1e-3) -> LMMFit:
    """Fit an lme4-style formula to one DataFrame or a list of same-shaped DataFrames.

    Data sets are fitted in one vmapped program; every data set must have the same rows and
    clusters (imputations of one data set do). `steps` caps the L-BFGS steps of each fit (each
    step takes one or a few deviance evaluations). `converged` is True for fits that meet the
    optimality conditions of lme4's bounded problem: the boundary check found no better point,
    and the deviance gradient (in theta) is below `tol` or the next step would gain less than
    1e-6 in log-likelihood (``_flag_converged``). `singular` flags boundary fits as lme4's
    isSingular does.
    """
    f = parse_formula(formula) if isinstance(formula, str) else formula
    frames = [frames] if isinstance(frames, pd.DataFrame) else list(frames)
    q = len(f.random)
    if q == 0:
        raise FormulaError(f"formula '{f.text}': no random effects; expected a term like (1 | group)")
    f = nested_codes(f, frames[0])[0]                # three-level: which group holds which
    ys, xs, zs, g, unit = design_arrays(f, frames)
    j = int(g.max()) + 1 if len(g) else 1
    fit = fit_arrays(ys, xs, zs, g, j, reml=reml, steps=steps, unit=unit)
    return LMMFit(f, reml, fit["beta"], fit["vcov"], fit["psi"], fit["sigma2"],
                  -0.5 * fit["deviance"], fit["theta"], _flag_converged(fit, tol),
                  len(g), j, fit.get("psi3"), 0 if unit is None else int(unit.max()) + 1,
                  fit["singular"])


def fit_arrays(ys, xs, zs, g, num_clusters: int, *, weight=None, reml: bool = False,
               steps: int = 100, unit=None) -> dict[str, np.ndarray]:
    """The fitter on design arrays: ys (M, N), xs (M, N, p), zs (M, N, q), cluster index g (N,)
    in 0..num_clusters-1, optional 0/1 row weights (M, N), and for three-level data the level-3
    unit of each cluster (J,). Returns numpy arrays with a leading M axis: beta, vcov, psi,
    sigma2, deviance, theta, grad_norm, done, kkt, converged, singular (and psi3). For
    simulation studies, where the design matrices are built directly rather than from a formula
    and data frames."""
    q = np.shape(zs)[-1]
    with jax.enable_x64(True):
        # numpy in, so the jitted program does the one transfer (no eager conversion programs)
        arr = lambda a: np.asarray(a, np.float64)
        # lme4's start on standardised columns: Lambda~ = I (and lambda3 = 1)
        theta0 = start_theta(q, unit is not None)
        k = 0 if unit is None else int(np.max(unit)) + 1
        fitter = _batched_fit(q, reml, steps, int(num_clusters), weight is not None, k)
        fit = jax.device_get(fitter(arr(ys), arr(xs), arr(zs), np.asarray(g),
                                    None if weight is None else arr(weight), theta0,
                                    None if unit is None else np.asarray(unit, np.int32)))
    return {k: np.asarray(v) for k, v in fit.items()}


def start_theta(q: int, three: bool = False) -> np.ndarray:
    """lme4's start, Lambda = I (and lambda3 = 1), as theta: the fitter's start in the units of
    the standardised random-effect columns."""
    return np.asarray([1.0 if r == c else 0.0 for c in range(q) for r in range(c, q)]
                      + ([1.0] if three else []))


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
    if f.group3:
        raise FormulaError(f"formula '{f.text}': the log-likelihood at given parameters (D3) is not "
                           "supported yet for three-level formulas; expected D1 or D2")
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
        y, x, z, g, _ = model_matrices(f, frame)
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
