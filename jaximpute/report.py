"""The printed report, in the spirit of Blimp's output (docs/design/script.md, "What is printed").

`Report` holds each section as data (so the Python API returns it) and renders them as text in
the order of docs/design/script.md: settings, data information, model blocks, PSR table,
parameter summaries, variable order in the saved data, timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

GROUP_TITLES = {"fixed": "Fix Eff", "ranvar": "Ran Eff Var", "errvar": "Err Var",
                "threshold": "Threshold"}
PSR_WARN = 1.05


@dataclass
class Report:
    settings: dict
    data: dict
    variables: pd.DataFrame
    blocks: list[str]
    psr: pd.DataFrame | None = None
    psr_statistic: str = "split R-hat"
    warnings: list[str] = field(default_factory=list)
    estimates: pd.DataFrame | None = None
    saved_order: list[str] | None = None
    outputs: list[str] = field(default_factory=list)
    timing: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    psr_all: pd.DataFrame | None = None   # the burn-in table even when OPTIONS: psr is off
    categories: pd.DataFrame | None = None  # ordinal variables: observed and imputed counts per code
    acceptance: pd.DataFrame | None = None  # ordinal blocks with K > 2: Metropolis acceptance rates

    @property
    def text(self) -> str:
        return render(self)

    def __str__(self) -> str:
        return self.text


def _kv(d: dict) -> list[str]:
    width = max((len(k) for k in d), default=0)
    return [f"  {k:<{width}}  {v}" for k, v in d.items()]


def render(r: Report) -> str:
    out = ["", "jaximpute: multilevel multiple imputation", ""]
    out += ["ALGORITHMIC OPTIONS:"] + _kv(r.settings) + [""]
    out += ["DATA INFORMATION:"] + _kv(r.data) + [""]
    out += ["  " + line for line in r.variables.to_string(index=False).splitlines()] + [""]
    out += ["MODEL (one regression block per modelled variable, sampled jointly):"]
    out += [f"  [{i + 1}] {b}" for i, b in enumerate(r.blocks)] + [""]
    for n in r.notes:
        out.append(f"  note: {n}")
    if r.notes:
        out.append("")
    if r.categories is not None and len(r.categories):
        out += ["ORDINAL VARIABLES (observed count per code; imputed: mean count per imputed data set):"]
        out += ["  " + line for line in r.categories.to_string(index=False).splitlines()] + [""]
    if r.acceptance is not None and len(r.acceptance):
        out += ["THRESHOLD UPDATES (Metropolis-Hastings acceptance rates, mean over chains):",
                "  (proposal SDs tuned during burn-in only, then fixed: the thresholds' toward 0.35,",
                "  the ridge move's toward 0.44)"]
        out += ["  " + line for line in r.acceptance.to_string(index=False).splitlines()] + [""]
    if r.psr is not None:
        out += ["POTENTIAL SCALE REDUCTION (PSR) OUTPUT:",
                f"  ({r.psr_statistic}; largest value in each parameter group, with the block's "
                "variable)", ""]
        out += ["  " + line for line in r.psr.to_string(index=False).splitlines()] + [""]
    if r.warnings:
        out += ["WARNINGS:"] + [f"  {w}" for w in r.warnings] + [""]
    if r.estimates is not None:
        out += ["PARAMETER SUMMARIES (original units; post-burn-in draws of all chains):"]
        est = r.estimates.copy()
        for c in ("median", "sd", "2.5%", "97.5%"):
            est[c] = est[c].map(lambda v: f"{v:.4f}")
        est["psr"] = est["psr"].map(lambda v: "" if not np.isfinite(v) else f"{v:.3f}")
        est["ess"] = est["ess"].map(lambda v: "" if not np.isfinite(v) else f"{v:.0f}")
        out += ["  " + line for line in est.to_string(index=False).splitlines()] + [""]
    if r.saved_order is not None:
        out += ["VARIABLE ORDER IN SAVED DATA:", "  " + " ".join(r.saved_order), ""]
    if r.outputs:
        out += ["OUTPUT FILES:"] + [f"  {o}" for o in r.outputs] + [""]
    if r.timing:
        out += ["TIMING:"] + _kv({k: f"{v:.2f} s" for k, v in r.timing.items()}) + [""]
    return "\n".join(out)


def psr_summary(table: np.ndarray, labels: list[tuple[str, str, str]], windows: list[tuple[int, int]],
                groups_present: list[str]) -> pd.DataFrame:
    """Blimp's burn-in table: per window, the largest PSR in each group and its variable.

    `table` (rows, P) holds the PSR of every monitored parameter in every window.
    """
    rows = []
    for r, (a, b) in enumerate(windows):
        row = {"iterations": f"{a + 1} to {b}"}
        for g in groups_present:
            idx = [i for i, lab in enumerate(labels) if lab[1] == g and np.isfinite(table[r, i])]
            if not idx:
                row[GROUP_TITLES[g]] = "-"
                continue
            i = max(idx, key=lambda i: table[r, i])
            row[GROUP_TITLES[g]] = f"{table[r, i]:.3f} ({labels[i][0]})"
        rows.append(row)
    return pd.DataFrame(rows)


def psr_warnings(last_row: np.ndarray, labels, where: str) -> list[str]:
    out = []
    for i, lab in enumerate(labels):
        if np.isfinite(last_row[i]) and last_row[i] > PSR_WARN:
            out.append(f"PSR {last_row[i]:.3f} > {PSR_WARN} {where} for {lab[0]}: "
                       f"{GROUP_TITLES[lab[1]].lower()} '{lab[2]}'; consider a longer burn-in")
    return out
