"""Validation shared by the metrics (the chunked reductions live in :mod:`wgdiff.geometry`)."""

from __future__ import annotations

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


def check_chunk_size(chunk_size) -> int:
    return check_positive_int(chunk_size, "chunk_size")
