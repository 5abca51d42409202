"""Density-ratio (discriminator) form of SD flow (Weber sec. 5.2, eq. 33-38).

A discriminator with pre-activation ``h(y)`` trained by logistic regression
(target label 1, generated label 0) has, at the optimum, ``h = log p - log q``
(eq. 33-34), so ``grad h`` is the score difference (eq. 35): the flow induced by
the alternative generator loss ``-sum h(y)`` (eq. 37-38). The non-saturating
GAN loss gives ``(1 - f(y)) grad h`` instead (eq. 36).

:func:`discriminator_flow` is Alg. 1 with this form: each update takes
``discriminator_steps`` optimizer steps on the logistic loss against the
current particles, then moves the particles by ``eta grad h``; its
``update(state, target) -> (state, info)`` is the contract of
:mod:`wgdiff.sdflow.flow`.

Example:
    >>> import jax.numpy as jnp
    >>> # Exact log ratio of N(2, 1) over N(0, 1): h(y) = 2 y - 2, score difference 2.
    >>> logit_fn = lambda params, y: params * y[:, 0] - 2.0
    >>> density_ratio_direction(logit_fn, 2.0, jnp.array([[0.5], [3.0]]))
    Array([[2.],
           [2.]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from wgdiff._checks import check_positive_int
from wgdiff.sdflow.kernels import check_point_set

LogitFn = Callable[[Any, jax.Array], jax.Array]


def _logits(logit_fn, params, y):
    out = logit_fn(params, y)
    return out.reshape(out.shape[0])


def discriminator_loss(
    logit_fn: LogitFn, params: Any, target: jax.Array, generated: jax.Array
) -> jax.Array:
    """Logistic loss of a discriminator ``f = sigmoid(h)`` (target 1, generated 0), eq. 33-34.

    Args:
        logit_fn: ``(params, x (n, d)) -> (n,)`` pre-activation ``h``.
        params: its parameters.
        target: (N, d) target samples.
        generated: (M, d) current particles / generator output.

    Returns:
        scalar ``mean softplus(-h(x)) + mean softplus(h(y))``.
    """
    return jnp.mean(jax.nn.softplus(-_logits(logit_fn, params, target))) + jnp.mean(
        jax.nn.softplus(_logits(logit_fn, params, generated))
    )


def density_ratio_direction(logit_fn: LogitFn, params: Any, y: jax.Array) -> jax.Array:
    """``grad_y h(y)`` per point, Weber eq. 35 / 38 (the score difference at the optimum).

    Args:
        logit_fn: ``(params, x (n, d)) -> (n,)``.
        params: discriminator parameters.
        y: (n, d) points.

    Returns:
        (n, d) gradients.
    """
    check_point_set(y, "y")
    return jax.grad(lambda yy: jnp.sum(_logits(logit_fn, params, yy)))(y)


def nonsaturating_direction(logit_fn: LogitFn, params: Any, y: jax.Array) -> jax.Array:
    """Flow of the non-saturating generator loss, Weber eq. 36: ``(1 - f(y)) grad h(y)``."""
    check_point_set(y, "y")
    fake_prob = jax.nn.sigmoid(-_logits(logit_fn, params, y))
    return fake_prob[:, None] * density_ratio_direction(logit_fn, params, y)


class DiscriminatorFlowState(NamedTuple):
    """Particles, discriminator parameters and optimizer state of :func:`discriminator_flow`."""

    particles: jax.Array
    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class DiscriminatorFlow(NamedTuple):
    """``init(key, particles, params) -> state``; ``update(state, target) -> (state, info)``.

    ``info``: ``loss`` (the discriminator's logistic loss after its training
    steps) and ``displacement`` (mean norm of the particle moves).
    """

    init: Callable[[jax.Array, jax.Array, Any], DiscriminatorFlowState]
    update: Callable[[DiscriminatorFlowState, jax.Array], tuple[DiscriminatorFlowState, dict]]


def discriminator_flow(
    logit_fn: LogitFn,
    optimizer: optax.GradientTransformation,
    *,
    step_size: float,
    discriminator_steps: int = 1,
) -> DiscriminatorFlow:
    """Alg. 1 with the density-ratio SD estimate (eq. 35), the discriminator trained alongside.

    Args:
        logit_fn: ``(params, x (n, d)) -> (n,)`` discriminator pre-activation.
        optimizer: optax optimizer for the discriminator.
        step_size: particle step ``eta``.
        discriminator_steps: logistic-loss steps per particle update.

    Returns:
        a :class:`DiscriminatorFlow`.
    """
    check_positive_int(discriminator_steps, "discriminator_steps")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    loss_grad = jax.grad(lambda p, tgt, gen: discriminator_loss(logit_fn, p, tgt, gen))

    def init(key, particles, params) -> DiscriminatorFlowState:
        check_point_set(particles, "particles")
        return DiscriminatorFlowState(
            jnp.asarray(particles), params, optimizer.init(params), jnp.zeros((), jnp.int32), key
        )

    def update(state: DiscriminatorFlowState, target: jax.Array):
        def train(carry, _):
            params, opt_state = carry
            grads = loss_grad(params, target, state.particles)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(
            train, (state.params, state.opt_state), None, length=discriminator_steps
        )
        displacement = step_size * density_ratio_direction(logit_fn, params, state.particles)
        info = {
            "loss": discriminator_loss(logit_fn, params, target, state.particles),
            "displacement": jnp.mean(jnp.linalg.norm(displacement, axis=-1)),
        }
        new = DiscriminatorFlowState(
            state.particles + displacement, params, opt_state, state.step + 1, state.key
        )
        return new, info

    return DiscriminatorFlow(init, update)
