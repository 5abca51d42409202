"""Frechet distance between Gaussian fits of two feature sets (the FID formula).

    FD = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}),

the squared W2 distance between N(mu_1, S_1) and N(mu_2, S_2). Computed in float64
with the symmetric form tr (S_1^{1/2} S_2 S_1^{1/2})^{1/2}, whose eigenvalues are
real and >= 0, instead of a general matrix square root of the non-symmetric S_1 S_2.
Which network supplies the features is the caller's business: FID only for Inception
features; wgdiff's offline default is "FD-digits".
"""

from __future__ import annotations

import numpy as np

from wgdiff._checks import check_finite
from wgdiff._types import ArrayLike
from wgdiff.metrics._common import check_pair


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric PSD matrix (negative round-off clipped)."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def _check_moments(mean, cov, mean_name: str, cov_name: str) -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mean.ndim != 1:
        raise ValueError(f"{mean_name} must have shape (d,), got shape {mean.shape}")
    d = mean.shape[0]
    if cov.shape != (d, d):
        raise ValueError(f"{cov_name} must have shape (d, d) = ({d}, {d}), got {cov.shape}")
    check_finite(mean, mean_name)
    check_finite(cov, cov_name)
    scale = max(np.abs(cov).max(), np.finfo(np.float64).tiny)
    if np.abs(cov - cov.T).max() > 1e-6 * scale:
        raise ValueError(f"{cov_name} must be symmetric")
    return mean, cov


def gaussian_frechet_distance(
    mean_1: ArrayLike, cov_1: ArrayLike, mean_2: ArrayLike, cov_2: ArrayLike
) -> float:
    """Frechet distance (squared W2) between N(mean_1, cov_1) and N(mean_2, cov_2).

    Args:
        mean_1: (d,) mean.
        cov_1: (d, d) symmetric PSD covariance.
        mean_2: (d,) mean.
        cov_2: (d, d) symmetric PSD covariance.

    Returns:
        |mean_1 - mean_2|^2 + tr(cov_1 + cov_2 - 2 (cov_1 cov_2)^{1/2}), a float >= 0.

    Example:
        >>> import numpy as np
        >>> gaussian_frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2))
        4.0
    """
    mean_1, cov_1 = _check_moments(mean_1, cov_1, "mean_1", "cov_1")
    mean_2, cov_2 = _check_moments(mean_2, cov_2, "mean_2", "cov_2")
    if mean_1.shape != mean_2.shape:
        raise ValueError(
            f"mean_1 and mean_2 must have the same shape (d,), got {mean_1.shape} "
            f"and {mean_2.shape}"
        )
    root_1 = _symmetric_sqrt(cov_1)
    middle = root_1 @ cov_2 @ root_1
    middle = 0.5 * (middle + middle.T)
    trace_cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(middle), 0.0, None)))
    value = np.sum((mean_1 - mean_2) ** 2) + np.trace(cov_1) + np.trace(cov_2) - 2 * trace_cross
    return float(max(value, 0.0))


def bures_w2(mean_1: ArrayLike, cov_1: ArrayLike, mean_2: ArrayLike, cov_2: ArrayLike) -> float:
    """W2 (the distance) between N(mean_1, cov_1) and N(mean_2, cov_2), in closed form.

    ``W2^2 = |mean_1 - mean_2|^2 + B^2(cov_1, cov_2)`` with the Bures metric
    ``B^2 = tr(cov_1 + cov_2 - 2 (cov_1^{1/2} cov_2 cov_1^{1/2})^{1/2})`` -- the square
    root of :func:`gaussian_frechet_distance`. A reference value for the empirical
    W2 estimators.

    Example:
        >>> import numpy as np
        >>> round(bures_w2(np.zeros(2), np.eye(2), np.zeros(2), np.diag([4.0, 0.25])), 4)
        1.118
    """
    return float(np.sqrt(gaussian_frechet_distance(mean_1, cov_1, mean_2, cov_2)))


def frechet_distance(fx: ArrayLike, fy: ArrayLike) -> float:
    """Frechet distance between Gaussian fits of two feature sets.

    Means and unbiased (ddof = 1) covariances are estimated in float64, as in the
    reference FID code, and passed to :func:`gaussian_frechet_distance`.

    Args:
        fx: (n, k) features, n >= 2.
        fy: (m, k) features, m >= 2.

    Returns:
        The Frechet distance (a squared-distance quantity, as FID), float >= 0.
    """
    check_pair(fx, fy, "fx", "fy", min_points=2)
    fx = np.asarray(fx, dtype=np.float64)
    fy = np.asarray(fy, dtype=np.float64)
    return gaussian_frechet_distance(
        fx.mean(axis=0),
        np.atleast_2d(np.cov(fx, rowvar=False)),
        fy.mean(axis=0),
        np.atleast_2d(np.cov(fy, rowvar=False)),
    )
