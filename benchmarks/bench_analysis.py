"""Benchmark: analysing imputed data sets with a mixed model (jaximpute.analyze / fit_lmm) vs lme4 + mitml.

    python benchmarks/bench_analysis.py              # full run (about 4 minutes with R)
    python benchmarks/bench_analysis.py --quick      # smoke run (about 1.5 minutes with R)
    python benchmarks/bench_analysis.py --no-r --no-sweep

Three parts, printed as markdown tables (progress goes to stderr):

1. The seed's analysis: 20 imputed data sets of the seed's shape (928 students x 7 waves = 6,496
   rows), `probsolve ~ months + efficacy + stanmath + condition + months:condition +
   (months | student)`, ML. jaximpute `analyze` (fit all 20 in one vmapped program, pool by Rubin's
   rules) against R `with(implist, lmer(..., REML = F))` + `testEstimates(..., extra.pars = T)` on
   the same stacked CSV, in the same run; pooled estimates compared.
2. A batch of 1,000 fits of a 1,000-row random-slope model (100 clusters of 10, `y ~ x + (x | g)`):
   `fit_lmm` on all of them in one call (one vmapped program; a first call that compiles and later
   calls that reuse the program) against lme4 `lmer` on the same data sets one after the other in
   R; fits per second, the speed-up against the issue's 10x target, and agreement per fit.
3. Where jaximpute's time goes: compile (trace + lower + XLA) vs run of every call, the L-BFGS
   step count (`fit_lmm(..., steps=k)`), and the cost of one deviance evaluation.

Compile time is read from jax.monitoring's compile events during each call (tracing, MLIR
lowering and XLA compilation, including the small eager ops' first compiles); "run" is the rest of
the call. Every time is a median where repeats are taken; the machine is shared, so compare ratios.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import (ROOT, fmt, machine_line, median, r_results, rscript, run_r, say, spread,  # noqa: E402
                     table)
from jaximpute.analyze import analyze, read_imputations  # noqa: E402
from jaximpute.lmm import fit_lmm  # noqa: E402
from jaximpute.pool import pool  # noqa: E402

SEED_FORMULA = ("probsolve ~ months + efficacy + stanmath + condition + months:condition + "
                "(months | student)")
BATCH_FORMULA = "y ~ x + (x | g)"
DATA_SEED = 20260611
IMPUTED_SHARE = 0.2          # share of probsolve cells that differ between the imputed data sets
DEFAULT_STEPS = inspect.signature(fit_lmm).parameters["steps"].default
TARGET_SPEEDUP = 10.0        # the target for the batch of 1,000 fits

# ------------------------------------------------------------------------------ compile timing

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_compile_seconds = [0.0]


def _on_duration(event: str, duration: float, **_kw) -> None:
    if event in _COMPILE_EVENTS:
        _compile_seconds[0] += duration


jax.monitoring.register_event_duration_secs_listener(_on_duration)


def timed(fn):
    """(result, total seconds, compile seconds) of fn(); compile = trace + lower + XLA compile."""
    c0 = _compile_seconds[0]
    t0 = time.perf_counter()
    out = fn()
    total = time.perf_counter() - t0
    return out, total, min(_compile_seconds[0] - c0, total)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 timed call each, 200 fits in part 2, a shorter steps sweep")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per jaximpute measurement and R repeats of part 1 "
                        "(median reported; default 3, quick 1)")
    p.add_argument("--imputations", type=int, default=20, help="imputed data sets in part 1")
    p.add_argument("--fits", type=int, default=None,
                   help="data sets in part 2's batch (default 1000, quick 200)")
    p.add_argument("--r-seconds", type=float, default=None,
                   help="part 2: stop lme4's loop after this many seconds and extrapolate "
                        "(default 180, quick 40)")
    p.add_argument("--steps", type=int, nargs="+", default=None,
                   help="L-BFGS step counts for part 3's sweep (default 10 15 20 30; quick 15); "
                        f"fit_lmm's default ({DEFAULT_STEPS}) is always timed in parts 1 and 2")
    p.add_argument("--no-r", action="store_true", help="skip R")
    p.add_argument("--no-sweep", action="store_true", help="skip part 3's steps sweep")
    a = p.parse_args(argv)
    a.repeats = a.repeats or (1 if a.quick else 3)
    a.fits = a.fits or (200 if a.quick else 1000)
    a.r_seconds = a.r_seconds or (40.0 if a.quick else 180.0)
    a.steps = a.steps or ([15] if a.quick else [10, 15, 20, 30])
    return a


# ------------------------------------------------------------------------------ data

def seed_base(rng):
    """The seed's shape, as tests/fixtures/lmm/make_data.py's seed.csv: (columns, mean, sd)."""
    j, n = 928, 7
    s = np.repeat(np.arange(j), n)
    months = np.tile(np.arange(n), j).astype(float)
    cond = (rng.random(j) < 0.5).astype(float)[s]
    stanmath = np.round(rng.normal(650, 40, j))[s]
    eff = np.clip(np.round(rng.normal(4, 1.2, s.size)), 1, 6)
    u0, u1 = rng.multivariate_normal([0, 0], [[18.0, 0.5], [0.5, 0.35]], j).T
    mean = (73 + 0.05 * (stanmath - 650) + (0.68 + u1[s]) * months + 0.72 * eff - 0.4 * cond
            + 0.63 * months * cond + u0[s])
    cols = {"student": s + 1.0, "months": months, "efficacy": eff, "stanmath": stanmath,
            "condition": cond}
    return cols, mean, 7.9


def imputed_sets(m: int, noise_seed: int) -> pd.DataFrame:
    """m 'imputed' versions of one seed-shaped data set, stacked (first column `imputation`).

    Covariates, random effects and the observed probsolve values are the same in every version;
    a fixed IMPUTED_SHARE of probsolve cells (the 'missing' ones) get fresh residual noise in each
    version, as imputations of the same incomplete data would.
    """
    rng = np.random.default_rng(DATA_SEED)
    cols, mean, sd = seed_base(rng)
    y_obs = mean + rng.normal(0, sd, mean.size)
    miss = rng.random(mean.size) < IMPUTED_SHARE
    rng_m = np.random.default_rng([DATA_SEED, noise_seed])
    parts = []
    for k in range(1, m + 1):
        y = np.where(miss, mean + rng_m.normal(0, sd, mean.size), y_obs)
        parts.append(pd.DataFrame({"imputation": k, **cols, "probsolve": np.round(y, 4)}))
    return pd.concat(parts, ignore_index=True)


def batch_sets(n_sets: int, clusters: int = 100, size: int = 10):
    """n_sets random-slope data sets: g (N,), x and y (n_sets, N); y = 2 + (0.7 + u1) x + u0 + e,
    (u0, u1) ~ N(0, [[1, .3], [.3, .5]]), e ~ N(0, 1), x ~ N(0, 1)."""
    rng = np.random.default_rng(DATA_SEED + 1)
    g = np.repeat(np.arange(clusters), size)
    x = rng.normal(size=(n_sets, g.size))
    u = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], (n_sets, clusters))
    y = 2.0 + (0.7 + u[:, g, 1]) * x + u[:, g, 0] + rng.normal(size=(n_sets, g.size))
    return g + 1, x, y


def rel(a, b, floor: float = 1e-12):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) / np.maximum(np.abs(b), floor)


# ------------------------------------------------------------------------------ part 1

COLD_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from jaximpute.analyze import analyze, read_imputations
t1 = time.perf_counter()
frames = read_imputations(sys.argv[1])
t2 = time.perf_counter()
res = analyze(frames, sys.argv[2])
t3 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "read": t2 - t1, "analyze": t3 - t2}))
"""

