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

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wgdiff._checks import check_finite, check_ndim, check_positive_int, is_concrete
from wgdiff._types import ScoreFn
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


def time_grid(sde: SDE, n_times: int = 64, eps: float = 1e-3):
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
    not lose precision; rows are processed ``chunk_size`` at a time.
    """
    p = x.shape[0]
    pad = (-p) % chunk_size
    rows = jnp.arange(p + pad).reshape(-1, chunk_size)

    def chunk(idx):
        idx_c = jnp.minimum(idx, p - 1)
        dx = x[idx_c, None, :] - x[None, :, :]
        ds = s[idx_c, None, :] - s[None, :, :]
        sq = jnp.sum(dx**2, axis=-1)
        valid = (sq > min_sq_distance) & (idx_c[:, None] != jnp.arange(p)[None, :])
        q = jnp.sum(ds * dx, axis=-1) / jnp.where(valid, sq, 1.0)
        return jnp.where(valid, q, -jnp.inf)

    return jax.lax.map(chunk, rows).reshape(-1, p)[:p]


def _flat_field(score_fn, event, t):
    def field(x_flat):
        x = x_flat.reshape((x_flat.shape[0],) + event)
        return score_fn(x, t).reshape(x_flat.shape[0], -1)

    return field


def _osl_single(
    score_fn, event, refine_steps, refine_pairs, chunk_size, learning_rate, points_flat, t
):
    """Grid maximum plus optional projected gradient ascent, for one time ``t``."""
    field = _flat_field(score_fn, event, t)
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
    points,
    t,
    *,
    refine_steps: int = 0,
    refine_pairs: int = 8,
    learning_rate: float | None = None,
    chunk_size: int = 256,
):
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


def local_one_sided_lipschitz(score_fn: ScoreFn, points, t):
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

    return jax.vmap(single)(flat)


def lipschitz_profile(
    score_fn: ScoreFn,
    points,
    times,
    *,
    per_time: bool = False,
    refine_steps: int = 0,
    refine_pairs: int = 8,
    learning_rate: float | None = None,
    chunk_size: int = 256,
):
    """``L_s(t)`` at each of ``times (k,)``: ``(k,)``.

    Args:
        score_fn: ``(x, t) -> like x``.
        points: ``(p, *event)`` used at every time, or with ``per_time=True``
            ``(k, p, *event)``, one point set per time.
        times: ``(k,)``.
        per_time: whether ``points`` has a leading time axis.
        refine_steps, refine_pairs, learning_rate, chunk_size: as in
            :func:`one_sided_lipschitz`.
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
    if per_time:
        return jax.lax.map(lambda args: single(*args), (flat, times))
    return jax.lax.map(lambda t: single(flat, t), times)


# ------------------------------------------------------------ integrating factor
def drift_lipschitz(sde: SDE, t):
    """``L_f(t)`` of the affine drift ``f = -a(t) x`` (Kwon eq. 8): ``|a(t)|``.

    For the VP SDE ``a = beta / 2``, as in the authors' code.
    """
    return jnp.abs(sde.drift_coeff(jnp.asarray(t)))


def integrating_factor(sde: SDE, times, lipschitz):
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
    rate = drift_lipschitz(sde, times) + lipschitz * sde.diffusion(times) ** 2
    return jnp.exp(_trapezoid_cumulative(rate, times))


def bound_weight_integral(sde: SDE, times, integrating_factor_values):
    """``int g^2 I^2 dt`` over the grid (Kwon eq. 16), trapezoid rule."""
    times = _check_times(times, sde.T)
    return _trapezoid(sde.diffusion(times) ** 2 * integrating_factor_values**2, times)


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


def denoising_objective(key, sde: SDE, score_fn: ScoreFn, x0, times, *, n_noise: int = 1):
    """``J_DSM = 1/2 int g^2 E |s(x_t, t) - grad log p_{0t}(x_t | x_0)|^2 dt`` (Kwon eq. 20).

    ``lambda = g^2``; the time integral is the trapezoid rule on ``times`` and the
    expectation a Monte Carlo mean over ``x0 (n, *event)`` and ``n_noise`` draws each.
    """
    x0, times, n_noise = _check_objective_args(sde, x0, times, n_noise)
    err = _score_error_profile(key, sde, score_fn, x0, times, None, n_noise)
    return 0.5 * _trapezoid(sde.diffusion(times) ** 2 * err, times)


def score_objective(
    key, sde: SDE, score_fn: ScoreFn, true_score_fn: ScoreFn, x0, times, *, n_noise: int = 1
):
    """``J_SM = 1/2 int g^2 E_{p_t} |grad log p_t - s|^2 dt`` (Kwon eq. 5, ``lambda = g^2``).

    ``true_score_fn(x, t)`` is the score of the perturbed data distribution; ``x_t``
    is drawn by forward-noising ``x0``. With the same ``key`` the samples ``x_t``
    coincide with those of :func:`denoising_objective`.
    """
    x0, times, n_noise = _check_objective_args(sde, x0, times, n_noise)
    err = _score_error_profile(key, sde, score_fn, x0, times, true_score_fn, n_noise)
    return 0.5 * _trapezoid(sde.diffusion(times) ** 2 * err, times)


