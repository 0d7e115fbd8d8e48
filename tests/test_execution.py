"""Programs side by side on a CPU (jaximpute.execution.parallel_split): splitting the chains, or the data
sets of a batch, over threads must give what one vectorised program gives.

Not bit for bit: XLA:CPU compiles the one-chain program with other fusions than the two-chain
one, so float32 rounding differs (observed at most a few 1e-6 on standardised values of order
1 after 60 sweeps of a continuous model). A chain that got another chain's key, a data set
mixed up with another, or a PSR table computed from one chain's halves would differ by O(1):
the tolerance below is 100x the rounding and 1/1000 of the signal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jaximpute.api import impute, impute_many
from jaximpute.run import Settings, parallel_split
from jaximpute.studies.populations import RandomSlope, generate_batch


def _frame():
    rng = np.random.default_rng(7)
    cl = np.repeat(np.arange(25), 6)
    x = rng.normal(size=cl.size) + rng.normal(size=25)[cl]
    y = 0.5 * x + rng.normal(size=25)[cl] + rng.normal(size=cl.size)
    y[rng.random(cl.size) < 0.3] = np.nan
    x[rng.random(cl.size) < 0.1] = np.nan
    return pd.DataFrame({"school": cl, "y": y, "x": x})


def test_split_rule():
    s = lambda p: Settings(burn=10, thin=5, nimps=2, chains=2, processors=p)
    assert parallel_split(s(1), 2, 1) == (1, 0)               # processors 1: one program
    assert parallel_split(s(2), 2, 1) == (2, 2)               # two chains, two programs
    assert parallel_split(s(2), 1, 5) == (2, 1)               # one chain: split the data sets
    assert parallel_split(s(4), 2, 1) == (2, 2)               # no more programs than chains
    assert parallel_split(s(3), 4, 1) == (2, 2)               # equal programs: a divisor of 4
    assert parallel_split(s(3), 3, 1) == (3, 2)


@pytest.mark.slow
def test_chains_in_threads_equal_one_program():
    df = _frame()
    kw = dict(nimps=4, burn=40, thin=10, seed=3, options=("psr", "estimates"))
    one = impute(df, "school ~ y x", processors=1, **kw)
    two = impute(df, "school ~ y x", processors=2, **kw)
    assert one.raw.programs == (1, 0) and two.raw.programs == (2, 2)
    assert "run as 2 programs side by side" in two.report.text
    assert "vectorised in one program" in one.report.text
    miss = np.isnan(df[["y", "x"]].to_numpy())
    a, b = one.imputed[..., 1:3], two.imputed[..., 1:3]
    drawn = a[:, miss]
    # the chains' imputations are real, distinct draws (a test that can fail)
    assert np.std(drawn[0] - drawn[1]) > 0.1
    np.testing.assert_allclose(b[:, miss], drawn, atol=1e-3)
    np.testing.assert_array_equal(b[:, ~miss], a[:, ~miss])
    # the PSR tables come from both chains joined on device, as in the one program
    psr1, psr2 = one.raw.burn_psr, two.raw.burn_psr
    assert psr1.shape == psr2.shape == (1, 20, psr1.shape[-1])
    np.testing.assert_allclose(psr2, psr1, atol=1e-3, equal_nan=True)
    # so do the post-burn-in R-hat and the estimates (OPTIONS: estimates keeps every draw)
    assert np.isfinite(one.raw.final_psr).any()
    np.testing.assert_allclose(two.raw.final_psr, one.raw.final_psr, atol=1e-3, equal_nan=True)
    np.testing.assert_allclose(two.estimates["median"], one.estimates["median"], atol=1e-3)


@pytest.mark.slow
def test_data_sets_in_threads_equal_one_program():
    """One chain per data set: a batch of 3 is padded to 4 and split over 2 programs."""
    d = RandomSlope(clusters=12, cluster_size=4)
    _, inc = generate_batch(3, 0, np.arange(3), d)
    kw = dict(nimps=2, burn=40, thin=10, chains=1, seed=5)
    imp1, psr1 = impute_many(inc, list(d.NAMES), "cluster ~ y x w", processors=1, **kw)
    imp2, psr2 = impute_many(inc, list(d.NAMES), "cluster ~ y x w", processors=2, **kw)
    assert imp1.shape == imp2.shape == (3, 2, 48, 4)
    miss = np.isnan(inc)[:, None].repeat(2, axis=1)
    assert not np.isnan(imp2).any()
    np.testing.assert_array_equal(imp2[~miss], imp1[~miss])
    np.testing.assert_allclose(imp2[miss], imp1[miss], atol=1e-3)
    # the compared values are real draws: a data set's two imputations differ
    m0 = miss[0, 0]
    assert np.std(imp1[0, 0][m0] - imp1[0, 1][m0]) > 0.1
    np.testing.assert_allclose(np.asarray(psr2), np.asarray(psr1), atol=1e-3, equal_nan=True)


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
