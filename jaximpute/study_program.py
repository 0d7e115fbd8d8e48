"""One batch of a simulation study as one device program: generate, impute, analyse, pool.

For each imputation method, a batch of B replications runs as a single compiled program
(issue 6): the data sets are drawn from their replication keys, standardised and indexed, the
Gibbs sampler runs every chain of every data set, the imputed data sets are assembled in the
data's units, the analysis model is fitted to all B x NIMPS of them (REML, vmapped) and the fits
are pooled by Rubin's rules. Only the pooled per-replication numbers cross back to the host,
which adds the t intervals and writes the records. Listwise deletion and the complete data are
one program each too (generate, fit).

The sampler runs in float32 and the fit in float64 (it matches lme4 to 1e-4 only in float64):
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

On one CPU device a batch runs as one program per core side by side, each on its share of
the data sets (``run.parallel_split``); on several local devices, as one program per device
(``jax.shard_map``), with no communication between them.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .api import many_spec
from .compile import prepare
from .kernels.state import Data
from .kernels.stream import Stream, with_stream
from .kernels.sweep import diagnostics, make_runner
from .lmm import batched_fitter, start_theta
from .pool import rules
from . import xla_options
from .run import Settings, bucket, pad_sets, chain_keys, parallel_split
from .simulate_slope import MODELS, NAMES, Design, design_arrays, variances

INT_FILL = np.iinfo(np.int32).max         # an out-of-range index: the sampler drops it
IMPUTATION_MODELS = dict(MODELS, **{"single-level": ("y x w", None),
                                    "focal, two-level": ("cluster ~ y:x w x*w", "y")})
THREE_LEVEL_ONLY = ("focal, two-level",)   # the focal model without the level-3 units


def imputation_model(method: str, d: Design) -> tuple[str, str | None]:
    """(MODEL, OUTCOME) of an imputation method for a design: in a three-level design the
    multilevel models name the level-3 units too (`unit cluster ~ ...`), except "focal,
    two-level", the focal model that ignores them (the comparison a two-level tool gives)."""
    model, outcome = IMPUTATION_MODELS[method]
    if d.units and "~" in model and method not in THREE_LEVEL_ONLY:
        model = "unit " + model
    return model, outcome


def table_names(d: Design) -> tuple[str, ...]:
    """The columns of a replication's table as the imputation models see it: NAMES, with the
    level-3 unit first in a three-level design (the generator's arrays hold NAMES only; the
    unit follows from the cluster)."""
    return (("unit",) if d.units else ()) + NAMES
DIRECT_METHODS = ("listwise", "complete")


# ------------------------------------------------------------------------------ generator

def generate(key, d: Design):
    """One replication drawn on device: complete and incomplete (N, 4) arrays, columns NAMES.

    The population and the MAR deletion are those of ``simulate_slope.generate_and_delete``
    (module docstring there); a three-level design (``units``) adds to x and y level-3 random
    intercepts of variances ``var_x3`` and ``tau3``, shared by the clusters of a unit. MCAR deletes y and x with probability 1/2 within their halves of
    the rows and w with probability ``w_rate``; MNAR deletes each by logistic selection on its
    own value (y on y, x on x, w on w, centred as under MAR)."""
    # one stream for all the draws (kernels.stream): a jax.random call per draw compiled to its
    # own threefry loop kernels, 2.9 s of LLVM time in every program that holds the generator
    return with_stream(key, lambda rng: _draw(rng, d), dtype=jnp.result_type(float))


