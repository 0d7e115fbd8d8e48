"""Analyse imputed data sets with a mixed model and pool the results (POOLING.md).

`analyze(frames, formula)` fits the lme4-style formula to every imputed data set in one vmapped
program (`jaximpute.lmm`), pools the fixed effects by Rubin's rules and the variance components
by their mean (`jaximpute.pool`), exactly as mitml's `testEstimates(..., var.comp = TRUE)` does
with lme4 fits. `read_imputations` reads Blimp's stacked and separate files (and Mplus list
files) from any imputation program.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .lmm import Formula, LMMFit, fit_lmm, parse_formula
from .pool import pool, pool_mean

COLUMNS = ["term", "estimate", "std_error", "t", "df", "p", "riv", "fmi"]


@dataclass
class AnalysisResult:
    formula: Formula
    fit: LMMFit
    fixed: pd.DataFrame                 # pooled fixed effects (index: lme4 term names)
    variance_components: pd.Series      # pooled by their mean
    df_com: float | None

    @property
    def m(self) -> int:
        return int(self.fit.beta.shape[0])

    def table(self) -> pd.DataFrame:
        """One frame: fixed effects, then variance components (estimate column only)."""
        fx = self.fixed.reset_index().rename(columns={"parameter": "term"})
        vc = pd.DataFrame({"term": self.variance_components.index,
                           "estimate": self.variance_components.to_numpy()})
        return pd.concat([fx, vc], ignore_index=True)[COLUMNS]

    def to_csv(self, path) -> None:
        from .output import atomic_write_text
        atomic_write_text(path, self.table().to_csv(index=False, float_format="%.10g"))

    @property
    def text(self) -> str:
        fx = self.fixed.copy()
        fx.columns = ["Estimate", "Std.Error", "t.value", "df", "P(>|t|)", "RIV", "FMI"]
        lines = [f"Final parameter estimates and inferences obtained from {self.m} imputed data sets.",
                 f"Model: {self.formula.text}  ({'REML' if self.fit.reml else 'ML'}; "
                 f"{self.fit.nobs} rows, {self.fit.ngroups} groups)", ""]
        lines += fx.to_string(float_format=lambda v: f"{v:.3f}").splitlines()
        lines += ["", "Variance components (mean over imputations):"]
        lines += [f"  {k:<32s} {v:10.3f}" for k, v in self.variance_components.items()]
        df_note = ("Unadjusted hypothesis test as appropriate in larger samples." if self.df_com is None
                   else f"Hypothesis test adjusted for small samples with df = {self.df_com:g}.")
        lines += ["", df_note]
        bad = int((~self.fit.converged).sum())
        if bad:
            lines.append(f"warning: {bad} of {self.m} fits did not reach the convergence tolerance")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text


def analyze(frames, formula: str, *, reml: bool = False, df_com: float | None = None) -> AnalysisResult:
    """Fit `formula` to each imputed data set (list of DataFrames) and pool the results."""
    f = parse_formula(formula)
    frames = list(frames)
    if len(frames) < 2:
        raise DataError(f"pooling needs at least 2 imputed data sets, got {len(frames)}")
    fit = fit_lmm(f, frames, reml=reml)
    fixed = pool(fit.beta, fit.vcov, df_com=df_com, names=f.fixed_names)
    fixed.index.name = "parameter"
    vc = pd.Series({k: float(pool_mean(v, axis=0)) for k, v in fit.variance_components().items()})
    return AnalysisResult(f, fit, fixed, vc, df_com)


# ------------------------------------------------------------------------ reading files

def _looks_like_list_file(path: Path) -> bool:
    try:
        lines = [l.strip() for l in path.read_text().splitlines() if l.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    return bool(lines) and all((path.parent / l).is_file() and "," not in l for l in lines)


def read_imputations(path, names=None, *, missing_code=None) -> list[pd.DataFrame]:
    """Read imputed data sets: a stacked file (first column the imputation number; 0 = original
    data, skipped), an Mplus list file naming separate files, or one separate file.

    `names` lists the data columns (for a stacked file, the columns after the imputation number,
    as a script's VARIABLES). Without names, a header row must name them.
    """
    from .data import read_table

    path = Path(path)
    if _looks_like_list_file(path):
        files = [path.parent / l.strip() for l in path.read_text().splitlines() if l.strip()]
        return [pd.DataFrame(read_table(f, names, missing_code).values,
                             columns=list(names) if names else list(read_table(f, None).names))
                for f in files]
    stacked_names = (["imputation"] + list(names)) if names else None
    table = read_table(path, stacked_names, missing_code)
    frame = pd.DataFrame(table.values, columns=list(table.names))
    first = frame.columns[0]
    imp = frame[first]
    if imp.isna().any() or not np.allclose(imp, np.round(imp)):
        raise DataError(f"{path}: column 1 ({first}) must hold the imputation number on every row; "
                        "expected a stacked file (or pass a list file of separate files)")
    frames = [g.drop(columns=first).reset_index(drop=True)
              for k, g in frame.groupby(imp.astype(int), sort=True) if k != 0]
    if not frames:
        raise DataError(f"{path}: no imputed data sets (only imputation 0)")
    return frames
