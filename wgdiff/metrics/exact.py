"""Exact optimal transport between uniform point clouds, with a dual certificate.

For ``x`` (n, d), ``y`` (m, d), weights ``1/n`` and ``1/m`` and ``C_ij = |x_i - y_j|^2``,
the transport LP ``min <P, C>`` has the dual ``max mean(u) + mean(v)`` subject to
``u_i + v_j <= C_ij``. Any feasible ``(u, v)`` whose dual value equals the primal cost
of a plan proves that plan optimal; with a small violation ``r_i = min_j C_ij - u_i -
v_j < 0`` the suboptimality is at most ``mean_i max(0, -r_i)`` (sum the dual
inequalities along any competing permutation).

``n == m`` (an assignment, Birkhoff):

1. approximate potentials from a coarse debiased-Sinkhorn solve (:mod:`.sinkhorn`);
2. a sparse candidate graph: for every row the ``k`` columns of least reduced cost
   ``C_ij - f_i - g_j``, for every column the ``k`` rows of least reduced cost, and a
   rank-matching along the principal axis (so a full matching always exists);
3. the assignment on that graph, exactly, by SciPy's LAPJVsp
   (``min_weight_full_bipartite_matching``) on the reduced costs;
4. exact dual potentials of the sparse LP: ``v_j = C_{s(j) j} - u_{s(j)}`` on the
   matched edges and ``u`` the Bellman-Ford fixed point of the difference constraints
   ``u_i <= u_k + C_ij - C_kj`` (``k`` matched to ``j``), started from ``f``;
5. the certificate: ``min_j C_ij - u_i - v_j`` over **all** pairs, in float64 row
   chunks; the most violating pairs are added to the graph and steps 3-5 repeat
   until no pair violates by more than ``tol``.

``n != m``: POT's network simplex (``ot.emd``) on the dense cost, with its duals
checked by the same all-pairs certificate.
"""

from __future__ import annotations

import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import ot
import scipy.sparse
from flax import struct
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from wgdiff._checks import check_positive, check_positive_int
from wgdiff.geometry import map_row_chunks, squared_distances
from wgdiff.metrics._common import check_pair

# Dense limit of the n != m path: POT's network simplex on an n x m float64 matrix.
LP_MAX_PAIRS = 6000 * 6000
DEFAULT_NEIGHBORS = 8
# Candidate potentials: Sinkhorn at this fraction of the mean pairwise cost.
CANDIDATE_RELATIVE_EPSILON = 1e-2
CANDIDATE_ITERATIONS = 100
# then Sinkhorn on the candidate edges only, halving epsilon down to this fraction
SPARSE_RELATIVE_EPSILON = 1e-5
SPARSE_ITERATIONS_PER_EPS = 5
CERTIFICATE_CHUNK = 256
KD_TREE_MAX_DIM = 8
MAX_ROUNDS = 50


@struct.dataclass
class ExactOT:
    """Output of :func:`exact_ot`.

    Attributes:
        cost: optimal ``<P, C>`` (W2 squared), float64.
        assignment: (n,) ``y`` index of each ``x`` point for ``n == m``, else None.
        rows, cols, mass: the support of the optimal plan ``P`` (sparse), float64 mass.
        u: (n,) and v: (m,) dual potentials (for the original, uncentred data).
        certificate: dict with ``max_violation`` (max over all pairs of
            ``u_i + v_j - C_ij``, <= tol when certified), ``gap_bound``
            (``mean_i max(0, u_i + v_j - C_ij)`` max over j: a bound on cost - OPT),
            ``certified`` (bool), ``rounds``, ``pairs_checked``, ``candidate_edges``,
            ``tol`` and ``solver``.
    """

    cost: float = struct.field(pytree_node=False)
    assignment: np.ndarray | None = struct.field(pytree_node=False)
    rows: np.ndarray = struct.field(pytree_node=False)
    cols: np.ndarray = struct.field(pytree_node=False)
    mass: np.ndarray = struct.field(pytree_node=False)
    u: np.ndarray = struct.field(pytree_node=False)
    v: np.ndarray = struct.field(pytree_node=False)
    certificate: dict = struct.field(pytree_node=False)


