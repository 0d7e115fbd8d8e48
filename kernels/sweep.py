"""A Gibbs sweep composed from block updates, and the scans that run it.

The sweep is a pure function `(key, state, data) -> state` closed over the static `Structure`
(the blackjax kernel shape): every block's parameters in order, then every incomplete variable.
`run` scans it over burn-in and imputation phases inside one jitted program, vmapped over chains
and over a leading data-set axis; each chain's key for sweep t is fold_in(chain_key, t), so a
chain's stream does not depend on how many chains or data sets share the batch.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import rhat
from .blocks import spread, update_block, values_at
from .stream import Stream, with_stream
from .impute import impute_variable, missing_values
from .state import BlockState, Data, Level3, Probit, State
from .structure import Structure


def init_state(key, st: Structure, data: Data) -> State:
    """Over-dispersed starting values, drawn from the chain's own key.

    Missing cells start at N(0, 1) on the standardised scale (about the observed spread), random
    effects at 0, and variances at random multiples of the standardised variance; the first
    sweep's fixed-effect draw is conditional on these.

    All of them come from one stream (kernels.stream), not a key per draw: each `jax.random`
    call compiles to its own threefry loop kernels on XLA:CPU, and the 17 calls of a start
    were 2.2 s of the 14 s that LLVM spent compiling a simulation batch's program.
    """
    return with_stream(key, lambda rng, data: _start(rng, st, data), data, dtype=data.x.dtype)


def _start(rng: Stream, st: Structure, data: Data) -> State:
    x = data.x
    for k, v in enumerate(st.incomplete):
        idx = data.miss_index[k]
        z = rng.normal(idx.shape)
        level = st.var_levels[v]
        if level == 1:
            x = x.at[idx, v].set(z, mode="drop")
        else:
            col = values_at(st, x, data.clusters, level)[:, v].at[idx].set(z, mode="drop")
            x = x.at[:, v].set(spread(st, col, data.clusters, level))
    blocks = []
    for blk in st.blocks:
        q = blk.num_random
        s2 = 0.3 + 0.7 * rng.uniform()                 # U(0.3, 1)
        scale = 0.1 + 0.4 * rng.uniform()              # U(0.1, 0.5)
        sig = scale * jnp.eye(q, dtype=x.dtype)
        # random effects start as prior draws, not zeros: a child block that uses this block's
        # latent cluster means would otherwise see an all-zero predictor column
        u = jnp.sqrt(scale) * rng.normal((st.num_clusters, q))
        # three-level data: level-3 intercepts start the same way, with the same variance
        level3 = (Level3(jnp.sqrt(scale) * rng.normal((st.num_units,)), jnp.asarray(scale))
                  if st.has_level3(blk) else None)
        if blk.codes:
            # probit scale: unit residual variance; thresholds one latent SD apart to start
            k = blk.categories
            inner = jnp.arange(k - 1, dtype=x.dtype)                   # tau_1 = 0, tau_2 = 1, ...
            tau = jnp.concatenate([jnp.array([-jnp.inf], x.dtype), inner, jnp.array([jnp.inf], x.dtype)])
            probit = Probit(jnp.zeros((st.rows(blk.level),), x.dtype), tau, jnp.full((2,), 0.2, x.dtype))
            blocks.append(BlockState(jnp.zeros((blk.num_fixed,), x.dtype), u, sig,
                                     jnp.ones((), x.dtype), probit, level3))
            continue
        blocks.append(BlockState(
            beta=jnp.zeros((blk.num_fixed,), x.dtype),
            u=u,
            sigma=sig,
            s2=s2,
            level3=level3,
        ))
    return State(x, tuple(blocks))


def sweep(key, st: Structure, state: State, data: Data, warm=False, burning=False):
    """One Gibbs sweep: block parameters, parents before children, then each incomplete variable;
    returns (state, info), info a tuple with each block's info from ``update_block`` (the
    acceptance of its Metropolis moves, or None): what the sampler did, kept out of the state.

    Blocks are listed children first (the first block's outcome is regressed on the later ones),
    so they are updated in reverse: a parent's latent means are refreshed before its children
    condition on them. Any fixed order is a valid Gibbs scan. All the sweep's random numbers come
    from one stream drawn from `key` (kernels.stream).
    """
    return with_stream(key, lambda rng, state, data: _sweep(rng, st, state, data, warm, burning),
                       state, data, dtype=state.x.dtype)


def _sweep(rng: Stream, st: Structure, state: State, data: Data, warm, burning):
    blocks = list(state.blocks)
    info = [None] * len(st.blocks)
    x = state.x
    for b in reversed(range(len(st.blocks))):
        blocks[b], info[b] = update_block(rng, st, b, tuple(blocks), x, data.clusters, warm, burning)
    blocks = tuple(blocks)
    for k in range(len(st.incomplete)):
        x, blocks = impute_variable(rng, st, k, blocks, x, data.clusters, data.miss_index[k])
    return State(x, blocks), tuple(info)


def monitored(st: Structure, state: State):
    """The parameters whose convergence is monitored, as one flat vector (see `parameter_labels`)."""
    parts = []
    for blk, bs in zip(st.blocks, state.blocks):
        parts.append(bs.beta)
        q = blk.num_random
        if q:
            rows, cols = jnp.tril_indices(q)
            parts.append(bs.sigma[rows, cols])
        if st.has_level3(blk):
            parts.append(bs.level3.s3[None])
        if blk.codes:
            parts.append(bs.probit.tau[2:blk.categories])        # the free thresholds tau_2..tau_(K-1)
        else:
            parts.append(bs.s2[None])
    return jnp.concatenate(parts)


class ParameterLabel(NamedTuple):
    block: int
    group: str      # 'fixed' | 'ranvar' | 'errvar' | 'threshold'
    index: tuple    # term index, or (row, col) of Sigma, or ("level3",), or ()


def parameter_labels(st: Structure) -> list[ParameterLabel]:
    out = []
    for b, blk in enumerate(st.blocks):
        out += [ParameterLabel(b, "fixed", (p,)) for p in range(blk.num_fixed)]
        q = blk.num_random
        out += [ParameterLabel(b, "ranvar", (i, j)) for i in range(q) for j in range(i + 1)]
        if st.has_level3(blk):
            out.append(ParameterLabel(b, "ranvar", ("level3",)))
        if blk.codes:
            out += [ParameterLabel(b, "threshold", (k,)) for k in range(2, blk.categories)]
        else:
            out.append(ParameterLabel(b, "errvar", ()))
    return out


class RunOutput(NamedTuple):
    burn_trace: jax.Array    # (BURN, D, C, P) monitored parameters during burn-in
    saved_params: jax.Array  # (S, D, C, P) parameters at each saved iteration
    imputations: jax.Array   # (S, D, C, M) values at the missing cells at each saved iteration
    final: State             # last state, (D, C, ...)
    post_trace: jax.Array    # (S * THIN, D, C, P) every post-burn-in sweep, or (0, D, C, P)
    burn_psr: jax.Array      # (D, 20, P) split R-hat in each of Blimp's burn-in windows
    post_psr: jax.Array      # (D, P) split R-hat of the post-burn-in trace (NaN without one)
    moves: tuple             # per block: (D, C, 2, 2) accepted Metropolis moves of an ordinal
                             # block with K > 2 (rows burn-in / after, columns thresholds /
                             # ridge), None for every other block


def diagnostics(burn_trace, post):
    """Split R-hat on device, vmapped over data sets: Blimp's burn-in table (D, 20, P) from the
    burn-in trace (BURN, D, C, P), and the post-burn-in R-hat (D, P) (NaN without 4 draws)."""
    burn_psr = jax.vmap(rhat.burnin_table, in_axes=1)(burn_trace)
    post_psr = (jax.vmap(rhat.split_rhat, in_axes=1)(post) if post.shape[0] >= 4
                else jnp.full(burn_trace.shape[1:2] + burn_trace.shape[-1:], jnp.nan, burn_trace.dtype))
    return burn_psr, post_psr


def make_runner(st: Structure, burn: int, thin: int, num_saves: int, keep_post: bool = False,
                progress: Callable | None = None, progress_every: int = 0, warmup: int = 0,
                diagnose: bool = True):
    """A jitted function (chain_keys (D, C), data (D, ...)) -> RunOutput.

    One `lax.scan` runs all BURN + num_saves * THIN sweeps, so the sweep is traced and compiled
    once. The burn-in trace and the saved imputations are written into preallocated buffers in
    the carry (a masked write per sweep, cheap next to the sweep itself); the post-burn-in trace
    is a scan output only when asked for, since it grows with the run length. With
    `diagnose=False` the R-hat tables are left out (empty), for runs joined by the caller.
    """
    total = burn + num_saves * thin

    def report(t):
        if progress is not None and progress_every:
            jax.lax.cond((t % progress_every == 0) | (t == total - 1),
                         lambda: jax.debug.callback(progress, t),
                         lambda: None)

    def masked_write(buf, i, value, flag):
        i = jnp.clip(i, 0, buf.shape[0] - 1)
        return jax.lax.dynamic_update_index_in_dim(buf, jnp.where(flag, value, buf[i]), i, 0)

    def scan_sweeps(chain_keys, data, depth: int):
        """All sweeps of chains vmapped `depth` deep: 2 (data sets, then chains), 1 (chains of
        one data set) or 0 (one chain)."""
        def over(f, chain_axes, set_axes):
            """f vmapped over chains, then over data sets, as deep as `depth`."""
            if depth >= 1:
                f = jax.vmap(f, in_axes=chain_axes)
            return jax.vmap(f, in_axes=set_axes) if depth == 2 else f

        # chains share their data set; the sweep index is shared by all
        init = over(lambda k, d: init_state(jax.random.fold_in(k, 2**31 - 1), st, d), (0, None), 0)
        states = init(chain_keys, data)
        mon = over(partial(monitored, st), 0, 0)
        collect = over(lambda s, d: missing_values(st, s.x, d.clusters, d.miss_index), (0, None), 0)
        step_fn = over(lambda k, s, d, t: sweep(jax.random.fold_in(k, t), st, s, d, t < warmup, t < burn),
                       (0, 0, None, None), (0, 0, 0, None))
        p0 = mon(states)
        m0 = collect(states, data)
        # acceptance counts, burn-in and after apart, summed from each sweep's info: (2, 2) per
        # chain for each ordinal block with K > 2 (update_block's info), None for the others
        moves0 = tuple(jnp.zeros(p0.shape[:-1] + (2, 2), jnp.int32) if blk.categories > 2 else None
                       for blk in st.blocks)
        bufs = (jnp.zeros((max(burn, 1),) + p0.shape, p0.dtype),
                jnp.zeros((max(num_saves, 1),) + p0.shape, p0.dtype),
                jnp.zeros((max(num_saves, 1),) + m0.shape, m0.dtype))

        def step(carry, t):
            states, moves, (burn_buf, par_buf, imp_buf) = carry
            report(t)
            states, info = step_fn(chain_keys, states, data, t)
            phase = jnp.where(t < burn, 0, 1)
            moves = jax.tree_util.tree_map(
                lambda m, a: m.at[..., phase, :].add(a.astype(m.dtype)), moves, info)
            p = mon(states)
            burn_buf = masked_write(burn_buf, t, p, t < burn)
            k = t - burn
            is_save = (k >= 0) & (k % thin == thin - 1)
            par_buf = masked_write(par_buf, k // thin, p, is_save)
            if num_saves:
                imp_buf = masked_write(imp_buf, k // thin, collect(states, data), is_save)
            return (states, moves, (burn_buf, par_buf, imp_buf)), (p if keep_post else None)

        (states, moves, (burn_buf, par_buf, imp_buf)), post = jax.lax.scan(
            step, (states, moves0, bufs), jnp.arange(total))
        post = post[burn:] if keep_post else jnp.zeros((0,) + p0.shape, p0.dtype)
        return burn_buf[:burn], par_buf[:num_saves], imp_buf[:num_saves], states, post, moves

    @jax.jit
    def run(chain_keys, data):
        # An axis of length 1 is not vmapped at all: even unbatched data under a size-1 vmap
        # doubled the cost of a sweep on XLA:CPU, so one data set runs its chains vmapped once,
        # and one chain of one data set (a program of jaximpute.run's parallel split) not at all;
        # the missing axes are added after (leading for the state, after time for traces).
        num_sets, num_chains = chain_keys.shape[:2]
        depth = 2 if num_sets > 1 else 1 if num_chains > 1 else 0
        if depth == 2:
            burn_trace, saved, imps, states, post, moves = scan_sweeps(chain_keys, data, 2)
        else:
            one = jax.tree_util.tree_map(lambda a: a[0], data)
            out = scan_sweeps(chain_keys[0] if depth else chain_keys[0, 0], one, depth)
            lead = (1,) * (2 - depth)
            trace = lambda a: a.reshape(a.shape[:1] + lead + a.shape[1:])
            burn_trace, saved, imps, post = map(trace, (out[0], out[1], out[2], out[4]))
            states, moves = jax.tree_util.tree_map(lambda a: a.reshape(lead + a.shape), (out[3], out[5]))
        # diagnostics on device: only summaries need to cross to the host. A run that holds
        # some of the chains leaves them to its caller, on the joined traces (empty tables here).
        if diagnose:
            burn_psr, post_psr = diagnostics(burn_trace, post)
        else:
            burn_psr = post_psr = jnp.zeros((0,), burn_trace.dtype)
        return RunOutput(burn_trace, saved, imps, states, post, burn_psr, post_psr, moves)

    return run
