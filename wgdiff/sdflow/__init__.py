"""Score-difference flow (Weber, TMLR): kernel, denoiser and density-ratio forms,
MMD-flow and SVGD baselines, particle flow (Alg. 1) and generator training (Alg. 2).

One concept per module: ``kernels`` (chunked log-sum-exp kernel sums),
``directions`` (SD eq. 15, MMD eq. 47, SVGD eq. 51), ``denoiser`` (eq. 17-19),
``density_ratio`` (eq. 35-38), ``particle_flow`` (Alg. 1), ``generator`` (Alg. 2),
``evaluation`` (CFD convergence threshold, nearest-neighbour analysis).
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
    kernel_denoiser,
    median_heuristic_bandwidth,
    median_heuristic_sigma2,
    mmd_direction,
    score_difference,
    svgd_direction,
)
from wgdiff.sdflow.generator import GeneratorFlow, GeneratorState, generator_flow, sd_flow_targets
from wgdiff.sdflow.kernels import kernel_moments, squared_distances
from wgdiff.sdflow.particle_flow import (
    METHODS,
    FlowConditions,
    FlowState,
    ParticleFlow,
    adagrad_step,
    cosine_sigma2,
    particle_flow,
    run_particle_flow,
    stack_conditions,
)

__all__ = [
    "METHODS",
    "DiscriminatorFlow",
    "DiscriminatorFlowState",
    "FlowConditions",
    "FlowState",
    "GeneratorFlow",
    "GeneratorState",
    "ParticleFlow",
    "adagrad_step",
    "cosine_sigma2",
    "density_ratio_direction",
    "denoiser_score_difference",
    "denoiser_update",
    "discriminator_flow",
    "discriminator_loss",
    "generator_flow",
    "kernel_denoiser",
    "kernel_moments",
    "median_heuristic_bandwidth",
    "median_heuristic_sigma2",
    "mmd_direction",
    "noise_level_time",
    "nonsaturating_direction",
    "particle_flow",
    "run_particle_flow",
    "score_difference",
    "sd_flow_targets",
    "squared_distances",
    "stack_conditions",
    "svgd_direction",
    "tweedie_denoiser",
]