R_SEED = """
suppressMessages({{ library(lme4); library(mitml) }})
d <- read.csv("imps.csv")
implist <- as.mitml.list(split(d[, -1], d$imputation))
for (r in 1:{reps}) {{
  t0 <- proc.time()[["elapsed"]]
  fit <- with(implist, lmer({formula}, REML = F))
  t1 <- proc.time()[["elapsed"]]
  est <- testEstimates(fit, extra.pars = T)
  t2 <- proc.time()[["elapsed"]]
  cat("RESULT time_", r, " ", t1 - t0, " ", t2 - t1, "\\n", sep = "")
}}
e <- est$estimates
for (i in seq_len(nrow(e)))
  cat("RESULT fe_", rownames(e)[i], " ", paste(format(e[i, ], digits = 17), collapse = " "), "\\n", sep = "")
x <- est$extra.pars
cat("RESULT loglik", sapply(fit, function(m) format(as.numeric(logLik(m)), digits = 17)), "\\n")
for (i in seq_len(nrow(x)))
  cat("RESULT vc_", rownames(x)[i], " ", format(x[i, 1], digits = 17), "\\n", sep = "")
"""


def part_seed(a, lines, tmp: Path):
    m = a.imputations
    say(f"part 1: {m} imputed data sets of the seed's shape")
    imp_a = imputed_sets(m, 1)           # timed warm, compared with R, given to R
    imp_b = imputed_sets(m, 2)           # the first (compiling) call
    path_a, path_b = tmp / "imps_a.csv", tmp / "imps_b.csv"
    imp_a.to_csv(path_a, index=False)
    imp_b.to_csv(path_b, index=False)
    frames_a, frames_b = read_imputations(path_a), read_imputations(path_b)
    n_rows = len(frames_a[0])

    say("  cold end to end in a fresh Python process")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", COLD_CHILD, str(path_a), SEED_FORMULA],
                       capture_output=True, text=True, cwd=ROOT, timeout=900)
    cold_wall = time.perf_counter() - t0
    cold = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    if cold is None:
        say(f"  cold child failed: {p.stderr.strip().splitlines()[-1:]}")

    say("  first call in this process (other data, same shape)")
    _, t_first, c_first = timed(lambda: analyze(frames_b, SEED_FORMULA))
    warm = []
    for r in range(a.repeats):
        say(f"  later call {r + 1}/{a.repeats}")
        res, t, c = timed(lambda: analyze(frames_a, SEED_FORMULA))
        warm.append((t, c))
    t_warm = median([w[0] for w in warm])
    c_warm = median([w[1] for w in warm])
    run_warm = median([w[0] - w[1] for w in warm])

    r_out = None
    if not a.no_r and rscript() is not None:
        say(f"  R: with(implist, lmer(...)) + testEstimates, {a.repeats} repeat(s)")
        code = R_SEED.format(reps=a.repeats, formula=SEED_FORMULA)
        t0 = time.perf_counter()
        stdout, stderr, rc = run_r(code, timeout=1800, files={"imps.csv": path_a.read_bytes()})
        r_wall = time.perf_counter() - t0
        res_r = r_results(stdout)
        times = [v for k, v in res_r.items() if k.startswith("time_")]
        if rc != 0 or not times:
            r_out = f"R failed (exit {rc}): {(stderr.strip().splitlines() or ['no output'])[-1]}"
        else:
            r_out = dict(fit=median([t[0] for t in times]), pool=median([t[1] for t in times]),
                         total=median([t[0] + t[1] for t in times]), wall=r_wall,
                         reps=len(times), spread=spread([t[0] + t[1] for t in times]), res=res_r)

    lines.append(f"## 1. The seed's analysis: {m} imputed data sets, {n_rows:,} rows each\n")
    lines.append(f"Model `{SEED_FORMULA}`, ML. Data: 928 students x 7 waves, generated as "
                 f"tests/fixtures/lmm/make_data.py's seed.csv (numpy seed {DATA_SEED}); "
                 f"{100 * IMPUTED_SHARE:.0f}% of probsolve cells get fresh noise in each imputed "
                 f"data set (the rest is shared). One stacked CSV is read by both programs.\n")
    rows = []
    if cold is not None:
        rows.append(["jaximpute, cold: `python -c` import + read_imputations + analyze (process wall)",
                     fmt(cold_wall), "-", "-", "1"])
        rows.append(["  of which `analyze` (first call: compiles)", fmt(cold["analyze"]), "-", "-", "1"])
    rows.append(["jaximpute `analyze`, first call in this process (other data)", fmt(t_first),
                 fmt(c_first), fmt(t_first - c_first), "1"])
    rows.append(["jaximpute `analyze`, later call (warm process)", fmt(t_warm), fmt(c_warm),
                 fmt(run_warm), f"{len(warm)}" + (f" ({spread([w[0] for w in warm])})" if len(warm) > 1 else "")])
    if isinstance(r_out, dict):
        rows.append(["R lme4 + mitml: `with(implist, lmer(...))` (system.time)", fmt(r_out["fit"]), "-", "-",
                     str(r_out["reps"])])
        rows.append(["R lme4 + mitml: `testEstimates(..., extra.pars = T)`", fmt(r_out["pool"]), "-", "-",
                     str(r_out["reps"])])
        rows.append(["R lme4 + mitml: fit + pool", fmt(r_out["total"]), "-", "-",
                     f"{r_out['reps']} ({r_out['spread']})" if r_out["reps"] > 1 else "1"])
        rows.append(["R: Rscript wall (start, library(lme4, mitml), read.csv, all repeats)",
                     fmt(r_out["wall"]), "-", "-", "1"])
    lines.append(table(["what", "seconds", "of which compile", "of which run", "calls (spread)"], rows,
                       align="lrrrr"))
    lines.append("")
    if isinstance(r_out, dict):
        ratios = [["R fit + pool / jaximpute first call in this process (compile included)",
                   fmt(r_out["total"] / t_first) + "x"],
                  ["R fit + pool / jaximpute later call" + (" (recompiles)" if c_warm > 0.25 * t_warm else ""),
                   fmt(r_out["total"] / t_warm) + "x"],
                  ["R fit + pool / jaximpute later call, run part only",
                   fmt(r_out["total"] / run_warm) + "x"]]
        if cold is not None:
            ratios.append(["R Rscript wall (R repeats scaled to one) / jaximpute cold process wall",
                           fmt((r_out["wall"] - (r_out["reps"] - 1) * r_out["total"]) / cold_wall) + "x"])
        lines.append(table(["ratio (> 1: jaximpute faster)", "value"], ratios, align="lr"))
        lines.append("")
        lines += seed_agreement(res, r_out["res"])
    elif isinstance(r_out, str):
        lines.append(f"R: {r_out}\n")
    else:
        lines.append("R skipped (--no-r or no Rscript).\n")
    if c_warm > 0.25 * t_warm:
        lines.append(f"**Note.** The later call, on data of the same shape, still spends "
                     f"{fmt(c_warm)} s of its {fmt(t_warm)} s tracing and compiling: `fit_lmm` builds "
                     "a new `jax.jit(jax.vmap(lambda ...))` on every call, so JAX's cache never "
                     "hits and every call recompiles. See part 3.\n")
    return dict(frames_a=frames_a, r=r_out if isinstance(r_out, dict) else None, t_warm=t_warm,
                run_warm=run_warm, c_warm=c_warm, fit=res.fit, t_first=t_first, c_first=c_first)


