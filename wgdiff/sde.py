"""Forward diffusion processes dx = f(x, t) dt + g(t) dW on t in [0, T].

Every SDE here has an affine drift, so its marginal given x0 is Gaussian,
``x_t = m(t) x0 + s(t) eps``; the classes expose ``marginal_coeffs(t) = (m, s)``
and everything else (marginals, priors, reverse drift, the probability-flow /
Wasserstein-gradient-flow velocity) is written once on top of it.

Conventions (see DESIGN.md): forward time, ``t = 0`` is data and ``t = T``
noise. ``x`` has shape ``(n, *event)`` and ``t`` is a scalar or shape ``(n,)``.

Ghimire et al. write the VP SDE as ``dx = -beta x dt + sqrt(2 beta) dW`` in
reverse time ``tau = T - t``; that is ``VPSDE`` with beta -> 2 beta. We keep
Song et al.'s ``dx = -beta/2 x dt + sqrt(beta) dW``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> sde = VPSDE(beta_min=0.1, beta_max=20.0)
    >>> mean, std = sde.marginal(jnp.ones((2, 3)), 0.5)
    >>> mean.shape, std.shape
    ((2, 3), (2, 1))
"""

from __future__ import annotations

import abc
import math

import jax
import jax.numpy as jnp
from flax import struct

from wgdiff._checks import check_positive, check_shape_tuple, check_time
from wgdiff._types import Array, ArrayLike, PRNGKey, ScoreFn, Shape

SCHEDULES = ("linear", "cosine", "sigmoid")
_COSINE_OFFSET = 0.008


def broadcast_time(t: ArrayLike, x: Array) -> Array:
    """Reshape ``t`` (scalar or ``(n,)``) to broadcast against ``x`` of shape ``(n, *event)``."""
    t = jnp.asarray(t, dtype=x.dtype)
    if t.ndim == 0:
        return t
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


