"""Probability paths between a source and a target: ``x_t = a(t) x0 + b(t) x1 + c(t) z``.

Flow time ``t`` runs over ``[0, 1]``: ``t = 0`` is the source (noise, or any data set),
``t = 1`` the target. This is the flow-matching convention (Lipman et al. 2023,
Tong et al. 2024, Liu et al. 2023); the diffusion code's forward time ``s`` in
``[0, T]`` (``s = 0`` data) is translated at the boundary by :func:`diffusion_time`.

Given an endpoint pair ``(x0, x1)`` and ``z ~ N(0, I)``, the conditional path is
Gaussian with mean ``a x0 + b x1`` and standard deviation ``c``; its conditional
velocity (Tong et al. eq. 15, Albergo & Vanden-Eijnden's interpolant velocity) is

    u_t(x | x0, x1) = a'(t) x0 + b'(t) x1 + c'(t) z,

and the marginal velocity ``E[u_t | x_t = x]`` transports the source marginal to
the target marginal (Lipman et al. Thm. 1). The derivatives come from ``jax.jvp`` of
:meth:`ProbabilityPath.coefficients`, so a new path only states ``(a, b, c)``.

Example:
    >>> import jax.numpy as jnp
    >>> path = LinearPath()
    >>> xt, ut = path.sample(jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.array([0.25]),
    ...                      jnp.zeros((1, 2)))
    >>> xt.tolist(), ut.tolist()
    ([[0.25, 0.25]], [[1.0, 1.0]])
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
from flax import struct

from wgdiff._checks import check_positive
from wgdiff._types import Array, ScoreFn, VelocityFn
from wgdiff.sde import SDE, VPSDE, broadcast_time


def diffusion_time(sde: SDE, t: Array | float, eps: float) -> Array:
    """Diffusion time ``s = T - t (T - eps)`` of flow time ``t``: ``t = 0 -> T`` (noise),
    ``t = 1 -> eps`` (data)."""
    return sde.T - jnp.asarray(t) * (sde.T - eps)


class ProbabilityPath(abc.ABC):
    """Base class of conditional paths ``x_t = a(t) x0 + b(t) x1 + c(t) z``.

    Subclasses implement :meth:`coefficients`; :meth:`time_range` gives the interval
    training times are drawn from (where the rates are finite).
    """

    @abc.abstractmethod
    def coefficients(self, t: Array) -> tuple[Array, Array, Array]:
        """``(a(t), b(t), c(t))``, each the shape of ``t``; elementwise in ``t``."""

    def time_range(self) -> tuple[float, float]:
        """``(t_min, t_max)`` of the training times ``t ~ U(t_min, t_max)``."""
        return 0.0, 1.0

    def coefficients_and_rates(
        self, t: Array | float
    ) -> tuple[tuple[Array, Array, Array], tuple[Array, Array, Array]]:
        """``((a, b, c), (a', b', c'))`` at ``t`` (scalar or ``(n,)``)."""
        t = jnp.asarray(t)
        return jax.jvp(self.coefficients, (t,), (jnp.ones_like(t),))

    def sample(self, x0: Array, x1: Array, t: Array, z: Array) -> tuple[Array, Array]:
        """Point on the conditional path and its conditional velocity.

        Args:
            x0: ``(n, *event)`` source endpoints.
            x1: ``(n, *event)`` target endpoints (paired row by row with ``x0``).
            t: ``(n,)`` flow times.
            z: ``(n, *event)`` standard normal draws (ignored where ``c = 0``).

        Returns:
            ``(x_t, u_t)``, both ``(n, *event)``.
        """
        (a, b, c), (da, db, dc) = self.coefficients_and_rates(jnp.asarray(t, x0.dtype))
        a, b, c, da, db, dc = (broadcast_time(v, x0) for v in (a, b, c, da, db, dc))
        return a * x0 + b * x1 + c * z, da * x0 + db * x1 + dc * z


@struct.dataclass
class LinearPath(ProbabilityPath):
    """Straight line ``(1 - t) x0 + t x1 + sigma z`` (rectified flow, Liu et al. 2023;
    I-CFM / OT-CFM with ``sigma``, Tong et al. eq. 14 and 20); ``u = x1 - x0``."""

    sigma: float = 0.0

    def __post_init__(self):
        if not float(self.sigma) >= 0.0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma!r}")

    def coefficients(self, t: Array) -> tuple[Array, Array, Array]:
        return 1.0 - t, t, jnp.full_like(t, self.sigma)


@struct.dataclass
class CosinePath(ProbabilityPath):
    """Variance-preserving trigonometric path ``cos(pi t / 2) x0 + sin(pi t / 2) x1``.

    ``a^2 + b^2 = 1``, so a standard normal source and a unit-variance target keep
    unit variance along the path (Albergo & Vanden-Eijnden 2023's trigonometric
    interpolant, SiT's "GVP").
    """

    def coefficients(self, t: Array) -> tuple[Array, Array, Array]:
        angle = 0.5 * jnp.pi * t
        return jnp.cos(angle), jnp.sin(angle), jnp.zeros_like(t)


@struct.dataclass
class VPPath(ProbabilityPath):
    """The marginal path of a VP diffusion, read in flow time (Lipman et al. eq. 19).

    With ``(m(s), std(s))`` the SDE's marginal coefficients and ``s = T - t (T - eps)``
    (:func:`diffusion_time`), ``x_t = std(s) x0 + m(s) x1``: at ``t = 1`` the data
    are perturbed as at the diffusion's final time ``eps``; at ``t = 0`` they are
    ``m(T) x1 + std(T) x0`` (``m(T) = 0.0066`` for the default VP SDE). With a standard
    normal source its marginal velocity is the probability-flow velocity of the same
    SDE (:func:`probability_flow_velocity`), so DSM and flow matching share a path.
    Any ``VPSDE`` schedule works (``schedule="cosine"`` for the cosine VP path).
    """

    sde: VPSDE = VPSDE()
    eps: float = struct.field(pytree_node=False, default=1e-3)

    def __post_init__(self):
        if not isinstance(self.sde, VPSDE):
            raise TypeError(f"sde must be a wgdiff.sde.VPSDE, got {type(self.sde).__name__}")
        if not 0.0 < self.eps < self.sde.T:
            raise ValueError(f"eps must lie in (0, T) = (0, {self.sde.T}), got {self.eps!r}")

    def coefficients(self, t: Array) -> tuple[Array, Array, Array]:
        m, std = self.sde.marginal_coeffs(diffusion_time(self.sde, t, self.eps))
        return std, m, jnp.zeros_like(t)


@struct.dataclass
class SchrodingerBridgePath(ProbabilityPath):
    """Brownian bridge ``(1 - t) x0 + t x1 + sigma sqrt(t (1 - t)) z`` (Tong et al. eq. 23).

    With endpoints from the entropic OT plan at ``epsilon = 2 sigma^2``
    (:class:`~wgdiff.flows.couplings.SchrodingerBridgeCoupling`) this is the
    Schroedinger bridge of Brownian motion with diffusion ``sigma``. The rate of ``c``
    diverges at ``t = 0, 1``, so training times stay in ``[t_eps, 1 - t_eps]``.
    """

    sigma: float = 1.0
    t_eps: float = struct.field(pytree_node=False, default=1e-3)

    def __post_init__(self):
        check_positive(self.sigma, "sigma")
        if not 0.0 < self.t_eps < 0.5:
            raise ValueError(f"t_eps must lie in (0, 0.5), got {self.t_eps!r}")

    def coefficients(self, t: Array) -> tuple[Array, Array, Array]:
        return 1.0 - t, t, self.sigma * jnp.sqrt(t * (1.0 - t))

    def time_range(self) -> tuple[float, float]:
        return self.t_eps, 1.0 - self.t_eps


def probability_flow_velocity(sde: SDE, score_fn: ScoreFn, *, eps: float = 1e-3) -> VelocityFn:
    """A score model's probability-flow ODE as a flow-time velocity on ``[0, 1]``.

    ``u(x, t) = -(T - eps) v_pf(x, s(t))`` with ``v_pf = f - g^2 score / 2`` and
    ``s(t) = T - t (T - eps)``: integrating ``u`` from ``t = 0`` (prior) to ``t = 1``
    is integrating the probability-flow ODE (Song et al. eq. 13) from ``T`` to ``eps``,
    so kinetic energy, straightness and likelihood of DSM models come from the same
    code as for flows.

    Args:
        sde: forward SDE.
        score_fn: ``(x (n, *event), s) -> (n, *event)`` in diffusion time.
        eps: final diffusion time.

    Returns:
        ``velocity_fn(x, t)`` in flow time.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a wgdiff.sde.SDE, got {type(sde).__name__}")
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps!r}")

    def velocity_fn(x, t):
        s = diffusion_time(sde, jnp.asarray(t, x.dtype), eps)
        return -(sde.T - eps) * sde.probability_flow_drift(score_fn, x, s)

    return velocity_fn


__all__ = [
    "CosinePath",
    "LinearPath",
    "ProbabilityPath",
    "SchrodingerBridgePath",
    "VPPath",
    "diffusion_time",
    "probability_flow_velocity",
]