@functools.partial(jax.jit, static_argnames=("k", "chunk"))
def _k_best(x, y, u, v, k, chunk):
    """Per row ``i`` the ``k`` smallest reduced costs ``C_ij - u_i - v_j`` and their j."""

    def rows(xc, idx):
        uc = u[jnp.minimum(idx, u.shape[0] - 1)]
        reduced = squared_distances(xc, y) - uc[:, None] - v[None, :]
        neg, j = jax.lax.top_k(-reduced, k)
        return -neg, j

    values, index = map_row_chunks(rows, x, chunk)
    n = x.shape[0]
    return values.reshape(-1, k)[:n], index.reshape(-1, k)[:n]


@functools.partial(jax.jit, static_argnames="chunk")
def _row_min(x, y, u, v, chunk):
    """Per row ``i`` the least reduced cost ``min_j C_ij - u_i - v_j`` and its j."""

    def rows(xc, idx):
        uc = u[jnp.minimum(idx, u.shape[0] - 1)]
        reduced = squared_distances(xc, y) - v[None, :]
        return jnp.min(reduced, axis=1) - uc, jnp.argmin(reduced, axis=1)

    values, index = map_row_chunks(rows, x, chunk)
    n = x.shape[0]
    return values.reshape(-1)[:n], index.reshape(-1)[:n]


def _reduced_row_min(x, y, u, v):
    """float64 :func:`_row_min` on NumPy arrays (runs under x64): all n x m pairs."""
    with jax.enable_x64(True):
        values, index = _row_min(
            jnp.asarray(x), jnp.asarray(y), jnp.asarray(u), jnp.asarray(v), CERTIFICATE_CHUNK
        )
        return np.asarray(values), np.asarray(index)


def _candidates(x, y, v, k):
    """For every row the ``k`` columns of least ``C_ij - v_j`` (row constants drop out).

    In low dimension a k-d tree on the lifted points ``(y_j, sqrt(max v - v_j))``:
    ``|(x_i, 0) - (y_j, h_j)|^2 = C_ij - v_j + max v``, so these are the k nearest
    neighbours of ``(x_i, 0)``. In high dimension a chunked float64 top-k.
    """
    k = min(k, len(y))
    if x.shape[1] <= KD_TREE_MAX_DIM:
        lift = np.sqrt(np.maximum(v.max() - v, 0.0))
        tree = cKDTree(np.concatenate([y, lift[:, None]], axis=1))
        _, index = tree.query(np.concatenate([x, np.zeros((len(x), 1))], axis=1), k=k)
        return index.reshape(len(x), k)
    with jax.enable_x64(True):
        zeros = jnp.zeros(len(x))
        _, index = _k_best(
            jnp.asarray(x), jnp.asarray(y), zeros, jnp.asarray(v), k, CERTIFICATE_CHUNK
        )
        return np.asarray(index)


def _rank_matching(x, y):
    """A full matching by ranks along the principal axis of the pooled data."""
    pooled = np.concatenate([x, y])
    _, _, vt = np.linalg.svd(pooled - pooled.mean(0), full_matrices=False)
    perm = np.empty(len(x), np.int64)
    perm[np.argsort(x @ vt[0], kind="stable")] = np.argsort(y @ vt[0], kind="stable")
    return perm


