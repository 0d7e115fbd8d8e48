"""`jaximpute simulate`: config checks, the on-device generator's mechanisms, and that a resumed
or sharded study gives exactly what one uninterrupted run gives (issue 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jaximpute import study as S
from jaximpute.cli import main
from jaximpute.simulate_slope import Design
from conftest import run_with_devices

TINY = """
[study]
reps = 4
batch = 2
seed = 11
methods = ["random intercept", "listwise", "complete"]
[imputation]
nimps = 2
burn = 40
thin = 10
chains = 2
[population]
mechanism = "MAR"
[[conditions]]
clusters = 12
cluster_size = 4
[[conditions]]
name = "MCAR"
clusters = 12
cluster_size = 4
mechanism = "MCAR"
"""


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """The CLI keeps compiled programs between batches of the same shape; so do these tests."""
    import jax
    old = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla")))
    yield
    jax.config.update("jax_compilation_cache_dir", old)


def write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("edit,fragment", [
    (("mechanism = \"MAR\"", "mechanism = \"NMAR\""), "[population].mechanism: 'NMAR'; expected one of MAR"),
    (("methods = [", "methods = [\"fokal\", "), "unknown method 'fokal' (did you mean 'focal'?)"),
    (("[imputation]", "[imputaton]"), "unknown section [imputaton] (did you mean 'imputation'?)"),
    (("clusters = 12\ncluster_size = 4\n[[", "clusterz = 12\ncluster_size = 4\n[["), "#1: unknown key 'clusterz'"),
    (("nimps = 2", "nimps = 0"), "[imputation].nimps: expected a positive whole number"),
    (("name = \"MCAR\"", "name = \"J=12, n=4\""), "both named 'J=12, n=4'"),
    (("reps = 4", "reps = 4 ="), "not valid TOML"),
    (("clusters = 12\ncluster_size = 4\n[[", "clusters = 12\ncluster_size = 4\nunits = 5\n[["),
     "#1: units = 5 with clusters = 12; expected at least 3 level-3 units"),
    (("methods = [", "methods = [\"focal, two-level\", "), "'focal, two-level' compares with the three-level"),
    (("chains = 2", "chains = 2\nprior = \"prior4\""), "[imputation].prior: 'prior4' (did you mean 'prior3'?); expected one of prior1, prior2, prior3"),
])
def test_config_errors_name_file_and_key(tmp_path, edit, fragment):
    p = write(tmp_path, TINY.replace(*edit))
    with pytest.raises(S.ConfigError) as e:
        S.load_study(p)
    assert str(p) in str(e.value) and fragment in str(e.value), str(e.value)


def test_cli_config_error_is_one_line_and_writes_nothing(tmp_path, capsys):
    p = write(tmp_path, TINY.replace("reps = 4", "reps = -1"))
    out = tmp_path / "res"
    assert main(["simulate", str(p), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "[study].reps" in err[0]
    assert not out.exists()


def test_output_folder_claims(tmp_path):
    """A study folder is claimed by its study.json: a new or empty folder, or an empty reps/ and
    the temporary file of a process claiming it at the same moment, is taken; a folder holding
    other files, or batch results without study.json, is refused; a claimed folder is reused
    by the same study only."""
    st = S.load_study(write(tmp_path, TINY))
    fresh = tmp_path / "fresh"
    (fresh / "reps").mkdir(parents=True)
    (fresh / ".study.json.999.tmp").write_text("{")               # another process, mid-claim
    S._claim_folder(st, fresh)
    S._claim_folder(st, fresh)                                     # the same study: reused
    other = S.load_study(write(tmp_path, TINY.replace("seed = 11", "seed = 12"), "other.toml"))
    with pytest.raises(S.ConfigError, match="different study"):
        S._claim_folder(other, fresh)
    orphan = tmp_path / "orphan"
    (orphan / "reps").mkdir(parents=True)
    (orphan / "reps" / "c000-b00000.csv").write_text("x\n")
    with pytest.raises(S.ConfigError, match="batch results but no study.json"):
        S._claim_folder(st, orphan)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(S.ConfigError, match="not a study folder"):
        S._claim_folder(st, busy)
    assert (busy / "notes.txt").read_text() == "mine"


def test_prior_is_part_of_the_study(tmp_path):
    """A prior other than the default is a different study (its own fingerprint, so a folder
    of prior2 results is not resumed with prior1) and reaches the model that the imputation
    programs are built from; the default prior and two-level designs leave the fingerprint of
    studies written before those keys existed unchanged."""
    from jaximpute.api import many_spec
    st2 = S.load_study(write(tmp_path, TINY))
    st1 = S.load_study(write(tmp_path, TINY.replace("chains = 2", "chains = 2\nprior = \"prior1\""), "p1.toml"))
    assert (st2.prior, st1.prior) == ("prior2", "prior1")
    assert st1.fingerprint() != st2.fingerprint()
    legacy = S.dataclasses.asdict(st2)
    legacy.pop("source"), legacy.pop("prior")
    for c in legacy["conditions"]:                 # two-level designs: no three-level keys
        for k in ("units", "tau3", "var_x3"):
            c["design"].pop(k)
    assert st2.fingerprint() == S.hashlib.sha256(
        S.json.dumps(legacy, sort_keys=True, default=str).encode()).hexdigest()[:16]
    _, inc = S.generate_batch(3, 0, np.arange(1), Design(12, 4))
    model, outcome = S.IMPUTATION_MODELS["focal"]
    for prior in ("prior1", "prior2", "prior3"):
        spec, _ = many_spec(inc, ["cluster", "y", "x", "w"], model, 2, 10, 5, 1, 0, (), (), outcome,
                             options=(prior,))
        assert spec.prior.name == prior


def test_example_config_loads():
    st = S.load_study(Path(__file__).resolve().parents[1] / "configs" / "sim_slope.toml")
    assert [c.name for c in st.conditions] == ["J=50, n=20", "J=100, n=10"]
    assert st.reps == 1000 and "single-level" in st.methods


def _rates(d: Design, reps: int = 400):
    full, inc = S.generate_batch(3, 0, np.arange(reps), d)
    miss = np.isnan(inc)
    return full, miss


def test_generator_is_per_replication_and_draws_the_population():
    d = Design(clusters=30, cluster_size=10)
    a_full, a_inc = S.generate_batch(5, 1, np.arange(6), d)
    b_full, b_inc = S.generate_batch(5, 1, np.arange(3, 6), d)
    np.testing.assert_array_equal(a_inc[3:], b_inc)        # a data set does not depend on its batch
    assert not np.array_equal(S.generate_batch(5, 0, [0], d)[0], a_full[:1])   # conditions differ
    full, _ = _rates(d, 300)
    # the population's x slope pooled over replications: regress y on [1, x, w, x w] (OLS is
    # unbiased for the fixed effects here); 300 x 300 rows give an SE near 0.004
    y, x, w = full[..., 1].ravel(), full[..., 2].ravel(), full[..., 3].ravel()
    coef = np.linalg.lstsq(np.column_stack([np.ones_like(x), x, w, x * w]), y, rcond=None)[0]
    np.testing.assert_allclose(coef, d.b, atol=0.03)
    # the cluster column and w are constant within clusters
    assert (full[0, :, 0] == np.repeat(np.arange(1, 31), 10)).all()
    assert (np.ptp(full[0, :, 3].reshape(30, 10), axis=1) == 0).all()


@pytest.mark.parametrize("mechanism", ["MCAR", "MAR", "MNAR"])
def test_generator_mechanisms(mechanism):
    """Rates near 25% (y, x) and 20% (w clusters), and each mechanism's dependence: MCAR on
    nothing, MAR on the other variable, MNAR on the deleted value itself. With 400 x 200 rows a
    rate's SE is about 0.0015 and a difference of conditional rates about 0.004; the MAR/MNAR
    effects are near 0.2, so 0.05 and 0.02 bounds are wide of both."""
    d = Design(clusters=20, cluster_size=10, mechanism=mechanism)
    full, miss = _rates(d)
    y, x = full[..., 1], full[..., 2]
    assert abs(miss[..., 1].mean() - 0.25) < 0.05 and abs(miss[..., 2].mean() - 0.25) < 0.05
    assert not (miss[..., 1] & miss[..., 2]).any()
    w_miss = miss[..., 3].reshape(len(full), 20, 10)[..., 0]
    assert abs(w_miss.mean() - 0.2) < 0.05

    def gap(m, v):       # missing rate where v is above its median minus below
        hi = v > np.median(v)
        return m[hi].mean() - m[~hi].mean()

    dep_other, dep_self = gap(miss[..., 1], x), gap(miss[..., 1], y)
    if mechanism == "MCAR":
        assert abs(dep_other) < 0.02 and abs(dep_self) < 0.02
    elif mechanism == "MAR":
        assert dep_other > 0.05 and gap(miss[..., 2], y) > 0.05
    else:
        assert dep_self > 0.05 and gap(miss[..., 2], x) > 0.05
        assert dep_self > gap(miss[..., 1], x) + 0.02


@pytest.mark.slow
def test_resumed_and_sharded_studies_equal_one_run(tmp_path, compile_cache, capsys):
    """An interrupted study, resumed, and a study run as two shards then merged, give the same
    per-replication results as one uninterrupted run (timings aside)."""
    p = write(tmp_path, TINY)
    st = S.load_study(p)
    whole = tmp_path / "whole"
    assert main(["simulate", str(p), "--out", str(whole), "-q"]) == 0
    ref = pd.read_csv(whole / "reps.csv").drop(columns="seconds")
    assert len(ref) == 2 * 3 * 8 * 4          # conditions x methods x parameters x reps
    assert (whole / "summary.csv").exists()
    assert (whole / "bias.png").stat().st_size > 10_000 and (whole / "coverage.png").stat().st_size > 10_000
    assert "| MCAR | 12 x 4 | MCAR |" in (whole / "summary.md").read_text()

    part = tmp_path / "resumed"
    assert S.run_study(st, part, stop_after=1) == [(0, 0)]             # interrupted after a batch
    assert main(["simulate", str(p), "--out", str(part), "-q"]) == 0     # resumed
    got = pd.read_csv(part / "reps.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(got, ref)

    shards = [tmp_path / "s0", tmp_path / "s1"]
    for k, f in enumerate(shards):
        assert main(["simulate", str(p), "--out", str(f), "--shard", f"{k}/2", "-q"]) == 0
        assert not (f / "summary.csv").exists()
    merged = tmp_path / "merged"
    assert main(["merge", str(p), *map(str, shards), "--out", str(merged)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(merged / "reps.csv").drop(columns="seconds"), ref)
    pd.testing.assert_frame_equal(pd.read_csv(merged / "summary.csv").drop(columns="seconds_per_rep"),
                                  pd.read_csv(whole / "summary.csv").drop(columns="seconds_per_rep"))
    capsys.readouterr()

    # a folder of another study is refused, not mixed
    other = write(tmp_path, TINY.replace("seed = 11", "seed = 12"), "other.toml")
    assert main(["simulate", str(other), "--out", str(whole), "-q"]) == 2
    assert "holds results of a different study" in capsys.readouterr().err


SHARD_CHILD = """
import sys
import numpy as np
import jax
from jaximpute import study as S
from jaximpute.simulate_slope import Design, NAMES
from jaximpute.api import impute_many
d = Design(clusters=12, cluster_size=4)
_, inc = S.generate_batch(3, 0, np.arange(3), d)
imp, psr = impute_many(inc, list(NAMES), "cluster ~ y x w", nimps=2, burn=40, thin=10, chains=2, seed=5)
np.savez(sys.argv[1], imp=imp, psr=np.asarray(psr), inc=inc, ndev=jax.local_device_count())
"""


@pytest.mark.slow
def test_batch_sharded_over_four_devices_equals_one_device(tmp_path):
    """With XLA_FLAGS=--xla_force_host_platform_device_count=4 a batch of 3 data sets is padded
    to 4 and sharded one per device (run.spread_over_devices); every data set gets the imputations
    it gets on one device. Not bit for bit: XLA:CPU compiles the per-device program for another
    batch shape, and its vectorised float32 math rounds differently (observed max difference
    8e-6 on values of order 1 after 80 sweeps); a wrong key or data set would differ by O(1)."""
    out = {}
    for n in (1, 4):
        run_with_devices(SHARD_CHILD, tmp_path / f"d{n}.npz", n)
        out[n] = np.load(tmp_path / f"d{n}.npz")
    assert int(out[1]["ndev"]) == 1 and int(out[4]["ndev"]) == 4
    one, four = out[1]["imp"], out[4]["imp"]
    assert one.shape == four.shape == (3, 2, 48, 4)
    np.testing.assert_array_equal(np.isnan(one), np.isnan(four))
    assert not np.isnan(one).any()
    observed = ~np.isnan(out[1]["inc"])[:, None].repeat(2, axis=1)
    np.testing.assert_array_equal(one[observed], four[observed])
    np.testing.assert_allclose(four, one, atol=1e-4)
    # the two imputations of a data set differ at its missing cells: the test compares real draws
    miss = np.isnan(out[1]["inc"][0])
    assert np.abs(one[0, 0][miss] - one[0, 1][miss]).max() > 0.1
    np.testing.assert_allclose(out[4]["psr"], out[1]["psr"], atol=1e-3)


@pytest.mark.slow
def test_memory_plan_grows_with_the_batch(tmp_path, capsys):
    """--memory compiles each imputation program for a batch of 1 and of the config's size and
    reads XLA's memory account: more data sets need more memory, and the largest batch that
    fits follows from the growth per data set."""
    p = write(tmp_path, TINY.replace('methods = ["random intercept", "listwise", "complete"]',
                                     'methods = ["random intercept", "complete"]')
              .replace("batch = 2", "batch = 4"))
    st = S.load_study(p)
    plan = S.memory_plan(st)
    assert list(plan["method"]) == ["random intercept", "random intercept"]
    r = plan.iloc[0]
    assert 0 < r.bytes_batch_1 < r.bytes_batch
    assert r.bytes_per_data_set == pytest.approx((r.bytes_batch - r.bytes_batch_1) / 3)
    assert r.largest_batch > 4 and r.largest_batch * r.bytes_per_data_set <= r.limit_bytes
    assert main(["simulate", str(p), "--memory", "-q"]) == 0
    assert "largest batch that fits" in capsys.readouterr().out


def _free_slurm_job_id() -> str:
    """A SLURM job id whose coordinator port is free now: jax.distributed's SLURM detection
    takes the port from the job id (id % 4096 + 61440), so an id from the pid could land on a
    port in use, and the processes would fail to meet."""
    import random
    import socket
    for offset in random.sample(range(4096), 64):
        with socket.socket() as s:
            try:
                s.bind(("localhost", 61440 + offset))
            except OSError:
                continue
        return str(40960 + offset)                    # 40960 = 10 x 4096
    raise RuntimeError("no free port in 61440-65535 for the coordinator")


@pytest.mark.slow
def test_distributed_processes_equal_one_run(tmp_path, compile_cache, capsys):
    """`--distributed` as under SLURM: two processes, started together on this host with the
    variables srun sets, initialise jax.distributed, each run its shard into the same new
    folder, and the last to finish writes the summary. The records equal one process's run."""
    import os
    import subprocess
    import sys
    p = write(tmp_path, TINY)
    whole = tmp_path / "whole"
    assert main(["simulate", str(p), "--out", str(whole), "-q", "--no-plots"]) == 0
    ref = pd.read_csv(whole / "reps.csv").drop(columns="seconds")

    shared = tmp_path / "shared"
    job = _free_slurm_job_id()
    procs = []
    for k in range(2):
        env = dict(os.environ, JAX_PLATFORMS="cpu", SLURM_JOB_ID=job, SLURM_STEP_NODELIST="localhost",
                   SLURM_NTASKS="2", SLURM_PROCID=str(k), SLURM_LOCALID=str(k), SLURM_STEP_NUM_NODES="1")
        procs.append(subprocess.Popen([sys.executable, "-m", "jaximpute.cli", "simulate", str(p), "--out",
                                       str(shared), "--distributed", "--no-plots"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        assert "0 of 2 batches already done; 2 to run" in err      # its half of the 4 batches
    got = pd.read_csv(shared / "reps.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(got, ref)
    assert (shared / "summary.md").exists()
    assert not list(shared.glob(".*.tmp"))           # no file left half written
