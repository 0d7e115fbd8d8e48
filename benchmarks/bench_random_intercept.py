"""Benchmark: milliseconds per Gibbs sweep per chain, random-intercept model, against jomo and mice.

The seed's analysis-example shape: 6,496 rows in 928 clusters of 7, y and x both incomplete (about
25% each, MAR), generated here with a fixed numpy seed (`_common.random_intercept_data`). Model
`cluster ~ y x`: jaximpute's blocks are y | 1 + x + latent cluster mean of x + random intercept,
and x | 1 + random intercept; every sweep updates both blocks and redraws both incomplete variables.

    python benchmarks/bench_random_intercept.py              # full run (about 6 minutes)
    python benchmarks/bench_random_intercept.py --quick      # smoke run (about 2 minutes with R)
    python benchmarks/bench_random_intercept.py --repeats 7 --no-r

Prints three tables (markdown): jaximpute's speed at several chain counts against the targets;
where the time of one sweep goes (each block update and missing-value draw, jitted and vmapped
over chains, on a fixed state); and the R peers on the same data in the same run (jomo's two-level
joint model, mice with 2l.pan and 2l.norm), with the ratio peer time / jaximpute time per chain
and iteration. Compile time is measured apart and excluded; every time is a median of repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


import _pin  # noqa: E402,F401  (--cpus N: pin before JAX starts its threads)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from _common import (csv_text, fmt, machine_line, median, r_results, random_intercept_data, rscript,  # noqa: E402
                     run_r, say, spread, table, time_interleaved)
from jaximpute.compile import prepare  # noqa: E402
from jaximpute.data import DataTable  # noqa: E402
from jaximpute.kernels.blocks import update_block  # noqa: E402
from jaximpute.kernels.impute import impute_variable  # noqa: E402
from jaximpute.kernels.state import State  # noqa: E402
from jaximpute.kernels.stream import with_stream  # noqa: E402
from jaximpute.kernels.sampler import sweep  # noqa: E402
from jaximpute.kernels.sweep import make_runner  # noqa: E402
from jaximpute.execution import chain_keys  # noqa: E402
from jaximpute.script import parse_script  # noqa: E402
from jaximpute.spec import build_spec  # noqa: E402

NAMES = ("cluster", "y", "x")
TARGETS = {2: 0.3, 100: 0.1}          # ms per sweep per chain
DATA_SEED = 20240611
CHAIN_SEED = 7


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 and 100 chains, shorter calls, R runs of about 8 s each")
    p.add_argument("--repeats", type=int, default=None, help="timed calls per measurement "
                   "(median reported; default 5, quick 3)")
    p.add_argument("--chains", type=int, nargs="+", default=None,
                   help="chain counts for the speed table (default 2 10 100 1000; quick 2 100)")
    p.add_argument("--work", type=int, default=None,
                   help="chain-sweeps per timed call (default 3000, quick 1000)")
    p.add_argument("--r-seconds", type=float, default=None,
                   help="target seconds per R peer run (default 60, quick 8)")
    p.add_argument("--no-r", action="store_true", help="skip the R peers")
    p.add_argument("--cpus", type=int, default=None,
                   help="pin the process to this many CPUs (default: all it may use)")
    p.add_argument("--no-pinned", action="store_true",
                   help="skip the extra run of 2 and 100 chains pinned to one CPU")
    p.add_argument("--speed-only", action="store_true",
                   help="only the jaximpute speed table, printed as one JSON line (used internally)")
    a = p.parse_args(argv)
    a.repeats = a.repeats or (3 if a.quick else 5)
    a.chains = sorted(set(a.chains or ([2, 100] if a.quick else [2, 10, 100, 1000])) | {2, 100})
    a.work = a.work or (1000 if a.quick else 3000)
    a.r_seconds = a.r_seconds or (8.0 if a.quick else 60.0)
    return a


# ------------------------------------------------------------------------------ setup

def build(values: np.ndarray):
    table_ = DataTable(NAMES, values, "<bench>", np.zeros(len(NAMES), bool), None, False)
    script = parse_script("VARIABLES: cluster y x; MODEL: cluster ~ y x; BURN: 1; THIN: 1; NIMPS: 0;")
    spec = build_spec(script, table_)
    st, layout, data, _ = prepare(spec)
    return spec, st, data


def sweeps_for(chains: int, work: int, lo: int = 5) -> int:
    return max(lo, work // chains)


# ------------------------------------------------------------------------------ whole runs

def compile_runner(st, data_d, chains: int, work: int):
    """(call, S, compile seconds); call() runs S sweeps of C chains and returns the RunOutput."""
    s = sweeps_for(chains, work)
    run = make_runner(st, burn=s, thin=1, num_saves=0)
    keys = chain_keys(CHAIN_SEED, 1, chains)
    t0 = time.perf_counter()
    compiled = run.lower(keys, data_d).compile()
    t_compile = time.perf_counter() - t0
    return (lambda: jax.block_until_ready(compiled(keys, data_d))), s, t_compile


# ------------------------------------------------------------------------------ components

def component_steps(spec, st):
    """[(label, step)] in sweep order; step(key, state, data) -> state updates one component."""
    steps = []
    for b in reversed(range(len(st.blocks))):
        info = spec.block_info[b]
        rhs = " + ".join(["1" if t == "Intercept" else t for t in info.terms] +
                         ["u_j" for _ in info.random])

        def step(k, s, d, b=b):
            blocks = list(s.blocks)
            blocks[b] = with_stream(k, lambda rng: update_block(rng, st, b, s.blocks, s.x, d.clusters),
                                    dtype=s.x.dtype)[0]
            return State(s.x, tuple(blocks))
        steps.append((f"update_block: {info.outcome} ~ {rhs}", step))
    for k, v in enumerate(st.incomplete):
        name = spec.x_names[v]
        kids = [spec.block_info[c].outcome for c in st.children_of_var(v)]
        extra = f" (own block + child {', '.join(kids)})" if kids else " (own block)"

        def step(key, s, d, k=k):
            return State(*with_stream(key, lambda rng: impute_variable(
                rng, st, k, s.blocks, s.x, d.clusters, d.miss_index[k]), dtype=s.x.dtype))
        steps.append((f"impute_variable: {name}{extra}", step))
    return steps


def loop_of(step, sweeps: int, datasets_axis: bool = False):
    """jit(scan over `sweeps` steps of vmap(step) over chains), keys folded per step as the runner.

    The state passes through an optimisation barrier together with the step counter, so XLA
    cannot hoist the work that depends only on the parts a component leaves unchanged out of
    the loop: each step really recomputes everything, as it would inside a sweep.
    `datasets_axis` adds the runner's outer vmap over a (size-1) data-set axis.
    """
    def chains(ks, s, data):
        return jax.vmap(step, in_axes=(0, 0, None))(ks, s, data)

    @jax.jit
    def loop(keys, state, data):
        fold = jax.vmap(lambda k, t: jax.random.fold_in(k, t), in_axes=(0, None))
        if datasets_axis:
            keys, state, data = keys[None], jax.tree_util.tree_map(lambda a: a[None], state), \
                jax.tree_util.tree_map(lambda a: a[None], data)
            fold = jax.vmap(fold, in_axes=(0, None))
            apply = jax.vmap(chains)
        else:
            apply = chains

        def body(s, t):
            s, t = jax.lax.optimization_barrier((s, t))
            return apply(fold(keys, t), s, data), None
        out = jax.lax.scan(body, state, jnp.arange(sweeps))[0]
        return jax.tree_util.tree_map(lambda a: a[0], out) if datasets_axis else out
    return loop


def time_components(spec, st, data1, state, chains: int, work: int, repeats: int):
    """[(label, seconds per step per chain, repeats)] for each component and the whole sweep."""
    s = sweeps_for(chains, work)
    keys = chain_keys(CHAIN_SEED + 1, 1, chains)[0]
    whole = lambda k, x, d: sweep(k, st, x, d)[0]  # noqa: E731
    steps = [(label, step, False) for label, step in component_steps(spec, st)]
    steps += [("sweep (all of the above)", whole, False),
              ("sweep vmapped over a size-1 data-set axis too (the runner avoids this)", whole, True)]
    calls = {}
    for label, step, d_axis in steps:
        say(f"  compiling at {chains} chains: {label}")
        compiled = loop_of(step, s, d_axis).lower(keys, state, data1).compile()
        calls[label] = lambda compiled=compiled: jax.block_until_ready(compiled(keys, state, data1))
    say(f"  timing {len(calls)} parts at {chains} chains, interleaved")
    times = time_interleaved(calls, repeats)
    return [(label, median(ts) / s / chains, ts) for label, ts in times.items()]


# ------------------------------------------------------------------------------ R peers

R_PEERS = {
    "jomo": dict(
        label="jomo (jomo.MCMCchain)",
        model="jomo 2.7 `jomo.MCMCchain(Y = (y, x), clus = cluster)`: the two-level joint normal "
              "model of (y, x) with correlated random intercepts (jomo1rancon), one chain; the same "
              "joint model as jaximpute's `cluster ~ y x` (up to priors).",
        unit="iteration",
        pilots="c(5, 50)",
        code="""
