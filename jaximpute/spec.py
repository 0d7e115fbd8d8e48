"""Script + data -> ModelSpec: the blocks of the factored regression specification (MODEL.md).

This is the host-side model compiler's front half. It decides, from the script and the data,
which variable is modelled at which level, which blocks exist and what each is regressed on, and
it records everything the report prints about the model. The result is static: a `Structure`
for the device program plus the names and scales needed to read the draws back.

Supported now (issue 2): continuous variables, two-level data with random intercepts, the
`cluster ~ y x ...` mapping with latent cluster means, and single-level models (`MODEL: y x;`).
Everything else the script language parses (OUTCOME, `y:x`, `a*b`, ORDINAL, NOMINAL, three-level
ids) raises a clear "not supported yet" error here rather than fitting a different model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data import DataTable
from .errors import DataError, ModelError, did_you_mean
from .kernels.structure import LATENT, VAR, Block, Factor, Prior, Term
from .script import Script


@dataclass
class VariableInfo:
    name: str
    column: int                 # column in the data table
    role: str                   # 'modelled' | 'fixed' | 'cluster' | 'carried'
    level: int                  # 1 or 2 (detected); 2 for the cluster id
    kind: str                   # 'continuous' (ordinal/nominal come later)
    n_missing: int
    pct_missing: float
    mean: float = 0.0           # standardisation of modelled/fixed columns (observed values)
    sd: float = 1.0


@dataclass
class BlockInfo:
    outcome: str
    level: int
    terms: list[str]            # labels of the fixed-effect terms, 'Intercept' first
    random: list[str]           # labels of the random effects ('Intercept', ...), [] if none


@dataclass
class ModelSpec:
    script: Script
    table: DataTable
    cluster: str | None                 # cluster id name (None: single-level model)
    variables: list[VariableInfo]       # every column of the table
    x_names: list[str]                  # columns of the device value matrix, in order
    blocks: list[Block]
    block_info: list[BlockInfo]
    incomplete: list[int]               # x columns with missing values, imputation order
    prior: Prior
    notes: list[str] = field(default_factory=list)

    def var(self, name: str) -> VariableInfo:
        return next(v for v in self.variables if v.name == name)

    @property
    def x_vars(self) -> list[VariableInfo]:
        return [self.var(n) for n in self.x_names]


def _not_yet(script: Script, pos, what: str, issue: str) -> ModelError:
    err = script.error(pos, f"{what} is not supported yet ({issue}); "
                            "jaximpute refuses rather than fit a different model")
    return ModelError(str(err))


def detect_levels(values: np.ndarray, cluster: np.ndarray) -> np.ndarray:
    """Level of each column: 2 if its observed values are constant within every cluster (and
    some cluster has two or more observed values), else 1 (MODEL.md, Data)."""
    levels = np.ones(values.shape[1], dtype=int)
    df = pd.DataFrame(values)
    g = df.groupby(cluster)
    spread = (g.max() - g.min()).to_numpy()
    counts = g.count().to_numpy()
    for c in range(values.shape[1]):
        scale = max(1.0, float(np.nanmax(np.abs(values[:, c]))) if np.isfinite(values[:, c]).any() else 1.0)
        sp = spread[:, c]
        constant = np.all(np.nan_to_num(sp, nan=0.0) <= 1e-9 * scale)
        if constant and np.any(counts[:, c] >= 2):
            levels[c] = 2
    return levels


def build_spec(script: Script, table: DataTable) -> ModelSpec:
    names = list(table.names)
    lower = {n.lower(): i for i, n in enumerate(names)}

    def col(name_tok) -> int:
        i = lower.get(name_tok.text.lower())
        if i is None:
            raise ModelError(str(script.error(
                name_tok.pos, f"unknown variable '{name_tok.text}'"
                f"{did_you_mean(name_tok.text, names)}; expected a column of {table.source}")))
        return i

    # ---- what the script asks for, and what is not supported yet
    if script.nominal:
        raise _not_yet(script, script.nominal[0].pos, "NOMINAL", "nominal variables: a later issue")
    if len(script.cluster_ids) > 1:
        raise _not_yet(script, script.cluster_ids[1].pos, "three-level data (two cluster ids)",
                       "a later issue")
    if script.outcome is not None:
        raise _not_yet(script, script.outcome.pos, "OUTCOME (a focal analysis model)",
                       "issue 4: random slopes and focal models")
    for term in script.model:
        if term.kind == "slope":
            raise _not_yet(script, term.pos, f"the random slope '{term.names[0].text}:{term.names[1].text}'",
                           "issue 4")
        if term.kind == "product":
            raise _not_yet(script, term.pos, f"the product term '{'*'.join(n.text for n in term.names)}'",
                           "issue 4")
    # FIXED predictors are conditioned on (no block); they may be listed in MODEL or not
    fixed_cols = [col(n) for n in script.fixed]
    listed = [col(t.names[0]) for t in script.model if col(t.names[0]) not in fixed_cols]
    ordinal_cols = {col(n) for n in script.ordinal}
    for t in script.model:
        if col(t.names[0]) in ordinal_cols:
            raise _not_yet(script, t.pos, f"the ordinal variable '{t.names[0].text}' in MODEL",
                           "issue 5: ordinal and binary variables")
    if not listed:
        raise ModelError(str(script.error(script.model_pos or "MODEL",
                                          "no variable to model (every listed variable is FIXED); "
                                          "expected at least one variable to impute")))

    # ---- cluster id and levels
    values = table.values
    n_rows = values.shape[0]
    cluster_col = col(script.cluster_ids[0]) if script.cluster_ids else None
    if cluster_col is not None:
        cl = values[:, cluster_col]
        bad = np.flatnonzero(~np.isfinite(cl))
        if bad.size:
            raise DataError(f"{table.source}: row {_file_row(table, bad[0])}, column {cluster_col + 1} "
                            f"({names[cluster_col]}): the cluster id is missing; expected an id on every row")
        if cluster_col in listed:
            raise ModelError(str(script.error(script.cluster_ids[0].pos,
                             "the cluster id is also listed as a variable; expected it only left of '~'")))
        levels = detect_levels(values, cl)
    else:
        cl = np.zeros(n_rows)
        levels = np.ones(values.shape[1], dtype=int)

    variables = []
    for i, n in enumerate(names):
        miss = int(np.isnan(values[:, i]).sum())
        role = ("cluster" if i == cluster_col else "modelled" if i in listed
                else "fixed" if i in fixed_cols else "carried")
        variables.append(VariableInfo(n, i, role, int(levels[i]) if i != cluster_col else 2,
                                      "ordinal" if i in ordinal_cols else "continuous",
                                      miss, 100.0 * miss / max(n_rows, 1)))

    for i in listed + fixed_cols:
        v = variables[i]
        obs = values[~np.isnan(values[:, i]), i]
        if obs.size == 0:
            raise DataError(f"{table.source}: column {i + 1} ({v.name}) has no observed values; "
                            "expected at least two to impute from")
        if i in fixed_cols and v.n_missing:
            raise ModelError(str(script.error(
                next(n.pos for n in script.fixed if n.text.lower() == v.name.lower()),
                f"'{v.name}' has {v.n_missing} missing values; a FIXED predictor must be "
                "complete (remove it from FIXED so that it is modelled and imputed)")))
        sd = float(np.std(obs))
        if not sd > 0:
            raise DataError(f"{table.source}: column {i + 1} ({v.name}) has the same value on every "
                            "observed row; a constant cannot be modelled (drop it from MODEL)")
        v.mean, v.sd = float(np.mean(obs)), sd

    # ---- blocks: level-1 variables in listed order, then level-2 ones (p(L1 | L2) p(L2))
    multilevel = cluster_col is not None
    l1 = [i for i in listed if variables[i].level == 1]
    l2 = [i for i in listed if variables[i].level == 2]
    order = l1 + l2
    fixed_l1 = [i for i in fixed_cols if variables[i].level == 1]
    fixed_l2 = [i for i in fixed_cols if variables[i].level == 2]
    x_cols = order + fixed_cols
    xi = {c: k for k, c in enumerate(x_cols)}
    block_of_col = {c: b for b, c in enumerate(order)}

    blocks, info = [], []
    for b, c in enumerate(order):
        lvl = variables[c].level
        terms, labels = [Term(())], ["Intercept"]
        if lvl == 1:
            for p in order[b + 1:]:
                terms.append(Term((Factor(VAR, xi[p]),)))
                labels.append(names[p])
                if multilevel and variables[p].level == 1:
                    terms.append(Term((Factor(LATENT, block_of_col[p]),)))
                    labels.append(f"{names[p]}[{names[cluster_col]} mean]")
            preds = fixed_l1 + fixed_l2
        else:
            for p in order[b + 1:]:
                terms.append(Term((Factor(VAR, xi[p]),)))
                labels.append(names[p])
            preds = fixed_l2
        for p in preds:
            terms.append(Term((Factor(VAR, xi[p]),)))
            labels.append(names[p])
        random = (Term(()),) if (multilevel and lvl == 1) else ()
        blocks.append(Block(xi[c], lvl, tuple(terms), random, names[c]))
        info.append(BlockInfo(names[c], lvl, labels, ["Intercept"] if random else []))

    incomplete = [xi[c] for c in order if variables[c].n_missing > 0]
    notes = []
    if script.ordinal:
        carried = [n.text for n in script.ordinal if col(n) not in listed]
        if carried:
            notes.append("ORDINAL variables outside MODEL are carried to the output: " + " ".join(carried))
    return ModelSpec(script, table, names[cluster_col] if multilevel else None, variables,
                     [names[c] for c in x_cols], blocks, info, incomplete, Prior(script.prior),
                     notes)


def _file_row(table: DataTable, row: int) -> int:
    """1-based line of data row `row` in the file (after a header row, if any)."""
    return row + 1 + (1 if getattr(table, "header_row", False) else 0)