def _dual_potentials(n, rows, cols, w, match, u0, tol):
    """Exact duals of the sparse assignment LP, Bellman-Ford from ``u0`` (SPFA style).

    Constraints ``u_i + v_j <= w_ij`` on the edges, equality on matched edges
    ``(i, match[i])``. With ``v_j = w_{s(j) j} - u_{s(j)}`` they read
    ``u_i <= u_k + w_ij - w_kj`` (k = s(j)); the fixed point of the relaxations
    started at ``u0`` satisfies all of them (no negative cycle: the matching is
    optimal). Improvements below ``tol`` are not propagated (rounding).
    """
    owner = np.empty(n, np.int64)
    owner[match] = np.arange(n)
    matched = cols == match[rows]
    matched_cost = np.empty(n)
    matched_cost[cols[matched]] = w[matched]
    src, dst = owner[cols[~matched]], rows[~matched]
    weight = w[~matched] - matched_cost[cols[~matched]]
    order = np.argsort(src, kind="stable")
    src, dst, weight = src[order], dst[order], weight[order]
    indptr = np.searchsorted(src, np.arange(n + 1))
    u = np.array(u0, np.float64)
    active = np.arange(n)
    passes = 0
    while active.size and passes < 10 * n + 10:
        passes += 1
        starts, lengths = indptr[active], indptr[active + 1] - indptr[active]
        total = int(lengths.sum())
        if total == 0:
            break
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
        proposal = u.copy()
        np.minimum.at(proposal, dst[offsets], u[src[offsets]] + weight[offsets])
        improved = proposal < u - tol
        u = np.where(improved, proposal, u)
        active = np.nonzero(improved)[0]
    v = matched_cost - u[owner]
    return u, v


def _certificate(x, y, u, v, tol):
    """All-pairs check of ``C_ij - u_i - v_j >= -tol``; the worst pair of each bad row."""
    worst, index = _reduced_row_min(x, y, u, v)
    bad = worst < -tol
    violators = (np.nonzero(bad)[0], index[bad])
    return {
        "max_violation": float(max(0.0, -worst.min())),
        "gap_bound": float(np.mean(np.maximum(0.0, -worst))),
        "violating_rows": int(np.count_nonzero(worst < -tol)),
    }, violators


def _segment_logsumexp(z, starts, segment):
    """log-sum-exp of ``z`` over contiguous segments beginning at ``starts``."""
    top = np.maximum.reduceat(z, starts)
    return top + np.log(np.add.reduceat(np.exp(z - top[segment]), starts))


def _sparse_sinkhorn(n, rows, cols, w, f, g, eps_start, eps_end):
    """Log-domain Sinkhorn restricted to the candidate edges, epsilon halving.

    ``rows`` must be sorted (as ``np.unique`` keys give them) and every row and
    column must own an edge. Refines potentials at epsilons far below what the dense
    problem could afford, at O(edges) per iteration.
    """
    row_starts = np.searchsorted(rows, np.arange(n))
    by_col = np.argsort(cols, kind="stable")
    col_starts = np.searchsorted(cols[by_col], np.arange(n))
    log_n = math.log(n)
    eps = eps_start
    while True:
        for _ in range(SPARSE_ITERATIONS_PER_EPS):
            f = -eps * (_segment_logsumexp((g[cols] - w) / eps, row_starts, rows) - log_n)
            z = ((f[rows] - w) / eps)[by_col]
            g = -eps * (_segment_logsumexp(z, col_starts, cols[by_col]) - log_n)
        if eps <= eps_end:
            return f, g
        eps = max(0.5 * eps, eps_end)


def _edge_set(x, y, f, g, k):
    """Candidate edges as sorted keys ``i * n + j``: k best per row and per column."""
    n = len(x)
    best_c = _candidates(x, y, g, k)
    best_ct = _candidates(y, x, f, k)
    rows = np.concatenate([np.repeat(np.arange(n), best_c.shape[1]), best_ct.ravel(), np.arange(n)])
    cols = np.concatenate(
        [best_c.ravel(), np.repeat(np.arange(n), best_ct.shape[1]), _rank_matching(x, y)]
    )
    return np.unique(rows * n + cols)


