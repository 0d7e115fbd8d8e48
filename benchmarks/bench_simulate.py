"""Benchmark: simulation-study throughput, `jaximpute simulate` against the R pipelines (issue 6).

    python benchmarks/bench_simulate.py              # 1,000 replications ours per chain count,
                                                     # 2 each in R (~8 min)
    python benchmarks/bench_simulate.py --quick      # 3 x 20 ours, 1 each in R (~3 min)
    python benchmarks/bench_simulate.py --no-r

The replications are those of `configs/sim_slope.toml`'s first condition (50 clusters of 20, the
random-slope model with a cross-level interaction, MAR in y, x and w), drawn by jaximpute's
generator; the R pipelines get the same incomplete data sets (a CSV), so all three do the same
work per replication: impute (20 imputations, 2,000 burn-in iterations, 100 between
imputations), fit `y ~ x + w + x:w + (1 + x | cluster)` to every imputed data set (REML), pool.

- **jaximpute**: `jaximpute simulate` on a config holding only the `focal` method, 10 batches of
  100 replications (a condition of the example study), as a user runs it: a fresh process with an empty compilation cache. Reported:
  the first batch (it compiles), the later batches (a study's steady state: they reuse the
  compiled programs), and the whole process's wall time per replication.
- **jomo.lmer + lme4 + mitml** (R, one replication after another): `jomo.lmer(y ~ x + w + x:w +
  (1 + x | cluster), level = c(1, 1, 2, 1), nburn = 2000, nbetween = 100, nimp = 20)` (the
  substantive-model-compatible imputation of the same model, one chain, 4,000 iterations),
  `with(jomo2mitml.list(imp), lmer(...))`, `testEstimates(..., df.com = J - 2)`.
- **mice 2l.pan + lme4 + mitml**: y and x by `2l.pan` (cluster as class variable, x's slope random
  in y's model), w by `2lonly.norm`, m = 20, maxit = 20 (mice has no burn-in between imputations:
  its m chains run side by side), the product x:w formed after imputation (mice's "just another
  variable" would be the alternative; neither is compatible with the random slope).

Printed: seconds per replication, replications per minute, and the ratios (issue 6's target:
jaximpute at least 30x the jomo pipeline's throughput at matched settings on this CPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import ROOT, fmt, machine_line, median, r_peer, r_results, run_r, say, table  # noqa: E402

CONFIG = ROOT / "configs" / "sim_slope.toml"
TARGET = 30.0

R_JOMO = """
suppressMessages({{ library(jomo); library(lme4); library(mitml) }})
d <- read.csv("inc.csv")
for (r in sort(unique(d$rep))) {{
  dd <- d[d$rep == r, c("y", "x", "w", "cluster")]
  set.seed(r)
  t0 <- proc.time()[["elapsed"]]
  invisible(capture.output(imp <- jomo.lmer(y ~ x + w + x:w + (1 + x | cluster), dd,
      level = c(1, 1, 2, 1), nburn = {burn}, nbetween = {thin}, nimp = {nimps}, output = 0)))
  t1 <- proc.time()[["elapsed"]]
  fit <- with(jomo2mitml.list(imp), lmer(y ~ x + w + x:w + (1 + x | clus)))   # jomo names it clus
  est <- testEstimates(fit, extra.pars = TRUE, df.com = {df_com})
  t2 <- proc.time()[["elapsed"]]
  cat("RESULT rep_", r, " ", t1 - t0, " ", t2 - t1, " ", est$estimates[4, 1], "\\n", sep = "")
}}
"""

R_MICE = """
suppressMessages({{ library(mice); library(lme4); library(mitml) }})
d <- read.csv("inc.csv")
for (r in sort(unique(d$rep))) {{
  dd <- d[d$rep == r, c("y", "x", "w", "cluster")]
  dd$cluster <- as.integer(dd$cluster)
  pred <- matrix(0, 4, 4, dimnames = list(names(dd), names(dd)))
  pred["y", ] <- c(0, 2, 1, -2)     # x with a random slope, w fixed, cluster the class variable
  pred["x", ] <- c(1, 0, 1, -2)
  pred["w", ] <- c(1, 1, 0, -2)
  meth <- c(y = "2l.pan", x = "2l.pan", w = "2lonly.norm", cluster = "")
  set.seed(r)
  t0 <- proc.time()[["elapsed"]]
  imp <- mice(dd, m = {nimps}, maxit = {maxit}, method = meth, predictorMatrix = pred,
              printFlag = FALSE)
  t1 <- proc.time()[["elapsed"]]
  implist <- as.mitml.list(lapply(seq_len({nimps}), function(i) complete(imp, i)))
  fit <- with(implist, lmer(y ~ x + w + x:w + (1 + x | cluster)))
  est <- testEstimates(fit, extra.pars = TRUE, df.com = {df_com})
  t2 <- proc.time()[["elapsed"]]
  cat("RESULT rep_", r, " ", t1 - t0, " ", t2 - t1, " ", est$estimates[4, 1], "\\n", sep = "")
}}
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="20 replications ours, 1 per R pipeline")
    p.add_argument("--reps", type=int, default=None, help="jaximpute replications per batch (3 batches; "
                                                          "default 100)")
    p.add_argument("--r-reps", type=int, default=None, help="replications per R pipeline (default 2)")
    p.add_argument("--maxit", type=int, default=20, help="mice iterations (default 20)")
    p.add_argument("--chains", default="1,2",
                   help="jaximpute chain counts to run, comma-separated (default 1,2: one chain runs "
                        "jomo's 4,000 sweeps per data set exactly, burn-in + 20 x 100, i.e. matched "
                        "settings; two is the config's setting, 3,000 sweeps per chain)")
    p.add_argument("--batches", type=int, default=None,
                   help="batches per jaximpute process (default 10: with 100 per batch, one condition "
                        "of configs/sim_slope.toml, 1,000 replications; --quick: 3)")
    p.add_argument("--no-r", action="store_true", help="skip R")
    a = p.parse_args(argv)
    a.reps = a.reps or (20 if a.quick else 100)
    a.r_reps = a.r_reps or (1 if a.quick else 2)
    a.batches = a.batches or (3 if a.quick else 10)
    a.chains = [int(c) for c in str(a.chains).split(",")]
    return a


