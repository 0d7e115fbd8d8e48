"""Random draws used by the Gibbs sampler, each a pure function of an explicit key.

- `mvn_from_precision`: N(Q^-1 b, Q^-1) given the precision Q and the linear term b, through the
  Cholesky factor of Q (Rue & Held 2005, Gaussian Markov Random Fields, algorithm 2.5).
- `scaled_inv_chi2`: the conjugate draw for a variance, SS / chi2(df) (Gelman et al. 2013, BDA3,
  sec. 3.2).
- `inverse_wishart`: Sigma ~ IW(S, df) by the Bartlett decomposition of a Wishart(I, df) matrix
  (Bartlett 1933; Smith & Hocking 1972), with the parameterisation
  p(Sigma) ~ |Sigma|^-(df+q+1)/2 exp(-tr(S Sigma^-1)/2).

Every draw takes its standard normals and uniforms from the sweep's `Stream` (kernels.stream),
in order; chi-square variates are 2 Gamma(df/2) by Marsaglia & Tsang's method (`stream.gamma`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg

from . import linalg, stream
from .stream import Stream


def mvn_from_precision(rng: Stream, prec, lin):
    """Draw x ~ N(prec^-1 lin, prec^-1); `prec` (..., n, n), `lin` (..., n)."""
    l = linalg.cholesky(prec)
    mean = linalg.chol_solve(l, lin)
    return mean + linalg.solve_upper_t(l, rng.normal(lin.shape))


def mvn_from_precision_dense(rng: Stream, prec, lin):
    """`mvn_from_precision` for one P x P system per chain (the fixed effects) through LAPACK.

    Unrolling pays for the q x q systems of every cluster, which are a batch of thousands; for
    the one P x P system of a chain it only lengthens the program: on the seed analysis model
    (P = 7) LAPACK compiled 10-17% faster and ran as fast at 2 and at 100 chains."""
    if prec.shape[-1] < 4:
        return mvn_from_precision(rng, prec, lin)
    # the unrolled factorisation floors its pivots; here a relative jitter of 1e-7 on the
    # diagonal (far below Monte Carlo error) keeps nearly collinear float32 designs finite
    prec = prec + jnp.diag(1e-7 * jnp.abs(jnp.diagonal(prec)))
    l = jnp.linalg.cholesky(prec)
    mean = jax.scipy.linalg.cho_solve((l, True), lin)
    return mean + jax.scipy.linalg.solve_triangular(l, rng.normal(lin.shape), lower=True, trans=1)


def chi2(rng: Stream, df, shape=(), dtype=jnp.float32):
    """Chi-square variates with (possibly non-integer) degrees of freedom `df` > 0."""
    return 2.0 * stream.gamma(rng, jnp.asarray(df, dtype) / 2.0, shape, dtype)


def scaled_inv_chi2(rng: Stream, ss, df):
    """Draw SS / chi2(df): the posterior of a normal variance with sum of squares SS."""
    return ss / chi2(rng, df, jnp.shape(ss), jnp.result_type(ss))


def inverse_wishart(rng: Stream, scale, df):
    """Sigma ~ IW(scale, df) for a q x q `scale` (q static), by Bartlett's decomposition.

    If G = A A' ~ Wishart(I, df) with A lower-triangular (A_ii^2 ~ chi2(df - i), A_ij ~ N(0, 1)),
    and scale = C C', then C G^-1 C' ~ IW(scale, df); computed as M M' with M = C A^-T.
    """
    q = scale.shape[-1]
    if q == 1:
        return scale / chi2(rng, df, scale.shape, scale.dtype)
    dfs = df - jnp.arange(q, dtype=scale.dtype)
    diag = jnp.sqrt(chi2(rng, dfs, (q,), scale.dtype))
    rows, cols = jnp.tril_indices(q, -1)
    off = jnp.zeros((q, q), scale.dtype).at[rows, cols].set(rng.normal((q * (q - 1) // 2,)))
    a = off + jnp.diag(diag)
    c = linalg.cholesky(scale)
    a_inv = linalg.inv_lower(a)
    m = jnp.einsum("ik,jk->ij", c, a_inv)  # C A^-T: (C A^-T)_ij = sum_k C_ik (A^-1)_jk
    return m @ m.T
