"""One batch of a simulation study as one device program: generate, impute, analyse, pool.

For each imputation method, a batch of B replications runs as a single compiled program
(issue 6): the data sets are drawn from their replication keys (the population's generator,
``studies.populations``), standardised and indexed, the Gibbs sampler runs every chain of every
data set, the imputed data sets are assembled in the data's units, and the population's
analysis (``studies.analysis``: for the random slope, REML fits of the analysis model, vmapped)
is applied to all B x NIMPS of them and pooled by Rubin's rules. Only the pooled
per-replication numbers cross back to the host, which adds the t intervals and writes the
records. Listwise deletion and the complete data are one program each too (generate, analyse).

The sampler runs in float32 and the analysis in float64 (the REML fit matches lme4 to 1e-4 only
in float64):
the program is traced with 64-bit types on, and the generator and the sampler are traced inside
``jax.enable_x64(False)``, so their code sees the 32-bit defaults it was written for.

What the host fixes once per condition (``condition_plan``), so that every batch of a condition
and method runs the same compiled program:

- the model is set up (levels, standardisation, ordinal codes) from one incomplete data set,
  the condition's first replication in which every variable that is ever incomplete is
  incomplete (``api.many_spec`` does the same from a batch's first data set);
- the sampler's lists of missing cells have static lengths: the largest count over all the
  condition's replications, rounded up by ``run.bucket``. A pilot program draws every
  replication's deletion pattern once to find it (cheap next to one batch's imputation).

The program checks on device that each data set fits what was fixed (every incomplete
variable incomplete in the model, counts within the lengths, ordinal codes among the model's)
and the host stops with an error naming the replication if one does not.

On one CPU device a batch runs as two programs side by side, each on half of the data sets
(``execution.program_layout``: two on every machine, so the results do not depend on the cores);
on several local devices, as one program per device (``jax.shard_map``), with no communication
between them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ..api import many_spec
from ..compile import miss_index, owners_of, prepare, standardise
from ..kernels.state import Data
from ..posterior import fill_imputations, ordinal_codes
from ..kernels.sweep import diagnostics, make_runner
from .. import xla_options
from .. import execution
from ..run import Settings, bucket
from .analysis import analysis_of
from .populations import DIRECT_METHODS, Design, RandomSlope, generate, replication_keys



# ------------------------------------------------------------------------------ per condition

@dataclass(frozen=True)
class ConditionPlan:
    """What a condition's programs are built from (module docstring)."""

    template: np.ndarray         # (N, 4) the incomplete data set the models are set up from
    template_rep: int
    rows_missing: np.ndarray     # (4,) the most rows missing in any replication, per column
    clusters_missing: np.ndarray  # (4,) the most clusters with no observed value, per column
    missing_rates: np.ndarray    # (4,) the realised missing rate per column, all replications


@functools.lru_cache(maxsize=None)
def _counter(d: Design):
    """Per replication and column: rows missing, and clusters with no observed value; and the
    incomplete data sets themselves (one of them becomes the template)."""
    def count(keys):
        _, inc = jax.vmap(lambda k: generate(k, d))(keys)
        miss = jnp.isnan(inc)
        whole = miss.reshape(miss.shape[0], d.clusters, d.cluster_size, len(d.NAMES)).all(axis=2)
        return miss.sum(axis=1), whole.sum(axis=1), inc
    return jax.jit(count, compiler_options=xla_options.options(xla_options.QUICK, cpu_only=False))


@functools.lru_cache(maxsize=64)
def condition_plan(seed: int, condition: int, d: Design, reps: int, chunk: int = 256) -> ConditionPlan:
    """Draw every replication's deletion pattern once (chunks of `chunk` replications, the last
    padded, so one compiled program serves the whole pilot) and fix the template and the most
    missing cells per column (and the realised missing rates, for the study's summary)."""
    count = _counter(d)
    row_parts, cluster_parts = [], []
    for s in range(0, reps, chunk):
        r, c, _ = jax.device_get(count(replication_keys(seed, condition, np.arange(s, s + chunk))))
        row_parts.append(r)
        cluster_parts.append(c)
    rows, clusters = np.concatenate(row_parts)[:reps], np.concatenate(cluster_parts)[:reps]
    ever = rows.max(axis=0) > 0
    covers = np.flatnonzero(((rows > 0) == ever).all(axis=1))
    rep = int(covers[0]) if covers.size else 0
    template = np.asarray(count(replication_keys(seed, condition, np.arange(rep, rep + chunk)))[2][0],
                          np.float64)
    for col in np.flatnonzero(ever & ~np.isnan(template).any(axis=0)):
        # no replication has every such column incomplete (tiny designs): mark the first
        # cluster's value missing in the template (the whole cluster's, at level 2), so the
        # model imputes the column
        template[:d.cluster_size if d.NAMES[col] in d.LEVEL2 else 1, col] = np.nan
    rates = rows.mean(axis=0) / (d.clusters * d.cluster_size)
    return ConditionPlan(template, rep, rows.max(axis=0), clusters.max(axis=0), rates)


