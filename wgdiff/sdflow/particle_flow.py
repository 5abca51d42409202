"""Particle optimization (Weber Alg. 1) for SD flow, MMD gradient flow and SVGD.

A flow is an optax-style pair ``init(key, particles, conditions) -> FlowState``
and ``update(state, target) -> FlowState``. Everything Weber varies in sec. 7.1
except the batch size lives in :class:`FlowConditions` as array leaves, so a
whole grid of conditions and trials is one ``jax.vmap`` of one compiled
program; only the method and BATCH (a shape) need separate programs.

One update, for particles ``y`` (all of them, or a random batch):

1. ``sigma^2`` is constant (CONST) or follows the cosine schedule
   ``sigma^2(t) = sigma_max^2 cos(pi t / 2)``, ``t in [0, t_max]``,
   ``t_max = 2/pi arccos(sigma_min^2 / sigma_max^2)`` over the run (sec. 7.1).
2. ANNEAL injects noise ``z = y + sigma eps`` (the noisy proxy of sec. 3.1);
   otherwise ``z = y``.
3. The direction ``g`` at ``z``: SD ``D_p(z) - D_q(z)`` (the bracket of eq. 15,
   moved by ``eta`` times it as Alg. 1 writes ``y <- y + eta Delta z``), MMD
   eq. 47, or SVGD eq. 51 on the particle set ``z`` with the true target score.
4. ``y <- y + eta g`` (SGD) or, with ADAGRAD, Liu & Wang's RMSProp-style
   AdaGrad ``hist = 0.9 hist + 0.1 g^2`` (``g^2`` on a particle's first
   update), ``y <- y + eta g / (1e-6 + sqrt(hist))``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> target = jax.random.normal(jax.random.key(0), (32, 2)) + 4.0
    >>> flow = particle_flow("sd", n_steps=100)
    >>> cond = FlowConditions.create(sigma2_const=0.5, step_size=0.5)
    >>> state = flow.init(jax.random.key(1), jnp.zeros((32, 2)), cond)
    >>> state, _ = run_particle_flow(flow, state, target, 100)
    >>> bool(jnp.abs(state.particles.mean(0) - target.mean(0)).max() < 0.1)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from wgdiff._checks import check_positive_int
from wgdiff.sdflow.directions import (
    kernel_denoiser,
    mmd_direction,
    score_difference,
    svgd_direction,
)
from wgdiff.sdflow.kernels import DEFAULT_POINT_CHUNK, DEFAULT_Z_CHUNK, check_point_set

METHODS = ("sd", "mmd", "svgd")
ADAGRAD_DECAY = 0.9
ADAGRAD_FUDGE = 1e-6


@struct.dataclass
class FlowConditions:
    """One experimental condition of Weber sec. 7.1 (all fields are array leaves, vmappable).

    Attributes:
        adagrad: ADAGRAD (RMSProp-style AdaGrad of Liu & Wang's code) vs plain SGD.
        anneal: ANNEAL, inject noise ``z = y + sigma eps`` before the direction.
        constant_noise: CONST, ``sigma^2 = sigma2_const`` throughout; else cosine schedule.
        sigma2_const: constant ``sigma^2`` (Weber: median heuristic on the base data).
        sigma2_max, sigma2_min: ends of the cosine schedule.
        step_size: ``eta``.
    """

    adagrad: jax.Array
    anneal: jax.Array
    constant_noise: jax.Array
    sigma2_const: jax.Array
    sigma2_max: jax.Array
    sigma2_min: jax.Array
    step_size: jax.Array

    @classmethod
    def create(
        cls,
        *,
        adagrad: bool = False,
        anneal: bool = False,
        constant_noise: bool = True,
        sigma2_const: float = 1.0,
        sigma2_max: float = 10.0,
        sigma2_min: float = 0.5,
        step_size: float = 0.1,
    ) -> FlowConditions:
        """Build conditions from Python values (validated eagerly)."""
        for name, value in (
            ("sigma2_const", sigma2_const),
            ("sigma2_max", sigma2_max),
            ("sigma2_min", sigma2_min),
            ("step_size", step_size),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if sigma2_min > sigma2_max:
            raise ValueError(
                f"sigma2_min must not exceed sigma2_max, got {sigma2_min} > {sigma2_max}"
            )
        return cls(
            adagrad=jnp.asarray(adagrad),
            anneal=jnp.asarray(anneal),
            constant_noise=jnp.asarray(constant_noise),
            sigma2_const=jnp.asarray(sigma2_const, jnp.float32),
            sigma2_max=jnp.asarray(sigma2_max, jnp.float32),
            sigma2_min=jnp.asarray(sigma2_min, jnp.float32),
            step_size=jnp.asarray(step_size, jnp.float32),
        )


def stack_conditions(conditions: list[FlowConditions]) -> FlowConditions:
    """Stack conditions along a new leading axis for ``jax.vmap``."""
    if not conditions:
        raise ValueError("conditions must be a non-empty list of FlowConditions")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *conditions)


def cosine_sigma2(step, n_steps: int, sigma2_max, sigma2_min):
    """Weber's cosine variance schedule at iteration ``step`` of ``n_steps`` (sec. 7.1).

    ``sigma^2(t) = sigma_max^2 cos(pi t / 2)`` with ``t`` running linearly from 0 to
    ``t_max = 2/pi arccos(sigma_min^2 / sigma_max^2)``, so it ends at ``sigma_min^2``.
    """
    t_max = 2.0 / math.pi * jnp.arccos(sigma2_min / sigma2_max)
    frac = jnp.asarray(step, jnp.float32) / max(n_steps - 1, 1)
    return sigma2_max * jnp.cos(0.5 * math.pi * t_max * jnp.minimum(frac, 1.0))


class FlowState(NamedTuple):
    """State of a particle flow.

    Attributes:
        particles: (M, d) current particles ``y``.
        grad_history: (M, d) AdaGrad second-moment history (zeros before the first step).
        step: scalar int32 iteration counter.
        key: PRNG key for noise and batches.
        conditions: the :class:`FlowConditions` of this run.
    """

    particles: jax.Array
    grad_history: jax.Array
    step: jax.Array
    key: jax.Array
    conditions: FlowConditions


class ParticleFlow(NamedTuple):
    """``init(key, particles, conditions) -> FlowState``; ``update(state, target) -> FlowState``."""

    init: Callable[[jax.Array, jax.Array, FlowConditions], FlowState]
    update: Callable[[FlowState, jax.Array], FlowState]


def adagrad_step(grad, history, step_size):
    """Liu & Wang's AdaGrad: returns ``(displacement, new_history)`` (history 0 = first step)."""
    new_history = jnp.where(
        history == 0, grad**2, ADAGRAD_DECAY * history + (1 - ADAGRAD_DECAY) * grad**2
    )
    return step_size * grad / (ADAGRAD_FUDGE + jnp.sqrt(new_history)), new_history


def particle_flow(
    method: str,
    n_steps: int,
    *,
    batch_size: int | None = None,
    target_score: Callable[[jax.Array], jax.Array] | None = None,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> ParticleFlow:
    """Weber Alg. 1 for ``method`` in ``("sd", "mmd", "svgd")``.

    Args:
        method: which direction moves the particles.
        n_steps: length of the run (sets the cosine schedule's time axis).
        batch_size: BATCH condition; every particle moves each update, but the kernel
            sums run over this many randomly drawn target points and this many
            randomly drawn particles (for SVGD: the particles whose scores and
            kernel gradients are averaged). ``None`` = full data.
        target_score: ``(n, d) -> (n, d)`` score of the target for SVGD. ``None``
            estimates it from the target sample (or batch) at the current
            bandwidth, ``(D_p(x) - x) / sigma^2`` (Tweedie, eq. 13), for targets
            known only through samples.
        z_chunk, point_chunk: kernel block sizes.

    Returns:
        a :class:`ParticleFlow`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_positive_int(n_steps, "n_steps")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    if method == "svgd" and target_score is not None and not callable(target_score):
        raise ValueError("target_score must be None or a callable (n, d) -> (n, d)")
    chunks = dict(z_chunk=z_chunk, point_chunk=point_chunk)

    def direction(z, target, clean, noisy_kernel_points, sigma):
        if method == "sd":
            return score_difference(z, target, clean, sigma, **chunks)
        if method == "mmd":
            return mmd_direction(z, target, clean, sigma, **chunks)
        score = target_score
        if score is None:
            score = lambda x: (kernel_denoiser(x, target, sigma, **chunks) - x) / sigma**2
        return svgd_direction(z, score, sigma, kernel_points=noisy_kernel_points, **chunks)

    def init(key, particles, conditions: FlowConditions) -> FlowState:
        check_point_set(particles, "particles")
        if batch_size is not None and batch_size > particles.shape[0]:
            raise ValueError(
                f"batch_size {batch_size} exceeds the number of particles {particles.shape[0]}"
            )
        particles = jnp.asarray(particles, jnp.result_type(particles, float))
        return FlowState(
            particles=particles,
            grad_history=jnp.zeros_like(particles),
            step=jnp.zeros((), jnp.int32),
            key=key,
            conditions=conditions,
        )

    def update(state: FlowState, target: jax.Array) -> FlowState:
        cond = state.conditions
        key, k_noise, k_target, k_particles = jax.random.split(state.key, 4)
        sigma2 = jnp.where(
            cond.constant_noise,
            cond.sigma2_const,
            cosine_sigma2(state.step, n_steps, cond.sigma2_max, cond.sigma2_min),
        )
        sigma = jnp.sqrt(sigma2).astype(state.particles.dtype)
        y = state.particles
        noise = jax.random.normal(k_noise, y.shape, y.dtype)
        z = y + jnp.where(cond.anneal, sigma, 0.0) * noise
        if batch_size is None:
            tgt, clean, noisy = target, y, z
        else:
            t_idx = jax.random.choice(
                k_target, target.shape[0], (min(batch_size, target.shape[0]),), replace=False
            )
            s_idx = jax.random.choice(k_particles, y.shape[0], (batch_size,), replace=False)
            tgt, clean, noisy = target[t_idx], y[s_idx], z[s_idx]
        grad = direction(z, tgt, clean, noisy, sigma)
        adapted, new_hist = adagrad_step(grad, state.grad_history, cond.step_size)
        displacement = jnp.where(cond.adagrad, adapted, cond.step_size * grad)
        history = jnp.where(cond.adagrad, new_hist, state.grad_history)
        return FlowState(y + displacement, history, state.step + 1, key, cond)

    return ParticleFlow(init, update)


def run_particle_flow(
    flow: ParticleFlow,
    state: FlowState,
    target: jax.Array,
    n_steps: int,
    *,
    monitor: Callable[[jax.Array], jax.Array] | None = None,
    monitor_every: int = 1,
) -> tuple[FlowState, jax.Array | None]:
    """Apply ``flow.update`` ``n_steps`` times in a ``lax.scan``.

    Args:
        flow: a :class:`ParticleFlow`.
        state: its state.
        target: (N, d) target samples.
        n_steps: number of updates, a multiple of ``monitor_every``.
        monitor: optional ``particles (M, d) -> pytree`` recorded after every
            ``monitor_every``-th update.
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
    check_point_set(target, "target", state.particles.shape[-1])

    def inner(s, _):
        return flow.update(s, target), None

    def outer(s, _):
        s, _ = jax.lax.scan(inner, s, None, length=monitor_every)
        return s, (monitor(s.particles) if monitor is not None else None)

    return jax.lax.scan(outer, state, None, length=n_steps // monitor_every)
