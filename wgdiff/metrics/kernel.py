"""Kernel and Fourier discrepancies: Gaussian-kernel MMD and Weber's characteristic
function distance (CFD), with the CFD convergence threshold of Weber sec. 7.2."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff._checks import check_positive, check_positive_int, is_concrete
from wgdiff._types import ArrayLike, PRNGKey
from wgdiff.geometry import map_row_chunks, squared_distances
from wgdiff.metrics._common import (
    DEFAULT_CHUNK_SIZE,
    check_chunk_size,
    check_pair,
    check_points,
    to_float_array,
)


def _check_scalar_positive(value, name: str):
    """A positive finite scalar; tracers pass through unchecked (shape aside)."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a positive scalar, got shape {np.shape(value)}")
    if not is_concrete(value):
        return value
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    check_positive(value, name)
    return float(value)


def _gaussian_kernel_sum(x, y, bandwidth, chunk_size):
    """sum_ij exp(-|x_i - y_j|^2 / (2 bandwidth^2)), O(chunk_size * m) memory.

    Every term lies in (0, 1], so a plain sum loses nothing that log-sum-exp would
    keep: underflowing terms are below float resolution of the total anyway.
    """
    n = x.shape[0]

    def chunk_sum(x_chunk, rows):
        kernel = jnp.exp(-squared_distances(x_chunk, y) / (2.0 * bandwidth**2))
        return jnp.sum(jnp.where((rows < n)[:, None], kernel, 0.0))

    return jnp.sum(map_row_chunks(chunk_sum, x, chunk_size))


@functools.partial(jax.jit, static_argnames=("unbiased", "chunk_size"))
def _mmd_squared(x, y, bandwidth, unbiased, chunk_size):
    n, m = x.shape[0], y.shape[0]
    sum_xx = _gaussian_kernel_sum(x, x, bandwidth, chunk_size)
    sum_yy = _gaussian_kernel_sum(y, y, bandwidth, chunk_size)
    sum_xy = _gaussian_kernel_sum(x, y, bandwidth, chunk_size)
    if unbiased:
        # drop the diagonal k(x_i, x_i) = 1 terms
        mean_xx = (sum_xx - n) / (n * (n - 1))
        mean_yy = (sum_yy - m) / (m * (m - 1))
    else:
        mean_xx = sum_xx / (n * n)
        mean_yy = sum_yy / (m * m)
    return mean_xx + mean_yy - 2.0 * sum_xy / (n * m)