def seed_agreement(res, r):
    """Lines: a table of pooled estimates side by side, the max differences, and the per-data-set
    log-likelihoods (which of the two found the higher maximum)."""
    rows, worst = [], {"estimate": 0.0, "SE": 0.0, "df": 0.0, "FMI": 0.0, "variance comp.": 0.0}
    fx = res.fixed
    for name in fx.index:
        v = r.get(f"fe_{name}")
        if v is None:
            rows.append([name, fmt(fx.loc[name, "estimate"]), "-", "-", "-", "-", "-"])
            continue
        d = {"estimate": rel(fx.loc[name, "estimate"], v[0]), "SE": rel(fx.loc[name, "std_error"], v[1]),
             "df": rel(fx.loc[name, "df"], v[3]), "FMI": abs(fx.loc[name, "fmi"] - v[6])}
        for k, x in d.items():
            worst[k] = max(worst[k], float(x))
        rows.append([name, f"{fx.loc[name, 'estimate']:.6g}", f"{v[0]:.6g}", f"{d['estimate']:.1e}",
                     f"{d['SE']:.1e}", f"{d['df']:.1e}", f"{d['FMI']:.1e}"])
    for name, val in res.variance_components.items():
        v = r.get(f"vc_{name}")
        if v is None:
            rows.append([name, f"{val:.6g}", "-", "-", "", "", ""])
            continue
        # a covariance near 0 is compared on the scale of the variances (as a correlation)
        scale = abs(v[0])
        if "~~" in name and name.split("~~")[0] != name.split("~~")[1].split("|")[0]:
            a_, b_ = name.split("|")[0].split("~~")
            g = name.split("|")[1]
            va, vb = r.get(f"vc_{a_}~~{a_}|{g}"), r.get(f"vc_{b_}~~{b_}|{g}")
            if va and vb:
                scale = max(scale, np.sqrt(va[0] * vb[0]))
        d = abs(val - v[0]) / max(scale, 1e-12)
        worst["variance comp."] = max(worst["variance comp."], d)
        rows.append([name, f"{val:.6g}", f"{v[0]:.6g}", f"{d:.1e}", "", "", ""])
    out = ["Agreement of the pooled results (jaximpute vs mitml::testEstimates on lme4 fits):\n",
           table(["parameter", "jaximpute", "mitml", "rel. diff estimate", "rel. diff SE", "rel. diff df",
                  "abs. diff FMI"], rows, align="lrrrrrr"), "",
           "Max: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()) +
           " (relative; FMI absolute; a covariance relative to sqrt of the product of its variances).\n"]
    if "loglik" in r and len(r["loglik"]) == len(res.fit.loglik):
        d = res.fit.loglik - np.asarray(r["loglik"])
        out.append(f"Log-likelihood of each imputed data set's fit, jaximpute - lme4: min {d.min():.1e}, "
                   f"max {d.max():.1e} ({int(np.sum(d < -1e-6))} of {d.size} below lme4 by more than "
                   f"1e-6; jaximpute's converged flag: {int(res.fit.converged.sum())} of {d.size}).\n")
    return out


