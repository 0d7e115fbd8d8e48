"""Gibbs updates for the parameters of one regression block (docs/design/model.md, steps 2-5, 8).

Every block is a linear (mixed) model on its own rows, level-1 units or clusters:

    v = T beta + Z u_j + e,   e ~ N(0, s2),   u_j ~ N(0, Sigma)

with flat priors on beta and inverse-Wishart priors on Sigma and s2 (Blimp's prior1-3). The full
conditionals are the standard conjugate ones for the normal linear mixed model (Gelman et al. 2013,
BDA3, ch. 15; Browne & Draper 2006 for the inverse-Wishart choices):

- (beta, u) jointly, by drawing beta with u integrated out and then u given beta (a blocked,
  "collapsed" Gibbs step; Chib & Carlin 1999, Statistics and Computing 9, algorithm 2). With
  Q_j = Z_j'Z_j/s2 + Sigma^-1 the Woodbury identity gives
      beta | .  ~ N(A^-1 b, A^-1),  A = T'T/s2 - sum_j (T_j'Z_j/s2) Q_j^-1 (Z_j'T_j/s2),
                                    b = T'v/s2 - sum_j (T_j'Z_j/s2) Q_j^-1 (Z_j'v_j/s2)
      u_j | .   ~ N(Q_j^-1 l_j, Q_j^-1),  l_j = Z_j'(v_j - T_j beta)/s2
  Drawing beta given u instead lets the intercept and the cluster effects drag each other, and
  mixes slowly when clusters are large or the ICC high (Gelfand, Sahu & Carlin 1995).
  Blocks without random effects draw beta ~ N((T'T)^-1 T'v, s2 (T'T)^-1).
- Sigma | .  ~ IW(S0 + sum_j u_j u_j', df0 + J)
- s2 | .     ~ (S0 + SSE) / chi2(df0 + n)

A block's random intercept is also its outcome's latent cluster mean, which child blocks may use as
a level-2 predictor. Each child's linear predictor is affine in that intercept, so its likelihood
adds b^2/s2_c to Q_j[0, 0] and b (v_c - a_c)/s2_c to l_j[0] (docs/design/model.md, step 8), in
both draws, with b the sum of the child's terms that hold the intercept (each without it) and
a = eta_c - b u: exact for any term in which the intercept appears once.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, TypeVar

import jax
import jax.numpy as jnp

from . import draws, ordinal
from .linalg import spd_inverse
from .clusters import ClusterArrays, cluster_sum, expand, first, first_of_unit, unit_expand, unit_sum
from .state import BlockState
from .stream import Stream
from .structure import LATENT, VAR, Block, Factor, Structure, Term


# ---------------------------------------------------------------- linear predictors

T = TypeVar("T")


def present(value: T | None) -> T:
    """A state or draft field that the block's static structure guarantees where it is read (an
    ordinal block's probit part, a three-level block's level-3 part, a draft's response): checked
    once while tracing, and typed for the type checker."""
    assert value is not None, "a step was picked for a block that lacks the part it updates"
    return value


def values_at(st: Structure, x, ca: ClusterArrays, level: int):
    """The value matrix (N, ...) at the rows of a level: rows, clusters or level-3 units
    (a level-2 or level-3 value is stored on every row of its cluster or unit)."""
    if level == 1:
        return x
    per_cluster = first(x, ca, st.rows_per_cluster)
    return per_cluster if level == 2 else first_of_unit(per_cluster, ca)


def spread(st: Structure, values, ca: ClusterArrays, level: int):
    """Per-level values (J or K, ...) back onto the rows (N, ...); level-1 values unchanged."""
    if level == 3:
        values = unit_expand(values, ca)
    return expand(values, ca, st.rows_per_cluster) if level >= 2 else values


def sum_up(st: Structure, a, ca: ClusterArrays, level: int, to: int):
    """Sums of per-row (level `level`) values `a` over the units of level `to` >= `level`."""
    if level == 1 and to >= 2:
        a, level = cluster_sum(a, ca, st.num_clusters, st.rows_per_cluster), 2
    if level == 2 and to == 3:
        a = unit_sum(a, ca, st.num_units)
    return a


def rows_of(st: Structure, blk: Block, x, ca: ClusterArrays):
    """The block's rows of the value matrix and their weights (0 for padding)."""
    weight = (ca.row_weight, ca.cluster_weight, ca.unit_weight)[blk.level - 1]
    return values_at(st, x, ca, blk.level), weight


