"""Output parameterizations that turn a network into a well-scaled score model.

The score of ``p_t`` grows like ``1 / s(t)`` as ``t -> 0`` (``s`` the marginal std),
so a network asked to output it directly must produce huge values near the data and
fits them poorly. Dividing the network output by ``s(t)`` (Song et al. 2021's NCSN++
choice; equivalently predicting ``-eps``) keeps the regression target O(1).
"""

from __future__ import annotations

from collections.abc import Callable

from jax.tree_util import Partial

from wgdiff.sde import SDE, broadcast_time


def _std_scaled(apply_fn, sde, params, x, t, *args, **kwargs):
    out = apply_fn(params, x, t, *args, **kwargs)
    return out / broadcast_time(sde.marginal_coeffs(t)[1], out)


def std_scaled_apply(apply_fn: Callable, sde: SDE) -> Callable:
    """``apply(params, x, t) / s(t)``: an ``apply``-like function for the score.

    Use it wherever ``model.apply`` would go (``dsm_objective``,
    ``functools.partial(..., params)`` for the samplers). The result is a
    ``jax.tree_util.Partial``, so samplers trace it without retracing.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from wgdiff.sde import VPSDE
        >>> sde = VPSDE()
        >>> apply = std_scaled_apply(lambda p, x, t: p * x, sde)
        >>> bool(apply(2.0, jnp.ones((1, 1)), 0.5)[0, 0] == 2.0 / sde.marginal_coeffs(0.5)[1])
        True
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a wgdiff.sde.SDE, got {type(sde).__name__}")
    return Partial(_std_scaled, apply_fn, sde)


__all__ = ["std_scaled_apply"]
