"""A simulation batch as one device program (jaximpute.study_program): it gives what the host
pipeline of separate steps gives (generate_batch, impute_many, the REML fits, Rubin's rules) for
every method, on one device and sharded over four, and the condition's plan covers every
replication."""

from __future__ import annotations

import numpy as np
import pytest

from jaximpute import study as S
from jaximpute import study_program as P
from jaximpute.errors import JaxImputeError
from conftest import run_with_devices
from jaximpute.simulate_slope import (Design, FIXED, VARIANCES, method_records, pooled_records,
                                      records_direct)

SEED, REPS = 7, 4


@pytest.mark.slow
@pytest.mark.parametrize("method,prior", [("focal", "prior2"), ("focal", "prior1"),
                                          ("random intercept", "prior2"), ("single-level", "prior2"),
                                          ("listwise", "prior2"), ("complete", "prior2")])
def test_batch_program_equals_host_pipeline(method, prior):
    """Same keys, same engine seed, same data: the one-program batch and the host pipeline
    agree to float32 rounding of the sampler (it runs split differently: data sets here, chains
    there), far below what a wrong key, cell or code would change (O(0.1) in an estimate).
    300 rows, so the missing-cell lists are padded to a multiple of N/8 (run._bucket), and an
    ordinal x for the focal model (codes snapped back on device); and a prior other than the
    default reaches both (api._many_spec's OPTIONS line)."""
    d = Design(clusters=30, cluster_size=10, cuts=(-0.5, 0.5))
    imp = P.Imputation(method, 4, 60, 20, 2, prior)
    reps = np.arange(REPS)
    out = P.run_batch(d, imp, reps, seed=SEED, condition=0, condition_reps=REPS, engine_seed=123)
    full, inc = P.generate_batch(SEED, 0, reps, d)
    g = np.repeat(np.arange(d.clusters), d.cluster_size)
    ref, ref_psr, _ = method_records(method, full, inc, d, g, nimps=4, burn=60, thin=20, chains=2,
                                     seed=123, models=S.IMPUTATION_MODELS, options=(prior,))
    if method in S.DIRECT_METHODS:
        got, tol = records_direct(out, d), 1e-7
    else:
        assert out["fits_program"].all() and out["complete"].all()
        got, tol = pooled_records(out, out["converged"], out["variances"]), 1e-3
        np.testing.assert_allclose(out["psr"], ref_psr, atol=1e-3)
    for p in FIXED + VARIANCES:
        for col in ("estimate", "se", "lower", "upper", "fmi"):
            np.testing.assert_allclose(got[p][col], ref[p][col], atol=tol, err_msg=f"{p} {col}")
        np.testing.assert_array_equal(got[p]["converged"], ref[p]["converged"])
    if method not in S.DIRECT_METHODS:
        # the imputations differ from data set to data set and are not the complete data
        assert np.ptp(got["x"]["estimate"]) > 0.01 and np.all(got["x:w"]["fmi"] > 0.01)


def test_condition_plan_covers_every_replication():
    """The template is the first replication in which every ever-incomplete column is
    incomplete, and the list lengths hold the most missing cells of any replication."""
    d = Design(clusters=5, cluster_size=3, mechanism="MCAR", w_rate=0.08)
    plan = P.condition_plan(3, 1, d, 40)
    _, inc = P.generate_batch(3, 1, np.arange(40), d)
    miss = np.isnan(inc)
    ever = miss.any(axis=(0, 1))
    np.testing.assert_array_equal(np.isnan(plan.template).any(axis=0), ever)
    np.testing.assert_array_equal(plan.rows_missing, miss.sum(axis=1).max(axis=0))
    whole = miss.reshape(40, 5, 3, 4).all(axis=2).sum(axis=1).max(axis=0)
    np.testing.assert_array_equal(plan.clusters_missing, whole)
    covering = np.flatnonzero((miss.any(axis=1) == ever).all(axis=1))
    if covering.size:
        assert plan.template_rep == covering[0]
        # the pilot's generator is compiled without XLA's optimisations: float32 rounding differs
        np.testing.assert_allclose(plan.template, inc[covering[0]], rtol=1e-5, atol=1e-6)


def test_a_data_set_that_does_not_fit_is_named():
    cond = S.Condition("J=5, n=3", Design(5, 3))
    ok = {"fits_program": np.array([True, False]), "complete": np.array([True, True])}
    with pytest.raises(JaxImputeError, match=r"J=5, n=3, focal: replication 12 does not fit"):
        S._check_batch(ok, cond, "focal", np.array([10, 11]))
    left = {"fits_program": np.array([True, True]), "complete": np.array([False, True])}
    with pytest.raises(JaxImputeError, match="replication 11 was left with missing values"):
        S._check_batch(left, cond, "focal", np.array([10, 11]))


CHILD = """
import sys
import numpy as np
import jax
from jaximpute import study_program as P
from jaximpute.simulate_slope import Design
d = Design(clusters=12, cluster_size=4)
res = {}
for method in ("random intercept", "listwise"):
    out = P.run_batch(d, P.Imputation(method, 2, 40, 10, 2), np.arange(3), seed=3, condition=0,
                      condition_reps=3, engine_seed=5)
    res.update({method + "/" + k: v for k, v in out.items()})
np.savez(sys.argv[1], ndev=jax.local_device_count(), **res)
"""


@pytest.mark.slow
def test_batch_program_over_four_devices_equals_one_device(tmp_path):
    """With XLA_FLAGS=--xla_force_host_platform_device_count=4, a batch of 3 replications is
    padded to 4 and run as one program per device (shard_map); every replication's pooled
    results are those of one device, to float32 rounding of the sampler (the per-device program
    is compiled for another batch shape)."""
    out = {}
    for n in (1, 4):
        run_with_devices(CHILD, tmp_path / f"d{n}.npz", n)
        out[n] = dict(np.load(tmp_path / f"d{n}.npz"))
    assert int(out[1]["ndev"]) == 1 and int(out[4]["ndev"]) == 4
    est = out[1]["random intercept/estimate"]
    assert est.shape == (3, 4) and np.ptp(est[:, 1]) > 0.01     # three different replications
    for k in out[1]:
        if k != "ndev":
            np.testing.assert_allclose(out[4][k], out[1][k], atol=1e-3, err_msg=k)
