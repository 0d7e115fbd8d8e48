"""Static model structure: what the compiled sampler closes over.

These are plain hashable Python tuples, fixed before tracing. The device functions branch on them
in Python (which block has random effects, which variable feeds which block) and never on data
values, so one compiled program serves every data set of the same shape.

Indices refer to the columns of the device value matrix `x` (modelled variables only), to blocks
in sampling order, and to the factors of a term.
"""

from __future__ import annotations

from typing import NamedTuple

VAR = "var"          # a variable's current value at the block's rows
LATENT = "latent"    # a parent block's random intercept (its latent cluster mean, centred)


class Factor(NamedTuple):
    kind: str        # VAR or LATENT
    # column of x (VAR) or index of the parent block (LATENT); the name shadows tuple.index
    index: int  # type: ignore[assignment]


class Term(NamedTuple):
    """A product of factors; the empty product is the intercept."""

    factors: tuple[Factor, ...] = ()

    def uses_var(self, v: int) -> bool:
        return Factor(VAR, v) in self.factors

    def uses_latent(self, b: int) -> bool:
        return Factor(LATENT, b) in self.factors


class Block(NamedTuple):
    """One regression of the factored specification (docs/design/model.md)."""

    outcome: int                 # column of x
    level: int                   # 1: rows are level-1 units; 2: clusters; 3: level-3 units
    terms: tuple[Term, ...]      # fixed-effect terms, the intercept first
    random: tuple[Term, ...]     # random-effect terms (level-1 blocks; the intercept first), or ()
    name: str = ""
    codes: tuple[float, ...] = ()  # ordinal outcome: its K category values as stored in x
                                   # (increasing); () for a continuous outcome

    @property
    def categories(self) -> int:
        return len(self.codes)

    @property
    def num_fixed(self) -> int:
        return len(self.terms)

    @property
    def num_random(self) -> int:
        return len(self.random)

    def uses_var(self, v: int) -> bool:
        return any(t.uses_var(v) for t in self.terms + self.random)

    def uses_latent(self, b: int) -> bool:
        return any(t.uses_latent(b) for t in self.terms + self.random)


PRIORS = ("prior1", "prior2", "prior3")


class Prior(NamedTuple):
    """Inverse-Wishart prior IW(scale * I, df) for random-effect covariances (Blimp's prior1-3);
    the residual variances use the same family with q = 1 (on the standardised scale).

    - prior1, IW(I, q+1): proper; pulls the covariance towards I on the standardised scale.
    - prior2, IW(0, -(q+1)): flat, p(Sigma) constant (the default, as in Blimp). With few
      clusters its posterior mean of Sigma sits above the ML estimate: given the random effects,
      E(Sigma | u) = S / (J - 2q - 2) against S / J (Gelman et al. 2013, BDA3, sec. 3.6).
    - prior3, IW(0, 0): p(Sigma) ~ |Sigma|^-(q+1)/2. Its posterior is improper whenever a random
      effect's (conditional) variance is weakly identified: the likelihood stays positive as that
      variance goes to 0 while the prior's density is not integrable there (Gelman 2006, Bayesian
      Analysis 1, "Prior distributions for variance parameters in hierarchical models"), and a
      chain can then drift into a zero variance until the draws fail (jaximpute stops with an
      error that says so). It suits well-identified covariances only.
    """

    name: str                    # 'prior1' | 'prior2' | 'prior3'

    def scale(self, q: int) -> float:
        return 1.0 if self.name == "prior1" else 0.0

    def df(self, q: int) -> float:
        return {"prior1": q + 1.0, "prior2": -(q + 1.0), "prior3": 0.0}[self.name]


class SamplerOptions(NamedTuple):
    """Static choices of the sampler that leave its target distribution unchanged: part of the
    `Structure`, so each setting is its own compiled program (and a test switches a move off by
    passing options, not by patching a module).

    - expansion: the parameter-expansion move of random slopes (``blocks.scale_slopes``; Liu &
      Wu 1999, Gelman et al. 2008), which speeds the mixing of slope variances;
    - ridge: the ordinal blocks' move along the intercept-threshold ridge (``ordinal.ridge_step``);
    - dense_waste: the host's layout rule, the dense cluster grid while padding adds at most this
      fraction of the rows (``jaximpute.compile.build_layout``).
    """

    expansion: bool = True
    ridge: bool = True
    dense_waste: float = 0.5


class Structure(NamedTuple):
    """Everything static about a model: variables, blocks, layout, priors, sampler options."""

    num_vars: int
    var_levels: tuple[int, ...]          # level of each column of x
    incomplete: tuple[int, ...]          # columns with missing values, in imputation order
    blocks: tuple[Block, ...]
    prior: Prior
    num_rows: int                        # N (padded)
    num_clusters: int                    # J (padded)
    rows_per_cluster: int                # dense layout: rows per cluster; 0 = segment layout
    num_missing: tuple[int, ...]         # static length of each incomplete column's index list
    num_units: int = 0                   # K level-3 units (three-level data), else 0
    options: SamplerOptions = SamplerOptions()

    def has_level3(self, blk: Block) -> bool:
        """Whether block `blk` has a level-3 random intercept: every level-1 and level-2 block
        of three-level data (docs/design/model.md, "Three-level data")."""
        return self.num_units > 0 and blk.level < 3

    def rows(self, level: int) -> int:
        """How many rows a block or variable of `level` has: N, J or K."""
        return (self.num_rows, self.num_clusters, self.num_units)[level - 1]

    def block_of(self, v: int) -> int:
        for i, b in enumerate(self.blocks):
            if b.outcome == v:
                return i
        raise KeyError(v)

    def children_of_var(self, v: int) -> tuple[int, ...]:
        return tuple(i for i, b in enumerate(self.blocks) if b.outcome != v and b.uses_var(v))

    def children_of_latent(self, b: int) -> tuple[int, ...]:
        return tuple(i for i, c in enumerate(self.blocks) if c.uses_latent(b))
