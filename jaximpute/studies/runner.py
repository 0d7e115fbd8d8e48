"""Simulation studies from a TOML config: `jaximpute simulate CONFIG` (issue 6).

A study is a grid of conditions x replications. Every condition is a design of the study's
population (``studies.populations``: by default the random-slope model with a cross-level
interaction, y on x, w and x*w, random intercept and slope of x, MAR/MCAR/MNAR deletion in y, x
and w) with its own settings; the replications of a condition are cut into batches of ``batch``
data sets, and each batch is one unit of work. For each method the batch runs as one device
program (``studies.program``):

1. generate: the data sets are drawn on device from their replication keys; the key of
   replication r of condition c is ``fold_in(fold_in(key(seed), c), r)``, so a data set does not
   depend on the batch size, the shard or the device that draws it;
2. impute: the method's model samples every chain of every data set (vmapped over data sets and
   chains), and the imputed data sets are assembled on device;
3. analyse and pool: the population's analysis (``studies.analysis``; for the random slope,
   ``lmm``'s REML fitter, vmapped) is applied to every imputed data set and pooled by Rubin's
   rules, in the same program; listwise deletion and the complete data are analysed directly
   (generate, analyse). Only the pooled numbers reach the host;
4. checkpoint: the batch's per-replication records are written to ``OUT/reps/`` (atomically:
   a temporary file, then a rename). A rerun skips the batches already there, so an interrupted
   study resumes where it stopped, and gives what an uninterrupted run gives (every batch's seeds
   are fixed by the config, not by the order of the work). Ctrl-C or SIGTERM stops ``jaximpute
   simulate`` at once (jaximpute.interrupt): the batch in progress is dropped, the finished ones
   stay, and `stopped` says how many are done.

``--shard k/n`` runs the batches whose index is k mod n (job arrays on clusters); ``jaximpute
merge OUT...`` combines their folders and writes the summary. The summary (``summary.csv``): per
condition, method and parameter, bias, relative bias, RMSE, coverage, CI width, SE/SD, mean FMI,
the largest last-window PSR and the time per replication.

The config: :mod:`jaximpute.studies.config`; the summary page and plots:
:mod:`jaximpute.studies.pages`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ..api import PRIOR3_FAILURE
from ..errors import JaxImputeError
from ..output import write_atomic as _write_atomic
from .analysis import analysis_of, records_frame, summarise
from .config import Condition, ConfigError, Study
from .pages import summary_page, write_plots
from .populations import DIRECT_METHODS, all_methods
from .program import Imputation, condition_plan, program_memory, run_batch


def _engine_seed(study: Study, ci: int, b: int, method: str) -> int:
    """The imputation seed of one batch and method: fixed by the config, not by the schedule."""
    seq = np.random.SeedSequence([study.seed, ci, b, all_methods(study.population).index(method)])
    return int(seq.generate_state(1)[0] % (2**31 - 2)) + 1


def _imputation(study: Study, method: str) -> Imputation:
    return Imputation(method, study.nimps, study.burn, study.thin, study.chains, study.prior)


def run_unit(study: Study, ci: int, b: int, log=None) -> pd.DataFrame:
    """Generate, impute, analyse and pool one batch: its per-replication records. Each method
    is one device program over the batch (``studies.program``); only pooled numbers come back."""
    cond = study.conditions[ci]
    d = cond.design
    analysis = analysis_of(d)
    start = b * study.batch
    reps = np.arange(start, min(start + study.batch, study.reps))
    frames = []
    for method in study.methods:
        t0 = time.perf_counter()
        eseed = None if method in DIRECT_METHODS else _engine_seed(study, ci, b, method)
        out = run_batch(d, _imputation(study, method), reps, seed=study.seed, condition=ci,
                        condition_reps=study.reps, engine_seed=eseed)
        if method in DIRECT_METHODS:
            rec, psr = analysis.records_direct(out, d), None
        else:
            _check_batch(out, cond, method, reps, study.prior)
            rec, psr = analysis.records_pooled(out, d), out["psr"]
        secs = time.perf_counter() - t0
        fr = records_frame(rec, method, start, psr, condition=cond.name)
        frames.append(fr.assign(seconds=secs / len(reps)))
        if log:
            log(f"  {cond.name}: {method}, replications {start + 1}-{reps[-1] + 1}: {secs:.1f} s")
    return pd.concat(frames, ignore_index=True)


def _check_batch(out: dict, cond: Condition, method: str, reps, prior: str = "prior2") -> None:
    """Stop with the replication named if a data set did not fit its condition's program or
    came out of it with cells still missing (studies.program's module docstring)."""
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
    (studies.program.program_memory: the whole batch program, generate to pool, compiled, not
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
            per = fits = None
            if one is not None and full is not None:
                per = (full - one) / max(study.batch - 1, 1)
                fits = int((limit - (one - per)) // per) if per and limit else None
            rows.append({"condition": cond.name, "method": method, "batch": study.batch,
                         "bytes_batch_1": one, "bytes_batch": full, "bytes_per_data_set": per,
                         "limit_bytes": limit, "limit_source": source, "largest_batch": fits})
            if log:
                size_text = "unknown memory" if full is None else f"{full / 2**20:.1f} MiB"
                log(f"  {cond.name}, {method}: {size_text} for a batch of {study.batch}")
    return pd.DataFrame(rows)


def _unit_file(out: Path, ci: int, b: int) -> Path:
    return out / "reps" / f"c{ci:03d}-b{b:05d}.csv"


def pending_units(study: Study, out: str | Path, shard: tuple[int, int] = (0, 1)) -> list[tuple[int, int]]:
    """This shard's (condition, batch) pairs whose records are not in OUT yet."""
    k, n = shard
    return [u for i, u in enumerate(study.units()) if i % n == k and not _unit_file(Path(out), *u).exists()]


def write_atomic(path: Path, write) -> None:
    """`write(tmp)` to a file beside `path`, then rename it over `path`: a reader never sees a
    partial file, and processes that finish together (--distributed) each leave a whole one
    (jaximpute.output.write_atomic: the file is on disk before the rename, a stopped process
    leaves no temporary file, and a full disk is a message naming the file)."""
    _write_atomic(path, write)


def _make_folder(path: Path) -> None:
    """mkdir -p, with a message instead of a traceback when the system refuses."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the results folder ({e.strerror or e})") from None


def _read_claim(folder: Path) -> dict:
    """FOLDER/study.json, read: a message, not a traceback, when it is not one this program
    wrote (truncated, binary, hand-edited)."""
    meta = folder / "study.json"
    try:
        claim = json.loads(meta.read_bytes().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"{meta}: cannot read it ({e.strerror or e})") from None
    except ValueError:                     # JSONDecodeError, UnicodeDecodeError
        claim = None
    if not isinstance(claim, dict) or "fingerprint" not in claim:
        raise ConfigError(f"{meta}: not a study record (jaximpute simulate writes one); expected "
                          "a study folder of jaximpute's, or a new or empty folder")
    return claim


# The folders this process is claiming or running a study in, and what each claim created, for
# `stopped` (a process stopped by a signal does not get to run_study's cleanup).
_claims: dict[Path, list[Path]] = {}


def _claim_folder(study: Study, out: Path) -> list[Path]:
    """Create OUT (or reuse it for the same study): refuse a folder written by another config,
    so a resumed study never mixes results of different settings. Processes of one
    --distributed job claim the same new folder at once: each writes the same study.json
    atomically, so none sees a half-written one or takes the others' empty `reps/` for a
    foreign folder. Returns what this call created (study.json, reps/, OUT), newest first, for
    `_release_folder`."""
    meta = out / "study.json"
    created: list[Path] = []
    if not meta.exists():
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: is a file, not a folder; expected a folder for the results")
        if out.exists() and any(p.name != "reps" and not p.name.startswith(".study.json.")
                                for p in out.iterdir()):
            raise ConfigError(f"{out}: exists and is not a study folder; expected a new or empty folder")
        if (out / "reps").exists() and any((out / "reps").glob("c*-b*.csv")):
            raise ConfigError(f"{out}: holds batch results but no study.json; expected a new or "
                              "empty folder, or a study folder")
        created = [p for p in (out, out / "reps") if not p.exists()]
        _claims[out] = [meta, *reversed(created)]      # for `stopped`, from the first mkdir
        _make_folder(out / "reps")
        text = json.dumps({"fingerprint": study.fingerprint(), "source": study.source,
                           "study": dataclasses.asdict(study)}, indent=1, default=str)
        write_atomic(meta, lambda tmp: tmp.write_text(text))
        created = [meta, *reversed(created)]
    old = _read_claim(out)
    if old.get("fingerprint") != study.fingerprint():
        raise ConfigError(f"{out}: holds results of a different study (config "
                          f"{old.get('source')}); expected an empty folder or this study's own")
    return created


def _release_folder(out: Path, created: list[Path]) -> None:
    """Undo a claim that produced no batch: a study that failed (or was stopped) before its
    first batch was written leaves no study.json behind to refuse the corrected config's run.
    Folders are removed only if empty; a folder that holds any batch keeps its study.json, so
    the study resumes."""
    if any((out / "reps").glob("c*-b*.csv")):
        return
    for p in created:
        if not p.exists():
            continue                      # a claim stopped before it made this one
        try:
            if p.is_dir():
                p.rmdir()                 # only if empty
            else:
                p.unlink()
        except OSError:
            return


def run_study(study: Study, out: str | Path, *, shard: tuple[int, int] = (0, 1), log=None,
              bar: bool = False, stop_after: int | None = None) -> list[tuple[int, int]]:
    """Run this shard's batches that are not in OUT yet; returns the (condition, batch) pairs run.

    `log` gets a line per method and batch; with `bar` (a terminal) a progress bar across the
    batches replaces the per-method lines. `stop_after` stops after that many batches (tests use
    it to interrupt a study). A study whose first batch fails leaves OUT as it found it."""
    out = Path(out)
    created = _claim_folder(study, out)
    try:
        return _run_pending(study, out, shard, log, bar, stop_after)
    except BaseException:
        if created:
            _release_folder(out, created)
        raise
    finally:
        _claims.pop(out, None)


def stopped(study: Study, out: str | Path, shard: tuple[int, int] = (0, 1)) -> str:
    """For a process that stops at once (Ctrl-C, SIGTERM; after output.stop_writing): undo the
    claim of a study that finished no batch (as run_study does when a batch fails), and say
    how far this shard got and how to go on."""
    out = Path(out)
    created = _claims.pop(out, None)
    if created:
        _release_folder(out, created)
    todo = len(study.units()[shard[0]::shard[1]])
    done = todo - len(pending_units(study, out, shard)) if (out / "study.json").exists() else 0
    if done == 0:
        return "no batch was finished; nothing was written"
    if done == todo:
        return (f"all {todo} batches are done in {out}; run the same command again to write the "
                "summary")
    return (f"{done} of {todo} batches are done in {out} (a batch in progress is dropped); run "
            "the same command again to resume")


def _run_pending(study: Study, out: Path, shard: tuple[int, int], log, bar: bool,
                 stop_after: int | None) -> list[tuple[int, int]]:
    from ..progress import Progress
    pending = pending_units(study, out, shard)
    if log:
        todo = len(study.units()[shard[0]::shard[1]])
        log(f"{todo - len(pending)} of {todo} batches already done; {len(pending)} to run")
    done: list[tuple[int, int]] = []
    t_start = time.perf_counter()
    progress = Progress(len(pending), label="batches", unit="batch") if bar and pending else None
    for i, (ci, b) in enumerate(pending):
        if stop_after is not None and len(done) >= stop_after:
            break
        recs = run_unit(study, ci, b, log=None if progress else log)
        # a batch is on disk whole or not at all
        write_atomic(_unit_file(out, ci, b), lambda tmp: recs.to_csv(tmp, index=False))
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
        if not f.exists():
            raise ConfigError(f"{f}: does not exist; expected a study's results folder")
        if not f.is_dir():
            raise ConfigError(f"{f}: is a file, not a folder; expected a study's results folder")
        if not (f / "study.json").exists():
            raise ConfigError(f"{f}: not a study folder (no study.json)")
        if _read_claim(f).get("fingerprint") != study.fingerprint():
            raise ConfigError(f"{f}: holds results of a different study; expected folders of "
                              f"{study.source} only")
        parts += [_read_batch(p) for p in sorted((f / "reps").glob("c*-b*.csv"))]
    if not parts:
        raise ConfigError("no finished batches in " + ", ".join(map(str, folders)))
    reps = pd.concat(parts, ignore_index=True).drop_duplicates(["condition", "method", "parameter", "rep"])
    return reps.sort_values(["condition", "method", "parameter", "rep"], kind="stable").reset_index(drop=True)


_BATCH_COLUMNS = ("condition", "method", "parameter", "rep", "seconds")


def _read_batch(path: Path) -> pd.DataFrame:
    """One batch's records, as run_study wrote them; a message naming the file otherwise."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ConfigError(f"{path}: cannot read the batch's records ({str(e).splitlines()[0]}); "
                          "expected a file written by jaximpute simulate: delete it and rerun "
                          "the study to redo that batch") from None
    lacking = [c for c in _BATCH_COLUMNS if c not in frame.columns]
    if lacking:
        raise ConfigError(f"{path}: cannot read the batch's records (no column "
                          f"{', '.join(lacking)}); expected a file written by jaximpute simulate: "
                          "delete it and rerun the study to redo that batch")
    return frame


def summary_table(study: Study, reps: pd.DataFrame) -> pd.DataFrame:
    """Per condition, method and parameter: studies.analysis.summarise's columns plus seconds
    per replication, and how many replications of the study are in."""
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
    _make_folder(dest)
    # written aside and renamed: under --distributed two processes may finish together
    for name, frame in (("reps.csv", reps), ("summary.csv", summ)):
        write_atomic(dest / name, lambda tmp: frame.to_csv(tmp, index=False))
    if parquet:
        try:
            for name, frame in (("reps.parquet", reps), ("summary.parquet", summ)):
                write_atomic(dest / name, lambda tmp: frame.to_parquet(tmp, index=False))
        except ImportError:
            raise ConfigError("--parquet needs pyarrow (pip install pyarrow); the CSV files are "
                              f"written in {dest}") from None
    if plots:
        write_plots(summ, dest, write_atomic)
    page = summary_page(study, summ, reps, missing_rates(study), plots=plots)
    write_atomic(dest / "summary.md", lambda tmp: tmp.write_text(page))
    return summ


def missing_rates(study: Study, reps: int | None = None) -> dict[str, dict[str, float]]:
    """Realised missing rates of the incomplete columns (y, x and w in the random slope) per
    condition, over its first `reps` replications
    (default all): the condition's pilot counts them (``condition_plan``), so a process that
    ran the study has them already."""
    out = {}
    for ci, cond in enumerate(study.conditions):
        d = cond.design
        plan = condition_plan(study.seed, ci, d, reps or study.reps)
        out[cond.name] = {v: float(plan.missing_rates[d.NAMES.index(v)]) for v in d.INCOMPLETE}
    return out


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

