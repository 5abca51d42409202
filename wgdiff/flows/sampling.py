"""Pushing samples through a flow-time velocity with the solver engine.

A flow ``dx/dt = v(x, t)`` on ``t in [0, 1]`` (``0`` source, ``1`` target) is the
probability-flow ODE of ``wgdiff.sde.RectifiedFlowSDE`` read backwards (engine time
``1 - t``), with the model ``ScoreModel.from_velocity(v, sde, flow_time=True)``.
:func:`integrate_flow` hands it to ``wgdiff.samplers.sample`` (one loop for every
sampler in the library) from ``x_init = x0``: the source can be any distribution,
since the ODE solvers only evaluate the velocity. Exponential-integrator solvers
(``DPMSolver``, ``DPMSolverPP``, ``UniPC``, ``DDIM``) convert the velocity into
noise / data predictions with the straight path's coefficients, which is exact only
for a standard normal source.

Example:
    >>> import jax.numpy as jnp
    >>> out = integrate_flow(lambda x, t: jnp.ones_like(x), jnp.zeros((3, 2)), n_steps=4)
    >>> out.x[0].tolist(), out.nfe
    ([1.0, 1.0], 4)
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from wgdiff._checks import check_finite, check_positive_int
from wgdiff._types import Array, VelocityFn
from wgdiff.nets.parameterization import ScoreModel
from wgdiff.samplers import (
    ArrayGrid,
    ProbabilityFlowEuler,
    ProbabilityFlowHeun,
    Solver,
    UniformGrid,
    sample,
)
from wgdiff.samplers._common import as_pytree_callable
from wgdiff.sde import RectifiedFlowSDE

FLOW_METHODS = {"euler": ProbabilityFlowEuler(), "heun": ProbabilityFlowHeun()}
FLOW_SDE = RectifiedFlowSDE()


class FlowResult(NamedTuple):
    """``x (n, *event)`` at ``t = 1``; ``nfe`` velocity evaluations per sample; ``path``
    the states at the grid times ``(n_steps + 1, n, *event)`` from ``t = 0``, or None."""

    x: Array
    nfe: float
    path: Array | None


def flow_model(velocity_fn: VelocityFn) -> ScoreModel:
    """The engine's model of a flow-time velocity (on :data:`FLOW_SDE`)."""
    return ScoreModel.from_velocity(as_pytree_callable(velocity_fn), FLOW_SDE, flow_time=True)


def integrate_flow(
    velocity_fn: VelocityFn,
    x0: Array,
    *,
    n_steps: int | None,
    method: str | Solver = "euler",
    return_path: bool = False,
) -> FlowResult:
    """Push ``x0`` through ``dx/dt = v(x, t)`` from ``t = 0`` to ``t = 1``.

    Args:
        velocity_fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        x0: ``(n, *event)`` source points.
        n_steps: steps of the uniform grid; ``None`` for one adaptive interval (a
            ``wgdiff.samplers.Diffrax`` solver with ``rtol``/``atol``).
        method: ``"euler"`` (NFE = n_steps), ``"heun"`` (explicit trapezoid, NFE =
            2 n_steps) or any ``wgdiff.samplers.Solver``, e.g.
            ``Diffrax(diffrax.Tsit5(), rtol=1e-5, atol=1e-5)``.
        return_path: also return the states on the grid.

    Returns:
        :class:`FlowResult`.
    """
    x0 = jnp.asarray(x0, dtype=jnp.result_type(float))
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (n, *event), got shape {x0.shape}")
    check_finite(x0, "x0")
    if isinstance(method, str):
        if method not in FLOW_METHODS:
            raise ValueError(
                f"method must be one of {tuple(FLOW_METHODS)} or a Solver, got {method!r}"
            )
        solver = FLOW_METHODS[method]
    elif isinstance(method, Solver):
        solver = method
    else:
        raise TypeError(
            f"method must be a name or a wgdiff.samplers.Solver, got {type(method).__name__}"
        )
    if n_steps is None:
        grid = ArrayGrid((FLOW_SDE.T, 0.0))
    else:
        grid = UniformGrid(check_positive_int(n_steps, "n_steps"), eps=0.0)
    out = sample(
        None,
        FLOW_SDE,
        flow_model(velocity_fn),
        x0.shape,
        solver,
        grid,
        x_init=x0,
        return_path=return_path,
    )
    return FlowResult(out.x, out.nfe, out.stats["path"] if return_path else None)


__all__ = ["FLOW_METHODS", "FLOW_SDE", "FlowResult", "flow_model", "integrate_flow"]
