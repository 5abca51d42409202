"""Exact optimal transport between uniform point clouds, with a dual certificate.

For ``x`` (n, d), ``y`` (m, d), weights ``1/n`` and ``1/m`` and ``C_ij = |x_i - y_j|^2``,
the transport LP ``min <P, C>`` has the dual ``max mean(u) + mean(v)`` subject to
``u_i + v_j <= C_ij``. Any feasible ``(u, v)`` whose dual value equals the primal cost
of a plan proves that plan optimal; with a small violation ``r_i = min_j C_ij - u_i -
v_j < 0`` the suboptimality is at most ``mean_i max(0, -r_i)`` (sum the dual
inequalities along any competing permutation).

``n == m`` (an assignment, Birkhoff), in units of the mean pairwise cost:

1. approximate potentials from a coarse (non-debiased) Sinkhorn solve (:mod:`.sinkhorn`;
   above ``CANDIDATE_SUBSAMPLE`` points on subsamples, extended by soft c-transforms);
2. in dimension <= ``KD_TREE_MAX_DIM``: Gauss-Seidel auction phases over **all** pairs
   from those potentials, epsilon from ``TREE_AUCTION_START`` down to the per-point
   cost ``1/n`` (Bertsekas 1988; rows bid in k-d order), each bid (the least two ``C_ij - v_j`` of
   a row) answered by a weighted k-d tree (:mod:`._powertree`, the form of
   :func:`_power_query`), as in Kerber, Morozov & Nigmetov (2017) for persistence
   diagrams; its prices are epsilon-complementary-slack for the dense problem.
   Above, Sinkhorn on a candidate graph only, down to a far smaller epsilon;
3. a sparse candidate graph: for every row the ``k`` columns of least reduced cost
   ``C_ij - f_i - g_j``, for every column the ``k`` rows of least reduced cost, a
   rank-matching along the principal axis (so a full matching always exists) and the
   auction's assignment;
4. the assignment on that graph, exactly, by shortest augmenting paths
   (:mod:`._assignment`, sparse Jonker-Volgenant style, numba): row potentials made
   feasible on the edges, the auction's tight matches kept (in high dimension: auction
   phases on the graph first), each free row augmented by a Dijkstra search on the
   reduced costs. Its potentials ``(u, v)`` are exact optimal duals of the sparse LP;
5. the certificate: ``min_j C_ij - u_i - v_j`` over **all** pairs, in float64 (in
   dimension <= ``KD_TREE_MAX_DIM`` an exact weighted nearest-neighbour query,
   :func:`_power_query`, with a bound on its rounding; above, brute force in row
   blocks); the most violating pair of each bad row and its ``k`` best columns are
   added to the graph, and step 4 restarts warm: only rows with a new edge of
   negative reduced cost are freed and re-augmented. Steps 4-5 repeat until no pair
   violates by more than ``tol``.

:func:`exact_assignment` runs the same pipeline inside ``jit``: step 1 in the trace,
steps 2-5 on the host through ``jax.pure_callback``.

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
from flax import struct
from scipy.optimize import linear_sum_assignment

from wgdiff._checks import check_positive, check_positive_int
from wgdiff._types import ArrayLike
from wgdiff.geometry import squared_distances
from wgdiff.metrics._assignment import auction, augment_free_rows, restore_feasibility
from wgdiff.metrics._common import check_pair
from wgdiff.metrics._powertree import LEAF_SIZE, build_tree, query_tree, tree_auction
from wgdiff.metrics.sinkhorn import (
    DEFAULT_ANDERSON_MEMORY,
    DEFAULT_SCALING,
    DENSE_MAX_PAIRS,
    STREAM_BLOCK_PAIRS,
    _centred,
    _extend_potentials,
    _jnp_squared_diameter,
    _mean_squared_distance,
    _sinkhorn_loop,
    sinkhorn,
)

# Dense limit of the n != m path: POT's network simplex on an n x m float64 matrix.
LP_MAX_PAIRS = 6000 * 6000
DEFAULT_NEIGHBORS = 8
# Candidate potentials: Sinkhorn at this fraction of the mean pairwise cost.
CANDIDATE_RELATIVE_EPSILON = 1e-2
CANDIDATE_ITERATIONS = 100
CANDIDATE_THRESHOLD = 1e-2
# above this many points that Sinkhorn runs on subsamples of this size
CANDIDATE_SUBSAMPLE = 4096
# then Sinkhorn on the candidate edges only, halving epsilon down to this fraction
SPARSE_RELATIVE_EPSILON = 1e-5
SPARSE_ITERATIONS_PER_EPS = 5
# pairs per row block of the host passes (certificate, high-dimensional candidates)
CERTIFICATE_BLOCK = 1 << 21
KD_TREE_MAX_DIM = 8
# exact_assignment of at most this many points: SciPy's dense linear_sum_assignment
# (no Sinkhorn stage; issue 17 measured the sparse pipeline 1.4x slower than it at 256)
DENSE_ASSIGNMENT_MAX_POINTS = 256
MAX_ROUNDS = 50
# epsilon scaling of the auction that warm-starts the exact assignment (mean-cost
# units): on the candidate graph (above KD_TREE_MAX_DIM) these phases, from potentials
# the sparse Sinkhorn refined; over all pairs (k-d tree bids) from TREE_AUCTION_START
# in steps of 1/TREE_AUCTION_FACTOR down to TREE_AUCTION_END / n (the per-point cost
# 1/n: the rows left non-tight for the exact augmentation then search small balls).
# Measured at n = 1e5 (d = 2, 2026-12-01): ends 0.02 / 0.25 / 1 / 4 over n took 81 /
# 67 / 53 / 50 CPU-s in 1 / 2 / 2 / 3 rounds (the last phases' bids cost most);
# starting at 3e-2 instead of 1e-2 took 63.
AUCTION_EPSILONS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
TREE_AUCTION_START = 1e-2
TREE_AUCTION_FACTOR = 4.0
TREE_AUCTION_END = 1.0


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


def _row_blocks(n_rows: int, n_cols: int):
    """Row slices of about ``CERTIFICATE_BLOCK`` pairs each (host passes)."""
    step = max(1, CERTIFICATE_BLOCK // max(n_cols, 1))
    return (slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step))


def _power_query(x, y, v):
    """Weighted nearest-neighbour form of ``min_j C_ij - v_j`` (low dimension): a tree.

    ``C_ij - v_j = |x_i|^2 + b_j - 2 <x_i, y_j>`` with ``b_j = |y_j|^2 - v_j``. With
    ``b_j ~ y_j^T S y_j + 2 s^T y_j`` fitted by least squares (S = L^2 symmetric
    positive definite, else L = I and s = 0), ``P_i = L^-1 x_i``, ``Q_j = L y_j +
    L^-1 s`` and weights ``w_j = rho_j - min rho >= 0``, ``rho_j = b_j - |Q_j|^2``,
    the identity

        C_ij - v_j = |P_i - Q_j|^2 + w_j + row_i,
        row_i = |x_i|^2 - |P_i|^2 + 2 <P_i, L^-1 s> + min rho

    makes the minimizing ``j`` the least ``|P_i - Q_j|^2 + w_j``: a query of the
    weighted k-d tree of :mod:`._powertree`, whose bound on a node adds the node's
    least weight, so the search stays local where the weights vary slowly (the fit
    removes the potentials' quadratic part; a few outlying weights do not widen every
    search, as they do for a Euclidean tree on points lifted to ``(Q_j, sqrt(w_j))``).

    Returns:
        ``(tree, queries, eta)``: the :func:`._powertree.build_tree` arrays of the
        ``Q_j`` with weights ``w_j``, the queries ``P_i``, and ``eta``, a bound on the
        rounding of a computed ``|P_i - Q_j|^2 + w_j`` (and of a node's bound) against
        ``C_ij - v_j - row_i`` (float64; conditioning of L included).
    """
    d = x.shape[1]
    b = np.sum(y * y, axis=1) - v
    upper = np.triu_indices(d)
    features = np.concatenate(
        [(y[:, :, None] * y[:, None, :])[:, upper[0], upper[1]], y, np.ones((len(y), 1))],
        axis=1,
    )
    coef = np.linalg.lstsq(features, b, rcond=None)[0]
    quad = np.zeros((d, d))
    quad[upper] = coef[: len(upper[0])]
    quad = 0.5 * (quad + quad.T)
    evals, evecs = np.linalg.eigh(quad)
    if np.all(np.isfinite(evals)) and evals.min() > 1e-3 * max(evals.max(), 0.0) > 0.0:
        root = (evecs * np.sqrt(evals)) @ evecs.T
        root_inv = (evecs / np.sqrt(evals)) @ evecs.T
        shift = root_inv @ (0.5 * coef[len(upper[0]) : len(upper[0]) + d])
        condition = math.sqrt(evals.max() / evals.min())
    else:
        root = root_inv = np.eye(d)
        shift = np.zeros(d)
        condition = 1.0
    p = x @ root_inv
    q = y @ root + shift
    rho = b - np.sum(q * q, axis=1)
    height2 = rho - rho.min()
    tree = build_tree(q, height2, LEAF_SIZE)
    magnitude = (
        np.max(np.sum(x * x, axis=1))
        + np.max(np.sum(y * y, axis=1))
        + np.max(np.abs(v))
        + np.max(np.sum(p * p, axis=1))
        + np.max(np.sum(q * q, axis=1) + height2)
        + np.max(np.abs(rho))
        + 2 * np.max(np.abs(p @ shift))
    )
    eta = 16 * (d + 4) * condition * np.finfo(np.float64).eps * magnitude
    return tree, p, eta


def _reduced_row_min(x, y, u, v, tol):
    """A float64 lower bound on ``min_j C_ij - u_i - v_j`` and a near-minimal ``j``, per row.

    Over all n x m pairs. In dimension <= ``KD_TREE_MAX_DIM`` an exact weighted
    nearest-neighbour query (:func:`_power_query`) that prunes a node only when its
    bound exceeds the best value by more than ``eta``; its answer ``j`` is
    re-evaluated exactly and lowered by three times the rounding bound ``eta`` (for
    any j, true >= computed - eta >= computed at the answer - 2 eta >= true at the
    answer - 3 eta, so no violation hides behind rounding); when ``eta`` exceeds
    ``tol / 4``, and in higher dimension, brute force in row blocks. NumPy/numba
    only, so it may run inside ``jax.pure_callback``.
    """
    if x.shape[1] <= KD_TREE_MAX_DIM:
        tree, queries, eta = _power_query(x, y, v)
        if eta <= 0.25 * tol:
            index = query_tree(*tree, queries, 1, eta)[1][:, 0]
            values = np.sum((x - y[index]) ** 2, axis=1) - v[index] - u - 3 * eta
            return values, index
    values = np.empty(len(x))
    index = np.empty(len(x), np.int64)
    for rows in _row_blocks(len(x), len(y)):
        reduced = squared_distances(x[rows], y) - v[None, :]
        j = np.argmin(reduced, axis=1)
        index[rows] = j
        values[rows] = reduced[np.arange(len(j)), j] - u[rows]
    return values, index


def _candidates(x, y, v, k):
    """For every row the ``k`` columns of least ``C_ij - v_j`` (row constants drop out).

    In low dimension the k least of the weighted tree of :func:`_power_query`; in
    high dimension a blocked float64 partial sort.
    """
    k = min(k, len(y))
    if x.shape[1] <= KD_TREE_MAX_DIM:
        tree, queries, _ = _power_query(x, y, v)
        return query_tree(*tree, queries, k, 0.0)[1]
    index = np.empty((len(x), k), np.int64)
    for rows in _row_blocks(len(x), len(y)):
        reduced = squared_distances(x[rows], y) - v[None, :]
        index[rows] = np.argpartition(reduced, k - 1, axis=1)[:, :k]
    return index


def _rank_matching(x, y):
    """A full matching by ranks along the principal axis of the pooled data."""
    pooled = np.concatenate([x, y])
    _, _, vt = np.linalg.svd(pooled - pooled.mean(0), full_matrices=False)
    perm = np.empty(len(x), np.int64)
    perm[np.argsort(x @ vt[0], kind="stable")] = np.argsort(y @ vt[0], kind="stable")
    return perm


def _certificate(x, y, u, v, tol):
    """All-pairs check of ``C_ij - u_i - v_j >= -tol``; the worst pair of each bad row."""
    worst, index = _reduced_row_min(x, y, u, v, tol)
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


def _candidate_potentials(x, y):
    """Approximate potentials for the candidate graph (data in units of the mean cost).

    Sinkhorn (not debiased) at ``CANDIDATE_RELATIVE_EPSILON``; above
    ``CANDIDATE_SUBSAMPLE`` points on that many-point subsamples, whose potentials are
    extended to all points by one soft c-transform each (``O(n * CANDIDATE_SUBSAMPLE)``
    instead of ``O(n^2)`` per iteration; the sparse stages then refine them).

    Returns:
        ``((f, g), iterations)``: float64 (n,) potentials and Sinkhorn's iterations.
    """
    n = len(x)
    options = {
        "epsilon": CANDIDATE_RELATIVE_EPSILON,
        "threshold": CANDIDATE_THRESHOLD,
        "max_iterations": CANDIDATE_ITERATIONS,
        "debias": False,
    }
    if n <= CANDIDATE_SUBSAMPLE:
        sink = sinkhorn(x, y, **options)
        f, g = sink.f, sink.g
    else:
        rng = np.random.default_rng(0)
        xs = x[rng.choice(n, CANDIDATE_SUBSAMPLE, replace=False)]
        ys = y[rng.choice(n, CANDIDATE_SUBSAMPLE, replace=False)]
        sink = sinkhorn(xs, ys, **options)
        dtype = jnp.result_type(float)
        xs, ys, xj, yj = (jnp.asarray(a, dtype) for a in (xs, ys, x, y))
        f, g, _, _ = _extend_potentials(
            xs,
            ys,
            sink,
            xj,
            yj,
            max(1, STREAM_BLOCK_PAIRS // CANDIDATE_SUBSAMPLE),
            CANDIDATE_SUBSAMPLE,
        )
    return (np.asarray(f, np.float64), np.asarray(g, np.float64)), int(sink.iterations)


def _c_transform(x, y, v):
    """``min_j C_ij - v_j`` per row (the float64 value at :func:`_candidates`' arg-min)."""
    index = _candidates(x, y, v, 1)[:, 0]
    return np.sum((x - y[index]) ** 2, axis=1) - v[index]


def _assignment(x, y, k, tol, max_rounds, potentials, eps_potentials, mean_cost):
    n = len(x)
    f, g = potentials
    clock = {"candidates": 0.0, "auction": 0.0, "matching": 0.0, "certificate": 0.0}
    cpu = dict(clock)
    match_row = np.full(n, -1, np.int64)  # edge index of each row's match
    match_col = np.full(n, -1, np.int64)
    match, bids = None, []
    tick, tock = time.perf_counter(), time.process_time()
    if x.shape[1] <= KD_TREE_MAX_DIM:
        # auction phases over all pairs (k-d tree bids), then the graph from its prices
        tree, queries, _ = _power_query(x, y, g)
        weight = tree[7].copy()
        # rows bid in k-d order (a row's neighbours next), so that successive searches
        # visit nearby parts of the tree; evicted rows queue behind, also nearby
        bidders = build_tree(queries, np.zeros(n), LEAF_SIZE)[8]
        matched = np.empty(n, np.int64)
        eps = TREE_AUCTION_START
        while True:
            bids.append(tree_auction(*tree, queries[bidders], matched, eps * mean_cost))
            if eps <= TREE_AUCTION_END / n:
                break
            eps = max(eps / TREE_AUCTION_FACTOR, TREE_AUCTION_END / n)
        match = np.empty(n, np.int64)
        match[bidders] = matched
        g = np.array(g, np.float64)
        g[tree[8]] -= tree[7] - weight  # a raised weight is a lowered potential
        f = _c_transform(x, y, g)
        clock["auction"] += time.perf_counter() - tick
        cpu["auction"] += time.process_time() - tock
        tick, tock = time.perf_counter(), time.process_time()
        key = np.union1d(_edge_set(x, y, f, g, k), np.arange(n) * n + match)
        match_col[match] = np.arange(n)
    else:
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
    cpu["candidates"] += time.process_time() - tock
    u, v = np.array(f, np.float64), np.array(g, np.float64)
    rounds, settled, freed = 0, [], []
    while rounds < max_rounds:
        rounds += 1
        tick, tock = time.perf_counter(), time.process_time()
        rows, cols = key // n, key % n
        indptr = np.searchsorted(rows, np.arange(n + 1))
        w = np.sum((x[rows] - y[cols]) ** 2, axis=1)
        if match is not None:  # the previous matching in the new edge numbering
            match_row = np.searchsorted(key, np.arange(n) * n + match)
        # warm start: rows with a new edge of negative reduced cost (beyond rounding)
        # are freed; in the first round every row starts free
        else:  # first round: auction phases at decreasing epsilon from the potentials
            for eps in AUCTION_EPSILONS:
                bids.append(auction(indptr, cols, w, v, match_row, match_col, eps * mean_cost))
        freed.append(
            restore_feasibility(indptr, cols, w, u, v, match_row, match_col, False, 1e-3 * tol)
        )
        work, failed = augment_free_rows(indptr, cols, w, u, v, match_row, match_col)
        if failed:  # cannot happen: the rank matching makes the graph perfectly matchable
            raise RuntimeError(f"sparse assignment: {failed} rows without an augmenting path")
        settled.append(int(work))
        match = cols[match_row]
        clock["matching"] += time.perf_counter() - tick
        cpu["matching"] += time.process_time() - tock
        tick, tock = time.perf_counter(), time.process_time()
        cert, (vi, vj) = _certificate(x, y, u, v, tol)
        clock["certificate"] += time.perf_counter() - tick
        cpu["certificate"] += time.process_time() - tock
        if cert["violating_rows"] == 0:
            break
        # repair: each violating row's worst pair and its k best columns under v
        best = _candidates(x[vi], y, v, k)
        repair = np.concatenate([vi * n + vj, (vi[:, None] * n + best).ravel()])
        key = np.union1d(key, repair)
    cost = float(np.mean(np.sum((x - y[match]) ** 2, axis=1)))
    cert.update(
        rounds=rounds,
        candidate_edges=int(key.size),
        pairs_checked=rounds * n * n,
        seconds=clock,
        cpu_seconds=cpu,
        auction_bids=bids,
        rows_augmented=freed,
        columns_settled=settled,
    )
    return cost, match, u, v, cert


def exact_ot(
    x: ArrayLike,
    y: ArrayLike,
    *,
    neighbors: int = DEFAULT_NEIGHBORS,
    tol: float | None = None,
) -> ExactOT:
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
        # Solved in units of the mean cost (the cost is 2-homogeneous): float32
        # candidate potentials and the k-d tree then see O(1) numbers whatever the
        # data's scale; cost, duals and certificate are scaled back.
        scale = math.sqrt(mean_cost)
        xs, ys = xc / scale, yc / scale
        start, start_cpu = time.perf_counter(), time.process_time()
        potentials, sinkhorn_iterations = _candidate_potentials(xs, ys)
        sinkhorn_seconds = time.perf_counter() - start
        sinkhorn_cpu = time.process_time() - start_cpu
        _, match, u, v, cert = _assignment(
            xs,
            ys,
            neighbors,
            tol / mean_cost,
            MAX_ROUNDS,
            potentials,
            CANDIDATE_RELATIVE_EPSILON,
            1.0,
        )
        cost = float(np.mean(np.sum((xc - yc[match]) ** 2, axis=1)))
        u, v = u * mean_cost, v * mean_cost
        cert["max_violation"] *= mean_cost
        cert["gap_bound"] *= mean_cost
        cert["seconds"]["sinkhorn"] = sinkhorn_seconds
        cert["cpu_seconds"]["sinkhorn"] = sinkhorn_cpu
        cert["sinkhorn_iterations"] = sinkhorn_iterations
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
            solver=(
                "sinkhorn+tree-auction+sparse-shortest-augmenting-paths"
                if x.shape[1] <= KD_TREE_MAX_DIM
                else "sinkhorn-candidates+sparse-shortest-augmenting-paths"
            ),
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


def _assignment_host(x, y, f, g) -> np.ndarray:
    """Host side of :func:`exact_assignment`: NumPy/SciPy only (no JAX in a callback).

    ``f``, ``g``: candidate potentials in units of the mean pairwise cost.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    center = np.concatenate([x, y]).mean(axis=0)
    x, y = x - center, y - center
    n = len(x)
    mean_cost = _mean_squared_distance(x, y)
    if n == 1 or mean_cost == 0.0:
        return np.arange(n, dtype=np.int32)
    # in units of the mean cost, as in exact_ot
    x, y = x / math.sqrt(mean_cost), y / math.sqrt(mean_cost)
    potentials = (np.asarray(f, np.float64), np.asarray(g, np.float64))
    _, match, _, _, cert = _assignment(
        x, y, DEFAULT_NEIGHBORS, 1e-10, MAX_ROUNDS, potentials, CANDIDATE_RELATIVE_EPSILON, 1.0
    )
    if cert["violating_rows"]:  # not certified in MAX_ROUNDS: the dense exact solve
        return _dense_assignment_host(x, y)
    return np.asarray(match, np.int32)


def exact_assignment(x: ArrayLike, y: ArrayLike) -> jax.Array:
    """Optimal assignment of two equal-size point sets; callable inside ``jax.jit``.

    The permutation ``s`` minimizing ``sum_i |x_i - y_s(i)|^2`` (the exact W2 plan of
    two uniform n-point measures is a permutation, Birkhoff). Up to
    ``DENSE_ASSIGNMENT_MAX_POINTS`` points SciPy's dense ``linear_sum_assignment``
    solves it on the host (through ``jax.pure_callback``). Above, the candidate
    potentials come from the dense (or, above ``DENSE_MAX_PAIRS``, streamed)
    Sinkhorn core inside the trace; the rest of :func:`exact_ot`'s pipeline
    (candidate graph, sparse shortest augmenting paths, all-pairs float64
    certificate) runs on
    the host through ``jax.pure_callback`` on the original points. A graph not
    certified in ``MAX_ROUNDS`` rounds falls back to SciPy's dense
    ``linear_sum_assignment``, so the result is always exact. Inputs are held out of
    the gradient; under ``vmap`` the callback runs once per batch element.

    Args:
        x: (n, d) points.
        y: (n, d) points.

    Returns:
        (n,) int32: ``y[s]`` is paired with ``x``.

    Raises:
        ValueError: shapes that are not (n, d) and (n, d), concrete NaN/Inf data.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.array([[0.0], [10.0], [5.0]])
        >>> jax.jit(exact_assignment)(x, x[::-1] + 0.5).tolist()
        [2, 1, 0]
    """
    check_pair(x, y)
    if np.shape(x) != np.shape(y):
        raise ValueError(
            f"x and y must have the same shape (n, d), got {np.shape(x)} and {np.shape(y)}"
        )
    return _exact_assignment(x, y, dense=np.shape(x)[0] <= DENSE_ASSIGNMENT_MAX_POINTS)


def _dense_assignment_host(x, y) -> np.ndarray:
    """SciPy's dense ``linear_sum_assignment`` on the float64 costs (exact), host side."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    _, match = linear_sum_assignment(squared_distances(x, y))
    return np.asarray(match, np.int32)


@functools.partial(jax.jit, static_argnames="dense")
def _exact_assignment(x, y, dense):
    dtype = jnp.result_type(x, y, float)
    x, y = (jax.lax.stop_gradient(jnp.asarray(a, dtype)) for a in (x, y))
    n = x.shape[0]
    if dense:
        return jax.pure_callback(
            _dense_assignment_host,
            jax.ShapeDtypeStruct((n,), jnp.int32),
            x,
            y,
            vmap_method="sequential",
        )
    xc, yc = _centred(x, y)
    # in units of the mean cost (potentials then too, as the host expects them)
    scale = jnp.sqrt(jnp.maximum(jnp.mean(squared_distances(xc, yc)), jnp.finfo(dtype).tiny))
    xc, yc = xc / scale, yc / scale
    eps = jnp.asarray(CANDIDATE_RELATIVE_EPSILON, dtype)
    zeros = (jnp.zeros(n, dtype),) * 4
    sink = _sinkhorn_loop(
        xc,
        yc,
        zeros,
        jnp.maximum(_jnp_squared_diameter(xc, yc), eps),
        eps,
        0.0,
        DEFAULT_SCALING,
        1e-2,
        memory=DEFAULT_ANDERSON_MEMORY,
        dense=n * n <= DENSE_MAX_PAIRS,
        max_iterations=CANDIDATE_ITERATIONS,
        row_chunk=max(1, STREAM_BLOCK_PAIRS // n),
        col_chunk=n,
        debias=False,
    )
    return jax.pure_callback(
        _assignment_host,
        jax.ShapeDtypeStruct((n,), jnp.int32),
        x,
        y,
        sink.f,
        sink.g,
        vmap_method="sequential",
    )


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


def exact_w2(x: ArrayLike, y: ArrayLike) -> float:
    """Exact W2 (the distance), ``sqrt`` of :func:`exact_ot`'s cost."""
    return math.sqrt(max(exact_ot(x, y).cost, 0.0))
