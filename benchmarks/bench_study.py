"""Benchmark: a whole simulation study, end to end, as a user runs it (issue 6's GPU figure).

    python benchmarks/bench_study.py                       # configs/sim_slope.toml as it is
    python benchmarks/bench_study.py --batch 1000          # one batch per condition (a GPU)
    python benchmarks/bench_study.py --reps 100 --batch 100  # a tenth of it (this CPU: ~2 min)

Runs `jaximpute simulate` on the config in a fresh process with an empty compilation cache
(so compile time counts, as for a user's first run) and prints the wall time, the device, the
seconds per replication of each method (first batch, which compiles, and later batches), and
the focal model's coverage, so that a fast run is seen to be a correct one too.

`--batch` and `--reps` override the config's (a GPU holds a whole condition as one batch: see
`jaximpute simulate CONFIG --memory`). Issue 6's target on a GPU: the whole example study
(2 conditions x 1,000 replications, five methods) in under 2 minutes on one H100.

For a device session, `benchmarks/gpu_study.sh` runs this with the GPU's settings and writes
the log to $OUT.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import ROOT, fmt, machine_line, table  # noqa: E402

CONFIG = ROOT / "configs" / "sim_slope.toml"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--batch", type=int, default=None, help="data sets per program (default: the config's)")
    p.add_argument("--reps", type=int, default=None, help="replications per condition (default: the config's)")
    p.add_argument("--keep", type=Path, default=None, help="keep the study folder here")
    return p.parse_args(argv)


def with_overrides(text: str, batch: int | None, reps: int | None) -> str:
    for key, value in (("batch", batch), ("reps", reps)):
        if value is not None:
            text, n = re.subn(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", text, count=1)
            if not n:
                raise SystemExit(f"{key} not found in the config's [study] table")
    return text


def main(argv=None) -> int:
    a = parse_args(argv)
    import pandas as pd
    with tempfile.TemporaryDirectory(prefix="jaximpute-bench-study-") as tmp:
        tmp = Path(tmp)
        cfg = tmp / a.config.name
        cfg.write_text(with_overrides(a.config.read_text(), a.batch, a.reps))
        out = a.keep or tmp / "results"
        env = dict(os.environ, JAXIMPUTE_CACHE=str(tmp / "cache"), PYTHONUNBUFFERED="1")
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "jaximpute.cli", "simulate", str(cfg), "--out",
                            str(out), "--no-plots"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            return 1
        reps = pd.read_csv(out / "reps.csv")
        summ = pd.read_csv(out / "summary.csv")
        study_text = cfg.read_text()
    device = subprocess.run([sys.executable, "-c", "import jax; d = jax.devices()[0]; "
                             "print(f'{d.platform} ({d.device_kind}) x{jax.device_count()}, jax {jax.__version__}')"],
                            capture_output=True, text=True).stdout.strip()
    n_reps = reps.groupby("condition")["rep"].nunique()
    batch = int(re.search(r"(?m)^batch\s*=\s*(\d+)", study_text).group(1))
    rows = []
    for (cond, method), g in reps.groupby(["condition", "method"], sort=False):
        per = g.assign(b=g["rep"] // batch).groupby("b")["seconds"].first()
        rows.append([cond, method, fmt(per.iloc[0]), fmt(per.iloc[1:].median()) if len(per) > 1 else "-",
                     fmt(per.mean() * batch * len(per))])
    focal = summ[(summ["method"] == "focal") & summ["coverage"].notna()]
    print("\n".join([
        "# bench_study", "", f"Machine: {machine_line()}; device: {device}.", "",
        f"Config {a.config.name}: {len(n_reps)} condition(s) x {int(n_reps.max())} replications, "
        f"batches of {batch}, methods {', '.join(dict.fromkeys(reps['method']))}; a fresh process, "
        "empty compilation cache.", "",
        f"**Whole study: {wall:.1f} s wall ({wall / 60:.2f} min).**", "",
        table(["condition", "method", "s per rep, first batch", "s per rep, later batches",
               "method's total s"], rows, align="llrrr"), "",
        f"Focal model's coverage of the fixed effects: {focal['coverage'].min():.3f} to "
        f"{focal['coverage'].max():.3f} over {len(focal)} (condition, parameter) cells; largest "
        f"relative bias {focal['rel_bias_pct'].abs().max():.1f}%.",
    ]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
