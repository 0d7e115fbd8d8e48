"""The sampler's shape (kernels.sampler, kernels.blocks): `build_sampler` gives pure `init` and
`step` functions; a block's update is a chain of small steps picked from the static structure
and the sampler options; options are passed in, never patched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaximpute.api import many_spec
from jaximpute.compile import prepare
from jaximpute.kernels import blocks as kb
from jaximpute.kernels.blocks import Phase
from jaximpute.kernels.sampler import build_sampler, sweep
from jaximpute.kernels.structure import SamplerOptions


@pytest.fixture(scope="module")
def model():
    """y on a random slope of x, w and an ordinal o (3 categories); y, x and o incomplete."""
    g = np.random.default_rng(2)
    cl = np.repeat(np.arange(12), 5).astype(float)
    x = g.normal(size=60)
    w = g.normal(size=60)
    y = 0.5 * x + 0.3 * w + g.normal(size=12)[cl.astype(int)] + g.normal(size=60)
    o = np.digitize(y + g.normal(size=60), [-0.5, 0.5]).astype(float)
    data = np.column_stack([cl, y, x, w, o])
    for c, p in ((1, 0.2), (2, 0.2), (4, 0.15)):
        data[g.random(60) < p, c] = np.nan
    spec, _ = many_spec(data[None], ["cluster", "y", "x", "w", "o"], "cluster ~ y:x w o",
                        1, 10, 1, 1, 0, (), ("o",), "y")
    st, _, d, _ = prepare(spec)
    return spec, st, jax.tree_util.tree_map(jnp.asarray, d)


def _names(st, b):
    return [f.__name__ for f in kb.block_steps(st, b)]


def test_each_block_chains_the_steps_its_structure_needs(model):
    spec, st, _ = model
    by_outcome = {info.outcome: b for b, info in enumerate(spec.block_info)}
    slopes = by_outcome["y"]
    assert _names(st, slopes) == ["mixed_regression", "covariance", "expand_slopes", "hold_slopes",
                                  "residual_variance"]
    assert _names(st, by_outcome["o"]) == ["thresholds", "tune_scales", "latent_responses",
                                           "mixed_regression", "covariance"]
    assert _names(st, by_outcome["x"]) == ["mixed_regression", "covariance", "residual_variance"]
    off = st._replace(options=SamplerOptions(expansion=False))
    assert "expand_slopes" not in _names(off, slopes)
    assert "hold_slopes" in _names(off, slopes)
    single = st._replace(num_clusters=st.num_clusters, blocks=tuple(
        b._replace(random=()) for b in st.blocks))
    assert _names(single, slopes) == ["fixed_regression", "residual_variance"]


@pytest.mark.slow
def test_options_are_passed_in_and_the_step_is_pure(model):
    """The same key gives the same step; passed options replace the structure's (the expansion
    move changes the random-slope block's draws, nothing patched)."""
    _, st, data = model
    sampler = build_sampler(st)
    state = sampler.init(jax.random.key(0), data)
    step = jax.jit(sampler.step)
    key = jax.random.key(1)
    a, info_a = step(key, state, data, Phase(False, True))
    again, _ = step(key, state, data, Phase(False, True))
    assert np.array_equal(a.x, again.x)
    # info: acceptance of the threshold and ridge moves for the 3-category block only
    kinds = [blk.categories for blk in st.blocks]
    for k, i in zip(kinds, info_a):
        assert (i is None) == (k < 3)
        if i is not None:
            assert i.shape == (2,) and i.dtype == bool
    off = SamplerOptions(expansion=False)
    plain, _ = jax.jit(build_sampler(st, off).step)(key, state, data)
    same, _ = jax.jit(lambda *a: sweep(*a[:1], st._replace(options=off), *a[1:]))(key, state, data)
    assert np.array_equal(plain.x, same.x)
    moved, _ = step(key, state, data)
    slopes = next(b for b, blk in enumerate(st.blocks) if blk.num_random > 1)
    assert not np.array_equal(moved.blocks[slopes].sigma, plain.blocks[slopes].sigma)
