"""Sampler state and device data, as NamedTuples (pytrees) so they vmap over chains and data sets."""

from __future__ import annotations

from typing import NamedTuple

import jax

from .clusters import ClusterArrays


class BlockState(NamedTuple):
    beta: jax.Array    # (P,) fixed effects
    u: jax.Array       # (J, q) random effects (q = 0 for blocks without them)
    sigma: jax.Array   # (q, q) random-effect covariance
    s2: jax.Array      # () residual variance (1 for an ordinal block: the probit scale)
    z: jax.Array | None = None          # ordinal block: latent responses at its rows
    tau: jax.Array | None = None        # ordinal block: thresholds (K + 1,), -inf, 0, ..., +inf
    tau_scale: jax.Array | None = None  # ordinal block: (2,) proposal SDs of the threshold step and
                                        # the ridge move (tuned in burn-in)
    v3: jax.Array | None = None         # three-level data, level-1/2 block: (K,) level-3 random
                                        # intercepts
    s3: jax.Array | None = None         # and their variance ()


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
