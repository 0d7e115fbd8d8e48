"""Drive the device program: keys, schedule, one compiled run, one crossing back to the host.

Schedule (docs/design/model.md, "Schedule: BURN, THIN, chains"): C chains run BURN sweeps, then
save every THIN sweeps; imputation m comes from chain ((m - 1) mod C) + 1, so each chain runs
BURN + ceil(NIMPS / C) * THIN sweeps. The seed determines every draw: chain c of data set d uses
the key fold_in(fold_in(key(seed), d), c).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from .compile import Layout, MissingCells, prepare
from .xla_options import sampler_options
from .kernels.state import Data
from .kernels.sweep import RunOutput, diagnostics, make_runner, parameter_labels
from .kernels.structure import VAR, Structure, Term
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
    processors: int | None = None  # programs run side by side on a CPU (None: one per core;
                                   # see `parallel_split`)

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
    cells: list[MissingCells]     # per data set
    burn_psr: np.ndarray          # (D, 20, P) split R-hat per burn-in window
    saved_params: np.ndarray      # (S, D, C, P)
    imputations: np.ndarray       # (S, D, C, M) standardised values at the missing cells
    post_trace: np.ndarray        # (T, D, C, P) or empty
    final_psr: np.ndarray         # (D, P) split R-hat over the post-burn-in draws (NaN if none)
    timing: dict = field(default_factory=dict)
    moves: dict = field(default_factory=dict)   # ordinal block b with K > 2 -> (D, C, 2, 2) accepted
                                                # threshold / ridge moves, burn-in and after
    programs: tuple = (1, 0)      # (programs run side by side, axis split): see parallel_split


def chain_keys(seed: int, num_datasets: int, num_chains: int):
    root = jax.random.key(seed)
    return jax.vmap(lambda d: jax.vmap(lambda c: jax.random.fold_in(jax.random.fold_in(root, d), c))(
        jnp.arange(num_chains)))(jnp.arange(num_datasets))


def spread_over_devices(keys, data: Data, num_sets: int):
    """Shard a batch of data sets over the local devices (jax.sharding), one block of data sets
    per device; a single data set, or a single device, stays as it is.

    The runner is vmapped over data sets, and data sets never interact, so XLA partitions the
    whole program along that axis with no communication. The batch is padded to a multiple of
    the device count with copies of its last data set (their results are dropped). A data set's
    chain keys depend on its index only (`chain_keys`), so every data set is imputed exactly as
    on one device."""
    devices = jax.local_devices()
    n = len(devices)
    if n == 1 or num_sets == 1:
        return keys, data
    keys, data = pad_sets(keys, data, n)
    mesh = jax.sharding.Mesh(np.array(devices), ("sets",))
    shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("sets"))
    return jax.device_put(keys, shard), jax.tree_util.tree_map(lambda a: jax.device_put(a, shard), data)


def pad_sets(keys, data, multiple: int):
    """Keys and data of a batch padded to a multiple of `multiple` data sets with copies of the
    last one (whose results the caller drops); the real data sets keep their own keys."""
    pad = (-keys.shape[0]) % multiple
    if not pad:
        return keys, data
    extend = lambda a: np.concatenate([np.asarray(a), np.repeat(np.asarray(a)[-1:], pad, axis=0)])
    return (jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)]),
            jax.tree_util.tree_map(extend, data))


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
    keys = chain_keys(settings.seed, num_sets, settings.chains)
    keys, data = spread_over_devices(keys, data, num_sets)
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
    m = runner.lower(keys, data).compile(sampler_options(keys)).memory_analysis()
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


_COMPILED: dict = {}          # (structure, settings, input shapes) -> compiled runner, this process


def _compiled(runner, st, settings: Settings, keys, data, cacheable: bool, diagnose: bool = True):
    """The runner compiled for these inputs' shapes, reused within the process: the batches of
    a simulation study, and repeated runs of one model, have the same structure and shapes, and
    tracing and lowering the sweep again cost 2 s a batch even when the persistent cache holds
    the XLA executable. The key is everything the program depends on: the Structure (its
    sampler options included), the schedule, the shapes and the compile options. Runs with a
    progress callback are not kept (the callback is part of the program)."""
    options = sampler_options(keys)
    if not cacheable:
        return runner.lower(keys, data).compile(options)
    leaves, tree = jax.tree_util.tree_flatten((keys, data))
    key = (st, tuple(sorted((options or {}).items())), settings.burn, settings.sweeps_per_save, settings.num_saves, settings.warmup_sweeps,
           settings.keep_post, diagnose, tree,
           tuple((a.shape, str(a.dtype), str(getattr(a, "sharding", ""))) for a in leaves))
    hit = _COMPILED.get(key)
    if hit is None:
        hit = runner.lower(keys, data).compile(options)
        if len(_COMPILED) >= 8:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = hit
    return hit


def parallel_split(settings: Settings, num_chains: int, num_sets: int) -> tuple[int, int]:
    """(groups, axis): run the chains (axis 2 of the traces) or the data sets (axis 1) as
    `groups` equal programs side by side, one per CPU core, or everything as one (1, 0).

    XLA:CPU runs the many small kernels of a sweep one after another, with a little
    concurrency between independent ones: the seed's Ex8.2 sweep (two chains vmapped) kept 1.7
    of 2 cores busy but sampled only 20% faster than on one core. The same compiled program
    run for one chain in each of two threads sampled 27% faster than both chains in one
    (15.1 s against 20.7 s for 12,000 sweeps; JAX releases the GIL while a program runs).
    Each chain's draws depend only on its own key, so the split changes no result beyond
    float rounding. Accelerators, and several devices (`spread_over_devices`), get one program:
    there the vmapped batch is what fills the device.

    `settings.processors` caps the groups (Blimp's `CHAINS: k processors p`); by default, the
    cores this process may use (`processors: 1` gives one program). Chains are split when the group count divides them; else data
    sets, padded to a multiple of it (the copies' results are dropped)."""
    devices = jax.local_devices()
    if len(devices) > 1 or devices[0].platform != "cpu":
        return 1, 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    groups = settings.processors or cores
    if groups <= 1:
        return 1, 0
    if num_chains >= groups and num_chains % groups == 0:
        return groups, 2
    if num_sets >= groups:
        return groups, 1
    groups = max(g for g in range(1, min(groups, num_chains) + 1) if num_chains % g == 0)
    return (groups, 2) if groups > 1 else (1, 0)


def _split_inputs(keys, data, groups: int, axis: int):
    """The (keys, data) of each of `groups` programs: a slice of the chains (axis 2: keys'
    second axis, data shared) or of the data sets (axis 1: keys' and data's first axis, padded
    with copies of the last data set to a multiple of `groups`)."""
    if axis == 2:
        size = keys.shape[1] // groups
        return [(keys[:, g * size:(g + 1) * size], data) for g in range(groups)]
    keys, data = pad_sets(keys, data, groups)
    size = keys.shape[0] // groups
    return [(keys[g * size:(g + 1) * size],
             jax.tree_util.tree_map(lambda a: a[g * size:(g + 1) * size], data)) for g in range(groups)]


_diagnostics = jax.jit(diagnostics)


def _run_parallel(compiled, parts, axis: int):
    """Run the compiled program on each part in its own thread; join the outputs on device
    (traces along `axis`, the final state one axis earlier) and diagnose the joined traces."""
    with ThreadPoolExecutor(len(parts)) as pool:
        outs = list(pool.map(lambda kd: jax.block_until_ready(compiled(*kd)), parts))
    join = lambda *a: jnp.concatenate(a, axis)
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
    groups, axis = parallel_split(settings, settings.chains, num_sets)
    st, layout, cells, keys, data, runner, num_sets = _program(spec, settings, datasets, progress,
                                                               diagnose=groups == 1)
    parts = _split_inputs(keys, data, groups, axis) if groups > 1 else [(keys, data)]
    t1 = time.perf_counter()
    compiled = _compiled(runner, st, settings, *parts[0], cacheable=progress is None,
                         diagnose=groups == 1)
    t2 = time.perf_counter()
    out = _run_parallel(compiled, parts, axis) if groups > 1 else compiled(keys, data)
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
    return RawDraws(st, layout, cells, *[np.asarray(h) for h in host],
                    timing={"prepare": t1 - t0, "compile": t2 - t1, "sampling": t3 - t2},
                    moves={b: np.asarray(m) for b, m in moves.items()}, programs=(groups, axis))


# ------------------------------------------------------------------ back to the user's units

def imputed_tables(spec: ModelSpec, raw: RawDraws, nimps: int, chains: int, dataset: int = 0,
                   values: np.ndarray | None = None) -> np.ndarray:
    """(NIMPS, N, V) arrays in the table's row and column order, imputed cells filled."""
    values = spec.table.values if values is None else values
    out = np.repeat(values[None], nimps, axis=0)
    xv = spec.x_vars
    # each variable's slice of the collected vector has its padded (batch-wide) length
    offsets = np.concatenate([[0], np.cumsum(raw.structure.num_missing)])
    for k, xcol in enumerate(spec.incomplete):
        v = xv[xcol]
        rows_per_cell = raw.cells[dataset].table_rows[k]
        lo = offsets[k]
        hi = lo + len(rows_per_cell)
        src = np.concatenate([np.full(np.size(r), i) for i, r in enumerate(rows_per_cell)]) \
            if rows_per_cell else np.zeros(0, int)
        rows = np.concatenate([np.atleast_1d(r) for r in rows_per_cell]) if rows_per_cell else src
        codes = None
        if v.kind == "ordinal":
            col = spec.table.values[:, v.column]
            codes = np.unique(col[~np.isnan(col)])
        for m in range(nimps):
            chain, save = m % chains, m // chains
            drawn = raw.imputations[save, dataset, chain, lo:hi] * v.sd + v.mean
            if codes is not None:      # back to the exact original code (float32 round trip)
                drawn = codes[np.abs(drawn[:, None] - codes[None, :]).argmin(axis=1)]
            out[m, rows, v.column] = drawn[src]
    return out


LEVEL3_INTERCEPT = "Intercept (level 3)"     # the label of a block's level-3 intercept variance


def parameter_table(spec: ModelSpec, st: Structure):
    """Labels of the monitored parameters: (block outcome, group, term) per position."""
    rows = []
    for lab in parameter_labels(st):
        bi = spec.block_info[lab.block]
        if lab.group == "fixed":
            term = bi.terms[lab.index[0]]
        elif lab.group == "ranvar" and lab.index == ("level3",):
            term = LEVEL3_INTERCEPT
        elif lab.group == "ranvar":
            i, j = lab.index
            term = f"{bi.random[i]}" if i == j else f"{bi.random[i]}~{bi.random[j]}"
        elif lab.group == "threshold":
            term = f"tau{lab.index[0]}"
        else:
            term = "residual"
        rows.append((bi.outcome, lab.group, term))
    return rows


def _units_matrix(terms, xv, blocks) -> np.ndarray:
    """M with t_orig = M t_std for a block's term list (each row a term in the user's units).

    A VAR factor is m + s * (standardised value) (m = 0 for a variable that is only scaled); a
    LATENT factor, a parent's centred random intercept, is s_parent * (standardised value).
    Expanding a product gives the standardised terms over the subsets of its factors, which the
    term list holds whenever the dropped factors have m != 0 (`spec._centre` guarantees it).
    """
    index = {t: k for k, t in enumerate(terms)}
    m = np.zeros((len(terms), len(terms)))
    for k, term in enumerate(terms):
        loc = [xv[f.index].mean if f.kind == VAR else 0.0 for f in term.factors]
        scale = [xv[f.index].sd if f.kind == VAR else xv[blocks[f.index].outcome].sd
                 for f in term.factors]
        for keep in itertools.product((False, True), repeat=len(term.factors)):
            coef = np.prod([scale[i] if kept else loc[i] for i, kept in enumerate(keep)])
            if coef == 0.0:
                continue
            sub = Term(tuple(f for f, kept in zip(term.factors, keep) if kept))
            m[k, index[sub]] += coef
    return m


def to_original_units(spec: ModelSpec, st: Structure, params: np.ndarray) -> np.ndarray:
    """Map standardised parameter draws (..., P) to the user's units (same layout).

    With t_orig = M t_std for the fixed terms and z_orig = Mz z_std for the random ones (see
    `_units_matrix`), and v = m_v + s_v v_std for the outcome, the exact map is
    beta = s_v M^-T beta_std (+ m_v on the intercept), Sigma = s_v^2 Mz^-T Sigma_std Mz^-1 and
    s2 = s_v^2 s2_std: for a block linear in single variables this is the familiar slope
    s_v / s_x with the intercept absorbing the predictors' means.
    """
    params = np.asarray(params, dtype=np.float64)
    out = params.copy()
    xv = spec.x_vars
    pos = 0
    for blk in st.blocks:
        # an ordinal block's coefficients live on its latent probit scale (mean 0, SD 1 given
        # the predictors), not on the codes' scale
        so, mo = (1.0, 0.0) if blk.codes else (xv[blk.outcome].sd, xv[blk.outcome].mean)
        p = blk.num_fixed
        m = _units_matrix(blk.terms, xv, st.blocks)
        out[..., pos:pos + p] = so * params[..., pos:pos + p] @ np.linalg.inv(m)
        out[..., pos] += mo
        pos += p
        q = blk.num_random
        if q:
            rows, cols = np.tril_indices(q)
            sig = np.zeros(params.shape[:-1] + (q, q))
            sig[..., rows, cols] = params[..., pos:pos + len(rows)]
            sig[..., cols, rows] = params[..., pos:pos + len(rows)]
            a = so * np.linalg.inv(_units_matrix(blk.random, xv, st.blocks)).T
            sig = a @ sig @ a.T
            out[..., pos:pos + len(rows)] = sig[..., rows, cols]
            pos += len(rows)
        if st.has_level3(blk):
            out[..., pos] = params[..., pos] * so * so         # the level-3 intercept variance
            pos += 1
        if blk.codes:
            pos += blk.categories - 2          # thresholds: already on the latent scale
            continue
        out[..., pos] = params[..., pos] * so * so
        pos += 1
    return out
