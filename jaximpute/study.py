"""Simulation studies from a TOML config: `jaximpute simulate CONFIG` (issue 6).

A study is a grid of conditions x replications. Every condition is a population (the random-slope
model with a cross-level interaction of ``simulate_slope``'s module docstring: y on x, w and x*w,
random intercept and slope of x, MAR/MCAR/MNAR deletion in y, x and w) with its own settings; the
replications of a condition are cut into batches of ``batch`` data sets, and each batch is one
unit of work. For each method the batch runs as one device program (``study_program``):

1. generate: the data sets are drawn on device from their replication keys; the key of
   replication r of condition c is ``fold_in(fold_in(key(seed), c), r)``, so a data set does not
   depend on the batch size, the shard or the device that draws it;
2. impute: the method's model samples every chain of every data set (vmapped over data sets and
   chains), and the imputed data sets are assembled on device;
3. analyse and pool: the analysis model is fitted to every imputed data set (``lmm``'s REML
   fitter, vmapped) and pooled by Rubin's rules, in the same program; listwise deletion and the
   complete data are fitted directly (generate, fit). Only the pooled numbers reach the host;
4. checkpoint: the batch's per-replication records are written to ``OUT/reps/`` (atomically:
   a temporary file, then a rename). A rerun skips the batches already there, so an interrupted
   study resumes where it stopped, and gives what an uninterrupted run gives (every batch's seeds
   are fixed by the config, not by the order of the work).

``--shard k/n`` runs the batches whose index is k mod n (job arrays on clusters); ``jaximpute
merge OUT...`` combines their folders and writes the summary. The summary (``summary.csv``): per
condition, method and parameter, bias, relative bias, RMSE, coverage, CI width, SE/SD, mean FMI,
the largest last-window PSR and the time per replication.

Config (``configs/sim_slope.toml`` is a complete example)::

    [study]
    reps = 1000            # replications per condition
    batch = 100            # data sets per compiled program
    seed = 20261130
    methods = ["focal", "random intercept", "single-level", "listwise", "complete"]

    [imputation]
    nimps = 20
    burn = 2000
    thin = 100
    chains = 2

    [population]           # shared by every condition (simulate_slope.Design's fields)
    b = [0.0, 0.5, 0.3, 0.25]
    mechanism = "MAR"      # MAR, MCAR or MNAR

    [[conditions]]
    clusters = 50
    cluster_size = 20

    [[conditions]]
    name = "J=100, n=10"   # optional; default "J=.., n=.." plus the mechanism if not MAR
    clusters = 100
    cluster_size = 10
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .api import PRIOR3_FAILURE, PRIOR_TEXT
from .errors import JaxImputeError, did_you_mean
from .kernels.structure import PRIORS
from .simulate_slope import Design, pooled_records, records_direct, summarise
from .study_program import (DIRECT_METHODS, IMPUTATION_MODELS, THREE_LEVEL_ONLY, Imputation, condition_plan,  # noqa: F401
                            generate, generate_batch, program_memory, run_batch)

try:                      # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ALL_METHODS = tuple(IMPUTATION_MODELS) + DIRECT_METHODS
MECHANISMS = ("MAR", "MCAR", "MNAR")


class ConfigError(JaxImputeError):
    """A simulation config that cannot be read (file and key named in the message)."""


@dataclass(frozen=True)
class Condition:
    """One cell of the study's grid: a name and its population design."""

    name: str
    design: Design

    def truth(self) -> dict:
        return self.design.truth()


