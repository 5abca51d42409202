"""Validation and jit plumbing shared by the sampler wrappers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from wgdiff._checks import check_finite, check_positive_int, check_shape_tuple
from wgdiff._types import Array, ArrayLike, PRNGKey, ScoreFn, Shape
from wgdiff.nets.parameterization import pytree_callable
from wgdiff.samplers.base import SampleResult, Solver, sample
from wgdiff.samplers.grids import UniformGrid
from wgdiff.sde import SDE


def as_pytree_callable(fn: Callable) -> Callable:
    """Turn ``functools.partial(model.apply, params)`` into a ``jax.tree_util.Partial``.

    A ``Partial`` is a pytree whose arguments (the parameters) are leaves, so the
    jitted samplers trace them instead of baking them in as constants, and a new
    partial with same-shaped parameters reuses the compiled program.
    """
    return pytree_callable(fn, "score_fn")


def check_sampler_args(
    sde: SDE, shape: Shape, n_steps: int | None, eps: float, x_init: ArrayLike | None
) -> tuple[Shape, int | None]:
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


def check_alpha(alpha: float) -> None:
    if not float(alpha) >= 0.0:
        raise ValueError(
            f"alpha must be >= 0 (0: probability-flow ODE, 1: reverse SDE), got {alpha!r}"
        )


def with_info(x: Array, nfe: int, return_info: bool) -> Array | tuple[Array, dict]:
    return (x, {"nfe": int(nfe)}) if return_info else x


def sample_uniform(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    shape: Shape,
    solver: Solver,
    n_steps: int,
    eps: float,
    x_init: ArrayLike | None,
) -> SampleResult:
    """The named samplers' one call: ``sample(..., solver, UniformGrid(n_steps, eps))``.

    ``score_fn`` goes in as a pytree callable (:func:`as_pytree_callable`).
    """
    grid = UniformGrid(n_steps, float(eps))
    return sample(key, sde, as_pytree_callable(score_fn), shape, solver, grid, x_init=x_init)


__all__ = [
    "as_pytree_callable",
    "check_alpha",
    "check_sampler_args",
    "sample_uniform",
    "with_info",
]
