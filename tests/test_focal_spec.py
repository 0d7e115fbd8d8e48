"""Focal models (OUTCOME, y:x, a*b): the blocks docs/design/model.md asks for, centring, units,
errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaximpute.data import DataTable, read_table
from jaximpute.errors import ModelError
from jaximpute.kernels.structure import LATENT, VAR, Factor, Term
from jaximpute.posterior import to_original_units
from jaximpute.kernels.sweep import parameter_labels
from jaximpute.script import parse_script, read_script
from jaximpute.spec import build_spec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def ex8_spec(replace: tuple[str, str] | None = None):
    script = read_script(CONFIGS / "ex8_4_continuous.imp")
    if replace:
        text = (CONFIGS / "ex8_4_continuous.imp").read_text().replace(*replace)
        script = parse_script(text, CONFIGS / "ex8_4_continuous.imp")
    table = read_table(script.data, [n.text for n in script.variables], script.missing)
    return build_spec(script, table)


def labels(spec, b):
    info = spec.block_info[b]
    return info.outcome, info.role, info.level, info.terms, info.random


def test_seed_analysis_model_blocks():
    spec = ex8_spec()
    assert [labels(spec, b) for b in range(len(spec.blocks))] == [
        ("probsolve", "focal", 1,
         ["Intercept", "months", "efficacy", "stanmath", "condition", "months*condition", "frlunch"],
         ["Intercept", "months"]),
        # incomplete level-1 predictor first: later incomplete predictors, then complete ones
        ("efficacy", "supporting", 1, ["Intercept", "stanmath", "frlunch", "months", "condition"],
         ["Intercept"]),
        # then level-2 ones, on later incomplete and complete level-2 predictors only
        ("stanmath", "supporting", 2, ["Intercept", "frlunch", "condition"], []),
        ("frlunch", "supporting", 2, ["Intercept", "condition"], []),
    ]
    roles = {v.name: v.role for v in spec.variables}
    assert roles["months"] == roles["condition"] == "fixed"        # implicit FIXED
    assert roles["school"] == roles["wave"] == "carried"
    # imputation order = block order; complete predictors after the modelled variables
    assert spec.x_names[:4] == ["probsolve", "efficacy", "stanmath", "frlunch"]
    assert len(spec.incomplete) == 4


def test_centring_keeps_the_model():
    # months*condition has both main effects, the slope has the intercept: all centred
    spec = ex8_spec()
    assert all(v.centred for v in spec.x_vars)
    # without the main effect 'condition', centring months would turn months*condition into
    # that product plus a condition term the user left out: months is only scaled
    spec = ex8_spec(("condition months*condition", "months*condition"))
    months = spec.var("months")
    assert not months.centred and months.mean == 0.0 and months.sd > 0
    assert spec.var("condition").centred    # months is in the focal block, so condition may be


def test_latent_option_gives_the_focal_block_cluster_means():
    spec = ex8_spec(("OPTIONS: stacked;", "OPTIONS: stacked latent;"))
    focal = spec.blocks[0]
    assert Term((Factor(LATENT, 1),)) in focal.terms       # efficacy's block is block 1
    assert spec.block_info[0].terms[-1] == "efficacy.mean"
    plain = ex8_spec()
    assert not any(f.kind == LATENT for t in plain.blocks[0].terms for f in t.factors)


def _table(values, names):
    return DataTable(tuple(names), np.asarray(values, float), "<test>", np.zeros(len(names), bool), None, False)


def _small(model_line: str, extra: str = "", level2_x=False):
    rng = np.random.default_rng(0)
    j, n = 30, 6
    cl = np.repeat(np.arange(j), n)
    x = rng.normal(size=j * n) + 3.0
    if level2_x:
        x = np.repeat(rng.normal(size=j), n)
    w = np.repeat(rng.normal(size=j), n) + 1.0
    y = 2 + x + w + rng.normal(size=j * n)
    y[::5] = np.nan
    x[1::7] = np.nan
    table = _table(np.column_stack([cl, y, x, w]), ["cluster", "y", "x", "w"])
    text = f"VARIABLES: cluster y x w;\nMODEL: {model_line};\nBURN: 10;\n{extra}"
    return parse_script(text, None), table


def test_errors_name_the_term():
    script, table = _small("cluster ~ y:x w", "OUTCOME: y;", level2_x=True)
    with pytest.raises(ModelError, match=r"random slope 'y:x'.*level 2"):
        build_spec(script, table)
    script, table = _small("cluster ~ y x w x*y", "OUTCOME: y;")
    with pytest.raises(ModelError, match=r"product 'x\*y' holds the OUTCOME"):
        build_spec(script, table)
    script, table = _small("cluster ~ y x x*w")
    with pytest.raises(ModelError, match="needs a focal model"):
        build_spec(script, table)
    script, table = _small("y:x w", "OUTCOME: y;")
    with pytest.raises(ModelError, match="needs a cluster id"):
        build_spec(script, table)


def test_units_map_is_exact_for_products_and_slopes():
    """Draw arbitrary standardised parameters; the user-unit parameters must give the same
    linear predictor (times sd_y, plus mean_y) and the same random-part covariance
    (times sd_y^2) at any point, for a block with a product and a random slope."""
    script, table = _small("cluster ~ y:x w x*w", "OUTCOME: y;")
    spec = build_spec(script, table)
    from jaximpute.compile import prepare
    st = prepare(spec)[0]
    labs = parameter_labels(st)
    rng = np.random.default_rng(1)
    params = rng.normal(size=len(labs))
    # a valid covariance for the 2 x 2 random part of block 0
    idx = [i for i, l in enumerate(labs) if l.block == 0 and l.group == "ranvar"]
    params[idx] = [0.9, 0.2, 0.4]                       # tril order: (0,0), (1,0), (1,1)
    out = to_original_units(spec, st, params)
    xv = spec.x_vars
    blk = st.blocks[0]
    fix = [i for i, l in enumerate(labs) if l.block == 0 and l.group == "fixed"]
    for _ in range(5):
        orig = {k: rng.normal() * 3 + 1 for k in range(len(xv))}
        std = {k: (orig[k] - xv[k].mean) / xv[k].sd for k in orig}

        def term(t, vals):
            return np.prod([vals[f.index] for f in t.factors]) if t.factors else 1.0
        eta_std = sum(params[i] * term(t, std) for i, t in zip(fix, blk.terms))
        eta_orig = sum(out[i] * term(t, orig) for i, t in zip(fix, blk.terms))
        y = xv[blk.outcome]
        assert np.isclose(eta_orig, y.mean + y.sd * eta_std, rtol=1e-10, atol=1e-10)
        z_std = np.array([term(t, std) for t in blk.random])
        z_orig = np.array([term(t, orig) for t in blk.random])
        s_std = np.array([[0.9, 0.2], [0.2, 0.4]])
        s_orig = np.array([[out[idx[0]], out[idx[1]]], [out[idx[1]], out[idx[2]]]])
        assert np.isclose(z_orig @ s_orig @ z_orig, y.sd ** 2 * z_std @ s_std @ z_std, rtol=1e-10)
    assert all(f.kind == VAR for t in blk.terms for f in t.factors)


def test_fixed_auxiliary_outside_model_enters_supporting_blocks_only():
    """A FIXED variable that MODEL does not name is an auxiliary: it helps impute the incomplete
    predictors (their supporting blocks) but is not added to the analysis (focal) model."""
    spec = ex8_spec(("OUTCOME: probsolve;", "OUTCOME: probsolve;\nFIXED: female abilitygrp;"))
    assert "female" not in spec.block_info[0].terms
    assert spec.var("female").level == 2            # student-level: constant within student
    for b in (1, 2, 3):                             # efficacy (level 1), stanmath, frlunch (2)
        assert spec.block_info[b].terms[-2:] == ["female", "abilitygrp"]
    assert spec.var("female").role == "fixed"
    # wave = months + 1: as an auxiliary of efficacy's block it is exactly collinear
    with pytest.raises(ModelError, match="'wave' is a linear combination of 'Intercept' and 'months'"):
        ex8_spec(("OUTCOME: probsolve;", "OUTCOME: probsolve;\nFIXED: wave;"))
    # a level-1 auxiliary enters only the level-1 supporting blocks
    rng = np.random.default_rng(3)
    j, n = 20, 5
    cl = np.repeat(np.arange(j), n)
    x, a = rng.normal(size=j * n), rng.normal(size=j * n)
    w = np.repeat(rng.normal(size=j), n)
    y = x + w + rng.normal(size=j * n)
    x[::4], w[:n] = np.nan, np.nan
    table = _table(np.column_stack([cl, y, x, w, a]), ["cluster", "y", "x", "w", "a"])
    spec = build_spec(parse_script("VARIABLES: cluster y x w a;\nMODEL: cluster ~ y:x w;\n"
                                   "OUTCOME: y;\nFIXED: a;\nBURN: 10;", None), table)
    assert [("a" in bi.terms) for bi in spec.block_info] == [False, True, False]
