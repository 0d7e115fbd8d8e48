"""Three-level data (docs/design/model.md, "Three-level data": "Three-level data add a level-3
random intercept to every level-1 and level-2 block"): each new conditional against its closed
form, the script's two ids and the level of every variable, and the whole sampler against lme4
on complete data.

The conditional tests follow test_conditionals.py: many draws from one fixed state, vmapped over
keys, against the exact Gaussian built in numpy from a dense design (no kernel code), with
z-tolerance 4.5 (false-failure chance below 1e-4 per test).
"""

from __future__ import annotations

import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaximpute.api import impute
from jaximpute.errors import DataError
from jaximpute.kernels import blocks as kb
from jaximpute.kernels.clusters import ClusterArrays
from jaximpute.kernels.impute import conditional, impute_variable
from jaximpute.kernels.state import BlockState, Level3
from jaximpute.kernels.structure import VAR, Block, Factor, Prior, Structure, Term

from test_conditionals import check_mean, check_var, keys, rs

UNIT_OF_CLUSTER = np.array([0, 1, 1, 2, 2, 2])     # unequal: 1, 2 and 3 clusters per unit
J, K, N_PER = 6, 3, 4
N = J * N_PER
ONE = Term(())
X, W2, W3 = (Term((Factor(VAR, c),)) for c in (1, 2, 3))


def structure(blocks, levels):
    st = Structure(len(levels), levels, (), tuple(blocks), Prior("prior2"), N, J, N_PER, (), num_units=K)
    first_cluster = np.searchsorted(UNIT_OF_CLUSTER, np.arange(K))
    ca = ClusterArrays(jnp.repeat(jnp.arange(J), N_PER), jnp.arange(J) * N_PER, jnp.ones(N), jnp.ones(J),
                       jnp.asarray(UNIT_OF_CLUSTER, jnp.int32), jnp.asarray(first_cluster, jnp.int32),
                       jnp.ones(K))
    return st, ca


def state(st, rng, sigma=None):
    out = []
    for blk in st.blocks:
        q = blk.num_random
        extra = dict(level3=Level3(jnp.asarray(rng.normal(size=K), jnp.float32),
                                   jnp.float32(rng.uniform(0.3, 0.8)))) if st.has_level3(blk) else {}
        sig = np.eye(q) * 0.7 if sigma is None or q != len(sigma) else sigma
        out.append(BlockState(jnp.asarray(rng.normal(size=blk.num_fixed), jnp.float32),
                              jnp.asarray(rng.normal(size=(J, q)), jnp.float32),
                              jnp.asarray(sig, jnp.float32), jnp.float32(rng.uniform(0.5, 1.5)), **extra))
    return tuple(out)


def values(rng):
    """Columns y, x (level 1), w2 (level 2), w3 (level 3), stored on every row."""
    cl = np.repeat(np.arange(J), N_PER)
    v = rng.normal(size=(N, 4))
    v[:, 2] = rng.normal(size=J)[cl]
    v[:, 3] = rng.normal(size=K)[UNIT_OF_CLUSTER[cl]]
    return v


def dense_gaussian(design, target, var, prior_prec, prior_lin):
    """Exact posterior N(H^-1 l, H^-1) of theta for target ~ N(design theta, var) and a Gaussian
    prior factor exp(-theta'P theta/2 + b'theta) (P, b given; zero rows for flat parts)."""
    d = np.asarray(design, np.float64)
    h = d.T @ (d / var[:, None]) + prior_prec
    lin = d.T @ (np.asarray(target, np.float64) / var) + prior_lin
    cov = np.linalg.inv(h)
    return cov @ lin, cov


