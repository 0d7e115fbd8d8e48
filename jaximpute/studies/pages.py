"""A simulation study's summary in words and pictures: the markdown tables of its summary, the
page ``summary.md`` and the bias and coverage plots (``jaximpute simulate``, ``jaximpute merge``;
the numbers come from ``studies.analysis.summarise``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..report import PRIOR_TEXT
from .analysis import analysis_of
from .config import Study

# headers and number formats of the summary's columns, for the markdown tables
COLUMN_HEADS = {"condition": "condition", "parameter": "parameter", "method": "method", "reps": "reps",
                "true": "true", "mean": "mean", "bias": "bias", "rel_bias_pct": "rel. bias %",
                "mc_se": "MC SE", "rmse": "RMSE", "coverage": "coverage", "ci_width": "CI width",
                "se_ratio": "SE / SD", "fmi": "FMI", "max_psr": "max PSR",
                "diff_complete": "diff. vs complete", "diff_mc_se": "its MC SE",
                "seconds_per_rep": "s / rep"}
COLUMN_FORMATS = {"true": "{:.3f}", "mean": "{:.4f}", "bias": "{:+.4f}", "rel_bias_pct": "{:+.1f}",
                  "mc_se": "{:.4f}", "rmse": "{:.4f}", "coverage": "{:.3f}", "ci_width": "{:.4f}",
                  "se_ratio": "{:.3f}", "fmi": "{:.3f}", "max_psr": "{:.3f}", "diff_complete": "{:+.4f}",
                  "diff_mc_se": "{:.4f}", "seconds_per_rep": "{:.3f}", "reps": "{:.0f}"}
# what tells a population's conditions apart on the page, beside their size
CONDITION_COLUMN = {"random_slope": ("mechanism", lambda d: d.mechanism),
                    "random_intercept": ("ICC", lambda d: f"{d.icc:g}")}


def to_markdown(summary: pd.DataFrame, cols=("condition", "parameter", "method", "true", "mean",
                                             "rel_bias_pct", "mc_se", "rmse", "coverage", "se_ratio",
                                             "fmi", "max_psr", "diff_complete", "diff_mc_se"),
                formats=None) -> str:
    """Rows of a study summary as a markdown table of the columns `cols` (COLUMN_HEADS; number
    formats COLUMN_FORMATS, updated by `formats`): blank cells for missing values, and no
    paired difference on the complete-data rows (it is the reference)."""
    fmt = {**COLUMN_FORMATS, **(formats or {})}
    lines = ["| " + " | ".join(COLUMN_HEADS[c] for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in summary.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c in ("diff_complete", "diff_mc_se") and r["method"] == "complete":
                cells.append("")
            elif isinstance(v, str):
                cells.append(v)
            elif v is None or (isinstance(v, float) and not np.isfinite(v)):
                cells.append("")
            else:
                cells.append(fmt[c].format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_text(summ: pd.DataFrame) -> str:
    """The summary as a markdown table: the columns a methodologist reads first."""
    return to_markdown(summ, ("condition", "parameter", "method", "reps", "true", "mean",
                              "rel_bias_pct", "rmse", "coverage", "ci_width", "se_ratio", "fmi",
                              "max_psr", "seconds_per_rep"))


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


def summary_page(study: Study, summ: pd.DataFrame, reps: pd.DataFrame, rates: dict, *,
                 plots: bool = True) -> str:
    """summary.md: the study's settings, realised missing rates (`rates`: condition -> column ->
    rate), results table, plots and time."""
    import platform

    import jax
    n_done = reps.groupby("condition")["rep"].nunique()
    designs = [c.design for c in study.conditions]
    head, describe = CONDITION_COLUMN[study.population]
    incomplete = designs[0].INCOMPLETE
    cond_rows = "\n".join(
        f"| {c.name} | {c.design.clusters} x {c.design.cluster_size} | {describe(c.design)} | "
        + "".join(f"{rates[c.name][v]:.3f} | " for v in incomplete)
        + f"{int(n_done.get(c.name, 0))} of {study.reps} |" for c in study.conditions)
    secs = reps.groupby("method")["seconds"].mean()
    time_rows = "\n".join(f"| {m} | {secs[m]:.3f} |" for m in study.methods if m in secs)
    columns = ["condition", "clusters x size", head] + [f"missing {v}" for v in incomplete] + ["replications done"]
    prior_text = "" if study.prior == "prior2" else f", {PRIOR_TEXT[study.prior].split(' (')[0]}"
    figs = ("\n## Plots\n\n![standardised bias](bias.png)\n\n![coverage](coverage.png)\n"
            if plots else "")
    return f"""# Simulation study: {Path(study.source).name}

{study.reps} replications per condition in batches of {study.batch}; imputation: {study.nimps}
imputations, burn-in {study.burn}, {study.thin} sweeps between imputations, {study.chains} chains{prior_text};
{analysis_of(designs[0]).text(designs)}.
Methods: {", ".join(study.methods)}. Seed {study.seed}.

| {" | ".join(columns)} |
|{"|".join("---" for _ in columns)}|
{cond_rows}

## Results

Coverage: of the 95% intervals ({analysis_of(designs[0]).intervals}). SE / SD: mean standard error over the SD of the
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


def write_plots(summ: pd.DataFrame, dest: Path, save) -> list[Path]:
    """bias.png: standardised bias of every parameter, 100 x bias / SD of the estimates over
    replications (defined where the true value is 0, unlike relative bias; Collins, Schafer & Kam
    2001, Psychol. Methods 6, take 40% as the point where bias starts to harm inference);
    coverage.png: coverage of the 95% intervals (of the parameters that have them) with the band
    a correct interval stays in 95% of the time over this many replications. One panel per
    condition, one marker per method. `save(path, write)` writes a file by calling write(a path)
    (the runner's writes it aside and renames it into place)."""
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
        save(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
        plt.close(fig)
        paths.append(path)
    return paths
