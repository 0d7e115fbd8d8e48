"""Small dense linear algebra, unrolled into elementwise code over any leading batch axes.

The sampler solves many tiny systems: one P x P system per chain for the fixed effects and one
q x q system per cluster and chain for the random effects. Batched LAPACK calls on such tiny
matrices are orders of magnitude slower on CPU than the same algebra written out elementwise
(docs/design/architecture.md, performance notes), because XLA fuses the unrolled scalar formulas
into a few vectorised loops over the batch. Matrix sizes are static Python ints, so the loops
below unroll at trace time; they are meant for sizes up to about a dozen.

All functions take arrays whose last two axes are the matrix and whose leading axes are a batch.
"""

from __future__ import annotations

import jax.numpy as jnp


def cholesky(a):
    """Lower Cholesky factor of symmetric positive-definite `a` (..., n, n), unrolled.

    A tiny jitter relative to the diagonal keeps float32 factorisations of nearly singular
    cross-product matrices finite; it is far below Monte Carlo error for the draws built on it.
    """
    n = a.shape[-1]
    rows = [[None] * n for _ in range(n)]
    for j in range(n):
        s = a[..., j, j] - sum((rows[j][k] ** 2 for k in range(j)), jnp.zeros_like(a[..., j, j]))
        d = jnp.sqrt(jnp.maximum(s, 1e-30 + 1e-7 * jnp.abs(a[..., j, j])))
        rows[j][j] = d
        for i in range(j + 1, n):
            s = a[..., i, j] - sum((rows[i][k] * rows[j][k] for k in range(j)), jnp.zeros_like(d))
            rows[i][j] = s / d
    zero = jnp.zeros_like(a[..., 0, 0])
    return jnp.stack(
        [jnp.stack([rows[i][j] if j <= i else zero for j in range(n)], -1) for i in range(n)], -2
    )


def solve_lower(l, b):
    """Solve L x = b for lower-triangular `l` (..., n, n) and vector `b` (..., n)."""
    n = l.shape[-1]
    x = []
    for i in range(n):
        s = b[..., i] - sum((l[..., i, k] * x[k] for k in range(i)), jnp.zeros_like(b[..., i]))
        x.append(s / l[..., i, i])
    return jnp.stack(x, -1)


def solve_upper_t(l, b):
    """Solve L' x = b for lower-triangular `l` (..., n, n) and vector `b` (..., n)."""
    n = l.shape[-1]
    x = [None] * n
    for i in reversed(range(n)):
        s = b[..., i] - sum((l[..., k, i] * x[k] for k in range(i + 1, n)), jnp.zeros_like(b[..., i]))
        x[i] = s / l[..., i, i]
    return jnp.stack(x, -1)


def chol_solve(l, b):
    """Solve (L L') x = b given the lower Cholesky factor `l`."""
    return solve_upper_t(l, solve_lower(l, b))


def inv_lower(l):
    """Inverse of lower-triangular `l` (..., n, n), itself lower-triangular."""
    n = l.shape[-1]
    cols = []
    for j in range(n):
        e = jnp.zeros(l.shape[:-1], l.dtype).at[..., j].set(1.0)
        cols.append(solve_lower(l, e))
    return jnp.stack(cols, -1)


def spd_inverse(a):
    """Inverse of a symmetric positive-definite matrix via its unrolled Cholesky factor."""
    li = inv_lower(cholesky(a))
    return jnp.einsum("...ki,...kj->...ij", li, li)