# ------------------------------------------------------------------------------ part 2

R_BATCH = """
suppressMessages(library(lme4))
N <- {n_sets}; n <- {n_rows}
g <- factor(rep(1:{clusters}, each = {size}))
X <- matrix(readBin("x.bin", "double", N * n), n)
Y <- matrix(readBin("y.bin", "double", N * n), n)
fit1 <- function(i) lmer(y ~ x + (x | g), data = data.frame(g = g, x = X[, i], y = Y[, i]), REML = FALSE)
invisible(suppressWarnings(suppressMessages(fit1(1))))   # warm-up (not timed)
res <- matrix(NA_real_, N, 8)
warn <- 0; sing <- 0; done <- 0
t0 <- proc.time()[["elapsed"]]
for (i in 1:N) {{
  m <- withCallingHandlers(fit1(i),
                           warning = function(w) {{ warn <<- warn + 1; invokeRestart("muffleWarning") }},
                           message = function(w) invokeRestart("muffleMessage"))
  vc <- VarCorr(m)$g
  res[i, ] <- c(fixef(m), vc[1, 1], vc[1, 2], vc[2, 2], sigma(m)^2, as.numeric(logLik(m)), isSingular(m))
  done <- i
  if (proc.time()[["elapsed"]] - t0 > {budget}) break
}}
el <- proc.time()[["elapsed"]] - t0
cat("RESULT time", done, el, warn, sum(res[1:done, 8]), "\\n")
for (i in 1:done)
  cat("RESULT fit_", i, " ", paste(format(res[i, ], digits = 17), collapse = " "), "\\n", sep = "")
"""


