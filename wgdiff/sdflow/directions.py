"""Kernel flow directions: score difference (SD), MMD gradient flow and SVGD.

All three are kernel-weighted sums over point sets, computed by the chunked
streaming log-sum-exp of :func:`wgdiff.sdflow.kernels.kernel_moments`, so
memory stays O(z_chunk x point_chunk) however large the sets are.

Example:
    >>> import jax, jax.numpy as jnp
    >>> target = jax.random.normal(jax.random.key(0), (64, 2)) + 5.0
    >>> source = jax.random.normal(jax.random.key(1), (64, 2))
    >>> sd = score_difference(source, target, source, 1.0)
    >>> bool(jnp.all(sd.mean(0) > 0))  # points are pulled towards the target
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from wgdiff._checks import check_positive, check_positive_int
from wgdiff.sdflow.kernels import (
    DEFAULT_POINT_CHUNK,
    DEFAULT_Z_CHUNK,
    check_point_set,
    kernel_moments,
    squared_distances,
)

MEDIAN_MAX_POINTS = 2048
# Weber eq. 15: Delta z = (eta / 2) (D_p(z) - D_q(z)). Every SD flow in the package
# steps along SD_STEP_SCALE times the bracket :func:`score_difference` returns, for
# particles (Alg. 1) and generator targets (Alg. 2) alike, so ``y <- y + eta *
# SD_STEP_SCALE * (D_p - D_q)``; MMD (eq. 47) and SVGD (eq. 51) carry no such factor.
SD_STEP_SCALE = 0.5


def _check_sets(z, target, source):
    check_point_set(z, "z")
    d = z.shape[1]
    check_point_set(target, "target", d)
    check_point_set(source, "source", d)


def score_difference(
    z: jax.Array,
    target: jax.Array,
    source: jax.Array,
    sigma: ArrayLike,
    *,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> jax.Array:
    """Kernel score difference ``D_p(z) - D_q(z)``, the bracket of Weber eq. 15.

    ``D_p(z) = sum_i K(z, x_i) x_i / sum_i K(z, x_i)`` is the optimal denoiser
    of the target sample smoothed at noise level ``sigma`` (eq. 41), ``D_q``
    the same for the source sample, so the result equals ``sigma^2`` times the
    score difference of the smoothed proxies (eq. 14, 18).

    Args:
        z: (n, d) points where the direction is evaluated (noisy particles).
        target: (N, d) samples of the target p.
        source: (M, d) samples of the current source q_t (clean particles).
        sigma: scalar kernel bandwidth / proxy noise level.
        z_chunk, point_chunk: block sizes; memory is O(z_chunk * point_chunk).

    Returns:
        (n, d) array ``D_p(z) - D_q(z)``.
    """
    _check_sets(z, target, source)
    check_positive(sigma, "sigma")
    _, denoised_target = kernel_moments(
        z, target, target, sigma, z_chunk=z_chunk, point_chunk=point_chunk
    )
    _, denoised_source = kernel_moments(
        z, source, source, sigma, z_chunk=z_chunk, point_chunk=point_chunk
    )
    return denoised_target - denoised_source


def kernel_denoiser(
    z: jax.Array,
    points: jax.Array,
    sigma: ArrayLike,
    *,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> jax.Array:
    """Optimal denoiser of an empirical distribution, Weber eq. 41: ``E[x | z]`` (n, d)."""
    check_point_set(z, "z")
    check_point_set(points, "points", z.shape[1])
    check_positive(sigma, "sigma")
    _, mean = kernel_moments(z, points, points, sigma, z_chunk=z_chunk, point_chunk=point_chunk)
    return mean


def kernel_score(
    x: jax.Array,
    points: jax.Array,
    sigma: ArrayLike,
    *,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> jax.Array:
    """Score of a sample's Gaussian kernel density estimate, Weber eq. 13.

    ``grad_x log sum_i K_sigma(x, x_i) = (D(x) - x) / sigma^2`` with ``D`` the
    kernel denoiser of eq. 41: the score of the smoothed empirical distribution
    ``p * N(0, sigma^2 I)``, the sample-based target score SVGD needs when the
    target is known only through samples.

    Args:
        x: (n, d) points where the score is evaluated.
        points: (N, d) samples defining the density estimate.
        sigma: scalar kernel bandwidth of the estimate.
        z_chunk, point_chunk: block sizes; memory is O(z_chunk * point_chunk).

    Returns:
        (n, d) array ``(D(x) - x) / sigma^2``.
    """
    check_point_set(x, "x")
    check_point_set(points, "points", x.shape[1])
    check_positive(sigma, "sigma")
    _, mean = kernel_moments(x, points, points, sigma, z_chunk=z_chunk, point_chunk=point_chunk)
    x = jnp.asarray(x, mean.dtype)
    return (mean - x) / jnp.asarray(sigma, mean.dtype) ** 2


def mmd_direction(
    z: jax.Array,
    target: jax.Array,
    source: jax.Array,
    sigma: ArrayLike,
    *,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> jax.Array:
    """MMD gradient-flow direction, Weber eq. 47 (Arbel et al. 2019).

    ``1/N sum_i K(z, x_i) (x_i - z) / sigma^2 - 1/M sum_j K(z, y_j) (y_j - z) / sigma^2``,
    written as ``exp(lse_p - log N) (D_p(z) - z) / sigma^2`` minus the same for
    the source, which keeps it finite where every kernel value underflows.

    Args:
        z: (n, d) evaluation points.
        target: (N, d) target samples.
        source: (M, d) source samples.
        sigma: scalar kernel bandwidth.

    Returns:
        (n, d) array, the negative gradient of the MMD witness function (eq. 46).
    """
    _check_sets(z, target, source)
    check_positive(sigma, "sigma")
    kwargs = dict(z_chunk=z_chunk, point_chunk=point_chunk)
    lse_p, mean_p = kernel_moments(z, target, target, sigma, **kwargs)
    lse_q, mean_q = kernel_moments(z, source, source, sigma, **kwargs)
    z = jnp.asarray(z, mean_p.dtype)
    mass_p = jnp.exp(lse_p - math.log(target.shape[0]))[:, None]
    mass_q = jnp.exp(lse_q - math.log(source.shape[0]))[:, None]
    return (mass_p * (mean_p - z) - mass_q * (mean_q - z)) / jnp.asarray(sigma, z.dtype) ** 2


def _kth_smallest_nonnegative(values: jax.Array, k: int) -> jax.Array:
    """Exact ``k``-th smallest (0-based) of non-negative floats.

    Non-negative IEEE floats order like their bit patterns as integers, so a
    bisection on the integers (32 or 64 counting passes) finds the order
    statistic exactly; on CPU this is far faster than the sort behind ``jnp.median``.
    """
    int_dtype = jnp.int64 if values.dtype == jnp.float64 else jnp.int32
    n_bits = 64 if int_dtype == jnp.int64 else 32
    bits = jax.lax.bitcast_convert_type(values, int_dtype)

    def body(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits <= mid) >= k + 1
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    lo, _ = jax.lax.fori_loop(
        0, n_bits, body, (jnp.zeros((), int_dtype), jnp.max(bits).astype(int_dtype))
    )
    return jax.lax.bitcast_convert_type(lo, values.dtype)


def _median_squared_distance(x: jax.Array, max_points: int) -> jax.Array:
    """Median of the full ``n x n`` squared-distance matrix (diagonal zeros included,
    as in Liu & Wang's code), on an evenly strided subset of at most ``max_points``."""
    stride = -(-x.shape[0] // max_points)
    sub = x[::stride]
    values = squared_distances(sub, sub).reshape(-1)
    count = values.shape[0]
    upper = _kth_smallest_nonnegative(values, count // 2)
    if count % 2:
        return upper
    return 0.5 * (_kth_smallest_nonnegative(values, count // 2 - 1) + upper)


def median_heuristic_bandwidth(x: jax.Array, *, max_points: int = MEDIAN_MAX_POINTS) -> jax.Array:
    """SVGD bandwidth of Liu & Wang's code: ``h = sqrt(0.5 median(D^2) / log(n + 1))``.

    Used with the kernel ``exp(-|x - x'|^2 / (2 h^2))``. The median runs over the
    full squared-distance matrix including its zero diagonal, exactly as the
    reference implementation; for ``n > max_points`` it uses every k-th point.

    Args:
        x: (n, d) particles.

    Returns:
        scalar ``h``.
    """
    check_point_set(x, "x")
    check_positive_int(max_points, "max_points")
    med = _median_squared_distance(jnp.asarray(x, jnp.result_type(x, float)), max_points)
    return jnp.sqrt(0.5 * med / math.log(x.shape[0] + 1))


def median_heuristic_sigma2(x: jax.Array, *, max_points: int = MEDIAN_MAX_POINTS) -> jax.Array:
    """Weber's constant noise level (footnote 14): ``sigma^2 = 2 median(D^2) / log(N + 1)``.

    Args:
        x: (N, d) base (source) particles.

    Returns:
        scalar ``sigma^2`` for the kernel ``exp(-|z - x|^2 / (2 sigma^2))``.
    """
    check_point_set(x, "x")
    check_positive_int(max_points, "max_points")
    med = _median_squared_distance(jnp.asarray(x, jnp.result_type(x, float)), max_points)
    return 2.0 * med / math.log(x.shape[0] + 1)


def svgd_direction(
    x: jax.Array,
    target_score: Callable[[jax.Array], jax.Array],
    bandwidth: ArrayLike | None = None,
    *,
    kernel_points: jax.Array | None = None,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> jax.Array:
    """Stein variational gradient, Weber eq. 51 (Liu & Wang 2016, Alg. 1).

    ``phi(x_i) = 1/n sum_j [K(x_j, x_i) grad log p(x_j) + grad_{x_j} K(x_j, x_i)]`` with
    ``K(x, x') = exp(-|x - x'|^2 / (2 h^2))``; the repulsive term is
    ``sum_j K_ij (x_i - x_j) / h^2``.

    Args:
        x: (n, d) particles.
        target_score: callable ``(n, d) -> (n, d)``, the score ``grad log p``.
        bandwidth: scalar ``h``; ``None`` uses :func:`median_heuristic_bandwidth`
            of the kernel points.
        kernel_points: optional (b, d) particles the sum over ``j`` runs over (a
            minibatch, for stochastic SVGD); default ``x`` itself.

    Returns:
        (n, d) update direction at ``x``.
    """
    check_point_set(x, "x")
    if not callable(target_score):
        raise TypeError("target_score must be a callable (n, d) -> (n, d)")
    x = jnp.asarray(x, jnp.result_type(x, float))
    if kernel_points is None:
        kernel_points = x
    check_point_set(kernel_points, "kernel_points", x.shape[1])
    kernel_points = jnp.asarray(kernel_points, x.dtype)
    if bandwidth is None:
        h = median_heuristic_bandwidth(kernel_points)
    else:
        h = jnp.asarray(bandwidth, x.dtype)
    check_positive(h, "bandwidth")
    scores = jnp.asarray(target_score(kernel_points), x.dtype)
    if scores.shape != kernel_points.shape:
        raise ValueError(
            f"target_score(x) must have shape {kernel_points.shape}, got {scores.shape}"
        )
    b, d = kernel_points.shape
    features = jnp.concatenate([scores, kernel_points], axis=1)
    lse, mean = kernel_moments(
        x, kernel_points, features, h, z_chunk=z_chunk, point_chunk=point_chunk
    )
    mass = jnp.exp(lse - math.log(b))[:, None]
    mean_score, mean_x = mean[:, :d], mean[:, d:]
    return mass * (mean_score + (x - mean_x) / h**2)