class SDE(abc.ABC):
    """Base class: an SDE with affine drift ``f(x, t) = -a(t) x`` and diffusion ``g(t)``.

    Concrete classes implement ``drift_coeff(t)`` (the ``a`` above),
    ``diffusion(t)`` and ``marginal_coeffs(t)``.
    """

    T: float
    #: Whether samplers may run down to ``t = 0`` (a flow path with finite velocity there).
    allows_zero_time = False

    @abc.abstractmethod
    def drift_coeff(self, t: ArrayLike) -> Array:
        """``a(t)`` in ``f(x, t) = -a(t) x``, same shape as ``t``."""

    @abc.abstractmethod
    def diffusion(self, t: ArrayLike) -> Array:
        """g(t), same shape as ``t``."""

    @abc.abstractmethod
    def marginal_coeffs(self, t: ArrayLike) -> tuple[Array, Array]:
        """``(m(t), s(t))`` with ``x_t | x0 ~ N(m x0, s^2 I)``."""

    def prior_std(self) -> Array:
        """Standard deviation of the Gaussian prior used at ``t = T``."""
        return self.marginal_coeffs(jnp.asarray(self.T))[1]

    # -- shared -----------------------------------------------------------
    def drift(self, x: Array, t: ArrayLike) -> Array:
        """f(x, t): ``x (n, *event)``, ``t`` scalar or ``(n,)`` -> ``(n, *event)``."""
        check_time(t, self.T)
        return -broadcast_time(self.drift_coeff(jnp.asarray(t, x.dtype)), x) * x

    def marginal(self, x0: ArrayLike, t: ArrayLike) -> tuple[Array, Array]:
        """Closed-form marginal of ``x_t`` given ``x0``.

        Args:
            x0: ``(n, *event)`` data.
            t: scalar or ``(n,)`` forward time in ``[0, T]``.

        Returns:
            ``(mean, std)`` with ``mean`` like ``x0`` and ``std`` broadcastable to it.
        """
        check_time(t, self.T)
        x0 = jnp.asarray(x0)
        m, s = self.marginal_coeffs(jnp.asarray(t, x0.dtype))
        return broadcast_time(m, x0) * x0, broadcast_time(s, x0) * jnp.ones_like(
            x0[(...,) + (slice(0, 1),) * (x0.ndim - 1)]
        )

    def marginal_sample(self, key: PRNGKey, x0: Array, t: ArrayLike) -> tuple[Array, Array]:
        """Draw ``x_t ~ p(x_t | x0)``; returns ``(x_t, noise)``."""
        mean, std = self.marginal(x0, t)
        noise = jax.random.normal(key, x0.shape, x0.dtype)
        return mean + std * noise, noise

    def prior_sample(self, key: PRNGKey, shape: Shape) -> Array:
        """``(n, *event)`` samples of the prior N(0, prior_std^2 I)."""
        shape = check_shape_tuple(shape)
        return self.prior_std() * jax.random.normal(key, shape)

    def prior_logp(self, z: ArrayLike) -> Array:
        """Log-density of the prior at ``z (n, *event)`` -> ``(n,)``."""
        z = jnp.asarray(z)
        s = self.prior_std()
        d = math.prod(z.shape[1:])
        sq = jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)
        return -0.5 * sq / s**2 - d * jnp.log(s) - 0.5 * d * math.log(2 * math.pi)

    def reverse_drift(self, score_fn: ScoreFn, x: Array, t: ArrayLike, alpha: float = 1.0) -> Array:
        """Forward-time drift of the reverse process with Ghimire's variance knob.

        The reverse process (run from ``T`` down to 0) is
        ``dx = [f - (1 + alpha)/2 g^2 s(x, t)] dt + sqrt(alpha) g dW``
        (Ghimire sec 6.2; Song et al. eq. 6 at ``alpha = 1``, the
        probability-flow ODE, Ghimire eq. 24, at ``alpha = 0``).

        Returns ``(n, *event)``.
        """
        g = broadcast_time(self.diffusion(jnp.asarray(t, x.dtype)), x)
        return self.drift(x, t) - 0.5 * (1.0 + alpha) * g**2 * score_fn(x, t)

    def reverse_diffusion(self, t: ArrayLike, alpha: float = 1.0) -> Array:
        """``sqrt(alpha) g(t)``, the noise scale of the reverse process."""
        return jnp.sqrt(alpha) * self.diffusion(t)

    def probability_flow_drift(self, score_fn: ScoreFn, x: Array, t: ArrayLike) -> Array:
        """Velocity ``f - g^2 s / 2`` of the probability-flow ODE (Ghimire eq. 24).

        This is the Wasserstein-gradient-flow velocity field transporting the
        marginals: ``d p_t / dt + div(p_t v) = 0``.
        """
        return self.reverse_drift(score_fn, x, t, alpha=0.0)

    def score_from_noise(self, noise_pred: Array, t: ArrayLike, x: Array) -> Array:
        """Score ``-eps / s(t)`` from a noise prediction ``eps``.

        The same conversion as ``ScoreModel.from_noise(...).score`` (both use
        ``wgdiff.nets.parameterization.convert``).
        """
        from wgdiff.nets.parameterization import convert

        return convert(self, "noise", "score", noise_pred, x, jnp.asarray(t, x.dtype))

    # -- log-SNR parameterization (solvers and time grids) -----------------------
    def marginal_coeffs_derivative(self, t: ArrayLike) -> tuple[Array, Array]:
        """``(m'(t), s'(t))``, by forward-mode autodiff of ``marginal_coeffs``."""
        t = jnp.asarray(t, dtype=jnp.result_type(float))
        return jax.jvp(self.marginal_coeffs, (t,), (jnp.ones_like(t),))[1]

    def log_snr(self, t: ArrayLike) -> Array:
        """``lambda(t) = log(m(t) / s(t))``, strictly decreasing in ``t`` (Lu et al. 2022 eq. 3)."""
        m, s = self.marginal_coeffs(jnp.asarray(t, dtype=jnp.result_type(float)))
        return jnp.log(m) - jnp.log(s)

    def time_at_log_snr(self, lam: ArrayLike) -> Array:
        """Inverse of :meth:`log_snr`: the ``t`` in ``[0, T]`` with ``lambda(t) = lam``.

        Generic version: 64 bisection steps on ``[0, T]`` (traceable; subclasses
        with a closed form override it). Values outside the SDE's log-SNR range
        clip to the end points.
        """
        lam = jnp.asarray(lam, dtype=jnp.result_type(float))
        lo, hi = jnp.zeros_like(lam), jnp.full_like(lam, self.T)

        def body(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            right = self.log_snr(mid) > lam
            return jnp.where(right, mid, lo), jnp.where(right, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 64, body, (lo, hi))
        return 0.5 * (lo + hi)


def _validate_common(T: float) -> None:
    if not isinstance(T, (int, float)) or T <= 0:
        raise ValueError(f"T must be a positive float, got {T!r}")


@struct.dataclass
class VPSDE(SDE):
    """Variance-preserving SDE ``dx = -beta(t)/2 x dt + sqrt(beta(t)) dW``.

    Schedules (``t`` in units of ``T``, ``u = t / T``):

    - ``"linear"``: ``beta = beta_min + (beta_max - beta_min) u``.
    - ``"sigmoid"``: ``beta = beta_min + (beta_max - beta_min) sigmoid(12 u - 6)``
      (the continuous version of Kwon et al.'s DDPM schedule).
    - ``"cosine"``: Nichol & Dhariwal's ``alpha_bar(u) = cos^2((u + s)/(1 + s) pi/2)``
      (up to normalization, ``s = 0.008``), with beta capped at ``beta_max``
      past the time where it would exceed it (the integral stays exact);
      ``beta_min`` is unused.

    The marginal is ``m = exp(-B/2)``, ``s^2 = 1 - exp(-B)`` with
    ``B(t) = int_0^t beta``, so ``p_T -> N(0, I)``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    schedule: str = struct.field(pytree_node=False, default="linear")
    T: float = struct.field(pytree_node=False, default=1.0)

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        _validate_common(self.T)
        check_positive(self.beta_max, "beta_max")
        if self.schedule != "cosine":
            check_positive(self.beta_min, "beta_min")

    def beta(self, t: ArrayLike) -> Array:
        u = t / self.T
        if self.schedule == "linear":
            return self.beta_min + (self.beta_max - self.beta_min) * u
        if self.schedule == "sigmoid":
            return self.beta_min + (self.beta_max - self.beta_min) * jax.nn.sigmoid(12 * u - 6)
        angle = (u + _COSINE_OFFSET) / (1 + _COSINE_OFFSET) * (jnp.pi / 2)
        analytic = (
            jnp.pi
            / (self.T * (1 + _COSINE_OFFSET))
            * jnp.tan(jnp.minimum(angle, self._cosine_cap_angle()))
        )
        return jnp.minimum(analytic, self.beta_max)

    def _cosine_cap_angle(self) -> Array:
        return jnp.arctan(self.beta_max * self.T * (1 + _COSINE_OFFSET) / jnp.pi)

    def integrated_beta(self, t: ArrayLike) -> Array:
        """``B(t) = int_0^t beta(s) ds`` in closed form."""
        u = t / self.T
        if self.schedule == "linear":
            return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * self.T * u**2
        if self.schedule == "sigmoid":
            sp = jax.nn.softplus
            return self.beta_min * t + (self.beta_max - self.beta_min) * self.T / 12 * (
                sp(12 * u - 6) - sp(-6.0)
            )
        start = _COSINE_OFFSET / (1 + _COSINE_OFFSET) * (jnp.pi / 2)
        cap = self._cosine_cap_angle()
        t_cap = self.T * (cap * 2 / jnp.pi * (1 + _COSINE_OFFSET) - _COSINE_OFFSET)
        angle = jnp.minimum((u + _COSINE_OFFSET) / (1 + _COSINE_OFFSET) * (jnp.pi / 2), cap)
        analytic = -2.0 * (jnp.log(jnp.cos(angle)) - jnp.log(jnp.cos(start)))
        return analytic + self.beta_max * jnp.maximum(t - t_cap, 0.0)

    def drift_coeff(self, t: ArrayLike) -> Array:
        return 0.5 * self.beta(t)

    def prior_std(self) -> Array:
        """N(0, I), the stationary law of the VP SDE."""
        return jnp.asarray(1.0)

    def diffusion(self, t: ArrayLike) -> Array:
        return jnp.sqrt(self.beta(jnp.asarray(t)))

    def marginal_coeffs(self, t: ArrayLike) -> tuple[Array, Array]:
        B = self.integrated_beta(jnp.asarray(t))
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def _time_at_integrated_beta(self, B: Array) -> Array:
        """Closed-form inverse of ``B(t)`` for the linear schedule (root of a quadratic)."""
        b0, db = self.beta_min, self.beta_max - self.beta_min
        t = 2.0 * B / (b0 + jnp.sqrt(b0**2 + 2.0 * db * B / self.T))
        return jnp.clip(t, 0.0, self.T)

    def time_at_log_snr(self, lam: ArrayLike) -> Array:
        """Inverse log-SNR; closed form for the linear schedule (Lu et al. 2022 app. D.4).

        ``lambda = -log(e^B - 1) / 2``, so ``B = softplus(-2 lambda)``.
        """
        if self.schedule != "linear":
            return super().time_at_log_snr(lam)
        lam = jnp.asarray(lam, dtype=jnp.result_type(float))
        return self._time_at_integrated_beta(jax.nn.softplus(-2.0 * lam))


@struct.dataclass
class SubVPSDE(VPSDE):
    """Sub-VP SDE ``dx = -beta/2 x dt + sqrt(beta (1 - e^{-2B})) dW`` (Song et al. 2021 eq. 11).

    Same drift and schedules as :class:`VPSDE`; the marginal is
    ``N(e^{-B/2} x0, (1 - e^{-B})^2 I)``, whose variance stays below the VP one
    at every ``t``. The prior is ``N(0, I)`` as in score_sde.
    """

    def diffusion(self, t: ArrayLike) -> Array:
        t = jnp.asarray(t)
        return jnp.sqrt(self.beta(t) * -jnp.expm1(-2.0 * self.integrated_beta(t)))

    def marginal_coeffs(self, t: ArrayLike) -> tuple[Array, Array]:
        B = self.integrated_beta(jnp.asarray(t))
        return jnp.exp(-0.5 * B), -jnp.expm1(-B)

    def time_at_log_snr(self, lam: ArrayLike) -> Array:
        """Closed form (linear schedule): ``u = e^{-B/2}`` solves ``u / (1 - u^2) = e^lam``."""
        if self.schedule != "linear":
            return SDE.time_at_log_snr(self, lam)
        lam = jnp.asarray(lam, dtype=jnp.result_type(float))
        e = jnp.exp(lam)
        u = 2.0 * e / (1.0 + jnp.sqrt(1.0 + 4.0 * e**2))
        return self._time_at_integrated_beta(-2.0 * jnp.log(u))


@struct.dataclass
class VESDE(SDE):
    """VE SDE ``dx = g(t) dW`` with ``sigma(t) = sigma_min (sigma_max/sigma_min)^(t/T)``.

    ``g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min) / T)``, so the marginal
    is exactly ``N(x0, (sigma(t)^2 - sigma_min^2) I)``.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = struct.field(pytree_node=False, default=1.0)

    def __post_init__(self) -> None:
        _validate_common(self.T)
        check_positive(self.sigma_min, "sigma_min")
        check_positive(self.sigma_max, "sigma_max")

    def sigma(self, t: ArrayLike) -> Array:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** (t / self.T)

    def drift_coeff(self, t: ArrayLike) -> Array:
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def diffusion(self, t: ArrayLike) -> Array:
        t = jnp.asarray(t)
        return self.sigma(t) * jnp.sqrt(2 * jnp.log(self.sigma_max / self.sigma_min) / self.T)

    def marginal_coeffs(self, t: ArrayLike) -> tuple[Array, Array]:
        t = jnp.asarray(t)
        # Clipped: at t = 0 rounding can make the difference slightly negative.
        return jnp.ones_like(t), jnp.sqrt(jnp.maximum(self.sigma(t) ** 2 - self.sigma_min**2, 0.0))

    def time_at_log_snr(self, lam: ArrayLike) -> Array:
        """Closed form: ``e^{-2 lam} = s^2 = sigma_min^2 (r^{2t/T} - 1)``, ``r = max/min``.

        (See the class docstring for ``sigma(t)``.)
        """
        lam = jnp.asarray(lam, dtype=jnp.result_type(float))
        ratio = jnp.exp(-2.0 * lam) / self.sigma_min**2
        t = self.T * jnp.log1p(ratio) / (2.0 * jnp.log(self.sigma_max / self.sigma_min))
        return jnp.clip(t, 0.0, self.T)