def mmd(
    x: ArrayLike,
    y: ArrayLike,
    bandwidth: ArrayLike,
    *,
    unbiased: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """Maximum mean discrepancy with the Gaussian kernel exp(-|a - b|^2 / (2 bw^2)).

    By default the biased V-statistic
    ``MMD^2 = mean_ij k(x_i, x_j) + mean_ij k(y_i, y_j) - 2 mean_ij k(x_i, y_j)``
    (all pairs, diagonals included), which is the squared RKHS distance between the
    two empirical mean embeddings and so is >= 0 up to rounding. ``unbiased=True``
    gives the U-statistic (diagonals of the xx and yy sums removed), which can be
    negative. Returns ``sqrt(max(MMD^2, 0))``.

    Args:
        x: (n, d) points (n >= 2 when unbiased).
        y: (m, d) points (m >= 2 when unbiased).
        bandwidth: positive scalar kernel width.
        unbiased: U-statistic instead of the V-statistic.
        chunk_size: rows per chunk; memory is O(chunk_size * max(n, m)).

    Returns:
        Scalar MMD (the square root of the clipped MMD^2).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.zeros((3, 2))
        >>> float(mmd(x, x, 1.0))
        0.0
    """
    min_points = 2 if unbiased else 1
    check_pair(x, y, min_points=min_points)
    bandwidth = _check_scalar_positive(bandwidth, "bandwidth")
    chunk_size = check_chunk_size(chunk_size)
    squared = _mmd_squared(
        to_float_array(x), to_float_array(y), bandwidth, bool(unbiased), chunk_size
    )
    return jnp.sqrt(jnp.maximum(squared, 0.0))


def sample_cfd_frequencies(
    key: PRNGKey, dim: int, num_frequencies: int = 256, scale: float = 1.0
) -> jax.Array:
    """Frequencies omega_k ~ N(0, scale^2 I) used by :func:`cfd`, shape (K, d)."""
    dim = check_positive_int(dim, "dim")
    num_frequencies = check_positive_int(num_frequencies, "num_frequencies")
    scale = _check_scalar_positive(scale, "scale")
    return scale * jax.random.normal(key, (num_frequencies, dim), jnp.result_type(float))


def _empirical_cf(x, frequencies, chunk_size):
    """Real and imaginary parts of mean_i exp(i omega_k . x_i), each (K,)."""
    n = x.shape[0]

    def chunk_sum(x_chunk, rows):
        phase = x_chunk @ frequencies.T
        valid = (rows < n)[:, None]
        return (
            jnp.sum(jnp.where(valid, jnp.cos(phase), 0.0), axis=0),
            jnp.sum(jnp.where(valid, jnp.sin(phase), 0.0), axis=0),
        )

    real, imag = map_row_chunks(chunk_sum, x, chunk_size)
    return real.sum(axis=0) / n, imag.sum(axis=0) / n


@functools.partial(jax.jit, static_argnames="chunk_size")
def _cfd(x, y, frequencies, chunk_size):
    real_x, imag_x = _empirical_cf(x, frequencies, chunk_size)
    real_y, imag_y = _empirical_cf(y, frequencies, chunk_size)
    return jnp.mean(jnp.hypot(real_x - real_y, imag_x - imag_y))


def cfd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    key: PRNGKey,
    num_frequencies: int = 256,
    scale: float = 1.0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """Mean characteristic function distance (Weber sec. 7.2).

    ``D_CF = (1/K) sum_k | mean_i exp(i omega_k.x_i) - mean_j exp(i omega_k.y_j) |``
    with ``omega_k ~ N(0, scale^2 I)`` drawn from ``key`` (Weber: K = 256, a normal
    distribution; the scale is not given there, 1 here by default).

    Args:
        x: (n, d) points.
        y: (m, d) points.
        key: PRNG key for the frequencies (see :func:`sample_cfd_frequencies`).
        num_frequencies: K.
        scale: standard deviation of each frequency coordinate.
        chunk_size: rows per chunk; memory is O(chunk_size * K).

    Returns:
        Scalar CFD in [0, 2].

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.arange(6.0).reshape(3, 2)
        >>> abs(float(cfd(x, x, key=jax.random.key(0)))) < 1e-6
        True
    """
    check_pair(x, y)
    chunk_size = check_chunk_size(chunk_size)
    frequencies = sample_cfd_frequencies(key, np.shape(x)[1], num_frequencies, scale)
    x, y = to_float_array(x), to_float_array(y)
    dtype = jnp.result_type(x, y)
    return _cfd(x.astype(dtype), y.astype(dtype), frequencies.astype(dtype), chunk_size)


def cfd_threshold(
    key: PRNGKey,
    sample_fn: Callable,
    n: int,
    *,
    n_trials: int = 1000,
    num_frequencies: int = 256,
    scale: float = 1.0,
) -> float:
    """Weber's CFD convergence threshold: the max CFD between independent target draws.

    Weber sec. 7.2 records the maximum over 1000 trials of the CFD between two
    independent samples of the target; a run "converged" when its CFD falls below
    it. Each trial here draws two fresh samples of ``n`` points and fresh
    frequencies (the paper does not say whether the frequencies were fixed).

    Args:
        key: PRNG key.
        sample_fn: ``sample_fn(key, n) -> (n, d)`` draws from the target.
        n: points per sample (Weber: 1024).
        n_trials: number of independent pairs.
        num_frequencies: K of :func:`cfd`.
        scale: frequency scale of :func:`cfd`.

    Returns:
        The maximum CFD over the trials.
    """
    n = check_positive_int(n, "n")
    n_trials = check_positive_int(n_trials, "n_trials")
    if not callable(sample_fn):
        raise ValueError(f"sample_fn must be callable (key, n) -> (n, d), got {sample_fn!r}")
    largest = 0.0
    for trial_key in jax.random.split(key, n_trials):
        key_x, key_y, key_freq = jax.random.split(trial_key, 3)
        x = check_points(sample_fn(key_x, n), "sample_fn(key, n)")
        y = sample_fn(key_y, n)
        largest = max(
            largest,
            float(cfd(x, y, key=key_freq, num_frequencies=num_frequencies, scale=scale)),
        )
    return largest
