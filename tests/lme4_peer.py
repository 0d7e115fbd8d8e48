"""Live lme4 as a peer: real data sets from installed R packages, and lmer fits of any number
of (CSV, formula, ML/REML) jobs in one Rscript process.

- ``r_available()``: Rscript is on the PATH and ``library(lme4)`` loads.
- ``export_r_datasets(outdir)``: runs ``fixtures/lme4_battery/export.R``, which writes one
  numeric CSV per multilevel data set (factors as 0/1 dummies, groups as integer codes, rows
  with a missing model variable dropped) and a manifest; returns
  ``[{"dataset", "package", "rows", "csv", "formulas"}]``, formulas in the language of
  ``jaximpute.lmm.parse_formula`` (valid lme4 syntax too).
- ``fit_lme4(jobs, workdir)``: jobs ``{"id", "csv", "formula", "reml"}`` (other keys are kept),
  fitted by ``fixtures/lme4_battery/fit.R`` with lme4's default control and a tight one;
  returns per job ``{**job, "default": fit, "tight": fit}`` (see ``fit_lme4``).

Only numpy, pandas and the standard library: R does the fitting, results come back as text
with 17 significant digits (jsonlite is not needed).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "lme4_battery"
EXPORT_R = FIXTURES / "export.R"
FIT_R = FIXTURES / "fit.R"
CONTROLS = ("default", "tight")

last_run_seconds: float | None = None    # wall time of the last fit_lme4's Rscript run


def r_available() -> bool:
    """Rscript on the PATH and lme4 loads."""
    if shutil.which("Rscript") is None:
        return False
    try:
        proc = subprocess.run(["Rscript", "-e", "suppressMessages(library(lme4))"],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _run(args: list[str], what: str, timeout: float | None, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["Rscript", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (Rscript exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def export_r_datasets(outdir, *, timeout: float | None = 600) -> list[dict]:
    """Write the R packages' data sets as CSVs into outdir (export.R); one dict per data set:
    dataset (str), package (str), rows (int), csv (str, absolute path), formulas (list[str]),
    in the manifest's order. Notes on dropped formulas go to export.R's stderr."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    _run([str(EXPORT_R), str(outdir)], "export.R", timeout)
    man = pd.read_csv(outdir / "manifest.tsv", sep="\t", dtype=str, quoting=3, keep_default_na=False)
    out: dict[str, dict] = {}
    for row in man.itertuples(index=False):
        d = out.setdefault(row.dataset, {"dataset": row.dataset, "package": row.package,
                                         "rows": int(row.rows), "csv": row.csv, "formulas": []})
        d["formulas"].append(row.formula)
    return list(out.values())


def _float(s: str) -> float:
    return math.nan if s in ("NA", "") else float(s)


def _empty_fit() -> dict:
    return {"deviance": None, "theta": [], "theta_names": [], "beta": {}, "se": {},
            "sigma2": None, "vcov_re": {}, "vcov_re_terms": {}, "singular": None,
            "messages": [], "error": None, "optimizer": None, "seconds": None}


def _parse(path: Path, n_jobs: int) -> tuple[list[dict], float | None]:
    fits = [{c: _empty_fit() for c in CONTROLS} for _ in range(n_jobs)]
    seen = [set() for _ in range(n_jobs)]
    r_seconds = None
    for line in path.read_text().splitlines():
        if not line:
            continue
        f = line.split("\t")
        idx, ctrl, key, rest = int(f[0]), f[1], f[2], f[3:]
        if idx < 0:
            r_seconds = _float(rest[0])
            continue
        fit = fits[idx][ctrl]
        seen[idx].add(ctrl)
        if key == "deviance":
            fit["deviance"] = _float(rest[0])
        elif key == "theta":
            fit["theta_names"].append(rest[0])
            fit["theta"].append(_float(rest[1]))
        elif key in ("beta", "se"):
            fit[key][rest[0]] = _float(rest[1])
        elif key == "sigma2":
            fit["sigma2"] = _float(rest[0])
        elif key == "vc":
            group, q = rest[0], int(rest[1])
            fit["vcov_re_terms"][group] = rest[2:2 + q]
            vals = [_float(v) for v in rest[2 + q:2 + q + q * q]]
            fit["vcov_re"][group] = np.array(vals).reshape(q, q).tolist()
        elif key == "singular":
            fit["singular"] = rest[0] == "TRUE"
        elif key == "message":
            fit["messages"].append(rest[0])
        elif key == "error":
            fit["error"] = rest[0] if fit["error"] is None else fit["error"] + "; " + rest[0]
        elif key == "optimizer":
            fit["optimizer"] = rest[0]
        elif key == "seconds":
            fit["seconds"] = _float(rest[0])
    for i in range(n_jobs):
        for c in CONTROLS:
            if c not in seen[i]:
                fits[i][c]["error"] = "no result from R"
    return fits, r_seconds


