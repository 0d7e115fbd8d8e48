"""The posterior in the user's terms: parameter labels, the map from the sampler's standardised
scale to the data's units, imputed tables and parameter summaries (host side, numpy).

The device program monitors a flat parameter vector per sweep (kernels.sweep.monitored, labelled
by kernels.sweep.parameter_labels) and returns the imputed cells on the standardised scale;
everything that turns those into what a user reads is here, once, for the report, the API and
the tests.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pandas as pd

from .compile import owners_of
from .kernels import rhat
from .kernels.structure import VAR, Structure, Term
from .kernels.sweep import parameter_labels
from .report import GROUP_TITLES
from .run import RawDraws
from .spec import ModelSpec


def ordinal_codes(spec: ModelSpec) -> dict[int, np.ndarray]:
    """Each ordinal variable's observed codes (by its index in spec.x_vars), from the table the
    model was set up from: imputed values go back to the nearest of them."""
    out = {}
    for k, v in enumerate(spec.x_vars):
        if v.kind == "ordinal":
            col = spec.table.values[:, v.column]
            out[k] = np.unique(col[~np.isnan(col)])
    return out


def fill_imputations(values, drawn, cells, widths, xv, levels, incomplete, owners, codes,
                     nimps: int, chains: int, xp=np):
    """One data set's imputed copies (NIMPS, N, V) in the data's units, for numpy (single runs)
    and jax.numpy (study programs) alike (compile.standardise's array-API pattern).

    `drawn` (S, C, cells) holds the saved standardised draws at the missing cells, each
    incomplete variable's `widths` wide (a batch's padded length); `cells` are compile.standardise's.
    Imputation m is chain m mod C's save m div C. The unit conversion runs in float32 like the
    draws themselves, so a value reads back exactly in the output's shortest float32 digits
    (output.format_values); an ordinal value goes back to the nearest original code."""
    m = np.arange(nimps)
    picked = drawn[m // chains, m % chains]                                  # (M, cells)
    out = xp.repeat(values[None], nimps, axis=0)
    start = 0
    for k, c, width in zip(incomplete, cells, widths):
        v = xv[k]
        vals = picked[:, start:start + c.shape[0]] * xp.float32(v.sd) + xp.float32(v.mean)
        start += width
        if k in codes:
            code = xp.asarray(codes[k])
            vals = code[xp.abs(vals[..., None] - code).argmin(axis=-1)]
        if levels[k] >= 2:
            # a drawn cluster (unit) value fills the rows of its cluster (unit)
            owner, num = owners[levels[k]]
            per = _put(xp.full((nimps, num), xp.nan), (slice(None), c), vals, xp)
            now = out[:, :, v.column]
            out = _put(out, (Ellipsis, v.column), xp.where(xp.isnan(now), per[:, owner], now), xp)
        else:
            out = _put(out, (slice(None), c, v.column), vals, xp)
    return out


def _put(a, index, values, xp):
    """a[index] = values; in place for numpy (on arrays this module made), functional for jax
    (padding indices past the end dropped)."""
    if xp is np:
        a[index] = values
        return a
    return a.at[index].set(values, mode="drop")


def imputed_tables(spec: ModelSpec, raw: RawDraws, nimps: int, chains: int, dataset: int = 0,
                   values: np.ndarray | None = None) -> np.ndarray:
    """(NIMPS, N, V) arrays in the table's row and column order, imputed cells filled."""
    values = spec.table.values if values is None else values
    return fill_imputations(values, raw.imputations[:, dataset], raw.cells[dataset],
                            raw.structure.num_missing, spec.x_vars, raw.structure.var_levels,
                            raw.structure.incomplete, owners_of(raw.layout), ordinal_codes(spec),
                            nimps, chains)


LEVEL3_INTERCEPT = "Intercept (level 3)"     # the label of a block's level-3 intercept variance


def parameter_table(spec: ModelSpec, st: Structure):
    """Labels of the monitored parameters: (block outcome, group, term) per position."""
    rows = []
    for lab in parameter_labels(st):
        bi = spec.block_info[lab.block]
        if lab.group == "fixed":
            term = bi.terms[lab.index[0]]
        elif lab.group == "ranvar" and lab.index == ("level3",):
            term = LEVEL3_INTERCEPT
        elif lab.group == "ranvar":
            i, j = lab.index
            term = f"{bi.random[i]}" if i == j else f"{bi.random[i]}~{bi.random[j]}"
        elif lab.group == "threshold":
            term = f"tau{lab.index[0]}"
        else:
            term = "residual"
        rows.append((bi.outcome, lab.group, term))
    return rows


