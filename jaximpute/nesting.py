"""Nested ids of three-level data: which id holds which, and clusters as (unit, id) pairs.

Shared by the model compiler (``spec``: levels and blocks), the row layout (``compile``) and
the three-level analysis model (``lmm``), so that all three number the same clusters the same
way: by level-3 unit, then by level-2 id (both in sorted order), a level-2 id that recurs in
another unit being another cluster.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd


def constant_within(outer, inner) -> bool:
    """Is id `outer` constant within every group of id `inner` (each student in one school)?"""
    return bool(pd.Series(np.asarray(outer)).groupby(np.asarray(inner)).nunique().max() == 1)


class Pairs(NamedTuple):
    cluster: np.ndarray          # (N,) cluster (0..J-1) of each row
    unit_of_cluster: np.ndarray  # (J,) level-3 unit (0..K-1) of each cluster, non-decreasing
    cluster_ids: np.ndarray      # (J,) each cluster's level-2 id
    unit_ids: np.ndarray         # (K,) each unit's level-3 id


def pairs(units, ids) -> Pairs:
    """Clusters of three-level data as (unit, id) pairs, numbered unit by unit; ids of any type."""
    u_code, u_ids = pd.factorize(np.asarray(units), sort=True)
    i_code, i_ids = pd.factorize(np.asarray(ids), sort=True)
    uniq, cluster = np.unique(np.column_stack([u_code, i_code]), axis=0, return_inverse=True)
    return Pairs(cluster.reshape(-1), uniq[:, 0], np.asarray(i_ids)[uniq[:, 1]], np.asarray(u_ids))
