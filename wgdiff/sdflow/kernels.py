"""Chunked Gaussian-kernel sums with online log-sum-exp accumulation.

Every kernel direction in :mod:`wgdiff.sdflow` reduces to, for each query
point ``z_i``, the log of the kernel mass ``log sum_j K(z_i, x_j)`` and the
kernel-weighted mean of some per-point features ``f_j``,
``sum_j K(z_i, x_j) f_j / sum_j K(z_i, x_j)``, with the Gaussian kernel
``K(z, x) = exp(-|z - x|^2 / (2 sigma^2))`` (Weber eq. 14).

:func:`kernel_moments` computes both with the streaming primitive
:class:`wgdiff.geometry.PointCloud`, never holding more than a
``z_chunk x point_chunk`` block of kernel values: an outer ``lax.map`` over
chunks of queries and an inner ``lax.scan`` over chunks of points that carries
a running maximum, a rescaled kernel mass and a rescaled weighted feature sum
(the streaming log-sum-exp trick). Weights therefore never overflow or
underflow to 0/0, even for a tiny bandwidth or point sets thousands of
bandwidths apart.

Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.zeros((1, 2)); x = jnp.array([[1.0, 0.0], [-1.0, 0.0]])
    >>> lse, mean = kernel_moments(z, x, x, 1.0)
    >>> float(lse[0]), mean.tolist()
    (0.193147..., [[0.0, 0.0]])
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from wgdiff._checks import check_finite, check_ndim, check_positive, check_positive_int
from wgdiff.geometry import PointCloud
from wgdiff.geometry import squared_distances as squared_distances  # sdflow's re-export

# Block sizes, from a score_difference microbenchmark (CPU, one process, 12 interleaved
# repeats, load ~9, 2026-12-01): every extra block of centres costs a step of the inner
# scan, and the scan is what is slow -- at N = M = 4096, 512 queries per block: 4096
# centres per block 853M kernel evaluations per CPU second, 2048 436M, 1024 141M; with
# one block of centres, 256 queries per block 963M (N = 4096) and 781M (N = 1024)
# against 890M and 540M with 512 (128: 999M / 756M; 64: 913M / 621M). The values do not
# depend on the blocking of the queries (max difference 0). Memory stays
# O(z_chunk * point_chunk): 4 MiB of float32 logits per block.
DEFAULT_Z_CHUNK = 256
DEFAULT_POINT_CHUNK = 4096


def kernel_moments(
    z: jax.Array,
    points: jax.Array,
    features: jax.Array,
    sigma: ArrayLike,
    *,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> tuple[jax.Array, jax.Array]:
    """Log kernel mass and kernel-weighted feature means, chunked.

    Args:
        z: (n, d) query points.
        points: (m, d) kernel centres.
        features: (m, f) per-centre features to average.
        sigma: scalar bandwidth of ``K(z, x) = exp(-|z - x|^2 / (2 sigma^2))``.
        z_chunk: queries per block.
        point_chunk: centres per block; memory is O(z_chunk * point_chunk).

    Returns:
        ``lse`` (n,) with ``lse_i = log sum_j K(z_i, x_j)`` and ``mean`` (n, f)
        with ``mean_i = sum_j K(z_i, x_j) f_j / sum_j K(z_i, x_j)``.
    """
    check_ndim(z, 2, "z", "(n, d)")
    check_ndim(points, 2, "points", "(m, d)")
    check_ndim(features, 2, "features", "(m, f)")
    if z.shape[1] != points.shape[1]:
        raise ValueError(
            f"z and points must share the event dimension d, got z {z.shape}, points {points.shape}"
        )
    if features.shape[0] != points.shape[0]:
        raise ValueError(
            f"features must have shape (m, f) with m = {points.shape[0]}, got {features.shape}"
        )
    if z.shape[0] == 0 or points.shape[0] == 0:
        raise ValueError(f"z and points must be non-empty, got {z.shape} and {points.shape}")
    check_positive_int(z_chunk, "z_chunk")
    check_positive_int(point_chunk, "point_chunk")
    check_positive(sigma, "sigma")
    dtype = jnp.result_type(z, points, features, float)
    z = jnp.asarray(z, dtype)
    points = jnp.asarray(points, dtype)
    features = jnp.asarray(features, dtype)
    inv_two_sigma2 = 0.5 / jnp.asarray(sigma, dtype) ** 2
    return _moments(z, points, features, inv_two_sigma2, z_chunk=z_chunk, point_chunk=point_chunk)


@functools.partial(jax.jit, static_argnames=("z_chunk", "point_chunk"))
def _moments(z, points, features, inv_two_sigma2, *, z_chunk, point_chunk):
    """The streamed reduction, compiled once per shape and chunking: eager calls of
    :func:`kernel_moments` reuse the program instead of retracing its scans each time
    (inside an outer ``jit`` it is inlined)."""
    geometry = PointCloud(z, points, row_chunk=z_chunk, col_chunk=point_chunk)
    return geometry.moments(jnp.zeros((), z.dtype), inv_two_sigma2, features)


def check_point_set(x: ArrayLike, name: str, d: int | None = None) -> None:
    """Eager shape/finiteness check for an ``(n, d)`` point set."""
    check_ndim(x, 2, name, "(n, d)" if d is None else f"(n, {d})")
    if d is not None and x.shape[1] != d:
        raise ValueError(f"{name} must have shape (n, {d}), got {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one point, got shape {x.shape}")
    check_finite(x, name)
