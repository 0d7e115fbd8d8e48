"""Cluster sums and broadcasts for rows grouped by cluster.

Two layouts, chosen once on the host:

- dense: rows are stored cluster by cluster in a (J x n_max) grid, short clusters padded with rows
  of weight 0. A cluster sum is a reshape and a sum over the last axis, and a broadcast back to
  rows is a repeat; both vectorise perfectly (on 2 CPU cores, about 4x faster than a scatter-add
  at 100 chains for the seed's 928 clusters of 7).
- segment: rows sorted by cluster; cluster sums are sorted segment sums. Used when padding would
  waste more than half the grid (very unequal cluster sizes).

`ClusterArrays` travels with the data (vmapped over data sets); the layout's sizes are static.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class ClusterArrays(NamedTuple):
    cluster: jax.Array         # (N,) int32 cluster of each row (sorted)
    first_row: jax.Array       # (J,) int32 index of each cluster's first row
    row_weight: jax.Array      # (N,) 1 for a real row, 0 for padding
    cluster_weight: jax.Array  # (J,) 1 for a real cluster, 0 for padding
    # three-level data only (None otherwise): clusters are sorted by level-3 unit
    unit: jax.Array | None = None           # (J,) int32 level-3 unit of each cluster (sorted)
    first_cluster: jax.Array | None = None  # (K,) int32 index of each unit's first cluster
    unit_weight: jax.Array | None = None    # (K,) 1 for a real unit

    def up(self) -> "ClusterArrays":
        """The same arrays one level up: clusters as the rows, level-3 units as the clusters
        (a level-2 block's level-3 random intercept is a level-1 block's random intercept
        there, and takes the same draws)."""
        assert self.unit is not None and self.first_cluster is not None and self.unit_weight is not None
        return ClusterArrays(self.unit, self.first_cluster, self.cluster_weight, self.unit_weight)


def unit_sum(a, ca: ClusterArrays, num_units: int):
    """Sum per-cluster values `a` (J, ...) within each level-3 unit -> (K, ...)."""
    assert ca.unit is not None
    return jax.ops.segment_sum(a, ca.unit, num_units, indices_are_sorted=True)


def unit_expand(a, ca: ClusterArrays):
    """Broadcast a per-unit array (K, ...) to the clusters (J, ...)."""
    return a[ca.unit]


def first_of_unit(a, ca: ClusterArrays):
    """The first cluster of each unit (level-3 values are stored on every cluster of a unit)."""
    return a[ca.first_cluster]


def cluster_sum(x, ca: ClusterArrays, num_clusters: int, rows_per_cluster: int):
    """Sum the rows of `x` (N, ...) within each cluster -> (J, ...); weights are the caller's."""
    if rows_per_cluster:
        grid = x.reshape((num_clusters, rows_per_cluster) + x.shape[1:])
        if rows_per_cluster <= 16:
            # adding the strided slices is 4-6x faster on XLA:CPU than a reduce over the short
            # inner axis (measured in benchmarks/bench_random_intercept.py)
            total = grid[:, 0]
            for r in range(1, rows_per_cluster):
                total = total + grid[:, r]
            return total
        return grid.sum(1)
    return jax.ops.segment_sum(x, ca.cluster, num_clusters, indices_are_sorted=True)


def expand(y, ca: ClusterArrays, rows_per_cluster: int):
    """Broadcast a per-cluster array (J, ...) to the rows (N, ...)."""
    if rows_per_cluster:
        return jnp.repeat(y, rows_per_cluster, axis=0, total_repeat_length=y.shape[0] * rows_per_cluster)
    return y[ca.cluster]


def first(x, ca: ClusterArrays, rows_per_cluster: int):
    """The first row of each cluster (level-2 values are stored on every row of their cluster)."""
    if rows_per_cluster:
        return x[::rows_per_cluster]
    return x[ca.first_row]
