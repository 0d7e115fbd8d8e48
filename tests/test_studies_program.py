"""A simulation batch as one device program (jaximpute.studies.program): it gives what the host
pipeline of separate steps gives (generate_batch, impute_many, the analysis, Rubin's rules) for
every method, on one device and sharded over four, and the condition's plan covers every
replication."""

from __future__ import annotations

import numpy as np
import pytest

from jaximpute.api import impute_many
from jaximpute.lmm import fit_arrays
from jaximpute.pool import rubin
from jaximpute.studies import program as P
from jaximpute.studies.analysis import (FIXED, VARIANCES, SlopeAnalysis, design_arrays, pooled_records,
                                        variances)
from jaximpute.studies.populations import DIRECT_METHODS, RandomSlope, generate_batch
from conftest import run_with_devices

SEED, REPS = 7, 4


def _reml_fits(data, d: RandomSlope, weight=None) -> dict:
    """Host REML fits of the analysis model to (M, N, 4) data sets (lmm.fit_arrays)."""
    y, xm, zm = design_arrays(data)
    g = np.repeat(np.arange(d.clusters), d.cluster_size)
    return fit_arrays(y, xm, zm, g, d.clusters, weight=weight, reml=True,
                      unit=d.unit_of_cluster if d.units else None)


def _host_pipeline(method: str, full, inc, d: RandomSlope, *, nimps: int, burn: int, thin: int,
                   chains: int, seed: int, options=()):
    """One method on a batch, step by step on the host: the records and the last-window PSR
    per replication (None for listwise deletion and the complete data)."""
    if method == "complete":
        return SlopeAnalysis.records_direct(_reml_fits(full, d), d), None
    if method == "listwise":
        keep = ~np.isnan(inc[..., 1:]).any(axis=-1)
        return SlopeAnalysis.records_direct(_reml_fits(np.nan_to_num(inc), d, keep.astype(float)), d), None
    model, outcome = d.imputation_model(method)
    imputed, burn_psr = impute_many(inc, list(d.NAMES), model, outcome=outcome,
                                    ordinal=d.ordinal_names(method), nimps=nimps, burn=burn,
                                    thin=thin, chains=chains, seed=seed, options=options)
    assert not np.isnan(imputed).any()
    nb = len(inc)
    fit = _reml_fits(imputed.reshape(nb * nimps, -1, 4), d)
    est = fit["beta"].reshape(nb, nimps, -1)
    var = np.diagonal(fit["vcov"], axis1=-2, axis2=-1).reshape(nb, nimps, -1)
    conv = fit["converged"].reshape(nb, nimps).all(axis=1)
    rec = pooled_records(rubin(est, var, df_com=d.clusters - 2.0), conv,
                         variances(fit).reshape(nb, nimps, -1).mean(axis=1))
    return rec, np.nanmax(np.asarray(burn_psr)[:, -1, :], axis=-1)


@pytest.mark.slow
@pytest.mark.parametrize("method,prior", [("focal", "prior2"), ("focal", "prior1"),
                                          ("random intercept", "prior2"), ("single-level", "prior2"),
                                          ("listwise", "prior2"), ("complete", "prior2")])
def test_batch_program_equals_host_pipeline(method, prior):
    """Same keys, same engine seed, same data: the one-program batch and the host pipeline
    agree to float32 rounding of the sampler (it runs split differently: data sets here, chains
    there), far below what a wrong key, cell or code would change (O(0.1) in an estimate).
    300 rows, so the missing-cell lists are padded to a multiple of N/8 (run.bucket), and an
    ordinal x for the focal model (codes snapped back on device); and a prior other than the
    default reaches both (api.many_spec's OPTIONS line)."""
    d = RandomSlope(clusters=30, cluster_size=10, cuts=(-0.5, 0.5))
    imp = P.Imputation(method, 4, 60, 20, 2, prior)
    reps = np.arange(REPS)
    out = P.run_batch(d, imp, reps, seed=SEED, condition=0, condition_reps=REPS, engine_seed=123)
    full, inc = generate_batch(SEED, 0, reps, d)
    ref, ref_psr = _host_pipeline(method, full, inc, d, nimps=4, burn=60, thin=20, chains=2,
                                  seed=123, options=(prior,))
    if method in DIRECT_METHODS:
        got, tol = SlopeAnalysis.records_direct(out, d), 1e-7
    else:
        assert out["fits_program"].all() and out["complete"].all()
        got, tol = SlopeAnalysis.records_pooled(out, d), 1e-3
        np.testing.assert_allclose(out["psr"], ref_psr, atol=1e-3)
    for p in FIXED + VARIANCES:
        for col in ("estimate", "se", "lower", "upper", "fmi"):
            np.testing.assert_allclose(got[p][col], ref[p][col], atol=tol, err_msg=f"{p} {col}")
        np.testing.assert_array_equal(got[p]["converged"], ref[p]["converged"])
    if method not in DIRECT_METHODS:
        # the imputations differ from data set to data set and are not the complete data
        assert np.ptp(got["x"]["estimate"]) > 0.01 and np.all(got["x:w"]["fmi"] > 0.01)


