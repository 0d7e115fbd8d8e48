"""Random draws used by the Gibbs sampler, each a pure function of an explicit key.

- `mvn_from_precision`: N(Q^-1 b, Q^-1) given the precision Q and the linear term b, through the
  Cholesky factor of Q (Rue & Held 2005, Gaussian Markov Random Fields, algorithm 2.5).
- `scaled_inv_chi2`: the conjugate draw for a variance, SS / chi2(df) (Gelman et al. 2013, BDA3,
  sec. 3.2).
- `inverse_wishart`: Sigma ~ IW(S, df) by the Bartlett decomposition of a Wishart(I, df) matrix
  (Bartlett 1933; Smith & Hocking 1972), with the parameterisation
  p(Sigma) ~ |Sigma|^-(df+q+1)/2 exp(-tr(S Sigma^-1)/2).

Chi-square variates come from `jax.random.gamma`, whose rejection loop accepts with probability
above 0.95, so under vmap the batch waits at most a few iterations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import linalg


def mvn_from_precision(key, prec, lin):
    """Draw x ~ N(prec^-1 lin, prec^-1); `prec` (..., n, n), `lin` (..., n)."""
    l = linalg.cholesky(prec)
    mean = linalg.chol_solve(l, lin)
    z = jax.random.normal(key, lin.shape, lin.dtype)
    return mean + linalg.solve_upper_t(l, z)


def chi2(key, df, shape=(), dtype=jnp.float32):
    """Chi-square variates with (possibly non-integer) degrees of freedom `df` > 0."""
    return 2.0 * jax.random.gamma(key, jnp.asarray(df, dtype) / 2.0, shape, dtype)


def scaled_inv_chi2(key, ss, df):
    """Draw SS / chi2(df): the posterior of a normal variance with sum of squares SS."""
    return ss / chi2(key, df, jnp.shape(ss), jnp.result_type(ss))


def inverse_wishart(key, scale, df):
    """Sigma ~ IW(scale, df) for a q x q `scale` (q static), by Bartlett's decomposition.

    If G = A A' ~ Wishart(I, df) with A lower-triangular (A_ii^2 ~ chi2(df - i), A_ij ~ N(0, 1)),
    and scale = C C', then C G^-1 C' ~ IW(scale, df); computed as M M' with M = C A^-T.
    """
    q = scale.shape[-1]
    if q == 1:
        return scale / chi2(key, df, scale.shape, scale.dtype)
    k_diag, k_off = jax.random.split(key)
    dfs = df - jnp.arange(q, dtype=scale.dtype)
    diag = jnp.sqrt(chi2(k_diag, dfs, (q,), scale.dtype))
    off = jax.random.normal(k_off, (q, q), scale.dtype)
    a = jnp.tril(off, -1) + jnp.diag(diag)
    c = linalg.cholesky(scale)
    a_inv = linalg.inv_lower(a)
    m = jnp.einsum("ik,jk->ij", c, a_inv)  # C A^-T: (C A^-T)_ij = sum_k C_ik (A^-1)_jk
    return m @ m.T