def fit_lme4(jobs: list[dict], workdir, *, cores: int | None = None,
             timeout: float | None = None, maxeval: int | None = None) -> list[dict]:
    """Fit every job with lmer in one Rscript process (fit.R; `cores` forked workers, default
    all CPUs up to 8) and return, in the jobs' order, ``{**job, "default": fit, "tight": fit}``.

    A job: id (str), csv (path), formula (lme4 formula string), reml (bool); other keys are
    carried through. `maxeval` caps the tight fits' evaluations (default 1e5). "default" is lmerControl(); "tight" is nloptwrap with xtol_abs = ftol_abs
    = 1e-12 followed by a bobyqa (rhoend 1e-10) restart from its optimum, the restart kept when
    its deviance is lower (or equal, with no more messages). Each fit is a dict:

    - deviance: float (-2 logLik: the ML deviance, or the REML criterion for REML fits), None
      on error
    - theta: list[float], getME(fit, "theta") in lme4's order; theta_names: list[str]
    - beta, se: dict[str, float], fixef and sqrt(diag(vcov)) by coefficient name
    - sigma2: float, sigma(fit)^2
    - vcov_re: dict[str, list[list[float]]], VarCorr's covariance matrix (q x q) per grouping
      factor, named as in the formula; vcov_re_terms: dict[str, list[str]], its terms
    - singular: bool (isSingular), None on error
    - messages: list[str], the convergence messages (fit@optinfo$conv$lme4$messages) plus the
      warnings and R messages caught during the fit (e.g. the rank-deficiency or rescaling
      notes); empty when lme4 said nothing
    - error: str or None
    - optimizer: str, the optimiser of the fit kept; seconds: float, time on this fit
    """
    global last_run_seconds
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, job in enumerate(jobs):
        csv, formula = str(Path(job["csv"]).resolve()), str(job["formula"])
        for name, v in (("csv", csv), ("formula", formula)):
            if any(c in v for c in "\t\r\n"):
                raise ValueError(f"job {job.get('id', i)}: a tab or newline in its {name}")
        rows.append(f"{i}\t{csv}\t{formula}\t{'TRUE' if job['reml'] else 'FALSE'}")
    jobs_path, out_path = workdir / "jobs.tsv", workdir / "fits.tsv"
    jobs_path.write_text("idx\tcsv\tformula\treml\n" + "".join(r + "\n" for r in rows))
    if out_path.exists():
        out_path.unlink()
    if cores is None:
        cores = min(os.cpu_count() or 1, 8)
    t0 = time.perf_counter()
    env = None if maxeval is None else {**os.environ, "LME4_BATTERY_MAXEVAL": str(int(maxeval))}
    _run([str(FIT_R), str(jobs_path), str(out_path), str(int(cores))], "fit.R", timeout, env)
    last_run_seconds = time.perf_counter() - t0
    fits, _ = _parse(out_path, len(jobs))
    return [{**job, **fit} for job, fit in zip(jobs, fits)]


def lme4_deviance_at(jobs: list[dict], workdir, *, timeout: float | None = 600) -> list[float]:
    """lme4's own profiled deviance function (``lmer(..., devFunOnly = TRUE)``) at each job's
    "theta" (lme4's order): the referee where our fit claims a lower deviance than lme4's. A job
    as in ``fit_lme4`` plus theta (sequence of float); NaN where R could not evaluate it."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [f"{i}\t{Path(j['csv']).resolve()}\t{j['formula']}\t{'TRUE' if j['reml'] else 'FALSE'}\t"
            + " ".join(f"{float(t):.17g}" for t in j["theta"]) for i, j in enumerate(jobs)]
    jobs_path, out_path = workdir / "devfun_jobs.tsv", workdir / "devfun.tsv"
    jobs_path.write_text("idx\tcsv\tformula\treml\ttheta\n" + "".join(r + "\n" for r in rows))
    _run([str(FIXTURES / "devfun.R"), str(jobs_path), str(out_path)], "devfun.R", timeout)
    out = [math.nan] * len(jobs)
    for line in out_path.read_text().splitlines():
        f = line.split("\t")
        out[int(f[0])] = _float(f[1])
    return out
