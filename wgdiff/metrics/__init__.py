"""Distances between point sets: W2 (certified exact / debiased Sinkhorn), sliced and
max-sliced W2, Bures W2 between Gaussians, MMD, CFD (Weber sec. 7.2), Frechet distance
on features, nearest-neighbour memorization ratio; exact and entropic OT couplings
(also inside ``jit``: :func:`exact_assignment`, :func:`sinkhorn_log_plan`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff import metrics
    >>> x = jax.random.normal(jax.random.key(0), (64, 2))
    >>> info = metrics.w2_with_info(x, x + 1.0)
    >>> info["method"], round(info["value"], 4)
    ('exact', 1.4142)
"""

from wgdiff.metrics.exact import LP_MAX_PAIRS, ExactOT, exact_assignment, exact_ot
from wgdiff.metrics.frechet import bures_w2, frechet_distance, gaussian_frechet_distance
from wgdiff.metrics.kernel import cfd, cfd_threshold, mmd, sample_cfd_frequencies
from wgdiff.metrics.neighbors import nearest_neighbor_distances, nearest_neighbor_ratio
from wgdiff.metrics.sinkhorn import (
    SinkhornResult,
    sample_sinkhorn_plan,
    sinkhorn,
    sinkhorn_log_plan,
)
from wgdiff.metrics.wasserstein import (
    EXACT_AUTO_MAX_PAIRS,
    max_sliced_w2,
    sliced_w2,
    w2,
    w2_with_info,
)

__all__ = [
    "EXACT_AUTO_MAX_PAIRS",
    "LP_MAX_PAIRS",
    "ExactOT",
    "SinkhornResult",
    "bures_w2",
    "cfd",
    "cfd_threshold",
    "exact_assignment",
    "exact_ot",
    "frechet_distance",
    "gaussian_frechet_distance",
    "max_sliced_w2",
    "mmd",
    "nearest_neighbor_distances",
    "nearest_neighbor_ratio",
    "sample_cfd_frequencies",
    "sample_sinkhorn_plan",
    "sinkhorn",
    "sinkhorn_log_plan",
    "sliced_w2",
    "w2",
    "w2_with_info",
]
