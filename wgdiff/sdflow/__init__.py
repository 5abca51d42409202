"""Score-difference flow (Weber, TMLR): kernel, denoiser and density-ratio forms,
MMD-flow and SVGD baselines, particle flow (Alg. 1) and generator training (Alg. 2).

One concept per module: ``kernels`` (chunked log-sum-exp kernel sums),
``directions`` (SD eq. 15, MMD eq. 47, SVGD eq. 51), ``denoiser`` (eq. 17-19),
``density_ratio`` (eq. 35-38), ``particle_flow`` (Alg. 1), ``generator`` (Alg. 2),
``flow`` (the one flow contract ``update(state, target) -> (state, info)`` the
three flows share, and :func:`run_flow`, its scan driver), ``monitor`` (the CFD of
sec. 7.2 inside a flow's scan, and the pair CFDs of its threshold).
"""

from wgdiff.sdflow.denoiser import (
    denoiser_score_difference,
    denoiser_update,
    noise_level_time,
    tweedie_denoiser,
)
from wgdiff.sdflow.density_ratio import (
    DiscriminatorFlow,
    DiscriminatorFlowState,
    density_ratio_direction,
    discriminator_flow,
    discriminator_loss,
    nonsaturating_direction,
)
from wgdiff.sdflow.directions import (
    SD_STEP_SCALE,
    kernel_denoiser,
    kernel_score,
    median_heuristic_bandwidth,
    median_heuristic_sigma2,
    mmd_direction,
    score_difference,
    svgd_direction,
)
from wgdiff.sdflow.flow import Flow, run_flow
from wgdiff.sdflow.generator import GeneratorFlow, GeneratorState, generator_flow, sd_flow_targets
from wgdiff.sdflow.kernels import kernel_moments, squared_distances
from wgdiff.sdflow.monitor import cfd_monitor, cfd_pair_values, empirical_cf, sincos
from wgdiff.sdflow.particle_flow import (
    BATCH_UPDATES,
    METHODS,
    SVGD_BANDWIDTHS,
    FlowConditions,
    FlowState,
    ParticleFlow,
    adagrad_step,
    cosine_sigma2,
    draw_batch_indices,
    particle_flow,
    stack_conditions,
)

__all__ = [
    "BATCH_UPDATES",
    "METHODS",
    "SD_STEP_SCALE",
    "SVGD_BANDWIDTHS",
    "DiscriminatorFlow",
    "DiscriminatorFlowState",
    "Flow",
    "FlowConditions",
    "FlowState",
    "GeneratorFlow",
    "GeneratorState",
    "ParticleFlow",
    "adagrad_step",
    "cfd_monitor",
    "cfd_pair_values",
    "cosine_sigma2",
    "density_ratio_direction",
    "denoiser_score_difference",
    "denoiser_update",
    "discriminator_flow",
    "discriminator_loss",
    "draw_batch_indices",
    "empirical_cf",
    "generator_flow",
    "kernel_denoiser",
    "kernel_moments",
    "kernel_score",
    "median_heuristic_bandwidth",
    "median_heuristic_sigma2",
    "mmd_direction",
    "noise_level_time",
    "nonsaturating_direction",
    "particle_flow",
    "run_flow",
    "score_difference",
    "sd_flow_targets",
    "sincos",
    "squared_distances",
    "stack_conditions",
    "svgd_direction",
    "tweedie_denoiser",
]
