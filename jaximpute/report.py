"""The printed report, in the spirit of Blimp's output (docs/design/script.md, "What is printed"),
and its assembly from a run (`build_report`).

`Report` holds each section as data (so the Python API returns it) and renders them as text in
the order of docs/design/script.md: settings, data information, model blocks, PSR table,
parameter summaries, variable order in the saved data, timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import jax
import numpy as np
import pandas as pd

from . import __version__
from .kernels import rhat

if TYPE_CHECKING:       # types only: the run modules import this one for its titles
    from .config import Config
    from .run import RawDraws, Settings
    from .spec import ModelSpec

PRIOR_TEXT = {"prior1": "prior1: IW(I, q+1)", "prior2": "prior2: IW(0, -(q+1)), flat (default)",
              "prior3": "prior3: IW(0, 0)"}

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


# ------------------------------------------------------------ assembling a run's report

def programs_text(programs: tuple, requested: int | None) -> str:
    """How the chains ran: vectorised in one program, or split over programs side by side (or one
    after the other, with `processors 1`); the layout is fixed by the run (execution.program_layout)."""
    groups, axis, workers = programs
    asked = f"processors {requested} requested; " if requested else ""
    if groups == 1:
        return f" ({asked}vectorised in one program)"
    what = "chains" if axis == 2 else "data sets"
    how = "side by side" if workers > 1 else "one after the other"
    return f" ({asked}run as {groups} programs {how}, each on half of the {what})"


def _device_text() -> str:
    """The platform a run's files depend on (with the script, data, seed and versions); on
    several devices their number too (execution.shard_sets)."""
    n = len(jax.local_devices())
    many = f" x {n} (results can differ in rounding with the number of devices)" if n > 1 else ""
    return (f"{jax.default_backend()} ({jax.devices()[0].device_kind}){many}, jaximpute {__version__}, "
            f"jax {jax.__version__}")


def build_report(s: Config, spec: ModelSpec, settings: Settings, raw: RawDraws, labels,
                 estimates: pd.DataFrame | None, seed_drawn: bool, total: float) -> Report:
    """The report of a run: its settings, data, model blocks, burn-in PSR table and warnings,
    parameter summaries, the saved variables' order and timing."""
    settings_d = {
        "script": str(s.path) if s.path else "<api>",
        **({"language": f"{s.dialect} ({s.dialect_reason})"} if s.dialect else {}),
        "data": spec.table.source,
        "seed": f"{settings.seed}" + ("  (drawn: SEED was not given)" if seed_drawn else ""),
        "burn-in": f"{settings.burn} sweeps per chain",
        "thin": f"{settings.thin}",
        "imputations": f"{settings.nimps}",
        "chains": f"{settings.chains}" + programs_text(raw.programs, s.processors),
        "sweeps per chain": f"{settings.sweeps_per_chain}",
        "prior": PRIOR_TEXT[spec.prior.name],
        **({"warm start": f"random slopes held near 0 in the first {settings.warmup_sweeps} burn-in sweeps"}
           if any(b.num_random > 1 for b in spec.blocks) and settings.warmup_sweeps else {}),
        "device": _device_text(),
    }
    table = spec.table
    data_d = {"rows": f"{table.values.shape[0]}"}
    if spec.cluster:
        sizes = raw.layout.cluster_sizes
        data_d["clusters"] = (f"{raw.layout.num_clusters} (cluster id: {spec.cluster}); rows per "
                              f"cluster {sizes.min()} to {sizes.max()}, mean {sizes.mean():.1f}")
    if spec.unit:
        assert raw.layout.unit_of_cluster is not None        # three-level data
        per_unit = np.bincount(raw.layout.unit_of_cluster)
        data_d["level-3 units"] = (f"{raw.layout.num_units} (id: {spec.unit}); clusters per unit "
                                   f"{per_unit.min()} to {per_unit.max()}, mean {per_unit.mean():.1f}")
    data_d["missing code"] = f"{table.missing_code:g}" if table.missing_code is not None else "none"
    var_df = pd.DataFrame({
        "variable": [v.name for v in spec.variables],
        "role": [v.role for v in spec.variables],
        "level": [v.level if v.role != "carried" else "" for v in spec.variables],
        "type": [v.kind if v.role in ("modelled", "fixed") else "" for v in spec.variables],
        "missing": [f"{v.pct_missing:.1f}%" for v in spec.variables],
    })
    blocks = []
    for bi in spec.block_info:
        rhs = " + ".join(bi.terms)
        ran = f" + random {' + '.join(bi.random)} | {spec.cluster}" if bi.random else ""
        if spec.unit and bi.level < 3:
            ran += f" + random Intercept | {spec.unit}"
        where = ("level 1" if bi.level == 1 else
                 f"level {bi.level}, one row per {spec.cluster if bi.level == 2 else spec.unit}")
        role = {"focal": "focal model, ", "supporting": "supporting, "}.get(bi.role, "")
        blocks.append(f"{bi.outcome} ({role}{where}) ~ {rhs}{ran}")
    psr_df, warnings = None, []
    groups = [g for g in GROUP_TITLES if any(l[1] == g for l in labels)]
    windows = rhat.burnin_windows(settings.burn)
    if settings.burn >= 4:
        full = psr_summary(raw.burn_psr[0], labels, windows, groups)
        psr_df = full
        warnings = psr_warnings(raw.burn_psr[0][-1], labels,
                                f"in the last burn-in window ({windows[-1][0] + 1} to {windows[-1][1]})")
    psr_show = psr_df if s.psr else None
    saved = (["imp#"] if s.output_format != "separate" else []) + list(table.names)
    timing = dict(raw.timing)
    timing["total"] = total
    rep = Report(settings_d, data_d, var_df, blocks, psr_show,
                 (f"split R-hat over {settings.chains} chains, each halved" if settings.chains > 1
                  else "split R-hat over 1 chain, halved"), warnings, estimates, saved if settings.nimps else None, [], timing,
                 list(spec.notes), psr_df)
    return rep