def test_condition_plan_covers_every_replication():
    """The template is the first replication in which every ever-incomplete column is
    incomplete, and the list lengths hold the most missing cells of any replication."""
    d = RandomSlope(clusters=5, cluster_size=3, mechanism="MCAR", w_rate=0.08)
    plan = P.condition_plan(3, 1, d, 40)
    _, inc = generate_batch(3, 1, np.arange(40), d)
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


CHILD = """
import sys
import numpy as np
import jax
from jaximpute.studies import program as P
from jaximpute.studies.populations import RandomSlope
d = RandomSlope(clusters=12, cluster_size=4)
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


@pytest.mark.slow
@pytest.mark.parametrize("method", ["focal", "focal, two-level", "complete"])
def test_three_level_batch_program_equals_host_pipeline(method):
    """A three-level design (units): the one-program batch (the unit column added on device,
    the three-level or two-level model, the three-level analysis fitted in the program) equals
    the host pipeline run step by step: ``impute_many`` on the table with its unit column, then
    ``lmm.fit_arrays`` with the units, then Rubin's rules; to float32 rounding of the sampler."""
    d = RandomSlope(clusters=20, cluster_size=6, units=5)
    reps = np.arange(3)
    imp = P.Imputation(method, 4, 60, 20, 2)
    out = P.run_batch(d, imp, reps, seed=SEED, condition=0, condition_reps=3, engine_seed=123)
    full, inc = generate_batch(SEED, 0, reps, d)
    g = np.repeat(np.arange(d.clusters), d.cluster_size)
    unit = d.unit_of_cluster
    if method == "complete":
        y, xm, zm = design_arrays(full)
        fit = fit_arrays(y, xm, zm, g, d.clusters, reml=True, unit=unit)
        np.testing.assert_allclose(out["beta"], fit["beta"], atol=1e-7)
        np.testing.assert_allclose(out["psi3"], fit["psi3"], atol=1e-7)
        assert np.ptp(fit["psi3"]) > 0.01
        return
    assert out["fits_program"].all() and out["complete"].all()
    table = np.concatenate([np.broadcast_to(np.repeat(unit + 1.0, d.cluster_size)[None, :, None],
                                            inc.shape[:2] + (1,)), inc], -1)
    model, outcome = d.imputation_model(method)
    assert model.startswith("unit ") == (method == "focal")
    imputed, _ = impute_many(table, list(d.table_names()), model, outcome=outcome, nimps=4, burn=60,
                             thin=20, chains=2, seed=123)
    y, xm, zm = design_arrays(imputed[..., 1:].reshape(-1, table.shape[1], 4))
    fit = fit_arrays(y, xm, zm, g, d.clusters, reml=True, unit=unit)
    pooled = rubin(fit["beta"].reshape(3, 4, -1),
                   np.diagonal(fit["vcov"], axis1=-2, axis2=-1).reshape(3, 4, -1), df_com=d.clusters - 2.0)
    np.testing.assert_allclose(out["estimate"], pooled["estimate"], atol=1e-3)
    np.testing.assert_allclose(out["std_error"], pooled["std_error"], atol=1e-3)
    np.testing.assert_allclose(out["variances"], variances(fit).reshape(3, 4, -1).mean(axis=1), atol=1e-3)
    assert out["variances"].shape == (3, 5)