def _draw(rng: Stream, d: Design):
    j, n = d.clusters, d.cluster_size
    w = rng.normal((j,))
    a = rng.normal((j,))
    f = rng.normal((j, n))
    cov = jnp.asarray([[d.tau00, d.tau01], [d.tau01, d.tau11]])
    u = rng.normal((j, 2)) @ jnp.linalg.cholesky(cov).T
    e = rng.normal((j, n))
    # three-level designs: level-3 parts of x and y, drawn after the two-level draws so that a
    # two-level design's stream is what it was
    v = rng.normal((2, d.units))[:, d.unit_of_cluster] if d.units else jnp.zeros((2, j))
    x = ((d.g * w + jnp.sqrt(d.var_a) * a + jnp.sqrt(d.var_x3) * v[0])[:, None] + jnp.sqrt(d.var_f) * f)
    if d.cuts:
        x = jnp.searchsorted(jnp.asarray(d.cuts), x).astype(x.dtype)
    b0, b1, b2, b3 = d.b
    y = (b0 + b1 * x + (b2 * w + jnp.sqrt(d.tau3) * v[1])[:, None] + b3 * x * w[:, None] + u[:, :1]
         + u[:, 1:] * x + jnp.sqrt(d.s2) * e)
    ww = jnp.broadcast_to(w[:, None], (j, n))
    cl = jnp.broadcast_to(jnp.arange(1, j + 1, dtype=x.dtype)[:, None], (j, n))
    full = jnp.stack([cl, y, x, ww], axis=-1).reshape(j * n, 4)
    kind_y = rng.uniform((j, n)) < 0.5
    sig = jax.nn.sigmoid
    if d.mechanism == "MCAR":
        p_y, p_x = jnp.full((j, n), 0.5), jnp.full((j, n), 0.5)
    elif d.mechanism == "MNAR":
        p_y, p_x = sig(d.gamma * (y - d.y_centre)), sig(d.gamma * (x - d.x_centre))
    else:
        p_y, p_x = sig(d.gamma * (x - d.x_centre)), sig(d.gamma * (y - d.y_centre))
    miss_y = kind_y & (rng.uniform((j, n)) < p_y)
    miss_x = ~kind_y & (rng.uniform((j, n)) < p_x)
    alpha_w = np.log(d.w_rate / (1.0 - d.w_rate))
    if d.mechanism == "MCAR":
        p_w = jnp.full((j,), d.w_rate)
    elif d.mechanism == "MNAR":
        p_w = sig(alpha_w + d.w_gamma * w)
    else:
        cnt = jnp.sum(~miss_y, axis=1)
        ybar = jnp.where(cnt > 0, jnp.sum(jnp.where(miss_y, 0.0, y), axis=1) / jnp.maximum(cnt, 1)
                         - d.y_centre, 0.0)
        p_w = sig(alpha_w + d.w_gamma * ybar)
    miss_w = rng.uniform((j,)) < p_w
    miss = jnp.stack([jnp.zeros((j, n), bool), miss_y, miss_x,
                      jnp.broadcast_to(miss_w[:, None], (j, n))], -1).reshape(j * n, 4)
    return full, jnp.where(miss, jnp.nan, full)


@functools.lru_cache(maxsize=None)
def _key_maker():
    return jax.jit(lambda seed, c, reps: jax.vmap(
        lambda r: jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), c), r))(reps))


def replication_keys(seed: int, condition: int, reps) -> np.ndarray:
    """(R, 2) uint32 keys: replication r of condition c draws from fold_in(fold_in(key(seed), c),
    r), so a data set does not depend on the batch size, the shard or the device that draws it."""
    return np.asarray(_key_maker()(np.uint32(seed), np.uint32(condition), np.asarray(reps, np.uint32)))


@functools.lru_cache(maxsize=None)
def _generator(d: Design):
    """The design's generator, jitted once (a fresh closure per call would retrace and recompile
    it for every batch)."""
    return jax.jit(jax.vmap(lambda k: generate(k, d)))


def generate_batch(seed: int, condition: int, reps, d: Design):
    """Replications `reps` (indices) of a condition as numpy (B, N, 4) arrays (complete,
    incomplete), float64; drawn in float32 on device by one vmapped program."""
    full, inc = _generator(d)(replication_keys(seed, condition, reps))
    return np.asarray(full, np.float64), np.asarray(inc, np.float64)


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
        whole = miss.reshape(miss.shape[0], d.clusters, d.cluster_size, 4).all(axis=2)
        return miss.sum(axis=1), whole.sum(axis=1), inc
    return jax.jit(count, compiler_options=xla_options.options(xla_options.QUICK, cpu_only=False))


@functools.lru_cache(maxsize=64)
def condition_plan(seed: int, condition: int, d: Design, reps: int, chunk: int = 256) -> ConditionPlan:
    """Draw every replication's deletion pattern once (chunks of `chunk` replications, the last
    padded, so one compiled program serves the whole pilot) and fix the template and the most
    missing cells per column (and the realised missing rates, for the study's summary)."""
    count = _counter(d)
    rows, clusters = [], []
    for s in range(0, reps, chunk):
        r, c, _ = jax.device_get(count(replication_keys(seed, condition, np.arange(s, s + chunk))))
        rows.append(r)
        clusters.append(c)
    rows, clusters = np.concatenate(rows)[:reps], np.concatenate(clusters)[:reps]
    ever = rows.max(axis=0) > 0
    covers = np.flatnonzero(((rows > 0) == ever).all(axis=1))
    rep = int(covers[0]) if covers.size else 0
    template = np.asarray(count(replication_keys(seed, condition, np.arange(rep, rep + chunk)))[2][0],
                          np.float64)
    for col in np.flatnonzero(ever & ~np.isnan(template).any(axis=0)):
        # no replication has every such column incomplete (tiny designs): mark the first
        # cluster's value missing in the template, so the model imputes the column
        template[:d.cluster_size if col == 3 else 1, col] = np.nan
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


