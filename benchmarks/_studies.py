"""The study scripts' common parts (sim_random_slope.py, sim_ordinal_predictor.py,
sim_random_intercept.py): their command line, the run through the library's study runner
(``jaximpute.studies.runner``: the same programs, seeds and records as `jaximpute simulate`) or
the re-rendering of saved replications, and the end of their docs pages."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from jaximpute.studies.config import Condition, Study
from jaximpute.studies.analysis import summarise
from jaximpute.studies.pages import to_markdown
from jaximpute.studies.runner import collect, missing_rates, run_study, summary_table


def study_args(argv, description: str, doc, *, reps: int, batch: int, seed: int, quick_help: str):
    """The study scripts' command line: --reps/--burn/--nimps default to the full study (reps,
    3000, 20) or, with --quick, to a smoke run (20, 1000, 10); the page `doc` is written unless
    --quick (or --out elsewhere)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--reps", type=int, default=None, help=f"replications per condition (default {reps})")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--burn", type=int, default=None, help="burn-in sweeps per chain (default 3000)")
    p.add_argument("--thin", type=int, default=100)
    p.add_argument("--nimps", type=int, default=None, help="imputations (default 20)")
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--batch", type=int, default=batch, help="data sets per compiled program")
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--save-reps", type=Path, default=None)
    p.add_argument("--render", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    for k, (q, f) in {"reps": (20, reps), "burn": (1000, 3000), "nimps": (10, 20)}.items():
        if getattr(a, k) is None:
            setattr(a, k, q if a.quick else f)
    if a.out is None and not a.quick:
        a.out = doc
    return a


def study_of(args, designs, methods, command: str) -> Study:
    """The study that the parsed `args` ask for: one condition per design."""
    return Study(tuple(Condition(d.name, d) for d in designs), reps=args.reps, batch=args.batch,
                 seed=args.seed, methods=tuple(methods), nimps=args.nimps, burn=args.burn,
                 thin=args.thin, chains=args.chains, population=designs[0].population, source=command)


@dataclass
class StudyRun:
    """What a study script's page is written from."""

    summary: pd.DataFrame      # studies.runner.summary_table
    reps: pd.DataFrame         # the per-replication records
    settings: dict
    rates: dict                # condition -> incomplete column -> realised missing rate
    timing: dict               # "condition / method" -> seconds
    runtime: float
    command: str


def run_or_render(args, designs, methods, command: str, log=print) -> StudyRun:
    """Run the study with the parsed `args` through the study runner (and save the replications
    when `args.save_reps` is set), or re-summarise saved ones (`args.render`)."""
    study = study_of(args, designs, methods, command)
    if args.render:
        reps_df = pd.read_csv(args.render)
        meta = json.loads(args.render.with_suffix(".json").read_text())
        # replications saved before the scripts ran through the study runner have no seconds
        summary = (summary_table(study, reps_df) if "seconds" in reps_df
                   else summarise(reps_df, study.conditions))
        return StudyRun(summary, reps_df, meta["settings"], meta["missing_rates"], meta["timing"],
                        meta["runtime"], meta.get("command", command))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jaximpute-study-") as tmp:
        run_study(study, tmp, log=log)
        reps_df = collect(study, [tmp])
    runtime = time.perf_counter() - t0
    rates = missing_rates(study)
    per_rep = reps_df.drop_duplicates(["condition", "method", "rep"])
    timing = {f"{c} / {m}": float(s) for (c, m), s in
              per_rep.groupby(["condition", "method"], sort=False)["seconds"].sum().items()}
    settings = {"reps": args.reps, "nimps": args.nimps, "burn": args.burn, "thin": args.thin,
                "chains": args.chains, "seed": args.seed, "batch": args.batch,
                "designs": [asdict(d) for d in designs]}
    if args.save_reps:
        reps_df.to_csv(args.save_reps, index=False)
        args.save_reps.with_suffix(".json").write_text(json.dumps(
            {"settings": settings, "missing_rates": rates, "timing": timing, "runtime": runtime,
             "command": command}, indent=1))
    return StudyRun(summary_table(study, reps_df), reps_df, settings, rates, timing, runtime, command)


def finish(args, run: StudyRun, verdict: str, write_doc) -> int:
    """Print the results table and the verdict; write the page (`write_doc(path, run)`) when
    `args.out` names one."""
    print(to_markdown(run.summary))
    print(verdict)
    if args.out:
        write_doc(args.out, run)
        print(f"wrote {args.out}")
    return 0


def page_tail(run: StudyRun) -> str:
    """The end of a study's docs page: realised missing rates, the results table, the command
    that reruns it, and where the time went."""
    import jax
    rates, timing = run.rates, run.timing
    cols = list(next(iter(rates.values())))
    rate_rows = "\n".join(f"| {c} | " + " | ".join(f"{m[v]:.3f}" for v in cols) + " |"
                          for c, m in rates.items())
    time_rows = "\n".join(f"| {k} | {v:.0f} s |" for k, v in timing.items())
    return f"""Realised missing rates:

| condition | {" | ".join(cols)} |
|---|{"---|" * len(cols)}
{rate_rows}

## Results

{to_markdown(run.summary)}

## Rerun

    {run.command}

Runtime {run.runtime / 60:.1f} min on {platform.machine()} ({os.cpu_count()} cores), jax {jax.__version__};
time per method (generate, impute, analyse and pool, compiles included):

| condition / method | seconds |
|---|---|
{time_rows}
"""