# ------------------------------------------------------------------------------ the program

@dataclass(frozen=True)
class Imputation:
    """One imputation method's settings for a study."""

    method: str
    nimps: int
    burn: int
    thin: int
    chains: int
    prior: str = "prior2"     # the random-effect covariance prior (kernels.structure.Prior)


def _direct_program(d: Design, method: str):
    """generate -> analyse, for listwise deletion or the complete data: keys (B, 2) -> the
    analysis's arrays (``analysis_of(d).direct``)."""
    def program(gen_keys, _chain_keys):
        with jax.enable_x64(False):
            full, inc = jax.vmap(lambda k: generate(k, d))(gen_keys)
        return analysis_of(d).direct(d, method, full.astype(jnp.float64), inc.astype(jnp.float64))
    return program


def _imputation_program(d: Design, plan: ConditionPlan, imp: Imputation):
    """generate -> standardise and index -> sample -> imputed data sets -> analyse -> pool:
    (generator keys (B, 2), chain keys (B, C)) -> per-replication pooled results and checks."""
    model, outcome = d.imputation_model(imp.method)
    ordinal = d.ordinal_names(imp.method)
    # a three-level design's table has the unit first (table_names); `off` shifts the
    # generator's columns (NAMES) to the table's
    off = 1 if d.units else 0
    unit_col = (np.repeat(d.unit_of_cluster + 1.0, d.cluster_size)
                if isinstance(d, RandomSlope) and d.units else None)
    template = plan.template if unit_col is None else np.column_stack([unit_col, plan.template])
    spec, settings = many_spec(template[None], list(d.table_names()), model, imp.nimps, imp.burn,
                               imp.thin, imp.chains, 0, (), ordinal, outcome, options=(imp.prior,))
    st, layout, data0, _ = prepare(spec, template)
    xv, levels = spec.x_vars, st.var_levels
    # each incomplete variable's static number of cells: the condition's most, bucketed; a
    # level-3 variable (none in these populations) gets one slot per unit
    caps = tuple(bucket(int(plan.clusters_missing[xv[k].column - off]), st.num_clusters) if levels[k] == 2
                 else st.num_units if levels[k] == 3
                 else bucket(int(plan.rows_missing[xv[k].column - off]), st.num_rows) for k in st.incomplete)
    st = st._replace(num_missing=caps)
    runner = make_runner(st, settings.burn, settings.sweeps_per_save, settings.num_saves,
                         warmup=settings.warmup_sweeps, diagnose=False)
    positions = jnp.asarray(layout.positions.astype(np.int32))
    owners = {lv: (jnp.asarray(o.astype(np.int32)), num) for lv, (o, num) in owners_of(layout).items()}
    clusters = jax.tree_util.tree_map(jnp.asarray, data0.clusters)   # None: two-level data
    codes = ordinal_codes(spec)
    std_codes = {k: jnp.asarray(((c - xv[k].mean) / xv[k].sd).astype(np.float32)) for k, c in codes.items()}
    nimps, chains = imp.nimps, imp.chains

    def to_data(inc):
        """One data set (N, V) float64 -> the sampler's Data and its missing cells, as
        compile.prepare reads a single run's table, and whether it fits the program (module
        docstring)."""
        x, cells, ok = standardise(inc, xv, levels, st.incomplete, owners, positions, st.num_rows,
                                   caps, xp=jnp)
        for k, c in std_codes.items():   # observed codes must be the model's (exact: same arithmetic)
            col = x[positions, k]
            observed = ~jnp.isnan(inc[:, xv[k].column])
            ok &= jnp.all(~observed | (col[:, None] == c[None, :]).any(axis=1))
        index = miss_index(cells, levels, st.incomplete, owners, positions, xp=jnp)
        return Data(x, clusters, index), cells, ok

    def fill(inc, imps, cells):
        """One data set's NIMPS imputed copies (M, N, V) in the data's units, as
        posterior.imputed_tables fills a single run's table."""
        return fill_imputations(inc, imps, cells, caps, xv, levels, st.incomplete, owners, codes,
                                nimps, chains, xp=jnp)

    sample_flat = execution.flatten_chains(runner)     # 1.5x faster on XLA:CPU (execution)

    def program(gen_keys, keys):
        with jax.enable_x64(False):
            _, inc32 = jax.vmap(lambda k: generate(k, d))(gen_keys)
        inc = inc32.astype(jnp.float64)
        if d.units:
            inc = jnp.concatenate([jnp.broadcast_to(jnp.asarray(unit_col)[:, None], inc.shape[:-1] + (1,)),
                                   inc], -1)
        data, cells, ok = jax.vmap(to_data)(inc)
        with jax.enable_x64(False):
            out = sample_flat(keys, data)
        # imputations (S, B, C, cells) -> per data set (S, C, cells)
        imputed = jax.vmap(fill, (0, 1, 0))(inc, out.imputations, cells)[..., off:]   # (B, M, N, 4)
        return {**analysis_of(d).pooled(d, imputed),
                "psr": jnp.nanmax(diagnostics(out.burn_trace, out.post_trace)[0][:, -1, :], axis=-1),
                "fits_program": ok, "complete": ~jnp.isnan(imputed).any(axis=(1, 2, 3)),
                # not used, but an output: with the chains' last states left out of the
                # program's results, XLA:CPU compiled the sampling loop 1.5x slower (16.7 s
                # against 11.4 s for 50 data sets x 2 chains, J = 100, n = 10)
                "_final": out.final}
    return program, settings


