"""A sweep's random numbers, drawn in one go and handed out in order.

Every `jax.random` call lowers, on CPU, to its own rolled threefry loop, and a Gibbs sweep made
dozens of them (a normal for beta, one for u, gamma rejection loops for every variance, ...):
measured on the seed analysis model, the random-number calls were 45% of the run time of a sweep
at 2 chains and half of its compile time. A sweep now draws all its standard normals and
uniforms in one call (`Stream.from_key`), and each update takes the next slice. Sizes
are static, and the code that takes the draws says how many it takes: `with_stream` runs it once
abstractly (`jax.eval_shape`) with a stream that only counts, then for real with a stream of
exactly that size (no hand-kept count to fall out of step with the draws).

Gamma variates use Marsaglia & Tsang's (2000) squeeze method with `GAMMA_TRIES` proposals from
the stream: the first accepted proposal is the draw. If all of them are rejected (probability
below 1e-5 per draw for shape >= 1), a while loop draws further proposals from the stream's own
key (split off before the pool is drawn) until one is accepted, so the draw is exact rejection
sampling whatever happens; that loop runs zero times in almost every sweep.
"""

from __future__ import annotations

from math import prod

import jax
import jax.numpy as jnp
import numpy as np

GAMMA_TRIES = 4
MAX_GAMMA_CALLS = 4096        # per stream: the fallback loops' keys are fold_in(key, i * this + call)


class Stream:
    """Standard normals and uniforms for one sweep, consumed front to back (at trace time)."""

    def __init__(self, normals, uniforms, key):
        self._normals, self._uniforms, self.key = normals, uniforms, key
        self.used_normal = 0
        self.used_uniform = 0
        self.fallbacks = 0            # gamma calls so far: each fallback loop gets its own key
        self._dtype = None if normals is None else normals.dtype   # a counter's: its zeros'

    @classmethod
    def counter(cls, dtype=jnp.float32) -> "Stream":
        """A stream that hands out zeros and counts what is asked of it (``with_stream``)."""
        out = cls(None, None, jax.random.PRNGKey(0))
        out._dtype = dtype
        return out

    @classmethod
    def from_key(cls, key, num_normal: int, num_uniform: int, dtype=jnp.float32) -> "Stream":
        """One `jax.random` call draws the whole stream, as `_variates` describes; a second
        key, split off first, is the gamma fallback loops' (`gamma`)."""
        k_pool, k_rest = jax.random.split(key)
        normals, uniforms = _variates(k_pool, max(num_normal, 1), max(num_uniform, 1), dtype)
        return cls(normals, uniforms, k_rest)

    def normal(self, shape=()):
        out, self.used_normal = self._take(self._normals, self.used_normal, shape, "normals")
        return out

    def uniform(self, shape=()):
        out, self.used_uniform = self._take(self._uniforms, self.used_uniform, shape, "uniforms")
        return out

    def _take(self, pool, used: int, shape, what: str):
        n = prod(shape)
        if pool is None:                                   # a counter
            return jnp.zeros(shape, self._dtype), used + n
        out = pool[used:used + n]
        if out.shape[0] != n:
            raise ValueError(f"random stream too short: {n} {what} asked for at {used}")
        return out.reshape(shape), used + n

    def check_used_up(self, num_normal: int, num_uniform: int) -> None:
        if (self.used_normal, self.used_uniform) != (num_normal, num_uniform):
            raise AssertionError(f"a sweep used {self.used_normal} normals and {self.used_uniform} "
                                 f"uniforms, but {num_normal} and {num_uniform} were drawn")


def with_stream(key, body, *args, dtype=jnp.float32):
    """body(stream, *args) with one stream drawn from `key` that holds exactly the normals and
    uniforms body takes: counted by an abstract pass of body (``jax.eval_shape``, which traces
    but compiles nothing) with ``Stream.counter``; the real pass then checks it used them all.
    `body` must take the same draws whatever the values of its arguments (shapes are static)."""
    counter = Stream.counter(dtype)
    jax.eval_shape(lambda *a: body(counter, *a), *args)
    counts = counter.used_normal, counter.used_uniform
    rng = Stream.from_key(key, *counts, dtype)
    out = body(rng, *args)
    rng.check_used_up(*counts)
    return out


def _variates(key, num_normal: int, num_uniform: int, dtype):
    """`num_normal` standard normals and `num_uniform` uniforms on (0, 1) from one call.

    v ~ U(-1, 1) (open at -1) gives a normal as sqrt(2) erfinv(v), jax.random.normal's own
    transform, and a uniform as (v + 1) / 2. One threefry call instead of one each: every call
    compiles to its own loop kernels on XLA:CPU, and in a simulation batch's program (generator,
    chain starts, sweeps) those kernels were 44% of the 14 s that LLVM spent compiling it."""
    lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    v = jax.random.uniform(key, (num_normal + num_uniform,), dtype, lo, 1.0)
    return (np.sqrt(2.0).astype(dtype) * jax.lax.erf_inv(v[:num_normal]),
            0.5 * (v[num_normal:] + 1.0))


def _mt_candidate(a1, x, u):
    """Marsaglia-Tsang proposal for Gamma(a1), a1 >= 1: (value, accepted)."""
    d = a1 - 1.0 / 3.0
    c = jax.lax.rsqrt(9.0 * d)
    v = (1.0 + c * x) ** 3
    ok = (v > 0) & (jnp.log(u) < 0.5 * x * x + d - d * v + d * jnp.log(jnp.where(v > 0, v, 1.0)))
    return d * v, ok


def gamma(stream: Stream, a, shape=(), dtype=jnp.float32):
    """Gamma(a, 1) variates of `shape` (a > 0, broadcastable to shape), exactly.

    Shapes below 1 use Gamma(a) = Gamma(a + 1) U^(1/a) (Marsaglia & Tsang 2000, sec. 6).
    """
    a = jnp.broadcast_to(jnp.asarray(a, dtype), shape)
    a1 = jnp.where(a < 1.0, a + 1.0, a)
    xs = stream.normal((GAMMA_TRIES,) + tuple(shape))
    us = stream.uniform((GAMMA_TRIES,) + tuple(shape))
    boost_u = 1.0 - stream.uniform(tuple(shape))      # in (0, 1]
    call = stream.fallbacks
    stream.fallbacks += 1
    if call >= MAX_GAMMA_CALLS:
        raise ValueError(f"more than {MAX_GAMMA_CALLS} gamma draws from one stream")
    value = jnp.zeros(shape, dtype)
    done = jnp.zeros(shape, bool)
    for i in range(GAMMA_TRIES):                       # the first accepted proposal wins
        cand, ok = _mt_candidate(a1, xs[i], 1.0 - us[i])
        value = jnp.where(done, value, cand)
        done = done | ok

    def more(state):
        return ~jnp.all(state[2])

    def propose(state):
        i, value, done = state
        # keys are made inside the loop, so the common case (no extra proposal) costs none;
        # one key per (call, proposal): `call` is below MAX_GAMMA_CALLS (checked at trace
        # time), and a loop would have to reject 2^20 proposals in a row to reuse one
        key = jax.random.fold_in(stream.key, i * MAX_GAMMA_CALLS + call)
        xs, us = _variates(key, prod(shape), prod(shape), dtype)
        cand, ok = _mt_candidate(a1, xs.reshape(shape), us.reshape(shape))
        return i + 1, jnp.where(done, value, cand), done | ok

    _, value, _ = jax.lax.while_loop(more, propose, (jnp.int32(0), value, done))
    return jnp.where(a < 1.0, value * boost_u ** (1.0 / a), value)
