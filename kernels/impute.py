"""Draws of missing values from their full conditionals (docs/design/model.md, step 7).

A missing value of variable v appears in its own block (as the outcome) and in every child block
that uses v as a predictor. Each child's linear predictor is affine in v, eta_c(v) = a_c + b_c v,
with b_c the sum of the terms that hold v, each without v, and a_c = eta_c - b_c v, so interactions
and random slopes make b_c row-specific without any special case. The conditional is normal:

    precision = 1/s2_own + sum_c b_c^2 / s2_c
    mean      = (mu_own/s2_own + sum_c b_c (v_c - a_c)/s2_c) / precision

(the product of normal kernels in v; e.g. Enders, Du & Keller 2020, Psychological Methods 25,
for this factored-regression form). For a level-2 variable the child terms of all rows of a
cluster are summed. No Metropolis step is needed.

Values are drawn only at the missing cells (index lists fixed per data set), so the random-number
cost follows the number of missing values, not the number of rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .blocks import affine_in, child_response, latents_at, linear_predictor, rows_of, spread, sum_up, values_at
from . import ordinal
from .clusters import ClusterArrays
from .state import BlockState
from .stream import Stream
from .structure import VAR, Factor, Structure


def child_terms(st: Structure, v: int, blocks: tuple[BlockState, ...], x, ca: ClusterArrays):
    """(precision, linear) terms that v's child blocks add to its conditional, at rows (level 1),
    clusters (level 2) or level-3 units: sum_c b_c^2 / s2_c and sum_c b_c (v_c - a_c) / s2_c,
    a child's rows summed over each cluster or unit of a higher-level v."""
    level = st.var_levels[v]
    n = st.rows(level)
    prec = jnp.zeros((n,), x.dtype)
    lin = jnp.zeros((n,), x.dtype)
    for c in st.children_of_var(v):
        child = st.blocks[c]
        cs = blocks[c]
        lat = latents_at(st, child, blocks, ca)
        rows, w = rows_of(st, child, x, ca)
        a, slope = affine_in(st, child, cs, rows, lat, ca, Factor(VAR, v), rows[:, v])
        resid = child_response(child, cs, rows) - a
        p_rows, l_rows = w * slope * slope / cs.s2, w * slope * resid / cs.s2
        p_rows = sum_up(st, p_rows, ca, child.level, level)
        l_rows = sum_up(st, l_rows, ca, child.level, level)
        prec, lin = prec + p_rows, lin + l_rows
    return prec, lin


def conditional(st: Structure, v: int, blocks: tuple[BlockState, ...], x, ca: ClusterArrays):
    """Mean and precision of v's full conditional, at rows (level 1) or clusters (level 2)."""
    own = st.blocks[st.block_of(v)]
    ob = blocks[st.block_of(v)]
    x_rows, _ = rows_of(st, own, x, ca)
    mu = linear_predictor(st, own, ob, x_rows, latents_at(st, own, blocks, ca), ca)
    c_prec, c_lin = child_terms(st, v, blocks, x, ca)
    prec = 1.0 / ob.s2 + c_prec
    lin = mu / ob.s2 + c_lin
    return lin / prec, prec


def category_log_weights(st: Structure, v: int, blocks, x, ca: ClusterArrays, idx=None):
    """[log P(v = code_k | everything else)], K arrays (n,), up to a constant per row (or
    cluster; only the cells `idx` when given), for an
    ordinal v: its own probit probability Phi(tau_k - mu) - Phi(tau_(k-1) - mu) times every
    child's likelihood at v = code_k, which (each child being affine in v) is
    exp(B code_k - A code_k^2 / 2) with A, B the child terms of `child_terms`
    (docs/design/model.md, step 7).
    Also returns mu, v's own linear predictor at the same rows."""
    b = st.block_of(v)
    own, ob = st.blocks[b], blocks[b]
    x_rows, _ = rows_of(st, own, x, ca)
    mu = linear_predictor(st, own, ob, x_rows, latents_at(st, own, blocks, ca), ca)
    c_prec, c_lin = child_terms(st, v, blocks, x, ca)
    if idx is not None:        # only the missing cells: the K probit terms are the costly part
        mu, c_prec, c_lin = (a.at[idx].get(mode="fill", fill_value=0.0) for a in (mu, c_prec, c_lin))
    own_part = ordinal.all_category_log_probs(ob.probit.tau, mu, own.categories)     # K x (n,)
    return [lp + c_lin * code - 0.5 * c_prec * code * code
            for lp, code in zip(own_part, own.codes)], mu


