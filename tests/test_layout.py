"""Row layouts: the dense cluster grid (with padding) and sorted segments give the same model."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaximpute import compile as jc
from jaximpute.api import impute
from jaximpute.kernels.clusters import cluster_sum, expand, first
from jaximpute.kernels.structure import SamplerOptions


def test_layout_choice():
    balanced = jc.build_layout(np.repeat(np.arange(5), 4), 20)
    assert balanced.rows_per_cluster == 4 and balanced.num_rows == 20
    padded = jc.build_layout(np.repeat(np.arange(4), [5, 6, 6, 4]), 21)
    assert padded.rows_per_cluster == 6 and padded.num_rows == 24
    skewed = jc.build_layout(np.repeat(np.arange(4), [1, 1, 1, 40]), 43)
    assert skewed.rows_per_cluster == 0 and skewed.num_rows == 43


@pytest.mark.parametrize("sizes", [[5, 6, 6, 4], [1, 2, 30, 3]])
def test_cluster_operations_agree_with_numpy(sizes):
    rng = np.random.default_rng(0)
    cl = rng.permutation(np.repeat(np.arange(len(sizes)) * 10 + 3, sizes))   # ids unsorted, gaps
    layout = jc.build_layout(cl, cl.size)
    ca = jc.cluster_arrays(layout)
    vals = rng.normal(size=cl.size)
    grid = np.zeros(layout.num_rows)
    grid[layout.positions] = vals
    sums = cluster_sum(jnp.asarray(grid) * ca.row_weight, ca, layout.num_clusters, layout.rows_per_cluster)
    expected = pd.Series(vals).groupby(cl).sum().to_numpy()
    np.testing.assert_allclose(sums, expected, rtol=1e-5)
    back = np.asarray(expand(sums, ca, layout.rows_per_cluster))[layout.positions]
    np.testing.assert_allclose(back, expected[layout.cluster_of_row], rtol=1e-5)
    firsts = np.asarray(first(jnp.asarray(grid), ca, layout.rows_per_cluster))
    assert np.all(np.isin(firsts, vals.astype(np.float32)))
    assert np.array_equal(layout.cluster_ids[layout.cluster_of_row], cl)


@pytest.mark.slow
def test_dense_and_segment_layouts_give_the_same_posterior():
    """Unequal clusters (3 to 9 rows), imputed once with the padded grid and once with segments:
    posterior means agree within Monte Carlo error (4 combined MC SEs from ESS)."""
    rng = np.random.default_rng(8)
    sizes = rng.integers(3, 10, 60)
    cl = np.repeat(np.arange(60), sizes)
    x = rng.normal(size=cl.size) + rng.normal(size=60)[cl]
    y = 0.6 * x + rng.normal(size=60)[cl] + rng.normal(size=cl.size)
    y[rng.random(cl.size) < 0.3] = np.nan
    df = pd.DataFrame({"c": cl, "y": y, "x": x})
    runs = {}
    for name, waste in (("dense", 10.0), ("segment", 0.0)):
        res = impute(df, "c ~ y x", nimps=0, iterations=3000, burn=300, chains=2, seed=4,
                     options="estimates", sampler=SamplerOptions(dense_waste=waste))
        assert (res.raw.layout.rows_per_cluster > 0) == (name == "dense")
        runs[name] = res.estimates
    a, b = runs["dense"], runs["segment"]
    # posterior mean ~ median here; MC SE of a median-like summary from SD / sqrt(ESS)
    se = np.sqrt(a.sd**2 / a.ess + b.sd**2 / b.ess)
    z = (a["median"] - b["median"]) / se
    assert np.all(np.abs(z) < 4.5), pd.DataFrame({"param": a.parameter, "z": z})
