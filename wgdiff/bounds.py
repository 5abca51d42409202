"""Kwon, Fan & Lee: the W2 distance of a score model is bounded by its score-matching loss.

For the forward SDE ``dx = f dt + g dW`` and a score model ``s(x, t)``, Theorem 1
with Cauchy-Schwarz (Corollary 1, ``lambda = g^2``) and Theorem 2 give

    W2(p_0, q_0) <= sqrt(2 (int_0^T g^2 I^2 dt) J) + I(T) W2(p_T, q_T),

where ``J`` is ``J_SM`` (Kwon eq. 5) or the larger ``J_DSM`` (eq. 20, Theorem 2),
``I(t) = exp(int_0^t L_f + L_s g^2)`` is the integrating factor (eq. 15), ``L_f``
the Lipschitz constant of the drift (eq. 8) and ``L_s(t)`` the one-sided
Lipschitz constant of the model (eq. 9). The printed eq. 16/22 put the offset
``I(T) W2(p_T, q_T)`` inside the square root; Theorem 1 (eq. 14) puts it outside,
which is what is implemented here. The log-log intercept of eq. 25 is
``1/2 log(2 int g^2 I^2)`` (the authors' code keeps the factor 2 that eq. 25 drops).

The theorem needs ``L_s(t)`` wherever ``p_t`` and ``q_t`` put mass.
:func:`region_lipschitz` measures it over the union of forward-noised data (samples
of ``p_t``) and the sampler's own trajectory (samples of ``q_t``, from
:func:`reverse_sde_path` or its step-halving driver :func:`converged_reverse_path`)
at each time: the pairwise maximum over both sets together, refined by gradient
ascent, and the local ``lambda_max((J + J^T)/2)`` at every point. Given a
``trajectory``, :func:`wasserstein_bound` uses that estimate and records in
``sampled_outside`` the share of trajectory points outside the box ``L_s`` was
measured on (nonzero when ``lipschitz_points`` such as the authors' grid do not
cover the sampled region).

Everything is evaluated on a time grid ``t_0 < ... < t_{k-1} = T`` with ``t_0 = eps``
small: the bound then controls ``W2(p_eps, q_eps)``, and
``W2(p_0, p_eps) <= sqrt(E |x_eps - x_0|^2)`` (the ``start_offset``) is added so that
``bound`` compares directly with the distance between generated samples and data.

Example:
    >>> import jax, jax.numpy as jnp
    >>> A = jnp.array([[1.0, 2.0], [0.0, -3.0]])
    >>> points = jax.random.normal(jax.random.key(0), (64, 2))
    >>> est = one_sided_lipschitz(lambda x, t: x @ A.T, points, 0.0, refine_steps=50)
    >>> top = jnp.linalg.eigvalsh((A + A.T) / 2)[-1]
    >>> bool(jnp.abs(est - top) < 1e-4)
    True
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from wgdiff._checks import check_finite, check_ndim, check_positive_int, is_concrete
from wgdiff._types import Array, ArrayLike, PRNGKey, ScoreFn
from wgdiff.geometry import map_row_chunks
from wgdiff.metrics import w2
from wgdiff.samplers._common import as_pytree_callable
from wgdiff.sde import SDE, broadcast_time

# Pairs closer than this fraction of the point cloud's diameter are ignored: their
# difference quotient is dominated by float cancellation, not by the field.
_MIN_SEPARATION = 1e-4


class WassersteinBound(NamedTuple):
    """Kwon Cor. 1 / Thm 2 and its parts (all arrays; ``times`` etc. of shape ``(k,)``).

    Attributes:
        bound: ``start_offset + sqrt(2 weight_integral loss) + offset``, an upper bound
            on ``W2(p_0, q_eps)``.
        loss: ``J_DSM`` (eq. 20) or, when the true score is given, ``J_SM`` (eq. 5), with
            ``lambda = g^2``, integrated over ``[times[0], times[-1]]``.
        weight_integral: ``int g^2 I^2 dt`` (eq. 16).
        intercept: ``1/2 log(2 weight_integral)``, the intercept of the log-log line
            (eq. 25; slope 1/2 in ``log J``).
        offset: ``I(T) W2(p_T, q_T)``.
        start_offset: upper bound on ``W2(p_0, p_{times[0]})``.
        times: ``(k,)`` time grid.
        lipschitz: ``(k,)`` one-sided Lipschitz estimates ``L_s(t)`` (eq. 9).
        integrating_factor: ``(k,)`` ``I(t)`` (eq. 15).
        score_error: ``(k,)`` ``E |s - target|^2`` at each time (target: the conditional
            score ``grad log p_{0t}`` for ``J_DSM``, the true score for ``J_SM``).
        sampled_outside: ``(k,)`` share of the trajectory's points outside the
            bounding box of the points ``L_s(t)`` was measured on (None without a
            ``trajectory``); any nonzero entry means the sampled region exceeds the
            measured one and the bound is not certified there.
    """

    bound: jax.Array
    loss: jax.Array
    weight_integral: jax.Array
    intercept: jax.Array
    offset: jax.Array
    start_offset: jax.Array
    times: jax.Array
    lipschitz: jax.Array
    integrating_factor: jax.Array
    score_error: jax.Array
    sampled_outside: jax.Array | None = None


# --------------------------------------------------------------------------- helpers
def _check_points(points, name: str = "points") -> jax.Array:
    points = jnp.asarray(points)
    check_ndim(points, tuple(range(2, 6)), name, "(p, *event) with p >= 2")
    if points.shape[0] < 2:
        raise ValueError(f"{name} must have shape (p, *event) with p >= 2, got {points.shape}")
    check_finite(points, name)
    return points


def _check_times(times, T: float) -> jax.Array:
    times = jnp.asarray(times)
    check_ndim(times, 1, "times", "(k,) increasing, k >= 2")
    if times.shape[0] < 2:
        raise ValueError(f"times must have shape (k,) with k >= 2, got {times.shape}")
    if is_concrete(times):
        arr = np.asarray(times)
        if not np.all(np.isfinite(arr)) or np.any(np.diff(arr) <= 0):
            raise ValueError("times must be finite and strictly increasing")
        if arr[0] < 0 or arr[-1] > T * (1 + 1e-6):
            raise ValueError(f"times must lie in [0, T] = [0, {T}], got [{arr[0]}, {arr[-1]}]")
    return times


def _trapezoid_cumulative(values, times):
    """``int_{t_0}^{t_j} values dt`` for each ``j`` (trapezoid rule): ``(k,) -> (k,)``."""
    increments = 0.5 * (values[1:] + values[:-1]) * jnp.diff(times)
    return jnp.concatenate([jnp.zeros((1,), values.dtype), jnp.cumsum(increments)])


def _trapezoid(values, times):
    return jnp.sum(0.5 * (values[1:] + values[:-1]) * jnp.diff(times))


def time_grid(sde: SDE, n_times: int = 64, eps: float = 1e-3) -> Array:
    """A grid on ``[eps, T]`` fine near ``eps`` and uniform elsewhere: ``(n_times,)``.

    Half the nodes are geometric from ``eps`` (the DSM integrand behaves like
    ``1 / t`` there), half uniform (the schedule varies on the scale of ``T``).
    """
    n_times = check_positive_int(n_times, "n_times")
    if n_times < 4:
        raise ValueError(f"n_times must be at least 4, got {n_times}")
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}")
    n_geo = n_times // 2
    geometric = np.geomspace(eps, sde.T, n_geo + 1)[:-1]
    rest = n_times - n_geo
    uniform = np.linspace(eps, sde.T, rest + 1)[1:]
    grid = np.unique(np.concatenate([geometric, uniform]))
    while grid.size < n_times:  # an exact coincidence of the two grids; fill the largest gap
        gap = int(np.argmax(np.diff(grid)))
        grid = np.sort(np.append(grid, 0.5 * (grid[gap] + grid[gap + 1])))
    return jnp.asarray(grid)


# ------------------------------------------------------------- one-sided Lipschitz
def _pair_quotients(s, x, min_sq_distance, chunk_size):
    """``(s_j - s_k).(x_j - x_k) / |x_j - x_k|^2`` for all pairs: ``(p, d) -> (p, p)``.

    Differences are formed explicitly (no Gram-matrix expansion) so close pairs do
    not lose precision; rows are processed ``chunk_size`` at a time by the shared
    :func:`wgdiff.geometry.map_row_chunks`.
    """
    p = x.shape[0]

    def chunk(xs_c, idx):
        x_c, s_c = xs_c
        dx = x_c[:, None, :] - x[None, :, :]
        ds = s_c[:, None, :] - s[None, :, :]
        sq = jnp.sum(dx**2, axis=-1)
        valid = (sq > min_sq_distance) & (idx[:, None] != jnp.arange(p)[None, :])
        valid = valid & (idx < p)[:, None]  # padded rows
        q = jnp.sum(ds * dx, axis=-1) / jnp.where(valid, sq, 1.0)
        return jnp.where(valid, q, -jnp.inf)

    return map_row_chunks(chunk, (x, s), chunk_size).reshape(-1, p)[:p]


def _flat_field(score_fn, event, t):
    def field(x_flat):
        x = x_flat.reshape((x_flat.shape[0],) + event)
        return score_fn(x, t).reshape(x_flat.shape[0], -1)

    return field


def _osl_single(
    score_fn,
    event,
    refine_steps,
    refine_pairs,
    chunk_size,
    learning_rate,
    points_flat,
    t,
    lower=None,
    upper=None,
):
    """Grid maximum plus optional projected gradient ascent, for one time ``t``.

    The ascent stays in the box ``[lower, upper]`` (default: the points' bounding box).
    """
    field = _flat_field(score_fn, event, t)
    if lower is None:
        lower = jnp.min(points_flat, axis=0)
        upper = jnp.max(points_flat, axis=0)
    diameter = jnp.sqrt(jnp.sum((upper - lower) ** 2))
    min_sep = _MIN_SEPARATION * diameter
    q = _pair_quotients(field(points_flat), points_flat, min_sep**2, chunk_size)
    grid_max = jnp.max(q)
    if refine_steps == 0:
        return grid_max

    p = points_flat.shape[0]
    n_pairs = min(refine_pairs, p * (p - 1))
    _, flat_idx = jax.lax.top_k(q.reshape(-1), n_pairs)
    x0 = points_flat[flat_idx // p]
    y0 = points_flat[flat_idx % p]

    def quotient(xy):
        x, y = xy
        sx, sy = jnp.split(field(jnp.concatenate([x, y])), 2)
        dx = x - y
        return jnp.sum((sx - sy) * dx, axis=-1) / jnp.maximum(jnp.sum(dx**2, axis=-1), min_sep**2)

    def project(xy):
        x, y = jnp.clip(xy[0], lower, upper), jnp.clip(xy[1], lower, upper)
        # keep the pair at least min_sep apart, moving both ends symmetrically
        dx = x - y
        dist = jnp.sqrt(jnp.sum(dx**2, axis=-1, keepdims=True))
        grow = jnp.maximum(min_sep / jnp.maximum(dist, 1e-30), 1.0)
        mid = 0.5 * (x + y)
        return mid + 0.5 * grow * dx, mid - 0.5 * grow * dx

    lr = 1e-2 * diameter if learning_rate is None else learning_rate
    opt = optax.adam(lr)
    objective = lambda xy: -jnp.sum(quotient(xy))  # pairs are independent

    def step(carry, _):
        xy, state, best = carry
        grads = jax.grad(objective)(xy)
        updates, state = opt.update(grads, state, xy)
        xy = project(optax.apply_updates(xy, updates))
        best = jnp.maximum(best, jnp.max(quotient(xy)))
        return (xy, state, best), None

    xy = (x0, y0)
    (_, _, best), _ = jax.lax.scan(step, (xy, opt.init(xy), grid_max), None, length=refine_steps)
    return best


def one_sided_lipschitz(
    score_fn: ScoreFn,
    points: ArrayLike,
    t: ArrayLike,
    *,
    refine_steps: int = 0,
    refine_pairs: int = 8,
    learning_rate: float | None = None,
    chunk_size: int = 256,
) -> Array:
    """One-sided Lipschitz constant of ``x -> s(x, t)`` estimated from points (Kwon eq. 9).

    ``L = max_{j != k} (s(x_j) - s(x_k)).(x_j - x_k) / |x_j - x_k|^2`` over the given
    points (the authors' estimate used a 10 x 10 grid of ``[0, 0.9]^2``). With
    ``refine_steps > 0`` the ``refine_pairs`` best pairs are moved by projected
    gradient ascent (Adam) on the quotient, inside the points' bounding box; the
    result is the maximum over the grid and every iterate, so refinement can only
    raise the estimate. Every value is a lower bound on the true constant over the
    box, which for a C^1 field equals ``max_x lambda_max((J + J^T) / 2)``.

    Args:
        score_fn: ``(x (p, *event), t) -> (p, *event)``.
        points: ``(p, *event)``, ``p >= 2``.
        t: scalar time.
        refine_steps: gradient-ascent iterations (0: pairs of ``points`` only).
        refine_pairs: number of best pairs refined.
        learning_rate: Adam step; default ``1e-2`` times the box diameter.
        chunk_size: rows of the pair matrix evaluated at once (memory O(chunk * p * d)).

    Returns:
        Scalar estimate of ``L_s(t)``.
    """
    points = _check_points(points)
    refine_steps = int(refine_steps)
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
    refine_pairs = check_positive_int(refine_pairs, "refine_pairs")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    event = points.shape[1:]
    flat = points.reshape(points.shape[0], -1)
    return _osl_single(
        score_fn,
        event,
        refine_steps,
        refine_pairs,
        min(chunk_size, flat.shape[0]),
        learning_rate,
        flat,
        jnp.asarray(t),
    )


def local_one_sided_lipschitz(score_fn: ScoreFn, points: ArrayLike, t: ArrayLike) -> Array:
    """``lambda_max((J + J^T) / 2)`` of the Jacobian of ``s(., t)`` at each point: ``(p,)``.

    For a C^1 field the supremum of this over a convex set is the one-sided
    Lipschitz constant on that set (the infinitesimal form of Kwon eq. 9).
    """
    points = _check_points(points)
    event = points.shape[1:]
    flat = points.reshape(points.shape[0], -1)

    def single(xi):
        jac = jax.jacfwd(lambda v: score_fn(v.reshape((1,) + event), t).reshape(-1))(xi)
        return jnp.linalg.eigvalsh(0.5 * (jac + jac.T))[-1]

    return jax.jit(jax.vmap(single))(flat)  # one program, not one dispatch per operation


def lipschitz_profile(
    score_fn: ScoreFn,
    points: ArrayLike,
    times: ArrayLike,
    *,
    per_time: bool = False,
    refine_steps: int = 0,
    refine_pairs: int = 8,
    learning_rate: float | None = None,
    chunk_size: int = 256,
    box: tuple[ArrayLike, ArrayLike] | None = None,
) -> Array:
    """``L_s(t)`` at each of ``times (k,)``: ``(k,)``.

    Args:
        score_fn: ``(x, t) -> like x``.
        points: ``(p, *event)`` used at every time, or with ``per_time=True``
            ``(k, p, *event)``, one point set per time.
        times: ``(k,)``.
        per_time: whether ``points`` has a leading time axis.
        refine_steps, refine_pairs, learning_rate, chunk_size: as in
            :func:`one_sided_lipschitz`.
        box: optional ``(lower, upper)``, each ``(k, D)`` with ``per_time`` or ``(D,)``
            (``D`` the flattened event size): where the refinement may move pairs,
            instead of the points' own bounding box (must contain the points).
    """
    times = jnp.asarray(times)
    check_ndim(times, 1, "times", "(k,)")
    points = jnp.asarray(points)
    if per_time:
        if points.ndim < 3 or points.shape[0] != times.shape[0]:
            raise ValueError(
                f"points must have shape (k, p, *event) with k = {times.shape[0]}, "
                f"got {points.shape}"
            )
        _check_points(points[0])
        check_finite(points, "points")
    else:
        _check_points(points)
    refine_steps = int(refine_steps)
    if refine_steps < 0:
        raise ValueError(f"refine_steps must be >= 0, got {refine_steps}")
    event = points.shape[2:] if per_time else points.shape[1:]
    p = points.shape[1] if per_time else points.shape[0]
    flat = points.reshape((times.shape[0], p, -1) if per_time else (p, -1))
    single = functools.partial(
        _osl_single,
        score_fn,
        event,
        refine_steps,
        check_positive_int(refine_pairs, "refine_pairs"),
        min(check_positive_int(chunk_size, "chunk_size"), p),
        learning_rate,
    )
    if box is None:
        if per_time:
            return jax.lax.map(lambda args: single(*args), (flat, times))
        return jax.lax.map(lambda t: single(flat, t), times)
    d = flat.shape[-1]
    lower, upper = (jnp.asarray(b, flat.dtype) for b in box)
    want = (times.shape[0], d) if per_time else (d,)
    if lower.shape != want or upper.shape != want:
        raise ValueError(f"box must be (lower, upper) of shape {want}, got {lower.shape}")
    if per_time:
        return jax.lax.map(lambda args: single(*args), (flat, times, lower, upper))
    return jax.lax.map(lambda t: single(flat, t, lower, upper), times)


# ------------------------------------------------- the sampler's own trajectory
class ReversePath(NamedTuple):
    """A reverse-SDE trajectory recorded at the bound's times, with its step-halving record.

    Attributes:
        path: ``(k, n, *event)`` states at ``times`` (``path[-1]`` is the start at ``T``,
            ``path[0]`` the samples at ``times[0]``).
        n_steps: Euler-Maruyama steps of the accepted level.
        levels: ``n_steps`` of every level run, coarse to fine.
        rms_changes: ``sqrt(mean |x_l - x_{l-1}|^2)`` of the final samples between each
            level and the previous one (same Brownian path), one per level after the first.
        w2_levels: ``W2(reference, x_l)`` per level (empty without a ``reference``).
        converged: whether the last level changed the samples by at most the tolerance.
    """

    path: jax.Array
    n_steps: int
    levels: tuple
    rms_changes: tuple
    w2_levels: tuple
    converged: bool


def _standard_increments(key, n_base: int, level: int, shape, dtype):
    """Unit-variance Brownian increments on ``n_base * 2^level`` equal substeps.

    Levy's construction: each refinement splits a standardized increment ``z`` of a
    step into ``(z + xi) / sqrt(2)`` and ``(z - xi) / sqrt(2)`` for its two halves
    (fresh ``xi`` per level), so the path at level ``l`` is that of level ``l + 1``
    summed in pairs: all levels share one Brownian path. Returns
    ``(n_base * 2^level, *shape)``.
    """
    z = jax.random.normal(jax.random.fold_in(key, 0), (n_base,) + shape, dtype)
    for lev in range(1, level + 1):
        xi = jax.random.normal(jax.random.fold_in(key, lev), z.shape, dtype)
        z = jnp.stack([z + xi, z - xi], axis=1).reshape((2 * z.shape[0],) + shape)
        z = z / math.sqrt(2.0)
    return z


@eqx.filter_jit
def _em_path(key, sde, score_fn, x_init, times, substeps, level):
    """Reverse-SDE Euler-Maruyama over every interval of ``times``; states at ``times``."""
    n_sub = substeps * 2**level

    def interval(x, inputs):
        j, t_lo, t_hi = inputs
        z = _standard_increments(jax.random.fold_in(key, j), substeps, level, x.shape, x.dtype)
        h = (t_hi - t_lo) / n_sub

        def step(x, inner):
            i, zi = inner
            t = t_hi - i * h
            drift = sde.reverse_drift(score_fn, x, jnp.full((x.shape[0],), t, x.dtype), 1.0)
            noise = sde.reverse_diffusion(t, 1.0) * jnp.sqrt(h) * zi
            return x - drift * h + noise, None

        x, _ = jax.lax.scan(step, x, (jnp.arange(n_sub, dtype=x.dtype), z))
        return x, x

    k = times.shape[0]
    idx = jnp.arange(k - 2, -1, -1)
    _, states = jax.lax.scan(interval, x_init, (idx, times[idx], times[idx + 1]))
    return jnp.concatenate([states[::-1], x_init[None]])


def _check_path_args(sde, x_init, times):
    x_init = jnp.asarray(x_init)
    check_ndim(x_init, tuple(range(2, 6)), "x_init", "(n, *event)")
    check_finite(x_init, "x_init")
    times = np.asarray(_check_times(times, sde.T), np.float64)
    if times[0] <= 0:
        raise ValueError("times[0] must be > 0")
    return x_init, times


def reverse_sde_path(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    x_init: ArrayLike,
    times: ArrayLike,
    *,
    substeps: int = 4,
    level: int = 0,
) -> jax.Array:
    """Euler-Maruyama on the reverse SDE from ``times[-1]`` to ``times[0]``, recorded at ``times``.

    Every interval ``[t_j, t_{j+1}]`` of the bound's grid is split into
    ``substeps 2^level`` equal steps, so each level halves the previous one's steps.
    The Brownian path depends on ``key`` only, not on the level
    (:func:`_standard_increments`), so two levels are a synchronous coupling and
    ``sqrt(E |x_l - x_{l+1}|^2)`` bounds the change of ``W2`` between them.
    Step ``t -> t - h``: ``x <- x - h [f - g^2 s(x, t)] + g(t) sqrt(h) z`` (noise on
    every step, the last one included: the states are samples of ``q_t``).

    Args:
        key: PRNG key (the Brownian path).
        sde: forward SDE.
        score_fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        x_init: ``(n, *event)`` state at ``times[-1]`` (usually ``T``).
        times: ``(k,)`` increasing grid in ``(0, T]``.
        substeps: steps per interval at level 0.
        level: number of step halvings.

    Returns:
        ``(k, n, *event)`` states at ``times``; entry ``k - 1`` is ``x_init``.
    """
    x_init, times = _check_path_args(sde, x_init, times)
    substeps = check_positive_int(substeps, "substeps")
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ValueError(f"level must be a non-negative int, got {level!r}")
    grid = jnp.asarray(times, x_init.dtype)
    return _em_path(key, sde, as_pytree_callable(score_fn), x_init, grid, substeps, level)


def converged_reverse_path(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    x_init: ArrayLike,
    times: ArrayLike,
    *,
    substeps: int = 4,
    max_level: int = 6,
    rtol: float = 0.02,
    reference: ArrayLike | None = None,
) -> ReversePath:
    """Halve the Euler-Maruyama step until the samples stop moving (a converged sampler).

    Runs :func:`reverse_sde_path` at levels ``0, 1, ...`` on one Brownian path and
    stops at the first level ``l >= 1`` whose final samples differ from level ``l - 1``
    by ``sqrt(mean |x_l - x_{l-1}|^2) <= rtol * scale``, where ``scale`` is
    ``W2(reference, x_l)`` when a ``reference`` sample is given (then the ``W2`` of the
    last two levels differ by at most ``rtol`` of itself, the coupling bound) and the
    RMS spread of ``x_l`` about its mean otherwise. Non-finite samples never pass.
    Euler-Maruyama has strong order 1 for this additive noise, so the accepted
    level's own error is about the last change.

    Args:
        key, sde, score_fn, x_init, times, substeps: as in :func:`reverse_sde_path`.
        max_level: last level tried (``(k - 1) substeps 2^max_level`` steps).
        rtol: relative tolerance.
        reference: optional ``(m, d)`` sample (e.g. the data batch) for the ``W2`` scale.

    Returns:
        :class:`ReversePath`; ``converged`` is False when ``max_level`` was reached
        without meeting the tolerance (the path is that of ``max_level``).
    """
    if isinstance(max_level, bool) or not isinstance(max_level, int) or max_level < 1:
        raise ValueError(f"max_level must be an int >= 1, got {max_level!r}")
    if not float(rtol) > 0:
        raise ValueError(f"rtol must be positive, got {rtol!r}")
    _, np_times = _check_path_args(sde, x_init, times)
    if reference is not None:
        reference = np.asarray(reference, np.float64)
        check_ndim(reference, 2, "reference", "(m, d)")
        check_finite(reference, "reference")
    levels, changes, w2s = [], [], []
    previous = None
    for level in range(max_level + 1):
        path = reverse_sde_path(key, sde, score_fn, x_init, times, substeps=substeps, level=level)
        final = np.asarray(path[0], np.float64).reshape(path.shape[1], -1)
        finite = bool(np.all(np.isfinite(final)))
        levels.append((np_times.size - 1) * substeps * 2**level)
        scale = np.nan
        if finite:
            if reference is not None:
                scale = w2(reference, final)
                w2s.append(scale)
            else:
                scale = float(np.sqrt(np.mean(np.sum((final - final.mean(0)) ** 2, -1))))
        elif reference is not None:
            w2s.append(float("nan"))
        if previous is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                change = float(np.sqrt(np.mean(np.sum((final - previous) ** 2, -1))))
            changes.append(change)
            if finite and np.isfinite(change) and change <= rtol * scale:
                return ReversePath(
                    path, levels[-1], tuple(levels), tuple(changes), tuple(w2s), True
                )
        previous = final
    return ReversePath(path, levels[-1], tuple(levels), tuple(changes), tuple(w2s), False)


# ------------------------------------------- L_s over the sampled region
class RegionLipschitz(NamedTuple):
    """``L_s(t)`` over forward-noised data and the sampler's trajectory: ``(k,)`` or ``(k, D)``.

    Attributes:
        value: ``max(pairwise, local)``, the estimate used in the bound.
        pairwise: refined pairwise maximum over the union (Kwon eq. 9).
        local: maximum of ``lambda_max((J + J^T) / 2)`` over every point of the union.
        lower: ``(k, D)`` lower corner of the union's bounding box (flattened event).
        upper: ``(k, D)`` upper corner.
    """

    value: jax.Array
    pairwise: jax.Array
    local: jax.Array
    lower: jax.Array
    upper: jax.Array


def forward_noised(key: PRNGKey, sde: SDE, x0: ArrayLike, times: ArrayLike) -> jax.Array:
    """``x_t = m(t) x0 + s(t) z`` at each time, fresh noise per time: ``(k, n, *event)``."""
    x0 = jnp.asarray(x0)
    noise = jax.random.normal(key, (times.shape[0],) + x0.shape, x0.dtype)
    m, s = sde.marginal_coeffs(times)
    return broadcast_time(m, noise) * x0[None] + broadcast_time(s, noise) * noise


def _subsample_union(data_t, traj_t, n_pair_points):
    """Up to ``n_pair_points`` of the union, half from each set (the first ones)."""
    half = n_pair_points // 2
    a = data_t[:, : min(half, data_t.shape[1])]
    b = traj_t[:, : min(n_pair_points - a.shape[1], traj_t.shape[1])]
    return jnp.concatenate([a, b], axis=1)


def region_lipschitz(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    x0: ArrayLike,
    trajectory: ArrayLike,
    times: ArrayLike,
    *,
    n_pair_points: int = 512,
    refine_steps: int = 100,
    refine_pairs: int = 8,
    chunk_size: int = 256,
) -> RegionLipschitz:
    """``L_s(t)`` measured where ``p_t`` and ``q_t`` put mass (Kwon eq. 9 over the sampled region).

    At each ``t_j`` the point set is the union of ``x0`` forward-noised to ``t_j``
    (samples of ``p_t``) and ``trajectory[j]`` (samples of ``q_t``). The pairwise
    maximum :func:`one_sided_lipschitz` runs on ``n_pair_points`` of the union (half
    from each set, so pairs across both enter) with ``refine_steps`` of projected
    gradient ascent inside the union's bounding box; the local estimate
    :func:`local_one_sided_lipschitz` runs on every point. Both are lower bounds on
    the constant over the box, so their maximum is too.

    Args:
        key: PRNG key (forward noise).
        sde: forward SDE.
        score_fn: ``(x, t) -> like x``.
        x0: ``(n0, *event)`` data.
        trajectory: ``(k, n, *event)`` sampler states at ``times`` (finite).
        times: ``(k,)``.
        n_pair_points: points of the union used for pairs (cost ``O(n_pair_points^2)``).
        refine_steps, refine_pairs, chunk_size: as in :func:`one_sided_lipschitz`.

    Returns:
        :class:`RegionLipschitz`.
    """
    times = jnp.asarray(times)
    check_ndim(times, 1, "times", "(k,)")
    x0 = _check_points(x0, "x0")
    trajectory = jnp.asarray(trajectory)
    if trajectory.ndim != x0.ndim + 1 or trajectory.shape[0] != times.shape[0]:
        raise ValueError(
            f"trajectory must have shape (k, n, *event) with k = {times.shape[0]} and event "
            f"{x0.shape[1:]}, got {trajectory.shape}"
        )
    if trajectory.shape[2:] != x0.shape[1:]:
        raise ValueError(
            f"trajectory event shape {trajectory.shape[2:]} differs from x0's {x0.shape[1:]}"
        )
    check_finite(trajectory, "trajectory")
    n_pair_points = check_positive_int(n_pair_points, "n_pair_points")
    if n_pair_points < 2:
        raise ValueError(f"n_pair_points must be >= 2, got {n_pair_points}")
    k = times.shape[0]
    data_t = forward_noised(key, sde, x0, times).reshape(k, x0.shape[0], -1)
    traj_t = trajectory.reshape(k, trajectory.shape[1], -1)
    union = jnp.concatenate([data_t, traj_t], axis=1)
    pairs = _subsample_union(data_t, traj_t, n_pair_points)
    event = x0.shape[1:]
    pairwise = lipschitz_profile(
        score_fn,
        pairs.reshape(pairs.shape[:2] + event),
        times,
        per_time=True,
        refine_steps=refine_steps,
        refine_pairs=refine_pairs,
        chunk_size=chunk_size,
        box=(jnp.min(union, axis=1), jnp.max(union, axis=1)),
    )
    local = jax.lax.map(
        lambda args: jnp.max(
            local_one_sided_lipschitz(score_fn, args[0].reshape((-1,) + event), args[1])
        ),
        (union, times),
    )
    return RegionLipschitz(
        value=jnp.maximum(pairwise, local),
        pairwise=pairwise,
        local=local,
        lower=jnp.min(union, axis=1),
        upper=jnp.max(union, axis=1),
    )


def outside_share(points: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> jax.Array:
    """Share of ``points (k, n, *event)`` outside the box ``[lower, upper]`` (``(k, D)``): ``(k,)``.

    A point counts as outside when any coordinate leaves the box by more than
    ``1e-6`` of the box's diameter (float rounding of the box itself).
    """
    points = jnp.asarray(points)
    k = points.shape[0]
    flat = points.reshape(k, points.shape[1], -1)
    lower, upper = jnp.asarray(lower), jnp.asarray(upper)
    if lower.ndim == 1:
        lower, upper = (
            jnp.broadcast_to(lower, (k,) + lower.shape),
            jnp.broadcast_to(upper, (k,) + upper.shape),
        )
    tol = 1e-6 * jnp.sqrt(jnp.sum((upper - lower) ** 2, axis=-1))[:, None, None]
    out = (flat < lower[:, None] - tol) | (flat > upper[:, None] + tol)
    out = out | ~jnp.isfinite(flat)
    return jnp.mean(jnp.any(out, axis=-1), axis=-1)


# ------------------------------------------------------------ integrating factor
def drift_lipschitz(sde: SDE, t: ArrayLike) -> Array:
    """``L_f(t)`` of the affine drift ``f = -a(t) x`` (Kwon eq. 8): ``|a(t)|``.

    For the VP SDE ``a = beta / 2``, as in the authors' code.
    """
    return jnp.abs(sde.drift_coeff(jnp.asarray(t)))


def integrating_factor(sde: SDE, times: ArrayLike, lipschitz: ArrayLike) -> Array:
    """``I(t_j) = exp(int_{t_0}^{t_j} L_f + L_s g^2 dr)`` (Kwon eq. 15), trapezoid rule.

    Args:
        sde: forward SDE (affine drift).
        times: ``(k,)`` increasing grid; ``t_0`` plays the role of time 0.
        lipschitz: ``(k,)`` one-sided Lipschitz constants ``L_s`` on the grid.

    Returns:
        ``(k,)`` with ``I(t_0) = 1``.
    """
    times = _check_times(times, sde.T)
    lipschitz = jnp.asarray(lipschitz, times.dtype)
    if lipschitz.shape != times.shape:
        raise ValueError(
            f"lipschitz must have shape {times.shape} like times, got {lipschitz.shape}"
        )
    return jnp.exp(_log_integrating_factor(sde, times, lipschitz))


def bound_weight_integral(
    sde: SDE, times: ArrayLike, integrating_factor_values: ArrayLike
) -> Array:
    """``int g^2 I^2 dt`` over the grid (Kwon eq. 16), trapezoid rule."""
    times = _check_times(times, sde.T)
    return _trapezoid(sde.diffusion(times) ** 2 * integrating_factor_values**2, times)


def _log_integrating_factor(sde, times, lipschitz):
    rate = drift_lipschitz(sde, times) + lipschitz * sde.diffusion(times) ** 2
    return _trapezoid_cumulative(rate, times)


def _log_weight_integral(sde, times, log_factor):
    """``log int g^2 I^2 dt`` (trapezoid) from ``log I``, finite where ``I^2`` overflows."""
    dt = jnp.diff(times)
    node = 0.5 * (
        jnp.concatenate([dt, jnp.zeros(1, dt.dtype)])
        + jnp.concatenate([jnp.zeros(1, dt.dtype), dt])
    )
    return jax.nn.logsumexp(jnp.log(node * sde.diffusion(times) ** 2) + 2.0 * log_factor)


# --------------------------------------------------------------- score objectives
def _score_error_profile(key, sde, score_fn, x0, times, true_score_fn, n_noise):
    """``E |s(x_t, t) - target|^2`` at each time (sum over the event, mean over data/noise)."""
    x0 = jnp.asarray(x0)
    n = x0.shape[0]
    rep = jnp.broadcast_to(x0[None], (n_noise,) + x0.shape).reshape((n_noise * n,) + x0.shape[1:])
    keys = jax.random.split(key, times.shape[0])

    def at_time(args):
        k, t = args
        z = jax.random.normal(k, rep.shape, rep.dtype)
        m, s = sde.marginal_coeffs(t)
        xt = m * rep + s * z
        target = -z / s if true_score_fn is None else true_score_fn(xt, t)
        err = score_fn(xt, t) - target
        return jnp.mean(jnp.sum(err.reshape(err.shape[0], -1) ** 2, axis=-1))

    return jax.lax.map(at_time, (keys, times))


def _check_objective_args(sde, x0, times, n_noise):
    x0 = jnp.asarray(x0)
    check_ndim(x0, tuple(range(2, 6)), "x0", "(n, *event)")
    check_finite(x0, "x0")
    times = _check_times(times, sde.T)
    if is_concrete(times) and float(np.asarray(times)[0]) <= 0:
        raise ValueError("times[0] must be > 0 (the conditional score is singular at t = 0)")
    return x0, times, check_positive_int(n_noise, "n_noise")


def denoising_objective(
    key: PRNGKey, sde: SDE, score_fn: ScoreFn, x0: ArrayLike, times: ArrayLike, *, n_noise: int = 1
) -> Array:
    """``J_DSM = 1/2 int g^2 E |s(x_t, t) - grad log p_{0t}(x_t | x_0)|^2 dt`` (Kwon eq. 20).

    ``lambda = g^2``; the time integral is the trapezoid rule on ``times`` and the
    expectation a Monte Carlo mean over ``x0 (n, *event)`` and ``n_noise`` draws each.
    """
    x0, times, n_noise = _check_objective_args(sde, x0, times, n_noise)
    err = _score_error_profile(key, sde, score_fn, x0, times, None, n_noise)
    return 0.5 * _trapezoid(sde.diffusion(times) ** 2 * err, times)


def score_objective(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    true_score_fn: ScoreFn,
    x0: ArrayLike,
    times: ArrayLike,
    *,
    n_noise: int = 1,
) -> Array:
    """``J_SM = 1/2 int g^2 E_{p_t} |grad log p_t - s|^2 dt`` (Kwon eq. 5, ``lambda = g^2``).

    ``true_score_fn(x, t)`` is the score of the perturbed data distribution; ``x_t``
    is drawn by forward-noising ``x0``. With the same ``key`` the samples ``x_t``
    coincide with those of :func:`denoising_objective`.
    """
    x0, times, n_noise = _check_objective_args(sde, x0, times, n_noise)
    err = _score_error_profile(key, sde, score_fn, x0, times, true_score_fn, n_noise)
    return 0.5 * _trapezoid(sde.diffusion(times) ** 2 * err, times)


def prior_w2_upper_bound(sde: SDE, x0: ArrayLike) -> Array:
    """Upper bound on ``W2(p_T, N(0, prior_std^2 I))`` by the synchronous coupling.

    ``x_T = m x0 + s z`` against ``y = prior_std z`` with the same ``z`` gives
    ``W2^2 <= m^2 E|x0|^2 + (s - prior_std)^2 d`` (estimated on ``x0 (n, *event)``);
    this decays like ``m(T) = exp(-B(T)/2)`` for the VP SDE (Kwon Cor. 2, Remark 4).
    """
    x0 = jnp.asarray(x0)
    check_ndim(x0, tuple(range(2, 6)), "x0", "(n, *event)")
    m, s = sde.marginal_coeffs(jnp.asarray(sde.T))
    d = math.prod(x0.shape[1:])
    second = jnp.mean(jnp.sum(x0.reshape(x0.shape[0], -1) ** 2, axis=-1))
    return jnp.sqrt(m**2 * second + (s - sde.prior_std()) ** 2 * d)


def start_offset(sde: SDE, x0: ArrayLike, t0: ArrayLike) -> Array:
    """Upper bound ``sqrt(E |x_{t0} - x_0|^2)`` on ``W2(p_0, p_{t0})``: scalar."""
    x0 = jnp.asarray(x0)
    m, s = sde.marginal_coeffs(jnp.asarray(t0))
    d = math.prod(x0.shape[1:])
    second = jnp.mean(jnp.sum(x0.reshape(x0.shape[0], -1) ** 2, axis=-1))
    return jnp.sqrt((1.0 - m) ** 2 * second + s**2 * d)


def wasserstein_bound(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    x0: ArrayLike,
    *,
    times: ArrayLike | None = None,
    n_times: int = 64,
    eps: float = 1e-3,
    trajectory: ArrayLike | None = None,
    lipschitz_points: ArrayLike | None = None,
    lipschitz: ArrayLike | None = None,
    true_score_fn: ScoreFn | None = None,
    terminal_w2: ArrayLike = 0.0,
    n_noise: int = 4,
    refine_steps: int = 0,
    n_pair_points: int = 512,
) -> WassersteinBound:
    """Kwon et al.'s upper bound on ``W2(p_0, q_0)`` for a score model (Cor. 1 / Thm 2).

    ``bound = start_offset + sqrt(2 int g^2 I^2 dt * J) + I(T) W2(p_T, q_T)`` with
    ``J = J_DSM`` (``lambda = g^2``; valid by Theorem 2 for affine-drift SDEs such as
    DDPM/VP) or ``J = J_SM`` when ``true_score_fn`` is given. The intercept
    ``1/2 log(2 int g^2 I^2)`` is computed from ``log I`` (finite where ``I`` overflows).

    Where ``L_s(t)`` comes from, in order of precedence: ``lipschitz`` (known values);
    ``lipschitz_points`` (one point set for every time, e.g. Kwon's 10 x 10 grid);
    with a ``trajectory``, :func:`region_lipschitz` over forward-noised data and the
    trajectory (what the theorem needs); otherwise the first 256 points of ``x0``
    forward-noised to each time. With a ``trajectory`` the result's
    ``sampled_outside`` says which share of it lies outside the measured box.

    Args:
        key: PRNG key (Monte Carlo noise for ``J`` and the forward-noised points).
        sde: forward SDE with affine drift (VP, VE, Brownian).
        score_fn: ``(x (n, *event), t) -> (n, *event)``.
        x0: ``(n, *event)`` data samples (for ``J``, the start offset and ``L_s``).
        times: ``(k,)`` increasing grid in ``(0, T]`` ending at ``T``; default
            ``time_grid(sde, n_times, eps)``.
        n_times, eps: grid size and smallest time when ``times`` is None.
        trajectory: ``(k, n, *event)`` the sampler's states at ``times`` (e.g.
            ``converged_reverse_path(...).path``).
        lipschitz_points: ``(p, *event)`` where ``L_s(t)`` is estimated at every time.
        lipschitz: ``(k,)`` known ``L_s(t)``, skipping the estimate.
        true_score_fn: score of the perturbed data distribution; gives ``J_SM``.
        terminal_w2: ``W2(p_T, q_T)`` (0 when generation starts from forward-noised
            data, as in Kwon sec. 4; :func:`prior_w2_upper_bound` for the prior).
        n_noise: noise draws per data point for ``J``.
        refine_steps: gradient-ascent refinement of ``L_s`` (see :func:`one_sided_lipschitz`).
        n_pair_points: points of the union used for pairs (see :func:`region_lipschitz`).

    Returns:
        :class:`WassersteinBound`.
    """
    x0 = jnp.asarray(x0)
    check_ndim(x0, tuple(range(2, 6)), "x0", "(n, *event)")
    check_finite(x0, "x0")
    times = time_grid(sde, n_times, eps) if times is None else _check_times(times, sde.T)
    if is_concrete(times) and abs(float(np.asarray(times)[-1]) - sde.T) > 1e-6 * sde.T:
        raise ValueError(f"times must end at T = {sde.T}, got {float(np.asarray(times)[-1])}")
    if is_concrete(times) and float(np.asarray(times)[0]) <= 0:
        raise ValueError("times[0] must be > 0 (the conditional score is singular at t = 0)")
    if is_concrete(terminal_w2) and not float(terminal_w2) >= 0:
        raise ValueError(f"terminal_w2 must be a non-negative scalar, got {terminal_w2!r}")
    lip_key, obj_key = jax.random.split(key)
    outside = None
    if lipschitz is not None:
        lipschitz = jnp.asarray(lipschitz, times.dtype)
        if lipschitz.shape != times.shape:
            raise ValueError(f"lipschitz must have shape {times.shape}, got {lipschitz.shape}")
    elif lipschitz_points is not None:
        lipschitz_points = _check_points(lipschitz_points, "lipschitz_points")
        lipschitz = lipschitz_profile(score_fn, lipschitz_points, times, refine_steps=refine_steps)
        if trajectory is not None:
            flat = lipschitz_points.reshape(lipschitz_points.shape[0], -1)
            outside = outside_share(trajectory, jnp.min(flat, 0), jnp.max(flat, 0))
    elif trajectory is not None:
        region = region_lipschitz(
            lip_key,
            sde,
            score_fn,
            x0,
            trajectory,
            times,
            n_pair_points=n_pair_points,
            refine_steps=refine_steps,
        )
        lipschitz = region.value
        outside = outside_share(trajectory, region.lower, region.upper)
    else:
        points = forward_noised(lip_key, sde, x0[:256], times)
        lipschitz = lipschitz_profile(
            score_fn, points, times, per_time=True, refine_steps=refine_steps
        )
    log_factor = _log_integrating_factor(sde, times, lipschitz)
    factor = jnp.exp(log_factor)
    log_weight = _log_weight_integral(sde, times, log_factor)
    n_noise = check_positive_int(n_noise, "n_noise")
    err = _score_error_profile(obj_key, sde, score_fn, x0, times, true_score_fn, n_noise)
    loss = 0.5 * _trapezoid(sde.diffusion(times) ** 2 * err, times)
    offset = factor[-1] * jnp.asarray(terminal_w2, times.dtype)
    start = start_offset(sde, x0, times[0])
    bound = start + jnp.exp(0.5 * (jnp.log(2.0 * loss) + log_weight)) + offset
    return WassersteinBound(
        bound=bound,
        loss=loss,
        weight_integral=jnp.exp(log_weight),
        intercept=0.5 * (math.log(2.0) + log_weight),
        offset=offset,
        start_offset=start,
        times=times,
        lipschitz=lipschitz,
        integrating_factor=factor,
        score_error=err,
        sampled_outside=outside,
    )


__all__ = [
    "RegionLipschitz",
    "ReversePath",
    "WassersteinBound",
    "bound_weight_integral",
    "converged_reverse_path",
    "denoising_objective",
    "drift_lipschitz",
    "forward_noised",
    "integrating_factor",
    "lipschitz_profile",
    "local_one_sided_lipschitz",
    "one_sided_lipschitz",
    "outside_share",
    "prior_w2_upper_bound",
    "region_lipschitz",
    "reverse_sde_path",
    "score_objective",
    "start_offset",
    "time_grid",
    "wasserstein_bound",
]
