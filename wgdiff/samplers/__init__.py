"""Reverse-time samplers: lax.scan loops, Ghimire's Predict-Project, diffrax solvers;
each reports its NFE."""

from wgdiff.samplers.diffrax_solvers import (
    KINDS,
    ODE_SOLVERS,
    SDE_SOLVERS,
    diffrax_solve,
    log_likelihood,
)
from wgdiff.samplers.predict_project import (
    PAPER_DELTA_MU,
    auto_delta_mu,
    predict_project,
    projection_norms,
)
from wgdiff.samplers.scan import PF_METHODS, euler_maruyama, langevin, probability_flow

__all__ = [
    "KINDS",
    "ODE_SOLVERS",
    "PAPER_DELTA_MU",
    "PF_METHODS",
    "SDE_SOLVERS",
    "auto_delta_mu",
    "diffrax_solve",
    "euler_maruyama",
    "langevin",
    "log_likelihood",
    "predict_project",
    "probability_flow",
    "projection_norms",
]