def ours(study, reps: int, tmp: Path, chains: int, batches: int = 3) -> list[dict]:
    """One `jaximpute simulate` process of `batches` batches of `reps` replications (empty
    compilation cache): the first batch (compiles), the later ones (the study's steady state),
    and the whole process. Batch times are the records' own (seconds per replication)."""
    import pandas as pd
    cond = study.conditions[0]
    d = cond.design
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "ours.toml"
    cfg.write_text(f"""
[study]
reps = {batches * reps}
batch = {reps}
seed = 1
methods = ["focal"]
[imputation]
nimps = {study.nimps}
burn = {study.burn}
thin = {study.thin}
chains = {chains}
[[conditions]]
clusters = {d.clusters}
cluster_size = {d.cluster_size}
""")
    say(f"jaximpute simulate: {batches} batches of {reps} replications, empty compilation cache")
    env = dict(os.environ, JAXIMPUTE_CACHE=str(tmp / "cache"))
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "jaximpute.cli", "simulate", str(cfg), "--out",
                        str(tmp / "res"), "-q", "--no-plots"], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"jaximpute simulate failed:\n{p.stderr[-2000:]}")
    recs = pd.read_csv(tmp / "res" / "reps.csv")
    per_batch = recs.assign(batch=recs["rep"] // reps).groupby("batch")["seconds"].first()
    later = per_batch.iloc[1:]
    return [{"label": "first batch (compiles)", "n": reps, "wall": per_batch.iloc[0] * reps,
             "per_rep": per_batch.iloc[0]},
            {"label": f"later batches (steady state, median of {len(later)})", "n": reps * len(later),
             "wall": later.sum() * reps, "per_rep": float(later.median())},
            {"label": "whole process (start-up, all batches, summary)", "n": batches * reps, "wall": wall,
             "per_rep": wall / (batches * reps)}]


def r_pipeline(code: str, inc_csv: bytes, timeout: float):
    stdout, stderr, rc = run_r(code, timeout=timeout, files={"inc.csv": inc_csv})
    res = [v for k, v in r_results(stdout).items() if k.startswith("rep_")]
    if rc != 0 or not res:
        return f"failed (exit {rc}): {(stderr.strip().splitlines() or ['no output'])[-1]}"
    return {"impute": median([r[0] for r in res]), "analyse": median([r[1] for r in res]),
            "per_rep": median([r[0] + r[1] for r in res]), "n": len(res)}


def main(argv=None) -> int:
    a = parse_args(argv)
    from jaximpute.studies.config import load_study
    from jaximpute.studies.populations import generate_batch
    st = load_study(CONFIG)
    d = st.conditions[0].design
    sweeps = lambda c: st.burn + -(-st.nimps // c) * st.thin  # noqa: E731
    lines = ["# bench_simulate", "", f"Machine: {machine_line()}.", "",
             f"Condition {st.conditions[0].name} of {CONFIG.name}; {st.nimps} imputations, burn-in "
             f"{st.burn}, {st.thin} between imputations; jaximpute with "
             + ", ".join(f"{c} chain(s) ({sweeps(c)} sweeps each)" for c in a.chains)
             + f"; jomo.lmer: one chain of {st.burn + st.nimps * st.thin} iterations; analysis REML "
             "+ Rubin's rules.", ""]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="jaximpute-bench-sim-") as tmp:
        tmp = Path(tmp)
        for c in a.chains:
            runs[c] = ours(st, a.reps, tmp / f"chains{c}", c, a.batches)
        _, inc = generate_batch(st.seed, 0, np.arange(a.r_reps), d)
        num = lambda v: "NA" if np.isnan(v) else repr(float(v))  # noqa: E731
        rows = ["rep,cluster,y,x,w"] + [f"{r + 1},{int(c)},{num(y)},{num(x)},{num(w)}"
                                        for r in range(a.r_reps) for c, y, x, w in inc[r]]
        inc_csv = ("\n".join(rows) + "\n").encode()
        kw = dict(burn=st.burn, thin=st.thin, nimps=st.nimps, df_com=d.clusters - 2, maxit=a.maxit)
        jomo, jomo_note = r_peer(a.no_r, f"R: jomo.lmer + lme4 + mitml, {a.r_reps} replication(s)",
                                 lambda: r_pipeline(R_JOMO.format(**kw), inc_csv, 3600))
        mice, mice_note = r_peer(a.no_r, f"R: mice 2l.pan + lme4 + mitml, {a.r_reps} replication(s)",
                                 lambda: r_pipeline(R_MICE.format(**kw), inc_csv, 3600))
    best = min(r[1]["per_rep"] for r in runs.values())      # the fastest steady state
    trows = [[f"jaximpute simulate, {c} chain(s), {r['label']}", f"{r['n']}", fmt(r["wall"]),
              fmt(r["per_rep"]), fmt(60.0 / r["per_rep"]),
              "1x" if r["per_rep"] == best else fmt(r["per_rep"] / best) + "x slower"]
             for c, rs in runs.items() for r in rs]
    for name, res, note in (("jomo.lmer + lme4 + mitml", jomo, jomo_note),
                            (f"mice 2l.pan (maxit {a.maxit}) + lme4 + mitml", mice, mice_note)):
        if res:
            trows.append([f"{name} (impute {fmt(res['impute'])} s + analyse {fmt(res['analyse'])} s)",
                          f"{res['n']}", "-", fmt(res["per_rep"]), fmt(60.0 / res["per_rep"]),
                          fmt(res["per_rep"] / best) + "x slower"])
        else:
            trows.append([name, "-", "-", "-", "-", note])
    lines.append(table(["pipeline", "replications", "wall s", "s per replication", "replications per minute",
                        "vs fastest jaximpute steady state"], trows, align="lrrrrl"))
    lines.append("")
    if jomo:
        for c, rs in runs.items():
            for r in rs:
                ratio = jomo["per_rep"] / r["per_rep"]
                matched = " (matched settings: as many sweeps as jomo's iterations)" if c == 1 else ""
                lines.append(f"Throughput vs jomo.lmer pipeline, jaximpute {c} chain(s){matched}, "
                             f"{r['label']}: {fmt(ratio)}x (target >= {TARGET:g}x: "
                             f"{'met' if ratio >= TARGET else 'NOT met'}).")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
