"""Score-difference flow (Weber, TMLR): kernel, denoiser and density-ratio forms,
MMD-flow and SVGD baselines, particle flow (Alg. 1) and generator training (Alg. 2)."""

from wgdiff.sdflow.directions import (
    kernel_denoiser,
    median_heuristic_bandwidth,
    median_heuristic_sigma2,
    mmd_direction,
    score_difference,
    svgd_direction,
)
from wgdiff.sdflow.kernels import kernel_moments, squared_distances

__all__ = [
    "kernel_denoiser",
    "kernel_moments",
    "median_heuristic_bandwidth",
    "median_heuristic_sigma2",
    "mmd_direction",
    "score_difference",
    "squared_distances",
    "svgd_direction",
]