def level3_part(st: Structure, blk: Block, v3, ca: ClusterArrays):
    """A block's level-3 random intercepts (K,) at its rows (level-1 rows or clusters)."""
    per_cluster = unit_expand(v3, ca)
    return expand(per_cluster, ca, st.rows_per_cluster) if blk.level == 1 else per_cluster


def latents_at(st: Structure, blk: Block, blocks: tuple[BlockState, ...], ca: ClusterArrays):
    """Current latent cluster means of the block's parents, at the block's rows."""
    out = {}
    for term in blk.terms + blk.random:
        for f in term.factors:
            if f.kind == LATENT and f.index not in out:
                u0 = blocks[f.index].u[:, 0]
                out[f.index] = expand(u0, ca, st.rows_per_cluster) if blk.level == 1 else u0
    return out


def term_value(term: Term, x_rows, lat, skip=None):
    """Product of the term's factors at the block's rows; `skip` leaves one factor out (the
    derivative of the term with respect to that factor, for terms that hold it once)."""
    val = None
    for f in term.factors:
        if f == skip:
            skip = None          # leave out one occurrence only
            continue
        col = x_rows[:, f.index] if f.kind == VAR else lat[f.index]
        val = col if val is None else val * col
    return jnp.ones(x_rows.shape[:1], x_rows.dtype) if val is None else val


def design(terms: tuple[Term, ...], x_rows, lat):
    """(n, len(terms)) matrix of term values."""
    return jnp.stack([term_value(t, x_rows, lat) for t in terms], axis=-1)


def _combine(terms, coef_rows, x_rows, lat, skip=None):
    """sum_k coef_k * term_k at the rows (coef_k a scalar or a row vector); only terms holding
    `skip` when it is given, each differentiated with respect to it."""
    total = None
    for k, t in enumerate(terms):
        if skip is not None and skip not in t.factors:
            continue
        part = coef_rows(k) * term_value(t, x_rows, lat, skip)
        total = part if total is None else total + part
    return jnp.zeros(x_rows.shape[:1], x_rows.dtype) if total is None else total


def random_part(st: Structure, blk: Block, bs: BlockState, x_rows, lat, ca: ClusterArrays, skip=None):
    """Z u at the block's rows (0 for blocks without random effects)."""
    if not blk.random:
        return jnp.zeros(x_rows.shape[:1], x_rows.dtype)
    u_rows = expand(bs.u, ca, st.rows_per_cluster)
    return _combine(blk.random, lambda k: u_rows[:, k], x_rows, lat, skip)


def linear_predictor(st: Structure, blk: Block, bs: BlockState, x_rows, lat, ca):
    eta = (_combine(blk.terms, lambda k: bs.beta[k], x_rows, lat)
           + random_part(st, blk, bs, x_rows, lat, ca))
    return eta + level3_part(st, blk, present(bs.level3).v3, ca) if st.has_level3(blk) else eta


def affine_in(st: Structure, blk: Block, bs: BlockState, x_rows, lat, ca, factor, current):
    """(a, b) with eta = a + b * value-of-`factor`, at the block's rows.

    The linear predictor is affine in any one factor that appears at most once per term, so b is
    the sum of the terms holding it, each without that factor, and a = eta - b * current.
    """
    slope = (_combine(blk.terms, lambda k: bs.beta[k], x_rows, lat, factor)
             + random_part(st, blk, bs, x_rows, lat, ca, factor))
    eta = linear_predictor(st, blk, bs, x_rows, lat, ca)
    return eta - slope * current, slope


# ---------------------------------------------------------------- conditional draws

def _sums(terms):
    """The sums of several same-shaped arrays -> (len(terms),), one reduction each.

    Each reduction fuses with the element-wise product that feeds it, so no product is written
    out. A single stacked reduction (one kernel, fewer to compile) first wrote every product to
    a (len(terms), ...) array: in a batch of 50-100 simulated data sets those stacks were 11% of
    a sweep, and summing term by term sampled 10% faster (0.094 -> 0.085 s per data set,
    benchmarks/bench_simulate.py's model); for the seed's Ex8.2 (one data set) the two ways
    compiled and sampled alike."""
    return jnp.stack([jnp.sum(t) for t in terms])


