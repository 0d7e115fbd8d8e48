"""ModelSpec -> device program inputs: the static `Structure`, the row layout and device `Data`.

The layout groups rows by cluster once (docs/design/model.md, Data; docs/design/architecture.md,
performance notes): a dense J x n_max grid when padding wastes at most half of it, else rows
sorted by cluster for segment sums.
Values are standardised by their observed mean and SD, so float32 cross-products stay well
conditioned whatever the units (stanmath near 500, proportions near 0.5); the flat priors make the
draws equivariant, and results are mapped back to the original units on the host.

`Layout` also remembers where every missing cell lives in the user's table, so draws come back to
the right row and column.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .kernels.clusters import ClusterArrays
from .kernels.state import Data
from .kernels.structure import SamplerOptions, Structure
from .nesting import pairs
from .spec import ModelSpec


@dataclass(frozen=True)
class Layout:
    positions: np.ndarray        # (N_real,) layout position of each table row
    cluster_of_row: np.ndarray   # (N_real,) cluster index (0..J-1) of each table row
    num_rows: int                # padded N
    num_clusters: int            # J
    rows_per_cluster: int        # dense grid width, 0 for the segment layout
    cluster_ids: np.ndarray      # (J,) original id of each cluster
    cluster_sizes: np.ndarray    # (J,)
    # three-level data (else None / 0): clusters are numbered unit by unit
    unit_of_cluster: np.ndarray | None = None   # (J,) level-3 unit (0..K-1) of each cluster
    num_units: int = 0                          # K
    unit_ids: np.ndarray | None = None          # (K,) original id of each unit

    def unit_of_row(self) -> np.ndarray:
        """(N_real,) level-3 unit of each table row (three-level data)."""
        assert self.unit_of_cluster is not None
        return self.unit_of_cluster[self.cluster_of_row]


def build_layout(cluster_values: np.ndarray | None, n_rows: int,
                 dense_waste: float = SamplerOptions().dense_waste,
                 unit_values: np.ndarray | None = None) -> Layout:
    """Rows grouped by cluster (module docstring). With `unit_values` (three-level data) a
    cluster is a (unit, cluster id) pair, so an id may repeat across units, and clusters are
    numbered unit by unit: the level-3 sums are then sorted segment sums over clusters."""
    if cluster_values is None:
        cluster_values = np.zeros(n_rows)
    unit_of_cluster, num_units, unit_ids = None, 0, None
    if unit_values is not None:
        p = pairs(unit_values, cluster_values)
        inverse, ids = p.cluster, p.cluster_ids
        sizes = np.bincount(inverse, minlength=len(ids))
        unit_of_cluster, num_units, unit_ids = p.unit_of_cluster, len(p.unit_ids), p.unit_ids
    else:
        ids, inverse, sizes = np.unique(cluster_values, return_inverse=True, return_counts=True)
    j = len(ids)
    order = np.argsort(inverse, kind="stable")             # rows sorted by cluster, stable
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    within = np.empty(n_rows, dtype=np.int64)
    within[order] = np.arange(n_rows) - np.repeat(starts, sizes)
    n_max = int(sizes.max()) if j else 1
    if j * n_max <= (1.0 + dense_waste) * n_rows:
        positions = inverse * n_max + within
        return Layout(positions, inverse, j * n_max, j, n_max, ids, sizes, unit_of_cluster, num_units,
                      unit_ids)
    positions = np.empty(n_rows, dtype=np.int64)
    positions[order] = np.arange(n_rows)
    return Layout(positions, inverse, n_rows, j, 0, ids, sizes, unit_of_cluster, num_units, unit_ids)


def cluster_arrays(layout: Layout) -> ClusterArrays:
    j = layout.num_clusters
    if layout.rows_per_cluster:
        cluster = np.repeat(np.arange(j), layout.rows_per_cluster)
        first = np.arange(j) * layout.rows_per_cluster
    else:
        cluster = np.repeat(np.arange(j), layout.cluster_sizes)
        first = np.concatenate([[0], np.cumsum(layout.cluster_sizes)[:-1]])
    row_weight = np.zeros(layout.num_rows, np.float32)
    row_weight[layout.positions] = 1.0
    three: tuple = ()
    if layout.num_units:
        unit = layout.unit_of_cluster
        assert unit is not None
        first_cluster = np.searchsorted(unit, np.arange(layout.num_units))
        three = (unit.astype(np.int32), first_cluster.astype(np.int32), np.ones(layout.num_units, np.float32))
    return ClusterArrays(cluster.astype(np.int32), first.astype(np.int32), row_weight,
                         np.ones(j, np.float32), *three)


@dataclass(frozen=True)
class MissingCells:
    """Where each drawn value belongs: per incomplete variable, per missing index, table rows."""

    table_rows: list[list]       # a level-1 cell: its row (an int); a level-2 or 3 cell: its rows


def prepare(spec: ModelSpec, values: np.ndarray | None = None, layout: Layout | None = None):
    """Build (Structure, Layout, Data as numpy, MissingCells) for one data set.

    `values` defaults to the spec's table; a simulation passes other data sets of the same shape.
    """
    values = spec.table.values if values is None else values
    n = values.shape[0]
    if layout is None:
        cl = values[:, spec.var(spec.cluster).column] if spec.cluster else None
        unit = values[:, spec.var(spec.unit).column] if spec.unit else None
        layout = build_layout(cl, n, spec.sampler.dense_waste, unit_values=unit)
    xv = spec.x_vars
    x = np.zeros((layout.num_rows, len(xv)), np.float32)
    miss_index: list[np.ndarray] = []
    table_rows: list[list] = []
    counts: list[int] = []
    for k, v in enumerate(xv):
        col = (values[:, v.column] - v.mean) / v.sd
        if v.level >= 2 and spec.cluster:
            # a level-2 (3) value observed on any row of its cluster (unit) holds for all of it
            owner = layout.cluster_of_row if v.level == 2 else layout.unit_of_row()
            per_owner = np.full(layout.num_clusters if v.level == 2 else layout.num_units, np.nan)
            obs = ~np.isnan(col)
            per_owner[owner[obs]] = col[obs]
            col = per_owner[owner]
        missing = np.isnan(col)
        x[layout.positions, k] = np.where(missing, 0.0, col)
        if k in spec.incomplete:
            if v.level >= 2 and spec.cluster:
                owners = np.unique(owner[missing])
                miss_index.append(owners.astype(np.int32))
                table_rows.append([np.flatnonzero(owner == c) for c in owners])
            else:
                rows = np.flatnonzero(missing)
                miss_index.append(layout.positions[rows].astype(np.int32))
                table_rows.append([r for r in rows])
            counts.append(len(miss_index[-1]))
    st = Structure(
        num_vars=len(xv),
        var_levels=tuple(v.level if spec.cluster else 1 for v in xv),
        incomplete=tuple(spec.incomplete),
        blocks=tuple(spec.blocks),
        prior=spec.prior,
        num_rows=layout.num_rows,
        num_clusters=layout.num_clusters,
        rows_per_cluster=layout.rows_per_cluster,
        num_missing=tuple(counts),
        num_units=layout.num_units,
        options=spec.sampler,
    )
    # x columns run in imputation order (spec.x_names), so miss_index lines up with incomplete
    data = Data(x, cluster_arrays(layout), tuple(miss_index))
    return st, layout, data, MissingCells(table_rows)
