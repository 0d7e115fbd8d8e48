"""Analysis of imputed data sets: reading stacked/separate files, the analyze command, and the
pooled table against lme4 + mitml on the same files."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from jaximpute.analyze import analyze, read_imputations
from jaximpute.cli import main
from jaximpute.errors import DataError

FORMULA = "y ~ x + (x | cluster)"


@pytest.fixture(scope="module")
def imputations():
    """Five small 'imputed' data sets: the same design, a different draw of y in each."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(1, 41), 8)
    x = np.round(rng.normal(size=g.size), 4)
    frames = []
    base = 1 + 0.4 * x + rng.normal(size=40)[g - 1] + 0.3 * rng.normal(size=40)[g - 1] * x
    for _ in range(5):
        y = np.round(base + rng.normal(size=g.size), 4)
        frames.append(pd.DataFrame({"cluster": g, "y": y, "x": x}))
    return frames


def write_stacked(path, frames, header=False, with_zero=False):
    rows = []
    if with_zero:
        rows.append(frames[0].assign(y=-99).assign(imputation=0))
    rows += [f.assign(imputation=m + 1) for m, f in enumerate(frames)]
    stacked = pd.concat(rows)[["imputation", "cluster", "y", "x"]]
    stacked.to_csv(path, index=False, header=header)


def test_read_stacked_list_and_header(tmp_path, imputations):
    write_stacked(tmp_path / "s.csv", imputations, with_zero=True)
    got = read_imputations(tmp_path / "s.csv", ["cluster", "y", "x"], missing_code=-99)
    assert len(got) == 5                                    # imputation 0 (original) skipped
    np.testing.assert_allclose(got[2].to_numpy(), imputations[2].to_numpy())
    write_stacked(tmp_path / "h.csv", imputations, header=True)
    got = read_imputations(tmp_path / "h.csv")
    assert list(got[0].columns) == ["cluster", "y", "x"] and len(got) == 5
    for m, f in enumerate(imputations, start=1):
        f.to_csv(tmp_path / f"imp{m}.csv", index=False, header=False)
    (tmp_path / "implist.csv").write_text("".join(f"imp{m}.csv\n" for m in range(1, 6)))
    got = read_imputations(tmp_path / "implist.csv", ["cluster", "y", "x"])
    np.testing.assert_allclose(got[4].to_numpy(), imputations[4].to_numpy())


def test_read_rejects_a_file_without_imputation_numbers(tmp_path, imputations):
    imputations[0].assign(cluster=imputations[0].cluster + 0.5).to_csv(
        tmp_path / "bad.csv", index=False, header=False)
    with pytest.raises(DataError, match="imputation number"):
        read_imputations(tmp_path / "bad.csv", ["y", "x"])


@pytest.mark.slow
def test_analyze_command_writes_the_pooled_table(tmp_path, imputations, capsys):
    write_stacked(tmp_path / "s.csv", imputations)
    out = tmp_path / "pooled.csv"
    code = main(["analyze", str(tmp_path / "s.csv"), "--names", "cluster y x",
                 "--formula", FORMULA, "--output", str(out)])
    assert code == 0
    assert "Final parameter estimates" in capsys.readouterr().out
    table = pd.read_csv(out)
    assert list(table.columns) == ["term", "estimate", "std_error", "t", "df", "p", "riv", "fmi",
                                   "singular_fits"]
    assert list(table.term) == ["(Intercept)", "x", "Intercept~~Intercept|cluster",
                                "Intercept~~x|cluster", "x~~x|cluster", "Residual~~Residual",
                                "ICC|cluster"]
    assert table.std_error.iloc[2:].isna().all()


def test_analyze_command_unknown_column_is_one_clear_error(tmp_path, imputations, capsys):
    write_stacked(tmp_path / "s.csv", imputations)
    code = main(["analyze", str(tmp_path / "s.csv"), "--names", "cluster y x",
                 "--formula", "y ~ z + (1 | cluster)"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "unknown column 'z'" in err[0]


def test_df_com_gives_small_sample_df(imputations):
    big = analyze(imputations, FORMULA)
    small = analyze(imputations, FORMULA, df_com=30)
    assert np.all(small.fixed.df < big.fixed.df)
    np.testing.assert_allclose(small.fixed.estimate, big.fixed.estimate)


@pytest.mark.peer
def test_pooled_table_matches_lme4_and_mitml(tmp_path, imputations):
    """The seed's R analysis on the same stacked file: mitml::testEstimates over lme4 fits.
    Per-imputation fits agree to about 1e-5 (optimiser tolerance), so the tolerance is 1e-4."""
    if shutil.which("Rscript") is None:
        pytest.skip("R is not installed (CI installs it)")
    write_stacked(tmp_path / "s.csv", imputations)
    r = f"""
suppressMessages({{library(mitml); library(lme4)}})
d <- read.csv("{tmp_path / 's.csv'}", header = F)
names(d) <- c("imputation", "cluster", "y", "x")
il <- as.mitml.list(split(d, d$imputation))
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6),
                    check.conv.grad = .makeCC("ignore", tol = 1e-6))
fits <- with(il, lmer(y ~ x + (x | cluster), REML = F, control = ctrl))
est <- testEstimates(fits, extra.pars = T)
write.csv(est$estimates, "{tmp_path / 'fixed.csv'}")
write.csv(est$extra.pars, "{tmp_path / 'vc.csv'}")
"""
    proc = subprocess.run(["Rscript", "-e", r], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ours = analyze(imputations, FORMULA)
    fixed = pd.read_csv(tmp_path / "fixed.csv", index_col=0)
    for col, mine in (("Estimate", "estimate"), ("Std.Error", "std_error"), ("df", "df"),
                      ("RIV", "riv"), ("FMI", "fmi")):
        np.testing.assert_allclose(ours.fixed[mine].to_numpy(), fixed[col].to_numpy(), rtol=1e-4)
    vc = pd.read_csv(tmp_path / "vc.csv", index_col=0)["Estimate"]
    for name, value in vc.items():
        assert abs(ours.variance_components[name] - value) <= 1e-4 * max(abs(value), 1e-2), name