@struct.dataclass
class BrownianSDE(SDE):
    """Scaled Brownian motion ``dx = beta dW`` (Zhang et al.: the heat equation).

    The density solves ``d p/dt = beta^2/2 Laplacian p``; the marginal is
    ``N(x0, beta^2 t I)``.
    """

    beta: float = 1.0
    T: float = struct.field(pytree_node=False, default=1.0)

    def __post_init__(self) -> None:
        _validate_common(self.T)
        check_positive(self.beta, "beta")

    def drift_coeff(self, t: ArrayLike) -> Array:
        return jnp.zeros_like(jnp.asarray(t, dtype=float))

    def diffusion(self, t: ArrayLike) -> Array:
        return self.beta * jnp.ones_like(jnp.asarray(t, dtype=float))

    def marginal_coeffs(self, t: ArrayLike) -> tuple[Array, Array]:
        t = jnp.asarray(t, dtype=float)
        return jnp.ones_like(t), self.beta * jnp.sqrt(t)

    def time_at_log_snr(self, lam: ArrayLike) -> Array:
        """Closed form: ``s^2 = beta^2 t = e^{-2 lam}``."""
        lam = jnp.asarray(lam, dtype=jnp.result_type(float))
        return jnp.clip(jnp.exp(-2.0 * lam) / self.beta**2, 0.0, self.T)