def test_level1_block_draws_beta_level3_intercepts_and_random_effects_jointly():
    """A level-1 block with a random intercept and slope (q = 2, correlated), child terms on its
    random intercept (a latent mean used elsewhere) and level-3 intercepts: (beta, v3, u) from
    `draw_beta_u` equal the dense joint Gaussian posterior (flat beta, u_j ~ N(0, Sigma),
    v3_k ~ N(0, s3))."""
    rng = np.random.default_rng(31)
    blk = Block(0, 1, (ONE, X, W2), (ONE, X), "y")
    st, ca = structure([blk], (1, 1, 2, 3))
    sigma = np.array([[0.8, 0.3], [0.3, 0.5]])
    bs = state(st, rng, sigma)[0]
    x = jnp.asarray(values(rng), jnp.float32)
    rows, w = kb.rows_of(st, blk, x, ca)
    lat = kb.latents_at(st, blk, (bs,), ca)
    t, z = kb.design(blk.terms, rows, lat), kb.design(blk.random, rows, lat)
    cp = jnp.asarray(rng.uniform(0.2, 1.0, J), jnp.float32)      # child terms on u_j0
    cl = jnp.asarray(rng.normal(size=J), jnp.float32)
    y = rows[:, 0]

    def draw(k):
        beta, u, v3 = kb.draw_beta_u(rs(k), st, blk, bs, y, t, z, w, ca, cp, cl, bs.level3.s3)
        return jnp.concatenate([beta, u.reshape(-1), v3])
    s = np.asarray(jax.vmap(draw)(keys()))
    tn, zn = np.asarray(t, np.float64), np.asarray(z, np.float64)
    p = tn.shape[1]
    cl_of_row = np.repeat(np.arange(J), N_PER)
    d = np.zeros((N, p + 2 * J + K))
    d[:, :p] = tn
    for r in range(N):
        j = cl_of_row[r]
        d[r, p + 2 * j:p + 2 * j + 2] = zn[r]
        d[r, p + 2 * J + UNIT_OF_CLUSTER[j]] = 1.0
    prior = np.zeros((d.shape[1],) * 2)
    prior[p:p + 2 * J, p:p + 2 * J] = np.kron(np.eye(J), np.linalg.inv(sigma))
    prior[p + 2 * J:, p + 2 * J:] = np.eye(K) / float(bs.level3.s3)
    b = np.zeros(d.shape[1])
    for j in range(J):
        prior[p + 2 * j, p + 2 * j] += float(cp[j])
        b[p + 2 * j] = float(cl[j])
    mean, cov = dense_gaussian(d, y, np.full(N, float(bs.s2)), prior, b)
    check_mean(s, mean, np.sqrt(np.diag(cov)))
    check_var(s, np.diag(cov))
    # the confounded sums: intercept + v3 of unit 0, and v3 of unit 2 + its first cluster's u_0
    i3 = p + 2 * J
    check_var(s[:, 0] + s[:, i3], cov[0, 0] + cov[i3, i3] + 2 * cov[0, i3])
    j = 3
    check_var(s[:, i3 + 2] + s[:, p + 2 * j], cov[i3 + 2, i3 + 2] + cov[p + 2 * j, p + 2 * j]
              + 2 * cov[i3 + 2, p + 2 * j])


@pytest.mark.slow
def test_level2_block_draws_beta_and_level3_intercepts_jointly():
    """A level-2 block of three-level data, w2 ~ 1 + w3 + v3_k + e_j: `update_block` draws
    (beta, v3) from their joint Gaussian posterior given s2 and s3 (its level-3 intercepts are
    a random intercept one level up)."""
    rng = np.random.default_rng(32)
    blocks = [Block(2, 2, (ONE, W3), (), "w2"), Block(3, 3, (ONE,), (), "w3")]
    st, ca = structure(blocks, (1, 1, 2, 3))
    bstate = state(st, rng)
    v = values(rng)
    x = jnp.asarray(v, jnp.float32)

    def draw(k):
        out, _ = kb.update_block(rs(k), st, 0, bstate, x, ca)
        return jnp.concatenate([out.beta, out.level3.v3])
    s = np.asarray(jax.vmap(draw)(keys()))
    w2, w3 = v[::N_PER, 2], v[::N_PER, 3]
    d = np.zeros((J, 2 + K))
    d[:, 0], d[:, 1] = 1.0, w3
    d[np.arange(J), 2 + UNIT_OF_CLUSTER] = 1.0
    prior = np.zeros((2 + K, 2 + K))
    prior[2:, 2:] = np.eye(K) / float(bstate[0].level3.s3)
    mean, cov = dense_gaussian(d, w2, np.full(J, float(bstate[0].s2)), prior, np.zeros(2 + K))
    check_mean(s, mean, np.sqrt(np.diag(cov)))
    check_var(s, np.diag(cov))
    check_var(s[:, 0] + s[:, 2], cov[0, 0] + cov[2, 2] + 2 * cov[0, 2])


