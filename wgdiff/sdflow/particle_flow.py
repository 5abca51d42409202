"""Particle optimization (Weber Alg. 1) for SD flow, MMD gradient flow and SVGD.

A flow is an optax-style pair ``init(key, particles, conditions) -> FlowState``
and ``update(state, target) -> (FlowState, info)`` (the contract of
:mod:`wgdiff.sdflow.flow`, iterated by :func:`~wgdiff.sdflow.run_flow`).
Everything Weber varies in sec. 7.1 except the batch size lives in
:class:`FlowConditions` as array leaves, so a whole grid of conditions and
trials runs through one compiled program; only the method and BATCH (a shape)
need separate programs.

One update:

1. ``sigma^2`` is constant (CONST) or follows the cosine schedule
   ``sigma^2(t) = sigma_max^2 cos(pi t / 2)``, ``t in [0, t_max]``,
   ``t_max = 2/pi arccos(sigma_min^2 / sigma_max^2)`` over the run (sec. 7.1).
2. BATCH draws ``batch_size`` target points and ``batch_size`` particles
   (without replacement, :func:`draw_batch_indices`); with
   ``batch_update="drawn"`` (Alg. 1 as printed) only the drawn particles move,
   with ``"all"`` every particle moves and the drawn sets only enter the kernel
   sums. Full data uses everything.
3. ANNEAL injects noise ``z = y + sigma eps`` (the noisy proxy of sec. 3.1);
   otherwise ``z = y``.
4. The direction ``g`` at ``z``: SD ``SD_STEP_SCALE (D_p(z) - D_q(z))`` with
   ``SD_STEP_SCALE = 1/2``, the ``eta/2`` of eq. 15 (the one place that
   convention lives; Alg. 1 only writes ``Delta z ∝ D_p - D_q``); MMD eq. 47;
   SVGD eq. 51 on the moved particles ``z``, with the exact target score if
   one is given and otherwise the kernel score of the target sample (eq. 13,
   :func:`~wgdiff.sdflow.kernel_score`) at its own bandwidth, and an SVGD
   kernel bandwidth that is the condition's ``sigma`` or Liu & Wang's median
   heuristic recomputed every iteration.
5. ``y <- y + eta g`` (SGD) or, with ADAGRAD, Liu & Wang's RMSProp-style
   AdaGrad ``hist = 0.9 hist + 0.1 g^2`` (``g^2`` on a particle's first
   update), ``y <- y + eta g / (1e-6 + sqrt(hist))``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sdflow import run_flow
    >>> target = jax.random.normal(jax.random.key(0), (32, 2)) + 4.0
    >>> flow = particle_flow("sd", n_steps=100)
    >>> cond = FlowConditions.create(sigma2_const=0.5, step_size=1.0)
    >>> state = flow.init(jax.random.key(1), jnp.zeros((32, 2)), cond)
    >>> state, _ = run_flow(flow, state, target, 100)
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
from jax.typing import ArrayLike

from wgdiff._checks import check_positive_int
from wgdiff.sdflow.directions import (
    SD_STEP_SCALE,
    kernel_score,
    median_heuristic_bandwidth,
    mmd_direction,
    score_difference,
    svgd_direction,
)
from wgdiff.sdflow.kernels import DEFAULT_POINT_CHUNK, DEFAULT_Z_CHUNK, check_point_set

METHODS = ("sd", "mmd", "svgd")
BATCH_UPDATES = ("drawn", "all")
SVGD_BANDWIDTHS = ("sigma", "median")
# The per-iteration median runs over an evenly strided subset of at most this many
# kernel particles: the exact median of all 1024^2 squared distances costs ~10 SD
# steps on CPU (23 ms against 2.2 ms), 128 points 0.3 ms, within ~2% of it.
SVGD_MEDIAN_MAX_POINTS = 128
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


def cosine_sigma2(
    step: ArrayLike, n_steps: int, sigma2_max: ArrayLike, sigma2_min: ArrayLike
) -> jax.Array:
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
        grad_history: (M, d) AdaGrad second-moment history (zeros before a
            particle's first update).
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
    """``init(key, particles, conditions) -> FlowState``;
    ``update(state, target) -> (FlowState, info)``.

    ``info``: ``sigma2`` (the noise level of the update) and ``displacement``
    (mean norm of the moves of the particles that moved).
    """

    init: Callable[[jax.Array, jax.Array, FlowConditions], FlowState]
    update: Callable[[FlowState, jax.Array], tuple[FlowState, dict]]


def adagrad_step(
    grad: jax.Array, history: jax.Array, step_size: ArrayLike
) -> tuple[jax.Array, jax.Array]:
    """Liu & Wang's AdaGrad: returns ``(displacement, new_history)`` (history 0 = first step)."""
    new_history = jnp.where(
        history == 0, grad**2, ADAGRAD_DECAY * history + (1 - ADAGRAD_DECAY) * grad**2
    )
    return step_size * grad / (ADAGRAD_FUDGE + jnp.sqrt(new_history)), new_history


