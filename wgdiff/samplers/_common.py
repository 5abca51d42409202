"""Validation and jit plumbing shared by the sampler wrappers."""

from __future__ import annotations

import numpy as np

from wgdiff._checks import check_finite, check_positive_int, check_shape_tuple
from wgdiff.nets.parameterization import pytree_callable
from wgdiff.sde import SDE


def as_pytree_callable(fn):
    """Turn ``functools.partial(model.apply, params)`` into a ``jax.tree_util.Partial``.

    A ``Partial`` is a pytree whose arguments (the parameters) are leaves, so the
    jitted samplers trace them instead of baking them in as constants, and a new
    partial with same-shaped parameters reuses the compiled program.
    """
    return pytree_callable(fn, "score_fn")


def check_sampler_args(sde: SDE, shape, n_steps, eps, x_init):
    """Eager checks shared by the reverse-time samplers; returns ``(shape, n_steps)`` as ints.

    Python ints matter: ``eqx.filter_jit`` would trace a NumPy integer as an array.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a wgdiff.sde.SDE, got {type(sde).__name__}")
    shape = check_shape_tuple(shape)
    if n_steps is not None:
        n_steps = check_positive_int(n_steps, "n_steps")
    if not (0.0 < float(eps) < sde.T):
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps!r}")
    if x_init is not None:
        if tuple(np.shape(x_init)) != shape:
            raise ValueError(f"x_init must have shape {shape}, got {np.shape(x_init)}")
        check_finite(x_init, "x_init")
    return shape, n_steps


def check_alpha(alpha):
    if not float(alpha) >= 0.0:
        raise ValueError(
            f"alpha must be >= 0 (0: probability-flow ODE, 1: reverse SDE), got {alpha!r}"
        )


def with_info(x, nfe: int, return_info: bool):
    return (x, {"nfe": int(nfe)}) if return_info else x


__all__ = ["as_pytree_callable", "check_alpha", "check_sampler_args", "with_info"]
