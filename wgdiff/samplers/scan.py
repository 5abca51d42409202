"""Fixed-step samplers as jit-compiled ``lax.scan`` loops (no host round-trips).

All integrate the reverse process from ``T`` down to ``eps`` on a uniform grid
of ``n_steps`` steps, starting from the prior (or ``x_init``). With
``return_info=True`` they return ``(x, {"nfe": ...})``, the number of score
evaluations per sample.

Example (the exact score of N(0, I), which the VP SDE leaves invariant):
    >>> import jax
    >>> from wgdiff.sde import VPSDE
    >>> x = euler_maruyama(jax.random.key(0), VPSDE(), lambda x, t: -x, (2000, 2), 100)
    >>> float(abs(x.std() - 1.0)) < 0.05
    True
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from wgdiff._checks import check_finite, check_positive, check_positive_int
from wgdiff._types import Array, ArrayLike, PRNGKey, ScoreFn, Shape
from wgdiff.samplers._common import (
    as_pytree_callable,
    check_alpha,
    check_sampler_args,
    sample_uniform,
    with_info,
)
from wgdiff.samplers.ode import ProbabilityFlowEuler, ProbabilityFlowHeun
from wgdiff.samplers.stochastic import EulerMaruyama, langevin_update
from wgdiff.sde import SDE

PF_METHODS = ("euler", "heun")


def euler_maruyama(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    shape: Shape,
    n_steps: int,
    *,
    alpha: float = 1.0,
    eps: float = 1e-3,
    x_init: ArrayLike | None = None,
    return_info: bool = False,
) -> Array | tuple[Array, dict]:
    """Euler-Maruyama on the reverse SDE with Ghimire's reverse-variance knob (sec 6.2).

    Step from ``t`` to ``t - h``:
    ``x <- x - h [f - (1 + alpha)/2 g^2 s(x, t)] + sqrt(alpha h) g z``;
    ``alpha = 1`` is the reverse SDE (Song et al. eq. 6), ``alpha = 0`` the
    probability-flow ODE with Euler steps. No noise is added on the last step.
    A wrapper: ``sample(..., EulerMaruyama(alpha), UniformGrid(n_steps, eps))``.

    Args:
        key: PRNG key.
        sde: forward SDE.
        score_fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        shape: ``(n, *event)`` of the output.
        n_steps: number of steps (= NFE).
        alpha: reverse-variance factor, ``>= 0``.
        eps: final time.
        x_init: optional ``(n, *event)`` start at ``t = T`` instead of a prior draw.
        return_info: also return ``{"nfe": n_steps}``.

    Returns:
        ``(n, *event)`` samples (and the info dict).
    """
    shape, n_steps = check_sampler_args(sde, shape, n_steps, eps, x_init)
    check_alpha(alpha)
    solver = EulerMaruyama(float(alpha))
    res = sample_uniform(key, sde, score_fn, shape, solver, n_steps, eps, x_init)
    return with_info(res.x, res.nfe, return_info)


def probability_flow(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    shape: Shape,
    n_steps: int,
    *,
    method: str = "euler",
    eps: float = 1e-3,
    x_init: ArrayLike | None = None,
    return_info: bool = False,
) -> Array | tuple[Array, dict]:
    """Integrate the probability-flow ODE ``dx/dt = f - g^2 s / 2`` (Ghimire eq. 24) from T to eps.

    ``method="euler"`` (``ProbabilityFlowEuler``, first order, NFE = n_steps) or
    ``"heun"`` (``ProbabilityFlowHeun``, explicit trapezoid, second order,
    NFE = 2 n_steps) on ``UniformGrid(n_steps, eps)``. ``key`` only draws the prior.

    Returns:
        ``(n, *event)`` samples (and ``{"nfe": ...}`` if ``return_info``).
    """
    shape, n_steps = check_sampler_args(sde, shape, n_steps, eps, x_init)
    if method not in PF_METHODS:
        raise ValueError(f"method must be one of {PF_METHODS}, got {method!r}")
    solver = ProbabilityFlowEuler() if method == "euler" else ProbabilityFlowHeun()
    res = sample_uniform(key, sde, score_fn, shape, solver, n_steps, eps, x_init)
    return with_info(res.x, res.nfe, return_info)


@eqx.filter_jit
def _langevin(key, score_fn, x0, n_steps, step_size, t):
    keys = jax.random.split(key, n_steps)
    tt = jnp.full((x0.shape[0],), t, dtype=x0.dtype)

    def step(x, k):
        z = jax.random.normal(k, x.shape, x.dtype)
        return langevin_update(x, score_fn(x, tt), step_size, z), None

    x, _ = jax.lax.scan(step, x0, keys)
    return x


def langevin(
    key: PRNGKey,
    score_fn: ScoreFn,
    x0: ArrayLike,
    n_steps: int,
    step_size: float,
    *,
    t: float = 0.0,
    return_info: bool = False,
) -> Array | tuple[Array, dict]:
    """Unadjusted Langevin dynamics on ``p`` with score ``s = -grad V`` (Ghimire eq. 27).

    ``x <- x + delta s(x, t) + sqrt(2 delta) z`` with ``delta = beta delta-tau``
    the step size; its stationary law approaches ``p`` as ``delta -> 0``.

    Args:
        key: PRNG key.
        score_fn: ``(x, t) -> like x``, evaluated at the fixed time ``t``.
        x0: ``(n, *event)`` starting points.
        n_steps: number of steps (= NFE).
        step_size: ``delta > 0``.

    Returns:
        ``(n, *event)`` final particles (and ``{"nfe": n_steps}`` if ``return_info``).
    """
    x0 = jnp.asarray(x0, dtype=jnp.result_type(float))
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (n, *event), got shape {x0.shape}")
    check_finite(x0, "x0")
    n_steps = check_positive_int(n_steps, "n_steps")
    check_positive(step_size, "step_size")
    x = _langevin(key, as_pytree_callable(score_fn), x0, n_steps, float(step_size), float(t))
    return with_info(x, n_steps, return_info)


__all__ = ["PF_METHODS", "euler_maruyama", "langevin", "probability_flow"]