def jax_params(fit):
    """(M, 7): beta0, beta1, psi00, psi01, psi11, sigma2, loglik, in R_BATCH's order."""
    return np.column_stack([fit.beta[:, 0], fit.beta[:, 1], fit.psi[:, 0, 0], fit.psi[:, 0, 1],
                            fit.psi[:, 1, 1], fit.sigma2, fit.loglik])


def batch_agreement(jp, rp):
    """Max differences over the fits both ran: dict of arrays (per fit)."""
    corr_scale = np.sqrt(np.abs(rp[:, 2] * rp[:, 4]))
    return {
        "fixed effects (rel.)": np.max(rel(jp[:, :2], rp[:, :2]), axis=1),
        "variances psi00, psi11, sigma2 (rel.)": np.max(rel(jp[:, [2, 4, 5]], rp[:, [2, 4, 5]]), axis=1),
        "covariance psi01 (abs. / sqrt(psi00 psi11))":
            np.abs(jp[:, 3] - rp[:, 3]) / np.maximum(corr_scale, 1e-12),
        "loglik jaximpute - lme4": jp[:, 6] - rp[:, 6],
    }


def part_batch(a, lines, tmp: Path):
    clusters, size = 100, 10
    n_sets = a.fits
    say(f"part 2: {n_sets} fits of {BATCH_FORMULA}, {clusters} clusters of {size}")
    g, x, y = batch_sets(n_sets, clusters, size)
    frames = [pd.DataFrame({"g": g, "x": x[i], "y": y[i]}) for i in range(n_sets)]
    jax_runs = []
    for r in range(max(a.repeats, 2)):
        say(f"  jaximpute fit_lmm on all {n_sets} at once, call {r + 1}/{max(a.repeats, 2)}")
        fit, t, c = timed(lambda: fit_lmm(BATCH_FORMULA, frames))
        jax_runs.append((t, c))
    t_first, c_first = jax_runs[0]
    later = jax_runs[1:]
    t_j = median([v[0] for v in later])
    c_j = median([v[1] for v in later])
    run_j = median([v[0] - v[1] for v in later])
    jp = jax_params(fit)

    r_out = None
    if not a.no_r and rscript() is not None:
        say(f"  R: lmer on the same {n_sets} data sets, up to {a.r_seconds:.0f} s")
        # column-major (n_rows, N) for R's matrix(): data set i is column i
        files = {"x.bin": np.ascontiguousarray(x, dtype="<f8").tobytes(),
                 "y.bin": np.ascontiguousarray(y, dtype="<f8").tobytes()}
        code = R_BATCH.format(n_sets=n_sets, n_rows=clusters * size, clusters=clusters, size=size,
                              budget=a.r_seconds)
        stdout, stderr, rc = run_r(code, timeout=a.r_seconds + 600, files=files)
        res = r_results(stdout)
        if rc != 0 or "time" not in res:
            r_out = f"R failed (exit {rc}): {(stderr.strip().splitlines() or ['no output'])[-1]}"
        else:
            done, el, warn, sing = res["time"]
            done = int(done)
            rp = np.array([res[f"fit_{i}"] for i in range(1, done + 1)])
            r_out = dict(done=done, seconds=el, warn=int(warn), singular=int(sing), rp=rp)

    lines.append(f"## 2. A batch of {n_sets:,} random-slope fits, {clusters * size:,} rows each\n")
    lines.append(f"Model `{BATCH_FORMULA}` (ML), {clusters} clusters of {size}; each data set has its "
                 "own x, random effects and noise (y = 2 + (0.7 + u1) x + u0 + e, var(u0) = 1, "
                 f"cov = 0.3, var(u1) = 0.5, var(e) = 1; numpy seed {DATA_SEED + 1}). jaximpute: "
                 f"one `fit_lmm(formula, frames)` call on the list of {n_sets} DataFrames, batch size "
                 f"{n_sets} (one vmapped program, not chunked), default `steps={DEFAULT_STEPS}`; the call includes "
                 "building the model matrices from the DataFrames. lme4 1.1: `lmer(y ~ x + (x | g), "
                 "REML = FALSE)` with default control, one data set after another (data.frame built "
                 "per fit, not counted apart), after one untimed warm-up fit.\n")
    rows = [[f"jaximpute `fit_lmm`, {n_sets} at once, first call (compiles)", f"{n_sets}", fmt(t_first),
             fmt(1e3 * t_first / n_sets), fmt(n_sets / t_first), "1"],
            ["  of which compile (trace + lower + XLA)", "", fmt(c_first), "", "", ""],
            ["  of which run", f"{n_sets}", fmt(t_first - c_first), fmt(1e3 * (t_first - c_first) / n_sets),
             fmt(n_sets / (t_first - c_first)), ""],
            [f"jaximpute `fit_lmm`, {n_sets} at once, later call (same shapes)", f"{n_sets}", fmt(t_j),
             fmt(1e3 * t_j / n_sets), fmt(n_sets / t_j),
             f"{len(later)}" + (f" ({spread([v[0] for v in later])})" if len(later) > 1 else "")],
            ["  of which compile", "", fmt(c_j), "", "", ""]]
    if isinstance(r_out, dict):
        k, el = r_out["done"], r_out["seconds"]
        note = "" if k == n_sets else f" (stopped after {a.r_seconds:.0f} s; extrapolated)"
        rows.append([f"lme4 `lmer`, one after another{note}", f"{k}", fmt(el), fmt(1e3 * el / k),
                     fmt(k / el), "1"])
        if k != n_sets:
            rows.append([f"lme4, extrapolated to {n_sets}", f"{n_sets}", fmt(el / k * n_sets), "", "", ""])
    lines.append(table(["what", "fits", "seconds", "ms per fit", "fits per second", "calls (spread)"],
                       rows, align="lrrrrr"))
    lines.append("")
    if isinstance(r_out, dict):
        k, el = r_out["done"], r_out["seconds"]
        r_fps = k / el
        sp = {"first call, compile included": (n_sets / t_first) / r_fps,
              "first call, run part only": (n_sets / (t_first - c_first)) / r_fps,
              "later call (same shapes)": (n_sets / t_j) / r_fps}
        lines.append(table(
            ["speed-up (jaximpute fits/s / lme4 fits/s)", "value", f"target >= {TARGET_SPEEDUP:g}x"],
            [[k_, fmt(v) + "x", "met" if v >= TARGET_SPEEDUP else "NOT met"] for k_, v in sp.items()],
            align="lrl"))
        lines.append("")
        agree = batch_agreement(jp[:k], r_out["rp"])
        arows = []
        for name, v in agree.items():
            if name.startswith("loglik"):
                arows.append([name, f"{np.max(np.abs(v)):.1e}", f"min {np.min(v):.1e}, max {np.max(v):.1e}",
                              f"{int(np.sum(v < -1e-6))} fits with jaximpute lower by > 1e-6"])
            else:
                arows.append([name, f"{np.max(v):.1e}", f"median {np.median(v):.1e}",
                              f"{int(np.sum(v > 1e-3))} fits > 1e-3"])
        lines.append(f"Agreement over the {k} fits both ran (jaximpute converged flag: "
                     f"{int(fit.converged[:k].sum())} of {k}; lme4: {r_out['warn']} warnings, "
                     f"{r_out['singular']} singular fits):\n")
        lines.append(table(["quantity", "max", "spread", "count"], arows, align="lrrl"))
        lines.append("")
    elif isinstance(r_out, str):
        lines.append(f"R: {r_out}\n")
    else:
        lines.append("R skipped (--no-r or no Rscript).\n")
    return dict(frames=frames, jp=jp, t=t_j, run=run_j, c=c_j, t_first=t_first, c_first=c_first,
                r=r_out if isinstance(r_out, dict) else None)


