"""Likelihood of a flow by the instantaneous change of variables (Chen et al. 2018).

For ``dx/dt = v(x, t)`` pushing a source density ``p_0`` to ``p_1``,

    log p_1(x) = log p_0(x_0) - int_0^1 div v(x_t, t) dt,

with ``x_t`` the trajectory that ends at ``x`` (integrated backwards). This is the
probability-flow likelihood of ``wgdiff.samplers.log_likelihood`` (Song et al. 2021,
sec. D.2) -- one adaptive diffrax solve of the state and the divergence integral, exact
trace for small ``d`` or Skilling-Hutchinson beyond -- on the flow's model
(:func:`~wgdiff.flows.sampling.flow_model`), with the source density in place of the
prior.

Example:
    >>> import jax, jax.numpy as jnp
    >>> shift = lambda x, t: jnp.ones_like(x)   # pushes N(0, I) to N(1, I)
    >>> logp = log_likelihood(jax.random.key(0), shift, jnp.ones((1, 2)))
    >>> round(float(logp[0]), 4)   # log N(1; 1, I) in 2-D = -log(2 pi)
    -1.8379
"""

from __future__ import annotations

from collections.abc import Callable

from wgdiff._types import Array, PRNGKey, VelocityFn
from wgdiff.flows.sampling import FLOW_SDE, flow_model
from wgdiff.samplers import log_likelihood as _pf_log_likelihood


def log_likelihood(
    key: PRNGKey,
    velocity_fn: VelocityFn,
    x: Array,
    *,
    source_logp: Callable[[Array], Array] | None = None,
    trace: str = "exact",
    rtol: float = 1e-5,
    atol: float = 1e-5,
) -> Array:
    """``log p_1(x)`` of the flow's pushforward of the source.

    Args:
        key: PRNG key (Hutchinson probes).
        velocity_fn: flow-time velocity ``(x (n, d), t (n,)) -> (n, d)``.
        x: ``(n, d)`` points.
        source_logp: ``(n, d) -> (n,)`` log-density of the source; default standard normal.
        trace: ``"exact"`` (``d`` Jacobian-vector products) or ``"hutchinson"`` (one
            Rademacher probe per example: unbiased, not exact).
        rtol, atol: adaptive step tolerances.

    Returns:
        ``(n,)`` log-densities in nats.
    """
    return _pf_log_likelihood(
        key,
        FLOW_SDE,
        flow_model(velocity_fn),
        x,
        trace=trace,
        rtol=rtol,
        atol=atol,
        eps=0.0,
        prior_logp=source_logp,
    )


__all__ = ["log_likelihood"]
