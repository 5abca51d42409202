r"""Stochastic reverse-time solvers: Euler-Maruyama with Ghimire's alpha, score_sde's
predictor-corrector (reverse diffusion + Langevin), DDPM ancestral sampling.

For a step ``t -> t_next`` write the forward transition of the SDE as
``x_t = a x_next + b z`` with ``a = m_t / m_next`` and ``b^2 = s_t^2 - a^2 s_next^2``
(exact for the affine-drift SDEs of ``wgdiff.sde``; for the VP SDE ``a = sqrt(1 - beta_i)``,
``b^2 = beta_i``, for the VE SDE ``a = 1``, ``b^2 = sigma_t^2 - sigma_next^2``: score_sde's
``discretize``). No solver adds noise on the last step.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
from flax import struct

from wgdiff._checks import check_positive, check_positive_int
from wgdiff._types import Array, ArrayLike, PRNGKey, PyTree
from wgdiff.nets.parameterization import ScoreModel
from wgdiff.samplers.base import Solver, Step, full_time


def _transition(sde, t, t_next):
    """``(a, b^2)`` of the forward transition from ``t_next`` to ``t``."""
    m, s = sde.marginal_coeffs(t)
    m_n, s_n = sde.marginal_coeffs(t_next)
    a = m / m_n
    return a, jnp.maximum(s**2 - a**2 * s_n**2, 0.0)


def _noisy(step, mean, scale, key):
    noise = scale * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.where(step.last, mean, mean + noise)


def langevin_update(x: Array, score: Array, step_size: ArrayLike, z: Array) -> Array:
    """``x + delta s + sqrt(2 delta) z``: one unadjusted Langevin step (Ghimire eq. 27)."""
    return x + step_size * score + jnp.sqrt(2.0 * step_size) * z


@struct.dataclass
class EulerMaruyama(Solver):
    """Euler-Maruyama on the reverse SDE with Ghimire's reverse-variance knob (sec 6.2).

    ``x <- x - h [f - (1 + alpha)/2 g^2 s(x, t)] + sqrt(alpha h) g z``; ``alpha = 1``:
    the reverse SDE (Song et al. eq. 6), ``alpha = 0``: the probability-flow ODE
    with Euler steps. Weak order 1.
    """

    alpha: float = 1.0
    order = 1
    nfe_per_step = 1
    stochastic = True

    def __post_init__(self) -> None:
        if not float(self.alpha) >= 0.0:
            raise ValueError(
                f"alpha must be >= 0 (0: probability-flow ODE, 1: reverse SDE), got {self.alpha!r}"
            )

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        sde = model.sde
        h = step.t - step.t_next
        mean = x - sde.reverse_drift(model.score, x, full_time(step.t, x), self.alpha) * h
        scale = sde.reverse_diffusion(step.t, self.alpha) * jnp.sqrt(h)
        return _noisy(step, mean, scale, step.key), state


@struct.dataclass
class ReverseDiffusion(Solver):
    """score_sde's reverse-diffusion predictor (Song et al. 2021 app. E).

    ``x <- x - (a - 1) x + b^2 s(x, t) + b z``; weak order 1.
    """

    order = 1
    nfe_per_step = 1
    stochastic = True

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        a, b2 = _transition(model.sde, step.t, step.t_next)
        mean = (2.0 - a) * x + b2 * model.score(x, full_time(step.t, x))
        return _noisy(step, mean, jnp.sqrt(b2), step.key), state


@struct.dataclass
class Ancestral(Solver):
    """DDPM ancestral sampling (Ho et al. 2020 Alg. 2 with ``sigma^2 = beta``).

    ``x <- (x + b^2 s(x, t)) / a + b z``, for any SDE through ``(a, b)`` above
    (score_sde's ``AncestralSamplingPredictor`` for the VP SDE). Weak order 1.
    """

    order = 1
    nfe_per_step = 1
    stochastic = True

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        a, b2 = _transition(model.sde, step.t, step.t_next)
        mean = (x + b2 * model.score(x, full_time(step.t, x))) / a
        return _noisy(step, mean, jnp.sqrt(b2), step.key), state


class Corrector(abc.ABC):
    """A move at fixed time ``t`` that leaves ``p_t`` invariant (the C of PC sampling)."""

    n_steps: int

    @abc.abstractmethod
    def correct(self, model: ScoreModel, x: Array, t: Array, t_next: Array, key: PRNGKey) -> Array:
        """``x`` after the corrector at time ``t`` (``t_next`` is the predictor's target)."""


@struct.dataclass
class LangevinCorrector(Corrector):
    """score_sde's Langevin corrector (Song et al. 2021 Alg. 4-5).

    ``n_steps`` times: ``delta = 2 a_c (snr ||z|| / ||s||)^2`` (norms averaged over
    the batch, as in score_sde), then ``x <- x + delta s + sqrt(2 delta) z``, with
    ``a_c = (m_t / m_next)^2`` (score_sde's ``alphas[i]`` for the VP SDE, 1 for VE).
    """

    snr: float = 0.16
    n_steps: int = struct.field(pytree_node=False, default=1)

    def __post_init__(self) -> None:
        check_positive(self.snr, "snr")
        check_positive_int(self.n_steps, "n_steps")

    def correct(self, model: ScoreModel, x: Array, t: Array, t_next: Array, key: PRNGKey) -> Array:
        sde = model.sde
        a_c = (sde.marginal_coeffs(t)[0] / sde.marginal_coeffs(t_next)[0]) ** 2
        tt = full_time(t, x)

        def body(x, k):
            grad = model.score(x, tt)
            z = jax.random.normal(k, x.shape, x.dtype)
            norm = lambda v: jnp.mean(jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=-1)))
            step_size = 2.0 * a_c * (self.snr * norm(z) / norm(grad)) ** 2
            return langevin_update(x, grad, step_size, z), None

        x, _ = jax.lax.scan(body, x, jax.random.split(key, self.n_steps))
        return x