def _cross_products(tcols, wcols):
    """The P x P matrix of weighted sums sum(w t_i t_j), written out: XLA fuses the P(P+1)/2
    sums, where a (P x N)(N x P) dot_general batched over chains runs as many tiny products."""
    p = len(tcols)
    pairs = [(i, j) for i in range(p) for j in range(i + 1)]
    sums = _sums([wcols[i] * tcols[j] for i, j in pairs])
    cross = [[None] * p for _ in range(p)]
    for k, (i, j) in enumerate(pairs):
        cross[i][j] = cross[j][i] = sums[k]
    return jnp.stack([jnp.stack(row) for row in cross])


def draw_beta(rng: Stream, bs: BlockState, y, t, w):
    """Fixed effects of a block without random effects, given everything else (flat prior)."""
    cols = [t[:, i] for i in range(t.shape[-1])]
    wcols = [w * c for c in cols]
    prec = _cross_products(cols, wcols) / bs.s2
    lin = _sums([wc * y for wc in wcols]) / bs.s2
    return draws.mvn_from_precision_dense(rng, prec, lin)


def draw_beta_u(rng: Stream, st: Structure, blk: Block, bs: BlockState, y, t, z, w, ca, child_prec, child_lin,
                level3=None):
    """Fixed and random effects of a block with random effects, as one blocked draw.

    All per-cluster algebra is elementwise over the cluster axis (q x q unrolled), and the
    P x P system is unrolled too; see the module docstring for the formulas.

    `level3` = s3, the variance of the block's level-3 random intercepts, for a level-1 block of
    three-level data: then (beta, v3, u) are drawn as one block, beta with u and v3 integrated
    out, v3 given beta with u integrated out, then u given both; returns (beta, u, v3). v3_k,
    the random intercepts of unit k's clusters and the intercept are confounded (only sums of
    them meet the data), and Gibbs steps between them would move in tiny, correlated steps
    (Gelfand, Sahu & Carlin 1995); the blocked draw has no such coupling. With
    V_j = Z_j P_j^-1 Z_j' + s2 I the marginal covariance of cluster j's rows given beta and v3
    (P_j the prior precision of u_j, child terms included), c_j = Z_j'1/s2, and the Woodbury
    identity, 1'V_j^-1 1 = n_j/s2 - c_j'Q_j^-1 c_j and T_j'V_j^-1 1 = T_j'1/s2 - T_j'Z_j/s2 Q_j^-1 c_j;
    over a unit, V_k = diag(V_j) + s3 11', so (Woodbury again, p3_k = 1/s3 + sum_j 1'V_j^-1 1)
        beta's precision loses sum_k h_k h_k' / p3_k and its linear term sum_k h_k m_k / p3_k,
            h_k = sum_{j in k} T_j'V_j^-1 1,  m_k = sum_{j in k} 1'V_j^-1 (v_j - Z_j P_j^-1 b_j),
        v3_k | beta ~ N(l3_k / p3_k, 1 / p3_k),  l3_k = sum_{j in k} (1'r_j/s2 - c_j'Q_j^-1 l_j),
    with r = v - T beta and l_j = Z_j'r_j/s2 plus the child terms b_j (as for u_j); then u_j is
    drawn as without v3, its linear term less c_j v3_k.
    """
    p, q = blk.num_fixed, blk.num_random
    csum = lambda a: cluster_sum(a, ca, st.num_clusters, st.rows_per_cluster)
    tcols = [t[:, i] for i in range(p)]
    zcols = [z[:, a] for a in range(q)]
    wz = [w * c for c in zcols]
    ztz = jnp.stack([jnp.stack([csum(wz[a] * zcols[b]) for b in range(q)], -1) for a in range(q)], -2)
    tz = [jnp.stack([csum(wz[a] * tcols[i]) for a in range(q)], -1) for i in range(p)]   # P x (J, q)
    zy = jnp.stack([csum(wz[a] * y) for a in range(q)], -1)                        # (J, q)
    # Written out once: with a few rows per cluster the cluster sums are added slices, element-
    # wise code that XLA fused into each of their dozen consumers and recomputed there (33
    # slices and 28 adds in one product's kernel). The barrier keeps them one kernel's output:
    # a simulated batch of 100 clusters of 10 imputed 15% faster (A/B, 2 runs each); 50 of 20
    # and the seed's Ex8.2 alike.
    ztz, tz, zy = jax.lax.optimization_barrier((ztz, tz, zy))
    prec_u = (ztz / bs.s2 + _inverse(bs.sigma)).at[:, 0, 0].add(child_prec)       # (J, q, q)
    lin0 = (zy / bs.s2).at[:, 0].add(child_lin)                                    # (J, q)
    cov_u = 1.0 / prec_u if q == 1 else spd_inverse(prec_u)
    # The per-cluster products below run over the tiny P and q axes, so they are written out
    # as sums of (J, q) arrays: as broadcast-multiply-reduce expressions over (J, P, P, q) they
    # were the most expensive fusions of the seed model's sweep on XLA:CPU (0.25 ms of 1.5).
    g = [sum(tz[i][:, m:m + 1] * cov_u[:, m, :] for m in range(q)) / bs.s2 for i in range(p)]
    wt = [w * c for c in tcols]
    ttt = _cross_products(tcols, wt)
    corr = _cross_products(tz, g)              # sum over clusters of T_j'Z_j Q_j^-1 Z_j'T_j / s2
    prec_beta = (ttt - corr) / bs.s2
    lin_beta = _sums([c * y for c in wt]) / bs.s2 - _sums([gi * lin0 for gi in g])
    if level3 is not None:
        usum = lambda a: unit_sum(a, ca, st.num_units)  # noqa: E731
        c = ztz[:, :, 0] / bs.s2                       # Z_j'1 / s2 (the first random term is 1)
        cq = jnp.stack([sum(cov_u[:, a, m] * c[:, m] for m in range(q)) for a in range(q)], -1)
        p3 = 1.0 / level3 + usum(c[:, 0] - jnp.sum(c * cq, -1))
        # 1'V_j^-1 (.) of a cluster's linear term l (J, q): 1'r/s2 is l[:, 0] less the child term
        one_v = lambda l: l[:, 0] - child_lin - jnp.sum(cq * l, -1)  # noqa: E731
        h = [usum(tz[i][:, 0] / bs.s2 - jnp.sum(g[i] * c, -1)) for i in range(p)]   # P x (K,)
        prec_beta = prec_beta - _cross_products(h, [hi / p3 for hi in h])
        lin_beta = lin_beta - _sums([hi * usum(one_v(lin0)) / p3 for hi in h])
    beta = draws.mvn_from_precision_dense(rng, prec_beta, lin_beta)
    lin_u = lin0 - sum(tz[i] * beta[i] for i in range(p)) / bs.s2
    if level3 is not None:
        v3 = usum(one_v(lin_u)) / p3 + rng.normal(p3.shape) * jax.lax.rsqrt(p3)
        lin_u = lin_u - c * unit_expand(v3, ca)[:, None]
    if q == 1:
        z0 = rng.normal(lin_u.shape)
        u = lin_u * cov_u[:, :, 0] + z0 * jnp.sqrt(cov_u[:, :, 0])
    else:
        u = draws.mvn_from_precision(rng, prec_u, lin_u)
    return (beta, u) if level3 is None else (beta, u, v3)