def _assignment(x, y, k, tol, max_rounds, potentials, eps_potentials, mean_cost):
    n = len(x)
    f, g = potentials
    clock = {"candidates": 0.0, "matching": 0.0, "duals": 0.0, "certificate": 0.0}
    tick = time.perf_counter()
    key = _edge_set(x, y, f, g, k)
    rows, cols = key // n, key % n
    w = np.sum((x[rows] - y[cols]) ** 2, axis=1)
    f, g = _sparse_sinkhorn(
        n, rows, cols, w, f, g, 0.5 * eps_potentials, SPARSE_RELATIVE_EPSILON * mean_cost
    )
    # Restricted to the edges, Sinkhorn bends the potentials where an optimal edge is
    # missing, so the graph rebuilt from them alone misses more: keep both graphs.
    key = np.union1d(key, _edge_set(x, y, f, g, k))
    clock["candidates"] += time.perf_counter() - tick
    u, v = f, g
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        tick = time.perf_counter()
        rows, cols = key // n, key % n
        w = np.sum((x[rows] - y[cols]) ** 2, axis=1)
        reduced = w - u[rows] - v[cols]
        graph = scipy.sparse.csr_matrix((reduced - reduced.min() + 1.0, (rows, cols)), shape=(n, n))
        _, match = min_weight_full_bipartite_matching(graph)
        clock["matching"] += time.perf_counter() - tick
        tick = time.perf_counter()
        u, v = _dual_potentials(n, rows, cols, w, match, u, 1e-3 * tol)
        clock["duals"] += time.perf_counter() - tick
        tick = time.perf_counter()
        cert, (vi, vj) = _certificate(x, y, u, v, tol)
        clock["certificate"] += time.perf_counter() - tick
        if cert["violating_rows"] == 0:
            break
        key = np.union1d(key, vi * n + vj)
    cost = float(np.mean(np.sum((x - y[match]) ** 2, axis=1)))
    cert.update(
        rounds=rounds, candidate_edges=int(key.size), pairs_checked=rounds * n * n, seconds=clock
    )
    return cost, match, u, v, cert