run <- function(K) system.time(invisible(capture.output(
  r <- jomo.MCMCchain(Y = d[, c("y", "x")], clus = d$cluster, nburn = K, output = 0))))[["elapsed"]]
""",
    ),
    "mice_2l.pan": dict(
        label="mice 2l.pan",
        model="mice 3 `method = \"2l.pan\"` for y and x, m = 1; predictor matrix: cluster -2, the other "
              "variable 3 (its value and cluster mean as fixed effects, random intercept), i.e. "
              "y ~ x + mean_j(x) + u_j and x ~ y + mean_j(y) + u_j. Each draw runs pan afresh for "
              "paniter = 500 iterations (mice's default).",
        unit="mice iteration",
        pilots="c(1, 4)",
        code="""
pm <- make.predictorMatrix(d); pm[, ] <- 0
pm["y", c("cluster", "x")] <- c(-2, 3); pm["x", c("cluster", "y")] <- c(-2, 3)
run <- function(K) system.time(m <- mice(d, m = 1, maxit = K, method = c("", "2l.pan", "2l.pan"),
  predictorMatrix = pm, printFlag = FALSE))[["elapsed"]]
""",
    ),
    "mice_2l.norm": dict(
        label="mice 2l.norm",
        model="mice 3 `method = \"2l.norm\"` for y and x, m = 1; predictor matrix: cluster -2, the other "
              "variable 2 (2l.norm uses only random-effect columns: random intercept and slope, "
              "cluster-specific residual variances). Each draw runs 100 inner Gibbs iterations "
              "in R code.",
        unit="mice iteration",
        pilots="1",
        code="""
