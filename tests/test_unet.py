"""UNet: shapes, time conditioning, validation, and that it can be trained."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wgdiff.nets import ScoreMLP, sinusoidal_embedding
from wgdiff.nets.unet import UNet


@pytest.mark.parametrize(
    "net,shape",
    [
        # The default configuration's shapes and scalar t are checked in
        # test_time_and_input_conditioning; its own compile here is slow-run only.
        pytest.param(
            UNet(base_channels=8, channel_mult=(1, 2)), (3, 8, 8, 1), marks=pytest.mark.slow
        ),
        pytest.param(  # three levels at 16x16x3: ~20 CPU-s of XLA compilation, slow run
            UNet(base_channels=8, channel_mult=(1, 2, 2), attention_resolutions=(8,)),
            (2, 16, 16, 3),
            marks=pytest.mark.slow,
        ),
        (UNet(base_channels=8, channel_mult=(1, 1), out_channels=2), (2, 8, 8, 3)),
    ],
)
def test_output_shape_and_scalar_time(net, shape):
    # Real ``init`` runs in the module's doctest (the same eager compile would cost
    # another ~15 CPU-s here); the parameter tree has the shapes ``init`` gives.
    x = jax.random.normal(jax.random.key(0), shape)
    params = _random_params(net, x, jax.random.key(1))
    apply = jax.jit(net.apply)
    out = apply(params, x, jnp.full((shape[0],), 0.3))
    expected_channels = net.out_channels or shape[-1]
    assert out.shape == shape[:-1] + (expected_channels,)
    # A scalar t means the same time for every example.
    np.testing.assert_allclose(apply(params, x, 0.3), out, atol=1e-6)


def _random_params(net, x, key, scale=0.1):
    """Parameters of ``net``'s shapes drawn at random, without running ``net.init``.

    Initialising a UNet costs 18-32 CPU-s on XLA CPU (its compile), all spent on values
    this test replaces anyway; ``jax.eval_shape`` gives the shapes for free. GroupNorm
    scales sit around 1, everything else around 0, so every input reaches the output.
    """
    shapes = jax.eval_shape(net.init, jax.random.key(0), x, jnp.zeros(x.shape[0]))
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    # One draw for all leaves: an eager draw per distinct shape costs a compile each.
    sizes = [int(np.prod(leaf.shape)) for _, leaf in leaves]
    flat = np.asarray(jax.random.normal(key, (sum(sizes),)))
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    drawn = [
        jnp.asarray(float(_keys(path)[-1] == "scale") + scale * piece.reshape(leaf.shape))
        for (path, leaf), piece in zip(leaves, pieces, strict=True)
    ]
    return jax.tree.unflatten(treedef, drawn)


def test_time_and_input_conditioning():
    net = UNet(base_channels=8)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    params = _random_params(net, x, jax.random.key(2))
    apply = jax.jit(net.apply)
    a, b = apply(params, x, 0.1), apply(params, x, 0.9)
    assert a.shape == x.shape
    # A scalar t means the same time for every example.
    np.testing.assert_allclose(apply(params, x, jnp.full((2,), 0.1)), a, atol=1e-6)
    assert float(jnp.abs(a - b).max()) > 1e-3
    # Examples are processed independently (GroupNorm normalizes per example).
    single = apply(params, x[:1], 0.1)
    np.testing.assert_allclose(single, a[:1], atol=1e-5)


def _keys(path):
    return [str(getattr(k, "key", k)) for k in path]


def _attention_blocks(params):
    """Names of the AttentionBlock submodules in a UNet's parameter tree."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return sorted({k for path, _ in leaves for k in _keys(path) if k.startswith("AttentionBlock")})


@pytest.mark.parametrize("resolutions, expected", [((4,), 4), ((8,), 4), ((), 1)])
def test_attention_blocks_are_where_asked_and_change_the_output(resolutions, expected):
    """Self-attention after each residual block at the chosen sizes (one down, two up per
    level) plus the bottleneck's; each one contributes: zeroing its output projection
    changes the net's output. Removing attention from UNet fails both checks."""
    net = UNet(base_channels=8, channel_mult=(1, 2), attention_resolutions=resolutions)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    params = _random_params(net, x, jax.random.key(2))
    blocks = _attention_blocks(params)
    assert len(blocks) == expected, blocks
    apply = jax.jit(net.apply)  # one compile: the silenced trees have the same shapes
    out = apply(params, x, 0.3)
    for block in blocks:
        # The attention's output projection (zero-initialised by init, drawn at random here).
        silenced = jax.tree_util.tree_map_with_path(
            lambda path, p, b=block: (
                jnp.zeros_like(p) if b in _keys(path) and _keys(path)[-2] == "out" else p
            ),
            params,
        )
        assert float(jnp.abs(apply(silenced, x, 0.3) - out).max()) > 1e-4, block


def test_sinusoidal_embedding_matches_numpy():
    """Frequencies geometric from 1 to 1/max_period (float64 NumPy transcription)."""
    t = np.array([0.0, 0.25, 1.0])
    for dim in (6, 7):
        emb = np.asarray(sinusoidal_embedding(jnp.asarray(t), dim, time_scale=10.0))
        half = dim // 2
        freqs = np.exp(-np.log(10_000.0) * np.arange(half) / (half - 1))
        args = 10.0 * t[:, None] * freqs[None]
        expected = np.concatenate([np.sin(args), np.cos(args)], -1)
        np.testing.assert_allclose(emb[:, : 2 * half], expected, atol=1e-5)
        assert emb.shape == (3, dim) and (dim % 2 == 0 or np.all(emb[:, -1] == 0))
    with pytest.raises(ValueError, match="dim must be at least 2"):
        sinusoidal_embedding(jnp.zeros(3), 1)


def test_one_time_embedding_for_mlp_and_unet():
    """Both nets feed the same features: changing the shared function changes both."""
    import wgdiff.nets.mlp as mlp_module
    import wgdiff.nets.unet as unet_module

    assert mlp_module.sinusoidal_embedding is unet_module.sinusoidal_embedding
    assert mlp_module.sinusoidal_embedding is sinusoidal_embedding
    model = ScoreMLP(features=(8,), embed_dim=6, time_scale=10.0)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
    x, t = jnp.ones((3, 2)), jnp.array([0.0, 0.25, 1.0])
    # The MLP's first layer sees [x, embedding(t)]: reproduce its first hidden layer.
    dense = params["params"]["MLP_0"]["Dense_0"]
    h = jnp.concatenate([x, sinusoidal_embedding(t, 6, time_scale=10.0)], -1)
    ref = model.activation(h @ dense["kernel"] + dense["bias"])
    inter = model.apply(params, x, t, capture_intermediates=True, mutable=["intermediates"])[1]
    hidden = inter["intermediates"]["MLP_0"]["Dense_0"]["__call__"][0]
    np.testing.assert_allclose(model.activation(hidden), ref, rtol=1e-5, atol=1e-6)


def test_validation_errors():
    net = UNet(base_channels=8, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="divisible by 4"):
        net.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jnp.zeros(1))
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        net.init(jax.random.key(0), jnp.zeros((1, 8, 8)), jnp.zeros(1))
    with pytest.raises(ValueError, match="t must be"):
        net.init(jax.random.key(0), jnp.zeros((2, 8, 8, 1)), jnp.zeros(3))


@pytest.mark.slow  # ~26 CPU-s compiling a UNet gradient on XLA CPU
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
