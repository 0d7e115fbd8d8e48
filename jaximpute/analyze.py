"""Analyse imputed data sets with a mixed model and pool the results (docs/design/pooling.md).

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

COLUMNS = ["term", "estimate", "std_error", "t", "df", "p", "riv", "fmi", "singular_fits"]


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

    @property
    def singular(self) -> np.ndarray:
        """(m,) bool: which imputed data sets' fits are on the boundary (lme4's isSingular)."""
        return np.asarray(self.fit.singular, bool)

    def table(self) -> pd.DataFrame:
        """One frame: fixed effects, then variance components (estimate column only, and
        `singular_fits`: how many of the m fits behind them are boundary fits)."""
        fx = self.fixed.reset_index().rename(columns={"parameter": "term"})
        vc = pd.DataFrame({"term": self.variance_components.index,
                           "estimate": self.variance_components.to_numpy(),
                           "singular_fits": int(self.singular.sum())})
        out = pd.concat([fx, vc], ignore_index=True)[COLUMNS]
        out.attrs["singular_fits"] = int(self.singular.sum())
        return out

    def to_csv(self, path) -> None:
        from .output import atomic_write_text
        atomic_write_text(path, self.table().to_csv(index=False, float_format="%.10g"))

    @property
    def text(self) -> str:
        fx = self.fixed.copy()
        fx.columns = ["Estimate", "Std.Error", "t.value", "df", "P(>|t|)", "RIV", "FMI"]
        lines = [f"Final parameter estimates and inferences obtained from {self.m} imputed data sets.",
                 f"Model: {self.formula.text}  ({'REML' if self.fit.reml else 'ML'}; "
                 f"{self.fit.nobs} rows, {self.fit.ngroups} groups"
                 + (f" in {self.fit.ngroups3} {self.fit.formula.group3} groups" if self.fit.ngroups3 else "")
                 + ")", ""]
        lines += fx.to_string(float_format=lambda v: f"{v:.3f}").splitlines()
        lines += ["", "Variance components (mean over imputations):"]
        lines += [f"  {k:<32s} {v:10.3f}" for k, v in self.variance_components.items()]
        df_note = ("Unadjusted hypothesis test as appropriate in larger samples." if self.df_com is None
                   else f"Hypothesis test adjusted for small samples with df = {self.df_com:g}.")
        lines += ["", df_note]
        sing = int(self.singular.sum())
        if sing:
            lines.append(f"note: boundary (singular) fit in {sing} of {self.m} imputed data sets: a "
                         "random-effect variance is estimated as 0 or the covariance matrix is "
                         "singular (as lme4's isSingular); consider a simpler random part")
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
    """An Mplus list file: every line one file name (a word with a '.', not a number). Files
    it names that are missing are an error here, not a data file of odd rows."""
    try:
        lines = [l.strip() for l in path.read_text().splitlines() if l.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    if not lines or not all(len(l.split()) == 1 and "," not in l and "." in l for l in lines):
        return False
    try:
        [float(l) for l in lines]
        return False                       # a column of numbers
    except ValueError:
        pass
    missing = [l for l in lines if not (path.parent / l).is_file()]
    if missing and len(missing) < len(lines):
        raise DataError(f"{path}: a list file of imputed data sets, but {_show_files(missing)} "
                        f"{'does' if len(missing) == 1 else 'do'} not exist; expected one existing "
                        "file per line (named from the list file's folder)")
    return not missing


def _show_files(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:3])
    return shown + (f" (and {len(names) - 3} more)" if len(names) > 3 else "")


def read_imputations(path, names=None, *, missing_code=None,
                     names_origin: str = "VARIABLES") -> list[pd.DataFrame]:
    """Read imputed data sets: a stacked file (first column the imputation number; 0 = original
    data, skipped), an Mplus list file naming separate files, or one separate file.

    `names` lists the data columns (for a stacked file, the columns after the imputation number,
    as a script's VARIABLES); `names_origin` is how messages refer to them ('--names'). Without
    names, a header row must name them. Every imputation must have the same number of rows
    (imputations of one data set); a message names the file and the imputations that differ.
    """
    from .data import read_table

    path = Path(path)
    if _looks_like_list_file(path):
        files = [path.parent / l.strip() for l in path.read_text().splitlines() if l.strip()]
        tables = [read_table(f, names, missing_code, names_origin=names_origin) for f in files]
        _same_rows(path, [(str(f), t.n_rows) for f, t in zip(files, tables)], "file")
        return [pd.DataFrame(t.values, columns=list(t.names)) for t in tables]
    stacked_names = (["imputation"] + list(names)) if names else None
    table = read_table(path, stacked_names, missing_code, names_origin=names_origin,
                       own_leading=1 if names else 0)
    frame = pd.DataFrame(table.values, columns=list(table.names))
    first = frame.columns[0]
    imp = frame[first]
    if imp.isna().any() or not np.allclose(imp, np.round(imp)):
        raise DataError(f"{path}: column 1 ({first}) must hold the imputation number on every row; "
                        "expected a stacked file (or pass a list file of separate files)")
    groups = [(int(k), g) for k, g in frame.groupby(imp.astype(int), sort=True) if k != 0]
    if not groups:
        raise DataError(f"{path}: no imputed data sets (only imputation 0)")
    _same_rows(path, [(str(k), len(g)) for k, g in groups], "imputation")
    return [g.drop(columns=first).reset_index(drop=True) for _, g in groups]


def _same_rows(path: Path, counts: list[tuple[str, int]], what: str) -> None:
    """Imputations of one data set have one number of rows: name those that differ from the
    most common count (the first imputation's, on a tie)."""
    sizes = [n for _, n in counts]
    usual = max(dict.fromkeys(sizes), key=sizes.count)
    odd = [(k, n) for k, n in counts if n != usual]
    if odd:
        agree = [k for k, n in counts if n == usual]
        shown = ", ".join(f"{what} {k} has {n} rows" for k, n in odd[:3])
        more = f" (and {len(odd) - 3} more)" if len(odd) > 3 else ""
        raise DataError(f"{path}: the imputations differ in length: {shown}{more}, but "
                        f"{what}{'s' if len(agree) > 1 else ''} {_listed(agree)} "
                        f"{'have' if len(agree) > 1 else 'has'} {usual}; expected every imputation "
                        "of one data set to have the same rows")


def _listed(keys: list[str]) -> str:
    if len(keys) > 4:
        return f"{keys[0]} to {keys[-1]}"
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + " and " + keys[-1]


# ------------------------------------------------------------------- multi-parameter tests

TEST_COLUMNS = ["F.value", "df1", "df2", "P(>F)", "RIV"]


def _n_params(formula: Formula) -> int:
    """Number of model parameters as lme4's ``logLik(...)`` counts them (its ``df``): fixed
    effects, the lower triangle of the random-effect covariance, and the residual variance."""
    q = len(formula.random)
    return len(formula.fixed) + q * (q + 1) // 2 + 1


def _test_table(res: dict, **attrs) -> pd.DataFrame:
    table = pd.DataFrame([[float(res["F"]), float(res["df1"]), float(res["df2"]), float(res["p"]),
                           float(res["riv"])]], columns=TEST_COLUMNS)
    table.attrs.update(m=int(res["m"]), **attrs)
    return table


def _warn_unconverged(fit: LMMFit, label: str) -> None:
    bad = int((~fit.converged).sum())
    if bad:
        import warnings
        warnings.warn(f"{label}: {bad} of {len(fit.converged)} fits did not reach the convergence "
                      "tolerance", RuntimeWarning, stacklevel=3)


def compare(frames, formula_full: str, formula_null: str, method: str = "D1", *,
            use: str = "wald", reml: bool = False, df_com: float | None = None,
            ariv: str = "default") -> pd.DataFrame:
    """Compare two nested mixed models over imputed data sets, as ``mitml::testModels``.

    ``compare(frames, full, null, method)`` is ``testModels(with(implist, lmer(full)),
    with(implist, lmer(null)), method = method, use = use, df.com = df_com, ariv = ariv)``:

    - ``"D1"`` (Li, Raghunathan & Rubin 1991; Reiter 2007 with ``df_com``): the fixed effects
      of ``formula_full`` that ``formula_null`` lacks (matched by name, as mitml does) are tested
      by the pooled Wald test ``jaximpute.pool.d1`` on their estimates and covariance matrices.
    - ``"D2"`` (Li, Meng, Raghunathan & Rubin 1991): ``use="wald"`` pools the per-imputation
      Wald statistics of the same parameters; ``use="likelihood"`` pools the per-imputation
      likelihood-ratio statistics, with k the difference in the number of model parameters
      (``jaximpute.pool.d2``, ``lr_statistics``).
    - ``"D3"`` (Meng & Rubin 1992): the likelihood-ratio test at the pooled estimates. Each
      model's fixed effects, random-effect covariance matrix and residual variance are averaged
      over the imputations (on that scale, as mitml does for lme4 fits), every data set's
      log-likelihood is evaluated there (``jaximpute.lmm.loglik_at``), and
      ``jaximpute.pool.d3`` combines them with the log-likelihoods at the fits' own estimates.

    As in mitml, ``reml=True`` uses REML fits for D1 and Wald-based D2, and refits by ML for the
    likelihood-based tests (``attrs["refit"]``); ``df_com`` is used only by D1 and
    ``ariv="positive"`` only by D2 and D3 (a warning says when one is ignored); D3 reports
    ``use = "likelihood"``. ``compare_fits`` does the same on fits made already.

    Returns
    -------
    A one-row DataFrame with columns ``F.value``, ``df1``, ``df2``, ``P(>F)``, ``RIV`` (mitml's
    names), and ``attrs``: method, use, m, reml, refit, df_com, ariv, full, null, and
    ``parameters`` (the tested fixed effects, for D1 and Wald D2).
    """
    method, use = _check_test_args(method, use, ariv)
    frames = list(frames)
    if len(frames) < 2:
        raise DataError(f"pooling needs at least 2 imputed data sets, got {len(frames)}")
    full = parse_formula(formula_full)
    null = parse_formula(formula_null)
    likelihood = method == "D3" or (method == "D2" and use == "likelihood")
    if not likelihood:
        _tested_parameters(full, null)            # fail before fitting when not nested
        fit_full = fit_lmm(full, frames, reml=reml)
        fit_null = None
    else:
        fit_full = fit_lmm(full, frames, reml=False)
        fit_null = fit_lmm(null, frames, reml=False)
    out = compare_fits(fit_full, fit_null if fit_null is not None else null, method, frames=frames,
                       use=use, df_com=df_com, ariv=ariv)
    out.attrs.update(reml=reml, refit=bool(reml and likelihood))
    return out


def _check_test_args(method, use, ariv):
    method = str(method).upper()
    if method not in ("D1", "D2", "D3"):
        raise ValueError(f"method must be 'D1', 'D2' or 'D3', got {method!r}")
    if use not in ("wald", "likelihood"):
        raise ValueError(f"use must be 'wald' or 'likelihood', got {use!r}")
    if ariv not in ("default", "positive"):
        raise ValueError(f"ariv must be 'default' or 'positive', got {ariv!r}")
    return method, use


def _tested_parameters(full: Formula, null: Formula) -> list[int]:
    names = full.fixed_names
    null_names = set(null.fixed_names)
    idx = [i for i, n in enumerate(names) if n not in null_names]
    if not idx:
        raise DataError(f"'{full.text}' and '{null.text}' appear not to be nested or include "
                        "the same fixed effects; expected the null model to drop some")
    return idx


def compare_fits(fit_full: LMMFit, fit_null, method: str = "D1", *, frames=None,
                 use: str = "wald", df_com: float | None = None,
                 ariv: str = "default") -> pd.DataFrame:
    """``mitml::testModels(fit_full, fit_null, ...)`` on fits from ``jaximpute.lmm.fit_lmm``
    (one fit object holds all m imputations). See ``compare`` for the methods and the table.

    ``fit_null`` may be the null model's formula (str or Formula) for D1 and Wald D2, which only
    use its fixed-effect names, as mitml does. ``frames`` (the imputed data sets the fits were
    made on) are needed for D3 and to refit REML fits by ML for the likelihood-based tests.
    """
    import warnings

    from .lmm import loglik_at
    from .pool import d1, d2, d3, lr_statistics, wald_statistics

    method, use = _check_test_args(method, use, ariv)
    if df_com is not None and method != "D1":
        warnings.warn(f"complete-data degrees of freedom are not available with {method} and were "
                      "ignored", stacklevel=2)
        df_com = None
    if use == "likelihood" and method != "D2":
        warnings.warn(f"the 'likelihood' option is not available with {method} and was ignored",
                      stacklevel=2)
    if ariv == "positive" and method == "D1":
        warnings.warn("the 'positive' option is not available with D1 and was ignored", stacklevel=2)
    full = fit_full.formula
    null = (fit_null.formula if isinstance(fit_null, LMMFit)
            else parse_formula(fit_null) if isinstance(fit_null, str) else fit_null)
    likelihood = method == "D3" or (method == "D2" and use == "likelihood")
    reml = bool(fit_full.reml or (isinstance(fit_null, LMMFit) and fit_null.reml))
    attrs = dict(method=method, use="likelihood" if method == "D3" else use, reml=reml,
                 refit=bool(reml and likelihood), df_com=df_com, ariv=ariv,
                 full=full.text, null=null.text)

    if not likelihood:
        idx = _tested_parameters(full, null)
        _warn_unconverged(fit_full, full.text)
        q = fit_full.beta[:, idx]
        u = fit_full.vcov[:, idx][:, :, idx]
        if method == "D1":
            res = d1(q, u, df_com=df_com)
        else:
            res = d2(wald_statistics(q, u), len(idx), ariv=ariv)
        return _test_table(res, parameters=[full.fixed_names[i] for i in idx], **attrs)

    if not isinstance(fit_null, LMMFit):
        raise ValueError(f"{method} with use='{attrs['use']}' needs the null model's fits")
    k = _n_params(full) - _n_params(null)
    if k <= 0:
        raise DataError(f"'{full.text}' has {_n_params(full)} parameters and '{null.text}' "
                        f"{_n_params(null)}; expected the first (full) model to have more")
    if reml or method == "D3":
        if frames is None:
            raise ValueError(f"{method}: pass the imputed data sets (frames=) "
                             + ("to refit the REML fits by ML" if reml else "to evaluate the "
                                "likelihood at the pooled estimates"))
        frames = list(frames)
    if fit_full.reml:
        fit_full = fit_lmm(full, frames, reml=False)          # as mitml's .updateML
    if fit_null.reml:
        fit_null = fit_lmm(null, frames, reml=False)
    _warn_unconverged(fit_full, full.text)
    _warn_unconverged(fit_null, null.text)
    if method == "D2":
        res = d2(lr_statistics(fit_full.loglik, fit_null.loglik), k, ariv=ariv)
        return _test_table(res, **attrs)
    pooled = [loglik_at(fit.formula, frames, fit.beta.mean(0), fit.psi.mean(0), fit.sigma2.mean())
              for fit in (fit_full, fit_null)]
    lr_own = -2.0 * (fit_null.loglik - fit_full.loglik)
    lr_pooled = -2.0 * (pooled[1] - pooled[0])
    res = d3(lr_own, lr_pooled, k, ariv=ariv)
    return _test_table(res, **attrs)


# ------------------------------------------------------------------- linear constraints

class _LinearParser:
    """Recursive-descent reader of one linear constraint over named parameters."""

    _TOKEN = (r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|`(?P<quoted>[^`]+)`"
              r"|(?P<name>[A-Za-z_.][A-Za-z0-9_.:]*)|(?P<op>==|[-+*/()]))")

    def __init__(self, text: str, names: list[str]):
        import re
        self.text = text
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.tokens = []
        pos = 0
        # lme4's "(Intercept)" is written "Intercept" (as mitml::testConstraints rewrites it)
        src = text.replace("(Intercept)", "Intercept")
        while pos < len(src):
            if src[pos:].strip() == "":
                break
            mt = re.compile(self._TOKEN).match(src, pos)
            if not mt or mt.end() == pos:
                raise DataError(f"constraint '{text}': cannot read '{src[pos:].strip()}'; expected "
                                "a linear function of the fixed effects such as 'x - w == 0'")
            kind = mt.lastgroup
            assert kind is not None
            val = mt.group(kind)
            self.tokens.append(("name" if kind == "quoted" else kind, val))
            pos = mt.end()
        self.pos = 0

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def _take(self):
        tok = self._peek()
        self.pos += 1
        return tok

    def _nonlinear(self):
        raise DataError(f"constraint '{self.text}': not linear in the parameters; only sums of "
                        "constant multiples of parameters (and constants) can be tested")

    def parse(self):
        lhs = self._expr()
        kind, val = self._peek()
        if val == "==":
            self._take()
            rhs = self._expr()
            lhs = (lhs[0] - rhs[0], lhs[1] - rhs[1])
        if self._peek() != (None, None):
            raise DataError(f"constraint '{self.text}': unexpected '{self._peek()[1]}'")
        if not np.any(lhs[0] != 0):
            raise DataError(f"constraint '{self.text}': involves no parameter")
        return lhs

    def _expr(self):
        coef, const = self._term()
        while self._peek()[1] in ("+", "-"):
            sign = 1.0 if self._take()[1] == "+" else -1.0
            c2, k2 = self._term()
            coef, const = coef + sign * c2, const + sign * k2
        return coef, const

    def _term(self):
        coef, const = self._factor()
        while self._peek()[1] in ("*", "/"):
            op = self._take()[1]
            c2, k2 = self._factor()
            if op == "*":
                if np.any(coef != 0) and np.any(c2 != 0):
                    self._nonlinear()
                coef, const = coef * k2 + c2 * const, const * k2
            else:
                if np.any(c2 != 0):
                    self._nonlinear()
                if k2 == 0:
                    raise DataError(f"constraint '{self.text}': division by zero")
                coef, const = coef / k2, const / k2
        return coef, const

    def _factor(self):
        kind, val = self._take()
        zero = np.zeros(len(self.names))
        if val in ("+", "-"):
            coef, const = self._factor()
            return (coef, const) if val == "+" else (-coef, -const)
        if kind == "num":
            return zero, float(val)
        if kind == "name":
            if val not in self.index:
                from .errors import did_you_mean
                raise DataError(f"constraint '{self.text}': unknown parameter '{val}'"
                                f"{did_you_mean(val, self.names)}; expected one of "
                                f"{', '.join(self.names)}")
            e = zero.copy()
            e[self.index[val]] = 1.0
            return e, 0.0
        if val == "(":
            out = self._expr()
            if self._take()[1] != ")":
                raise DataError(f"constraint '{self.text}': missing ')'")
            return out
        raise DataError(f"constraint '{self.text}': unexpected "
                        f"{'end' if val is None else repr(val)}")


def parse_constraints(constraints, names) -> tuple[np.ndarray, np.ndarray]:
    """Linear constraints on named parameters -> (L (k, p), c (k,)) with g(theta) = L theta + c.

    Each string is a linear expression of the parameters, tested against 0 (``"x"``, ``"x - w"``,
    ``"2*x - 1"``, as ``mitml::testConstraints`` writes them), or an equation ``"x == w"``
    (read as ``x - w``). Names as lme4 gives them; ``(Intercept)`` may be written
    ``Intercept``; a name with ':' (``x:w``) may be written bare or in backticks.
    """
    names = [n.replace("(Intercept)", "Intercept") for n in names]
    if isinstance(constraints, str):
        constraints = [constraints]
    rows = [_LinearParser(str(c), names).parse() for c in constraints]
    if not rows:
        raise DataError("no constraints given")
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def test_constraints(frames, formula: str, constraints, method: str = "D1", *,
                     reml: bool = False, df_com: float | None = None,
                     ariv: str = "default", fit: LMMFit | None = None) -> pd.DataFrame:
    """Test linear constraints on the fixed effects, as ``mitml::testConstraints``.

    Each imputation's estimates and covariance matrix are mapped by the delta method,
    ``g_l = L beta_l + c`` and ``U*_l = L U_l L'`` (exact for linear constraints; mitml takes
    the derivative numerically, ``numericDeriv``, which agrees to about 1e-8 relative), and then
    pooled by D1 (``jaximpute.pool.d1``, Reiter's df with ``df_com``) or D2 on the Wald
    statistics (``jaximpute.pool.d2``). Constraints: see ``parse_constraints``. ``fit`` (the
    ``fit_lmm`` result of ``formula`` on ``frames``) skips the fitting.

    Returns
    -------
    A one-row DataFrame (columns as ``compare``), with ``attrs``: method, m, constraints,
    ``estimate`` (the pooled constraint values Qbar) and ``T`` ((1 + r) Ubar with D1's r, as
    mitml reports them whatever the method), df_com, ariv.
    """
    import warnings

    from .pool import d1, d2, wald_statistics

    method = method.upper()
    if method not in ("D1", "D2"):
        raise ValueError(f"method must be 'D1' or 'D2', got {method!r}")
    if df_com is not None and method == "D2":
        warnings.warn("complete-data degrees of freedom are not available with D2 and were ignored",
                      stacklevel=2)
        df_com = None
    if ariv == "positive" and method == "D1":
        warnings.warn("the 'positive' option is not available with D1 and was ignored", stacklevel=2)
    f = parse_formula(formula) if fit is None else fit.formula
    cons = [constraints] if isinstance(constraints, str) else list(constraints)
    lmat, const = parse_constraints(cons, f.fixed_names)
    if fit is None:
        frames = list(frames)
        if len(frames) < 2:
            raise DataError(f"pooling needs at least 2 imputed data sets, got {len(frames)}")
        fit = fit_lmm(f, frames, reml=reml)
    reml = fit.reml
    _warn_unconverged(fit, f.text)
    q = fit.beta @ lmat.T + const
    u = np.einsum("ip,mpr,jr->mij", lmat, fit.vcov, lmat)
    res = d1(q, u, df_com=df_com) if method == "D1" else d2(wald_statistics(q, u), len(cons), ariv=ariv)
    m = q.shape[0]
    ubar = u.mean(0)
    # mitml's reported T uses the D1 estimate of the ARIV whatever the method
    dev = q - q.mean(0)
    r1 = (1.0 + 1.0 / m) * np.trace(np.linalg.solve(ubar, dev.T @ dev / (m - 1))) / len(cons)
    return _test_table(res, constraints=cons, estimate=q.mean(0), T=(1.0 + r1) * ubar,
                       method=method, df_com=df_com, ariv=ariv, reml=reml)


test_constraints.__test__ = False  # type: ignore[attr-defined]  # a library function, not a pytest test