def impute_variable(rng: Stream, st: Structure, k: int, blocks, x, ca: ClusterArrays, miss_index):
    """Redraw the missing cells of the k-th incomplete variable; returns (x, blocks).

    For an ordinal variable the category and its latent response are drawn together: the
    category from its conditional with z integrated out, then z given the category (a truncated
    normal under v's own block, the only block z enters), stored in the block's state. Without
    the second part the block's z at those cells would still lie in the old category's interval
    until the next sweep, and every parent whose conditional uses z (`child_response`) would
    condition on a state that the model cannot produce (docs/design/model.md, step 7)."""
    v = st.incomplete[k]
    b = st.block_of(v)
    own = st.blocks[b]
    idx = miss_index
    if own.codes and st.children_of_var(v):
        logw, mu = category_log_weights(st, v, blocks, x, ca, idx)
        cat = ordinal.draw_category(rng.uniform(miss_index.shape), logw)
        draw = sum(jnp.where(cat == c, jnp.asarray(code, x.dtype), 0.0) for c, code in enumerate(own.codes))
        lo, hi = ordinal.interval_of(blocks[b].probit.tau, cat, own.categories)
        latent = ordinal.truncated_normal(rng.uniform(miss_index.shape), mu, lo, hi)
    elif own.codes:
        draw, latent = _ordinal_outcome_draw(st, v, blocks, x, ca, idx, rng.normal(miss_index.shape))
    else:
        z = rng.normal(miss_index.shape)
        mean, prec = conditional(st, v, blocks, x, ca)
        draw = mean.at[idx].get(mode="fill", fill_value=0.0) + z * jax.lax.rsqrt(
            prec.at[idx].get(mode="fill", fill_value=1.0))
    if own.codes:
        probit = blocks[b].probit
        z_new = probit.z.at[per_chain(idx, latent)].set(latent, mode="drop")
        blocks = blocks[:b] + (blocks[b]._replace(probit=probit._replace(z=z_new)),) + blocks[b + 1:]
    level = st.var_levels[v]
    if level == 1:
        return x.at[per_chain(idx, draw), v].set(draw, mode="drop"), blocks
    col = values_at(st, x, ca, level)[:, v].at[per_chain(idx, draw)].set(draw, mode="drop")
    return x.at[:, v].set(spread(st, col, ca, level)), blocks


def per_chain(idx, values):
    """`idx` made to depend on `values`, so that under the runner's vmap over chains it carries
    the chain axis too. A scatter of per-chain values at shared indices is batched cell-major
    ((cells, chains)), and XLA:CPU then fused the code that computes the values into a
    transposing, unvectorised loop (the truncated-normal draws of Ex8.2's imputed efficacy
    cells: 4x slower per cell); with per-chain indices the scatter keeps the chains' own layout.
    The added term is always 0 (nan_to_num guards it)."""
    return idx + jnp.nan_to_num(0.0 * values[:1]).astype(idx.dtype)


def _ordinal_outcome_draw(st: Structure, v: int, blocks, x, ca, idx, z):
    """A missing ordinal value that no other block uses: z ~ N(mu, 1) from its own probit block,
    and the category whose threshold interval holds z (docs/design/model.md, step 7,
    last case); returns (code, z)."""
    b = st.block_of(v)
    own, ob = st.blocks[b], blocks[b]
    x_rows, _ = rows_of(st, own, x, ca)
    mu = linear_predictor(st, own, ob, x_rows, latents_at(st, own, blocks, ca), ca)
    latent = mu.at[idx].get(mode="fill", fill_value=0.0) + z
    cat = 1 + sum((latent > ob.probit.tau[j]).astype(jnp.int32) for j in range(1, own.categories))
    return jnp.asarray(own.codes, x.dtype)[cat - 1], latent


def missing_values(st: Structure, x, ca: ClusterArrays, miss_index):
    """The current values at every missing cell, concatenated over incomplete variables."""
    parts = []
    for k, v in enumerate(st.incomplete):
        col = values_at(st, x, ca, st.var_levels[v])[:, v]
        parts.append(col.at[miss_index[k]].get(mode="fill", fill_value=jnp.nan))
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), x.dtype)