pm <- make.predictorMatrix(d); pm[, ] <- 0
pm["y", c("cluster", "x")] <- c(-2, 2); pm["x", c("cluster", "y")] <- c(-2, 2)
run <- function(K) system.time(m <- mice(d, m = 1, maxit = K, method = c("", "2l.norm", "2l.norm"),
  predictorMatrix = pm, printFlag = FALSE))[["elapsed"]]
""",
    ),
}

# Pilot runs (which also warm up) size the timed run to about `seconds`; with two pilot lengths
# the fixed setup cost drops out of the estimate. The timed run's total is divided by its length.
R_TEMPLATE = """
suppressMessages({{ library(jomo); library(mice) }})
set.seed(1)
d <- read.csv("data.csv")
{code}
pilots <- {pilots}
tp <- sapply(pilots, run)
per <- if (length(pilots) > 1) max(diff(tp) / diff(pilots), 1e-4) else tp / pilots
K <- max(1, min({max_iters}, round({seconds} / per)))
t <- run(K)
cat("RESULT peer", K, t, "\\n")
"""


def time_r_peers(values: np.ndarray, seconds: float):
    """{name: (iterations, seconds, per-iteration seconds) or error text}."""
    files = {"data.csv": csv_text(NAMES, values).encode()}
    out = {}
    for name, peer in R_PEERS.items():
        say(f"  R peer {name} (about {seconds:.0f} s after a pilot run)")
        code = R_TEMPLATE.format(code=peer["code"], pilots=peer["pilots"], seconds=seconds,
                                 max_iters=100000)
        stdout, stderr, rc = run_r(code, timeout=30 + 6 * seconds + 120, files=files)
        res = r_results(stdout).get("peer")
        if rc != 0 or res is None:
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            out[name] = f"failed (exit {rc}): {tail}"
            continue
        k, t = int(res[0]), res[1]
        out[name] = (k, t, t / k)
    return out


# ------------------------------------------------------------------------------ main

def measure_speed(st, data_d, chains, work, repeats):
    """{chains: (ms per sweep per chain, sweeps S, repeats, compile s)} and the final states.

    Every chain count is compiled first, then the timed calls are interleaved, so that a busy
    spell on the shared machine slows all chain counts alike instead of one of them.
    """
    calls, info, last = {}, {}, {}
    for c in chains:
        say(f"  compiling {c} chains")
        call, s, t_comp = compile_runner(st, data_d, c, work)
        calls[c] = lambda call=call, c=c: last.__setitem__(c, call())
        info[c] = (s, t_comp)
    say(f"  timing {len(calls)} chain counts, interleaved")
    times = time_interleaved(calls, repeats)
    out = {c: (1e3 * median(ts) / info[c][0] / c, info[c][0], ts, info[c][1]) for c, ts in times.items()}
    finals = {c: jax.tree_util.tree_map(lambda a: a[0], r.final) for c, r in last.items()}
    return out, finals


def pinned_speed(a) -> dict | str:
    """The same runner timings in a child process pinned to one CPU: {chains: (ms, S, ts, compile)}."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--speed-only", "--cpus", "1",
           "--repeats", str(a.repeats), "--work", str(a.work), "--chains", "2", "100"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        return "timed out"
    for line in p.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return {int(k): tuple(v) for k, v in json.loads(line).items()}
    return f"failed (exit {p.returncode}): {(p.stderr.strip().splitlines() or [''])[-1]}"


