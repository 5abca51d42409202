"""Wasserstein-2 distance between empirical measures: exact, debiased Sinkhorn, sliced.

For point sets ``x`` (n, d) and ``y`` (m, d) with uniform weights,

    W2(x, y)^2 = min_P sum_ij P_ij |x_i - y_j|^2,   P 1 = 1/n,  P^T 1 = 1/m.

* ``exact``: for ``n == m`` an optimal plan is a permutation (Birkhoff), found by
  ``scipy.optimize.linear_sum_assignment`` on the float64 squared-distance matrix;
  for ``n != m`` the transport LP above is solved by HiGHS (interior point with
  crossover, so the optimum is a vertex and the value is exact up to HiGHS's 1e-7
  feasibility tolerance).
* ``sinkhorn``: the debiased Sinkhorn divergence of OTT-JAX,
  ``S_eps = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2``, which tends to
  ``W2^2`` as ``eps -> 0``; we return ``sqrt(max(S_eps, 0))``.
* ``auto``: exact when it is cheap (``n * m <= EXACT_AUTO_MAX_PAIRS`` for equal
  sizes, ``n * m <= LP_MAX_PAIRS`` otherwise), Sinkhorn beyond.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from ott.geometry import pointcloud
from ott.solvers.linear import acceleration
from ott.tools import sinkhorn_divergence
from scipy.optimize import linear_sum_assignment, linprog
from scipy.spatial.distance import cdist

from wgdiff._checks import check_positive, check_positive_int
from wgdiff.metrics._common import check_pair, to_float_array

METHODS = ("auto", "exact", "sinkhorn")

# "auto" uses the exact assignment up to 2000 x 2000 points (about 7 s for
# linear_sum_assignment on one core of the 2-core development box; it grows as n^3).
EXACT_AUTO_MAX_PAIRS = 2000 * 2000
# Hard limit of method="exact" with n == m: the float64 cost matrix takes 8 n^2 bytes
# (512 MB at n = 8000) and the assignment runs for minutes there.
ASSIGNMENT_MAX_PAIRS = 8000 * 8000
# Hard limit of method="exact" with n != m: the LP has n * m variables; HiGHS's
# interior point took about 4 CPU s at 500 x 499 in 2-D on the development box.
LP_MAX_PAIRS = 500 * 500

# Sinkhorn settings. Without an explicit epsilon we first solve at
# COARSE_RELATIVE_EPSILON * (mean pairwise cost), which converges in ~100 iterations,
# then refine at relative_epsilon * (that estimate of W2^2), floored at
# MIN_RELATIVE_EPSILON * (mean pairwise cost) to bound the iteration count.
COARSE_RELATIVE_EPSILON = 1e-2
DEFAULT_RELATIVE_EPSILON = 2e-2
MIN_RELATIVE_EPSILON = 1e-4
# No epsilon decay schedule: OTT's convergence test may then stop at a larger epsilon
# than the target, and its ``min_iterations`` guard is not usable (in ott-jax 0.6 it
# reports convergence at min_iterations without having measured the error).
# Lehmann et al. adaptive over-relaxation from iteration 100; a fixed large momentum
# from the start can diverge, and no momentum needs ~5x more iterations at small eps.
_MOMENTUM_START = 100


def w2(x, y, *, method: str = "auto", **kwargs) -> float:
    """Wasserstein-2 distance (not squared) between two empirical measures.

    Args:
        x: (n, d) points, uniform weights 1/n.
        y: (m, d) points, uniform weights 1/m.
        method: ``"auto"``, ``"exact"`` or ``"sinkhorn"`` (see :func:`w2_with_info`).
        **kwargs: Sinkhorn options of :func:`w2_with_info`.

    Returns:
        W2(x, y) as a Python float. The solvers run on the host (SciPy) or in their own
        jitted Sinkhorn loop, so call this eagerly, not inside ``jax.jit``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0, 0.0], [1.0, 0.0]])
        >>> round(w2(x, x + np.array([0.0, 3.0])), 6)
        3.0
    """
    return w2_with_info(x, y, method=method, **kwargs)["value"]


def w2_with_info(
    x,
    y,
    *,
    method: str = "auto",
    epsilon: float | None = None,
    relative_epsilon: float = DEFAULT_RELATIVE_EPSILON,
    threshold: float = 1e-3,
    max_iterations: int = 2000,
) -> dict:
    """W2 distance with a record of how it was computed.

    Args:
        x: (n, d) points, uniform weights.
        y: (m, d) points, uniform weights.
        method: ``"exact"`` (assignment for n == m, transport LP otherwise),
            ``"sinkhorn"`` (debiased Sinkhorn divergence) or ``"auto"`` (exact while
            ``n * m <= EXACT_AUTO_MAX_PAIRS`` and, for n != m, ``<= LP_MAX_PAIRS``).
        epsilon: Sinkhorn entropic regularization in units of the squared distance.
            None: a coarse solve at ``1e-2 * mean_ij |x_i - y_j|^2``, then, if it is
            less than half of that, a second at ``relative_epsilon * W2^2_coarse``
            (floored at ``1e-4`` times the mean cost).
        relative_epsilon: target ``epsilon / W2^2`` when ``epsilon`` is None. The
            debiased divergence underestimates W2 by roughly this order (0.02 gave
            errors below 0.5% in 2-D tests against POT).
        threshold: Sinkhorn stopping tolerance on the L1 marginal error.
        max_iterations: Sinkhorn iteration cap per term.

    Returns:
        dict with ``value`` (W2, float), ``method`` (``"exact"`` or ``"sinkhorn"``),
        ``converged`` (bool; always True for exact), ``n_points`` ((n, m)); exact adds
        ``solver``; Sinkhorn adds ``epsilon`` (final), ``iterations`` (iterations of
        the x-y term in the final stage) and ``stages`` (one dict per solve with
        epsilon, divergence, converged and iterations of the xy, xx, yy terms).

    Raises:
        ValueError: bad shapes, NaN/Inf, unknown method, or an exact problem above
            the size limits.
    """
    check_pair(x, y)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if epsilon is not None:
        check_positive(epsilon, "epsilon")
    check_positive(relative_epsilon, "relative_epsilon")
    check_positive(threshold, "threshold")
    max_iterations = check_positive_int(max_iterations, "max_iterations")
    n, m = np.shape(x)[0], np.shape(y)[0]
    pairs = n * m

    if method == "auto":
        exact_ok = pairs <= EXACT_AUTO_MAX_PAIRS if n == m else pairs <= LP_MAX_PAIRS
        method = "exact" if exact_ok else "sinkhorn"
    if method == "exact":
        x64, y64 = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if n == m:
            if pairs > ASSIGNMENT_MAX_PAIRS:
                raise ValueError(
                    f"method='exact' with n = m = {n} exceeds the assignment limit of "
                    f"{math.isqrt(ASSIGNMENT_MAX_PAIRS)} points per set; use "
                    "method='sinkhorn'"
                )
            value, solver = _exact_assignment(x64, y64), "linear_sum_assignment"
        else:
            if pairs > LP_MAX_PAIRS:
                raise ValueError(
                    f"method='exact' with x of {n} and y of {m} points needs a transport "
                    f"LP with n * m = {pairs} > LP_MAX_PAIRS = {LP_MAX_PAIRS} variables; "
                    "use method='sinkhorn' or equal sizes"
                )
            value, solver = _exact_transport_lp(x64, y64), "highs-ipm"
        return {
            "value": value,
            "method": "exact",
            "converged": True,
            "n_points": (n, m),
            "solver": solver,
        }
    return _w2_sinkhorn(x, y, epsilon, relative_epsilon, threshold, max_iterations)


def _exact_assignment(x: np.ndarray, y: np.ndarray) -> float:
    cost = cdist(x, y, "sqeuclidean")
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols].mean()))


def _exact_transport_lp(x: np.ndarray, y: np.ndarray) -> float:
    n, m = x.shape[0], y.shape[0]
    cost = cdist(x, y, "sqeuclidean")
    # Marginals scaled by n * m to the integers m (rows) and n (columns): the LP data are
    # exact and the vertex optimum is integral (the constraint matrix is totally
    # unimodular); the value is divided back by n * m.
    row_sums = scipy.sparse.kron(scipy.sparse.eye(n), np.ones((1, m)))
    col_sums = scipy.sparse.kron(np.ones((1, n)), scipy.sparse.eye(m))
    constraints = scipy.sparse.vstack([row_sums, col_sums]).tocsr()
    marginals = np.concatenate([np.full(n, float(m)), np.full(m, float(n))])
    result = linprog(
        cost.ravel(), A_eq=constraints, b_eq=marginals, bounds=(0, None), method="highs-ipm"
    )
    if result.status != 0:
        raise RuntimeError(f"HiGHS failed on the transport LP: {result.message}")
    return float(np.sqrt(max(result.fun, 0.0) / (n * m)))


@functools.partial(jax.jit, static_argnames=("threshold", "max_iterations"))
def _sinkhorn_divergence(x, y, epsilon, *, threshold, max_iterations):
    solve_kwargs = {
        "threshold": threshold,
        "max_iterations": max_iterations,
        "momentum": acceleration.Momentum(start=_MOMENTUM_START),
    }
    # Dense PointCloud (no batch_size): OTT's online mode is broken on JAX >= 0.9.
    divergence, out = sinkhorn_divergence.sinkhorn_divergence(
        pointcloud.PointCloud, x, y, epsilon=epsilon, solve_kwargs=solve_kwargs
    )
    # Trust a term only if OTT says so and it actually measured a marginal error below
    # threshold (OTT's flag alone has been wrong, e.g. ott-jax issue #375).
    measured_below = [jnp.any((e >= 0) & (e < threshold)) for e in out.errors]
    converged = jnp.stack(out.converged) & jnp.stack(measured_below)
    return divergence, converged, jnp.stack(out.n_iters)


def _mean_squared_distance(x: np.ndarray, y: np.ndarray) -> float:
    """mean_ij |x_i - y_j|^2 = |mean x - mean y|^2 + Var x + Var y, in O(n + m)."""
    mean_x, mean_y = x.mean(axis=0), y.mean(axis=0)
    spread_x = np.mean(np.sum((x - mean_x) ** 2, axis=1))
    spread_y = np.mean(np.sum((y - mean_y) ** 2, axis=1))
    return float(np.sum((mean_x - mean_y) ** 2) + spread_x + spread_y)


def _w2_sinkhorn(x, y, epsilon, relative_epsilon, threshold, max_iterations) -> dict:
    n, m = np.shape(x)[0], np.shape(y)[0]
    mean_cost = _mean_squared_distance(np.asarray(x, np.float64), np.asarray(y, np.float64))
    info = {"method": "sinkhorn", "n_points": (n, m), "stages": []}
    if mean_cost == 0.0:
        # every point of x and y is the same point
        return {**info, "value": 0.0, "converged": True, "epsilon": 0.0, "iterations": 0}
    xj, yj = to_float_array(x), to_float_array(y)

    def solve(eps):
        divergence, converged, iterations = _sinkhorn_divergence(
            xj, yj, eps, threshold=float(threshold), max_iterations=max_iterations
        )
        stage = {
            "epsilon": float(eps),
            "divergence": float(divergence),
            "converged": bool(np.all(converged)),
            "iterations": [int(i) for i in iterations],
        }
        info["stages"].append(stage)
        return stage

    if epsilon is not None:
        stage = solve(float(epsilon))
    else:
        coarse_epsilon = COARSE_RELATIVE_EPSILON * mean_cost
        stage = solve(coarse_epsilon)
        fine_epsilon = max(
            relative_epsilon * max(stage["divergence"], 0.0), MIN_RELATIVE_EPSILON * mean_cost
        )
        # refine only when it changes epsilon materially (each solve costs as much)
        if fine_epsilon < 0.5 * coarse_epsilon:
            stage = solve(fine_epsilon)
    return {
        **info,
        "value": math.sqrt(max(stage["divergence"], 0.0)),
        "converged": stage["converged"],
        "epsilon": stage["epsilon"],
        "iterations": stage["iterations"][0],
    }


def sliced_w2(key, x, y, n_projections: int = 128) -> jax.Array:
    """Sliced Wasserstein-2 distance, ``sqrt(mean_theta W2^2(theta.x, theta.y))``.

    Directions theta are uniform on the unit sphere. Each 1-D W2 is exact: for n == m
    it pairs sorted projections; otherwise it integrates
    ``|F_x^-1(u) - F_y^-1(u)|^2`` over the merged quantile grid {i/n} U {j/m}, on
    whose intervals both empirical quantile functions are constant. In 1-D the
    directions are +-1, so this is the exact W2.

    Args:
        key: PRNG key for the directions.
        x: (n, d) points.
        y: (m, d) points.
        n_projections: number of random directions.

    Returns:
        Scalar sliced W2 (distance units, not squared).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0], [1.0]])
        >>> float(sliced_w2(jax.random.key(0), x, x + 2.0))
        2.0
    """
    check_pair(x, y)
    n_projections = check_positive_int(n_projections, "n_projections")
    return _sliced_w2(key, to_float_array(x), to_float_array(y), n_projections)


def _quantile_grid(n: int, m: int):
    """Index pairs and widths of the merged quantile grid of n- and m-point measures.

    Works in integer units of 1/(n m): the breakpoints are i m and j n. On the
    interval ending at breakpoint k both quantile functions are constant, equal to
    the ceil(k/m)-th sorted x and the ceil(k/n)-th sorted y.
    """
    breaks = np.unique(np.concatenate([np.arange(1, n + 1) * m, np.arange(1, m + 1) * n]))
    widths = np.diff(breaks, prepend=0) / (n * m)
    x_index = -(-breaks // m) - 1
    y_index = -(-breaks // n) - 1
    return x_index, y_index, widths


@functools.partial(jax.jit, static_argnames="n_projections")
def _sliced_w2(key, x, y, n_projections):
    dtype = jnp.result_type(x, y)
    directions = jax.random.normal(key, (x.shape[1], n_projections), dtype)
    directions = directions / jnp.linalg.norm(directions, axis=0, keepdims=True)
    x_sorted = jnp.sort(x.astype(dtype) @ directions, axis=0)
    y_sorted = jnp.sort(y.astype(dtype) @ directions, axis=0)
    n, m = x.shape[0], y.shape[0]
    if n == m:
        per_direction = jnp.mean((x_sorted - y_sorted) ** 2, axis=0)
    else:
        x_index, y_index, widths = _quantile_grid(n, m)
        diff = x_sorted[x_index] - y_sorted[y_index]
        per_direction = jnp.asarray(widths, dtype) @ (diff**2)
    return jnp.sqrt(jnp.mean(per_direction))
