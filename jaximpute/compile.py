"""ModelSpec -> device program inputs: the static `Structure`, the row layout and device `Data`.

The layout groups rows by cluster once (docs/design/model.md, Data; docs/design/architecture.md,
performance notes): a dense J x n_max grid when padding wastes at most half of it, else rows
sorted by cluster for segment sums.
Values are standardised by their observed mean and SD, so float32 cross-products stay well
conditioned whatever the units (stanmath near 500, proportions near 0.5); the flat priors make the
draws equivariant, and results are mapped back to the original units on the host.

`Layout` and the missing cells remember where every missing cell lives in the user's table, so
draws come back to the right row and column (posterior.fill_imputations). A study program reads
each generated data set on device with the same `standardise` and `miss_index` (jax.numpy in
place of numpy).
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


# ------------------------------------------------------------------------------------------
# values -> the sampler's x and missing cells, once for numpy (single runs) and jax.numpy (study
# programs, traced on device): the array-API pattern (an `xp` namespace argument, as scipy and
# array-api-compat write functions for several array libraries), so that both read the data alike

INT_FILL = np.iinfo(np.int32).max     # an out-of-range index: the sampler drops it


def owners_of(layout: Layout) -> dict[int, tuple[np.ndarray, int]]:
    """Level -> (the owner of each table row at that level, the number of owners): clusters for
    level 2, level-3 units for level 3."""
    out = {2: (layout.cluster_of_row, layout.num_clusters)}
    if layout.num_units:
        out[3] = (layout.unit_of_row(), layout.num_units)
    return out


def levels_of(spec: ModelSpec) -> tuple[int, ...]:
    """The level each of the sampler's variables (spec.x_vars order) is modelled at."""
    return tuple(v.level if spec.cluster else 1 for v in spec.x_vars)


def _scatter_max(a, index, values, xp):
    if xp is np:
        np.maximum.at(a, index, values)
        return a
    return a.at[index].max(values)


def _nonzero(mask, size, xp):
    """Indices of the True entries; with `size` (a traced program's static length) padded with
    len(mask), an index one past the end."""
    if size is None:
        return xp.flatnonzero(mask)
    return xp.nonzero(mask, size=size, fill_value=mask.shape[0])[0]


def standardise(values, xv, levels, incomplete, owners, positions, num_rows: int, caps=None, xp=np):
    """One data set's (N, V) float64 values -> the sampler's x (num_rows, K) float32 on the
    standardised scale (0 at missing cells), each incomplete variable's missing cells (table rows
    at level 1, clusters or units at levels 2 and 3), and whether the data fit (complete
    variables complete; at most `caps` cells missing, where a traced program fixed the lengths).

    A level-2 (3) value observed on any row of its cluster (unit) holds for all of it, so its
    cells are its owners with no observed value. Without `caps` the cell lists have their own
    lengths; with them, each is padded with an out-of-range index."""
    x = xp.zeros((num_rows, len(xv)), xp.float32)
    cells, fits = [], xp.asarray(True)
    for k, v in enumerate(xv):
        col = (values[:, v.column] - v.mean) / v.sd
        lost = xp.isnan(col)
        if levels[k] >= 2:
            owner, num = owners[levels[k]]
            per = _scatter_max(xp.full(num, -xp.inf), owner, xp.where(lost, -xp.inf, col), xp)
            lost = per == -xp.inf
            col = xp.where(lost, xp.nan, per)[owner]
        missing = xp.isnan(col)
        x = _set(x, (positions, k), xp.where(missing, 0.0, col).astype(xp.float32), xp)
        if k not in incomplete:
            fits = fits & ~missing.any()
            continue
        cap = None if caps is None else caps[incomplete.index(k)]
        cells.append(_nonzero(lost, cap, xp))
        if cap is not None:
            fits = fits & (lost.sum() <= cap)
    return x, tuple(cells), fits


def miss_index(cells, levels, incomplete, owners, positions, xp=np) -> tuple:
    """The sampler's index of each incomplete variable's missing cells: layout positions at level
    1, cluster or unit numbers above; the padding of `standardise` becomes INT_FILL."""
    ext = xp.concatenate([positions, xp.full(1, INT_FILL, positions.dtype)])
    out = []
    for k, c in zip(incomplete, cells):
        if levels[k] >= 2:
            out.append(xp.where(c < owners[levels[k]][1], c, INT_FILL).astype(xp.int32))
        else:
            out.append(ext[c].astype(xp.int32))
    return tuple(out)


def _set(a, index, values, xp):
    if xp is np:
        a[index] = values
        return a
    return a.at[index].set(values)


def prepare(spec: ModelSpec, values: np.ndarray | None = None, layout: Layout | None = None):
    """Build (Structure, Layout, Data as numpy, missing cells) for one data set; the cells are
    per incomplete variable (see `standardise`).

    `values` defaults to the spec's table; a simulation passes other data sets of the same shape.
    """
    values = spec.table.values if values is None else values
    n = values.shape[0]
    if layout is None:
        cl = values[:, spec.var(spec.cluster).column] if spec.cluster else None
        unit = values[:, spec.var(spec.unit).column] if spec.unit else None
        layout = build_layout(cl, n, spec.sampler.dense_waste, unit_values=unit)
    xv, levels = spec.x_vars, levels_of(spec)
    owners = owners_of(layout)
    x, cells, _ = standardise(values, xv, levels, tuple(spec.incomplete), owners, layout.positions,
                              layout.num_rows)
    st = Structure(
        num_vars=len(xv),
        var_levels=levels,
        incomplete=tuple(spec.incomplete),
        blocks=tuple(spec.blocks),
        prior=spec.prior,
        num_rows=layout.num_rows,
        num_clusters=layout.num_clusters,
        rows_per_cluster=layout.rows_per_cluster,
        num_missing=tuple(len(c) for c in cells),
        num_units=layout.num_units,
        options=spec.sampler,
    )
    # x columns run in imputation order (spec.x_names), so the cells line up with incomplete
    data = Data(x, cluster_arrays(layout), miss_index(cells, levels, st.incomplete, owners, layout.positions))
    return st, layout, data, cells
