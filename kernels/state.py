"""Sampler state and device data, as NamedTuples (pytrees) so they vmap over chains and data sets."""

from __future__ import annotations

from typing import NamedTuple

import jax

from .clusters import ClusterArrays


class Probit(NamedTuple):
    """The latent side of an ordinal (probit) block (Albert & Chib 1993)."""

    z: jax.Array           # latent responses at the block's rows
    tau: jax.Array         # thresholds (K + 1,): -inf, 0, tau_2, ..., +inf
    tau_scale: jax.Array   # (2,) proposal SDs of the threshold step and the ridge move (tuned in
                           # burn-in)


class Level3(NamedTuple):
    """A level-1 or level-2 block's level-3 random intercepts in three-level data."""

    v3: jax.Array          # (K,) the intercepts
    s3: jax.Array          # () their variance


class BlockState(NamedTuple):
    """One block's position in the chain: its regression, and the parts that only some blocks
    have, each a state of its own (None where the block has no such part)."""

    beta: jax.Array    # (P,) fixed effects
    u: jax.Array       # (J, q) random effects (q = 0 for blocks without them)
    sigma: jax.Array   # (q, q) random-effect covariance
    s2: jax.Array      # () residual variance (1 for an ordinal block: the probit scale)
    probit: Probit | None = None        # ordinal blocks
    level3: Level3 | None = None        # level-1 and level-2 blocks of three-level data


class State(NamedTuple):
    x: jax.Array                     # (N, V) current values, standardised; imputed cells change
    blocks: tuple[BlockState, ...]


class Data(NamedTuple):
    """One data set on device (a batch of data sets adds a leading axis to every array)."""

    x: jax.Array                     # (N, V) standardised values, 0 where missing or padding
    clusters: ClusterArrays
    miss_index: tuple[jax.Array, ...]  # per incomplete column: (M_v,) rows (level 1), clusters
                                       # (level 2) or units (level 3) holding a missing value;
                                       # padded out of range