def _fit(data, d: Design, weight=None):
    """REML fits of y ~ x + w + x:w + (x | cluster) (+ (1 | unit) in a three-level design) to
    (M, N, 4) float64 data sets, on device (``lmm.batched_fitter``, the vmapped fitter, traced
    into the calling program)."""
    y, xs, zs = design_arrays(data, jnp)
    g = jnp.asarray(np.repeat(np.arange(d.clusters), d.cluster_size))
    theta0 = jnp.asarray(start_theta(2, bool(d.units)))      # lme4's start: Lambda~ = I
    unit = jnp.asarray(d.unit_of_cluster, jnp.int32) if d.units else None
    fitter = batched_fitter(2, True, 100, d.clusters, weight is not None, d.units)
    return fitter(y, xs, zs, g, weight, theta0, unit)


FIT_OUTPUTS = ("beta", "vcov", "psi", "sigma2", "converged", "singular", "psi3")


def _direct_program(d: Design, method: str):
    """generate -> fit, for listwise deletion or the complete data: keys (B, 2) -> fit arrays."""
    def program(gen_keys, _chain_keys):
        with jax.enable_x64(False):
            full, inc = jax.vmap(lambda k: generate(k, d))(gen_keys)
        if method == "complete":
            fit = _fit(full.astype(jnp.float64), d)
        else:
            keep = ~jnp.isnan(inc[..., 1:]).any(axis=-1)
            fit = _fit(jnp.nan_to_num(inc.astype(jnp.float64)), d, weight=keep.astype(jnp.float64))
        return {k: fit[k] for k in FIT_OUTPUTS if k in fit}
    return program