def _inverse(sigma):
    return 1.0 / sigma if sigma.shape[-1] == 1 else spd_inverse(sigma)


def draw_sigma(rng: Stream, st: Structure, blk: Block, u, cw):
    q = blk.num_random
    ss = jnp.einsum("j,ja,jb->ab", cw, u, u)
    scale = ss + st.prior.scale(q) * jnp.eye(q, dtype=u.dtype)
    return draws.inverse_wishart(rng, scale, st.prior.df(q) + jnp.sum(cw))


def draw_s3(rng: Stream, st: Structure, v3, uw):
    """The variance of a block's level-3 random intercepts: the q = 1 inverse-Wishart draw."""
    return draws.scaled_inv_chi2(rng, jnp.sum(uw * v3 * v3) + st.prior.scale(1),
                                 st.prior.df(1) + jnp.sum(uw))


def draw_s2(rng: Stream, st: Structure, resid, w):
    sse, n = _sums([w * resid * resid, w])
    return draws.scaled_inv_chi2(rng, sse + st.prior.scale(1), st.prior.df(1) + n)


def child_response(child: Block, cs: BlockState, x_rows):
    """What a child block regresses, at its rows: its outcome's values, or for an ordinal child
    its latent responses z (given z, the probit child is a normal regression with unit variance,
    and the category constraint does not involve the parent: the augmented Gibbs step is exact)."""
    return present(cs.probit).z if child.codes else x_rows[:, child.outcome]