def _full_model():
    """y ~ 1 + x + w2 + w3 + random 1 + x (+ v3); x ~ 1 + w2 + random 1 (+ v3);
    w2 ~ 1 + w3 (+ v3), level 2; w3 ~ 1, level 3."""
    blocks = [Block(0, 1, (ONE, X, W2, W3), (ONE, X), "y"), Block(1, 1, (ONE, W2), (ONE,), "x"),
              Block(2, 2, (ONE, W3), (), "w2"), Block(3, 3, (ONE,), (), "w3")]
    return structure(blocks, (1, 1, 2, 3))


def log_joint(v, bs):
    """log p(y, x, w2, w3 | parameters, random effects) of `_full_model`, written out (float64)."""
    v = np.asarray(v, np.float64)
    y, x, w2, w3 = v.T
    cl = np.repeat(np.arange(J), N_PER)
    un = UNIT_OF_CLUSTER[cl]
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    yb, xb, wb, vb = (f(b.beta) for b in bs)
    uy, ux = f(bs[0].u), f(bs[1].u)
    mu_y = yb[0] + yb[1] * x + yb[2] * w2 + yb[3] * w3 + uy[cl, 0] + uy[cl, 1] * x + f(bs[0].level3.v3)[un]
    mu_x = xb[0] + xb[1] * w2 + ux[cl, 0] + f(bs[1].level3.v3)[un]
    w2j, w3j = w2[::N_PER], w3[::N_PER][np.searchsorted(UNIT_OF_CLUSTER, np.arange(K))]
    mu_w2 = wb[0] + wb[1] * w3[::N_PER] + f(bs[2].level3.v3)[UNIT_OF_CLUSTER]
    norm = lambda r, s2: -0.5 * np.sum(r * r) / float(s2)  # noqa: E731
    return (norm(y - mu_y, bs[0].s2) + norm(x - mu_x, bs[1].s2) + norm(w2j - mu_w2, bs[2].s2)
            + norm(w3j - vb[0], bs[3].s2))


