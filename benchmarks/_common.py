"""Helpers shared by the benchmarks: data generators, timing, R peers, and table printing.

Timing rules (docs/design/architecture.md, "Timing on the reference machine": 2 CPU cores
shared with other work):
every number is the median of several repeats of a call long enough (about a second) that
dispatch and timer noise vanish, compile time is measured apart and never included, and results
are best read as ratios measured in the same run.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ data

def random_intercept_data(seed: int = 20240611, clusters: int = 928, size: int = 7,
                          missing: float = 0.25) -> np.ndarray:
    """(clusters * size, 3) array `cluster y x`, NaN where missing; y and x both incomplete, MAR.

    Population (as configs/make_example_data.py): x = 50 + a_j + w, a_j ~ N(0, 3^2), w ~ N(0, 4.5^2);
    y = 20 + 0.5 (x - 50) + 0.6 a_j + c_j + e, c_j ~ N(0, 2^2), e ~ N(0, 4^2).
    Missingness is MAR by construction: each row is assigned (completely at random) to one of two
    halves; in the first, y is missing with a probability that rises with x (observed there); in
    the second, x is missing with a probability that rises with y (observed there). About
    `missing` of each variable is missing, and every row keeps at least one observed value.
    """
    rng = np.random.default_rng(seed)
    cl = np.repeat(np.arange(1, clusters + 1), size)
    a = rng.normal(0.0, 3.0, clusters)[cl - 1]
    c = rng.normal(0.0, 2.0, clusters)[cl - 1]
    x = 50 + a + rng.normal(0.0, 4.5, cl.size)
    y = 20 + 0.5 * (x - 50) + 0.6 * a + c + rng.normal(0.0, 4.0, cl.size)
    half = rng.random(cl.size) < 0.5
    # a logistic in the standardised value with intercept logit(2 * missing): mean rate ~ 2 * missing
    shift = np.log(2 * missing / (1 - 2 * missing))
    p_y = 1 / (1 + np.exp(-(shift + 1.0 * (x - x.mean()) / x.std())))
    p_x = 1 / (1 + np.exp(-(shift + 1.0 * (y - y.mean()) / y.std())))
    y_miss = half & (rng.random(cl.size) < p_y)
    x_miss = ~half & (rng.random(cl.size) < p_x)
    y, x = y.copy(), x.copy()
    y[y_miss] = np.nan
    x[x_miss] = np.nan
    return np.column_stack([cl.astype(float), y, x])


def csv_text(names: Sequence[str], values: np.ndarray) -> str:
    """CSV with a header row and `NA` for missing values (what R's read.csv expects)."""
    lines = [",".join(names)]
    lines += [",".join("NA" if np.isnan(v) else repr(float(v)) for v in row) for row in values]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ timing

def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of `repeats` calls of `fn` (which must block until its work is done)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def time_interleaved(calls: dict[str, Callable[[], object]], repeats: int,
                     warmup: int = 1) -> dict[str, list[float]]:
    """Like `time_repeats` for several calls, taken in turn (a, b, c, a, b, c, ...), so that a
    busy spell on a shared machine lands on all of them rather than on one."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    out = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - t0)
    return out


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def spread(xs: Sequence[float]) -> str:
    """'min-max' as a percentage of the median: how noisy the repeats were."""
    m = median(xs)
    return f"{100 * (max(xs) - min(xs)) / m:.0f}%" if m > 0 else "-"


def machine_line() -> str:
    import jax
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    dev = jax.devices()[0]
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"load {load[0]:.1f}; jax {jax.__version__} on {dev.platform} ({dev.device_kind}); "
            f"Python {platform.python_version()}")


# ------------------------------------------------------------------------------ R

def rscript() -> str | None:
    return shutil.which("Rscript")


def run_r(code: str, timeout: float, files: dict[str, bytes] | None = None) -> tuple[str, str, int]:
    """Run R code in a fresh temporary folder (holding `files`); (stdout, stderr, returncode)."""
    exe = rscript()
    if exe is None:
        return "", "Rscript not found", 127
    with tempfile.TemporaryDirectory(prefix="jaximpute-bench-") as tmp:
        for name, data in (files or {}).items():
            Path(tmp, name).write_bytes(data)
        Path(tmp, "bench.R").write_text(code)
        try:
            p = subprocess.run([exe, "--vanilla", "bench.R"], cwd=tmp, capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            return e.stdout or "", f"timed out after {timeout:.0f} s", 124
        return p.stdout, p.stderr, p.returncode


def r_peer(no_r: bool, announce: str, measure: Callable[[], object]):
    """(result, note): the peer's measurement, or None and why it was skipped or failed
    (`measure` returns an error text on failure)."""
    if no_r:
        return None, "skipped (--no-r)"
    if rscript() is None:
        return None, "skipped: Rscript is not on the PATH"
    say(announce)
    out = measure()
    return (None, out) if isinstance(out, str) else (out, "")


JOMO_PAIRS = """
set.seed(1)
run <- function(K) system.time(invisible(capture.output(suppressWarnings(
  imp <- jomo.lmer(f, d, level = lev, nburn = K, nbetween = 1, nimp = 2, output = 0)))))[["elapsed"]]
K0 <- 10
tp <- sapply(c(K0, K0 + {pilot}), run)                      # pilot (and warm-up)
per <- max((tp[2] - tp[1]) / {pilot}, 1e-4)
N <- max(20, round({seconds} / per))
cat("RESULT pilot", tp, per, "\\n")
for (r in seq_len({repeats})) {{
  t0 <- run(K0); t1 <- run(K0 + N)
  cat("RESULT pair", r, K0, N, t0, t1, "\\n")
}}
"""


def jomo_pairs(setup: str, files: dict[str, bytes], *, seconds: float, repeats: int, pilot: int,
               timeout: float):
    """jomo.lmer's time per iteration by differences: R code `setup` defines the data `d`, the
    formula `f` and the levels `lev`; runs with nburn = K0 and K0 + N (N sized by a pilot of
    `pilot` extra iterations so that one difference takes about `seconds`) are timed in turn,
    `repeats` pairs, so start-up and fixed costs cancel. Returns the pairs (r, K0, N, t(K0),
    t(K0 + N)) or an error text."""
    code = setup + JOMO_PAIRS.format(pilot=pilot, seconds=seconds, repeats=repeats)
    stdout, stderr, rc = run_r(code, timeout=timeout, files=files)
    pairs = [tuple(r_results(line)["pair"]) for line in stdout.splitlines() if line.startswith("RESULT pair")]
    if rc != 0 or not pairs:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return f"failed (exit {rc}): {tail}"
    return pairs


def r_results(stdout: str) -> dict[str, tuple[float, ...]]:
    """Lines `RESULT name v1 v2 ...` printed by an R script -> {name: (v1, v2, ...)}."""
    out = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "RESULT":
            out[parts[1]] = tuple(float(v) for v in parts[2:])
    return out


# ------------------------------------------------------------------------------ printing

def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub-markdown table (also readable as plain text). `align`: 'l'/'r' per column."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(r):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(r, widths, align)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
                         for w, a in zip(widths, align)) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def fmt(x: float, digits: int = 3) -> str:
    """Three significant figures, no scientific notation for the usual ranges."""
    if x is None or not np.isfinite(x):
        return "-"
    if x == 0:
        return "0"
    mag = int(np.floor(np.log10(abs(x))))
    dec = max(digits - 1 - mag, 0)
    return f"{x:,.{dec}f}"


def say(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