def main(argv=None):
    a = parse_args(argv)
    t_start = time.perf_counter()
    values = random_intercept_data(DATA_SEED)
    n = values.shape[0]
    miss = np.isnan(values[:, 1:]).mean(axis=0)
    spec, st, data = build(values)
    data_d = jax.tree_util.tree_map(lambda x: np.asarray(x)[None], data)   # leading data-set axis
    data1 = jax.tree_util.tree_map(np.asarray, data)

    lines = []
    lines.append(f"# bench_random_intercept ({'quick' if a.quick else 'full'})\n")
    lines.append(f"Machine: {machine_line()}.")
    lines.append(f"Data: {n:,} rows, {st.num_clusters} clusters of {st.rows_per_cluster}; "
                 f"missing y {100 * miss[0]:.1f}%, x {100 * miss[1]:.1f}% (MAR, numpy seed {DATA_SEED}). "
                 f"Model `cluster ~ y x` (float32). Medians of {a.repeats} timed calls, compile excluded.\n")

    # 1. whole runs
    say("jaximpute runs:")
    speed, finals = measure_speed(st, data_d, a.chains, a.work, a.repeats)
    if a.speed_only:
        print(json.dumps({c: list(v) for c, v in speed.items()}))
        return
    per_chain = {c: v[0] for c, v in speed.items()}
    pinned = {}
    if not a.no_pinned and a.cpus is None and len(os.sched_getaffinity(0)) > 1:
        say("jaximpute runs pinned to one CPU (child process):")
        pinned = pinned_speed(a)

    def speed_row(label, c, v):
        ms, s, ts, t_comp = v
        target = TARGETS.get(c)
        verdict = "-" if target is None else f"<= {target} {'met' if ms <= target else 'NOT met'}"
        return [label, f"{s}", fmt(ms), fmt(1e3 / ms / c), fmt(1e3 / ms), verdict, spread(ts),
                f"{t_comp:.1f}"]
    cpus = len(os.sched_getaffinity(0))
    speed_rows = [speed_row(f"{c}" + (f" ({cpus} CPUs)" if pinned else ""), c, v)
                  for c, v in speed.items()]
    if isinstance(pinned, dict):
        speed_rows += [speed_row(f"{c} (pinned to 1 CPU)", c, v) for c, v in pinned.items()]
    lines.append("## jaximpute: one compiled run (`make_runner`, S sweeps of C chains per call)\n")
    lines.append(table(["chains", "sweeps S", "ms/sweep/chain", "sweeps/s (each chain)",
                        "chain-sweeps/s", "target ms", "spread", "compile s"], speed_rows))
    if isinstance(pinned, str):
        lines.append(f"\nThe run pinned to one CPU {pinned}.")
    lines.append("\nspread = (max - min) / median of the timed calls; the same compiled program "
                 "pinned to one CPU (`--cpus 1`) shows what the thread pool costs or gains on this "
                 "machine.\n")

    # 2. where the time goes
    lines.append("## Where the time goes (each part jitted, vmapped over chains, scanned on a fixed state)\n")
    comp = {}
    for c in (2, 100):
        say(f"components at {c} chains:")
        comp[c] = time_components(spec, st, data1, finals[c], c, a.work, a.repeats)
    headers = ["part of one sweep"]
    for c in (2, 100):
        headers += [f"ms/chain ({c} ch)", f"share ({c} ch)"]

    def row_of(label, ms_at):
        row = [label]
        for c in (2, 100):
            whole = 1e3 * comp[c][-2][1]            # the sweep vmapped over chains only
            row += [fmt(ms_at(c)), f"{100 * ms_at(c) / whole:.0f}%"]
        return row
    n_parts = len(comp[2]) - 2
    rows = [row_of(comp[2][i][0], lambda c, i=i: 1e3 * comp[c][i][1]) for i in range(n_parts)]
    rows.append(row_of("sum of the parts", lambda c: 1e3 * sum(r[1] for r in comp[c][:n_parts])))
    rows.append(row_of(comp[2][-2][0], lambda c: 1e3 * comp[c][-2][1]))
    rows.append(row_of(comp[2][-1][0], lambda c: 1e3 * comp[c][-1][1]))
    rows.append(row_of("runner: the above + monitoring and trace writes (table 1)",
                       lambda c: per_chain[c]))
    lines.append(table(headers, rows))
    lines.append("\nShares are of the sweep vmapped over chains only, at the same chain count. "
                 "Each part is timed alone (its own compiled loop), so the sum of the parts can "
                 "differ from the fused sweep.\n")

    # 3. peers
    lines.append("## Peers in R, same data, same run (one chain each)\n")
    if a.no_r:
        lines.append("Skipped (--no-r).")
    elif rscript() is None:
        lines.append("Skipped: Rscript is not on the PATH.")
    else:
        say("R peers:")
        peers = time_r_peers(values, a.r_seconds)
        rows = []
        for name, res in peers.items():
            p = R_PEERS[name]
            if isinstance(res, str):
                rows.append([p["label"], "-", "-", "-", "-", "-", res])
                continue
            k, t, per = res
            rows.append([p["label"], f"{k} {p['unit']}s", f"{t:.1f}", fmt(1e3 * per),
                         fmt(1e3 * per / per_chain[2]) + "x", fmt(1e3 * per / per_chain[100]) + "x", ""])
        lines.append(table(["peer", "timed run", "seconds", "ms per iteration per chain",
                            "ratio vs jaximpute 2 ch", "ratio vs jaximpute 100 ch", "note"], rows,
                           align="lrrrrrl"))
        lines.append("")
        lines += [f"- {R_PEERS[name]['label']}: {R_PEERS[name]['model']}" for name in peers]
        lines.append("\nRatio = peer time per iteration of one chain / jaximpute time per sweep per "
                     "chain (table 1). A mice iteration draws each variable once, from a pan or "
                     "2l.norm chain run afresh (500 or 100 inner iterations), so it costs more than "
                     "one Gibbs sweep and is not equivalent to one for mixing.")
    lines.append(f"\nTotal benchmark time {time.perf_counter() - t_start:.0f} s.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
