"""The scans that run a sampler (kernels.sampler) and what they monitor.

`make_runner` scans the sampler's step over burn-in and imputation phases inside one jitted
program, vmapped over chains and over a leading data-set axis; each chain's key for sweep t is
fold_in(chain_key, t), so a chain's stream does not depend on how many chains or data sets share
the batch.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import rhat
from .blocks import Phase
from .impute import missing_values
from .sampler import build_sampler
from .state import State
from .structure import Structure


def monitored(st: Structure, state: State):
    """The parameters whose convergence is monitored, as one flat vector (see `parameter_labels`)."""
    parts = []
    for blk, bs in zip(st.blocks, state.blocks):
        parts.append(bs.beta)
        q = blk.num_random
        if q:
            rows, cols = jnp.tril_indices(q)
            parts.append(bs.sigma[rows, cols])
        if bs.level3 is not None:                 # st.has_level3(blk)
            parts.append(bs.level3.s3[None])
        if bs.probit is not None:                 # blk.codes
            parts.append(bs.probit.tau[2:blk.categories])        # the free thresholds tau_2..tau_(K-1)
        else:
            parts.append(bs.s2[None])
    return jnp.concatenate(parts)


class ParameterLabel(NamedTuple):
    block: int
    group: str      # 'fixed' | 'ranvar' | 'errvar' | 'threshold'
    index: tuple    # type: ignore[assignment]  # term index, or (row, col) of Sigma, or ("level3",), or ()


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
    sampler = build_sampler(st)

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
        init = over(lambda k, d: sampler.init(jax.random.fold_in(k, 2**31 - 1), d), (0, None), 0)
        states = init(chain_keys, data)
        mon = over(partial(monitored, st), 0, 0)
        collect = over(lambda s, d: missing_values(st, s.x, d.clusters, d.miss_index), (0, None), 0)
        step_fn = over(lambda k, s, d, t: sampler.step(jax.random.fold_in(k, t), s, d,
                                                       Phase(t < warmup, t < burn)),
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
