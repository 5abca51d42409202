"""UNet: shapes, time conditioning, validation, and that it can be trained."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wgdiff.nets.unet import UNet, sinusoidal_embedding


def _perturbed(params, key, scale=0.1):
    """Move every parameter off its (partly zero) init so the output depends on all inputs."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    moved = [p + scale * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, moved)


@pytest.mark.parametrize(
    "net,shape",
    [
        (UNet(base_channels=8, channel_mult=(1, 2)), (3, 8, 8, 1)),
        (UNet(base_channels=8, channel_mult=(1, 2, 2), attention_resolutions=(8,)), (2, 16, 16, 3)),
        (UNet(base_channels=8, channel_mult=(1, 1), out_channels=2), (2, 8, 8, 3)),
    ],
)
def test_output_shape_and_scalar_time(net, shape):
    x = jax.random.normal(jax.random.key(0), shape)
    params = net.init(jax.random.key(1), x, jnp.zeros(shape[0]))
    out = net.apply(params, x, jnp.full((shape[0],), 0.3))
    expected_channels = net.out_channels or shape[-1]
    assert out.shape == shape[:-1] + (expected_channels,)
    # A scalar t means the same time for every example.
    np.testing.assert_allclose(net.apply(params, x, 0.3), out, atol=1e-6)


def test_time_and_input_conditioning():
    net = UNet(base_channels=8)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    params = _perturbed(net.init(jax.random.key(1), x, jnp.zeros(2)), jax.random.key(2))
    a, b = net.apply(params, x, 0.1), net.apply(params, x, 0.9)
    assert float(jnp.abs(a - b).max()) > 1e-3
    # Examples are processed independently (GroupNorm normalizes per example).
    single = net.apply(params, x[:1], 0.1)
    np.testing.assert_allclose(single, a[:1], atol=1e-5)
    # Attention mixes positions: a change in one pixel changes outputs far away.
    x2 = x.at[0, 0, 0, 0].add(1.0)
    diff = jnp.abs(net.apply(params, x2, 0.1) - a)[0, 7, 7, 0]
    assert float(diff) > 1e-6


def test_sinusoidal_embedding_matches_numpy():
    t = jnp.array([0.0, 0.25, 1.0])
    emb = np.asarray(sinusoidal_embedding(t, 6))
    freqs = np.exp(-np.log(10_000.0) * np.arange(3) / 3)
    args = 1000.0 * np.asarray(t)[:, None] * freqs[None]
    np.testing.assert_allclose(emb, np.concatenate([np.sin(args), np.cos(args)], -1), atol=1e-4)


def test_validation_errors():
    net = UNet(base_channels=8, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="divisible by 4"):
        net.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jnp.zeros(1))
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        net.init(jax.random.key(0), jnp.zeros((1, 8, 8)), jnp.zeros(1))
    with pytest.raises(ValueError, match="t must be"):
        net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), jnp.zeros(3))


def test_fits_a_time_dependent_target():
    """A few Adam steps must fit f(x, t) = -x t (loss drops by > 10x): the net is trainable."""
    net = UNet(base_channels=8)
    key = jax.random.key(0)
    x = jax.random.normal(key, (16, 8, 8, 1))
    t = jax.random.uniform(jax.random.key(1), (16,))
    target = -x * t[:, None, None, None]
    params = net.init(jax.random.key(2), x, t)
    opt = optax.adam(3e-3)
    state = opt.init(params)

    def loss(p):
        return jnp.mean((net.apply(p, x, t) - target) ** 2)

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s)
        return optax.apply_updates(p, updates), s, value

    first = float(loss(params))
    for _ in range(150):
        params, state, _ = step(params, state)
    assert float(loss(params)) < first / 10
