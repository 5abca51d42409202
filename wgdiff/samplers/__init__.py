"""Reverse-time samplers: lax.scan loops and diffrax solvers; each reports its NFE."""

from wgdiff.samplers.diffrax_solvers import (
    KINDS,
    ODE_SOLVERS,
    SDE_SOLVERS,
    diffrax_solve,
    log_likelihood,
)
from wgdiff.samplers.scan import PF_METHODS, euler_maruyama, langevin, probability_flow

__all__ = [
    "KINDS",
    "ODE_SOLVERS",
    "PF_METHODS",
    "SDE_SOLVERS",
    "diffrax_solve",
    "euler_maruyama",
    "langevin",
    "log_likelihood",
    "probability_flow",
]