@struct.dataclass
class PredictorCorrector(Solver):
    """Predictor-corrector sampling (Song et al. 2021 Alg. 1): at each ``t`` the
    corrector, then the predictor's step to ``t_next`` (score_sde's ``pc_sampler``).

    NFE per step: the predictor's plus the corrector's ``n_steps``; order: the predictor's.
    """

    predictor: Solver = struct.field(default_factory=ReverseDiffusion)
    corrector: Corrector = struct.field(default_factory=LangevinCorrector)
    stochastic = True

    def __post_init__(self) -> None:
        if not isinstance(self.predictor, Solver):
            raise TypeError(f"predictor must be a Solver, got {type(self.predictor).__name__}")
        if not isinstance(self.corrector, Corrector):
            raise TypeError(f"corrector must be a Corrector, got {type(self.corrector).__name__}")

    @property
    def order(self) -> int:
        return self.predictor.order

    @property
    def nfe_per_step(self) -> int:
        return self.predictor.nfe_per_step + self.corrector.n_steps

    @property
    def multistep(self) -> bool:
        return self.predictor.multistep

    @property
    def min_steps(self) -> int:
        return self.predictor.min_steps

    def init(self, model: ScoreModel, x: Array, t0: Array) -> PyTree:
        return self.predictor.init(model, x, t0)

    def nfe(self, n_steps: int) -> int:
        return self.predictor.nfe(n_steps) + self.corrector.n_steps * n_steps

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        k_c, k_p = jax.random.split(step.key)
        x = self.corrector.correct(model, x, step.t, step.t_next, k_c)
        return self.predictor.step(model, x, state, step._replace(key=k_p))


__all__ = [
    "Ancestral",
    "Corrector",
    "EulerMaruyama",
    "LangevinCorrector",
    "PredictorCorrector",
    "ReverseDiffusion",
    "langevin_update",
]