def _imputation_program(d: Design, plan: ConditionPlan, imp: Imputation):
    """generate -> standardise and index -> sample -> imputed data sets -> fit -> pool:
    (generator keys (B, 2), chain keys (B, C)) -> per-replication pooled results and checks."""
    model, outcome = imputation_model(imp.method, d)
    ordinal = ("x",) if d.cuts and imp.method == "focal" else ()
    # a three-level design's table has the unit first (table_names); `off` shifts the
    # generator's columns (NAMES) to the table's
    off = 1 if d.units else 0
    unit_col = np.repeat(d.unit_of_cluster + 1.0, d.cluster_size) if d.units else None
    with_unit = (lambda a: np.column_stack([unit_col, a])) if d.units else (lambda a: a)  # noqa: E731
    template = with_unit(plan.template)
    spec, settings = many_spec(template[None], list(table_names(d)), model, imp.nimps, imp.burn,
                               imp.thin, imp.chains, 0, (), ordinal, outcome, options=(imp.prior,))
    st, layout, data0, _ = prepare(spec, template)
    xv = spec.x_vars
    level2 = [st.var_levels[k] == 2 for k in range(len(xv))]
    caps = tuple(bucket(int(plan.clusters_missing[xv[k].column - off] if level2[k] else
                             plan.rows_missing[xv[k].column - off]),
                         st.num_clusters if level2[k] else st.num_rows) for k in st.incomplete)
    st = st._replace(num_missing=caps)
    runner = make_runner(st, settings.burn, settings.sweeps_per_save, settings.num_saves,
                         warmup=settings.warmup_sweeps, diagnose=False)
    n_rows, j = plan.template.shape[0], st.num_clusters
    positions = jnp.asarray(np.append(layout.positions, INT_FILL).astype(np.int32))
    row_cluster = jnp.asarray(layout.cluster_of_row.astype(np.int32))
    clusters = jax.tree_util.tree_map(jnp.asarray, data0.clusters)   # None: two-level data
    codes = {k: np.unique(template[~np.isnan(template[:, xv[k].column]), xv[k].column])
             for k in range(len(xv)) if xv[k].kind == "ordinal"}
    std_codes = {k: jnp.asarray(((c - xv[k].mean) / xv[k].sd).astype(np.float32)) for k, c in codes.items()}
    nimps, chains = imp.nimps, imp.chains

    def to_data(inc):
        """One data set (N, 4) float64 -> the sampler's Data and its missing cells' table rows
        (level 1) or clusters (level 2), as compile.prepare builds them on the host; and
        whether it fits the program (module docstring)."""
        x = jnp.zeros((st.num_rows, len(xv)), jnp.float32)
        index, places, ok = [], [], jnp.array(True)
        for k, v in enumerate(xv):
            col = (inc[:, v.column] - v.mean) / v.sd
            if level2[k]:
                # a level-2 value observed on any row of its cluster holds for the whole cluster
                obs = ~jnp.isnan(col)
                per = jax.ops.segment_max(jnp.where(obs, col, -jnp.inf), row_cluster, j)
                per = jnp.where(jax.ops.segment_sum(obs.astype(jnp.int32), row_cluster, j) > 0, per, jnp.nan)
                col = per[row_cluster]
            missing = jnp.isnan(col)
            x32 = jnp.where(missing, 0.0, col).astype(jnp.float32)
            x = x.at[positions[:-1], k].set(x32)
            if k in std_codes:        # observed codes must be the model's (exact: same arithmetic)
                ok &= jnp.all(missing | (x32[:, None] == std_codes[k][None, :]).any(axis=1))
            if k not in st.incomplete:
                ok &= ~missing.any()
                continue
            cap = caps[st.incomplete.index(k)]
            if level2[k]:
                lost = jnp.isnan(per)
                cells = jnp.nonzero(lost, size=cap, fill_value=j)[0]
                index.append(jnp.where(cells < j, cells, INT_FILL).astype(jnp.int32))
            else:
                lost = missing
                cells = jnp.nonzero(lost, size=cap, fill_value=n_rows)[0]
                index.append(positions[cells])
            places.append(cells)
            ok &= lost.sum() <= cap
        return Data(x, clusters, tuple(index)), tuple(places), ok

    def fill(inc, imps, places):
        """One data set's NIMPS imputed copies (M, N, 4) in the data's units: imputation m is
        chain m mod C's save m div C (run.imputed_tables does the same on the host)."""
        m = np.arange(nimps)
        drawn = imps[m // chains, m % chains].astype(jnp.float64)          # (M, cells)
        out = jnp.broadcast_to(inc, (nimps,) + inc.shape)
        start = 0
        for k, cells, cap in zip(st.incomplete, places, caps):
            v = xv[k]
            vals = drawn[:, start:start + cap] * v.sd + v.mean
            start += cap
            if k in codes:          # back to the nearest original code
                c = jnp.asarray(codes[k])
                vals = c[jnp.abs(vals[..., None] - c).argmin(axis=-1)]
            if level2[k]:
                per = jnp.full((nimps, j), jnp.nan).at[:, cells].set(vals, mode="drop")
                out = out.at[:, :, v.column].set(
                    jnp.where(jnp.isnan(out[:, :, v.column]), per[:, row_cluster], out[:, :, v.column]))
            else:
                out = out.at[:, cells, v.column].set(vals, mode="drop")
        return out

    def sample_flat(keys, data):
        """The sampler with every (data set, chain) pair as a data set of one chain (data
        repeated per chain), traces back in (data set, chain) order. Each chain's draws depend
        on its key only, so this changes no result beyond float rounding; but on XLA:CPU chains
        vmapped over a shared data set ran 1.5x slower than the same chains as data sets of one
        chain (a batch of 100 at J = 100, n = 10, 2 chains: 31 s against 19-20 s)."""
        b, c = keys.shape
        flat = jax.tree_util.tree_map(lambda a: jnp.repeat(a, c, axis=0), data)
        out = runner(keys.reshape(b * c, 1), flat)
        back = lambda a: a.reshape(a.shape[:1] + (b, c) + a.shape[3:])  # noqa: E731
        return out._replace(burn_trace=back(out.burn_trace), imputations=back(out.imputations),
                            post_trace=back(out.post_trace), saved_params=back(out.saved_params))

    def program(gen_keys, keys):
        with jax.enable_x64(False):
            _, inc32 = jax.vmap(lambda k: generate(k, d))(gen_keys)
        inc = inc32.astype(jnp.float64)
        if d.units:
            inc = jnp.concatenate([jnp.broadcast_to(jnp.asarray(unit_col)[:, None], inc.shape[:-1] + (1,)),
                                   inc], -1)
        data, places, ok = jax.vmap(to_data)(inc)
        with jax.enable_x64(False):
            out = sample_flat(keys, data)
        # imputations (S, B, C, cells) -> per data set (S, C, cells)
        imputed = jax.vmap(fill, (0, 1, 0))(inc, out.imputations, places)[..., off:]   # (B, M, N, 4)
        b = imputed.shape[0]
        fit = _fit(imputed.reshape((b * nimps,) + imputed.shape[2:]), d)
        est = fit["beta"].reshape(b, nimps, -1)
        var = jnp.diagonal(fit["vcov"], axis1=-2, axis2=-1).reshape(b, nimps, -1)
        pooled = rules(est, var, d.clusters - 2.0, jnp)
        return {"estimate": pooled["estimate"], "std_error": pooled["std_error"],
                "df": pooled["df"], "fmi": pooled["fmi"],
                "converged": fit["converged"].reshape(b, nimps).all(axis=1),
                "variances": variances(fit, jnp).reshape(b, nimps, -1).mean(axis=1),
                "psr": jnp.nanmax(diagnostics(out.burn_trace, out.post_trace)[0][:, -1, :], axis=-1),
                "fits_program": ok, "complete": ~jnp.isnan(imputed).any(axis=(1, 2, 3)),
                # not used, but an output: with the chains' last states left out of the
                # program's results, XLA:CPU compiled the sampling loop 1.5x slower (16.7 s
                # against 11.4 s for 50 data sets x 2 chains, J = 100, n = 10)
                "_final": out.final}
    return program, settings


# ------------------------------------------------------------------------------ running

_PROGRAMS: dict = {}          # (condition, method, settings, part shape) -> compiled program


def _compiled(key, build, gen_keys, keys):
    """The program for these inputs' shapes, compiled once per process (the persistent
    compilation cache keeps it between processes)."""
    hit = _PROGRAMS.get(key)
    if hit is None:
        fn = build()
        with jax.enable_x64(True):
            lowered = jax.jit(fn).lower(gen_keys, keys)
        hit = lowered.compile(xla_options.sampler_options(keys) if keys.ndim == 2 else None)
        if len(_PROGRAMS) >= 16:
            _PROGRAMS.pop(next(iter(_PROGRAMS)))
        _PROGRAMS[key] = hit
    return hit


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
        keys = chain_keys(engine_seed, num, imp.chains)
        plan = condition_plan(seed, condition, d, condition_reps)
        build = lambda: _imputation_program(d, plan, imp)[0]  # noqa: E731
        settings = Settings(burn=imp.burn, thin=imp.thin, nimps=imp.nimps, chains=imp.chains)
    devices = jax.local_devices()
    base = (seed, condition, d, condition_reps, imp)
    if len(devices) > 1 and num > 1:
        n = len(devices)
        kk, gk = pad_sets(keys, gen_keys, n)
        mesh = jax.sharding.Mesh(np.array(devices), ("sets",))
        spec = jax.sharding.PartitionSpec("sets")

        def build_sharded():
            return jax.shard_map(build(), mesh=mesh, in_specs=(spec, spec), out_specs=spec,
                                 check_vma=False)
        shard = jax.sharding.NamedSharding(mesh, spec)
        gk, kk = jax.device_put(gk, shard), jax.device_put(kk, shard)
        prog = _compiled(base + (gk.shape, "sharded", n), build_sharded, gk, kk)
        out = jax.device_get(_results(prog(gk, kk)))
    else:
        groups = parallel_split(settings, imp.chains, num)[0] if settings else 1
        groups = groups if num >= groups else 1
        kk, gk = pad_sets(keys, gen_keys, groups)
        size = gk.shape[0] // groups
        parts = [(gk[i * size:(i + 1) * size], kk[i * size:(i + 1) * size]) for i in range(groups)]
        prog = _compiled(base + (parts[0][0].shape,), build, *parts[0])
        if groups == 1:
            outs = [prog(*parts[0])]
        else:
            with ThreadPoolExecutor(groups) as pool:
                outs = list(pool.map(lambda p: jax.block_until_ready(prog(*p)), parts))
        outs = jax.device_get([_results(o) for o in outs])
        out = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
    return {k: np.asarray(v)[:num] for k, v in out.items()}


def program_memory(d: Design, imp: Imputation, batch: int, *, seed: int, condition: int,
                   condition_reps: int) -> int | None:
    """Device bytes of a method's whole batch program (generate, impute, fit, pool) for
    `batch` data sets as one program, by XLA's own account (arguments, outputs and
    temporaries); compiled, not run. None where the backend does not say."""
    gen_keys = jnp.asarray(replication_keys(seed, condition, np.arange(batch)))
    keys = chain_keys(1, batch, imp.chains)
    fn = _imputation_program(d, condition_plan(seed, condition, d, condition_reps), imp)[0]
    with jax.enable_x64(True):
        lowered = jax.jit(fn).lower(gen_keys, keys)
    m = lowered.compile(xla_options.sampler_options(keys)).memory_analysis()
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
