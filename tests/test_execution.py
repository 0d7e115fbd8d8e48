"""How chains and data sets run (jaximpute.execution): the program layout is fixed by the run,
never by the cores or `processors`, so the same script, data and seed give the same files bit for
bit whatever runs them at once; and every bit of a seed counts.

Why the layout must not follow the machine: XLA:CPU rounds a chain's float32 arithmetic
differently in programs of different widths (1, 2-4 and 6 or 12 chains per program gave three
different sets of imputations for the same keys, up to 1e-5 apart), so a split that followed the
cores changed 181 of 1,600 imputed cells between `processors 1` and `processors 2`.
"""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest

from jaximpute import execution
from jaximpute.api import impute, impute_many
from jaximpute.studies.populations import RandomSlope, generate_batch


def _frame():
    rng = np.random.default_rng(7)
    cl = np.repeat(np.arange(25), 6)
    x = rng.normal(size=cl.size) + rng.normal(size=25)[cl]
    y = 0.5 * x + rng.normal(size=25)[cl] + rng.normal(size=cl.size)
    y[rng.random(cl.size) < 0.3] = np.nan
    x[rng.random(cl.size) < 0.1] = np.nan
    return pd.DataFrame({"school": cl, "y": y, "x": x})


def test_layout_rule_depends_on_the_run_only():
    assert execution.program_layout(2, 1) == (2, 2)        # chains in halves
    assert execution.program_layout(4, 1) == (2, 2)
    assert execution.program_layout(1, 5) == (2, 1)        # one chain: the data sets in halves
    assert execution.program_layout(3, 1) == (1, 0)        # odd chains, one data set: one program
    assert execution.program_layout(1, 1) == (1, 0)
    # processors only say how many run at once
    assert execution.threads(1, 2) == 1 and execution.threads(2, 2) == 2 and execution.threads(8, 2) == 2


def test_processors_never_change_a_result():
    """processors 1 (the two programs one after the other) and 2 (side by side) and the default:
    the same imputations bit for bit, PSR tables too; the chains' draws are real, distinct draws."""
    df = _frame()
    kw = dict(nimps=4, burn=30, thin=10, seed=3)
    runs = {p: impute(df, "school ~ y x", processors=p, **kw) for p in (1, 2, None)}
    assert runs[1].raw.programs == (2, 2, 1) and runs[2].raw.programs == (2, 2, 2)
    assert "run as 2 programs one after the other, each on half of the chains" in runs[1].report.text
    assert "run as 2 programs side by side, each on half of the chains" in runs[2].report.text
    miss = np.isnan(df[["y", "x"]].to_numpy())
    drawn = runs[1].imputed[..., 1:3][:, miss]
    assert np.std(drawn[0] - drawn[1]) > 0.1
    for p in (2, None):
        np.testing.assert_array_equal(runs[p].imputed, runs[1].imputed)
        np.testing.assert_array_equal(runs[p].raw.burn_psr, runs[1].raw.burn_psr)


@pytest.mark.slow
def test_chains_in_two_programs_equal_one_program():
    """An odd number of chains runs vectorised in one program; the same keys split in halves
    agree with it up to float32 rounding (a chain with another chain's key, or PSR from one
    chain's halves, would differ by O(1): the tolerance is 100x the rounding, 1/1000 the signal)."""
    from jaximpute.run import Settings, sample
    from jaximpute.api import many_spec
    df = _frame()
    values = df.to_numpy()
    spec, _ = many_spec(values[None], list(df.columns), "school ~ y x", 4, 40, 10, 2, 3, (), (), None)
    s = Settings(burn=40, thin=10, nimps=4, chains=2, seed=3)
    split = sample(spec, s)
    one_layout = execution.program_layout
    try:
        execution.program_layout = lambda c, d: (1, 0)        # noqa: E731 (the reference: one program)
        one = sample(spec, s)
    finally:
        execution.program_layout = one_layout
    assert split.programs[:2] == (2, 2) and one.programs[:2] == (1, 0)
    np.testing.assert_allclose(split.imputations, one.imputations, atol=1e-3)
    assert np.std(one.imputations[:, 0, 0] - one.imputations[:, 0, 1]) > 0.1
    np.testing.assert_allclose(split.burn_psr, one.burn_psr, atol=1e-3, equal_nan=True)


@pytest.mark.slow
def test_data_sets_in_threads_equal_one_program():
    """One chain per data set: a batch of 3 is padded to 4 and split over 2 programs, the same
    whatever processors says."""
    d = RandomSlope(clusters=12, cluster_size=4)
    _, inc = generate_batch(3, 0, np.arange(3), d)
    kw = dict(nimps=2, burn=40, thin=10, chains=1, seed=5)
    imp1, psr1 = impute_many(inc, list(d.NAMES), "cluster ~ y x w", processors=1, **kw)
    imp2, psr2 = impute_many(inc, list(d.NAMES), "cluster ~ y x w", processors=2, **kw)
    assert imp1.shape == imp2.shape == (3, 2, 48, 4)
    miss = np.isnan(inc)[:, None].repeat(2, axis=1)
    assert not np.isnan(imp2).any()
    np.testing.assert_array_equal(imp2, imp1)
    m0 = miss[0, 0]
    assert np.std(imp1[0, 0][m0] - imp1[0, 1][m0]) > 0.1
    np.testing.assert_array_equal(np.asarray(psr2), np.asarray(psr1))


def test_every_bit_of_a_seed_counts():
    """4294967301 = 2^32 + 5 was SEED 5; seeds below 2^32 keep the keys they always had."""
    data = lambda s: np.asarray(jax.random.key_data(execution.root_key(s)))  # noqa: E731
    assert data(5).tolist() == [0, 5] and data(2**32 - 1).tolist() == [0, 2**32 - 1]
    assert data(2**32 + 5).tolist() == [1, 5]
    assert data(2**63 - 1).tolist() == [2**31 - 1, 2**32 - 1]
    assert not np.array_equal(execution.chain_keys(5, 1, 2), execution.chain_keys(2**32 + 5, 1, 2))
    with pytest.raises(ValueError, match="seed"):
        execution.root_key(2**63)


def test_progress_of_programs_side_by_side_moves_forward_only():
    """Two programs report their own sweeps through one Progress: it shows each percent once,
    never going back when the slower program reports a sweep the faster one passed."""
    import io
    from jaximpute.progress import Progress
    out = io.StringIO()
    p = Progress(100, stream=out)
    for t in (0, 0, 9, 19, 9, 29, 19, 39, 29, 99, 39, 99):       # interleaved, as from two threads
        p(t)
    shown = [int(line.split("sweep ")[1].split("/")[0]) for line in out.getvalue().splitlines()]
    assert shown == [1, 10, 20, 30, 40, 100]


def test_unknown_compile_option_falls_back_to_defaults():
    """Batched programs on a CPU compile without YNN fusions; an XLA that does not know that
    option gets its defaults, and a single data set always does."""
    import jax.numpy as jnp
    from jaximpute import xla_options as xo
    batch, single = jnp.zeros((3, 2)), jnp.zeros((1, 2))
    assert xo.sampler_options(single) is None
    if xo.knows(xo.SAMPLER_BATCH):
        assert xo.sampler_options(batch) == dict(xo.SAMPLER_BATCH)
    unknown = (("xla_cpu_no_such_option_for_a_test", ""),)
    assert not xo.knows(unknown)
    assert xo.options(unknown) is None
