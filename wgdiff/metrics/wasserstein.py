"""Wasserstein-2 distance between empirical measures: exact, debiased Sinkhorn, sliced.

For point sets ``x`` (n, d) and ``y`` (m, d) with uniform weights,

    W2(x, y)^2 = min_P sum_ij P_ij |x_i - y_j|^2,   P 1 = 1/n,  P^T 1 = 1/m.

* ``exact``: :func:`wgdiff.metrics.exact.exact_ot` -- for ``n == m`` an assignment on a
  sparse candidate graph, certified optimal by dual feasibility over all pairs; for
  ``n != m`` POT's network simplex with the same certificate.
* ``sinkhorn``: the debiased Sinkhorn divergence ``S_eps`` of
  :func:`wgdiff.metrics.sinkhorn.sinkhorn` (log domain, epsilon-scaling, streamed
  kernel sums), which tends to ``W2^2`` as ``eps -> 0``; we return
  ``sqrt(max(S_eps, 0))``.
* ``auto``: exact up to ``EXACT_AUTO_MAX_PAIRS`` pairs (n != m: up to
  ``LP_MAX_PAIRS``), Sinkhorn beyond.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff._checks import check_positive_int
from wgdiff._types import ArrayLike, PRNGKey
from wgdiff.metrics._common import check_pair, to_float_array
from wgdiff.metrics.exact import LP_MAX_PAIRS, exact_ot
from wgdiff.metrics.sinkhorn import (
    DEFAULT_MAX_ITERATIONS,
    DEFAULT_RELATIVE_EPSILON,
    DEFAULT_THRESHOLD,
    _mean_squared_distance,
    check_sinkhorn_options,
    sinkhorn,
)

METHODS = ("auto", "exact", "sinkhorn")

# "auto" uses the certified exact solver up to 8000 x 8000 points: its all-pairs
# certificate and candidate passes are O(n^2) but cheap next to Sinkhorn there.
EXACT_AUTO_MAX_PAIRS = 8000 * 8000


def w2(x: ArrayLike, y: ArrayLike, *, method: str = "auto", **kwargs: float | int | None) -> float:
    """Wasserstein-2 distance (not squared) between two empirical measures.

    Args:
        x: (n, d) points, uniform weights 1/n.
        y: (m, d) points, uniform weights 1/m.
        method: ``"auto"``, ``"exact"`` or ``"sinkhorn"`` (see :func:`w2_with_info`).
        **kwargs: Sinkhorn options of :func:`w2_with_info`.

    Returns:
        W2(x, y) as a Python float. The solvers run on the host (exact) or in their own
        jitted Sinkhorn loop, so call this eagerly, not inside ``jax.jit``.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0, 0.0], [1.0, 0.0]])
        >>> round(w2(x, x + np.array([0.0, 3.0])), 6)
        3.0
    """
    return w2_with_info(x, y, method=method, **kwargs)["value"]


def w2_with_info(
    x: ArrayLike,
    y: ArrayLike,
    *,
    method: str = "auto",
    epsilon: float | None = None,
    relative_epsilon: float = DEFAULT_RELATIVE_EPSILON,
    threshold: float = DEFAULT_THRESHOLD,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> dict:
    """W2 distance with a record of how it was computed.

    Args:
        x: (n, d) points, uniform weights.
        y: (m, d) points, uniform weights.
        method: ``"exact"`` (certified assignment for n == m, network simplex
            otherwise), ``"sinkhorn"`` (debiased Sinkhorn divergence) or ``"auto"``
            (exact while ``n * m <= EXACT_AUTO_MAX_PAIRS`` and, for n != m,
            ``<= LP_MAX_PAIRS``).
        epsilon: Sinkhorn target epsilon (see :func:`wgdiff.metrics.sinkhorn.sinkhorn`).
        relative_epsilon: Sinkhorn epsilon relative to the W2^2 estimate when
            ``epsilon`` is None.
        threshold: Sinkhorn stopping tolerance on each L1 marginal error.
        max_iterations: Sinkhorn iteration cap.

    Returns:
        dict with ``value`` (W2, float), ``method`` (``"exact"`` or ``"sinkhorn"``),
        ``converged`` (bool; for exact: the certificate holds), ``n_points`` ((n, m)).
        Exact adds ``solver`` and ``certificate`` (see
        :class:`wgdiff.metrics.exact.ExactOT`); Sinkhorn adds ``epsilon`` (final),
        ``iterations``, ``coarse_iterations`` (multiscale start), ``marginal_errors``
        (xy, xx, yy), ``gap`` and ``divergence``. Both paths are scale free: any
        finite data give ``c * W2(x / c, y / c)``.

    Raises:
        ValueError: bad shapes, NaN/Inf, unknown method, non-positive epsilon, or an
            exact n != m problem above ``LP_MAX_PAIRS``.
    """
    check_pair(x, y)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_sinkhorn_options(
        epsilon, relative_epsilon, threshold=threshold, max_iterations=max_iterations
    )
    n, m = np.shape(x)[0], np.shape(y)[0]
    if method == "auto":
        limit = EXACT_AUTO_MAX_PAIRS if n == m else min(EXACT_AUTO_MAX_PAIRS, LP_MAX_PAIRS)
        method = "exact" if n * m <= limit else "sinkhorn"
    if method == "exact":
        out = exact_ot(x, y)
        return {
            "value": math.sqrt(max(out.cost, 0.0)),
            "method": "exact",
            "converged": out.certificate["certified"],
            "n_points": (n, m),
            "solver": out.certificate["solver"],
            "certificate": out.certificate,
        }
    # W2 is 1-homogeneous: Sinkhorn runs on the data in units of the root mean
    # pairwise cost and the float64 results are scaled back, so any finite data
    # whose squares overflow float32 (or underflow it) are measured as well.
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    with np.errstate(over="ignore"):
        center = np.concatenate([x64, y64]).mean(axis=0)
        unit = math.sqrt(_mean_squared_distance(x64 - center, y64 - center))
    if not (np.isfinite(unit) and unit > 0.0):
        unit = 1.0
    out = sinkhorn(
        (x64 - center) / unit,
        (y64 - center) / unit,
        epsilon=None if epsilon is None else epsilon / unit**2,
        relative_epsilon=relative_epsilon,
        threshold=threshold,
        max_iterations=max_iterations,
    )
    divergence = float(out.divergence) * unit**2
    return {
        "value": math.sqrt(max(divergence, 0.0)),
        "method": "sinkhorn",
        "converged": bool(out.converged),
        "n_points": (n, m),
        "divergence": divergence,
        "epsilon": float(out.epsilon) * unit**2,
        "iterations": int(out.iterations),
        "coarse_iterations": int(out.coarse_iterations),
        "marginal_errors": [float(e) for e in out.marginal_errors],
        "gap": float(out.gap) * unit**2,
    }


def sliced_w2(key: PRNGKey, x: ArrayLike, y: ArrayLike, n_projections: int = 128) -> jax.Array:
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


def _host_call(fn, a, dtype):
    return jax.pure_callback(
        lambda v: np.asarray(fn(np.asarray(v))).astype(dtype),
        jax.ShapeDtypeStruct(a.shape, dtype),
        a,
        vmap_method="broadcast_all",
    )


@jax.custom_jvp
def _host_sort(a):
    """``jnp.sort(a, axis=-1)`` computed by NumPy on the host (exact, same values)."""
    return _host_call(functools.partial(np.sort, axis=-1), a, a.dtype)


@_host_sort.defjvp
def _host_sort_jvp(primals, tangents):
    # sorting permutes: the tangent is the input tangent under the same permutation
    (a,), (da,) = primals, tangents
    order = _host_call(functools.partial(np.argsort, axis=-1, kind="stable"), a, np.int32)
    return jnp.take_along_axis(a, order, axis=-1), jnp.take_along_axis(da, order, axis=-1)


def _sort_last(a):
    """Sort along the last axis. On the CPU backend XLA's sort is ~8x slower than
    NumPy's (n = 1e5 x 128 rows, float32: 2.9 against 0.34 CPU-s, measured 2026-12-01),
    so there the values are sorted on the host (``jax.pure_callback``, differentiable
    through the sorting permutation); other platforms use ``jnp.sort``."""
    return jax.lax.platform_dependent(
        a, cpu=_host_sort, default=functools.partial(jnp.sort, axis=-1)
    )


def _projected_w2_squared(x_proj, y_proj):
    """Exact 1-D W2^2 of each column of projections: (n, k), (m, k) -> (k,)."""
    # sort contiguous rows: (k, n) and (k, m)
    x_sorted, y_sorted = _sort_last(x_proj.T), _sort_last(y_proj.T)
    n, m = x_proj.shape[0], y_proj.shape[0]
    if n == m:
        return jnp.mean((x_sorted - y_sorted) ** 2, axis=-1)
    x_index, y_index, widths = _quantile_grid(n, m)
    diff = x_sorted[:, x_index] - y_sorted[:, y_index]
    return (diff**2) @ jnp.asarray(widths, x_proj.dtype)


@functools.partial(jax.jit, static_argnames="n_projections")
def _sliced_w2(key, x, y, n_projections):
    dtype = jnp.result_type(x, y)
    directions = jax.random.normal(key, (x.shape[1], n_projections), dtype)
    directions = directions / jnp.linalg.norm(directions, axis=0, keepdims=True)
    per_direction = _projected_w2_squared(
        x.astype(dtype) @ directions, y.astype(dtype) @ directions
    )
    return jnp.sqrt(jnp.mean(per_direction))


@functools.partial(jax.jit, static_argnames=("n_projections", "n_steps"))
def _max_sliced_w2(key, x, y, n_projections, n_steps, learning_rate):
    dtype = jnp.result_type(x, y)
    x, y = x.astype(dtype), y.astype(dtype)
    directions = jax.random.normal(key, (x.shape[1], n_projections), dtype)
    directions = directions / jnp.linalg.norm(directions, axis=0, keepdims=True)
    start = directions[:, jnp.argmax(_projected_w2_squared(x @ directions, y @ directions))]
    objective = lambda theta: (
        _projected_w2_squared(x @ theta[:, None], y @ theta[:, None])[0] / jnp.sum(theta**2)
    )
    scale = (
        jnp.mean(jnp.sum((x - x.mean(0)) ** 2, axis=1))
        + jnp.mean(jnp.sum((y - y.mean(0)) ** 2, axis=1))
        + jnp.sum((x.mean(0) - y.mean(0)) ** 2)
    )

    def step(carry, _):
        theta, best = carry
        value, grad = jax.value_and_grad(objective)(theta)
        # Riemannian gradient ascent on the sphere: project, step, renormalize
        grad = grad - jnp.dot(grad, theta) * theta
        theta = theta + learning_rate * grad / jnp.maximum(scale, 1e-30)
        theta = theta / jnp.linalg.norm(theta)
        return (theta, jnp.maximum(best, value)), None

    (theta, best), _ = jax.lax.scan(step, (start, objective(start)), None, length=n_steps)
    best = jnp.maximum(best, objective(theta))
    return jnp.sqrt(best), theta


def max_sliced_w2(
    key: PRNGKey,
    x: ArrayLike,
    y: ArrayLike,
    n_projections: int = 128,
    n_steps: int = 100,
    learning_rate: float = 0.1,
) -> tuple[jax.Array, jax.Array]:
    """Max-sliced W2: ``max_theta W2(theta.x, theta.y)`` over unit directions.

    Deshpande et al. (2019): the best of ``n_projections`` random directions, then
    ``n_steps`` of Riemannian gradient ascent on the sphere (the 1-D W2^2 of sorted
    projections is piecewise quadratic in theta). The objective is not concave, so the
    result is a lower bound on the maximum, and always <= W2(x, y) (each projection is
    1-Lipschitz) and >= :func:`sliced_w2`'s directions' mean.

    Args:
        key: PRNG key for the starting directions.
        x: (n, d) points.
        y: (m, d) points.
        n_projections: random starting directions.
        n_steps: ascent steps from the best of them.
        learning_rate: step size, relative to the data's spread.

    Returns:
        ``(value, direction)``: the max-sliced W2 (distance units) and the (d,) unit
        direction attaining it.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0, 0.0], [1.0, 0.0]])
        >>> value, _ = max_sliced_w2(jax.random.key(0), x, x + jnp.array([0.0, 2.0]))
        >>> round(float(value), 4)
        2.0
    """
    check_pair(x, y)
    n_projections = check_positive_int(n_projections, "n_projections")
    n_steps = check_positive_int(n_steps, "n_steps") if n_steps != 0 else 0
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    return _max_sliced_w2(
        key, to_float_array(x), to_float_array(y), n_projections, n_steps, float(learning_rate)
    )
