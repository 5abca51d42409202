"""The one flow contract of :mod:`wgdiff.sdflow` and its scan driver.

Every flow in the package (:func:`~wgdiff.sdflow.particle_flow` for Weber's
Alg. 1 with SD, MMD or SVGD directions, :func:`~wgdiff.sdflow.generator_flow`
for Alg. 2 and :func:`~wgdiff.sdflow.discriminator_flow` for the density-ratio
form of sec. 5) is an optax-style pair of pure functions: an ``init`` that
builds its state (its arguments depend on what the flow moves: particles,
generator parameters, discriminator parameters), and

    ``update(state, target) -> (state, info)``

with ``target`` the ``(N, d)`` target data the flow moves towards and ``info``
a dict of scalar diagnostics of that update. :func:`run_flow` iterates any of
them in one ``lax.scan``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sdflow import FlowConditions, particle_flow
    >>> target = jax.random.normal(jax.random.key(0), (32, 2)) + 4.0
    >>> flow = particle_flow("sd", n_steps=100)
    >>> cond = FlowConditions.create(sigma2_const=0.5, step_size=1.0)
    >>> state = flow.init(jax.random.key(1), jnp.zeros((32, 2)), cond)
    >>> state, _ = run_flow(flow, state, target, 100)
    >>> bool(jnp.abs(state.particles.mean(0) - target.mean(0)).max() < 0.1)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import jax

from wgdiff._checks import check_positive_int
from wgdiff.sdflow.kernels import check_point_set

Info = dict[str, jax.Array]


class Flow(Protocol):
    """What :func:`run_flow` needs: ``update(state, target) -> (state, info)``."""

    update: Callable[[Any, jax.Array], tuple[Any, Info]]


def run_flow(
    flow: Flow,
    state: Any,
    target: jax.Array,
    n_steps: int,
    *,
    monitor: Callable[[Any, Info], Any] | None = None,
    monitor_every: int = 1,
) -> tuple[Any, Any]:
    """Apply ``flow.update`` ``n_steps`` times in a ``lax.scan``.

    Args:
        flow: any flow of :mod:`wgdiff.sdflow`.
        state: its state.
        target: (N, d) target data, passed to every update.
        n_steps: number of updates, a multiple of ``monitor_every``.
        monitor: optional ``(state, info) -> pytree`` recorded after every
            ``monitor_every``-th update (``info`` of that update).
        monitor_every: monitoring period.

    Returns:
        ``(final_state, trace)`` with the monitor's outputs stacked along axis 0,
        ``n_steps // monitor_every`` entries (``None`` without a monitor).
    """
    check_positive_int(n_steps, "n_steps")
    check_positive_int(monitor_every, "monitor_every")
    if n_steps % monitor_every:
        raise ValueError(
            f"n_steps ({n_steps}) must be a multiple of monitor_every ({monitor_every})"
        )
    check_point_set(target, "target")
    if monitor is not None and not callable(monitor):
        raise TypeError("monitor must be None or a callable (state, info) -> pytree")

    def inner(s, _):
        return flow.update(s, target)

    def outer(s, _):
        s, infos = jax.lax.scan(inner, s, None, length=monitor_every)
        last = jax.tree.map(lambda leaf: leaf[-1], infos)
        return s, (monitor(s, last) if monitor is not None else None)

    return jax.lax.scan(outer, state, None, length=n_steps // monitor_every)
