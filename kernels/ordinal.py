"""Probit pieces for ordinal and binary variables (docs/design/model.md: ordinal blocks, steps 1
and 6).

An ordinal variable v with K categories has a latent z = mu + e, e ~ N(0, 1), and v = c_k when
tau_(k-1) < z <= tau_k, with tau_0 = -inf, tau_1 = 0 (identification: the intercept is free),
tau_K = +inf. Two updates live here, both vectorised and free of data-dependent loops:

- `truncated_normal`: z ~ N(mu, 1) restricted to (lo, hi] by the inverse CDF, computed on the
  side of the standard normal where the interval's probabilities are small (a flip by symmetry)
  and in log space, so that intervals far in a tail (mu - tau of 10, 20, 40 SD) still give finite
  draws inside the interval; Newton steps on log Phi polish the inverse.
- `threshold_step`: Cowles' (1996) Metropolis-Hastings update of the free thresholds
  tau_2..tau_(K-1), with z integrated out: each threshold is proposed from a normal centred at
  its current value, truncated to lie between the proposed threshold below and the current one
  above, and accepted with the probit likelihood ratio times the ratio of the truncation
  normalisers (Cowles, M. K. (1996). Accelerating Monte Carlo Markov chain convergence for
  cumulative-link generalized linear models. Statistics and Computing, 6, 101-111).

The probit blocks that use them are in kernels/blocks.py (`thresholds`, `latent_responses`); tests in
tests/test_ordinal.py and tests/test_ordinal_blocks.py.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtr, ndtri

_LOG_2PI = 1.8378770664093453


def _log_phi(x):
    return -0.5 * x * x - 0.5 * _LOG_2PI


def _log_ndtr_tail(x):
    """log Phi(x) for x <= -10 by its asymptotic series (relative error below 1e-8 there):
    Phi(x) = phi(x) / (-x) (1 - 1/x^2 + 3/x^4 - 15/x^6 + ...)."""
    r = 1.0 / (x * x)
    return _log_phi(x) - jnp.log(-x) + jnp.log1p(-r * (1.0 - 3.0 * r * (1.0 - 5.0 * r)))


def _inverse_log_ndtr(logp):
    """x with log Phi(x) = logp (logp <= log 0.5 here), stable down to logp of -1e4 and below.

    ndtri is accurate while p = exp(logp) is a normal float32 (logp > -80); below that, Newton
    steps on the asymptotic series of log Phi, which is exact to float32 there and costs no
    erfc, start from the solution of log Phi(x) ~ log phi(x) - log(-x).
    """
    p = jnp.exp(jnp.maximum(logp, -80.0))
    direct = ndtri(p)
    t = jnp.maximum(-2.0 * logp - _LOG_2PI, 1.0)
    x = -jnp.sqrt(jnp.maximum(t - jnp.log(t), 100.0))        # x <= -10 in the tail branch
    for _ in range(3):       # Newton on f(x) = log Phi(x) - logp, f'(x) = phi(x) / Phi(x)
        lc = _log_ndtr_tail(x)
        x = jnp.minimum(x - (lc - logp) / jnp.exp(_log_phi(x) - lc), -10.0)
    return jnp.where(logp > -80.0, direct, x)


def truncated_normal(u, mu, lo, hi):
    """z ~ N(mu, 1) truncated to (lo, hi), from uniforms `u` in [0, 1); lo/hi may be -/+inf.

    With a = lo - mu, b = hi - mu, the draw is Phi^-1(Phi(a) + u (Phi(b) - Phi(a))) on the lower
    side of 0 (an interval above 0 is mirrored to -b, -a and the draw negated), in log space:
    log p = log(Phi(a) (1 - u) + Phi(b) u).
    """
    a, b = lo - mu, hi - mu
    flip = a > -b              # the interval's mass lies mostly above 0: mirror it
    a2 = jnp.where(flip, -b, a)
    b2 = jnp.where(flip, -a, b)
    la, lb = log_ndtr(a2), log_ndtr(b2)
    u = jnp.clip(u, 0.0, 1.0 - jnp.finfo(mu.dtype).eps)
    log_u = jnp.log(jnp.maximum(u, jnp.finfo(mu.dtype).tiny))
    logp = jnp.logaddexp(la + jnp.log1p(-u), lb + log_u)
    x = _inverse_log_ndtr(jnp.minimum(logp, lb))
    x = jnp.clip(x, a2, b2)
    return mu + jnp.where(flip, -x, x)


def _standard_normal_within(u, a, b):
    """N(0, 1) truncated to (a, b) with a < 0 < b, by the plain inverse CDF: an interval that
    holds the mean has Phi(a) <= 1/2 <= Phi(b), so the tail-stable machinery of
    `truncated_normal` (and its compile time, for each threshold) is not needed. This is the
    case of every Cowles threshold proposal: its centre, the current threshold, lies between the
    proposed threshold below and the current one above."""
    pa, pb = ndtr(a), ndtr(b)
    eps = jnp.finfo(pa.dtype).eps
    q = jnp.clip(pa + u * (pb - pa), eps, 1.0 - eps)      # an open end (b = +inf) stays finite
    return jnp.clip(ndtri(q), a, b)


def category_log_prob(tau, cat, mu):
    """log P(v = cat | mu) = log(Phi(tau_cat - mu) - Phi(tau_(cat-1) - mu)); `tau` (K + 1,) with
    tau[0] = -inf, tau[K] = +inf, `cat` in 1..K (int). The difference is taken on the side of 0
    where both CDFs are small, so it keeps its relative precision down to probabilities of
    1e-37 (float32); below that it is floored there (rows so far out carry no information)."""
    hi = tau[cat] - mu
    lo = tau[cat - 1] - mu
    upper = lo > 0                         # both bounds above the mean: use the upper tail
    p = jnp.where(upper, ndtr(-lo) - ndtr(-hi), ndtr(hi) - ndtr(lo))
    return jnp.log(jnp.maximum(p, 1e-37))


def all_category_log_probs(tau, mu, k: int):
    """[log P(v = c | mu) for c = 1..K], K arrays shaped like mu: log(Phi(tau_c - mu) -
    Phi(tau_(c-1) - mu)) for every category at once, from the K - 1 CDFs Phi(tau_j - mu) and
    their complements Phi(mu - tau_j), each computed once and directly, so that the small one
    keeps its relative precision: a category's probability is the difference of the CDFs where
    they are below 1/2, else of the complements, so interior categories stay accurate far in
    the tails. A category whose probability underflows float32 gets log 1e-37, i.e. never drawn,
    unless all do, when the weights tie (mu beyond about 13 SD of every threshold).

    A list of K vectors, never stacked: XLA:CPU fused a stack of per-category columns (or slices
    of an (n, K + 1) CDF array) into loops that recomputed every CDF two or three times, and
    reductions over a short trailing category axis ran slowly; element-wise code over K vectors
    fuses into one vectorised loop (measured on the seed model's efficacy)."""
    cdf = [jnp.zeros_like(mu)] + [ndtr(tau[j] - mu) for j in range(1, k)] + [jnp.ones_like(mu)]
    upper = [jnp.ones_like(mu)] + [ndtr(mu - tau[j]) for j in range(1, k)] + [jnp.zeros_like(mu)]
    out = []
    for c in range(1, k + 1):
        # P = cdf_c - cdf_(c-1) = upper_(c-1) - upper_c; use whichever pair is small
        p = jnp.where(cdf[c - 1] > 0.5, upper[c - 1] - upper[c], cdf[c] - cdf[c - 1])
        out.append(jnp.log(jnp.maximum(p, 1e-37)))
    return out


def draw_category(u, log_weights):
    """Index 0..K-1 drawn with probabilities proportional to exp(log_weights) (a list of K
    arrays), by the inverse CDF at the uniforms `u`; written out over the K vectors."""
    top = log_weights[0]
    for lw in log_weights[1:]:
        top = jnp.maximum(top, lw)
    cum, total = [], jnp.zeros_like(top)
    for lw in log_weights:
        total = total + jnp.exp(lw - top)
        cum.append(total)
    target = u * total
    return sum((c < target).astype(jnp.int32) for c in cum[:-1])


def interval_of(tau, cat, k: int):
    """(tau[cat], tau[cat + 1]): the latent interval of 0-based categories `cat`, by selects
    over the K + 1 thresholds rather than a gather (cheap for K <= 20, and vectorised)."""
    lo, hi = jnp.full(cat.shape, tau[0]), jnp.full(cat.shape, tau[k])
    for j in range(1, k):
        lo = jnp.where(cat >= j, tau[j], lo)
    for j in range(k - 1, 0, -1):
        hi = jnp.where(cat < j, tau[j], hi)
    return lo, hi


def threshold_step(u_prop, u_acc, tau, cat, mu, w, scale):
    """One Cowles (1996) MH update of the free thresholds tau[2..K-1].

    `u_prop` (K - 2,) and `u_acc` () are uniforms; `tau` (K + 1,) current thresholds
    (tau[0] = -inf, tau[1] = 0, tau[K] = +inf); `cat` (N,) categories 1..K; `mu` (N,) linear
    predictors; `w` (N,) row weights (0 for padding); `scale` the proposal SD.
    Returns (tau, accepted, log-likelihood at the returned tau).
    """
    k = tau.shape[0] - 1
    new = tau
    log_q = 0.0
    for j in range(2, k):
        # propose tau'_j ~ N(tau_j, scale^2) truncated to (tau'_(j-1), tau_(j+1))
        lo, hi = new[j - 1], tau[j + 1]
        prop = tau[j] + scale * _standard_normal_within(u_prop[j - 2], (lo - tau[j]) / scale,
                                                        (hi - tau[j]) / scale)
        new = new.at[j].set(prop)
        # Hastings ratio of the truncation normalisers (Cowles 1996, eq. 4)
        log_q = (log_q
                 + jnp.log(ndtr((tau[j + 1] - tau[j]) / scale) - ndtr((new[j - 1] - tau[j]) / scale))
                 - jnp.log(ndtr((new[j + 1] - new[j]) / scale) - ndtr((tau[j - 1] - new[j]) / scale)))
    # (for j = k - 1, new[j + 1] is tau[k] = +inf, and tau[j - 1] on the last line is the current
    # value below: the reverse move proposes tau_j from tau'_j between tau_(j-1) and tau'_(j+1))
    ll_new = jnp.sum(w * category_log_prob(new, cat, mu))
    ll_old = jnp.sum(w * category_log_prob(tau, cat, mu))
    log_r = ll_new - ll_old + log_q
    accept = jnp.log(jnp.maximum(u_acc, jnp.finfo(mu.dtype).tiny)) < log_r
    accept = accept & jnp.isfinite(log_r)
    return jnp.where(accept, new, tau), accept, jnp.where(accept, ll_new, ll_old)


def ridge_step(z_prop, u_acc, tau, cat, mu, w, scale, loglik):
    """A Metropolis move along the intercept-threshold ridge: shift the intercept (so every
    linear predictor) and the free thresholds tau_2..tau_(K-1) by the same d ~ N(0, scale^2).

    With tau_1 = 0 fixed, the data pin down the differences tau_k - mu closely, so the intercept
    and the thresholds are strongly correlated a posteriori, and the Gibbs pair (thresholds | mu,
    mu | latent z) crawls along that ridge when a variable has many categories and many rows.
    The shift keeps every tau_k - mu for k >= 2 and changes only the category 1/2 boundary; the
    proposal is symmetric and the map a translation (Jacobian 1), so the acceptance ratio is the
    probit likelihood ratio, z integrated out (a generalised Gibbs move along a translation
    group; Liu & Sabatti 2000). `loglik` is the probit log-likelihood at (tau, mu), as
    `threshold_step` returns it. Returns (tau, mu, applied shift).
    """
    k = tau.shape[0] - 1
    d = scale * z_prop
    new_tau = tau.at[2:k].add(d)
    new_mu = mu + d
    log_r = jnp.sum(w * category_log_prob(new_tau, cat, new_mu)) - loglik
    accept = (jnp.log(jnp.maximum(u_acc, jnp.finfo(mu.dtype).tiny)) < log_r) & jnp.isfinite(log_r)
    d = jnp.where(accept, d, 0.0)
    return jnp.where(accept, new_tau, tau), mu + d, d
