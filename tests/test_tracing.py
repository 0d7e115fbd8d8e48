"""Programs are traced and compiled once per shape: a second run of the same model on data of
the same shape (other values) reuses the compiled program."""

import contextlib

import jax
import numpy as np
import pandas as pd

from jaximpute.api import impute
from jaximpute.lmm import fit_lmm

_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/backend_compile_duration")
_seen = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: _seen.append(event) if event in _EVENTS else None)


@contextlib.contextmanager
def traces():
    """The trace and compile events during the block: ([traces], [compiles])."""
    start = len(_seen)
    out = ([], [])
    yield out
    new = _seen[start:]
    out[0].extend(e for e in new if e == _EVENTS[0])
    out[1].extend(e for e in new if e == _EVENTS[1])


def _frame(seed):
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(20), 5)
    x = rng.normal(size=100) + rng.normal(size=20)[cl]
    y = 0.5 * x + rng.normal(size=20)[cl] + rng.normal(size=100)
    y[::7] = np.nan                          # the same cells missing: the same shapes
    return pd.DataFrame({"c": cl, "y": y, "x": x})


def test_a_second_imputation_of_the_same_shape_is_not_traced_again():
    kw = dict(nimps=2, burn=20, thin=10, chains=2, seed=1, processors=1)
    first = impute(_frame(0), "c ~ y x", **kw)
    with traces() as (t, c):
        second = impute(_frame(1), "c ~ y x", **kw)
    assert (len(t), len(c)) == (0, 0)
    assert not np.array_equal(first.imputations[0], second.imputations[0])
    with traces() as (t, c):                 # another setting is another program
        impute(_frame(1), "c ~ y x", **dict(kw, burn=30))
    assert len(c) > 0


def test_a_second_batch_of_fits_of_the_same_shape_is_not_traced_again():
    frames = [_frame(s).fillna(0.0) for s in range(3)]
    fit_lmm("y ~ x + (1|c)", frames)
    with traces() as (t, c):
        fit_lmm("y ~ x + (1|c)", [f.assign(y=f.y + 1.0) for f in frames])
    assert (len(t), len(c)) == (0, 0)
