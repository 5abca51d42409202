r"""Probability-flow ODE solvers in ``t`` and EDM's Heun in ``sigma``.

The probability-flow ODE (Song et al. 2021 eq. 13; Ghimire eq. 24) is
``dx/dt = v(x, t) = f - g^2 s / 2``. :class:`ProbabilityFlowEuler` and
:class:`ProbabilityFlowHeun` step it in ``t``. :class:`Heun` follows Karras
et al. 2022 (EDM) and steps it in the scaled variables ``y = x / m``,
``sigma = s / m`` where it reads ``dy/dsigma = eps(x, t) = (y - D(y))/sigma``
(EDM eq. 4 with ``s(t) = 1, sigma(t) = t``, their recommended choice), with
optional stochastic churn (EDM Alg. 2).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from wgdiff._types import Array, PyTree
from wgdiff.nets.parameterization import ScoreModel
from wgdiff.samplers.base import Solver, Step, full_time


@struct.dataclass
class ProbabilityFlowEuler(Solver):
    """Euler on the probability-flow ODE in ``t``: ``x <- x - h v(x, t)``; global order 1."""

    order = 1
    nfe_per_step = 1

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        h = step.t - step.t_next
        return x - h * model.velocity(x, full_time(step.t, x)), state


@struct.dataclass
class ProbabilityFlowHeun(Solver):
    """Explicit trapezoid (Heun) on the probability-flow ODE in ``t``; global order 2, 2 NFE."""

    order = 2
    nfe_per_step = 2

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        h = step.t - step.t_next
        v = model.velocity(x, full_time(step.t, x))
        x_euler = x - h * v
        return x - 0.5 * h * (v + model.velocity(x_euler, full_time(step.t_next, x))), state


@struct.dataclass
class Heun(Solver):
    """EDM's Heun sampler (Karras et al. 2022 Alg. 1; with ``churn > 0`` Alg. 2).

    In ``y = x/m``, ``sigma = s/m``: ``d = eps(x, t)``, ``y' = y + (sigma' - sigma) d``,
    ``y_next = y + (sigma' - sigma)(d + d')/2`` with ``d' = eps(m' y', t')``. The grid
    ends at ``t_N > 0`` (``sigma_N > 0``), so every step takes the second-order
    correction: global order 2, 2 NFE per step.

    Churn (Alg. 2): at ``sigma`` in ``[s_tmin, s_tmax]`` first raise the noise level
    to ``sigma_hat = sigma (1 + gamma)``, ``gamma = min(churn / N, sqrt(2) - 1)``
    (capped at ``sigma(T)``), by adding ``sqrt(sigma_hat^2 - sigma^2) s_noise z``,
    then take the Heun step from ``sigma_hat``. ``churn > 0`` makes it stochastic.

    Needs a finite ``sigma = s/m`` on the whole grid: not for ``RectifiedFlowSDE`` down from
    ``t = T`` (``m(T) = 0``); use :class:`ProbabilityFlowHeun` there.
    """

    churn: float = struct.field(pytree_node=False, default=0.0)
    s_tmin: float = struct.field(pytree_node=False, default=0.0)
    s_tmax: float = struct.field(pytree_node=False, default=math.inf)
    s_noise: float = struct.field(pytree_node=False, default=1.0)
    order = 2
    nfe_per_step = 2

    def __post_init__(self) -> None:
        if not float(self.churn) >= 0.0:
            raise ValueError(f"churn must be >= 0, got {self.churn!r}")
        if not float(self.s_noise) >= 0.0:
            raise ValueError(f"s_noise must be >= 0, got {self.s_noise!r}")

    @property
    def stochastic(self) -> bool:
        return self.churn > 0

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        sde = model.sde
        m, s = sde.marginal_coeffs(step.t)
        m_n, s_n = sde.marginal_coeffs(step.t_next)
        sigma, sigma_n = s / m, s_n / m_n
        y = x / m
        t_hat, sigma_hat, m_hat = step.t, sigma, m
        if self.stochastic:
            in_range = (sigma >= self.s_tmin) & (sigma <= self.s_tmax)
            gamma = jnp.where(in_range, min(self.churn / step.n_steps, math.sqrt(2.0) - 1.0), 0.0)
            m_T, s_T = sde.marginal_coeffs(jnp.asarray(sde.T, x.dtype))
            sigma_hat = jnp.minimum(sigma * (1.0 + gamma), s_T / m_T)
            t_hat = jnp.where(sigma_hat > sigma, sde.time_at_log_snr(-jnp.log(sigma_hat)), step.t)
            m_hat = sde.marginal_coeffs(t_hat)[0]
            z = jax.random.normal(step.key, x.shape, x.dtype)
            y = y + jnp.sqrt(jnp.maximum(sigma_hat**2 - sigma**2, 0.0)) * self.s_noise * z
        d = model.noise(m_hat * y, full_time(t_hat, x))
        y_euler = y + (sigma_n - sigma_hat) * d
        d_next = model.noise(m_n * y_euler, full_time(step.t_next, x))
        return m_n * (y + 0.5 * (sigma_n - sigma_hat) * (d + d_next)), state


__all__ = ["Heun", "ProbabilityFlowEuler", "ProbabilityFlowHeun"]
