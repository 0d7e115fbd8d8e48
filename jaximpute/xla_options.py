"""XLA compiler options, in one place: which programs get which options, and the probe that
drops an option the installed XLA no longer knows (the program then compiles with defaults).

Three programs are compiled with options, each measured on the 2-core reference machine:

- the sampler, for a batch of data sets on a CPU: no YNNPACK library fusions (`SAMPLER_BATCH`).
  XLA:CPU hands reductions, with the element-wise expressions that feed them, to YNNPACK; a
  profile of a simulation batch (50 data sets of 1,000 rows, the random-slope model) put the
  largest, a cluster sum of a 14-input expression, at 0.5 ms of a 3.5 ms sweep, and with XLA's
  own loops the batch sampled 6-8% faster (0.113 -> 0.104 s per data set at 50 per batch,
  0.103 -> 0.097 at 100). A single data set (the seed's Ex8.2) sampled as fast or a little
  faster with them, so it keeps the defaults.
- the mixed-model fitter, on a CPU: XLA's classic kernel emitters (`FITTER`). Its program is
  many small kernels that run for a fraction of a second, so compile time is most of a cold
  call: the classic emitters compile it in about half the time and run it 15% slower (see
  benchmarks/bench_analysis.py). The Gibbs sweep is the opposite case and keeps the defaults.
- a simulation study's missingness counter, anywhere: XLA's optimisations off (`QUICK`): it
  runs a few times per condition and compiled in 0.8 s instead of 1.8 s, running 0.1 s slower
  per 256 replications.
"""

from __future__ import annotations

import functools

import jax

SAMPLER_BATCH = (("xla_cpu_experimental_ynn_fusion_type", ""),)
FITTER = (("xla_cpu_use_fusion_emitters", False),)
QUICK = (("xla_backend_optimization_level", 0),)


@functools.lru_cache(maxsize=None)
def knows(options: tuple) -> bool:
    """Whether this XLA accepts `options` (an unknown option is an XLA error of its own type)."""
    try:
        jax.jit(lambda a: a + 1, compiler_options=dict(options)).lower(1.0).compile()
    except Exception:  # noqa: BLE001
        return False
    return True


def options(which: tuple, cpu_only: bool = True) -> dict | None:
    """`which` as jit's compiler_options, or None (XLA's defaults) where it does not apply: on
    another backend when `cpu_only`, or where this XLA does not know it."""
    if cpu_only and jax.default_backend() != "cpu":
        return None
    return dict(which) if knows(which) else None


def sampler_options(keys) -> dict | None:
    """The sampler's options for these chain keys (data sets, chains, 2): `SAMPLER_BATCH` for a
    batch of data sets, the defaults for one."""
    return None if keys.shape[0] == 1 else options(SAMPLER_BATCH)