# ------------------------------------------------------------------------------ part 3

def eval_costs(frames, formula):
    """ms per evaluation over the whole batch: deviance + written-out gradient (what each
    iteration of the fitter runs), and the deviance's reverse-mode autodiff gradient for
    comparison (jaximpute.lmm internals; None if they have changed)."""
    try:
        from jaximpute import lmm
        f = lmm.parse_formula(formula)
        ys, xs, zs, g, _ = lmm.design_arrays(f, frames)
        j, q = int(g.max()) + 1, len(f.random)
        with jax.enable_x64(True):
            import jax.numpy as jnp
            gj = jnp.asarray(g)
            lay = jax.jit(jax.vmap(lambda y, x, z: lmm.cluster_layout(lmm.cluster_stats(y, x, z, gj, j))))(
                jnp.asarray(ys), jnp.asarray(xs), jnp.asarray(zs))
            theta = jnp.asarray([1.0 if r == c else 0.0 for c in range(q) for r in range(c, q)])
            dev = lambda th, s: lmm._profiled(th, s, q, False)[0]  # noqa: E731
            fns = {"eval": jax.jit(jax.vmap(lambda th, s: lmm._profiled(th, s, q, False), in_axes=(None, 0))),
                   "autodiff": jax.jit(jax.vmap(jax.value_and_grad(dev), in_axes=(None, 0)))}
            out = {}
            for k, fn in fns.items():
                jax.block_until_ready(fn(theta, lay))
                n = 20
                t0 = time.perf_counter()
                for _ in range(n):
                    jax.block_until_ready(fn(theta, lay))
                out[k] = 1e3 * (time.perf_counter() - t0) / n
            return out
    except Exception as e:  # noqa: BLE001 - the internals may change under us; report, don't fail
        say(f"  deviance-cost probe skipped: {type(e).__name__}: {e}")
        return None


