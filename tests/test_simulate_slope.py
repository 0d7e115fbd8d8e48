"""The random-slope simulation's data generator (jaximpute.simulate_slope), continuous and
ordinal x: codes, missing rates and the MAR property the studies rely on."""

from __future__ import annotations

import numpy as np
import pytest

from jaximpute.simulate_slope import Design, generate_and_delete

CUTS = (-1.3, -0.45, 0.45, 1.3)


@pytest.mark.parametrize("cuts", [(), CUTS], ids=["continuous x", "ordinal x"])
def test_generator_codes_rates_and_mar(cuts):
    d = Design(200, 20, cuts=cuts)
    rng = np.random.default_rng(1)
    pairs = [generate_and_delete(d, rng) for _ in range(10)]
    full = np.concatenate([p[0] for p in pairs])
    inc = np.concatenate([p[1] for p in pairs])
    obs = ~np.isnan(inc)
    assert np.array_equal(inc[obs], full[obs])                  # deletion only
    miss = np.isnan(inc[:, 1:]).mean(axis=0)
    # y and x: about 25% each (half the rows are at risk, at logistic(centred value) ~ 1/2);
    # w: about 20% of clusters, a little more where y runs high
    assert 0.21 < miss[0] < 0.29 and 0.21 < miss[1] < 0.29 and 0.15 < miss[2] < 0.32, miss
    assert not (np.isnan(inc[:, 1]) & np.isnan(inc[:, 2])).any()  # a row never loses both
    x = full[:, 2]
    if cuts:
        assert set(np.unique(x)) == {0.0, 1.0, 2.0, 3.0, 4.0}
        share = np.array([(x == c).mean() for c in range(5)])
        np.testing.assert_allclose(share, [0.11, 0.22, 0.34, 0.22, 0.11], atol=0.03)
    # MAR: y's missingness rises with the (observed) x of its row
    lo, hi = x < np.median(x), x > np.median(x)
    assert np.isnan(inc[hi, 1]).mean() > np.isnan(inc[lo, 1]).mean() + 0.1
