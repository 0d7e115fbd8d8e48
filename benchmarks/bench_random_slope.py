"""Benchmark: ms per Gibbs sweep per chain, the seed's random-slope model, against jomo.lmer.

Data: the bundled `configs/probsolve.csv` (headerless, -99 = missing; 6,496 rows = 928 students x
7 waves). Model: the seed's analysis-shape focal model, `configs/ex8_4_continuous.imp` as it is:

    MODEL: student ~ probsolve:months efficacy stanmath condition months*condition frlunch;
    OUTCOME: probsolve;

a random intercept and a random slope of months for the outcome probsolve (level 1, ~24% missing),
a months x condition interaction, and incomplete predictors at both levels: efficacy (level 1,
~21%), stanmath and frlunch (level 2, constant within student, ~11% and ~7% of students).
efficacy and frlunch are imputed as continuous (the script has no ORDINAL line). jaximpute's
blocks: probsolve | 1 + months + efficacy + stanmath + condition + months*condition + frlunch +
(1 + months | student); efficacy | 1 + stanmath + frlunch + months + condition + (1 | student);
stanmath | 1 + frlunch + condition; frlunch | 1 + condition.

    python benchmarks/bench_random_slope.py             # full run (about 4-5 minutes)
    python benchmarks/bench_random_slope.py --quick     # smoke run (about 1 minute)
    python benchmarks/bench_random_slope.py --repeats 7 --no-r

1. jaximpute. The script, data and spec are read exactly as `jaximpute.api.run_script` does
   (`read_script`, `read_table`, `build_spec`); then the steps of `jaximpute.run.sample` are
   repeated here (`prepare`, `make_runner(st, burn=S, thin=1, num_saves=0)`, `lower().compile()`)
   so that the program is compiled once per chain count and its call (run + the one
   `device_get` of the outputs, i.e. what `sample` reports as timing['sampling']) can be timed
   several times: the median call time / S / C is the ms per sweep per chain. S: 2,000 sweeps
   at 2 chains, 50 at 100 chains (about 4,000-5,000 chain-sweeps, a few seconds a call); compile
   seconds are shown apart. NIMPS 0: the sweeps are all burn-in (the trace of the monitored
   parameters is written every sweep, as in any run). In the full run one real `sample(spec,
   Settings(burn=S, thin=1, nimps=0, chains=C, seed=...))` call per chain count is made as a
   cross-check, and its `RawDraws.timing` is printed.

2. jomo (R) substantive-model-compatible imputation, one chain, on the same data:

       d <- read.csv("probsolve.csv", header = FALSE, na.strings = "-99", col.names = <the 12>)
       d <- d[, c("probsolve", "months", "efficacy", "stanmath", "condition", "frlunch", "student")]
       jomo.lmer(probsolve ~ months + efficacy + stanmath + condition + months:condition +
                   frlunch + (1 + months | student),
                 data = d, level = c(1, 1, 1, 2, 2, 2, 1), nburn = K, nbetween = 1, nimp = 2,
                 output = 0)

   All columns numeric (efficacy and frlunch continuous, as in jaximpute's run); level 2 for
   stanmath, condition and frlunch (the cluster id's level is ignored). With level-2 variables
   jomo.lmer runs `jomo2smcC`: the substantive model plus a joint two-level normal model for all
   the covariates (months, efficacy | level 2: stanmath, condition, frlunch), and it first fits
   the model to the complete cases with lmer for starting values. It runs nburn + (nimp - 1) *
   nbetween iterations, so K and K + N iterations are timed in turn (`system.time`, output
   captured) and (t(K + N) - t(K)) / N is the ms per iteration: the lmer fit and other fixed
   costs cancel. N is sized by a pilot run so that one difference is about `--r-seconds`; the
   median over `--r-repeats` pairs is reported.

Ratio = jomo ms per iteration / jaximpute ms per sweep per chain. Target: >= 50x at 2 chains.
A jomo iteration and a jaximpute sweep each update every parameter and redraw every missing
value once, but the imputation models differ (jomo's covariate model is a joint normal model with
its own random effects; jaximpute's is a sequence of regressions), so the ratio compares the cost
of one Gibbs iteration, not the mixing per iteration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import _pin  # noqa: E402,F401  (--cpus N: pin before JAX starts its threads)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from _common import (ROOT, fmt, jomo_pairs, machine_line, median, r_peer, say,  # noqa: E402
                     spread, table, time_interleaved)
from jaximpute.compile import prepare  # noqa: E402
from jaximpute.data import read_table  # noqa: E402
from jaximpute.kernels.sweep import make_runner  # noqa: E402
from jaximpute.execution import chain_keys  # noqa: E402
from jaximpute.run import Settings, sample  # noqa: E402
from jaximpute.script import read_script  # noqa: E402
from jaximpute.spec import build_spec  # noqa: E402

SCRIPT = ROOT / "configs" / "ex8_4_continuous.imp"
CHAINS = (2, 100)
TARGET_RATIO = 50.0        # jomo.lmer ms per iteration / jaximpute ms per sweep per chain, 2 chains
CHAIN_SEED = 90291         # the script's SEED
COLUMNS = ("school", "condition", "esolpercent", "student", "abilitygrp", "female", "stanmath",
           "frlunch", "wave", "months", "probsolve", "efficacy")
FORMULA = ("probsolve ~ months + efficacy + stanmath + condition + months:condition + frlunch + "
           "(1 + months | student)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: shorter calls, 3 repeats, no sample() cross-check, R ~4 s pairs")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per chain count (median reported; default 5, quick 3)")
    p.add_argument("--sweeps", type=int, nargs=2, default=None, metavar=("S2", "S100"),
                   help="sweeps per timed call at 2 and at 100 chains (default 2000 50; quick 400 10)")
    p.add_argument("--r-seconds", type=float, default=None,
                   help="target seconds of the N extra jomo iterations in each pair (default 15, quick 3)")
    p.add_argument("--r-repeats", type=int, default=None,
                   help="timed (K, K + N) pairs for jomo (median reported; default 3, quick 1)")
    p.add_argument("--no-r", action="store_true", help="skip jomo.lmer")
    p.add_argument("--no-check", action="store_true",
                   help="skip the cross-check with jaximpute.run.sample (always skipped with --quick)")
    p.add_argument("--cpus", type=int, default=None,
                   help="pin the process to this many CPUs (default: all it may use)")
    a = p.parse_args(argv)
    a.repeats = a.repeats or (3 if a.quick else 5)
    a.sweeps = dict(zip(CHAINS, a.sweeps or ((400, 10) if a.quick else (2000, 50))))
    a.r_seconds = a.r_seconds or (3.0 if a.quick else 15.0)
    a.r_repeats = a.r_repeats or (1 if a.quick else 3)
    a.check = not (a.quick or a.no_check)
    return a


# ------------------------------------------------------------------------------ jaximpute

def load_spec():
    """As `jaximpute.api.run_script`: the script, its data table and the model spec."""
    script = read_script(SCRIPT)
    table_ = read_table(script.data, [n.text for n in script.variables], script.missing)
    return script, table_, build_spec(script, table_)


def compile_run(spec, chains: int, sweeps: int):
    """(call, compile seconds): `jaximpute.run.sample`'s program for one data set, BURN = sweeps,
    NIMPS = 0; call() runs it once and brings its outputs to the host, as `sample` does."""
    st, _, data, _ = prepare(spec)
    data = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], data)    # data-set axis, D = 1
    st = st._replace(num_missing=tuple(int(a.shape[1]) for a in data.miss_index))
    keys = chain_keys(CHAIN_SEED, 1, chains)
    runner = make_runner(st, sweeps, 1, 0)
    t0 = time.perf_counter()
    compiled = runner.lower(keys, data).compile()
    t_compile = time.perf_counter() - t0

    def call():
        out = compiled(keys, data)
        return jax.device_get((out.burn_psr, out.saved_params, out.imputations, out.post_trace,
                               out.post_psr))
    return call, t_compile


def measure_jaximpute(spec, sweeps: dict, repeats: int):
    """{chains: (ms per sweep per chain, timed call seconds, compile seconds)}; calls interleaved."""
    calls, comp = {}, {}
    for c in CHAINS:
        say(f"  compiling {c} chains ({sweeps[c]} sweeps a call)")
        calls[c], comp[c] = compile_run(spec, c, sweeps[c])
    say(f"  timing {repeats} calls of each, interleaved")
    times = time_interleaved(calls, repeats)
    return {c: (1e3 * median(ts) / sweeps[c] / c, ts, comp[c]) for c, ts in times.items()}


def check_sample(spec, sweeps: dict):
    """One real `jaximpute.run.sample` call per chain count: {chains: RawDraws.timing}."""
    out = {}
    for c in CHAINS:
        say(f"  sample(spec, Settings(burn={sweeps[c]}, nimps=0, chains={c}))")
        raw = sample(spec, Settings(burn=sweeps[c], thin=1, nimps=0, chains=c, seed=CHAIN_SEED))
        out[c] = raw.timing
    return out


# ------------------------------------------------------------------------------ jomo.lmer

R_SETUP = """
suppressMessages({{ library(jomo); library(lme4) }})
d <- read.csv("probsolve.csv", header = FALSE, na.strings = "-99",
              col.names = c({columns}))