def exact_ot(x, y, *, neighbors: int = DEFAULT_NEIGHBORS, tol: float | None = None) -> ExactOT:
    """Exact W2^2 optimal transport between uniform point clouds, certified.

    Args:
        x: (n, d) points, weights 1/n.
        y: (m, d) points, weights 1/m.
        neighbors: k of the candidate graph (n == m).
        tol: certificate tolerance on ``u_i + v_j - C_ij`` (None: 1e-10 times the
            mean pairwise cost, well above float64 rounding of the costs).

    Returns:
        An :class:`ExactOT` with the optimal cost, the plan (and for n == m the
        assignment) and the certificate.

    Raises:
        ValueError: bad shapes, NaN/Inf, empty sets, ``n != m`` with
            ``n * m > LP_MAX_PAIRS``. A certificate not reached in ``MAX_ROUNDS``
            rounds is reported (``certificate["certified"]`` False), not hidden.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0.0, 0.0], [1.0, 0.0]])
        >>> out = exact_ot(x, x[::-1] + np.array([0.0, 2.0]))
        >>> out.cost, out.assignment.tolist(), out.certificate["certified"]
        (4.0, [1, 0], True)
    """
    from wgdiff.metrics.sinkhorn import _mean_squared_distance, sinkhorn

    check_pair(x, y)
    neighbors = check_positive_int(neighbors, "neighbors")
    if tol is not None:
        check_positive(tol, "tol")
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, m = len(x), len(y)
    if n != m and n * m > LP_MAX_PAIRS:
        raise ValueError(
            f"exact OT with x of {n} and y of {m} points (n != m) solves a dense transport "
            f"LP with n * m = {n * m} > LP_MAX_PAIRS = {LP_MAX_PAIRS} variables; use equal "
            "sizes or method='sinkhorn'"
        )
    center = np.concatenate([x, y]).mean(axis=0)
    xc, yc = x - center, y - center
    mean_cost = _mean_squared_distance(xc, yc)
    if tol is None:
        tol = 1e-10 * max(mean_cost, np.finfo(np.float64).tiny)
    if mean_cost == 0.0:  # every point is the same point
        cert = {"max_violation": 0.0, "gap_bound": 0.0, "violating_rows": 0, "rounds": 0}
        assignment = np.arange(n) if n == m else None
        return _result(0.0, assignment, n, m, np.zeros(n), np.zeros(m), x, y, center, cert, tol)
    if n == m:
        if n == 1:
            cost = float(np.sum((x - y) ** 2))
            cert = {"max_violation": 0.0, "gap_bound": 0.0, "violating_rows": 0, "rounds": 0}
            return _result(
                cost,
                np.zeros(1, np.int64),
                n,
                m,
                np.zeros(1),
                np.full(1, cost),
                xc,
                yc,
                center,
                cert,
                tol,
                solver="trivial",
            )
        start = time.perf_counter()
        sink = sinkhorn(
            xc,
            yc,
            epsilon=CANDIDATE_RELATIVE_EPSILON * mean_cost,
            threshold=1e-2,
            max_iterations=CANDIDATE_ITERATIONS,
            debias=False,
        )
        potentials = (np.asarray(sink.f, np.float64), np.asarray(sink.g, np.float64))
        sinkhorn_seconds = time.perf_counter() - start
        cost, match, u, v, cert = _assignment(
            xc,
            yc,
            neighbors,
            tol,
            MAX_ROUNDS,
            potentials,
            CANDIDATE_RELATIVE_EPSILON * mean_cost,
            mean_cost,
        )
        cert["seconds"]["sinkhorn"] = sinkhorn_seconds
        cert["sinkhorn_iterations"] = int(sink.iterations)
        return _result(
            cost,
            match,
            n,
            m,
            u,
            v,
            xc,
            yc,
            center,
            cert,
            tol,
            solver="sinkhorn-candidates+lapjvsp+bellman-ford-duals",
        )
    cost_matrix = np.sum((xc[:, None, :] - yc[None, :, :]) ** 2, axis=-1)
    plan, log = ot.emd(
        np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost_matrix, numItermax=10**8, log=True
    )
    if log.get("warning"):
        raise RuntimeError(f"POT network simplex did not finish: {log['warning']}")
    u, v = np.asarray(log["u"], np.float64), np.asarray(log["v"], np.float64)
    cert, _ = _certificate(xc, yc, u, v, tol)
    cert.update(rounds=1, candidate_edges=n * m, pairs_checked=n * m)
    rows, cols = np.nonzero(plan > 0)
    cost = float(np.sum(plan[rows, cols] * cost_matrix[rows, cols]))
    out = _result(cost, None, n, m, u, v, xc, yc, center, cert, tol, solver="pot-network-simplex")
    return out.replace(rows=rows, cols=cols, mass=plan[rows, cols])


def _result(cost, assignment, n, m, u, v, xc, yc, center, cert, tol, solver="none"):
    """Pack an :class:`ExactOT`; potentials shifted back to the uncentred data.

    ``|x - y|^2`` is unchanged by the common shift; ``u`` and ``v`` of the centred
    problem stay dual-feasible for the original one as they are.
    """
    cert = dict(cert, tol=float(tol), solver=solver)
    cert["certified"] = bool(cert["max_violation"] <= tol)
    cert.setdefault("pairs_checked", n * m)
    cert.setdefault("candidate_edges", 0)
    if assignment is not None:
        rows, cols, mass = np.arange(n), np.asarray(assignment), np.full(n, 1.0 / n)
    else:
        rows = cols = np.zeros(0, np.int64)
        mass = np.zeros(0)
    return ExactOT(
        cost=float(cost),
        assignment=None if assignment is None else np.asarray(assignment),
        rows=rows,
        cols=cols,
        mass=mass,
        u=np.asarray(u),
        v=np.asarray(v),
        certificate=cert,
    )


def exact_w2(x, y) -> float:
    """Exact W2 (the distance), ``sqrt`` of :func:`exact_ot`'s cost."""
    return math.sqrt(max(exact_ot(x, y).cost, 0.0))