def _units_matrix(terms, xv, blocks) -> np.ndarray:
    """M with t_orig = M t_std for a block's term list (each row a term in the user's units).

    A VAR factor is m + s * (standardised value) (m = 0 for a variable that is only scaled); a
    LATENT factor, a parent's centred random intercept, is s_parent * (standardised value).
    Expanding a product gives the standardised terms over the subsets of its factors, which the
    term list holds whenever the dropped factors have m != 0 (`spec._centre` guarantees it).
    """
    index = {t: k for k, t in enumerate(terms)}
    m = np.zeros((len(terms), len(terms)))
    for k, term in enumerate(terms):
        loc = [xv[f.index].mean if f.kind == VAR else 0.0 for f in term.factors]
        scale = [xv[f.index].sd if f.kind == VAR else xv[blocks[f.index].outcome].sd
                 for f in term.factors]
        for keep in itertools.product((False, True), repeat=len(term.factors)):
            coef = np.prod([scale[i] if kept else loc[i] for i, kept in enumerate(keep)])
            if coef == 0.0:
                continue
            sub = Term(tuple(f for f, kept in zip(term.factors, keep) if kept))
            m[k, index[sub]] += coef
    return m


def to_original_units(spec: ModelSpec, st: Structure, params: np.ndarray) -> np.ndarray:
    """Map standardised parameter draws (..., P) to the user's units (same layout).

    With t_orig = M t_std for the fixed terms and z_orig = Mz z_std for the random ones (see
    `_units_matrix`), and v = m_v + s_v v_std for the outcome, the exact map is
    beta = s_v M^-T beta_std (+ m_v on the intercept), Sigma = s_v^2 Mz^-T Sigma_std Mz^-1 and
    s2 = s_v^2 s2_std: for a block linear in single variables this is the familiar slope
    s_v / s_x with the intercept absorbing the predictors' means.
    """
    params = np.asarray(params, dtype=np.float64)
    out = params.copy()
    xv = spec.x_vars
    pos = 0
    for blk in st.blocks:
        # an ordinal block's coefficients live on its latent probit scale (mean 0, SD 1 given
        # the predictors), not on the codes' scale
        so, mo = (1.0, 0.0) if blk.codes else (xv[blk.outcome].sd, xv[blk.outcome].mean)
        p = blk.num_fixed
        m = _units_matrix(blk.terms, xv, st.blocks)
        out[..., pos:pos + p] = so * params[..., pos:pos + p] @ np.linalg.inv(m)
        out[..., pos] += mo
        pos += p
        q = blk.num_random
        if q:
            rows, cols = np.tril_indices(q)
            sig = np.zeros(params.shape[:-1] + (q, q))
            sig[..., rows, cols] = params[..., pos:pos + len(rows)]
            sig[..., cols, rows] = params[..., pos:pos + len(rows)]
            a = so * np.linalg.inv(_units_matrix(blk.random, xv, st.blocks)).T
            sig = a @ sig @ a.T
            out[..., pos:pos + len(rows)] = sig[..., rows, cols]
            pos += len(rows)
        if st.has_level3(blk):
            out[..., pos] = params[..., pos] * so * so         # the level-3 intercept variance
            pos += 1
        if blk.codes:
            pos += blk.categories - 2          # thresholds: already on the latent scale
            continue
        out[..., pos] = params[..., pos] * so * so
        pos += 1
    return out


def summaries(spec: ModelSpec, raw: RawDraws, labels) -> pd.DataFrame:
    """Posterior median, SD, 95% interval, split R-hat and ESS of every monitored parameter in
    the user's units, from the post-burn-in trace of data set 0."""
    draws = to_original_units(spec, raw.structure, raw.post_trace[:, 0])   # (T, C, P)
    flat = draws.reshape(-1, draws.shape[-1])
    ess = np.asarray(jax.jit(rhat.ess)(draws.astype(np.float32))) if draws.shape[0] >= 4 else \
        np.full(draws.shape[-1], np.nan)
    q = np.quantile(flat, [0.5, 0.025, 0.975], axis=0)
    return pd.DataFrame({
        "block": [l[0] for l in labels],
        "parameter": [f"{GROUP_TITLES[l[1]].lower()}: {l[2]}" for l in labels],
        "median": q[0], "sd": flat.std(axis=0, ddof=1), "2.5%": q[1], "97.5%": q[2],
        "psr": raw.final_psr[0], "ess": ess,
    })
