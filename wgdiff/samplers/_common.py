"""Validation and jit plumbing shared by the samplers."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from wgdiff._checks import check_finite, check_positive_int, check_shape_tuple
from wgdiff.sde import SDE


def as_pytree_callable(fn):
    """Turn ``functools.partial(model.apply, params)`` into a ``jax.tree_util.Partial``.

    A ``Partial`` is a pytree whose arguments (the parameters) are leaves, so the
    jitted samplers trace them instead of baking them in as constants, and a new
    partial with same-shaped parameters reuses the compiled program.
    """
    if not callable(fn):
        raise TypeError(f"score_fn must be callable (x, t) -> like x, got {type(fn).__name__}")
    if isinstance(fn, functools.partial) and not isinstance(fn, Partial):
        return Partial(as_pytree_callable(fn.func), *fn.args, **fn.keywords)
    return fn


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


def initial_state(key, sde: SDE, shape, x_init):
    """Prior draw, or the user's starting points (e.g. forward-noised data)."""
    if x_init is None:
        return sde.prior_sample(key, shape)
    return jnp.asarray(x_init, dtype=jnp.result_type(float))


def time_grid(T, eps, n_steps, dtype):
    """``n_steps + 1`` uniformly spaced times from ``T`` down to ``eps``."""
    return jnp.linspace(T, eps, n_steps + 1, dtype=dtype)


def full_time(t, x):
    return jnp.full((x.shape[0],), t, dtype=x.dtype)


def reverse_time_scan(key, sde: SDE, shape, n_steps, eps, x_init, mean_step, noise_scale):
    """The stochastic reverse-time loop shared by Euler-Maruyama and Predict-Project.

    From the prior (or ``x_init``) at ``T`` down to ``eps`` on a uniform grid:
    ``x <- mean_step(x, t, t_next, h) + noise_scale(t) sqrt(h) z``, except that the
    last step returns the mean (noise at ``t = eps`` would only blur the samples).
    """
    init_key, noise_key = jax.random.split(key)
    x = initial_state(init_key, sde, shape, x_init)
    ts = time_grid(sde.T, eps, n_steps, x.dtype)
    keys = jax.random.split(noise_key, n_steps)
    last = jnp.arange(n_steps) == n_steps - 1

    def step(x, inputs):
        t, t_next, k, is_last = inputs
        h = t - t_next
        x_mean = mean_step(x, t, t_next, h)
        noise = noise_scale(t) * jnp.sqrt(h) * jax.random.normal(k, x.shape, x.dtype)
        return jnp.where(is_last, x_mean, x_mean + noise), None

    x, _ = jax.lax.scan(step, x, (ts[:-1], ts[1:], keys, last))
    return x


def with_info(x, nfe: int, return_info: bool):
    return (x, {"nfe": int(nfe)}) if return_info else x


__all__ = [
    "as_pytree_callable",
    "check_alpha",
    "check_sampler_args",
    "full_time",
    "initial_state",
    "time_grid",
    "with_info",
]
