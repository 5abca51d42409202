"""Validation and chunked pairwise reductions shared by the metrics.

Every pairwise computation here walks over row chunks of ``x`` with ``lax.map``
so that memory is ``O(chunk_size * m)`` rather than ``O(n * m)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff._checks import check_finite, check_ndim, check_positive_int

DEFAULT_CHUNK_SIZE = 1024


def check_points(x, name: str, min_points: int = 1):
    """Return ``x`` as an array after checking it is a finite ``(n, d)`` point set."""
    check_ndim(x, 2, name, "(n, d)")
    n, d = np.shape(x)
    if n < min_points or d < 1:
        raise ValueError(
            f"{name} must have shape (n, d) with n >= {min_points} and d >= 1, "
            f"got shape {np.shape(x)}"
        )
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {dtype}")
    check_finite(x, name)
    return x


def check_pair(x, y, x_name: str = "x", y_name: str = "y", min_points: int = 1):
    """Check two finite point sets ``(n, d)`` and ``(m, d)`` of the same dimension."""
    check_points(x, x_name, min_points)
    check_points(y, y_name, min_points)
    if np.shape(x)[1] != np.shape(y)[1]:
        raise ValueError(
            f"{x_name} (n, d) and {y_name} (m, d) must have the same d, got shapes "
            f"{np.shape(x)} and {np.shape(y)}"
        )


def to_float_array(x) -> jax.Array:
    """``x`` as a JAX array of the default float dtype (float32, or float64 under x64)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
    """Pairwise ``|x_i - y_j|^2``, shape ``(n, m)``, via the Gram form (one matmul).

    The Gram form ``|x|^2 + |y|^2 - 2 x.y`` cancels for nearby points, so it is
    clipped at 0; callers that need exact small distances recompute them directly.
    """
    sq = jnp.sum(x * x, axis=-1)[:, None] + jnp.sum(y * y, axis=-1)[None, :] - 2.0 * (x @ y.T)
    return jnp.maximum(sq, 0.0)


def map_row_chunks(fn: Callable, x: jax.Array, chunk_size: int):
    """Apply ``fn(x_chunk, rows)`` to row chunks of ``x`` and stack the results.

    ``x`` (n, ...) is zero-padded to a multiple of ``chunk_size``; ``rows``
    (chunk,) holds the global row indices of the chunk, so ``rows < n`` marks real
    rows. Returns the per-chunk outputs stacked on a leading axis of length
    ``ceil(n / chunk_size)``.
    """
    n = x.shape[0]
    chunk_size = min(chunk_size, n)
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    x_padded = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    chunks = x_padded.reshape((n_chunks, chunk_size) + x.shape[1:])
    rows = jnp.arange(n_chunks * chunk_size).reshape(n_chunks, chunk_size)
    return jax.lax.map(lambda args: fn(*args), (chunks, rows))


def check_chunk_size(chunk_size) -> int:
    return check_positive_int(chunk_size, "chunk_size")
