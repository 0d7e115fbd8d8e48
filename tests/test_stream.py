"""The sweep's random stream and its gamma sampler (kernels.stream)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaximpute.kernels.stream import GAMMA_TRIES, Stream, gamma

N = 20000


@pytest.mark.parametrize("shape", [0.3, 1.0, 2.5, 50.0, 3000.0])
@pytest.mark.slow
def test_gamma_matches_the_gamma_distribution(shape):
    def draw(k):
        return gamma(Stream.from_key(k, GAMMA_TRIES, GAMMA_TRIES + 1), shape)
    s = np.asarray(jax.vmap(draw)(jax.random.split(jax.random.key(1), N)), np.float64)
    # Kolmogorov-Smirnov at the 1e-4 level (a false failure once in 10,000 runs)
    assert stats.kstest(s, stats.gamma(shape).cdf).pvalue > 1e-4


def test_gamma_fallback_loop_is_exact_when_every_stream_proposal_is_rejected():
    """Normals of -100 make every Marsaglia-Tsang proposal from the stream invalid (v < 0), so
    each draw comes from the fallback loop's own proposals; it must still be Gamma(a)."""
    def draw(k):
        rng = Stream(jnp.full((GAMMA_TRIES,), -100.0), jnp.full((GAMMA_TRIES + 1,), 0.5), k)
        return gamma(rng, 2.5)
    s = np.asarray(jax.vmap(draw)(jax.random.split(jax.random.key(2), N)), np.float64)
    assert stats.kstest(s, stats.gamma(2.5).cdf).pvalue > 1e-4


def test_stream_hands_out_slices_in_order_and_checks_its_length():
    rng = Stream(jnp.arange(5.0), jnp.arange(3.0), jax.random.key(0))
    assert rng.normal((2,)).tolist() == [0.0, 1.0]
    assert rng.normal((3,)).tolist() == [2.0, 3.0, 4.0]
    assert rng.uniform((2,)).tolist() == [0.0, 1.0]
    with pytest.raises(AssertionError):
        rng.check_used_up(5, 3)
    with pytest.raises(ValueError, match="too short"):
        rng.normal((1,))
    rng.uniform(())
    rng.check_used_up(5, 3)


def test_stream_normals_and_uniforms_are_standard_and_independent():
    """One threefry call feeds both pools (kernels.stream._variates): the normals must be
    N(0, 1), the uniforms U(0, 1) strictly inside (0, 1), and the two uncorrelated (KS at the
    1e-4 level; a correlation's SE is 1/sqrt(N) = 0.007, so 0.04 is over 5 SEs)."""
    n = 20000
    rng = Stream.from_key(jax.random.key(5), n, n)
    z, u = np.asarray(rng.normal((n,)), np.float64), np.asarray(rng.uniform((n,)), np.float64)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert u.min() > 0.0 and u.max() < 1.0
    assert abs(np.corrcoef(z, u)[0, 1]) < 0.04


def test_with_stream_sizes_the_stream_by_what_the_body_takes():
    """`with_stream` counts the draws by an abstract pass of the body and then hands it the
    stream `Stream.from_key` draws for exactly those counts: the same numbers as a stream sized
    by hand (so a sweep's draws are those the hand-kept counts gave), its own gamma draws
    included, and inside jit and vmap alike."""
    from jaximpute.kernels.stream import with_stream

    def body(rng, x):
        a = rng.normal((3,)) + x
        g = gamma(rng, 2.5, (2,))
        return a, g, rng.uniform((4, 2))

    key = jax.random.key(9)
    x = jnp.arange(3.0)
    hand = Stream.from_key(key, 3 + 2 * GAMMA_TRIES, 8 + 2 * (GAMMA_TRIES + 1))
    want = body(hand, x)
    hand.check_used_up(3 + 2 * GAMMA_TRIES, 8 + 2 * (GAMMA_TRIES + 1))
    got = with_stream(key, body, x)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(np.asarray(w), np.asarray(g))
    batched = jax.jit(jax.vmap(lambda k: with_stream(k, body, x)))(jax.random.split(key, 2))
    assert batched[2].shape == (2, 4, 2)