def prior_w2_upper_bound(sde: SDE, x0):
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


def start_offset(sde: SDE, x0, t0):
    """Upper bound ``sqrt(E |x_{t0} - x_0|^2)`` on ``W2(p_0, p_{t0})``: scalar."""
    x0 = jnp.asarray(x0)
    m, s = sde.marginal_coeffs(jnp.asarray(t0))
    d = math.prod(x0.shape[1:])
    second = jnp.mean(jnp.sum(x0.reshape(x0.shape[0], -1) ** 2, axis=-1))
    return jnp.sqrt((1.0 - m) ** 2 * second + s**2 * d)


def wasserstein_bound(
    key,
    sde: SDE,
    score_fn: ScoreFn,
    x0,
    *,
    times=None,
    n_times: int = 64,
    eps: float = 1e-3,
    lipschitz_points=None,
    lipschitz=None,
    true_score_fn: ScoreFn | None = None,
    terminal_w2=0.0,
    n_noise: int = 4,
    refine_steps: int = 0,
) -> WassersteinBound:
    """Kwon et al.'s upper bound on ``W2(p_0, q_0)`` for a score model (Cor. 1 / Thm 2).

    ``bound = start_offset + sqrt(2 int g^2 I^2 dt * J) + I(T) W2(p_T, q_T)`` with
    ``J = J_DSM`` (``lambda = g^2``; valid by Theorem 2 for affine-drift SDEs such as
    DDPM/VP) or ``J = J_SM`` when ``true_score_fn`` is given.

    Args:
        key: PRNG key (Monte Carlo noise for ``J``).
        sde: forward SDE with affine drift (VP, VE, Brownian).
        score_fn: ``(x (n, *event), t) -> (n, *event)``.
        x0: ``(n, *event)`` data samples (for ``J`` and the start offset).
        times: ``(k,)`` increasing grid in ``(0, T]`` ending at ``T``; default
            ``time_grid(sde, n_times, eps)``.
        n_times, eps: grid size and smallest time when ``times`` is None.
        lipschitz_points: ``(p, *event)`` where ``L_s(t)`` is estimated at every time
            (e.g. Kwon's 10 x 10 grid); default: the first 256 points of ``x0``
            forward-noised to each time.
        lipschitz: ``(k,)`` known ``L_s(t)``, skipping the estimate.
        true_score_fn: score of the perturbed data distribution; gives ``J_SM``.
        terminal_w2: ``W2(p_T, q_T)`` (0 when generation starts from forward-noised
            data, as in Kwon sec. 4; :func:`prior_w2_upper_bound` for the prior).
        n_noise: noise draws per data point for ``J``.
        refine_steps: gradient-ascent refinement of ``L_s`` (see :func:`one_sided_lipschitz`).

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
    if lipschitz is None:
        if lipschitz_points is None:
            base = x0[:256]
            noise = jax.random.normal(lip_key, (times.shape[0],) + base.shape, base.dtype)
            m, s = sde.marginal_coeffs(times)
            lipschitz_points = (
                broadcast_time(m, noise) * base[None] + broadcast_time(s, noise) * noise
            )
            lipschitz = lipschitz_profile(
                score_fn, lipschitz_points, times, per_time=True, refine_steps=refine_steps
            )
        else:
            lipschitz = lipschitz_profile(
                score_fn, lipschitz_points, times, refine_steps=refine_steps
            )
    else:
        lipschitz = jnp.asarray(lipschitz, times.dtype)
        if lipschitz.shape != times.shape:
            raise ValueError(f"lipschitz must have shape {times.shape}, got {lipschitz.shape}")
    factor = integrating_factor(sde, times, lipschitz)
    weight = bound_weight_integral(sde, times, factor)
    n_noise = check_positive_int(n_noise, "n_noise")
    err = _score_error_profile(obj_key, sde, score_fn, x0, times, true_score_fn, n_noise)
    loss = 0.5 * _trapezoid(sde.diffusion(times) ** 2 * err, times)
    offset = factor[-1] * jnp.asarray(terminal_w2, times.dtype)
    start = start_offset(sde, x0, times[0])
    bound = start + jnp.sqrt(2.0 * weight * loss) + offset
    return WassersteinBound(
        bound=bound,
        loss=loss,
        weight_integral=weight,
        intercept=0.5 * jnp.log(2.0 * weight),
        offset=offset,
        start_offset=start,
        times=times,
        lipschitz=lipschitz,
        integrating_factor=factor,
        score_error=err,
    )


__all__ = [
    "WassersteinBound",
    "bound_weight_integral",
    "denoising_objective",
    "drift_lipschitz",
    "integrating_factor",
    "lipschitz_profile",
    "local_one_sided_lipschitz",
    "one_sided_lipschitz",
    "prior_w2_upper_bound",
    "score_objective",
    "start_offset",
    "time_grid",
    "wasserstein_bound",
]