def category_counts(spec: ModelSpec, imputed: np.ndarray) -> pd.DataFrame:
    """Per modelled ordinal variable and code: the observed count and the mean count among the
    imputed cells of an imputed data set (rows for level 1, rows of the cluster for level 2)."""
    rows = []
    for v in spec.variables:
        if v.kind != "ordinal" or v.role != "modelled":
            continue
        col = spec.table.values[:, v.column]
        miss = np.isnan(col)
        codes = np.unique(col[~miss])
        for c in codes:
            obs = int(np.sum(col[~miss] == c))
            imp = float(np.mean(np.sum(imputed[:, miss, v.column] == c, axis=1))) if len(imputed) else 0.0
            rows.append({"variable": v.name, "code": f"{c:g}", "observed": obs,
                         "imputed": f"{imp:.1f}"})
    return pd.DataFrame(rows)


def acceptance_rates(spec: ModelSpec, settings: Settings, raw: RawDraws) -> pd.DataFrame:
    """Per ordinal block with free thresholds: the acceptance rates of the threshold step and of
    the intercept-threshold ridge move, in burn-in and after it (docs/design/model.md, step 6)."""
    rows = []
    after = settings.sweeps_per_chain - settings.burn
    for b, moves in raw.moves.items():
        m = moves[0].mean(axis=0)            # data set 0, mean over chains: (2 phases, 2 moves)
        rate = lambda phase, move, n: f"{m[phase, move] / n:.3f}" if n else "-"
        rows.append({"variable": spec.block_info[b].outcome,
                     "thresholds": raw.structure.blocks[b].categories - 2,
                     "burn-in": rate(0, 0, settings.burn), "after burn-in": rate(1, 0, after),
                     "ridge move (after)": rate(1, 1, after), "sweeps after": after})
    return pd.DataFrame(rows)
