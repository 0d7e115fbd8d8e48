"""Drive the device program: keys, schedule, one compiled run, one crossing back to the host.

Schedule (docs/design/model.md, "Schedule: BURN, THIN, chains"): C chains run BURN sweeps, then
save every THIN sweeps; imputation m comes from chain ((m - 1) mod C) + 1, so each chain runs
BURN + ceil(NIMPS / C) * THIN sweeps. The seed determines every draw: chain c of data set d uses
the key fold_in(fold_in(key(seed), d), c).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import execution
from .compile import Layout, prepare
from .xla_options import sampler_options
from .kernels.state import Data
from .kernels.sweep import RunOutput, diagnostics, make_runner
from .kernels.structure import Structure
from .progress import Progress
from .spec import ModelSpec


@dataclass
class Settings:
    burn: int
    thin: int
    nimps: int
    chains: int = 2
    seed: int = 0
    keep_post: bool = False      # keep every post-burn-in draw (for parameter summaries)
    iterations: int = 0          # post-burn-in sweeps for summaries when nimps == 0
    warmup: int | None = None    # first burn-in sweeps with random slopes held near zero
                                 # (None: BURN // 10; see kernels.blocks.hold_slopes)
    processors: int | None = None  # programs run at once on a CPU (None: one per core; see
                                   # execution.threads: it never changes a result)

    @property
    def warmup_sweeps(self) -> int:
        return min(self.burn // 10 if self.warmup is None else self.warmup, self.burn)

    @property
    def num_saves(self) -> int:
        if self.nimps:
            return math.ceil(self.nimps / self.chains)
        return 1 if self.iterations else 0

    @property
    def sweeps_per_save(self) -> int:
        return self.thin if self.nimps else max(self.iterations, 1)

    @property
    def sweeps_per_chain(self) -> int:
        return self.burn + self.num_saves * self.sweeps_per_save


@dataclass
class RawDraws:
    """Host copies of what the device program returned, for D data sets."""

    structure: Structure
    layout: Layout
    cells: list[tuple]            # per data set: each incomplete variable's missing cells (compile.standardise)
    burn_psr: np.ndarray          # (D, 20, P) split R-hat per burn-in window
    saved_params: np.ndarray      # (S, D, C, P)
    imputations: np.ndarray       # (S, D, C, M) standardised values at the missing cells
    post_trace: np.ndarray        # (T, D, C, P) or empty
    final_psr: np.ndarray         # (D, P) split R-hat over the post-burn-in draws (NaN if none)
    timing: dict = field(default_factory=dict)
    moves: dict = field(default_factory=dict)   # ordinal block b with K > 2 -> (D, C, 2, 2) accepted
                                                # threshold / ridge moves, burn-in and after
    programs: tuple = (1, 0, 1)   # (programs, axis split, run at once): execution.program_layout


def bucket(m: int, universe: int) -> int:
    """A padded length for an index list of m cells out of `universe` (rows, or clusters for a
    level-2 variable): the universe itself when it is at most 256, else m rounded up to a
    multiple of universe / 8, at most the universe. The largest count over a batch's data sets
    varies from batch to batch (279-319 of 1,000 rows over the batches of configs/sim_slope.toml);
    with these few lengths a study's batches share one compiled program, where every batch
    recompiled it (8 s of a 29 s batch). The padded slots cost a little imputation work."""
    if m == 0:
        return 0
    if universe <= 256:          # a few hundred clusters or rows: all of them
        return max(universe, m)
    step = universe // 8
    return min(max(universe, m), -(-m // step) * step)


def stack_data(datas: list[Data]) -> Data:
    """Stack same-shaped data sets along a new leading axis, padding missing-cell index lists."""
    def pad(arrs, fill):
        m = max(len(a) for a in arrs)
        return np.stack([np.concatenate([a, np.full(m - len(a), fill, a.dtype)]) for a in arrs])
    first = datas[0]
    miss = tuple(pad([d.miss_index[k] for d in datas], np.iinfo(np.int32).max)
                 for k in range(len(first.miss_index)))

    return Data(np.stack([d.x for d in datas]),
                jax.tree_util.tree_map(lambda *parts: np.stack(parts), *[d.clusters for d in datas]),
                miss)


def _program(spec: ModelSpec, settings: Settings, datasets, progress, diagnose: bool = True):
    """The sampler's program and its inputs for the spec's table (or several same-shaped value
    arrays): (structure, layout, cells, keys, data, runner, number of data sets)."""
    tables = datasets if datasets is not None else [spec.table.values]
    prepared = [prepare(spec, v) for v in tables]
    st, layout = prepared[0][0], prepared[0][1]
    cells = [p[3] for p in prepared]
    if len(prepared) > 1:
        data = stack_data([p[2] for p in prepared])
        universe = [st.num_clusters if st.var_levels[v] == 2 else data.x.shape[1] for v in st.incomplete]
        data = data._replace(miss_index=tuple(       # padding: out-of-range indices, dropped
            np.pad(a, ((0, 0), (0, bucket(a.shape[1], u) - a.shape[1])), constant_values=np.iinfo(np.int32).max)
            for a, u in zip(data.miss_index, universe)))
    else:
        data = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], prepared[0][2])
    counts = tuple(int(a.shape[1]) for a in data.miss_index)
    st = st._replace(num_missing=counts)
    num_sets = len(tables)
    keys = execution.chain_keys(settings.seed, num_sets, settings.chains)
    keys, data = execution.shard_sets(keys, data, num_sets)
    runner = make_runner(st, settings.burn, settings.sweeps_per_save, settings.num_saves,
                         warmup=settings.warmup_sweeps,
                         keep_post=settings.keep_post,
                         progress=progress, progress_every=progress.every if progress else 0,
                         diagnose=diagnose)
    return st, layout, cells, keys, data, runner, num_sets


def program_memory(spec: ModelSpec, settings: Settings, datasets=None) -> int | None:
    """Device bytes the compiled sampler needs for these data sets, by XLA's own account
    (arguments + outputs + temporaries, less what outputs reuse of the arguments); None where
    the backend does not say. Compiles the program without running it."""
    *_, keys, data, runner, _ = _program(spec, settings, datasets, None)
    return execution.program_bytes(runner.lower(keys, data).compile(sampler_options(keys)))


_diagnostics = jax.jit(diagnostics)


def _run_parallel(program, parts, axis: int, workers: int):
    """Run the compiled program on each part side by side; join the outputs on device (traces
    along `axis`, the final state one axis earlier) and diagnose the joined traces."""
    outs = execution.side_by_side(program, parts, workers)
    join = lambda *a: jnp.concatenate(a, axis)  # noqa: E731
    burn_trace, saved, imps, post = (join(*[getattr(o, f) for o in outs])
                                     for f in ("burn_trace", "saved_params", "imputations", "post_trace"))
    final, moves = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis - 1),
                                          *[(o.final, o.moves) for o in outs])
    return RunOutput(burn_trace, saved, imps, final, post, *_diagnostics(burn_trace, post), moves)


def sample(spec: ModelSpec, settings: Settings, datasets: list[np.ndarray] | None = None,
           progress: Progress | None = None) -> RawDraws:
    """Run the sampler for the spec's table (or for several same-shaped value arrays)."""
    t0 = time.perf_counter()
    num_sets = len(datasets) if datasets is not None else 1
    groups, axis = execution.program_layout(settings.chains, num_sets)
    st, layout, cells, keys, data, runner, num_sets = _program(spec, settings, datasets, progress,
                                                               diagnose=groups == 1)
    parts = execution.split_inputs(keys, data, groups, axis) if groups > 1 else [(keys, data)]
    t1 = time.perf_counter()
    # the key: everything the program depends on (the Structure with its sampler options, the
    # schedule, the inputs' shapes); runs with a progress callback are not kept
    key = ("sampler", st, settings.burn, settings.sweeps_per_save, settings.num_saves,
           settings.warmup_sweeps, settings.keep_post, groups == 1, execution.shapes_key(*parts[0]))
    compiled = execution.compiled(key, lambda: runner.lower(*parts[0]), sampler_options(parts[0][0]),
                                  cacheable=progress is None)
    t2 = time.perf_counter()
    workers = execution.threads(settings.processors, groups)
    out = _run_parallel(compiled, parts, axis, workers) if groups > 1 else compiled(keys, data)
    # the one crossing back to the host: summaries, saved draws and imputed cells only
    moves = {b: m for b, m in enumerate(out.moves) if m is not None}
    host, moves = jax.device_get(((out.burn_psr, out.saved_params, out.imputations, out.post_trace,
                                   out.post_psr), moves))
    # drop the copies that padded the batch to a multiple of the device count: the data-set
    # axis is first in the PSR tables and the block state, second in the traces
    psr, saved, imps, post, post_psr = host
    host = (psr[:num_sets], saved[:, :num_sets], imps[:, :num_sets], post[:, :num_sets],
            post_psr[:num_sets])
    moves = {b: m[:num_sets] for b, m in moves.items()}
    t3 = time.perf_counter()
    if progress:
        progress.close()
    psr, saved, imps, post, post_psr = (np.asarray(h) for h in host)
    return RawDraws(st, layout, cells, psr, saved, imps, post, post_psr,
                    timing={"prepare": t1 - t0, "compile": t2 - t1, "sampling": t3 - t2},
                    moves={b: np.asarray(m) for b, m in moves.items()},
                    programs=(groups, axis, workers if groups > 1 else 1))