def draw_batch_indices(key: jax.Array, n: int, size: int) -> jax.Array:
    """``size`` distinct indices of ``range(n)``, every subset equally likely (Alg. 1's batches).

    The indices of the ``size`` largest of ``n`` i.i.d. uniform keys (one ``lax.top_k``):
    the same distribution as ``jax.random.choice(key, n, (size,), replace=False)``,
    whose full random permutation cost 191 us against 55 us here at n = 1024,
    size = 128 (CPU, one thread) -- most of a BATCH update of the tables.

    Args:
        key: PRNG key.
        n: population size.
        size: number of indices, ``1 <= size <= n``.

    Returns:
        (size,) int32 indices, distinct.
    """
    check_positive_int(n, "n")
    check_positive_int(size, "size")
    if size > n:
        raise ValueError(f"size must not exceed n, got size {size} > n {n}")
    return jax.lax.top_k(jax.random.uniform(key, (n,)), size)[1]


def particle_flow(
    method: str,
    n_steps: int,
    *,
    batch_size: int | None = None,
    batch_update: str = "drawn",
    target_score: Callable[[jax.Array], jax.Array] | None = None,
    score_bandwidth: float | None = None,
    svgd_bandwidth: str = "sigma",
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> ParticleFlow:
    """Weber Alg. 1 for ``method`` in ``("sd", "mmd", "svgd")``.

    Args:
        method: which direction moves the particles.
        n_steps: length of the run (sets the cosine schedule's time axis).
        batch_size: BATCH condition: each update draws this many target points
            and this many particles; ``None`` = full data.
        batch_update: ``"drawn"`` (Alg. 1: only the drawn particles move, their
            directions computed from the drawn sets) or ``"all"`` (every
            particle moves, the kernel sums run over the drawn sets).
        target_score: SVGD only. ``(n, d) -> (n, d)`` exact score of the target;
            ``None`` (default) uses the kernel score of the target sample (or
            its drawn batch), :func:`~wgdiff.sdflow.kernel_score`.
        score_bandwidth: SVGD with the kernel score only: bandwidth of the
            target's kernel density estimate; ``None`` = the condition's noise
            level ``sigma`` (the score of the smoothed proxy ``p~``, eq. 12-13).
        svgd_bandwidth: SVGD only: ``"sigma"`` (kernel bandwidth = the
            condition's ``sigma``) or ``"median"`` (Liu & Wang's
            ``sqrt(0.5 median(D^2) / log(n + 1))`` of the current kernel
            particles, every iteration; :func:`median_heuristic_bandwidth` on an
            evenly strided subset of at most ``SVGD_MEDIAN_MAX_POINTS`` of them).
        z_chunk, point_chunk: kernel block sizes.

    Returns:
        a :class:`ParticleFlow`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_positive_int(n_steps, "n_steps")
    if batch_size is not None:
        check_positive_int(batch_size, "batch_size")
    if batch_update not in BATCH_UPDATES:
        raise ValueError(f"batch_update must be one of {BATCH_UPDATES}, got {batch_update!r}")
    if svgd_bandwidth not in SVGD_BANDWIDTHS:
        raise ValueError(f"svgd_bandwidth must be one of {SVGD_BANDWIDTHS}, got {svgd_bandwidth!r}")
    if target_score is not None and not callable(target_score):
        raise ValueError("target_score must be None or a callable (n, d) -> (n, d)")
    if score_bandwidth is not None and not (
        isinstance(score_bandwidth, int | float)
        and math.isfinite(score_bandwidth)
        and score_bandwidth > 0
    ):
        raise ValueError(f"score_bandwidth must be None or positive, got {score_bandwidth!r}")
    if method != "svgd" and (
        target_score is not None or score_bandwidth is not None or svgd_bandwidth != "sigma"
    ):
        raise ValueError(
            "target_score, score_bandwidth and svgd_bandwidth configure SVGD only, "
            f"got method {method!r}"
        )
    if target_score is not None and score_bandwidth is not None:
        raise ValueError("score_bandwidth sets the kernel score; it conflicts with target_score")
    chunks = dict(z_chunk=z_chunk, point_chunk=point_chunk)

    def direction(z, target, clean, kernel_points, sigma):
        """Direction at the moving noisy particles ``z``; kernel sums over the drawn sets."""
        if method == "sd":
            return SD_STEP_SCALE * score_difference(z, target, clean, sigma, **chunks)
        if method == "mmd":
            return mmd_direction(z, target, clean, sigma, **chunks)
        score = target_score
        if score is None:
            tau = sigma if score_bandwidth is None else score_bandwidth
            score = lambda x: kernel_score(x, target, tau, **chunks)
        if svgd_bandwidth == "median":
            h = median_heuristic_bandwidth(kernel_points, max_points=SVGD_MEDIAN_MAX_POINTS)
        else:
            h = sigma
        return svgd_direction(z, score, h, kernel_points=kernel_points, **chunks)

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

    def move(grad, history, step_size, adagrad):
        adapted, new_hist = adagrad_step(grad, history, step_size)
        displacement = jnp.where(adagrad, adapted, step_size * grad)
        return displacement, jnp.where(adagrad, new_hist, history)

    def update(state: FlowState, target: jax.Array) -> tuple[FlowState, dict]:
        cond = state.conditions
        key, k_noise, k_target, k_particles = jax.random.split(state.key, 4)
        sigma2 = jnp.where(
            cond.constant_noise,
            cond.sigma2_const,
            cosine_sigma2(state.step, n_steps, cond.sigma2_max, cond.sigma2_min),
        )
        sigma = jnp.sqrt(sigma2).astype(state.particles.dtype)
        y, hist = state.particles, state.grad_history
        noise_scale = jnp.where(cond.anneal, sigma, 0.0)
        if batch_size is None:
            z = y + noise_scale * jax.random.normal(k_noise, y.shape, y.dtype)
            grad = direction(z, target, y, z, sigma)
            disp, hist = move(grad, hist, cond.step_size, cond.adagrad)
            y = y + disp
        else:
            t_idx = draw_batch_indices(k_target, target.shape[0], min(batch_size, target.shape[0]))
            s_idx = draw_batch_indices(k_particles, y.shape[0], batch_size)
            tgt = target[t_idx]
            if batch_update == "drawn":
                y_b = y[s_idx]
                z_b = y_b + noise_scale * jax.random.normal(k_noise, y_b.shape, y.dtype)
                grad = direction(z_b, tgt, y_b, z_b, sigma)
                disp, hist_b = move(grad, hist[s_idx], cond.step_size, cond.adagrad)
                y = y.at[s_idx].add(disp)
                hist = hist.at[s_idx].set(hist_b)
            else:
                z = y + noise_scale * jax.random.normal(k_noise, y.shape, y.dtype)
                grad = direction(z, tgt, y[s_idx], z[s_idx], sigma)
                disp, hist = move(grad, hist, cond.step_size, cond.adagrad)
                y = y + disp
        info = {"sigma2": sigma2, "displacement": jnp.mean(jnp.linalg.norm(disp, axis=-1))}
        return FlowState(y, hist, state.step + 1, key, cond), info

    return ParticleFlow(init, update)