d <- d[, c("probsolve", "months", "efficacy", "stanmath", "condition", "frlunch", "student")]
lev <- c(1, 1, 1, 2, 2, 2, 1)
f <- {formula}
"""


def measure_jomo(seconds: float, repeats: int):
    """(ms per iteration, [per-pair ms], N, median fixed seconds of a K0 run) or an error text."""
    pairs = jomo_pairs(R_SETUP.format(columns=", ".join(f'"{c}"' for c in COLUMNS), formula=FORMULA),
                       {"probsolve.csv": (ROOT / "configs" / "probsolve.csv").read_bytes()},
                       seconds=seconds, repeats=repeats, pilot=40,
                       timeout=120 + 4 * seconds * (repeats + 1))
    if isinstance(pairs, str):
        return pairs
    per = [1e3 * (t1 - t0) / n for _, _, n, t0, t1 in pairs]
    return median(per), per, int(pairs[0][2]), median([p[3] for p in pairs])


# ------------------------------------------------------------------------------ main

def main(argv=None):
    a = parse_args(argv)
    t_start = time.perf_counter()
    _, table_, spec = load_spec()
    st, layout, _, _ = prepare(spec)
    vals = table_.values
    miss = {n: np.isnan(vals[:, table_.names.index(n)]).mean()
            for n in ("probsolve", "efficacy", "stanmath", "frlunch")}

    lines = [f"# bench_random_slope ({'quick' if a.quick else 'full'})\n",
             f"Machine: {machine_line()}.",
             f"Data: `configs/probsolve.csv`, {vals.shape[0]:,} rows, {layout.num_clusters} students; "
             f"missing (rows) " + ", ".join(f"{n} {100 * m:.1f}%" for n, m in miss.items()) + ". "
             f"Model: `{SCRIPT.relative_to(ROOT)}` (`student ~ probsolve:months efficacy stanmath "
             f"condition months*condition frlunch`, float32). jaximpute: medians of {a.repeats} "
             f"timed calls, compile excluded.\n"]

    say("jaximpute:")
    jx = measure_jaximpute(spec, a.sweeps, a.repeats)
    checks = {}
    if a.check:
        say("jaximpute cross-check with run.sample:")
        checks = check_sample(spec, a.sweeps)

    jomo, jomo_note = r_peer(a.no_r, f"jomo.lmer ({a.r_repeats} pair(s) of runs, about "
                             f"{a.r_seconds:.0f} s extra each):",
                             lambda: measure_jomo(a.r_seconds, a.r_repeats))

    rows = []
    for c in CHAINS:
        ms, ts, t_comp = jx[c]
        ratio = f"{fmt(jomo[0] / ms)}x" if jomo else "-"
        rows.append([f"jaximpute, {c} chains", f"{a.sweeps[c]} sweeps x {c} chains", fmt(ms),
                     fmt(1e3 / ms / c), fmt(1e3 / ms), ratio, spread(ts), f"{t_comp:.1f}"])
    if jomo:
        ms, per, n, fixed = jomo
        rows.append(["jomo.lmer (R), 1 chain", f"{n} iterations (difference)", fmt(ms),
                     fmt(1e3 / ms), fmt(1e3 / ms), "1x", spread(per) if len(per) > 1 else "-",
                     f"({fixed:.1f} s fixed)"])
    else:
        rows.append(["jomo.lmer (R), 1 chain", "-", "-", "-", "-", "-", "-", jomo_note])
    lines.append("## ms per sweep (iteration) per chain\n")
    lines.append(table(["run", "timed", "ms/sweep/chain", "sweeps/s (each chain)", "chain-sweeps/s",
                        "jomo / jaximpute", "spread", "compile s"], rows))
    lines.append("\nspread = (max - min) / median of the timed calls (jomo: of the per-pair "
                 "estimates). jomo's last column is the median time of its short run (nburn = 10): "
                 "R start-up inside the call, the complete-case lmer fit, set-up; it cancels in the "
                 "difference.\n")

    lines.append("## Target\n")
    if jomo:
        r2, r100 = jomo[0] / jx[2][0], jomo[0] / jx[100][0]
        verdict = "target met" if r2 >= TARGET_RATIO else "target not met"
        lines.append(f"- jaximpute at 2 chains is **{r2:.1f}x** faster per chain-iteration than "
                     f"jomo.lmer (target >= {TARGET_RATIO:.0f}x): **{verdict}**.")
        lines.append(f"- At 100 chains: {r100:.1f}x per chain-iteration.")
    else:
        lines.append(f"- jomo.lmer {jomo_note}: the >= {TARGET_RATIO:.0f}x target cannot be judged.")
    lines.append(f"- ms/sweep/chain: {fmt(jx[2][0])} at 2 chains, {fmt(jx[100][0])} at 100 chains "
                 f"({jx[2][0] / jx[100][0]:.2f}x less per chain at 100 chains).\n")

    if checks:
        lines.append("## Cross-check: one `jaximpute.run.sample` call per chain count\n")
        crow = []
        for c, t in checks.items():
            crow.append([f"{c}", f"{a.sweeps[c]}", f"{t['prepare']:.2f}", f"{t['compile']:.1f}",
                         f"{t['sampling']:.2f}", fmt(1e3 * t["sampling"] / a.sweeps[c] / c)])
        lines.append(table(["chains", "burn (nimps 0)", "prepare s", "compile s", "sampling s",
                            "ms/sweep/chain (one call)"], crow))
        lines.append("")

    lines.append("jomo.lmer call: `jomo.lmer(" + FORMULA + ", data = d, level = c(1, 1, 1, 2, 2, 2, "
                 "1), nburn = K, nbetween = 1, nimp = 2, output = 0)` with d = probsolve, months, "
                 "efficacy, stanmath, condition, frlunch, student (all numeric, -99 read as NA); "
                 "K = 10 and 10 + N timed in turn.")
    lines.append(f"\nTotal benchmark time {time.perf_counter() - t_start:.0f} s.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
