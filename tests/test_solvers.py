"""Solver engine: convergence orders on closed-form probability-flow maps, NFE, every
solver on every grid, bad input, no retracing.

Reference: for Gaussian data ``N(mu, v0)`` every marginal is Gaussian,
``p_t = N(m mu, m^2 v0 + s^2)``, and the probability-flow map from ``T`` to ``eps``
is the affine map matching the moments. Orders are measured in float64 so the
high-order errors stay above rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgdiff.samplers import (
    DDIM,
    DPMSolver,
    DPMSolverPP,
    Heun,
    KarrasGrid,
    LogSNRGrid,
    ProbabilityFlowEuler,
    ProbabilityFlowHeun,
    UniformGrid,
    UniPC,
    sample,
)
from wgdiff.sde import VESDE, VPSDE

MU, V0 = 1.5, 0.25
EPS = 1e-3


def gaussian_score(sde):
    def score(x, t):
        m, s = sde.marginal_coeffs(t)
        m, s = m[:, None], s[:, None]
        return -(x - m * MU) / (m**2 * V0 + s**2)

    return score


def exact_map(sde, x_T, t0, t1):
    def moments(t):
        m, s = sde.marginal_coeffs(jnp.asarray(t, jnp.float64))
        return m * MU, m**2 * V0 + s**2

    (a, va), (b, vb) = moments(t0), moments(t1)
    return b + (x_T - a) * jnp.sqrt(vb / va)


# (solver, grid class, expected global order). Multistep solvers: the order their
# first-order warm-up step allows; UniPC: predictor order + 1 (see the docstrings).
DETERMINISTIC = [
    (ProbabilityFlowEuler(), UniformGrid, 1),
    (ProbabilityFlowHeun(), UniformGrid, 2),
    (DDIM(), LogSNRGrid, 1),
    (Heun(), KarrasGrid, 2),
    (DPMSolver(order=1), LogSNRGrid, 1),
    (DPMSolver(order=2), LogSNRGrid, 2),
    (DPMSolver(order=3), LogSNRGrid, 3),
    (DPMSolverPP(order=2, multistep=False), LogSNRGrid, 2),
    (DPMSolverPP(order=3, multistep=False), LogSNRGrid, 3),
    (DPMSolverPP(order=2), LogSNRGrid, 2),
    (DPMSolverPP(order=3), LogSNRGrid, 2),
    (UniPC(order=2), LogSNRGrid, 3),
]
# The default run checks these; the slow run the whole matrix.
FAST = {("vp", 0), ("vp", 3), ("vp", 6), ("vp", 9), ("vp", 10), ("vp", 11), ("ve", 1), ("ve", 9)}
SDES = {"vp": VPSDE(beta_min=0.1, beta_max=10.0), "ve": VESDE(sigma_min=0.01, sigma_max=20.0)}


def _grid(cls, n):
    return cls(n) if cls is KarrasGrid else cls(n, eps=EPS)


def _order_cases():
    for sde_name in SDES:
        for i, (solver, grid_cls, order) in enumerate(DETERMINISTIC):
            marks = () if (sde_name, i) in FAST else (pytest.mark.slow,)
            yield pytest.param(
                sde_name, solver, grid_cls, order, marks=marks, id=f"{sde_name}-{solver!r}"
            )


@pytest.mark.parametrize("sde_name, solver, grid_cls, order", list(_order_cases()))
def test_convergence_order(sde_name, solver, grid_cls, order):
    """Local slope of log error vs log N between N = 40 and 80 (the asymptotic range:
    measured slopes at N = 16..128 settle there to within 0.15 of the order)."""
    sde = SDES[sde_name]
    assert solver.global_order == order
    steps = np.array([40, 80])
    errs = []
    with jax.enable_x64(True):
        score = gaussian_score(sde)
        for n in steps:
            grid = _grid(grid_cls, n)
            ts = grid.times(sde)
            x_T = MU * sde.marginal_coeffs(ts[0])[0] + jnp.linspace(-2.0, 2.0, 5)[:, None]
            res = sample(None, sde, score, (5, 1), solver, grid, x_init=x_T)
            assert res.nfe == solver.nfe(n) and res.stats["n_steps"] == n
            errs.append(float(jnp.max(jnp.abs(res.x - exact_map(sde, x_T, ts[0], ts[-1])))))
    slope = -np.log(errs[1] / errs[0]) / np.log(2.0)
    assert abs(slope - order) < 0.3, (errs, slope)