# ------------------------------------------------------------------------------ running

def _compiled(key, build, gen_keys, keys):
    """The program for these inputs' shapes, compiled once per process (``execution.compiled``;
    the persistent compilation cache keeps it between processes), traced with 64-bit types on
    (module docstring)."""
    def lower():
        with jax.enable_x64(True):
            return jax.jit(build()).lower(gen_keys, keys)
    return execution.compiled(key, lower, xla_options.sampler_options(keys) if keys.ndim == 2 else None)


def _results(out: dict) -> dict:
    """A program's outputs less those kept only for the compiler's sake (named with a leading
    underscore: `_final` in ``_imputation_program``), so they never cross to the host."""
    return {k: v for k, v in out.items() if not k.startswith("_")}


def run_batch(d: Design, imp: Imputation, reps, *, seed: int, condition: int, condition_reps: int,
              engine_seed: int | None = None) -> dict:
    """Run one method on replications `reps` of a condition (of `condition_reps` replications
    in all, which the condition's plan covers): host numpy arrays with a leading replication
    axis (pooled results for an imputation method, fit arrays for a direct one).

    The batch is split over local devices (shard_map) or, on one CPU device, over programs side
    by side; the copies of the last data set that pad it to equal parts are dropped."""
    gen_keys = jnp.asarray(replication_keys(seed, condition, reps))
    num = gen_keys.shape[0]
    if imp.method in DIRECT_METHODS:
        keys = jnp.zeros((num, 1), jnp.uint32)       # unused
        build = lambda: _direct_program(d, imp.method)  # noqa: E731
        settings = None
    else:
        assert engine_seed is not None, "an imputation method needs its engine seed"
        keys = execution.chain_keys(engine_seed, num, imp.chains)
        plan = condition_plan(seed, condition, d, condition_reps)
        build = lambda: _imputation_program(d, plan, imp)[0]  # noqa: E731
        settings = Settings(burn=imp.burn, thin=imp.thin, nimps=imp.nimps, chains=imp.chains)
    base = (seed, condition, d, condition_reps, imp)
    mesh = execution.set_mesh()
    if mesh is not None and num > 1:
        n = len(jax.local_devices())
        kk, gk = execution.pad_sets(keys, gen_keys, n)

        def build_sharded():
            return jax.shard_map(build(), mesh=mesh[0], in_specs=(mesh[1], mesh[1]), out_specs=mesh[1],
                                 check_vma=False)
        shard = jax.sharding.NamedSharding(*mesh)
        gk, kk = jax.device_put(gk, shard), jax.device_put(kk, shard)
        prog = _compiled(base + (gk.shape, "sharded", n), build_sharded, gk, kk)
        out = jax.device_get(_results(prog(gk, kk)))
    else:
        # the data sets in halves for an imputation method (execution.program_layout: fixed by
        # the batch, not the cores, so a replication's results do not follow the machine)
        groups = execution.program_layout(1, num)[0] if settings else 1
        parts = [(g, k) for k, g in execution.split_inputs(keys, gen_keys, groups, axis=1)]
        prog = _compiled(base + (parts[0][0].shape,), build, *parts[0])
        outs = jax.device_get([_results(o) for o in execution.side_by_side(
            prog, parts, execution.threads(None, groups))])
        out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return {k: np.asarray(v)[:num] for k, v in out.items()}


def program_memory(d: Design, imp: Imputation, batch: int, *, seed: int, condition: int,
                   condition_reps: int) -> int | None:
    """Device bytes of a method's whole batch program (generate, impute, fit, pool) for
    `batch` data sets as one program, by XLA's own account (arguments, outputs and
    temporaries); compiled, not run. None where the backend does not say."""
    gen_keys = jnp.asarray(replication_keys(seed, condition, np.arange(batch)))
    keys = execution.chain_keys(1, batch, imp.chains)
    fn = _imputation_program(d, condition_plan(seed, condition, d, condition_reps), imp)[0]
    with jax.enable_x64(True):
        lowered = jax.jit(fn).lower(gen_keys, keys)
    return execution.program_bytes(lowered.compile(xla_options.sampler_options(keys)))
