"""Debiased Sinkhorn divergence: log domain, epsilon-scaling, streamed kernel sums.

For uniform point clouds ``a = 1/n``, ``b = 1/m`` and the cost ``C_ij = |x_i - y_j|^2``,

    OT_eps(a, b) = min_P <P, C> + eps KL(P | a x b),
    S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a) / 2 - OT_eps(b, b) / 2      (Feydy et al. 2019)

which tends to ``W2^2`` as ``eps -> 0`` and is >= 0. The dual potentials are found by
log-domain Sinkhorn iterations with the soft-min operator

    T(g)_i = -eps log sum_j b_j exp((g_j - C_ij) / eps),

whose log-sum-exp is evaluated either on a dense cost matrix (small problems) or by
the streaming :class:`wgdiff.geometry.PointCloud` (memory O(row_chunk * col_chunk),
never n x m). Epsilon-scaling as in Feydy et al. (2019, geomloss): epsilon starts at
the squared diameter of the data and is multiplied by ``scaling`` each iteration
(symmetric, averaged updates ``f <- (f + T(g)) / 2``) down to the target; at the
target the fixed point ``f = T(T(f))`` is found by Anderson-accelerated steps
(Walker & Ni 2011) from ``f -> T(g)``, each followed by ``g <- T(f)``, until the
measured L1 marginal errors of the three problems (xy, xx, yy) fall below ``threshold``. A
symmetric problem (xx or yy) measured below the threshold at the target is frozen:
its potential stops moving and its kernel pass is skipped.

Measured, not assumed: with ``P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)`` the row
marginal is ``a_i exp((f_i - T(g)_i)/eps)``, so each iteration reads its marginal
error off the update it computes anyway; the primal-dual gap of that plan is
``<P 1 - a, f> + <P^T 1 - b, g>`` (the entropic primal ``<P, C> + eps KL`` minus the
dual ``<a, f> + <b, g> - eps (sum P - 1)``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wgdiff._checks import check_positive, check_positive_int, is_concrete
from wgdiff._types import ArrayLike, PRNGKey
from wgdiff.geometry import (
    DEFAULT_COL_CHUNK,
    DEFAULT_ROW_CHUNK,
    PointCloud,
    map_row_chunks,
    squared_distances,
)
from wgdiff.metrics._common import check_pair

# Dense cost matrices up to this many entries per term; the streamed PointCloud
# beyond (it fuses distances into the log-sum-exp and was faster already at 2000^2:
# 9.6 s against 21 s on the shared 2-core box, 115 iterations).
DENSE_MAX_PAIRS = 1024 * 1024
DEFAULT_SCALING = 0.5
DEFAULT_THRESHOLD = 1e-3
DEFAULT_MAX_ITERATIONS = 2000
# pairs per streamed block when the chunks are not given (whole rows of the cost)
STREAM_BLOCK_PAIRS = 1 << 19
# streamed problems with more than twice this many points on each side start from
# the solve on subsamples of this size (dense: COARSE_POINTS^2 <= DENSE_MAX_PAIRS)
COARSE_POINTS = 1024
# Anderson acceleration at the target epsilon, memory 5. Measured 2026-12-01 (2-D,
# x ~ N(0, I), y ~ N((1, -0.5), I / 4), eps = 1e-2 W2^2, dense, iterations at the target
# to an L1 marginal error of 1e-3 after the same 12 annealing steps): plain Sinkhorn
# > 200; over-relaxation (Thibault et al. 2021) w = 1.9: 60, w = 1.75: 38, w = 1.5: 91
# (n = 2000); Anderson memory 3: 29, 5: 29 / 29 / 25 on three draws (n = 2000) and 23
# (n = 4000), memory 6: 26. Over-relaxation was the previous rule (its best w depends
# on the problem; the rate-adaptive w = 2 / (1 + sqrt(1 - rho)) from plain steps and
# from the subsample's spectral gap (1.79 from 250 points, 1.97 from 500) were both
# unreliable); rejected, replaced. Under over-relaxation the multiscale start
# (COARSE_POINTS above) gained nothing (n = 4000: 97 and 83 fine iterations against 77
# from the annealing; the rate at the target, not the starting error, set the count);
# with Anderson steps it cut n = 4000 from 1.78 to 1.12 CPU-s.
DEFAULT_ANDERSON_MEMORY = 5
# epsilon = None: the target is DEFAULT_RELATIVE_EPSILON * (the running W2^2 estimate
# of the annealing pass), but not below MIN_RELATIVE_EPSILON * (mean pairwise cost).
DEFAULT_RELATIVE_EPSILON = 1e-2
MIN_RELATIVE_EPSILON = 1e-4


@struct.dataclass
class SinkhornResult:
    """Output of :func:`sinkhorn`.

    Attributes:
        divergence: debiased ``S_eps`` (squared-distance units).
        ot_xy: ``OT_eps(a, b)``, the entropic transport cost of x to y.
        epsilon: the final epsilon.
        iterations: total iterations (annealing included).
        marginal_errors: (3,) L1 marginal errors of the xy, xx, yy plans at the end.
        gap: primal-dual gap of the xy plan at the end.
        converged: the final epsilon is the target and all measured marginal errors
            are below the threshold (False when the iteration cap was hit).
        coarse_iterations: iterations of the multiscale start on subsamples (0
            when the problem was solved from scratch); ``iterations`` counts the
            full problem's.
        f: (n,) xy potential on x; g: (m,) xy potential on y (for the centred data).
        p: (n,) xx potential; q: (m,) yy potential.
    """

    divergence: jax.Array
    ot_xy: jax.Array
    epsilon: jax.Array
    iterations: jax.Array
    marginal_errors: jax.Array
    gap: jax.Array
    converged: jax.Array
    coarse_iterations: jax.Array
    f: jax.Array
    g: jax.Array
    p: jax.Array
    q: jax.Array


class _DenseCost:
    """Cost matrix held in memory, with the :class:`PointCloud` ``lse`` interface."""

    def __init__(self, cost):
        self.cost = cost

    def lse(self, h, scale):
        return jax.nn.logsumexp(h[None, :] - scale * self.cost, axis=1)

    def transpose(self):
        return _DenseCost(self.cost.T)


def _softmin(geom, potential, log_weights, eps):
    """``T(potential)_i = -eps log sum_j w_j exp((potential_j - C_ij)/eps)``."""
    return -eps * geom.lse(log_weights + potential / eps, 1.0 / eps)


def squared_diameter(x: np.ndarray, y: np.ndarray) -> float:
    """Squared diagonal of the bounding box of both sets (an upper bound on max C_ij)."""
    both = (
        np.concatenate([np.min(x, 0), np.min(y, 0)]),
        np.concatenate([np.max(x, 0), np.max(y, 0)]),
    )
    d = x.shape[1]
    lower = np.minimum(both[0][:d], both[0][d:])
    upper = np.maximum(both[1][:d], both[1][d:])
    return float(np.sum((upper - lower) ** 2))


def _anderson_init(n: int, memory: int, dtype) -> dict:
    """Empty Anderson history: differences of the last ``memory`` iterates and residuals."""
    return {
        "dx": jnp.zeros((memory, n), dtype),
        "dr": jnp.zeros((memory, n), dtype),
        "x": jnp.zeros((n,), dtype),
        "r": jnp.zeros((n,), dtype),
        "count": jnp.asarray(0),
    }


def _anderson_step(history: dict, x, residual, restart):
    """One type-II Anderson step (Walker & Ni 2011) for the fixed point ``x = x + r(x)``.

    With the differences ``dX``, ``dR`` of the last ``memory`` iterates and residuals,
    ``gamma = argmin |r - dR gamma|`` (least squares, SVD cut-off at float rounding)
    and the next iterate is ``x + r - (dX + dR) gamma``; an empty history (or
    ``restart``) gives the plain step ``x + r``. Returns ``(history, next_x)``.
    """
    memory = history["dx"].shape[0]
    count = jnp.where(restart, 0, history["count"])
    if memory == 0:
        return history, x + residual
    slot = (count - 1) % memory
    fresh = count > 0
    dx = jnp.where(fresh, history["dx"].at[slot].set(x - history["x"]), history["dx"])
    dr = jnp.where(fresh, history["dr"].at[slot].set(residual - history["r"]), history["dr"])
    valid = (jnp.arange(memory) < jnp.minimum(count, memory))[:, None]
    dx, dr = jnp.where(valid, dx, 0.0), jnp.where(valid, dr, 0.0)
    gamma = jnp.linalg.lstsq(dr.T, residual)[0]
    gamma = jnp.where(jnp.all(jnp.isfinite(gamma)), gamma, 0.0)
    step = x + residual - (dx + dr).T @ gamma
    new = {"dx": dx, "dr": dr, "x": x, "r": residual, "count": count + 1}
    return new, step


@functools.partial(
    jax.jit,
    static_argnames=("dense", "row_chunk", "col_chunk", "debias", "memory"),
)
def _sinkhorn_loop(
    x,
    y,
    potentials,
    eps_init,
    eps_target,
    relative,
    scaling,
    threshold,
    max_iterations,
    *,
    memory,
    dense,
    row_chunk,
    col_chunk,
    debias,
):
    n, m = x.shape[0], y.shape[0]
    dtype = x.dtype
    log_a = jnp.full((n,), -math.log(n), dtype)
    log_b = jnp.full((m,), -math.log(m), dtype)
    g_xx = g_yy = None  # debias=False: the symmetric problems are not solved
    if dense:
        g_xy = _DenseCost(squared_distances(x, y))
        if debias:
            g_xx = _DenseCost(squared_distances(x, x))
            g_yy = _DenseCost(squared_distances(y, y))
    else:
        g_xy = PointCloud(x, y, row_chunk, col_chunk)
        g_xx = PointCloud(x, x, row_chunk, col_chunk)
        g_yy = PointCloud(y, y, row_chunk, col_chunk)
    g_yx = g_xy.transpose()

    def errors_and_values(f, g, ft, col, p, pt, q, qt, eps):
        row = jnp.exp((f - ft) / eps) / n  # row marginal of P(f, g)
        # col: column marginal of P(f, g), computed by the update that produced g
        err_xy = jnp.sum(jnp.abs(row - 1.0 / n)) + jnp.sum(jnp.abs(col - 1.0 / m))
        mass = jnp.sum(row)
        gap = jnp.sum((row - 1.0 / n) * f) + jnp.sum((col - 1.0 / m) * g)
        ot_xy = jnp.mean(f) + jnp.mean(g) - eps * (mass - 1.0)
        row_p = jnp.exp((p - pt) / eps) / n
        row_q = jnp.exp((q - qt) / eps) / m
        err_xx = jnp.sum(jnp.abs(row_p - 1.0 / n))
        err_yy = jnp.sum(jnp.abs(row_q - 1.0 / m))
        ot_xx = 2.0 * jnp.mean(p) - eps * (jnp.sum(row_p) - 1.0)
        ot_yy = 2.0 * jnp.mean(q) - eps * (jnp.sum(row_q) - 1.0)
        divergence = ot_xy - 0.5 * (ot_xx + ot_yy)
        return jnp.stack([err_xy, err_xx, err_yy]), gap, ot_xy, divergence

    f0, g0, p0, q0 = (jnp.asarray(a, dtype) for a in potentials)
    init = {
        "f": f0,
        "g": g0,
        "p": p0,
        "q": q0,
        # T(p), T(q) of a frozen symmetric problem (its potential no longer moves)
        "pt": p0,
        "qt": q0,
        "frozen": jnp.zeros((2,), bool),
        "eps": jnp.asarray(eps_init, dtype),
        "annealing": jnp.asarray(True),
        "alternated": jnp.asarray(False),
        "it": jnp.asarray(0),
        "col": jnp.full((m,), 1.0 / m, dtype),
        "errors": jnp.full((3,), jnp.inf, dtype),
        "last_error": jnp.asarray(jnp.inf, dtype),
        "history": _anderson_init(n, memory, dtype),
        "gap": jnp.asarray(jnp.inf, dtype),
        "ot_xy": jnp.asarray(0.0, dtype),
        "divergence": jnp.asarray(0.0, dtype),
        "done": jnp.asarray(False),
    }

    def symmetric(geom, potential, cached, frozen, log_w, eps):
        if not debias:  # p = q = 0 stay fixed points with zero error and value
            return potential
        return jax.lax.cond(frozen, lambda: cached, lambda: _softmin(geom, potential, log_w, eps))

    def body(s):
        eps, annealing = s["eps"], s["annealing"]
        f, g, p, q = s["f"], s["g"], s["p"], s["q"]
        ft = _softmin(g_xy, g, log_b, eps)
        pt = symmetric(g_xx, p, s["pt"], s["frozen"][0], log_a, eps)
        qt = symmetric(g_yy, q, s["qt"], s["frozen"][1], log_b, eps)
        errors, gap, ot_xy, divergence = errors_and_values(f, g, ft, s["col"], p, pt, q, qt, eps)
        # annealing: symmetric averaged updates; at the target: the fixed point
        # f = T(T(f)) by Anderson-accelerated steps from f -> T(g), g = T(f) (the
        # residual's mean is dropped: a constant moves from f to g for free).
        # Restarted (plain step) when the measured error doubles.
        residual = ft - f
        residual = residual - jnp.mean(residual)
        restart = annealing | (errors[0] > 2.0 * s["last_error"])
        history, f_accelerated = _anderson_step(s["history"], f, residual, restart)
        f_new = jnp.where(annealing, 0.5 * (f + ft), f_accelerated)
        gt = _softmin(g_yx, jnp.where(annealing, f, f_new), log_a, eps)
        g_new = jnp.where(annealing, 0.5 * (g + gt), gt)
        # column marginal of P(f_new, g_new) = b exp((g_new - T(f_new)) / eps), exact
        # (zero error) at the target where g_new = T(f_new); measured next iteration
        col = jnp.exp((g_new - gt) / eps) / m
        # at the target, a symmetric problem measured below the threshold is frozen:
        # its potential stays and T of it is cached (no more kernel passes for it)
        frozen = s["frozen"] | (~annealing & (errors[1:] < threshold))
        p_new = jnp.where(frozen[0], p, 0.5 * (p + pt))
        q_new = jnp.where(frozen[1], q, 0.5 * (q + qt))
        # a measurement counts only after a full alternating step at the target
        measured = s["alternated"] & ~annealing
        solved = measured & jnp.all(errors < threshold)

        # the target: fixed, or relative to the running W2^2 estimate. Estimates read
        # during the annealing are of unconverged potentials and can be far too large
        # (measured 2026-12-01: d = 16 and 64 stopped at 18x and 16x relative * the
        # converged estimate; scaling 0.25 in 2-D at 24x), so a solve whose converged
        # estimate puts the target below its epsilon anneals on instead of stopping.
        target = jnp.maximum(
            jnp.asarray(eps_target, dtype), relative * jnp.maximum(divergence, 0.0)
        )
        too_coarse = solved & (eps > (1.0 + 1e-2) * target)
        done = solved & ~too_coarse
        next_eps = jnp.maximum(eps * scaling, target)
        still_annealing = (annealing & (eps > target)) | too_coarse
        return {
            "f": jnp.where(done, f, f_new),
            "g": jnp.where(done, g, g_new),
            "p": jnp.where(done, p, p_new),
            "q": jnp.where(done, q, q_new),
            "pt": pt,
            "qt": qt,
            # a resumed annealing moves epsilon: the symmetric problems move with it
            "frozen": frozen & ~too_coarse,
            "eps": jnp.where(still_annealing, next_eps, eps),
            "annealing": still_annealing,
            "alternated": ~annealing,
            "it": s["it"] + 1,
            "col": jnp.where(done, s["col"], col),
            "errors": errors,
            "last_error": errors[0],
            "history": history,
            "gap": gap,
            "ot_xy": ot_xy,
            "divergence": divergence,
            "done": done,
        }

    s = jax.lax.while_loop(lambda s: ~s["done"] & (s["it"] < max_iterations), body, init)
    converged = s["done"]
    return SinkhornResult(
        divergence=s["divergence"],
        ot_xy=s["ot_xy"],
        epsilon=s["eps"],
        iterations=s["it"],
        marginal_errors=s["errors"],
        gap=s["gap"],
        converged=converged,
        coarse_iterations=jnp.asarray(0),
        f=s["f"],
        g=s["g"],
        p=s["p"],
        q=s["q"],
    )


def _mean_squared_distance(x: np.ndarray, y: np.ndarray) -> float:
    """mean_ij |x_i - y_j|^2 = |mean x - mean y|^2 + Var x + Var y, in O(n + m)."""
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    spread_x = np.mean(np.sum((x - mean_x) ** 2, axis=1))
    spread_y = np.mean(np.sum((y - mean_y) ** 2, axis=1))
    return float(np.sum((mean_x - mean_y) ** 2) + spread_x + spread_y)


def check_sinkhorn_options(
    epsilon: float | None,
    relative_epsilon: float = DEFAULT_RELATIVE_EPSILON,
    scaling: float = DEFAULT_SCALING,
    threshold: float = DEFAULT_THRESHOLD,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    anderson_memory: int = DEFAULT_ANDERSON_MEMORY,
) -> int:
    """Eager checks of the :func:`sinkhorn` options; returns ``max_iterations``."""
    if epsilon is not None:
        if not np.isfinite(epsilon):
            raise ValueError(f"epsilon must be a positive finite number, got {epsilon!r}")
        check_positive(epsilon, "epsilon")
    check_positive(relative_epsilon, "relative_epsilon")
    check_positive(threshold, "threshold")
    if not 0.0 < scaling < 1.0:
        raise ValueError(f"scaling must lie in (0, 1), got {scaling!r}")
    if not (isinstance(anderson_memory, int | np.integer) and 0 <= anderson_memory <= 50):
        raise ValueError(f"anderson_memory must be an integer in [0, 50], got {anderson_memory!r}")
    return check_positive_int(max_iterations, "max_iterations")


def sinkhorn(
    x: ArrayLike,
    y: ArrayLike,
    *,
    epsilon: float | None = None,
    relative_epsilon: float = DEFAULT_RELATIVE_EPSILON,
    scaling: float = DEFAULT_SCALING,
    threshold: float = DEFAULT_THRESHOLD,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    anderson_memory: int = DEFAULT_ANDERSON_MEMORY,
    debias: bool = True,
    dense: bool | None = None,
    row_chunk: int | None = None,
    col_chunk: int | None = None,
) -> SinkhornResult:
    """Debiased Sinkhorn divergence between uniform point clouds (Feydy et al. 2019).

    The data are centred on their common mean first (the cost is translation
    invariant; float32 potentials then carry fewer digits of an offset), so the
    returned potentials belong to the centred clouds ``x - c``, ``y - c``.

    Args:
        x: (n, d) points, weights 1/n.
        y: (m, d) points, weights 1/m.
        epsilon: target entropic regularization (squared-distance units). None:
            ``relative_epsilon`` times the W2^2 estimate, floored at
            ``MIN_RELATIVE_EPSILON`` times the mean pairwise cost, in one pass: the
            annealing reads the debiased estimate at every epsilon (it grows as
            epsilon falls) and stops once epsilon is below ``relative_epsilon``
            times it.
        relative_epsilon: see ``epsilon``; the debiased divergence then
            underestimates W2^2 by roughly this fraction or less.
        scaling: epsilon factor per annealing iteration, in (0, 1).
        threshold: stopping tolerance on each L1 marginal error (xy, xx, yy).
        max_iterations: cap on the total iterations; hitting it gives
            ``converged = False``.
        anderson_memory: iterates kept by the Anderson-accelerated updates at the
            target epsilon, in [0, 50] (0: plain Sinkhorn).
        debias: solve the xx and yy problems too; False skips them (half the work),
            and ``divergence`` is then the plain ``OT_eps(a, b)``.
        dense: hold the three cost matrices in memory (None: when n * m, n^2 and m^2
            are all <= ``DENSE_MAX_PAIRS``); False streams with memory
            O(row_chunk * col_chunk).
        row_chunk: rows per streamed block (None: ``STREAM_BLOCK_PAIRS // col_chunk``).
        col_chunk: columns per streamed block (None: ``max(n, m)``, whole rows).

    Returns:
        A :class:`SinkhornResult`.

    Raises:
        ValueError: bad shapes, NaN/Inf, empty sets, non-positive epsilon, threshold
            or relative_epsilon, scaling outside (0, 1), data whose squared distances
            overflow the float dtype.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(200, 2))
        >>> out = sinkhorn(x, x + np.array([3.0, 0.0]))
        >>> bool(out.converged), round(float(out.divergence), 2)
        (True, 9.0)
    """
    check_pair(x, y)
    max_iterations = check_sinkhorn_options(
        epsilon, relative_epsilon, scaling, threshold, max_iterations, anderson_memory
    )
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    center = np.concatenate([x64, y64]).mean(axis=0)
    x64, y64 = x64 - center, y64 - center
    n, m = x64.shape[0], y64.shape[0]
    dtype = jnp.result_type(float)
    if not squared_diameter(x64, y64) < 1e-3 * float(np.finfo(dtype).max):
        raise ValueError(
            f"x and y: squared distances up to {squared_diameter(x64, y64):.3g} overflow "
            f"{np.dtype(dtype).name} Sinkhorn arithmetic; rescale the data (W2 is "
            "1-homogeneous) or enable float64"
        )
    mean_cost = _mean_squared_distance(x64, y64)
    if mean_cost == 0.0:  # all points coincide: every plan costs 0
        zero = jnp.zeros((), dtype)
        return SinkhornResult(
            divergence=zero,
            ot_xy=zero,
            epsilon=jnp.asarray(epsilon or 0.0, dtype),
            iterations=jnp.asarray(0),
            marginal_errors=jnp.zeros(3, dtype),
            gap=zero,
            converged=jnp.asarray(True),
            coarse_iterations=jnp.asarray(0),
            f=jnp.zeros(n, dtype),
            g=jnp.zeros(m, dtype),
            p=jnp.zeros(n, dtype),
            q=jnp.zeros(m, dtype),
        )
    # Solved in units of the mean pairwise cost (the cost is 2-homogeneous), so the
    # float32 arithmetic sees O(1) numbers whatever the data's scale; the values,
    # epsilon, gap and potentials are scaled back.
    unit = mean_cost
    x64, y64 = x64 / math.sqrt(unit), y64 / math.sqrt(unit)
    diameter2 = squared_diameter(x64, y64)
    floor = MIN_RELATIVE_EPSILON
    if epsilon is None:  # target: relative to the running estimate, floored
        eps_target, relative = floor, float(relative_epsilon)
    else:
        eps_target, relative = float(epsilon) / unit, 0.0
    if dense is None:
        dense = max(n * m, n * n, m * m) <= DENSE_MAX_PAIRS
    if row_chunk is None or col_chunk is None:
        # streamed blocks spanning whole rows (no online-max scan across column
        # chunks): 1.6x faster per pass than 512 x 2048 blocks at n = 4000
        col_chunk = max(n, m) if col_chunk is None else col_chunk
        row_chunk = max(1, STREAM_BLOCK_PAIRS // col_chunk) if row_chunk is None else row_chunk
    row_chunk = check_positive_int(row_chunk, "row_chunk")
    col_chunk = check_positive_int(col_chunk, "col_chunk")
    options = {
        "scaling": float(scaling),
        "threshold": float(threshold),
        "memory": int(anderson_memory),
        "row_chunk": row_chunk,
        "col_chunk": col_chunk,
        "debias": bool(debias),
    }
    xj, yj = jnp.asarray(x64, dtype), jnp.asarray(y64, dtype)
    eps_init = max(diameter2, eps_target)
    potentials = (np.zeros(n), np.zeros(m), np.zeros(n), np.zeros(m))
    coarse_iterations = 0
    if not dense and min(n, m) > 2 * COARSE_POINTS:
        # Multiscale start (Feydy et al. 2019, geomloss): the annealing runs on
        # COARSE_POINTS-point subsamples (dense), whose potentials at its final
        # epsilon are extended to all points by one soft c-transform each; the full
        # problem then starts at that epsilon. Saves the annealing passes over all
        # pairs (measured n = 4000: 1.12 CPU-s against 1.78).
        rng = np.random.default_rng(0)
        xs = jnp.asarray(x64[rng.choice(n, COARSE_POINTS, replace=False)], dtype)
        ys = jnp.asarray(y64[rng.choice(m, COARSE_POINTS, replace=False)], dtype)
        zeros = (np.zeros(COARSE_POINTS),) * 4
        coarse = _sinkhorn_loop(
            xs,
            ys,
            zeros,
            eps_init,
            eps_target,
            relative,
            max_iterations=max_iterations,
            dense=True,
            **options,
        )
        coarse_iterations = int(coarse.iterations)
        eps_init = float(coarse.epsilon)
        potentials = _extend_potentials(xs, ys, coarse, xj, yj, row_chunk, col_chunk)
        # the relative rule was applied on the subsamples: the full problem keeps
        # that epsilon (a fixed target the coarse run did not reach is annealed to)
        if epsilon is None:
            eps_target = eps_init
        relative = 0.0
        max_iterations = max(1, max_iterations - coarse_iterations)
    out = _sinkhorn_loop(
        xj,
        yj,
        potentials,
        eps_init,
        eps_target,
        relative,
        max_iterations=max_iterations,
        dense=bool(dense),
        **options,
    )
    return out.replace(
        divergence=out.divergence * unit,
        ot_xy=out.ot_xy * unit,
        epsilon=out.epsilon * unit,
        gap=out.gap * unit,
        coarse_iterations=jnp.asarray(coarse_iterations),
        f=out.f * unit,
        g=out.g * unit,
        p=out.p * unit,
        q=out.q * unit,
    )


@functools.partial(jax.jit, static_argnames=("row_chunk", "col_chunk"))
def _extend_potentials(xs, ys, coarse, x, y, row_chunk, col_chunk):
    """Subsample potentials at the coarse epsilon extended to all points.

    ``f(x) = -eps log mean_j exp((g_j - |x - ys_j|^2) / eps)`` over the subsample
    ``ys`` (the soft c-transform that :func:`_sinkhorn_loop` applies at the
    subsample's own points), likewise ``g`` from ``f``, ``p`` from ``p``, ``q`` from ``q``.
    """
    eps = coarse.epsilon
    log_w = -math.log(xs.shape[0])

    def extend(points, support, potential):
        geom = PointCloud(points, support, row_chunk, col_chunk)
        return _softmin(geom, potential, log_w, eps)

    return (
        extend(x, ys, coarse.g),
        extend(y, xs, coarse.f),
        extend(x, xs, coarse.p),
        extend(y, ys, coarse.q),
    )


def _centred(x, y):
    """``x`` and ``y`` shifted by their pooled mean (jittable)."""
    center = jnp.mean(jnp.concatenate([x, y]), axis=0)
    return x - center, y - center


def _jnp_squared_diameter(x, y):
    """Squared bounding-box diagonal of both sets (jittable :func:`squared_diameter`)."""
    both = jnp.concatenate([x, y])
    return jnp.sum((jnp.max(both, axis=0) - jnp.min(both, axis=0)) ** 2)


def sinkhorn_log_plan(
    x: ArrayLike,
    y: ArrayLike,
    *,
    epsilon: float | jax.Array,
    threshold: float = DEFAULT_THRESHOLD,
    max_iterations: int = 1000,
    scaling: float = DEFAULT_SCALING,
    anderson_memory: int = DEFAULT_ANDERSON_MEMORY,
) -> jax.Array:
    """Log of the entropic OT plan between uniform minibatches; callable inside ``jit``.

    ``P = argmin <P, C> + eps KL(P | a x b)`` over couplings of ``a = 1/n``,
    ``b = 1/m``, ``C_ij = |x_i - y_j|^2`` (absolute units), by the log-domain core of
    :func:`sinkhorn` (non-debiased, epsilon-scaling from the squared diameter,
    over-relaxed updates at the target) on a dense ``(n, m)`` cost matrix, so meant
    for minibatch sizes. ``log P_ij = (f_i + g_j - C_ij) / eps - log(n m)``. The
    inputs are held out of the gradient (a coupling is data). When the iteration cap
    is hit the plan of the last iterate is returned (marginal errors above
    ``threshold``); :func:`sinkhorn` reports convergence explicitly.

    Args:
        x: (n, d) source points.
        y: (m, d) target points.
        epsilon: target entropic regularization (squared-distance units), a
            positive scalar; may be traced.
        threshold: stopping tolerance on the L1 marginal errors.
        max_iterations: cap on the iterations (annealing included).
        scaling: epsilon factor per annealing iteration, in (0, 1).
        anderson_memory: Anderson history of the updates at the target epsilon.

    Returns:
        (n, m) log plan; ``exp`` of it sums to 1 up to the marginal error.

    Raises:
        ValueError: shapes that are not (n, d) and (m, d), concrete NaN/Inf data or
            a non-positive concrete epsilon, bad options.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0], [10.0]])
        >>> plan = jax.jit(lambda a, b: sinkhorn_log_plan(a, b, epsilon=0.1))(x, x[::-1])
        >>> jnp.round(jnp.exp(plan), 3).tolist()
        [[0.0, 0.5], [0.5, 0.0]]
    """
    check_pair(x, y)
    if is_concrete(epsilon):
        check_sinkhorn_options(float(np.asarray(epsilon)))
    max_iterations = check_sinkhorn_options(
        None,
        scaling=scaling,
        threshold=threshold,
        max_iterations=max_iterations,
        anderson_memory=anderson_memory,
    )
    return _log_plan(
        x, y, epsilon, float(scaling), float(threshold), max_iterations, int(anderson_memory)
    )


@functools.partial(jax.jit, static_argnames="memory")
def _log_plan(x, y, epsilon, scaling, threshold, max_iterations, memory):
    dtype = jnp.result_type(x, y, float)
    x, y = _centred(*(jax.lax.stop_gradient(jnp.asarray(a, dtype)) for a in (x, y)))
    n, m = x.shape[0], y.shape[0]
    eps = jnp.asarray(jax.lax.stop_gradient(epsilon), dtype)
    zeros = (jnp.zeros(n, dtype), jnp.zeros(m, dtype), jnp.zeros(n, dtype), jnp.zeros(m, dtype))
    out = _sinkhorn_loop(
        x,
        y,
        zeros,
        jnp.maximum(_jnp_squared_diameter(x, y), eps),
        eps,
        0.0,
        scaling,
        threshold,
        memory=memory,
        dense=True,
        max_iterations=max_iterations,
        row_chunk=DEFAULT_ROW_CHUNK,
        col_chunk=DEFAULT_COL_CHUNK,
        debias=False,
    )
    cost = squared_distances(x, y)
    return (out.f[:, None] + out.g[None, :] - cost) / eps - math.log(n * m)


@functools.partial(jax.jit, static_argnames="row_chunk")
def _sample_rows(key, x, y, g, eps, row_chunk):
    n = x.shape[0]
    keys = jax.random.split(key, n)

    def rows(xc, idx):
        logits = (g[None, :] - squared_distances(xc, y)) / eps
        kc = keys[jnp.minimum(idx, n - 1)]
        return jax.vmap(jax.random.categorical)(kc, logits)

    return map_row_chunks(rows, x, row_chunk).reshape(-1)[:n]


def sample_sinkhorn_plan(
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    *,
    result: SinkhornResult | None = None,
    epsilon: float | None = None,
    row_chunk: int = 256,
    **options: float | int | bool | None,
) -> jax.Array:
    """A partner ``j`` for every ``x_i`` drawn from the entropic OT plan (minibatch OT).

    The Sinkhorn plan ``P_ij = exp((f_i + g_j - C_ij)/eps) / (n m)`` conditioned on row
    ``i`` is ``P(j | i) ∝ exp((g_j - C_ij)/eps)``; one draw per row keeps the x
    marginal exact. Memory O(row_chunk * m).

    Args:
        key: PRNG key.
        x: (n, d) source batch.
        y: (m, d) target batch.
        result: a :func:`sinkhorn` result for this (x, y) to reuse (its ``g`` and
            ``epsilon``); None solves ``sinkhorn(x, y, epsilon=epsilon, debias=False,
            **options)``.
        epsilon: target epsilon of that solve (None: its default rule).
        row_chunk: rows sampled per block.
        **options: further :func:`sinkhorn` options.

    Returns:
        (n,) int indices into ``y``: the pairs ``(x_i, y_j)``.

    Example:
        >>> import jax, numpy as np
        >>> x = np.array([[0.0], [10.0]])
        >>> sample_sinkhorn_plan(jax.random.key(0), x, x[::-1], epsilon=1e-2).tolist()
        [1, 0]
    """
    check_pair(x, y)
    row_chunk = check_positive_int(row_chunk, "row_chunk")
    if result is None:
        result = sinkhorn(x, y, epsilon=epsilon, debias=False, **options)
    elif result.g.shape != (np.shape(y)[0],):
        raise ValueError(
            f"result must be the sinkhorn result for y of {np.shape(y)[0]} points, got "
            f"potentials g of shape {result.g.shape}"
        )
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    center = np.concatenate([x64, y64]).mean(axis=0)
    dtype = result.g.dtype
    return _sample_rows(
        key,
        jnp.asarray(x64 - center, dtype),
        jnp.asarray(y64 - center, dtype),
        result.g,
        result.epsilon,
        row_chunk,
    )
