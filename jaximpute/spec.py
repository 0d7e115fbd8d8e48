"""Configuration + data -> ModelSpec: the blocks of the factored regression specification
(docs/design/model.md).

This is the host-side model compiler's front half. It decides, from the configuration (jaximpute.config) and the data,
which variable is modelled at which level, which blocks exist and what each is regressed on, and
it records everything the report prints about the model. The result is static: a `Structure`
for the device program plus the names and scales needed to read the draws back.

Supported: continuous and ordinal variables in two- and three-level data; the `cluster ~ y x ...`
joint mapping with random intercepts and latent cluster means; single-level models
(`MODEL: y x;`); and focal models (`OUTCOME: y;` with `y:x` random slopes, `a*b` products and
supporting blocks for incomplete predictors at every level). Three-level data (two ids left of
`~`) add a level-3 random intercept to every level-1 and level-2 block and give level-3
variables blocks of their own (docs/design/model.md). What the script language parses but the
engine does not do yet (NOMINAL, an OUTCOME above level 1 with lower-level predictors) raises a
clear "not supported yet" error here rather than fitting a different model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data import DataTable
from .errors import DataError, ModelError, did_you_mean
from .kernels.structure import LATENT, VAR, Block, Factor, Prior, SamplerOptions, Term
from .nesting import constant_within, pairs
from .config import Config


@dataclass
class VariableInfo:
    name: str
    column: int                 # column in the data table
    role: str                   # 'modelled' | 'fixed' | 'cluster' | 'carried'
    level: int                  # 1 or 2 (detected); 2 for the cluster id
    kind: str                   # 'continuous' (ordinal/nominal come later)
    n_missing: int
    pct_missing: float
    mean: float = 0.0           # standardisation of modelled/fixed columns (observed values);
    sd: float = 1.0             # mean is 0 for a variable that is scaled but not centred
    centred: bool = True


@dataclass
class BlockInfo:
    outcome: str
    level: int
    terms: list[str]            # labels of the fixed-effect terms, 'Intercept' first
    random: list[str]           # labels of the random effects ('Intercept', ...), [] if none
    role: str = "joint"         # 'joint' (no OUTCOME), 'focal' or 'supporting'


@dataclass
class ModelSpec:
    table: DataTable
    cluster: str | None                 # cluster id name (None: single-level model)
    variables: list[VariableInfo]       # every column of the table
    x_names: list[str]                  # columns of the device value matrix, in order
    blocks: list[Block]
    block_info: list[BlockInfo]
    incomplete: list[int]               # x columns with missing values, imputation order
    prior: Prior
    notes: list[str] = field(default_factory=list)
    unit: str | None = None             # level-3 id name (three-level data), else None
    sampler: SamplerOptions = SamplerOptions()   # static sampler choices (kernels.structure)

    def var(self, name: str) -> VariableInfo:
        return next(v for v in self.variables if v.name == name)

    @property
    def x_vars(self) -> list[VariableInfo]:
        return [self.var(n) for n in self.x_names]


def _not_yet(cfg: Config, pos, what: str, issue: str) -> ModelError:
    err = cfg.error(pos, f"{what} is not supported yet ({issue}); "
                            "jaximpute refuses rather than fit a different model")
    return ModelError(str(err))


def within_clusters(values: np.ndarray, cluster: np.ndarray):
    """(varies, counts, owners): per cluster (in `owners` order) and column, whether its observed
    values differ beyond rounding (1e-9 of the column's largest magnitude, or of 1), and how many
    are observed. What detect_levels and _check_level_changes both read."""
    g = pd.DataFrame(values).groupby(cluster)
    spread, counts = (g.max() - g.min()).to_numpy(), g.count().to_numpy()
    scale = np.maximum(1.0, np.abs(np.where(np.isfinite(values), values, 0.0)).max(axis=0))
    return np.nan_to_num(spread, nan=0.0) > 1e-9 * scale, counts, g.max().index.to_numpy()


def detect_levels(values: np.ndarray, cluster: np.ndarray, within=None) -> np.ndarray:
    """Level of each column: 2 if its observed values are constant within every cluster (and
    some cluster has two or more observed values), else 1 (docs/design/model.md, Data).
    `within`: within_clusters(values, cluster), where the caller has it already."""
    varies, counts, _ = within if within is not None else within_clusters(values, cluster)
    return np.where(~varies.any(axis=0) & (counts >= 2).any(axis=0), 2, 1)


def _check_scale(config: Config, table: DataTable) -> None:
    """Refuse a modelled column whose values are too small or too large to compute with, with a
    message that says so (and to rescale), where the model's own checks would mislead: values
    near 1e-300 whose spread underflows to 0 in double precision read as "the same value on
    every observed row"; values beyond the sampler's floating point (float32 unless JAX runs in
    64 bits) came back as "the sampler diverged"."""
    import jax.numpy as jnp
    ids = {n.text.lower() for n in config.cluster_ids}
    named = [n.text.lower() for t in config.model for n in t.names] + [n.text.lower() for n in config.fixed]
    column = {name.lower(): j for j, name in enumerate(table.names)}
    largest = float(np.finfo(jnp.result_type(float)).max)
    for name in dict.fromkeys(named):
        j = column.get(name)
        if j is None or name in ids:
            continue                      # the model's checks name an unknown variable
        obs = table.values[:, j][~np.isnan(table.values[:, j])]
        if obs.size < 2:
            continue
        where = f"{table.source}: column {j + 1} ({table.names[j]})"
        top = float(np.abs(obs).max())
        with np.errstate(under="ignore", over="ignore"):
            sd = float(np.std(obs))
        if np.ptp(obs) > 0 and not sd > 0:
            raise DataError(f"{where}: its values (up to {top:.3g} in size) are so small that their "
                            "spread underflows to 0 in double precision, so they cannot be "
                            "standardised; expected values of a usual size: rescale the column "
                            "(multiply it by a power of 10)")
        if top > largest or not np.isfinite(sd):
            raise DataError(f"{where}: its values (up to {top:.3g} in size) are too large for the "
                            f"sampler's floating point (at most {largest:.3g}); expected values of a "
                            "usual size: rescale the column (divide it by a power of 10)")


def build_spec(cfg: Config, table: DataTable) -> ModelSpec:
    _check_scale(cfg, table)
    names = list(table.names)
    lower = {n.lower(): i for i, n in enumerate(names)}

    def col(name_tok) -> int:
        i = lower.get(name_tok.text.lower())
        if i is None:
            raise ModelError(str(cfg.error(
                name_tok.pos, f"unknown variable '{name_tok.text}'"
                f"{did_you_mean(name_tok.text, names)}; expected a column of {table.source}")))
        return i

    # ---- what the script asks for, and what is not supported yet
    if cfg.nominal:
        raise _not_yet(cfg, cfg.nominal[0].pos, "NOMINAL", "nominal variables: a later issue")
    focal = cfg.outcome is not None
    if not focal:
        for term in cfg.model:
            if term.kind == "product":
                raise ModelError(str(cfg.error(
                    term.pos, f"the product term '{'*'.join(n.text for n in term.names)}' needs a focal "
                    "model; expected an OUTCOME naming the dependent variable it belongs to")))
    ordinal_cols = {col(n) for n in cfg.ordinal}
    # FIXED predictors are conditioned on (no block); they may be listed in MODEL or not
    fixed_cols = [col(n) for n in cfg.fixed]
    named = []                                          # every variable MODEL names, in order
    for t in cfg.model:
        for n in t.names:
            if col(n) not in named:
                named.append(col(n))
    outcome_col = col(cfg.outcome) if focal else None
    if focal and outcome_col in fixed_cols:
        assert cfg.outcome is not None
        raise ModelError(str(cfg.error(cfg.outcome.pos,
                         f"'{cfg.outcome.text}' is both OUTCOME and FIXED; expected it in one of them")))
    listed = [c for c in named if c not in fixed_cols]
    if not listed:
        raise ModelError(str(cfg.error(cfg.model_pos or "MODEL",
                                          "no variable to model (every listed variable is FIXED); "
                                          "expected at least one variable to impute")))

    # ---- cluster id and levels
    values = table.values
    n_rows = values.shape[0]
    id_cols = [col(n) for n in cfg.cluster_ids]
    for c, tok in zip(id_cols, cfg.cluster_ids):
        bad = np.flatnonzero(~np.isfinite(values[:, c]))
        if bad.size:
            raise DataError(f"{table.source}: row {_file_row(table, bad[0])}, column {c + 1} "
                            f"({names[c]}): the cluster id is missing; expected an id on every row")
        if c in named + fixed_cols:
            raise ModelError(str(cfg.error(tok.pos,
                             "the cluster id is also listed as a variable; expected it only left of '~'")))
    cluster_col, unit_col, nesting = (id_cols + [None])[0], None, ""
    if len(id_cols) == 2:
        for c in id_cols:
            frac = np.flatnonzero(values[:, c] != np.round(values[:, c]))
            if frac.size:
                raise DataError(f"{table.source}: row {_file_row(table, frac[0])}, column {c + 1} "
                                f"({names[c]}): {values[frac[0], c]:g} is not an id; expected whole-number "
                                "ids for the two cluster ids of three-level data")
        cluster_col, unit_col, nesting = _level_ids(cfg, table, id_cols)
    if cluster_col is not None:
        cl = values[:, cluster_col]
        if unit_col is not None:
            # a cluster is a (unit, id) pair: the same student id may recur in another school
            cl = pairs(values[:, unit_col], cl).cluster
        _check_clusters(cfg, table, names[cluster_col], cl, names[unit_col] if unit_col is not None else None,
                        values[:, unit_col] if unit_col is not None else None)
        within = within_clusters(values, cl)
        levels = detect_levels(values, cl, within)
        if unit_col is not None:
            levels = np.where((levels == 2) & _constant_within(values, values[:, unit_col], cl), 3, levels)
        forced = [col(n) for n in cfg.level1]
        levels[forced] = 1
        _check_level_changes(cfg, table, names, cl, values[:, cluster_col], levels,
                             [c for c in named + fixed_cols if c not in forced], within)
    else:
        cl = np.zeros(n_rows)
        levels = np.ones(values.shape[1], dtype=int)

    n_missing = np.isnan(values).sum(axis=0)
    if focal:
        # the focal model's complete predictors are conditioned on, as if FIXED
        # (docs/design/model.md)
        implicit = [c for c in named if c != outcome_col and c not in fixed_cols and not n_missing[c]]
        fixed_cols = fixed_cols + implicit
        listed = [c for c in listed if c not in implicit]
    variables = []
    for i, name in enumerate(names):
        miss = int(n_missing[i])
        role = ("cluster" if i in (cluster_col, unit_col) else "modelled" if i in listed
                else "fixed" if i in fixed_cols else "carried")
        level = 2 if i == cluster_col else 3 if i == unit_col else int(levels[i])
        variables.append(VariableInfo(name, i, role, level,
                                      "ordinal" if i in ordinal_cols else "continuous",
                                      miss, 100.0 * miss / max(n_rows, 1)))

    for i in listed + fixed_cols:
        v = variables[i]
        obs = values[~np.isnan(values[:, i]), i]
        if obs.size == 0:
            raise DataError(f"{table.source}: column {i + 1} ({v.name}) has no observed values; "
                            "expected at least two to impute from")
        if i in fixed_cols and v.n_missing:
            raise ModelError(str(cfg.error(
                next(n.pos for n in cfg.fixed if n.text.lower() == v.name.lower()),
                f"'{v.name}' has {v.n_missing} missing values; a FIXED predictor must be "
                "complete (remove it from FIXED so that it is modelled and imputed)")))
        sd = float(np.std(obs))
        if not sd > 0:
            raise DataError(f"{table.source}: column {i + 1} ({v.name}) has the same value on every "
                            "observed row; a constant cannot be modelled (drop it from MODEL)")
        v.mean, v.sd = float(np.mean(obs)), sd

    multilevel = cluster_col is not None
    build = _focal_blocks if focal else _joint_blocks
    order, blocks, info = build(cfg, col, variables, listed, fixed_cols, outcome_col, multilevel)
    units = values[:, unit_col] if unit_col is not None else None
    _check_collinear(cfg, table, blocks, info, variables, cl if multilevel else None, units)
    x_cols = order + [c for c in fixed_cols if c not in order]
    xi = {c: k for k, c in enumerate(x_cols)}
    # blocks were built with table columns; the device sees columns of x (x_cols order)
    blocks = [_renumber(b, xi) for b in blocks]
    _centre(blocks, [variables[c] for c in x_cols])
    blocks = _ordinal_blocks(cfg, col, blocks, [variables[c] for c in x_cols], values)

    incomplete = [xi[c] for c in order if variables[c].n_missing > 0]
    notes = []
    if unit_col is not None:
        assert cluster_col is not None
        notes.append(f"three-level data: {names[cluster_col]} (level 2) within {names[unit_col]} "
                     f"(level 3), {nesting}")
    if focal and any(t.kind == "product" for t in cfg.model):
        notes.append("product terms are added as written; their main effects are not added for you "
                     "(as in Blimp): list them in MODEL if the analysis has them")
    if cfg.ordinal:
        carried = [n.text for n in cfg.ordinal if col(n) not in listed]
        if carried:
            notes.append("ORDINAL variables outside MODEL are carried to the output: " + " ".join(carried))
    return ModelSpec(table, names[cluster_col] if multilevel and cluster_col is not None else None, variables,
                     [names[c] for c in x_cols], blocks, info, incomplete, Prior(cfg.prior),
                     notes, names[unit_col] if unit_col is not None else None)


def _check_level_changes(cfg: Config, table: DataTable, names, cluster, ids, levels, columns,
                         within) -> None:
    """Refuse a variable that is constant within all but a few clusters (at most 5% of those with
    two or more observed values, or one): most likely a level-2 variable with a few wrong values,
    which detect_levels would silently make level 1 and impute within clusters. The user says
    which: correct the values (level 2), or LEVEL1VARIABLES (level 1)."""
    differ, counts, owners = within
    for c in columns:
        if levels[c] != 1:
            continue
        v = table.values[:, c]
        judged = counts[:, c] >= 2
        varies = judged & differ[:, c]
        m, n_vary = int(judged.sum()), int(varies.sum())
        if n_vary == 0 or n_vary > max(1, 0.05 * m):
            continue
        shown = []
        for owner in owners[varies][:3]:
            rows = np.flatnonzero((cluster == owner) & ~np.isnan(v))
            kinds, count = np.unique(v[rows], return_counts=True)
            common = kinds[count.argmax()]
            odd = rows[v[rows] != common]
            lines = ", ".join(f"row {_file_row(table, r)} has {v[r]:g}" for r in odd[:3])
            more = f" and {odd.size - 3} more rows differ" if odd.size > 3 else ""
            shown.append(f"cluster {ids[rows[0]]:g}, where {rows.size - odd.size} rows have "
                         f"{common:g}, {lines}{more}")
        also = f" and {n_vary - 3} more" if n_vary > 3 else ""
        raise DataError(
            f"{table.source}: column {c + 1} ({names[c]}) has one value per cluster in {m - n_vary} "
            f"of the {m} clusters with two or more observed values, but varies within "
            f"{n_vary}: {'; '.join(shown)}{also}. As a level-2 variable it takes one value per "
            "cluster; as a level-1 variable it is modelled within clusters. Expected one of: "
            f"its values corrected in those clusters (level 2), or {cfg.origin.spell('LEVEL1VARIABLES', names[c])} "
            "(level 1)")


def _check_clusters(cfg: Config, table: DataTable, name: str, cluster, unit_name: str | None,
                    units) -> None:
    """A multilevel model needs at least two clusters (and three-level data two level-3 units):
    with one, the between-cluster variance has nothing to be estimated from, and the sampler's
    draws became non-finite."""
    for what, ids, label in ((name, cluster, "clusters"), (unit_name, units, "level-3 units")):
        if ids is None:
            continue
        found = np.unique(ids)
        if found.size < 2:
            raise ModelError(str(cfg.error(
                cfg.model_pos or "MODEL",
                f"the data ({table.source}) hold one {label[:-1]} ({what} = {found[0]:g}, all "
                f"{len(ids)} rows); a multilevel model needs at least two {label}, and its "
                "variances many more; expected data with several clusters, or a single-level "
                "model (MODEL without the ids and '~')")))


def _level_ids(cfg: Config, table: DataTable, id_cols: list[int]) -> tuple[int, int, str]:
    """(level-2 id column, level-3 id column) of three-level data: the level-3 id is the one
    that is constant within every cluster of the other (each student in one school), in either
    order (docs/design/script.md, MODEL). If the level-2 ids recur across units (student 1 of
    each school), the data cannot say which id holds the other, and the order as written decides,
    outer first (`school student ~`, the example in docs/design/script.md); a cluster is then a
    (unit, id) pair. The third item says which way it was decided, for the report."""
    values = table.values
    a, b = id_cols
    a_in_b = constant_within(values[:, a], values[:, b])
    b_in_a = constant_within(values[:, b], values[:, a])
    if a_in_b and b_in_a:
        raise DataError(f"{table.source}: the ids {table.names[a]} and {table.names[b]} name the same "
                        "clusters (one to one); expected level-2 clusters nested in level-3 units "
                        "(several clusters in some unit), or one id for two-level data")
    if a_in_b != b_in_a:
        return (b, a, "detected from the data") if a_in_b else (a, b, "detected from the data")
    return b, a, (f"taken from the order written: {table.names[b]} ids recur across {table.names[a]} "
                  f"units, so a cluster is a ({table.names[a]}, {table.names[b]}) pair")


def _constant_within(values: np.ndarray, units: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """Per column: are its observed values constant within every unit, with some unit holding
    observed values in two or more clusters (else the data cannot tell level 3 from level 2)?"""
    out = np.zeros(values.shape[1], bool)
    for c in range(values.shape[1]):
        obs = ~np.isnan(values[:, c])
        if not obs.any():
            continue
        df = pd.DataFrame({"u": units[obs], "g": clusters[obs], "v": values[obs, c]})
        by = df.groupby("u")
        scale = max(1.0, float(np.abs(df.v).max()))
        constant = bool(((by.v.max() - by.v.min()) <= 1e-9 * scale).all())
        out[c] = constant and bool((by.g.nunique() >= 2).any())
    return out


def _var(c: int) -> Term:
    return Term((Factor(VAR, c),))


def _joint_blocks(cfg, col, variables, listed, fixed_cols, outcome_col, multilevel):
    """`cluster ~ y x ...` without OUTCOME: every listed variable gets a block. Level-1 variables
    come first in the listed order, each regressed on the later ones, their latent cluster means
    and the FIXED predictors; level-2 ones follow (p(L1 | L2) p(L2)), then level-3 ones in
    three-level data. Each block is regressed on FIXED predictors of its own level or above.
    Blocks hold table columns."""
    order = sorted(listed, key=lambda i: variables[i].level)          # stable: listed order within
    by_level = sorted(fixed_cols, key=lambda i: variables[i].level)
    blocks, info = [], []
    for b, c in enumerate(order):
        lvl = variables[c].level
        fixed = [i for i in by_level if variables[i].level >= lvl]
        blk, bi = _sequential_block(variables, order, b, fixed, multilevel, "joint")
        blocks.append(blk)
        info.append(bi)
    return order, blocks, info


def _sequential_block(variables, order, b, complete, multilevel, role):
    """Block b of a sequential specification: order[b] regressed on an intercept, the modelled
    variables after it (level-1 blocks also on their latent cluster means) and the `complete`
    predictors, with a random intercept at level 1. Holds table columns."""
    names = [v.name for v in variables]
    c = order[b]
    lvl = variables[c].level if multilevel else 1
    terms, labels = [Term(())], ["Intercept"]
    for p in order[b + 1:]:
        terms.append(_var(p))
        labels.append(names[p])
        if lvl == 1 and multilevel and variables[p].level == 1:
            terms.append(Term((Factor(LATENT, order.index(p)),)))
            labels.append(_latent_label(names[p]))
    for p in complete:
        terms.append(_var(p))
        labels.append(names[p])
    random = (Term(()),) if (multilevel and lvl == 1) else ()
    return (Block(c, lvl, tuple(terms), random, names[c]),
            BlockInfo(names[c], lvl, labels, ["Intercept"] if random else [], role))


def _latent_label(name: str) -> str:
    return f"{name}.mean"


def _focal_blocks(cfg, col, variables, listed, fixed_cols, outcome_col, multilevel):
    """`cluster ~ y:x w a*b; OUTCOME: y;` (docs/design/model.md, "How the script maps to blocks").

    The focal block of y has exactly the terms listed, an intercept, and a random intercept plus a
    random slope for every `y:x` (unstructured covariance). Every incomplete predictor gets a
    supporting block: level-1 ones first, then level-2 ones, in the order MODEL names them; each
    is regressed on the incomplete predictors after it (level-1 blocks also on their latent
    cluster means) and on every complete predictor of its own level or above. With
    `OPTIONS: latent;` the focal block also gets the latent cluster means of its incomplete
    level-1 predictors. Blocks hold table columns.
    """
    names = [v.name for v in variables]
    y = outcome_col
    y_level = variables[y].level if multilevel else 1
    terms, labels, random, rlabels = [Term(())], ["Intercept"], [Term(())], ["Intercept"]

    def add(term: Term, label: str):
        if term not in terms:
            terms.append(term)
            labels.append(label)

    for t in cfg.model:
        cols = [col(n) for n in t.names]
        if t.kind == "var":
            if cols[0] != y:
                add(_var(cols[0]), names[cols[0]])
        elif t.kind == "slope":
            x = cols[1]
            if x == y:
                raise ModelError(str(cfg.error(t.pos, f"'{_text(t)}' gives the outcome a random "
                                 "slope on itself; expected 'outcome:predictor'")))
            if not multilevel:
                raise ModelError(str(cfg.error(t.pos, f"the random slope '{_text(t)}' needs a "
                                 "cluster id; expected MODEL: cluster ~ ...")))
            if variables[x].level != 1 or y_level != 1:
                which = names[x] if variables[x].level != 1 else names[y]
                level = max(variables[x].level, y_level)
                holder = next(v.name for v in variables if v.role == "cluster" and v.level == level)
                raise ModelError(str(cfg.error(t.pos, f"the random slope '{_text(t)}' needs level-1 "
                                 f"variables, but '{which}' is constant within every {holder} "
                                 f"(level {level}); expected a variable that varies within clusters")))
            add(_var(x), names[x])
            if _var(x) not in random:
                random.append(_var(x))
                rlabels.append(names[x])
        else:  # product
            if y in cols:
                raise ModelError(str(cfg.error(t.pos, f"the product '{_text(t)}' holds the OUTCOME "
                                 f"'{names[y]}'; expected a product of predictors")))
            add(Term(tuple(Factor(VAR, c) for c in cols)), "*".join(names[c] for c in cols))
    predictors = [c for c in dict.fromkeys(f.index for t in terms for f in t.factors)]
    if y_level >= 2 and multilevel:
        low = [c for c in predictors if variables[c].level < y_level]
        if low:
            raise _not_yet(cfg, cfg.outcome.pos,
                           f"a level-{y_level} OUTCOME ('{names[y]}') with lower-level predictors "
                           f"({names[low[0]]})", "a later issue")
    incomplete = [c for c in predictors if c in listed]
    order = [y] + sorted(incomplete, key=lambda c: variables[c].level)   # L1, then L2, then L3
    sup_l1 = [c for c in incomplete if variables[c].level == 1]
    complete = [c for c in predictors if c not in listed] + [c for c in fixed_cols if c not in predictors]

    if "latent" in cfg.options and multilevel:
        for c in sup_l1:
            add(Term((Factor(LATENT, order.index(c)),)), _latent_label(names[c]))
    level = y_level if multilevel else 1
    blocks = [Block(y, level, tuple(terms), tuple(random) if (multilevel and level == 1) else (), names[y])]
    info = [BlockInfo(names[y], level, labels, rlabels if blocks[0].random else [], "focal")]
    for b, c in enumerate(order[1:], start=1):
        lvl = variables[c].level if multilevel else 1
        own_or_above = [p for p in complete if not multilevel or variables[p].level >= lvl]
        blk, bi = _sequential_block(variables, order, b, own_or_above, multilevel, "supporting")
        blocks.append(blk)
        info.append(bi)
    return order, blocks, info


MAX_CATEGORIES = 20


def _ordinal_blocks(cfg, col, blocks, xvars, values):
    """Give each block whose outcome is ORDINAL its category values (probit block,
    docs/design/model.md, ordinal blocks).

    In the blocks that use it as a predictor it enters by its code (docs/design/model.md); a
    missing value is drawn by enumerating its categories (kernels.impute.category_log_weights)."""
    out = []
    for blk in blocks:
        v = xvars[blk.outcome]
        if v.kind != "ordinal":
            out.append(blk)
            continue
        pos = next(n.pos for n in cfg.ordinal if n.text.lower() == v.name.lower())
        obs = values[:, v.column]
        codes = np.unique(obs[~np.isnan(obs)])
        if not 2 <= len(codes) <= MAX_CATEGORIES:
            raise ModelError(str(cfg.error(pos, f"'{v.name}' has {len(codes)} distinct observed "
                             f"values; expected an ORDINAL variable with 2 to {MAX_CATEGORIES} "
                             "categories")))
        out.append(blk._replace(codes=tuple(float((c - v.mean) / v.sd) for c in codes)))
    return out


NEAR_COLLINEAR = 1e-3   # smallest / largest singular value of a block's unit-norm design columns


def _check_collinear(cfg, table, blocks, info, variables, cluster, units=None) -> None:
    """Refuse a block whose predictors are collinear in the data, exactly (e.g. months and wave =
    months + 1: the fixed effects are not identified) or nearly (the smallest singular value of
    the unit-norm design columns below NEAR_COLLINEAR of the largest: the float32 sampler cannot
    separate them and its draws became non-finite at 2e-4, though not at 2e-3), and a block
    whose outcome is such a combination of its predictors (no residual variance is left).

    First, a block needs more observed values of its outcome (rows, or clusters at level 2) than
    it has coefficients. Modelled (incomplete) variables count too, on the rows where every column is observed: the
    imputations cannot undo a collinearity that holds on every observed row. Terms with a latent
    cluster mean are left out (they change from sweep to sweep); an ordinal outcome is not checked
    (its model has a fixed unit variance). Blocks and terms hold table columns at this point."""
    values = table.values
    for blk, bi in zip(blocks, info):
        rows = np.ones(len(values), bool)
        owner = {2: cluster, 3: units}.get(blk.level)
        if owner is not None:                   # one row per cluster (unit) of a level-2 (3) block
            _, first = np.unique(owner, return_index=True)
            rows = np.zeros(len(values), bool)
            rows[first] = True
        cols, labels = [], []
        for term, label in zip(blk.terms, bi.terms):
            if any(f.kind != VAR for f in term.factors):
                continue
            col = np.ones(len(values))
            for f in term.factors:
                col = col * values[:, f.index]
            cols.append(col)
            labels.append(label)
        predictors = len(cols)
        observed = int((rows & ~np.isnan(values[:, blk.outcome])).sum())
        if observed <= len(blk.terms):
            unit = "clusters" if owner is not None else "rows"
            raise ModelError(str(cfg.error(cfg.model_pos or "MODEL", (
                f"'{bi.outcome}' is observed in {observed} {unit}, but its model has "
                f"{len(blk.terms)} coefficients ({', '.join(bi.terms)}); expected more observed "
                f"{unit} than coefficients: more data, or fewer predictors in that model"))))
        if variables[blk.outcome].kind != "ordinal":
            cols.append(values[:, blk.outcome])
            labels.append(bi.outcome)
        if len(cols) < 2:
            continue
        m = np.column_stack(cols)
        complete = rows & ~np.isnan(m).any(axis=1)
        m = m[complete]
        if m.shape[0] <= m.shape[1]:
            continue                            # too few complete rows to judge (n <= p)
        if cluster is not None and owner is None and np.unique(cluster[complete]).size <= m.shape[1]:
            continue                            # level-2 columns seen in too few clusters to judge
        m = m / np.maximum(np.linalg.norm(m, axis=0), 1e-300)
        for k in range(1, m.shape[1]):
            sv = np.linalg.svd(m[:, :k + 1], compute_uv=False)
            if sv[-1] > NEAR_COLLINEAR * sv[0]:
                continue
            coef = np.linalg.lstsq(m[:, :k], m[:, k], rcond=None)[0]
            used = [lab for lab, c in zip(labels[:k], coef) if abs(c) > 1e-6 * np.abs(coef).max()]
            others = " and ".join(f"'{lab}'" for lab in used)
            exact = sv[-1] <= 1e-9 * sv[0]
            how = ("exactly (collinearity)" if exact else
                   f"nearly (smallest singular value {sv[-1] / sv[0]:.1e} of the largest, with the "
                   "columns scaled alike; the float32 sampler cannot separate them)")
            where = f"on the {m.shape[0]} {'clusters' if owner is not None else 'rows'} where all are observed"
            if k == predictors:                 # the outcome itself
                what = (f"'{bi.outcome}' is a linear combination of {others} {where}, {how}: its "
                        "model has no residual variance left; expected an outcome that is not a "
                        "function of its predictors: drop one of them from MODEL")
            else:
                what = (f"in the model of '{bi.outcome}', '{labels[k]}' is a linear combination of "
                        f"{others} {where}, {how}, so its coefficient cannot be estimated; expected "
                        "predictors that are not collinear: drop one of them (from MODEL or FIXED)")
            raise ModelError(str(cfg.error(cfg.model_pos or "MODEL", what)))


def _text(t) -> str:
    op = {"var": "", "slope": ":", "product": "*"}[t.kind]
    return op.join(n.text for n in t.names)


def _renumber(blk: Block, xi: dict) -> Block:
    """Table columns -> columns of the device value matrix (LATENT indices are block numbers)."""
    def term(t: Term) -> Term:
        return Term(tuple(Factor(f.kind, xi[f.index]) if f.kind == VAR else f for f in t.factors))
    return blk._replace(outcome=xi[blk.outcome], terms=tuple(map(term, blk.terms)),
                        random=tuple(map(term, blk.random)))


def _centre(blocks: list[Block], xvars: list[VariableInfo]) -> None:
    """Decide which variables are centred by their observed mean (all are scaled by their SD).

    Centring a variable is a reparameterisation, and so leaves the flat-prior posterior of the
    imputations unchanged, only when every term holding it is accompanied by the same term
    without it (e.g. a*b with a and b, a random slope with the random intercept). Otherwise
    centring would add terms the user did not ask for (a*b without b), so that variable is only
    scaled; `mean` is set to 0 for it, which the layout, the imputations and the units map all
    read.
    """
    for k, v in enumerate(xvars):
        ok = True
        for blk in blocks:
            for group in (blk.terms, blk.random):
                for t in group:
                    f = Factor(VAR, k)
                    if f in t.factors and len(t.factors) > 1:
                        rest = list(t.factors)
                        rest.remove(f)
                        ok &= Term(tuple(rest)) in group
        v.centred = ok
        if not ok:
            v.mean = 0.0


def _file_row(table: DataTable, row: int) -> int:
    """1-based line of data row `row` in the file (after a header row, if any)."""
    return row + 1 + (1 if getattr(table, "header_row", False) else 0)
