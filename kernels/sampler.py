"""The Gibbs sampler of a compiled model, shaped like blackjax's kernels: `build_sampler` returns
`init(key, data) -> state` and `step(key, state, data, phase) -> (state, info)`.

A step is a chain of small pure steps picked in Python from the static `Structure` (its blocks
and `SamplerOptions`): every block's update (kernels.blocks.block_steps), parents before
children, then the draws of every incomplete variable (kernels.impute). All of a step's random
numbers come from one stream drawn from its key (kernels.stream), sized by the code itself.
`info` is what the sampler did (acceptance of its Metropolis moves), kept out of the state.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

from .blocks import SAMPLING, Phase, spread, update_block, values_at
from .impute import impute_variable
from .state import BlockState, Data, Level3, Probit, State
from .stream import Stream, with_stream
from .structure import SamplerOptions, Structure


class Sampler(NamedTuple):
    """`init(key, data) -> State`; `step(key, state, data, phase=Phase()) -> (State, info)`, info
    a tuple with each block's accepted flags of its Metropolis moves in this step (None for
    blocks without them)."""

    init: Callable
    step: Callable


def build_sampler(st: Structure, options: SamplerOptions | None = None) -> Sampler:
    """The sampler of a model's static structure; `options` (static) replace the structure's
    own sampler options. Pure functions of their arguments: jit and vmap them freely."""
    if options is not None:
        st = st._replace(options=options)

    def init(key, data: Data) -> State:
        return init_state(key, st, data)

    def step(key, state: State, data: Data, phase: Phase = SAMPLING):
        return sweep(key, st, state, data, phase)

    return Sampler(init, step)


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


def sweep(key, st: Structure, state: State, data: Data, phase: Phase = SAMPLING):
    """One Gibbs sweep: block parameters, parents before children, then each incomplete variable;
    returns (state, info), info a tuple with each block's info from ``update_block`` (the
    acceptance of its Metropolis moves, or None): what the sampler did, kept out of the state.

    Blocks are listed children first (the first block's outcome is regressed on the later ones),
    so they are updated in reverse: a parent's latent means are refreshed before its children
    condition on them. Any fixed order is a valid Gibbs scan. All the sweep's random numbers come
    from one stream drawn from `key` (kernels.stream).
    """
    return with_stream(key, lambda rng, state, data: _sweep(rng, st, state, data, phase),
                       state, data, dtype=state.x.dtype)


# A step of the sweep: (stream, state, data, phase, info) -> (state, info), info a tuple with
# one entry per block.
SweepStep = Callable[[Stream, State, Data, Phase, tuple], tuple[State, tuple]]


def block_update(st: Structure, b: int) -> SweepStep:
    """Block b's parameters (kernels.blocks.update_block); its info goes to slot b."""
    def step(rng: Stream, state: State, data: Data, phase: Phase, info: tuple):
        bs, moves = update_block(rng, st, b, state.blocks, state.x, data.clusters, phase)
        blocks = state.blocks[:b] + (bs,) + state.blocks[b + 1:]
        return State(state.x, blocks), info[:b] + (moves,) + info[b + 1:]
    return step


def imputation(st: Structure, k: int) -> SweepStep:
    """The missing values of the k-th incomplete variable (kernels.impute.impute_variable)."""
    def step(rng: Stream, state: State, data: Data, phase: Phase, info: tuple):
        x, blocks = impute_variable(rng, st, k, state.blocks, state.x, data.clusters, data.miss_index[k])
        return State(x, blocks), info
    return step


def sweep_steps(st: Structure) -> tuple[SweepStep, ...]:
    """Every block's update, the last block first (see `sweep`), then every incomplete variable's
    imputation."""
    return (tuple(block_update(st, b) for b in reversed(range(len(st.blocks))))
            + tuple(imputation(st, k) for k in range(len(st.incomplete))))


def _sweep(rng: Stream, st: Structure, state: State, data: Data, phase: Phase):
    info: tuple = (None,) * len(st.blocks)
    for step in sweep_steps(st):
        state, info = step(rng, state, data, phase, info)
    return state, info
