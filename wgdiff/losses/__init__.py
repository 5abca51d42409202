"""Training objectives: score matching (DSM; implicit score matching of any score function
by autodiff -- the WPO kernel model's closed-form ISM is ``wgdiff.wpo.ism_loss``), Ghimire's
projection objective, Vuong's Wasserstein-gradient-flow flow matching."""

from wgdiff.losses.flow_matching import (
    WGF_WEIGHTINGS,
    conditional_wgf_velocity,
    score_to_velocity,
    velocity_to_score,
    wgf_flow_matching_loss,
    wgf_flow_matching_objective,
)
from wgdiff.losses.projection import (
    ScoreAndProjection,
    StepConditioned,
    gaussian_optimal_projection,
    gaussian_projection_minimum,
    gaussian_projection_norm,
    ghimire_beta,
    joint_objective,
    predict_step,
    projection_loss,
    projection_terms,
    projection_weight,
    step_size,
)
from wgdiff.losses.projection_oracle import (
    Eq35Projection,
    OracleProjection,
    oracle_minimum,
    projection_relative_error,
)
from wgdiff.losses.score_matching import (
    DIVERGENCES,
    WEIGHTINGS,
    divergence,
    dsm_loss,
    dsm_objective,
    implicit_score_matching_loss,
)

__all__ = [
    "DIVERGENCES",
    "Eq35Projection",
    "OracleProjection",
    "ScoreAndProjection",
    "WEIGHTINGS",
    "WGF_WEIGHTINGS",
    "StepConditioned",
    "conditional_wgf_velocity",
    "divergence",
    "dsm_loss",
    "dsm_objective",
    "gaussian_optimal_projection",
    "gaussian_projection_minimum",
    "gaussian_projection_norm",
    "ghimire_beta",
    "implicit_score_matching_loss",
    "joint_objective",
    "oracle_minimum",
    "predict_step",
    "projection_loss",
    "projection_relative_error",
    "projection_terms",
    "projection_weight",
    "score_to_velocity",
    "step_size",
    "velocity_to_score",
    "wgf_flow_matching_loss",
    "wgf_flow_matching_objective",
]