def latent_child_terms(st: Structure, b: int, blocks, x, ca):
    """Precision and linear terms (J,) that the child blocks add to block b's random intercept."""
    prec = jnp.zeros((st.num_clusters,), x.dtype)
    lin = jnp.zeros((st.num_clusters,), x.dtype)
    for c in st.children_of_latent(b):
        child = st.blocks[c]
        cs = blocks[c]
        x_rows, w = rows_of(st, child, x, ca)
        lat = latents_at(st, child, blocks, ca)
        a, slope = affine_in(st, child, cs, x_rows, lat, ca, Factor(LATENT, b), lat[b])
        resid = child_response(child, cs, x_rows) - a
        p_rows, l_rows = w * slope * slope / cs.s2, w * slope * resid / cs.s2
        if child.level == 1:
            p_rows = cluster_sum(p_rows, ca, st.num_clusters, st.rows_per_cluster)
            l_rows = cluster_sum(l_rows, ca, st.num_clusters, st.rows_per_cluster)
        prec, lin = prec + p_rows, lin + l_rows
    return prec, lin


# ---------------------------------------------------------------- one block's update, step by step

class Phase(NamedTuple):
    """Where the chain is, as traced bools: `warm` in the first burn-in sweeps (random slopes held
    near zero, `hold_slopes`), `burning` in burn-in (proposal scales tuned, `tune_scales`)."""

    warm: jax.Array | bool = False
    burning: jax.Array | bool = False


SAMPLING = Phase()          # after burn-in: no warm start, no tuning


class Context(NamedTuple):
    """What the steps of one block's update read and do not change: the block, the other blocks'
    current states, and its rows' values, weights, latent parent means and designs."""

    st: Structure
    b: int
    blocks: tuple[BlockState, ...]
    x: jax.Array
    ca: ClusterArrays
    phase: Phase
    x_rows: jax.Array
    w: jax.Array
    lat: dict
    t: jax.Array                 # fixed-effect design at the rows
    z: jax.Array | None          # random-effect design (blocks with random effects)

    @property
    def blk(self) -> Block:
        return self.st.blocks[self.b]


class Draft(NamedTuple):
    """The block's state as its update goes along, with what one step hands the next."""

    bs: BlockState
    y: jax.Array | None = None       # the regressed response: the outcome, or an ordinal block's z
    mu: jax.Array | None = None      # an ordinal block's linear predictor (for thresholds and z)
    cat: jax.Array | None = None     # an ordinal block's categories 1..K at its rows
    resid: jax.Array | None = None   # y less the linear predictor, after the regression draw
    parts: tuple = ()                # z_k u_k at the rows, per random effect (the slope moves)
    info: jax.Array | None = None    # acceptance of the threshold and ridge moves (K > 2)


def context(st: Structure, b: int, blocks: tuple[BlockState, ...], x, ca: ClusterArrays,
            phase: Phase = SAMPLING) -> Context:
    blk = st.blocks[b]
    x_rows, w = rows_of(st, blk, x, ca)
    lat = latents_at(st, blk, blocks, ca)
    z = design(blk.random, x_rows, lat) if blk.random else None
    return Context(st, b, blocks, x, ca, phase, x_rows, w, lat, design(blk.terms, x_rows, lat), z)


def start_draft(ctx: Context) -> Draft:
    blk, bs = ctx.blk, ctx.blocks[ctx.b]
    if blk.codes:
        return Draft(bs, mu=linear_predictor(ctx.st, blk, bs, ctx.x_rows, ctx.lat, ctx.ca),
                     cat=category_of(ctx.x_rows[:, blk.outcome], blk.codes))
    return Draft(bs, y=ctx.x_rows[:, blk.outcome])