def part_where(a, lines, seed, batch):
    lines.append("## 3. Where jaximpute's time goes\n")
    recompiles = seed["c_warm"] > 0.25 * seed["t_warm"] or batch["c"] > 0.25 * batch["t"]
    lines.append(
        ("Every `fit_lmm` / `analyze` call traces and compiles its program afresh"
         if recompiles else "The first call of each shape and setting compiles; later calls reuse the program")
        + f" (seed analysis: first call {fmt(seed['c_first'])} s compile of {fmt(seed['t_first'])} s, later "
        f"call {fmt(seed['c_warm'])} s of {fmt(seed['t_warm'])} s; batch: first {fmt(batch['c_first'])} s of "
        f"{fmt(batch['t_first'])} s, later {fmt(batch['c'])} s of {fmt(batch['t'])} s). The run part is the "
        "fitter's loop: one deviance + gradient evaluation per iteration (an L-BFGS step from optax's "
        "`scale_by_lbfgs` direction, or a backtracking cut of the step), vmapped over data sets, "
        "until every fit has converged or taken `steps` steps. The sweep below refits the same data with "
        "`fit_lmm(..., steps=k)` (one call each, so each compiles; split as above).\n")
    if a.no_sweep:
        lines.append("Steps sweep skipped (--no-sweep).\n")
        return
    steps = sorted(set(a.steps) | {DEFAULT_STEPS})
    # batch
    rows = []
    prev = None
    base = batch["jp"]
    rp = batch["r"]["rp"] if batch["r"] else None
    for k in steps:
        if k == DEFAULT_STEPS:
            run, comp, jp, conv = batch["run"], batch["c"], base, None
        else:
            say(f"  batch, steps={k}")
            fit, t, comp = timed(lambda: fit_lmm(BATCH_FORMULA, batch["frames"], steps=k))
            run, jp, conv = t - comp, jax_params(fit), float(fit.converged.mean())
        per_step = "" if prev is None else fmt(1e3 * (run - prev[1]) / (k - prev[0]))
        prev = (k, run)
        d60 = np.max(np.abs(jp[:, 6] - base[:, 6]))
        if rp is not None:
            n = len(rp)
            ag = batch_agreement(jp[:n], rp)
            worst = max(np.max(ag["fixed effects (rel.)"]), np.max(ag["variances psi00, psi11, sigma2 (rel.)"]))
            vs_r = f"{worst:.1e}"
            ll_r = f"{np.min(ag['loglik jaximpute - lme4']):.1e}"
        else:
            vs_r = ll_r = "-"
        rows.append([f"{k}", fmt(comp), fmt(run), per_step, fmt(len(base) / run),
                     "-" if conv is None else f"{100 * conv:.0f}%", f"{d60:.1e}", vs_r, ll_r])
    lines.append(f"Batch of {len(base)} (part 2's data):\n")
    lines.append(table(["steps", "compile s", "run s", "ms per extra step", "fits/s (run)",
                        "converged", f"max |loglik - loglik({DEFAULT_STEPS})|", "max rel. diff vs lme4 (fixef, variances)",
                        "min loglik - lme4"],
                       rows))
    if batch["r"]:
        r_fps = batch["r"]["done"] / batch["r"]["seconds"]
        lines.append(f"\n(lme4: {fmt(r_fps)} fits/s in the same run.)")
    lines.append("\n'converged' is fit_lmm's flag (gradient below 1e-3 or nothing left to gain, see "
                 f"`lmm._flag_converged`); the {DEFAULT_STEPS}-step row is part 2's later call.\n")

    # seed analysis
    frames_a, r = seed["frames_a"], seed["r"]
    rows, prev = [], None
    seed_steps = steps if not a.quick else [k for k in steps if k in (15, DEFAULT_STEPS)]
    for k in seed_steps:
        if k == DEFAULT_STEPS:          # part 1's later call (analyze = fit_lmm + pooling in milliseconds)
            fit60 = seed["fit"]
            rows.append((k, seed["c_warm"], seed["run_warm"], fit60))
            continue
        say(f"  seed analysis, steps={k}")
        fit, t, comp = timed(lambda: fit_lmm(SEED_FORMULA, frames_a, steps=k))
        rows.append((k, comp, t - comp, fit))
    out_rows = []
    for k, comp, run, fit in rows:
        per_step = "" if prev is None else fmt(1e3 * (run - prev[1]) / (k - prev[0]))
        prev = (k, run)
        d60 = np.max(np.abs(fit.loglik - fit60.loglik))
        vs_r = "-"
        if r is not None:
            pooled = pool(fit.beta, fit.vcov, names=fit.formula.fixed_names)
            diffs = [rel(pooled.loc[nm, "estimate"], r["res"][f"fe_{nm}"][0]) for nm in pooled.index
                     if f"fe_{nm}" in r["res"]]
            diffs += [rel(pooled.loc[nm, "std_error"], r["res"][f"fe_{nm}"][1]) for nm in pooled.index
                      if f"fe_{nm}" in r["res"]]
            vs_r = f"{max(diffs):.1e}"
        ll_r = "-"
        if r is not None and len(r["res"].get("loglik", ())) == len(fit.loglik):
            ll_r = f"{np.min(fit.loglik - np.asarray(r['res']['loglik'])):.1e}"
        out_rows.append([f"{k}", fmt(comp), fmt(run), per_step, f"{100 * fit.converged.mean():.0f}%",
                         f"{d60:.1e}", vs_r, ll_r])
    lines.append(f"Seed analysis ({len(frames_a)} imputed data sets; `fit_lmm` only, pooling takes "
                 "milliseconds):\n")
    lines.append(table(["steps", "compile s", "run s", "ms per extra step", "converged",
                        f"max |loglik - loglik({DEFAULT_STEPS})|", "max rel. diff of pooled estimate & SE vs mitml",
                        "min loglik - lme4"],
                       out_rows))
    lines.append("")

    say("  cost of one deviance evaluation")
    costs = eval_costs(batch["frames"], BATCH_FORMULA)
    if costs:
        lines.append(f"One vmapped evaluation over the batch of {len(batch['frames'])} "
                     f"({len(batch['frames']) * 100:,} clusters): deviance + written-out gradient "
                     f"{fmt(costs['eval'])} ms (`jaximpute.lmm._profiled`, what each iteration of the "
                     f"fitter runs); deviance + reverse-mode autodiff gradient {fmt(costs['autodiff'])} ms "
                     "(mean of 20 calls each). The later call's run part, "
                     f"{fmt(batch['run'])} s, is about {fmt(1e3 * batch['run'] / costs['eval'])} evaluations' "
                     "worth (the loop's iterations plus building the cross-products and moving the "
                     "data in and out).\n")
    return costs


# ------------------------------------------------------------------------------ main

def main(argv=None):
    a = parse_args(argv)
    t_start = time.perf_counter()
    lines = [f"# bench_analysis ({'quick' if a.quick else 'full'})\n",
             f"Machine: {machine_line()}.",
             f"R: {'skipped' if a.no_r else (rscript() or 'not found')}. Medians of {a.repeats} timed "
             "call(s) where repeated; compile = jax.monitoring trace + lower + XLA compile events "
             "during the call, run = the rest.\n"]
    with tempfile.TemporaryDirectory(prefix="jaximpute-bench-analysis-") as tmp:
        seed = part_seed(a, lines, Path(tmp))
        batch = part_batch(a, lines, Path(tmp))
        part_where(a, lines, seed, batch)
    lines.append(f"Total benchmark time {time.perf_counter() - t_start:.0f} s.")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