@struct.dataclass
class RectifiedFlowSDE(SDE):
    """The straight (rectified-flow / conditional-OT) path ``x_t = (1 - t/T) x0 + (t/T) z``.

    The marginal-matching process with affine drift behind flow matching's
    linear path (data at ``t = 0``, ``N(0, I)`` at ``t = T``): ``m = 1 - t/T``,
    ``s = t/T``, ``f = -x / (T - t)``, ``g^2 = 2 t / (T (T - t))``. Drift and
    diffusion blow up at ``t = T``; the deterministic solvers only need ``m, s``
    and a velocity model (``ScoreModel.from_velocity``), so they run on the whole
    of ``[0, T]`` (``allows_zero_time``: grids may end at ``t = 0``, the data).
    Stochastic solvers need a grid that starts below ``T``.
    """

    T: float = struct.field(pytree_node=False, default=1.0)
    allows_zero_time = True

    def __post_init__(self) -> None:
        _validate_common(self.T)

    def drift_coeff(self, t: ArrayLike) -> Array:
        return 1.0 / (self.T - jnp.asarray(t))

    def diffusion(self, t: ArrayLike) -> Array:
        t = jnp.asarray(t)
        return jnp.sqrt(2.0 * t / (self.T * (self.T - t)))

    def marginal_coeffs(self, t: ArrayLike) -> tuple[Array, Array]:
        u = jnp.asarray(t) / self.T
        return 1.0 - u, u

    def prior_std(self) -> Array:
        return jnp.asarray(1.0)

    def time_at_log_snr(self, lam: ArrayLike) -> Array:
        """Closed form: ``(1 - u) / u = e^lam``, ``u = sigmoid(-lam)``."""
        lam = jnp.asarray(lam, dtype=jnp.result_type(float))
        return self.T * jax.nn.sigmoid(-lam)


__all__ = [
    "SDE",
    "SCHEDULES",
    "BrownianSDE",
    "RectifiedFlowSDE",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "broadcast_time",
]
