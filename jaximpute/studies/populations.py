r"""The simulation studies' populations: each a design (a frozen dataclass of its constants) and
its one generator, which draws a replication on device from the replication's key.

A design says what its data sets hold (``NAMES``: the columns of the generator's arrays, the
cluster id first; ``INCOMPLETE``: the columns its deletion touches; ``LEVEL2``: the columns
constant within a cluster) and which imputation methods suit it (``MODELS``: method ->
(MODEL, OUTCOME) of the imputation script). ``generate`` draws one replication from a key;
``generate_batch`` draws replications of a study's condition into numpy arrays on the host
(tests, benchmarks, the R peers' data). The analysis of each population is in
:mod:`jaximpute.studies.analysis`.

Random slope (``RandomSlope``, the default population of ``jaximpute simulate``)
-------------------------------------------------------------------------------
A random slope with a cross-level interaction (issue 4). J clusters of n rows; for cluster j
and row i:

.. code-block:: text

    w_j  ~ N(0, 1)                                             (level 2)
    x_ij = g w_j + a_j + f_ij,   a_j ~ N(0, var_a),  f_ij ~ N(0, var_f)
    y_ij = b0 + b1 x_ij + b2 w_j + b3 x_ij w_j + u0_j + u1_j x_ij + e_ij
    (u0_j, u1_j) ~ N(0, [[tau00, tau01], [tau01, tau11]]),   e_ij ~ N(0, s2)

Defaults: b = (0, 0.5, 0.3, 0.25), tau = (0.3, 0.05, 0.1), s2 = 0.5, g = 0.3, var_a = 0.2,
var_f = 0.8. The analysis model, ``y ~ x + w + x:w + (x | cluster)``, is the population model,
so its complete-data REML estimates are consistent; the estimands are the population values.

Missing data (``mechanism``):

- ``MAR`` (default). y and x: each row is, with probability 1/2, a row where y may be deleted,
  else one where x may be. In the first kind, y is deleted with probability
  logistic(gamma x_ij); in the second, x is deleted with probability logistic(gamma y_ij)
  (gamma = 1). The deleting probability depends only on a value that stays observed, so the
  mechanism is MAR; about 25% of each is missing, and a row never loses both. w: deleted for a
  cluster with probability logistic(alpha_w + gamma_w ybar_obs_j), where ybar_obs_j is the mean
  of the cluster's observed y values (0 if none): MAR at level 2; alpha_w = logit(0.2),
  gamma_w = 1 (about 20% of clusters).
- ``MCAR``: y and x deleted with probability 1/2 within their halves of the rows, w with
  probability ``w_rate``.
- ``MNAR``: each deleted by logistic selection on its own value (y on y, x on x, w on w,
  centred as under MAR).

Ordinal x (issue 5): with ``cuts`` the level-1 predictor is ordinal: the x above is a latent
variable, cut at ``cuts`` into codes 0..K-1, and the analysis model (and y's population model)
uses the codes, as a researcher's analysis would. The selections then use x - (K-1)/2 and
y - (b0 + b1 (K-1)/2) in place of x and y (both 0 for a continuous x), so the missing rates
stay near 25%.

Three levels: ``units`` = K puts the J clusters into K level-3 units (J / K consecutive
clusters each) and adds to x and y level-3 random intercepts of variances ``var_x3`` and
``tau3``, shared by the clusters of a unit (drawn after the two-level draws, so a two-level
design's stream is what it was).

Random intercept (``RandomIntercept``; ``population = "random_intercept"`` in a study config)
--------------------------------------------------------------------------------------------
The seed's warning that single-level imputation biases a multilevel analysis, made checkable.
J clusters of n rows (default J = 50, n = 20); ``icc`` is the intraclass correlation of x, of y
and of z. For cluster j and row i:

.. code-block:: text

    x_ij = a_j + w_ij                     a_j ~ N(0, icc),            w_ij ~ N(0, 1 - icc)
    y_ij = bW w_ij + bB a_j + c_j + e_ij  c_j ~ N(0, kappa icc),      e_ij ~ N(0, s_e2)
    z_ij = g y_ij + d_j + f_ij            d_j ~ N(0, s_z2 icc),       f_ij ~ N(0, s_z2 (1 - icc))

with bW = 0.5 (within-cluster slope), bB = 1.0 (between-cluster slope of y on the latent cluster
mean a_j of x), kappa = 0.25, g = 0.6, s_z2 = 1 - g^2 (bB^2 + kappa) = 0.55 and

    s_e2 = (1 - icc) (bB^2 + kappa - bW^2)   (= 1 - icc with the defaults).

Variance of y: between part bB^2 icc + kappa icc = (bB^2 + kappa) icc; within part
bW^2 (1 - icc) + s_e2 = (bB^2 + kappa)(1 - icc). So Var(y) = bB^2 + kappa = 1.25 and the ICC of y
is exactly ``icc``. (With bB = 1, Var(y) = 1 would force Var(c) = 0: y's cluster means would be an
exact function of x's latent means, a boundary case for the imputation model's random-intercept
variance; kappa > 0 keeps the population away from it.) Likewise Var(z) = g^2 (bB^2 + kappa) +
s_z2 = 1 and ICC(z) = icc; corr(y, z) = g sqrt(bB^2 + kappa) = 0.67. z has its own cluster
component d_j so that y's cluster mean is not an exact function of x's and z's (same reason).
The joint distribution of (x, y, z) is a two-level normal with free within- and between-cluster
covariance matrices, i.e. exactly the model ``cluster ~ y x z`` imputes under.

Missing data (MAR given the complete z): P(y_ij missing) = logistic(alpha + gamma z_ij),
P(x_ij missing) = logistic(alpha - gamma z_ij), independently, gamma = 1. Since z ~ N(0, 1),
alpha is solved (Gauss-Hermite quadrature) so that E[logistic(alpha + gamma z)] equals
``missing_rate`` (default 0.275) for both variables. High z (hence high y) makes y missing and x
observed, low z the reverse, so complete cases are a selected sample.

The estimands of its analysis (within slope, between slope, ICC of y) and their derivations are
in :mod:`jaximpute.studies.analysis`.

References: Enders, C. K., Du, H., & Keller, B. T. (2020). A model-based imputation procedure for
multilevel regression models with random coefficients, interaction effects, and nonlinear terms.
*Psychological Methods*, 25, 88-112. Luedtke, O., Marsh, H. W., Robitzsch, A., et al. (2008). The
multilevel latent covariate model. *Psychological Methods*, 13, 203-229.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, Union

import jax
import jax.numpy as jnp
import numpy as np

from ..execution import root_key
from ..kernels.stream import Stream, with_stream

DIRECT_METHODS = ("listwise", "complete")   # analysed without imputing: every population's
THREE_LEVEL_ONLY = ("focal, two-level",)    # the focal model without the level-3 units


@dataclass(frozen=True)
class RandomSlope:
    """The random-slope population with a cross-level interaction (module docstring)."""

    clusters: int = 50
    cluster_size: int = 20
    b: tuple = (0.0, 0.5, 0.3, 0.25)
    tau00: float = 0.3
    tau01: float = 0.05
    tau11: float = 0.1
    s2: float = 0.5
    g: float = 0.3
    var_a: float = 0.2
    var_f: float = 0.8
    gamma: float = 1.0
    w_rate: float = 0.2
    w_gamma: float = 1.0
    cuts: tuple = ()      # ordinal x: the latent x is cut here into codes 0..len(cuts)
    mechanism: str = "MAR"   # MAR, MCAR or MNAR
    units: int = 0        # three-level designs: K level-3 units of clusters / K clusters each
    tau3: float = 0.2     # and the variance of y's level-3 random intercept
    var_x3: float = 0.1   # and of x's level-3 part

    population: ClassVar[str] = "random_slope"
    NAMES: ClassVar[tuple[str, ...]] = ("cluster", "y", "x", "w")
    INCOMPLETE: ClassVar[tuple[str, ...]] = ("y", "x", "w")
    LEVEL2: ClassVar[tuple[str, ...]] = ("w",)
    # imputation methods in the order that numbers their engine seeds (studies.runner)
    MODELS: ClassVar[dict[str, tuple[str, str | None]]] = {
        "focal": ("cluster ~ y:x w x*w", "y"), "focal, x continuous": ("cluster ~ y:x w x*w", "y"),
        "random intercept": ("cluster ~ y x w", None), "single-level": ("y x w", None),
        "focal, two-level": ("cluster ~ y:x w x*w", "y")}
    METHODS: ClassVar[tuple[str, ...]] = ("focal", "focal, x continuous", "focal, two-level",
                                          "random intercept", "single-level") + DIRECT_METHODS
    DEFAULT_METHODS: ClassVar[tuple[str, ...]] = ("focal", "random intercept") + DIRECT_METHODS

    @property
    def name(self) -> str:
        """The condition's default name: its size, and the mechanism unless MAR."""
        return ((f"K={self.units}, " if self.units else "") + f"J={self.clusters}, n={self.cluster_size}"
                + ("" if self.mechanism == "MAR" else f", {self.mechanism}"))

    # variances that must be positive (the generator takes their square roots, and the
    # residual and level-1 parts make every value random), and those that may be 0 (that part
    # of the population is absent); each with what it is, for the message
    POSITIVE: ClassVar[dict[str, str]] = {
        "tau00": "the random-intercept variance", "tau11": "the random-slope variance",
        "s2": "the residual variance of y", "var_f": "the within-cluster variance of x"}
    NON_NEGATIVE: ClassVar[dict[str, str]] = {
        "var_a": "the between-cluster variance of x", "tau3": "the level-3 variance of y",
        "var_x3": "the level-3 variance of x"}

    def problem(self) -> str:
        """Why these constants make no study ("" when they do)."""
        if self.cluster_size < 2 or self.clusters < 3:
            return "expected at least 3 clusters of at least 2 rows"
        if self.units and (self.units < 3 or self.clusters % self.units or self.clusters // self.units < 2):
            return (f"units = {self.units} with clusters = {self.clusters}; expected at least 3 "
                    "level-3 units that share the clusters equally, 2 or more each")
        for key, what in self.POSITIVE.items():
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                return f"{key} = {value:g}; expected a positive number ({what})"
        for key, what in self.NON_NEGATIVE.items():
            value = getattr(self, key)
            if not (value >= 0 and math.isfinite(value)):
                return f"{key} = {value:g}; expected 0 or a positive number ({what})"
        if not self.tau01 ** 2 < self.tau00 * self.tau11:
            return (f"tau01 = {self.tau01:g} with tau00 = {self.tau00:g} and tau11 = {self.tau11:g}: "
                    "the random intercept and slope's covariance matrix is not positive definite; "
                    f"expected |tau01| < sqrt(tau00 * tau11) = {math.sqrt(self.tau00 * self.tau11):.4g}")
        if not 0.0 < self.w_rate < 1.0:
            return f"w_rate = {self.w_rate:g}; expected a number between 0 and 1 (w's missing rate)"
        if any(b <= a for a, b in zip(self.cuts, self.cuts[1:])):
            return f"cuts = {list(self.cuts)}; expected increasing thresholds"
        return ""

    @property
    def unit_of_cluster(self) -> np.ndarray:
        """(J,) the level-3 unit (0..K-1) of each cluster: consecutive clusters share a unit."""
        return np.arange(self.clusters) // (self.clusters // self.units)

    @property
    def ordinal(self) -> bool:
        return bool(self.cuts)

    @property
    def x_centre(self) -> float:
        """Where the MAR selection on x is centred: 0, or the middle code of an ordinal x."""
        return len(self.cuts) / 2.0 if self.cuts else 0.0

    @property
    def y_centre(self) -> float:
        """Where the selections on y are centred: y's mean at x = x_centre, w = 0 (b0 when x is
        continuous), so an ordinal x's codes 0..K-1 do not raise the missing rates."""
        return self.b[0] + self.b[1] * self.x_centre

    def imputation_model(self, method: str) -> tuple[str, str | None]:
        """(MODEL, OUTCOME) of an imputation method: in a three-level design the multilevel
        models name the level-3 units too (`unit cluster ~ ...`), except "focal, two-level",
        the focal model that ignores them (the comparison a two-level tool gives)."""
        model, outcome = self.MODELS[method]
        if self.units and "~" in model and method not in THREE_LEVEL_ONLY:
            model = "unit " + model
        return model, outcome

    def ordinal_names(self, method: str) -> tuple[str, ...]:
        """The variables a method imputes as ordinal: x under "focal" when x is ordinal."""
        return ("x",) if self.cuts and method == "focal" else ()

    def table_names(self) -> tuple[str, ...]:
        """The columns of a replication's table as the imputation models see it: NAMES, with
        the level-3 unit first in a three-level design (the generator's arrays hold NAMES only;
        the unit follows from the cluster)."""
        return (("unit",) if self.units else ()) + self.NAMES

    def draw(self, rng: Stream):
        """One replication from `rng`: complete and incomplete (N, 4) arrays, columns NAMES."""
        d = self
        j, n = d.clusters, d.cluster_size
        w = rng.normal((j,))
        a = rng.normal((j,))
        f = rng.normal((j, n))
        cov = jnp.asarray([[d.tau00, d.tau01], [d.tau01, d.tau11]])
        u = rng.normal((j, 2)) @ jnp.linalg.cholesky(cov).T
        e = rng.normal((j, n))
        # three-level designs: level-3 parts of x and y, drawn after the two-level draws so that a
        # two-level design's stream is what it was
        v = rng.normal((2, d.units))[:, d.unit_of_cluster] if d.units else jnp.zeros((2, j))
        x = ((d.g * w + jnp.sqrt(d.var_a) * a + jnp.sqrt(d.var_x3) * v[0])[:, None] + jnp.sqrt(d.var_f) * f)
        if d.cuts:
            x = jnp.searchsorted(jnp.asarray(d.cuts), x).astype(x.dtype)
        b0, b1, b2, b3 = d.b
        y = (b0 + b1 * x + (b2 * w + jnp.sqrt(d.tau3) * v[1])[:, None] + b3 * x * w[:, None] + u[:, :1]
             + u[:, 1:] * x + jnp.sqrt(d.s2) * e)
        ww = jnp.broadcast_to(w[:, None], (j, n))
        cl = jnp.broadcast_to(jnp.arange(1, j + 1, dtype=x.dtype)[:, None], (j, n))
        full = jnp.stack([cl, y, x, ww], axis=-1).reshape(j * n, 4)
        kind_y = rng.uniform((j, n)) < 0.5
        sig = jax.nn.sigmoid
        if d.mechanism == "MCAR":
            p_y, p_x = jnp.full((j, n), 0.5), jnp.full((j, n), 0.5)
        elif d.mechanism == "MNAR":
            p_y, p_x = sig(d.gamma * (y - d.y_centre)), sig(d.gamma * (x - d.x_centre))
        else:
            p_y, p_x = sig(d.gamma * (x - d.x_centre)), sig(d.gamma * (y - d.y_centre))
        miss_y = kind_y & (rng.uniform((j, n)) < p_y)
        miss_x = ~kind_y & (rng.uniform((j, n)) < p_x)
        alpha_w = np.log(d.w_rate / (1.0 - d.w_rate))
        if d.mechanism == "MCAR":
            p_w = jnp.full((j,), d.w_rate)
        elif d.mechanism == "MNAR":
            p_w = sig(alpha_w + d.w_gamma * w)
        else:
            cnt = jnp.sum(~miss_y, axis=1)
            ybar = jnp.where(cnt > 0, jnp.sum(jnp.where(miss_y, 0.0, y), axis=1) / jnp.maximum(cnt, 1)
                             - d.y_centre, 0.0)
            p_w = sig(alpha_w + d.w_gamma * ybar)
        miss_w = rng.uniform((j,)) < p_w
        miss = jnp.stack([jnp.zeros((j, n), bool), miss_y, miss_x,
                          jnp.broadcast_to(miss_w[:, None], (j, n))], -1).reshape(j * n, 4)
        return full, jnp.where(miss, jnp.nan, full)


@dataclass(frozen=True)
class RandomIntercept:
    """The random-intercept population with a complete auxiliary z (module docstring)."""

    icc: float = 0.5
    clusters: int = 50            # J
    cluster_size: int = 20        # n
    b_within: float = 0.5         # bW
    b_between: float = 1.0        # bB
    kappa: float = 0.25           # Var(c_j) / icc
    z_on_y: float = 0.6           # g
    gamma: float = 1.0            # log-odds of missingness per unit of z
    missing_rate: float = 0.275   # expected share missing, for y and for x

    population: ClassVar[str] = "random_intercept"
    NAMES: ClassVar[tuple[str, ...]] = ("cluster", "y", "x", "z")
    INCOMPLETE: ClassVar[tuple[str, ...]] = ("y", "x")
    LEVEL2: ClassVar[tuple[str, ...]] = ()
    MODELS: ClassVar[dict[str, tuple[str, str | None]]] = {
        "multilevel": ("cluster ~ y x z", None), "single-level": ("y x z", None)}
    METHODS: ClassVar[tuple[str, ...]] = ("multilevel", "single-level") + DIRECT_METHODS
    DEFAULT_METHODS: ClassVar[tuple[str, ...]] = METHODS
    units: ClassVar[int] = 0      # two levels only

    @property
    def name(self) -> str:
        return f"ICC={self.icc:g}, J={self.clusters}, n={self.cluster_size}"

    def problem(self) -> str:
        if self.cluster_size < 2 or self.clusters < 3:
            return "expected at least 3 clusters of at least 2 rows"
        if not 0.0 < self.icc < 1.0:
            return f"icc = {self.icc:g}; expected a number between 0 and 1"
        if not 0.0 < self.missing_rate < 1.0:
            return f"missing_rate = {self.missing_rate:g}; expected a number between 0 and 1"
        if self.z_on_y ** 2 * self.var_y >= 1.0 or self.var_e <= 0.0 or self.kappa < 0.0:
            return ("z_on_y, b_between, b_within and kappa leave no room for the noise variances: "
                    "expected z_on_y^2 (b_between^2 + kappa) < 1, b_within^2 < b_between^2 + kappa "
                    "and kappa >= 0")
        return ""

    @property
    def rows(self) -> int:
        return self.clusters * self.cluster_size

    @property
    def var_y(self) -> float:
        return self.b_between ** 2 + self.kappa

    @property
    def var_c(self) -> float:
        return self.kappa * self.icc

    @property
    def var_e(self) -> float:
        return (1.0 - self.icc) * (self.var_y - self.b_within ** 2)

    @property
    def var_z_noise(self) -> float:
        """s_z2: variance of z - g y, so that Var(z) = 1."""
        s = 1.0 - self.z_on_y ** 2 * self.var_y
        if s <= 0:
            raise ValueError("z_on_y too large: Var(z) would exceed 1")
        return s

    @property
    def true_within(self) -> float:
        return self.b_within

    @property
    def true_between(self) -> float:
        """Regression slope of ybar_j on xbar_j (exact estimand of the cluster-means OLS)."""
        icc, n = self.icc, self.cluster_size
        return (self.b_between * icc + self.b_within * (1 - icc) / n) / (icc + (1 - icc) / n)

    @property
    def df_com(self) -> dict:
        """The complete-data df of the slopes (analysis module docstring)."""
        return {"within slope": self.rows - self.clusters - 1, "between slope": self.clusters - 2}

    def imputation_model(self, method: str) -> tuple[str, str | None]:
        return self.MODELS[method]

    def ordinal_names(self, method: str) -> tuple[str, ...]:
        return ()

    def table_names(self) -> tuple[str, ...]:
        return self.NAMES

    def draw(self, rng: Stream):
        """One replication from `rng`: complete and incomplete (N, 4) arrays, columns NAMES."""
        d = self
        j, n = d.clusters, d.cluster_size
        sd = math.sqrt
        a = sd(d.icc) * rng.normal((j, 1))
        w = sd(1.0 - d.icc) * rng.normal((j, n))
        c = sd(d.var_c) * rng.normal((j, 1))
        e = sd(d.var_e) * rng.normal((j, n))
        dz = sd(d.var_z_noise * d.icc) * rng.normal((j, 1))
        fz = sd(d.var_z_noise * (1.0 - d.icc)) * rng.normal((j, n))
        x = a + w
        y = d.b_within * w + d.b_between * a + c + e
        z = d.z_on_y * y + dz + fz
        alpha = missing_intercept(d.missing_rate, d.gamma)
        miss_y = rng.uniform((j, n)) < jax.nn.sigmoid(alpha + d.gamma * z)
        miss_x = rng.uniform((j, n)) < jax.nn.sigmoid(alpha - d.gamma * z)
        cl = jnp.broadcast_to(jnp.arange(1, j + 1, dtype=x.dtype)[:, None], (j, n))
        full = jnp.stack([cl, y, x, z], axis=-1).reshape(j * n, 4)
        none = jnp.zeros((j, n), bool)
        miss = jnp.stack([none, miss_y, miss_x, none], -1).reshape(j * n, 4)
        return full, jnp.where(miss, jnp.nan, full)


Design = Union[RandomSlope, RandomIntercept]
POPULATIONS: dict[str, type[RandomSlope] | type[RandomIntercept]] = {
    "random_slope": RandomSlope, "random_intercept": RandomIntercept}


def all_methods(population: str) -> tuple[str, ...]:
    """The methods a study of this population may compare, in the order that numbers their
    engine seeds: the imputation methods, then listwise deletion and the complete data."""
    return tuple(POPULATIONS[population].MODELS) + DIRECT_METHODS


def missing_intercept(rate: float, gamma: float) -> float:
    """alpha with E[logistic(alpha + gamma Z)] = rate for Z ~ N(0, 1) (Gauss-Hermite, 80 nodes)."""
    from scipy import optimize

    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()

    def excess(alpha):
        return float(np.sum(weights / (1.0 + np.exp(-(alpha + gamma * nodes))))) - rate

    return float(optimize.brentq(excess, -20.0, 20.0, xtol=1e-12))


# ------------------------------------------------------------------------------ the generator

def generate(key, d: Design):
    """One replication drawn on device from `key`: complete and incomplete (N, 4) arrays,
    columns ``d.NAMES`` (the design's ``draw``)."""
    # one stream for all the draws (kernels.stream): a jax.random call per draw compiled to its
    # own threefry loop kernels, 2.9 s of LLVM time in every program that holds the generator
    return with_stream(key, d.draw, dtype=jnp.result_type(float))


@functools.lru_cache(maxsize=None)
def _key_maker():
    return jax.jit(lambda root, c, reps: jax.vmap(
        lambda r: jax.random.fold_in(jax.random.fold_in(root, c), r))(reps))


def replication_keys(seed: int, condition: int, reps) -> np.ndarray:
    """(R, 2) uint32 keys: replication r of condition c draws from fold_in(fold_in(key(seed), c),
    r), so a data set does not depend on the batch size, the shard or the device that draws it.
    Every bit of the seed counts (execution.root_key; a seed below 2^32 keeps its old keys)."""
    root = jax.random.key_data(root_key(seed))
    return np.asarray(_key_maker()(root, np.uint32(condition), np.asarray(reps, np.uint32)))


@functools.lru_cache(maxsize=None)
def _generator(d: Design):
    """The design's generator, jitted once (a fresh closure per call would retrace and recompile
    it for every batch)."""
    return jax.jit(jax.vmap(lambda k: generate(k, d)))


def generate_batch(seed: int, condition: int, reps, d: Design):
    """Replications `reps` (indices) of a condition as numpy (B, N, 4) arrays (complete,
    incomplete), float64; drawn in float32 on device by one vmapped program: the data sets
    a study of that seed draws for that condition."""
    full, inc = _generator(d)(replication_keys(seed, condition, reps))
    return np.asarray(full, np.float64), np.asarray(inc, np.float64)
