"""Integrating a flow-time velocity ``dx/dt = v(x, t)`` from ``t = 0`` (source) to ``t = 1``.

Example:
    >>> import jax.numpy as jnp
    >>> out = integrate_flow(lambda x, t: jnp.ones_like(x), jnp.zeros((3, 2)), n_steps=4)
    >>> out.x[0].tolist(), out.nfe
    ([1.0, 1.0], 4)
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from wgdiff._checks import check_finite, check_positive_int
from wgdiff._types import Array, VelocityFn
from wgdiff.samplers._common import as_pytree_callable

FLOW_METHODS = {"euler": 1, "heun": 2}  # name -> velocity evaluations per step


class FlowResult(NamedTuple):
    """``x (n, *event)`` at ``t = 1``; ``nfe`` velocity evaluations per sample; ``path``
    the states at the ``n_steps + 1`` grid times ``(n_steps + 1, n, *event)`` or None."""

    x: Array
    nfe: int
    path: Array | None


@eqx.filter_jit
def _integrate(velocity_fn, x0, n_steps, method, return_path):
    ts = jnp.linspace(0.0, 1.0, n_steps + 1, dtype=x0.dtype)

    def velocity(x, t):
        return velocity_fn(x, jnp.full((x.shape[0],), t, x.dtype))

    def step(x, times):
        t, t_next = times
        h = t_next - t
        v = velocity(x, t)
        x_next = x + h * v
        if method == "heun":
            x_next = x + 0.5 * h * (v + velocity(x_next, t_next))
        return x_next, (x_next if return_path else None)

    x1, states = jax.lax.scan(step, x0, (ts[:-1], ts[1:]))
    path = jnp.concatenate([x0[None], states]) if return_path else None
    return x1, path


def integrate_flow(
    velocity_fn: VelocityFn,
    x0: Array,
    *,
    n_steps: int,
    method: str = "euler",
    return_path: bool = False,
) -> FlowResult:
    """Push ``x0`` through ``dx/dt = v(x, t)`` on ``t in [0, 1]``, uniform grid.

    Args:
        velocity_fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        x0: ``(n, *event)`` source points.
        n_steps: number of steps.
        method: ``"euler"`` (NFE = n_steps) or ``"heun"`` (explicit trapezoid, NFE =
            2 n_steps).
        return_path: also return the states on the grid.

    Returns:
        :class:`FlowResult`.
    """
    x0 = jnp.asarray(x0, dtype=jnp.result_type(float))
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (n, *event), got shape {x0.shape}")
    check_finite(x0, "x0")
    n_steps = check_positive_int(n_steps, "n_steps")
    if method not in FLOW_METHODS:
        raise ValueError(f"method must be one of {tuple(FLOW_METHODS)}, got {method!r}")
    x1, path = _integrate(as_pytree_callable(velocity_fn), x0, n_steps, method, bool(return_path))
    return FlowResult(x1, FLOW_METHODS[method] * n_steps, path)


__all__ = ["FLOW_METHODS", "FlowResult", "integrate_flow"]
