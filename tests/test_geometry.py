"""wgdiff.geometry, the one streaming primitive, against float64 NumPy transcriptions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from wgdiff import geometry


@pytest.mark.parametrize("d", [3, 20])  # explicit differences, then the Gram form
def test_squared_distances_match_cdist(d):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, d)), rng.normal(size=(17, d))
    with jax.enable_x64(True):
        got = np.asarray(geometry.squared_distances(jnp.asarray(x), jnp.asarray(y)))
    assert np.allclose(got, cdist(x, y, "sqeuclidean"), rtol=1e-12, atol=1e-12)


def test_point_cloud_moments_match_numpy_with_ragged_chunks():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(53, 2)), rng.normal(size=(41, 2))
    h, features = rng.normal(size=41), rng.normal(size=(41, 3))
    logits = h[None, :] - 2.5 * cdist(x, y, "sqeuclidean")
    lse_ref = logsumexp(logits, axis=1)
    mean_ref = np.exp(logits - lse_ref[:, None]) @ features
    with jax.enable_x64(True):
        # 16 and 10 divide neither 53 nor 41: padded rows and masked columns
        geom = geometry.PointCloud(jnp.asarray(x), jnp.asarray(y), row_chunk=16, col_chunk=10)
        lse, mean = geom.moments(jnp.asarray(h), 2.5, jnp.asarray(features))
        lse_t = geom.transpose().lse(jnp.zeros(53), 2.5)
    assert np.allclose(lse, lse_ref, rtol=1e-12, atol=1e-12)
    assert np.allclose(mean, mean_ref, rtol=1e-10, atol=1e-12)
    assert np.allclose(lse_t, logsumexp(-2.5 * cdist(y, x, "sqeuclidean"), axis=1), atol=1e-12)


def test_point_cloud_far_apart_sets_do_not_underflow():
    # every kernel value exp(-scale |x - y|^2) underflows to 0 in float32 (1e8 in the
    # exponent); the online log-sum-exp still returns the exact log mass and the mean
    x = jnp.zeros((3, 1))
    y = jnp.array([[100.0], [101.0]])
    lse, mean = geometry.PointCloud(x, y, 2, 1).moments(jnp.zeros(2), 1e4, y)
    assert np.allclose(lse, -1e8, rtol=1e-6)
    assert np.allclose(mean, 100.0)


def test_stream_softmax_gradient_is_that_of_the_plain_formula():
    rng = np.random.default_rng(2)
    items = jnp.asarray(rng.normal(size=(23, 2)), jnp.float32)
    queries = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)

    def streamed(q):
        chunk_fn = lambda c: (-jnp.sum((q[:, None] - c[None]) ** 2, -1), c[None].repeat(5, 0))
        lse, mean = geometry.stream_softmax(chunk_fn, items, 5, chunk_size=7)
        return jnp.sum(lse) + jnp.sum(mean**2)

    def plain(q):
        logits = -jnp.sum((q[:, None] - items[None]) ** 2, -1)
        w = jax.nn.softmax(logits, axis=1)
        return jnp.sum(jax.nn.logsumexp(logits, axis=1)) + jnp.sum((w @ items) ** 2)

    value_and_grad = jax.jit(jax.value_and_grad(streamed))
    value, grad = value_and_grad(queries)
    assert np.allclose(value, plain(queries), rtol=1e-5)
    assert np.allclose(grad, jax.grad(plain)(queries), atol=1e-5)


def test_map_row_chunks_marks_padded_rows():
    x = jnp.arange(10.0)[:, None]
    out = geometry.map_row_chunks(lambda xc, rows: jnp.where(rows < 10, xc[:, 0], -1.0), x, 4)
    assert out.shape == (3, 4)
    assert out.reshape(-1).tolist() == list(range(10)) + [-1.0, -1.0]
    with pytest.raises(ValueError, match="chunk_size"):
        geometry.map_row_chunks(lambda xc, rows: xc, x, 0)