@dataclass(frozen=True)
class Study:
    conditions: tuple[Condition, ...]
    reps: int = 1000
    batch: int = 100
    seed: int = 0
    methods: tuple[str, ...] = ("focal", "random intercept", "listwise", "complete")
    nimps: int = 20
    burn: int = 2000
    thin: int = 100
    chains: int = 2
    prior: str = "prior2"
    source: str = field(default="<config>", compare=False)

    @property
    def batches_per_condition(self) -> int:
        return -(-self.reps // self.batch)

    def units(self) -> list[tuple[int, int]]:
        """All (condition, batch) pairs, in the order a single process runs them."""
        return [(c, b) for c in range(len(self.conditions)) for b in range(self.batches_per_condition)]

    def fingerprint(self) -> str:
        """A hash of everything that determines the results (not the source path)."""
        d = dataclasses.asdict(self)
        d.pop("source")
        # keys added later, at their defaults, leave out: studies checkpointed before they
        # existed still resume
        if d["prior"] == "prior2":
            d.pop("prior")
        for c in d["conditions"]:
            if not c["design"]["units"]:
                for k in ("units", "tau3", "var_x3"):
                    c["design"].pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------ config

_DESIGN_FIELDS = {f.name: f for f in dataclasses.fields(Design)}
_SECTIONS = {"study": ("reps", "batch", "seed", "methods"),
             "imputation": ("nimps", "burn", "thin", "chains", "prior"),
             "population": tuple(_DESIGN_FIELDS) + ("mechanism",),
             "conditions": ()}


def _design(values: dict, where: str, path: str) -> Design:
    kw = {}
    for k, v in values.items():
        if k == "name":
            continue
        if k not in _DESIGN_FIELDS:
            raise ConfigError(f"{path}: {where}: unknown key '{k}'{did_you_mean(k, _DESIGN_FIELDS)}; "
                              f"expected one of {', '.join(_DESIGN_FIELDS)}")
        default = _DESIGN_FIELDS[k].default
        if isinstance(default, tuple):
            if not isinstance(v, list) or not all(isinstance(e, (int, float)) for e in v):
                raise ConfigError(f"{path}: {where}.{k}: expected a list of numbers, got {v!r}")
            if k == "b" and len(v) != 4:
                raise ConfigError(f"{path}: {where}.b: expected 4 numbers (intercept, x, w, x:w), "
                                  f"got {len(v)}")
            v = tuple(float(e) for e in v)
        elif isinstance(default, str):
            if k == "mechanism" and v not in MECHANISMS:
                raise ConfigError(f"{path}: {where}.mechanism: '{v}'; expected one of "
                                  f"{', '.join(MECHANISMS)}")
        elif isinstance(default, int) and not isinstance(default, bool):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{path}: {where}.{k}: expected a positive whole number, got {v!r}")
        elif not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ConfigError(f"{path}: {where}.{k}: expected a number, got {v!r}")
        else:
            v = float(v)
        kw[k] = v
    d = Design(**kw)
    if d.cluster_size < 2 or d.clusters < 3:
        raise ConfigError(f"{path}: {where}: expected at least 3 clusters of at least 2 rows")
    if d.units and (d.units < 3 or d.clusters % d.units or d.clusters // d.units < 2):
        raise ConfigError(f"{path}: {where}: units = {d.units} with clusters = {d.clusters}; expected "
                          "at least 3 level-3 units that share the clusters equally, 2 or more each")
    return d


def load_study(path: str | Path) -> Study:
    """Read and check a study config (TOML); errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({e.strerror or e})") from None
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for sec, val in cfg.items():
        if sec not in _SECTIONS:
            raise ConfigError(f"{path}: unknown section [{sec}]{did_you_mean(sec, _SECTIONS)}; "
                              f"expected {', '.join('[' + s + ']' for s in _SECTIONS)}")
        if sec != "population" and sec != "conditions":
            for k in val:
                if k not in _SECTIONS[sec]:
                    raise ConfigError(f"{path}: [{sec}]: unknown key '{k}'{did_you_mean(k, _SECTIONS[sec])}; "
                                      f"expected one of {', '.join(_SECTIONS[sec])}")
    kw = {}
    for sec in ("study", "imputation"):
        for k, v in cfg.get(sec, {}).items():
            if k == "methods":
                if not isinstance(v, list) or not v:
                    raise ConfigError(f"{path}: [study].methods: expected a list such as "
                                      f"[\"focal\", \"listwise\"]")
                for m in v:
                    if m not in ALL_METHODS:
                        raise ConfigError(f"{path}: [study].methods: unknown method '{m}'"
                                          f"{did_you_mean(str(m), ALL_METHODS)}; expected some of "
                                          f"{', '.join(ALL_METHODS)}")
                kw[k] = tuple(dict.fromkeys(v))
            elif k == "prior":
                if v not in PRIORS:
                    raise ConfigError(f"{path}: [imputation].prior: {v!r}{did_you_mean(str(v), PRIORS)}; "
                                      f"expected one of {', '.join(PRIORS)} (as in a script's OPTIONS)")
                kw[k] = v
            elif not isinstance(v, int) or isinstance(v, bool) or v < (0 if k == "seed" else 1):
                raise ConfigError(f"{path}: [{sec}].{k}: expected a positive whole number, got {v!r}")
            else:
                kw[k] = v
    base = cfg.get("population", {})
    _design(base, "[population]", str(path))
    conds = cfg.get("conditions") or [{}]
    if not isinstance(conds, list):
        raise ConfigError(f"{path}: conditions: expected [[conditions]] tables")
    out = []
    for i, c in enumerate(conds):
        d = _design({**base, **c}, f"[[conditions]] #{i + 1}", str(path))
        name = c.get("name") or (d.name + ("" if d.mechanism == "MAR" else f", {d.mechanism}"))
        out.append(Condition(str(name), d))
    two_level = [c.name for c in out if not c.design.units]
    for m in kw.get("methods", ()):
        if m in THREE_LEVEL_ONLY and two_level:
            raise ConfigError(f"{path}: [study].methods: '{m}' compares with the three-level model, "
                              f"but condition '{two_level[0]}' is two-level; expected units = K in "
                              "every condition, or no such method")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: two conditions are both named '{next(n for n in names if names.count(n) > 1)}';"
                          " expected distinct names (give each a name = ...)")
    return Study(tuple(out), source=str(path), **kw)


# ------------------------------------------------------------------------------ running

def _engine_seed(study: Study, ci: int, b: int, method: str) -> int:
    """The imputation seed of one batch and method: fixed by the config, not by the schedule."""
    seq = np.random.SeedSequence([study.seed, ci, b, ALL_METHODS.index(method)])
    return int(seq.generate_state(1)[0] % (2**31 - 2)) + 1


def _imputation(study: Study, method: str) -> Imputation:
    return Imputation(method, study.nimps, study.burn, study.thin, study.chains, study.prior)


def run_unit(study: Study, ci: int, b: int, log=None) -> pd.DataFrame:
    """Generate, impute, analyse and pool one batch: its per-replication records. Each method
    is one device program over the batch (``study_program``); only pooled numbers come back."""
    from .simulate import records_frame

    cond = study.conditions[ci]
    d = cond.design
    start = b * study.batch
    reps = np.arange(start, min(start + study.batch, study.reps))
    frames = []
    for method in study.methods:
        t0 = time.perf_counter()
        eseed = None if method in DIRECT_METHODS else _engine_seed(study, ci, b, method)
        out = run_batch(d, _imputation(study, method), reps, seed=study.seed, condition=ci,
                        condition_reps=study.reps, engine_seed=eseed)
        if method in DIRECT_METHODS:
            rec, psr = records_direct(out, d), None
        else:
            _check_batch(out, cond, method, reps, study.prior)
            rec, psr = pooled_records(out, out["converged"], out["variances"]), out["psr"]
        secs = time.perf_counter() - t0
        fr = records_frame(rec, method, start, psr, condition=cond.name)
        frames.append(fr.assign(seconds=secs / len(reps)))
        if log:
            log(f"  {cond.name}: {method}, replications {start + 1}-{reps[-1] + 1}: {secs:.1f} s")
    return pd.concat(frames, ignore_index=True)


def _check_batch(out: dict, cond: Condition, method: str, reps, prior: str = "prior2") -> None:
    """Stop with the replication named if a data set did not fit its condition's program or
    came out of it with cells still missing (study_program's module docstring)."""
    nan_why = (f"; {PRIOR3_FAILURE}: expected prior = \"prior2\" (the default) or \"prior1\""
               if prior == "prior3" else "")
    for flag, what in (("fits_program", "does not fit the model set up from the condition's "
                                        "template replication (an incomplete variable complete "
                                        "there, or an ordinal code it lacks)"),
                       ("complete", "was left with missing values after imputation" + nan_why)):
        bad = np.flatnonzero(~out[flag])
        if bad.size:
            raise JaxImputeError(f"{cond.name}, {method}: replication {reps[bad[0]] + 1} {what}")


def device_memory_limit() -> tuple[int | None, str]:
    """(bytes, where from) of memory the first local device can use: a GPU's allocator limit,
    or half the machine's RAM on CPU (the rest for the host side of the study)."""
    import jax
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{dev.device_kind} allocator limit"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return ram // 2, "half the machine's RAM"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def memory_plan(study: Study, log=None) -> pd.DataFrame:
    """Device memory of each condition's imputation programs, by XLA's own account
    (study_program.program_memory: the whole batch program, generate to pool, compiled, not
    run) for batches of 1 and of the config's size; the growth per data set is their
    difference over batch - 1, and the largest batch that fits the device is
    (limit - fixed part) / growth. Rows per condition and imputation method."""
    limit, source = device_memory_limit()
    rows = []
    for ci, cond in enumerate(study.conditions):
        for method in study.methods:
            if method in DIRECT_METHODS:
                continue
            size = lambda b: program_memory(cond.design, _imputation(study, method), b, seed=study.seed,  # noqa: E731
                                            condition=ci, condition_reps=study.reps)
            one = size(1)
            full = size(study.batch) if study.batch > 1 else one
            per = (full - one) / max(study.batch - 1, 1) if None not in (one, full) else None
            fits = int((limit - (one - per)) // per) if per and limit else None
            rows.append({"condition": cond.name, "method": method, "batch": study.batch,
                         "bytes_batch_1": one, "bytes_batch": full, "bytes_per_data_set": per,
                         "limit_bytes": limit, "limit_source": source, "largest_batch": fits})
            if log:
                log(f"  {cond.name}, {method}: {full / 2**20:.1f} MiB for a batch of {study.batch}")
    return pd.DataFrame(rows)


def memory_text(plan: pd.DataFrame) -> str:
    mib = lambda v: "-" if v is None or not np.isfinite(v) else f"{v / 2**20:,.1f}"  # noqa: E731
    lines = ["| condition | method | MiB, batch of 1 | MiB, batch of the config | MiB per data set | "
             "largest batch that fits |", "|---|---|---|---|---|---|"]
    for r in plan.itertuples():
        lines.append(f"| {r.condition} | {r.method} | {mib(r.bytes_batch_1)} | {mib(r.bytes_batch)} "
                     f"({r.batch}) | {mib(r.bytes_per_data_set)} | "
                     f"{'-' if r.largest_batch is None or r.largest_batch != r.largest_batch else f'{int(r.largest_batch):,}'} |")
    if len(plan):
        lines.append(f"\nLimit: {mib(plan['limit_bytes'].iloc[0])} MiB ({plan['limit_source'].iloc[0]}). "
                     "Device memory by XLA's account of the compiled programs (arguments, outputs "
                     "and temporaries) of the whole batch program: generate, impute, and the "
                     "float64 analysis fits of every imputed data set.")
    return "\n".join(lines)


def _unit_file(out: Path, ci: int, b: int) -> Path:
    return out / "reps" / f"c{ci:03d}-b{b:05d}.csv"


def pending_units(study: Study, out: str | Path, shard: tuple[int, int] = (0, 1)) -> list[tuple[int, int]]:
    """This shard's (condition, batch) pairs whose records are not in OUT yet."""
    k, n = shard
    return [u for i, u in enumerate(study.units()) if i % n == k and not _unit_file(Path(out), *u).exists()]


def _write_atomic(path: Path, write) -> None:
    """`write(tmp)` to a file beside `path`, then rename it over `path`: a reader never sees a
    partial file, and processes that finish together (--distributed) each leave a whole one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _claim_folder(study: Study, out: Path) -> None:
    """Create OUT (or reuse it for the same study): refuse a folder written by another config,
    so a resumed study never mixes results of different settings. Processes of one
    --distributed job claim the same new folder at once: each writes the same study.json
    atomically, so none sees a half-written one or takes the others' empty `reps/` for a
    foreign folder."""
    meta = out / "study.json"
    if not meta.exists():
        if out.exists() and any(p.name != "reps" and not p.name.startswith(".study.json.")
                                for p in out.iterdir()):
            raise ConfigError(f"{out}: exists and is not a study folder; expected a new or empty folder")
        if (out / "reps").exists() and any((out / "reps").iterdir()):
            raise ConfigError(f"{out}: holds batch results but no study.json; expected a new or "
                              "empty folder, or a study folder")
        (out / "reps").mkdir(parents=True, exist_ok=True)
        text = json.dumps({"fingerprint": study.fingerprint(), "source": study.source,
                           "study": dataclasses.asdict(study)}, indent=1, default=str)
        _write_atomic(meta, lambda tmp: tmp.write_text(text))
    old = json.loads(meta.read_text())
    if old.get("fingerprint") != study.fingerprint():
        raise ConfigError(f"{out}: holds results of a different study (config "
                          f"{old.get('source')}); expected an empty folder or this study's own")


def run_study(study: Study, out: str | Path, *, shard: tuple[int, int] = (0, 1), log=None,
              bar: bool = False, stop_after: int | None = None) -> list[tuple[int, int]]:
    """Run this shard's batches that are not in OUT yet; returns the (condition, batch) pairs run.

    `log` gets a line per method and batch; with `bar` (a terminal) a progress bar across the
    batches replaces the per-method lines. `stop_after` stops after that many batches (tests use
    it to interrupt a study)."""
    from .progress import Progress
    out = Path(out)
    _claim_folder(study, out)
    pending = pending_units(study, out, shard)
    if log:
        todo = len(study.units()[shard[0]::shard[1]])
        log(f"{todo - len(pending)} of {todo} batches already done; {len(pending)} to run")
    done = []
    t_start = time.perf_counter()
    progress = Progress(len(pending), label="batches", unit="batch") if bar and pending else None
    for i, (ci, b) in enumerate(pending):
        if stop_after is not None and len(done) >= stop_after:
            break
        recs = run_unit(study, ci, b, log=None if progress else log)
        dest = _unit_file(out, ci, b)
        tmp = dest.with_suffix(".tmp")
        recs.to_csv(tmp, index=False)
        os.replace(tmp, dest)             # a batch is on disk whole or not at all
        done.append((ci, b))
        if progress:
            progress.start = progress.start or t_start     # count the first batch's time too
            progress(i)
        elif log:
            el = time.perf_counter() - t_start
            log(f"[{i + 1}/{len(pending)}] batch {b + 1} of {study.conditions[ci].name} done; "
                f"{el:.0f} s elapsed, ~{el / (i + 1) * (len(pending) - i - 1):.0f} s left")
    if progress:
        progress.close()
    return done


def collect(study: Study, folders) -> pd.DataFrame:
    """All per-replication records found in the study folders, in a fixed order."""
    parts = []
    for f in folders:
        f = Path(f)
        meta = f / "study.json"
        if not meta.exists():
            raise ConfigError(f"{f}: not a study folder (no study.json)")
        if json.loads(meta.read_text()).get("fingerprint") != study.fingerprint():
            raise ConfigError(f"{f}: holds results of a different study; expected folders of "
                              f"{study.source} only")
        parts += [pd.read_csv(p) for p in sorted((f / "reps").glob("c*-b*.csv"))]
    if not parts:
        raise ConfigError("no finished batches in " + ", ".join(map(str, folders)))
    reps = pd.concat(parts, ignore_index=True).drop_duplicates(["condition", "method", "parameter", "rep"])
    return reps.sort_values(["condition", "method", "parameter", "rep"], kind="stable").reset_index(drop=True)


def summary_table(study: Study, reps: pd.DataFrame) -> pd.DataFrame:
    """Per condition, method and parameter: simulate_slope.summarise's columns plus seconds per
    replication, and how many replications of the study are in."""
    out = summarise(reps, study.conditions)
    secs = reps.groupby(["condition", "method"])["seconds"].mean()
    out["seconds_per_rep"] = [secs.get((c, m), np.nan) for c, m in zip(out["condition"], out["method"])]
    return out


def write_summary(study: Study, folders, dest: str | Path, *, parquet: bool = False,
                  plots: bool = True) -> pd.DataFrame:
    """Merge the folders' records and write DEST/reps.csv, DEST/summary.csv (and .parquet
    copies when asked), and the bias and coverage plots DEST/bias.png and DEST/coverage.png."""
    dest = Path(dest)
    reps = collect(study, folders)
    summ = summary_table(study, reps)
    dest.mkdir(parents=True, exist_ok=True)
    # written aside and renamed: under --distributed two processes may finish together
    for name, frame in (("reps.csv", reps), ("summary.csv", summ)):
        _write_atomic(dest / name, lambda tmp: frame.to_csv(tmp, index=False))
    if parquet:
        try:
            reps.to_parquet(dest / "reps.parquet", index=False)
            summ.to_parquet(dest / "summary.parquet", index=False)
        except ImportError:
            raise ConfigError("--parquet needs pyarrow (pip install pyarrow); the CSV files are "
                              f"written in {dest}") from None
    if plots:
        write_plots(summ, dest)
    page = summary_page(study, summ, reps, plots=plots)
    _write_atomic(dest / "summary.md", lambda tmp: tmp.write_text(page))
    return summ


def missing_rates(study: Study, reps: int | None = None) -> dict[str, dict[str, float]]:
    """Realised missing rates of y, x and w per condition, over its first `reps` replications
    (default all): the condition's pilot counts them (``condition_plan``), so a process that
    ran the study has them already."""
    out = {}
    for ci, cond in enumerate(study.conditions):
        plan = condition_plan(study.seed, ci, cond.design, reps or study.reps)
        out[cond.name] = dict(zip(("y", "x", "w"), plan.missing_rates[1:].tolist()))
    return out


def summary_page(study: Study, summ: pd.DataFrame, reps: pd.DataFrame, *, plots: bool = True) -> str:
    """summary.md: the study's settings, realised missing rates, results table, plots and time."""
    import platform

    import jax
    rates = missing_rates(study)
    n_done = reps.groupby("condition")["rep"].nunique()
    cond_rows = "\n".join(
        f"| {c.name} | {c.design.clusters} x {c.design.cluster_size} | {c.design.mechanism} | "
        f"{rates[c.name]['y']:.3f} | {rates[c.name]['x']:.3f} | {rates[c.name]['w']:.3f} | "
        f"{int(n_done.get(c.name, 0))} of {study.reps} |" for c in study.conditions)
    secs = reps.groupby("method")["seconds"].mean()
    time_rows = "\n".join(f"| {m} | {secs[m]:.3f} |" for m in study.methods if m in secs)
    unit_term = (" (+ (1 | unit) in three-level conditions)" if any(c.design.units for c in study.conditions)
                 else "")
    prior_text = "" if study.prior == "prior2" else f", {PRIOR_TEXT[study.prior].split(' (')[0]}"
    figs = ("\n## Plots\n\n![standardised bias](bias.png)\n\n![coverage](coverage.png)\n"
            if plots else "")
    return f"""# Simulation study: {Path(study.source).name}

{study.reps} replications per condition in batches of {study.batch}; imputation: {study.nimps}
imputations, burn-in {study.burn}, {study.thin} sweeps between imputations, {study.chains} chains{prior_text};
analysis `y ~ x + w + x:w + (x | cluster)`{unit_term} by REML, pooled by Rubin's rules (df.com = J - 2).
Methods: {", ".join(study.methods)}. Seed {study.seed}.

| condition | clusters x size | mechanism | missing y | missing x | missing w | replications done |
|---|---|---|---|---|---|---|
{cond_rows}

## Results

Coverage: of the 95% intervals (fixed effects). SE / SD: mean standard error over the SD of the
estimates. FMI: mean fraction of missing information. max PSR: the largest last-burn-in-window
PSR over the replications.

{summary_text(summ)}
{figs}
## Time

Seconds per replication by method (this run: {platform.machine()}, {os.cpu_count()} cores,
jax {jax.__version__} on {jax.default_backend()}):

| method | seconds per replication |
|---|---|
{time_rows}
"""


def write_plots(summ: pd.DataFrame, dest: Path) -> list[Path]:
    """bias.png: standardised bias of every parameter, 100 x bias / SD of the estimates over
    replications (defined where the true value is 0, unlike relative bias; Collins, Schafer & Kam
    2001, Psychol. Methods 6, take 40% as the point where bias starts to harm inference);
    coverage.png: coverage of the fixed effects' 95% intervals with the band a correct interval
    stays in 95% of the time over this many replications. One panel per condition, one marker
    per method."""
    import matplotlib
    matplotlib.use("Agg")             # files only: no display needed on a cluster node
    import matplotlib.pyplot as plt

    conds = list(dict.fromkeys(summ["condition"]))
    methods = list(dict.fromkeys(summ["method"]))
    params = list(dict.fromkeys(summ["parameter"]))
    markers = "osD^vP*X"
    paths = []
    summ = summ.assign(std_bias_pct=100.0 * summ["bias"] / (summ["mc_se"] * np.sqrt(summ["reps"])))
    for what, col, sel in (("bias", "std_bias_pct", params),
                           ("coverage", "coverage", [p for p in params if summ.loc[
                               summ["parameter"] == p, "coverage"].notna().any()])):
        fig, axes = plt.subplots(1, len(conds), figsize=(4.2 * len(conds), 0.45 * len(sel) + 1.6),
                                 sharey=True, squeeze=False)
        for ax, cond in zip(axes[0], conds):
            part = summ[summ["condition"] == cond]
            for mi, m in enumerate(methods):
                rows = part[part["method"] == m].set_index("parameter").reindex(sel)
                ys = np.arange(len(sel)) + (mi - (len(methods) - 1) / 2) * 0.12
                ax.plot(rows[col].to_numpy(float), ys, markers[mi % len(markers)], label=m, ms=5)
            if what == "bias":
                ax.axvline(0.0, color="grey", lw=0.8)
                for v in (-40.0, 40.0):
                    ax.axvline(v, color="grey", lw=0.8, ls="--")
                ax.set_xlabel("standardised bias (% of the estimates' SD)")
            else:
                reps = int(part["reps"].max())
                half = 1.96 * np.sqrt(0.95 * 0.05 / max(reps, 1))
                ax.axvspan(0.95 - half, 0.95 + half, color="grey", alpha=0.2, lw=0)
                ax.axvline(0.95, color="grey", lw=0.8)
                ax.set_xlabel(f"coverage of 95% intervals ({reps} replications)")
            ax.set_yticks(np.arange(len(sel)), sel)
            ax.set_ylim(len(sel) - 0.5, -0.5)      # the first parameter on top, as in the table
            ax.set_title(cond, fontsize=10)
            ax.grid(axis="x", alpha=0.3)
        axes[0][-1].legend(fontsize=8, loc="best")
        fig.tight_layout()
        path = dest / f"{what}.png"
        _write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
        plt.close(fig)
        paths.append(path)
    return paths


def summary_text(summ: pd.DataFrame) -> str:
    """The summary as a markdown table: the columns a methodologist reads first."""
    from .simulate_slope import to_markdown
    return to_markdown(summ, ("condition", "parameter", "method", "reps", "true", "mean",
                              "rel_bias_pct", "rmse", "coverage", "ci_width", "se_ratio", "fmi",
                              "max_psr", "seconds_per_rep"))


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(t) for t in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard '{text}': expected k/n, e.g. 0/4") from None
    if not (n >= 1 and 0 <= k < n):
        raise ConfigError(f"--shard '{text}': expected 0 <= k < n")
    return k, n


def log_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)

