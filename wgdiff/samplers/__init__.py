"""Reverse-time sampling: one loop (``sample``) over solver objects and time grids.

``sample(key, sde, model, shape, solver, grid, *, x_init=None) -> SampleResult(x, nfe, stats)``.
Solvers: ``EulerMaruyama``, ``ReverseDiffusion``, ``Ancestral``, ``PredictorCorrector`` with
``LangevinCorrector``, ``DDIM``, ``ProbabilityFlowEuler``, ``ProbabilityFlowHeun``, ``Heun``
(EDM), ``DPMSolver``, ``DPMSolverPP``, ``UniPC``, ``PredictProject`` (Ghimire Alg. 1),
``Diffrax``. Grids: ``UniformGrid``, ``QuadraticGrid``, ``LogSNRGrid``, ``KarrasGrid``,
``ArrayGrid``. The named samplers (``euler_maruyama``, ``probability_flow``,
``predict_project``, ``langevin``, ``diffrax_solve``) are wrappers over it; each
result reports its NFE.
"""

from wgdiff.nets.parameterization import ScoreModel
from wgdiff.samplers.base import SampleResult, Solver, Step, sample
from wgdiff.samplers.diffrax_solvers import (
    KINDS,
    ODE_SOLVERS,
    SDE_SOLVERS,
    Diffrax,
    diffrax_solve,
    log_likelihood,
)
from wgdiff.samplers.exponential import DDIM, DPMSolver, DPMSolverPP, UniPC
from wgdiff.samplers.grids import (
    ArrayGrid,
    KarrasGrid,
    LogSNRGrid,
    QuadraticGrid,
    TimeGrid,
    UniformGrid,
)
from wgdiff.samplers.ode import Heun, ProbabilityFlowEuler, ProbabilityFlowHeun
from wgdiff.samplers.predict_project import (
    PAPER_DELTA_MU,
    PredictProject,
    auto_delta_mu,
    predict_project,
    projection_norms,
)
from wgdiff.samplers.scan import PF_METHODS, euler_maruyama, langevin, probability_flow
from wgdiff.samplers.stochastic import (
    Ancestral,
    Corrector,
    EulerMaruyama,
    LangevinCorrector,
    PredictorCorrector,
    ReverseDiffusion,
)

__all__ = [
    "DDIM",
    "KINDS",
    "ODE_SOLVERS",
    "PAPER_DELTA_MU",
    "PF_METHODS",
    "SDE_SOLVERS",
    "Ancestral",
    "ArrayGrid",
    "Corrector",
    "DPMSolver",
    "DPMSolverPP",
    "Diffrax",
    "EulerMaruyama",
    "Heun",
    "KarrasGrid",
    "LangevinCorrector",
    "LogSNRGrid",
    "PredictProject",
    "PredictorCorrector",
    "ProbabilityFlowEuler",
    "ProbabilityFlowHeun",
    "QuadraticGrid",
    "ReverseDiffusion",
    "SampleResult",
    "ScoreModel",
    "Solver",
    "Step",
    "TimeGrid",
    "UniPC",
    "UniformGrid",
    "auto_delta_mu",
    "diffrax_solve",
    "euler_maruyama",
    "langevin",
    "log_likelihood",
    "predict_project",
    "probability_flow",
    "projection_norms",
    "sample",
]
