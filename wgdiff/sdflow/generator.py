"""Generator training with SD flow (Weber Alg. 2, sec. 5.1 and 6.2).

Each step draws latents ``xi``, generates ``y = g_theta(xi)``, moves ``y`` along
the kernel SD flow to ``y' = y + (eta / 2) (D_p(z) - D_q(z))`` at
``z = y + sigma eps`` (eq. 15 as Alg. 2 applies it; the factor is
:data:`~wgdiff.sdflow.SD_STEP_SCALE`), and regresses the generator on the
moved targets with the loss ``1/2 sum_batch |g_theta(xi) - y'|^2`` (the sum
over the batch, as Alg. 2 writes ``|g_theta(xi) - y|^2`` for the batch array), ``y'`` held fixed.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> gen = lambda params, xi: xi + params        # a shift "generator"
    >>> flow = generator_flow(gen, optax.sgd(1e-2), latent_dim=2, batch_size=64,
    ...                       sigma=1.0, step_size=1.0)
    >>> state = flow.init(jax.random.key(0), jnp.zeros(2))
    >>> target = jax.random.normal(jax.random.key(1), (64, 2)) + 3.0
    >>> update = jax.jit(flow.update)
    >>> for _ in range(50):
    ...     state, info = update(state, target)
    >>> bool(jnp.all(jnp.abs(state.params - 3.0) < 0.5))
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from wgdiff._checks import check_positive, check_positive_int
from wgdiff.sdflow.directions import SD_STEP_SCALE, score_difference
from wgdiff.sdflow.kernels import DEFAULT_POINT_CHUNK, DEFAULT_Z_CHUNK, check_point_set

GeneratorFn = Callable[[Any, jax.Array], jax.Array]


def sd_flow_targets(
    key: jax.Array,
    generated: jax.Array,
    target: jax.Array,
    sigma: ArrayLike,
    step_size: ArrayLike,
    *,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> jax.Array:
    """Regression targets ``y' = y + (eta / 2) (D_p(z) - D_q(z))``, ``z = y + sigma eps`` (Alg. 2).

    The ``1/2`` is eq. 15's, :data:`~wgdiff.sdflow.SD_STEP_SCALE`.

    Args:
        key: PRNG key for the proxy noise.
        generated: (M, d) generator output ``y``.
        target: (N, d) target batch.
        sigma: scalar noise level / kernel bandwidth.
        step_size: ``eta``.

    Returns:
        (M, d) moved targets.
    """
    check_point_set(generated, "generated")
    check_point_set(target, "target", generated.shape[1])
    check_positive(sigma, "sigma")
    z = generated + sigma * jax.random.normal(key, generated.shape, generated.dtype)
    sd = score_difference(z, target, generated, sigma, z_chunk=z_chunk, point_chunk=point_chunk)
    return generated + SD_STEP_SCALE * step_size * sd


class GeneratorState(NamedTuple):
    """Generator parameters, optimizer state, step and key."""

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class GeneratorFlow(NamedTuple):
    """``init(key, params) -> GeneratorState``; ``update(state, target_batch) -> (state, info)``."""

    init: Callable[[jax.Array, Any], GeneratorState]
    update: Callable[[GeneratorState, jax.Array], tuple[GeneratorState, dict]]


def generator_flow(
    generator_fn: GeneratorFn,
    optimizer: optax.GradientTransformation,
    *,
    latent_dim: int,
    batch_size: int,
    sigma: ArrayLike,
    step_size: ArrayLike,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> GeneratorFlow:
    """Weber Alg. 2: SD-flow target generation + least-squares regression of the generator.

    Args:
        generator_fn: ``(params, xi (n, latent_dim)) -> (n, d)``.
        optimizer: optax optimizer for the regression (Weber C.4: SGD, lr 1e-3).
        latent_dim: dimension of ``xi ~ N(0, I)``.
        batch_size: generated points per step.
        sigma: constant noise level (scalar; may be traced).
        step_size: SD flow step ``eta`` of eq. 15 (targets move by ``eta / 2`` times the bracket).

    Returns:
        a :class:`GeneratorFlow`; ``info`` holds the regression loss and the mean
        SD displacement norm.
    """
    check_positive_int(latent_dim, "latent_dim")
    check_positive_int(batch_size, "batch_size")
    check_positive(sigma, "sigma")
    check_positive(step_size, "step_size")

    def init(key, params) -> GeneratorState:
        return GeneratorState(params, optimizer.init(params), jnp.zeros((), jnp.int32), key)

    def update(state: GeneratorState, target: jax.Array):
        key, k_latent, k_noise = jax.random.split(state.key, 3)
        xi = jax.random.normal(k_latent, (batch_size, latent_dim))
        generated = generator_fn(state.params, xi)
        moved = jax.lax.stop_gradient(
            sd_flow_targets(
                k_noise,
                generated,
                target,
                sigma,
                step_size,
                z_chunk=z_chunk,
                point_chunk=point_chunk,
            )
        )

        def regression_loss(params):
            return 0.5 * jnp.sum((generator_fn(params, xi) - moved) ** 2)

        loss, grads = jax.value_and_grad(regression_loss)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        info = {
            "loss": loss,
            "displacement": jnp.mean(jnp.linalg.norm(moved - generated, axis=-1)),
        }
        return GeneratorState(params, opt_state, state.step + 1, key), info

    return GeneratorFlow(init, update)
