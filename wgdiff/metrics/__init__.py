"""Distances between point sets: W2 (exact / Sinkhorn), sliced W2, MMD, CFD (Weber
sec. 7.2), Frechet distance on features, nearest-neighbour memorization ratio.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff import metrics
    >>> x = jax.random.normal(jax.random.key(0), (64, 2))
    >>> info = metrics.w2_with_info(x, x + 1.0)
    >>> info["method"], round(info["value"], 4)
    ('exact', 1.4142)
"""

from wgdiff.metrics.frechet import frechet_distance, gaussian_frechet_distance
from wgdiff.metrics.kernel import cfd, cfd_threshold, mmd, sample_cfd_frequencies
from wgdiff.metrics.neighbors import nearest_neighbor_distances, nearest_neighbor_ratio
from wgdiff.metrics.wasserstein import (
    ASSIGNMENT_MAX_PAIRS,
    EXACT_AUTO_MAX_PAIRS,
    LP_MAX_PAIRS,
    sliced_w2,
    w2,
    w2_with_info,
)

__all__ = [
    "ASSIGNMENT_MAX_PAIRS",
    "EXACT_AUTO_MAX_PAIRS",
    "LP_MAX_PAIRS",
    "cfd",
    "cfd_threshold",
    "frechet_distance",
    "gaussian_frechet_distance",
    "mmd",
    "nearest_neighbor_distances",
    "nearest_neighbor_ratio",
    "sample_cfd_frequencies",
    "sliced_w2",
    "w2",
    "w2_with_info",
]