@pytest.mark.parametrize("col,level,cell", [(3, 3, 2), (2, 2, 4), (1, 1, 13)])
@pytest.mark.slow
def test_missing_value_conditionals_at_every_level(col, level, cell):
    """The missing value of a level-3 (summing its children over the unit's rows and clusters),
    level-2 and level-1 variable: the kernels' Gaussian equals the one read off the log joint
    density of the whole model, which is quadratic in that value (evaluated at -1, 0, 1), and
    the draws follow it."""
    rng = np.random.default_rng(33 + col)
    st, ca = _full_model()
    st = st._replace(incomplete=(col,), num_missing=(1,))
    bstate = state(st, rng)
    v = values(rng)
    cl = np.repeat(np.arange(J), N_PER)
    rows = {1: np.arange(N) == cell, 2: cl == cell, 3: UNIT_OF_CLUSTER[cl] == cell}[level]

    def at(val):
        vv = v.copy()
        vv[rows, col] = val
        return log_joint(vv, bstate)
    f0, fp, fm = at(0.0), at(1.0), at(-1.0)
    prec = -(fp + fm - 2 * f0)
    mean = (fp - fm) / 2 / prec
    x = jnp.asarray(v, jnp.float32)
    m, pr = conditional(st, col, bstate, x, ca)
    np.testing.assert_allclose(float(m[cell]), mean, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(float(pr[cell]), prec, rtol=2e-3)
    idx = jnp.asarray([cell], jnp.int32)       # a row, cluster or unit

    def draw(k):
        xx, _ = impute_variable(rs(k), st, 0, bstate, x, ca, idx)
        return xx[:, col]
    s = np.asarray(jax.vmap(draw)(keys()))
    # every row of the cell's cluster or unit holds the one drawn value
    assert np.all(s[:, rows] == s[:, np.flatnonzero(rows)[:1]])
    check_mean(s[:, np.flatnonzero(rows)[0]], mean, 1 / np.sqrt(prec))
    check_var(s[:, np.flatnonzero(rows)[0]], 1 / prec)


# ------------------------------------------------------------------ the script's ids and levels

def three_level_frame(seed=1, k=12, m=3, n=4, recurring=False):
    """k schools of m students of n waves; y level 1, w2 level 2, w3 level 3, complete."""
    rng = np.random.default_rng(seed)
    school = np.repeat(np.arange(k), m * n)
    student = np.repeat(np.arange(k * m), n)
    w3 = rng.normal(size=k)[school]
    w2 = rng.normal(size=k * m)[student]
    y = w2 + w3 + rng.normal(size=k)[school] + rng.normal(size=k * m)[student] + rng.normal(size=k * m * n)
    return pd.DataFrame({"school": 100 + school, "student": student % m if recurring else 7 * student,
                         "y": y, "w2": w2, "w3": w3})


def _spec(df, model, **kw):
    from jaximpute.api import configure
    from jaximpute.data import from_dataframe
    from jaximpute.spec import build_spec
    table = from_dataframe(df, None)
    config = configure(table.names, model, burn=10, thin=1, nimps=1, chains=1, seed=1,
                       outcome=kw.get("outcome"))
    return build_spec(config, table)


@pytest.mark.parametrize("ids", ["school student", "student school"])
def test_nesting_of_the_two_ids_is_detected_from_the_data(ids):
    spec = _spec(three_level_frame(), f"{ids} ~ y w2 w3")
    assert (spec.cluster, spec.unit) == ("student", "school")
    assert {v.name: v.level for v in spec.variables} == {"school": 3, "student": 2, "y": 1, "w2": 2, "w3": 3}
    assert [bi.level for bi in spec.block_info] == [1, 2, 3]
    assert any("student (level 2) within school (level 3), detected from the data" in n for n in spec.notes)


@pytest.mark.slow
def test_recurring_level2_ids_are_read_in_the_order_written():
    """Student 0, 1, 2 in every school: the data cannot say which id holds the other, so the
    first id is level 3 and a cluster is a (school, student) pair (36 clusters, not 3)."""
    df = three_level_frame(recurring=True)
    spec = _spec(df, "school student ~ y w2 w3")
    assert (spec.cluster, spec.unit) == ("student", "school")
    assert any("taken from the order written" in n for n in spec.notes)
    res = impute(df, "school student ~ y w2 w3", nimps=1, burn=20, thin=5, chains=1, seed=1)
    assert res.raw.layout.num_clusters == 36 and res.raw.layout.num_units == 12


def test_ids_that_name_the_same_clusters_are_refused():
    df = three_level_frame()
    df["room"] = df.student + 1
    with pytest.raises(DataError, match="name the same clusters"):
        _spec(df, "room student ~ y w2")


@pytest.mark.slow
def test_imputed_values_are_constant_where_their_level_says():
    """w2 and w3 missing for whole students and schools: one drawn value per student (school)."""
    df = three_level_frame(k=10)
    rng = np.random.default_rng(2)
    df.loc[rng.random(len(df)) < 0.2, "y"] = np.nan
    df.loc[df.student.isin(df.student.unique()[rng.random(df.student.nunique()) < 0.3]), "w2"] = np.nan
    df.loc[df.school.isin([101, 104, 107]), "w3"] = np.nan
    res = impute(df, "school student ~ y w2 w3", outcome="y", nimps=3, burn=100, thin=10, chains=2, seed=4)
    for imp in res.imputations:
        assert not imp[["y", "w2", "w3"]].isna().any().any()
        assert imp.groupby("school").w3.nunique().max() == 1
        assert imp.groupby("student").w2.nunique().max() == 1
        obs = df.w3.notna()
        assert np.allclose(imp.w3[obs], df.w3[obs])
    assert "+ random Intercept | school" in res.report.text and "level-3 units  10 (id: school)" in res.report.text
    assert ("y", "ranvar", "Intercept (level 3)") in res.parameters


# ------------------------------------------------------------------ against lme4

@pytest.fixture(scope="module")
def complete_three_level():
    rng = np.random.default_rng(41)
    k, m, n = 150, 4, 6
    school = np.repeat(np.arange(k), m * n)
    student = np.repeat(np.arange(k * m), n)
    w3 = rng.normal(0.5, 1.0, k)[school]
    w2 = rng.normal(0.0, 1.0, k * m)[student] + 0.3 * w3
    x = rng.normal(1.0, 1.2, k * m * n)
    u = rng.multivariate_normal([0, 0], [[0.5, 0.1], [0.1, 0.2]], k * m)[student]
    y = (2.0 + 0.6 * x + 0.4 * w2 + 0.3 * w3 + u[:, 0] + u[:, 1] * x + rng.normal(0, 0.7, k)[school]
         + rng.normal(0, 1.0, k * m * n))
    return pd.DataFrame({"school": school, "student": student, "y": y, "x": x, "w2": w2, "w3": w3})


@pytest.mark.peer
@pytest.mark.slow
def test_posterior_matches_lme4_on_complete_three_level_data(tmp_path, complete_three_level):
    """`school student ~ y:x w2 w3; OUTCOME: y;` on complete data is the model
    y ~ x + w2 + w3 + (x | school:student) + (1 | school): posterior means (user's units) sit at
    lme4's REML fit, the flat-prior posterior's mode (test_posterior_vs_ml.py's reasoning and
    tolerances: 4 Monte Carlo SEs plus 0.2 posterior SDs for fixed effects, 0.3 for the
    right-skewed variance components; 150 schools put the level-3 variance's mean 0.16-0.23 SD
    above its mode). The posterior SDs of the fixed effects match lme4's standard errors."""
    if shutil.which("Rscript") is None:
        pytest.skip("R is not installed (CI installs it)")
    df = complete_three_level
    df.to_csv(tmp_path / "d.csv", index=False)
    r = f"""
suppressMessages(library(lme4))
d <- read.csv("{tmp_path / 'd.csv'}")
f <- lmer(y ~ x + w2 + w3 + (x | school:student) + (1 | school), data = d, REML = TRUE,
          control = lmerControl(optimizer = "bobyqa"))
vc <- as.data.frame(VarCorr(f))
out <- rbind(data.frame(name = names(fixef(f)), value = fixef(f), se = sqrt(diag(vcov(f)))),
             data.frame(name = paste(vc$grp, vc$var1, vc$var2), value = vc$vcov, se = NA))
write.csv(out, "{tmp_path / 'ml.csv'}", row.names = FALSE)
"""
    proc = subprocess.run(["Rscript", "-e", r], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ml = pd.read_csv(tmp_path / "ml.csv").set_index("name")
    res = impute(df, "school student ~ y:x w2 w3", outcome="y", nimps=0, burn=1000, thin=1,
                 chains=4, seed=7, options="estimates", iterations=2000)
    from jaximpute.kernels import rhat
    from jaximpute.posterior import to_original_units
    post = to_original_units(res.spec, res.raw.structure, res.raw.post_trace[:, 0])    # (T, C, P)
    mine = [i for i, (b, _, _) in enumerate(res.parameters) if b == "y"]
    labels = [f"{res.parameters[i][1]}: {res.parameters[i][2]}" for i in mine]
    draws = post[..., mine]
    means = draws.reshape(-1, len(mine)).mean(axis=0)
    sds = draws.reshape(-1, len(mine)).std(axis=0, ddof=1)
    ess = np.asarray(jax.jit(rhat.ess)(draws.astype(np.float32)))
    reference = {
        "fixed: Intercept": ("(Intercept)", 0.2), "fixed: x": ("x", 0.2), "fixed: w2": ("w2", 0.2),
        "fixed: w3": ("w3", 0.2),
        "ranvar: Intercept": ("school:student (Intercept) NA", 0.3),
        "ranvar: x~Intercept": ("school:student (Intercept) x", 0.3),
        "ranvar: x": ("school:student x NA", 0.3),
        "ranvar: Intercept (level 3)": ("school (Intercept) NA", 0.3),
        "errvar: residual": ("Residual NA NA", 0.3),
    }
    for lab, (name, k) in reference.items():
        i = labels.index(lab)
        value = float(ml.loc[name, "value"])
        tol = 4 * sds[i] / np.sqrt(ess[i]) + k * sds[i]
        assert abs(means[i] - value) < tol, (lab, means[i], value, tol)
        if lab.startswith("fixed"):
            assert abs(sds[i] / float(ml.loc[name, "se"]) - 1) < 0.15, (lab, sds[i], ml.loc[name, "se"])


# ------------------------------------------------------------------ the three-level analysis model

def _lmm_frame(seed=5, k=10, m=3, n=3):
    df = three_level_frame(seed=seed, k=k, m=m, n=n, recurring=True)
    df["x"] = np.random.default_rng(seed).normal(size=len(df))
    df["y"] = df.y + 0.5 * df.x * (1 + 0.3 * np.random.default_rng(seed + 1).normal(size=k * m)[
        np.repeat(np.arange(k * m), n)])
    return df


def test_three_level_deviance_is_the_dense_likelihood():
    """`fit_lmm` with (x | student) + (1 | school): at its estimates the log-likelihood equals
    the Gaussian density of y with the dense marginal covariance (every row of a school
    correlated) written in numpy, and it is a maximum: moving any variance parameter or a fixed
    effect lowers it. Students recur across schools (ids 0-2 in each), so groups are pairs."""
    from scipy import stats
    from jaximpute.lmm import fit_lmm
    df = _lmm_frame()
    fit = fit_lmm("y ~ x + w2 + w3 + (x | student) + (1 | school)", df)
    assert fit.converged[0] and fit.ngroups == 30 and fit.ngroups3 == 10

    def loglik(beta, psi, psi3, s2):
        x = np.column_stack([np.ones(len(df)), df.x, df.w2, df.w3])
        z = np.column_stack([np.ones(len(df)), df.x])
        pair = df.school.to_numpy() * 100 + df.student.to_numpy()
        same2 = pair[:, None] == pair[None, :]
        same3 = df.school.to_numpy()[:, None] == df.school.to_numpy()[None, :]
        v = same2 * (z @ psi @ z.T) + same3 * psi3 + s2 * np.eye(len(df))
        return stats.multivariate_normal(x @ beta, v).logpdf(df.y.to_numpy())
    best = loglik(fit.beta[0], fit.psi[0], fit.psi3[0], fit.sigma2[0])
    np.testing.assert_allclose(fit.loglik[0], best, rtol=1e-8)
    for d in (np.array([0.02, 0, 0, 0]), np.array([0, 0, 0, -0.02])):
        assert loglik(fit.beta[0] + d, fit.psi[0], fit.psi3[0], fit.sigma2[0]) < best
    for scale in (0.9, 1.1):
        assert loglik(fit.beta[0], fit.psi[0], fit.psi3[0] * scale, fit.sigma2[0]) < best
        assert loglik(fit.beta[0], fit.psi[0] * scale, fit.psi3[0], fit.sigma2[0]) < best


def test_two_random_intercepts_in_either_order():
    from jaximpute.lmm import fit_lmm
    df = _lmm_frame(seed=6)
    df["sid"] = df.school * 10 + df.student                  # unique student ids
    a = fit_lmm("y ~ x + (1 | sid) + (1 | school)", df, reml=True)
    b = fit_lmm("y ~ x + (1 | school) + (1 | sid)", df, reml=True)
    assert (b.formula.group, b.formula.group3) == ("sid", "school")
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-6)
    np.testing.assert_allclose(a.psi3, b.psi3, rtol=1e-5)
    assert list(a.variance_components()) == ["Intercept~~Intercept|sid", "Intercept~~Intercept|school",
                                             "Residual~~Residual"]


@pytest.mark.peer
@pytest.mark.slow
def test_three_level_fit_matches_lme4(tmp_path):
    """ML and REML fits of y ~ x + w2 + w3 + (x | student) + (1 | school) against lme4 (bobyqa,
    tight tolerance): estimates, variance components and log-likelihoods to 1e-5 relative."""
    if shutil.which("Rscript") is None:
        pytest.skip("R is not installed (CI installs it)")
    from jaximpute.lmm import fit_lmm
    df = _lmm_frame(seed=8, k=30, m=4, n=4)
    df.to_csv(tmp_path / "d.csv", index=False)
    r = f"""
suppressMessages(library(lme4))
d <- read.csv("{tmp_path / 'd.csv'}")
out <- NULL
for (reml in c(FALSE, TRUE)) {{
  f <- lmer(y ~ x + w2 + w3 + (x | school:student) + (1 | school), data = d, REML = reml,
            control = lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e6)))
  vc <- as.data.frame(VarCorr(f))$vcov
  out <- rbind(out, c(reml, fixef(f), vc, as.numeric(logLik(f))))
}}
write.csv(out, "{tmp_path / 'r.csv'}", row.names = FALSE)
"""
    proc = subprocess.run(["Rscript", "-e", r], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ref = pd.read_csv(tmp_path / "r.csv").to_numpy()
    for row in ref:
        fit = fit_lmm("y ~ x + w2 + w3 + (x | student) + (1 | school)", df, reml=bool(row[0]))
        ours = np.concatenate([fit.beta[0], [fit.psi[0, 0, 0], fit.psi[0, 1, 1], fit.psi[0, 0, 1],
                                             fit.psi3[0], fit.sigma2[0]], fit.loglik])
        np.testing.assert_allclose(ours, row[1:], rtol=1e-5, atol=1e-6)
