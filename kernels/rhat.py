"""Convergence diagnostics on device: split-chain potential scale reduction (R-hat).

Split R-hat (Gelman et al. 2013, BDA3 sec. 11.4): each chain is halved, so that a drift within a
chain shows up as disagreement between halves and one chain suffices. With m half-chains of length
n, W is the mean within-half variance, B/n the variance of the half means, and
R-hat = sqrt(((n - 1)/n W + B/n) / W).

Rank-normalised split R-hat (Vehtari, Gelman, Simpson, Carpenter & Buerkner 2021, Bayesian
Analysis 16) replaces draws by normal scores of their pooled ranks before the same formula, which
makes it robust to heavy tails.

`burnin_table` computes Blimp's 20-row table: row r compares iterations floor(r B/40)+1 to r B/20.
All functions are vmappable over leading data-set axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri


def split_rhat(draws):
    """Split R-hat of `draws` (n, C, P) -> (P,); NaN where a parameter does not vary."""
    n = draws.shape[0] // 2
    if n < 2:
        return jnp.full(draws.shape[2:], jnp.nan, draws.dtype)
    halves = jnp.concatenate([draws[:n], draws[draws.shape[0] - n:]], axis=1)  # (n, 2C, P)
    # centre first: float32 sums of raw values lose digits when the mean dwarfs the spread
    halves = halves - jnp.mean(halves, axis=(0, 1))
    means = jnp.mean(halves, axis=0)
    w = jnp.mean(jnp.var(halves, axis=0, ddof=1), axis=0)
    b_over_n = jnp.var(means, axis=0, ddof=1)
    var_plus = (n - 1) / n * w + b_over_n
    return jnp.where(w > 0, jnp.sqrt(var_plus / jnp.where(w > 0, w, 1.0)), jnp.nan)


def rank_normalized_split_rhat(draws):
    """Rank-normalised split R-hat (bulk) of `draws` (n, C, P) -> (P,)."""
    n_tot = draws.shape[0] * draws.shape[1]
    flat = draws.reshape((n_tot,) + draws.shape[2:])
    ranks = jnp.argsort(jnp.argsort(flat, axis=0), axis=0).astype(draws.dtype) + 1.0
    z = ndtri((ranks - 0.375) / (n_tot + 0.25))
    return split_rhat(z.reshape(draws.shape))


def burnin_windows(burn: int, rows: int = 20):
    """Blimp's comparison windows: row r covers iterations floor(r*burn/(2*rows))+1 .. r*burn/rows
    (1-based, inclusive); returned as 0-based half-open (start, stop) pairs."""
    return [((r * burn) // (2 * rows), (r * burn) // rows) for r in range(1, rows + 1)]


def burnin_table(trace, rows: int = 20):
    """PSR of each parameter in each window of the burn-in trace (BURN, C, P) -> (rows, P).

    All windows at once: each window's split halves are rows of a constant 0/1 weight matrix
    over iterations, so the half means and (two-pass, centred) variances of every window are two
    weighted reductions of the whole trace. Equal to `split_rhat` window by window (tests), but
    one program of a few kernels: 20 separate windows compiled to some 300 kernels, about 2 s of
    XLA compile time in every run.
    """
    burn, c = trace.shape[0], trace.shape[1]
    lo, hi, n = [], [], []
    for a, b in burnin_windows(burn, rows):
        h = (b - a) // 2
        lo += [a, b - h]            # first and second half of the window
        hi += [a + h, b]
        n.append(h)
    t = np.arange(burn)
    wts = jnp.asarray(((t >= np.array(lo)[:, None]) & (t < np.array(hi)[:, None])).astype(np.float32),
                      trace.dtype)                                    # (2 rows, BURN)
    sizes = np.array(n)
    cnt = jnp.asarray(np.repeat(np.maximum(sizes, 1), 2).astype(np.float32), trace.dtype)[:, None, None]
    x = trace - jnp.mean(trace, axis=(0, 1))           # centred: float32 sums keep their digits
    means = jnp.einsum("wt,tcp->wcp", wts, x) / cnt                     # (2 rows, C, P)
    dev2 = jnp.einsum("wt,wtcp->wcp", wts, jnp.square(x[None] - means[:, None]))
    var = dev2 / jnp.maximum(cnt - 1.0, 1.0)
    halves = lambda a: a.reshape((rows, 2 * c) + a.shape[2:])           # (rows, 2C, P)
    hm, hv = halves(means), halves(var)
    w = jnp.mean(hv, axis=1)
    hm = hm - jnp.mean(hm, axis=1, keepdims=True)
    b_over_n = jnp.sum(jnp.square(hm), axis=1) / (2 * c - 1)
    nn = jnp.asarray(np.maximum(sizes, 1).astype(np.float32), trace.dtype)[:, None]
    var_plus = (nn - 1.0) / nn * w + b_over_n
    # a parameter that does not vary within the halves: its centred sums are rounding noise
    # (a few ulps of its size), not a variance; NaN, as split_rhat gives for w = 0
    tiny = jnp.square(8.0 * jnp.finfo(trace.dtype).eps * jnp.max(jnp.abs(trace), axis=(0, 1)))
    varies = w > tiny
    psr = jnp.where(varies, jnp.sqrt(var_plus / jnp.where(varies, w, 1.0)), jnp.nan)
    return jnp.where(jnp.asarray(sizes >= 2)[:, None], psr, jnp.nan)


def ess(draws):
    """Bulk effective sample size of `draws` (n, C, P) -> (P,), by Geyer's initial monotone
    sequence on the multi-chain autocorrelation (Vehtari et al. 2021, eq. 10-11; BDA3 sec. 11.5).
    Autocorrelations are computed by FFT."""
    n, c = draws.shape[0], draws.shape[1]
    x = draws - jnp.mean(draws, axis=0)
    m = 1 << (2 * n - 1).bit_length()
    f = jnp.fft.rfft(x, n=m, axis=0)
    acov = jnp.fft.irfft(f * jnp.conj(f), n=m, axis=0)[:n] / n            # (n, C, P)
    chain_var = acov[0] * n / (n - 1)
    w = jnp.mean(chain_var, axis=0)
    means = jnp.mean(draws, axis=0)
    b_over_n = jnp.var(means, axis=0, ddof=1) if c > 1 else jnp.zeros_like(w)
    var_plus = (n - 1) / n * w + b_over_n
    rho = 1.0 - (w - jnp.mean(acov, axis=1)) / jnp.where(var_plus > 0, var_plus, 1.0)  # (n, P)
    # pair sums Gamma_k = rho_2k + rho_2k+1, truncated at the first negative, made monotone
    k = n // 2
    pairs = rho[0:2 * k:2] + rho[1:2 * k:2]
    positive = jnp.cumprod(pairs > 0, axis=0).astype(draws.dtype)
    pairs = jax.lax.cummin(jnp.where(positive > 0, pairs, 0.0), axis=0)
    tau = -1.0 + 2.0 * jnp.sum(pairs * positive, axis=0)
    return jnp.where(var_plus > 0, n * c / jnp.maximum(tau, 1.0 / jnp.log10(n * c + 10.0)), jnp.nan)
