"""Vuong et al.: diffusion training as flow matching to the Wasserstein-gradient-flow velocity.

The forward SDE ``dx = f dt + g dW`` moves its marginals exactly like the ODE
``dx/dt = v(x, t) = f(x, t) - g(t)^2 / 2 grad log p_t(x)`` (Jordan-Kinderlehrer-Otto;
Vuong's ``v_WGF = -x - grad log rho`` for ``dX = -X dt + sqrt(2) dW``). A network
``v_theta(x, t)`` regresses this velocity directly (Lipman et al.'s conditional
flow matching): since ``grad log p_t(x) = E[grad log p_{0t}(x | x0) | x_t = x]``,
the conditional velocity

    u(x_t | x0) = f(x_t, t) - g^2 / 2 grad log p_{0t}(x_t | x0) = f(x_t, t) + g^2 z / (2 s(t))

has the WGF velocity as its conditional mean, and
``E_t w(t) E |v_theta(x_t, t) - u|^2`` (``t ~ U(eps, T)``) is minimized by it for any
weight: ``w = 4 / g^4`` is Vuong's uniform weight in score units (the default),
``w = 1`` the plain velocity regression (``g^4 / 4`` in score units). Samples come
from integrating ``dx/dt = v_theta`` from ``T`` to ``eps`` (the probability-flow
ODE); :func:`velocity_to_score` turns ``v_theta`` into the score ``2 (f - v_theta) / g^2``
it implies, so every score-based sampler and diagnostic applies. Nothing constrains
``v_theta`` (or its implied score) to be conservative, which is Vuong's point.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sde import VPSDE
    >>> sde = VPSDE()
    >>> exact = score_to_velocity(sde, lambda x, t: -x)   # N(0, I) is stationary
    >>> loss = wgf_flow_matching_loss(jax.random.key(0), sde, exact,
    ...                               jax.random.normal(jax.random.key(1), (256, 2)))
    >>> bool(loss > 0)   # conditional flow matching keeps an irreducible variance
    True
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from wgdiff._checks import check_finite, check_ndim
from wgdiff._types import Array, ArrayLike, PRNGKey, PyTree, ScoreFn, VelocityFn
from wgdiff.sde import SDE, broadcast_time


def conditional_wgf_velocity(sde: SDE, xt: ArrayLike, noise: ArrayLike, t: ArrayLike) -> Array:
    """``f(x_t, t) + g(t)^2 noise / (2 s(t))``, the WGF velocity of ``p(x_t | x0)``.

    Args:
        sde: forward SDE with ``x_t = m(t) x0 + s(t) noise``.
        xt: ``(n, *event)`` corrupted points.
        noise: ``(n, *event)`` the standard normal draw that produced them.
        t: scalar or ``(n,)``.

    Returns:
        ``(n, *event)``.
    """
    t = jnp.asarray(t, xt.dtype)
    _, s = sde.marginal_coeffs(t)
    g2 = sde.diffusion(t) ** 2
    return sde.drift(xt, t) + broadcast_time(0.5 * g2 / s, xt) * noise


WGF_WEIGHTINGS = ("uniform_score", "g4_over_4")


def wgf_flow_matching_loss(
    key: PRNGKey,
    sde: SDE,
    velocity_fn: VelocityFn,
    x0: ArrayLike,
    *,
    eps: float = 1e-3,
    weighting: str = "uniform_score",
) -> Array:
    """Vuong's flow matching onto the conditional WGF velocity, ``t ~ U(eps, T)``.

    The velocity residual is ``v - u = -g^2 / 2 (s_v - grad log p_{0t})`` with
    ``s_v = 2 (f - v) / g^2`` the score the velocity implies, so the time weight
    depends on the units the error is measured in:

    - ``"uniform_score"`` (default): ``E (4 / g^4) |v - u|^2 = E |s_v - grad log p_{0t}|^2``,
      uniform in time in score units, Vuong's ``E_t E |v_theta - S|^2``;
    - ``"g4_over_4"``: the plain velocity regression ``E |v - u|^2``, which in score
      units weights time by ``g(t)^4 / 4`` (for VP(0.1, 20) a 4e4-fold range).

    Args:
        key: PRNG key.
        sde: forward SDE (affine drift).
        velocity_fn: ``(x (n, *event), t (n,)) -> (n, *event)``, the velocity model.
        x0: ``(n, *event)`` data batch.
        eps: smallest time (the conditional velocity grows like ``1 / s(t)``).
        weighting: ``"uniform_score"`` or ``"g4_over_4"``.

    Returns:
        Scalar loss (squared error summed over the event, averaged over the batch).
    """
    if weighting not in WGF_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WGF_WEIGHTINGS}, got {weighting!r}")
    x0 = jnp.asarray(x0)
    check_ndim(x0, tuple(range(2, 6)), "x0", "(n, *event)")
    check_finite(x0, "x0")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}")
    t_key, z_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (x0.shape[0],), x0.dtype, eps, sde.T)
    xt, noise = sde.marginal_sample(z_key, x0, t)
    residual = velocity_fn(xt, t) - conditional_wgf_velocity(sde, xt, noise, t)
    sq = jnp.sum(residual.reshape(x0.shape[0], -1) ** 2, axis=-1)
    if weighting == "uniform_score":
        sq = sq * 4.0 / sde.diffusion(t) ** 4
    return jnp.mean(sq)


def wgf_flow_matching_objective(
    sde: SDE,
    apply_fn: Callable[[PyTree, Array, Array], Array],
    *,
    eps: float = 1e-3,
    weighting: str = "uniform_score",
) -> Callable[[PyTree, PRNGKey, Array], Array]:
    """``loss_fn(params, key, batch)`` for ``wgdiff.train`` from a velocity net's ``apply``.

    ``weighting`` as in :func:`wgf_flow_matching_loss`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from wgdiff.nets import ScoreMLP
        >>> from wgdiff.sde import VPSDE
        >>> model = ScoreMLP(features=(16,))   # any (x, t) -> like x net models a velocity
        >>> params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
        >>> loss_fn = wgf_flow_matching_objective(VPSDE(), model.apply)
        >>> loss_fn(params, jax.random.key(1), jnp.ones((8, 2))).shape
        ()
    """
    if weighting not in WGF_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WGF_WEIGHTINGS}, got {weighting!r}")

    def loss_fn(params, key, batch):
        return wgf_flow_matching_loss(
            key, sde, lambda x, t: apply_fn(params, x, t), batch, eps=eps, weighting=weighting
        )

    return loss_fn


def velocity_to_score(sde: SDE, velocity_fn: VelocityFn) -> ScoreFn:
    """The score ``2 (f - v) / g^2`` implied by a WGF velocity model: ``score_fn(x, t)``."""

    def score_fn(x, t):
        t = jnp.asarray(t, x.dtype)
        g2 = broadcast_time(sde.diffusion(t) ** 2, x)
        return 2.0 * (sde.drift(x, t) - velocity_fn(x, t)) / g2

    return score_fn


def score_to_velocity(sde: SDE, score_fn: ScoreFn) -> VelocityFn:
    """The WGF velocity ``f - g^2 s / 2`` of a score model: ``velocity_fn(x, t)``."""

    def velocity_fn(x, t):
        return sde.probability_flow_drift(score_fn, x, t)

    return velocity_fn


__all__ = [
    "WGF_WEIGHTINGS",
    "conditional_wgf_velocity",
    "score_to_velocity",
    "velocity_to_score",
    "wgf_flow_matching_loss",
    "wgf_flow_matching_objective",
]