def thresholds(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """An ordinal block's free thresholds (K > 2), with the latent responses integrated out
    (Cowles 1996; docs/design/model.md, step 6): one joint Metropolis-Hastings proposal, then
    (with the ridge option) a shift along the intercept-threshold ridge (``ordinal.ridge_step``).
    Info: whether each move was accepted."""
    blk, bs = ctx.blk, d.bs
    cat, mu, pb = present(d.cat), present(d.mu), present(bs.probit)
    tau, acc, loglik = ordinal.threshold_step(rng.uniform((blk.categories - 2,)), rng.uniform(), pb.tau,
                                              cat, mu, ctx.w, pb.tau_scale[0])
    if ctx.st.options.ridge:
        tau, mu, shift = ordinal.ridge_step(rng.normal(), rng.uniform(), tau, cat, mu, ctx.w,
                                            pb.tau_scale[1], loglik)
    else:
        shift = jnp.zeros((), mu.dtype)
    bs = bs._replace(beta=bs.beta.at[0].add(shift), probit=pb._replace(tau=tau))
    return d._replace(bs=bs, mu=mu, info=jnp.stack([acc, shift != 0]))


def tune_scales(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """Burn-in only: each move's proposal SD takes a Robbins-Monro step on its log toward its own
    acceptance rate, 0.35 for the joint threshold proposal (docs/design/model.md, step 6), 0.44
    for the one-dimensional ridge shift (Gelman, Roberts & Gilks 1996). With the threshold SD the
    ridge move accepted 84% of its too-short steps."""
    pb = present(d.bs.probit)
    scale = pb.tau_scale
    target = jnp.asarray([0.35, 0.44], scale.dtype)
    tuned = jnp.where(ctx.phase.burning, scale * jnp.exp(0.1 * (present(d.info).astype(scale.dtype) - target)),
                      scale)
    return d._replace(bs=d.bs._replace(probit=pb._replace(tau_scale=tuned)))


def latent_responses(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """An ordinal block's latent responses z given the categories (Albert & Chib 1993); the
    block is then a normal regression of z with unit residual variance."""
    pb, cat, mu = present(d.bs.probit), present(d.cat), present(d.mu)
    y = ordinal.truncated_normal(rng.uniform(mu.shape), mu, pb.tau[cat - 1], pb.tau[cat])
    bs = d.bs._replace(s2=jnp.ones_like(d.bs.s2), probit=pb._replace(z=y))
    return d._replace(bs=bs, y=y)


def _fixed_part(t, beta, p: int):
    return sum(beta[k] * t[:, k] for k in range(p))


def mixed_regression(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """(beta, u) jointly, with the level-3 intercepts in three-level data (`draw_beta_u`); the
    child blocks that use the random intercept as a latent mean add their terms; then the
    residual and each random effect's part of the predictor, for the steps that follow."""
    st, blk, bs, ca, y, z = ctx.st, ctx.blk, d.bs, ctx.ca, present(d.y), present(ctx.z)
    c_prec, c_lin = latent_child_terms(st, ctx.b, ctx.blocks, ctx.x, ca)
    if st.has_level3(blk):
        l3 = present(bs.level3)
        beta, u, v3 = draw_beta_u(rng, st, blk, bs, y, ctx.t, z, ctx.w, ca, c_prec, c_lin, l3.s3)
        bs = bs._replace(level3=l3._replace(v3=v3))
    else:
        beta, u = draw_beta_u(rng, st, blk, bs, y, ctx.t, z, ctx.w, ca, c_prec, c_lin)
    u_rows = expand(u, ca, st.rows_per_cluster)
    parts = tuple(z[:, k] * u_rows[:, k] for k in range(blk.num_random))
    resid = y - _fixed_part(ctx.t, beta, blk.num_fixed) - sum(parts)
    if st.has_level3(blk):
        resid = resid - level3_part(st, blk, present(bs.level3).v3, ca)
    return d._replace(bs=bs._replace(beta=beta, u=u), resid=resid, parts=parts)


def level3_regression(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """A level-2 block of three-level data: its level-3 intercept is a random intercept one level
    up (clusters as rows, units as clusters), and takes the same blocked draw as `mixed_regression`."""
    st, blk, bs, ca, y = ctx.st, ctx.blk, d.bs, ctx.ca, present(d.y)
    l3 = present(bs.level3)
    up = st._replace(num_rows=st.num_clusters, num_clusters=st.num_units, rows_per_cluster=0)
    zeros = jnp.zeros((st.num_units,), y.dtype)
    beta, u_up = draw_beta_u(rng, up, blk._replace(random=(Term(()),)),
                             bs._replace(sigma=l3.s3.reshape(1, 1)), y, ctx.t,
                             jnp.ones((y.shape[0], 1), y.dtype), ctx.w, ca.up(), zeros, zeros)
    v3 = u_up[:, 0]
    resid = y - _fixed_part(ctx.t, beta, blk.num_fixed) - level3_part(st, blk, v3, ca)
    return d._replace(bs=bs._replace(beta=beta, level3=l3._replace(v3=v3)), resid=resid)


def fixed_regression(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """beta of a block without random effects (`draw_beta`), and its residual."""
    beta = draw_beta(rng, d.bs, d.y, ctx.t, ctx.w)
    return d._replace(bs=d.bs._replace(beta=beta),
                      resid=d.y - _fixed_part(ctx.t, beta, ctx.blk.num_fixed))


def covariance(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """Sigma given the random effects (`draw_sigma`)."""
    return d._replace(bs=d.bs._replace(sigma=draw_sigma(rng, ctx.st, ctx.blk, d.bs.u, ctx.ca.cluster_weight)))


def expand_slopes(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """The parameter-expansion move of the random effects (`scale_slopes`), skipped while the
    slopes are held near zero (`hold_slopes`)."""
    bs, warm = d.bs, ctx.phase.warm
    before = present(d.resid)
    u, sigma, resid = scale_slopes(rng, ctx.st, ctx.b, bs.u, bs.sigma, bs.s2, before, d.parts, ctx.w,
                                   ctx.ca.cluster_weight)
    return d._replace(bs=bs._replace(u=jnp.where(warm, bs.u, u), sigma=jnp.where(warm, bs.sigma, sigma)),
                      resid=jnp.where(warm, before, resid))


def hold_slopes(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """Warm start (the first burn-in sweeps): Sigma becomes diag(Sigma_00, 1e-4, ...), so the next
    (beta, u) draw keeps the random slopes near zero.

    From over-dispersed starts, about half of the chains of a random-slope model with an
    incomplete predictor in a product (x*w, y:x, x and y missing) otherwise fell into a minor
    mode in which large slope variance absorbs the interaction and the imputed x lose their
    relation to y; they stayed there for thousands of sweeps. Chains that start with common
    slopes find the main mode; the sweeps are discarded."""
    sigma = d.bs.sigma
    small = jnp.diag(jnp.full((ctx.blk.num_random,), 1e-4, sigma.dtype)).at[0, 0].set(sigma[0, 0])
    return d._replace(bs=d.bs._replace(sigma=jnp.where(ctx.phase.warm, small, sigma)))


def level3_variance(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """The variance of the block's level-3 intercepts (`draw_s3`)."""
    l3 = present(d.bs.level3)
    return d._replace(bs=d.bs._replace(level3=l3._replace(s3=draw_s3(rng, ctx.st, l3.v3, ctx.ca.unit_weight))))


def residual_variance(rng: Stream, ctx: Context, d: Draft) -> Draft:
    """The residual variance (`draw_s2`); an ordinal block's stays 1, the probit scale."""
    return d._replace(bs=d.bs._replace(s2=draw_s2(rng, ctx.st, d.resid, ctx.w)))


Step = Callable[[Stream, Context, Draft], Draft]


def block_steps(st: Structure, b: int) -> tuple[Step, ...]:
    """The steps of block b's update, picked from its static structure and the sampler options
    (docs/design/model.md, steps 2-6): an ordinal block first moves its thresholds and draws its
    latent responses; then (beta, u) jointly (and the level-3 intercepts), Sigma, the slope moves,
    the level-3 variance and the residual variance, as the block has them."""
    blk = st.blocks[b]
    steps: list[Step] = []
    if blk.codes:
        if blk.categories > 2:
            steps += [thresholds, tune_scales]
        steps.append(latent_responses)
    if blk.random:
        steps += [mixed_regression, covariance]
        if blk.num_random > 1:
            steps += [expand_slopes] if st.options.expansion else []
            steps.append(hold_slopes)
    elif st.has_level3(blk):
        steps.append(level3_regression)
    else:
        steps.append(fixed_regression)
    if st.has_level3(blk):
        steps.append(level3_variance)
    if not blk.codes:
        steps.append(residual_variance)
    return tuple(steps)


def chain(*steps: Step) -> Step:
    """The steps applied in order, each to what the one before returned (as optax.chain composes
    gradient transformations): one Gibbs pass over a block, a composition of exact moves."""
    def run(rng: Stream, ctx: Context, d: Draft) -> Draft:
        for step in steps:
            d = step(rng, ctx, d)
        return d
    return run


def update_block(rng: Stream, st: Structure, b: int, blocks: tuple[BlockState, ...], x, ca,
                 phase: Phase = SAMPLING):
    """One Gibbs pass over block b's parameters (`block_steps`). Returns (the block's new state,
    info): info is the (2,) acceptance of the threshold step and the ridge move of an ordinal
    block with K > 2 categories, None for every other block."""
    ctx = context(st, b, blocks, x, ca, phase)
    d = chain(*block_steps(st, b))(rng, ctx, start_draft(ctx))
    return d.bs, d.info


def category_of(values, codes):
    """Category index 1..K of each value, for the K increasing category values `codes` (static):
    the nearest code, so that standardised float codes map back exactly."""
    mids = [(a + b) / 2.0 for a, b in zip(codes[:-1], codes[1:])]
    return 1 + sum((values > m).astype(jnp.int32) for m in mids)


def scale_slopes(rng: Stream, st: Structure, b: int, u, sigma, s2, r, parts, w, cw):
    """A parameter-expansion move for each random effect k: (u_.k, Sigma) -> (g u_.k, D Sigma D),
    D = diag(1, .., g, .., 1), accepted by Metropolis-Hastings (the random intercept only when
    no child block uses it as a latent cluster mean).

    Why: when a slope is weakly identified per cluster (few rows, noisy outcome), u given Sigma
    stays close to its prior and Sigma given u close to the spread of u, so the usual Gibbs
    pair moves the slope variance in tiny, strongly correlated steps (Gelman, van Dyk, Huang &
    Boscardin 2008, J. Comput. Graph. Stat. 17, "Using redundant parameterizations to fit
    hierarchical models"; Liu & Wu 1999, JASA 94, parameter-expanded data augmentation).
    Rescaling all slopes at once is what the likelihood pins down, and it moves Sigma with it.

    The move is a Metropolis-Hastings step along the group of positive scalings (Liu & Sabatti
    2000, JASA 95, "Generalised Gibbs sampler and multigrid Monte Carlo"), so it leaves the
    posterior exactly invariant. In log g, with W = z_k u_k at the rows (`parts`) and r the
    residual (both updated and returned, r for the residual-variance draw):
    - likelihood: log L(g) - log L(1) = -((g - 1)^2 W'W - 2 (g - 1) W'r) / (2 s2);
    - p(u | Sigma) gives -J log g, the Jacobian of (u_.k, Sigma) (J + q + 1) log g, and the
      inverse-Wishart prior IW(S0, df) -(df + q + 1) log g - tr(S0 (Sigma'^-1 - Sigma^-1)) / 2:
      -df log g in all, plus the S0 term for prior1;
    - proposal log g ~ N(log|g_hat|, tau^2), g_hat = 1 + W'r / W'W the likelihood's best scale
      and tau = sqrt(s2 / W'W) / |g_hat| (at most 1). Under the move, g_hat -> g_hat / g and
      tau is unchanged, so the reverse proposal's density is N(-log g; log|g_hat| - log g, tau^2)
      and the Hastings ratio is exp(((log g - c)^2 - c^2) / (2 tau^2)), c = log|g_hat|.
    """
    q = st.blocks[b].num_random
    parts = list(parts)
    df = st.prior.df(q)
    s0 = st.prior.scale(q)
    inv_diag = jnp.diagonal(_inverse(sigma)) if s0 else jnp.zeros(q, sigma.dtype)   # read only if s0
    # the random intercept is scaled too unless child blocks use it as a latent cluster mean
    # (then the move would change their likelihoods as well)
    first = 1 if st.children_of_latent(b) else 0
    for k in range(first, q):
        wk = parts[k]
        a, c = _sums([w * wk * wk, w * wk * r])
        a = jnp.maximum(a, jnp.finfo(wk.dtype).tiny)
        g_hat = 1.0 + c / a
        centre = jnp.log(jnp.abs(g_hat))
        tau = jnp.minimum(jnp.sqrt(s2 / a) / jnp.abs(g_hat), 1.0)
        lg = centre + tau * rng.normal()
        g = jnp.exp(lg)
        log_ratio = (-((g - 1.0) ** 2 * a - 2.0 * (g - 1.0) * c) / (2.0 * s2)
                     - df * lg
                     + ((lg - centre) ** 2 - centre ** 2) / (2.0 * tau * tau))
        if s0:
            log_ratio = log_ratio - 0.5 * s0 * inv_diag[k] * (jnp.exp(-2.0 * lg) - 1.0)
        accept = jnp.log(1.0 - rng.uniform()) < log_ratio
        g = jnp.where(accept & jnp.isfinite(log_ratio), g, 1.0)
        u = u.at[:, k].multiply(jnp.where(cw > 0, g, 1.0))
        sigma = sigma.at[k, :].multiply(g).at[:, k].multiply(g)
        r = r - (g - 1.0) * wk
        parts[k] = g * wk
    return u, sigma, r
