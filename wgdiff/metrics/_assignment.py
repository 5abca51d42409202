"""Warm-startable sparse assignment: shortest augmenting paths on a CSR graph (numba).

The min-cost perfect matching of an n x n bipartite graph given as CSR (``indptr``,
``cols``, ``cost``), solved in the style of Jonker-Volgenant's sparse LAPJVsp
(Jonker & Volgenant 1987; Volgenant 1996): row and column potentials ``u``, ``v`` kept
dual feasible on the edges (reduced cost ``r_ij = c_ij - u_i - v_j >= 0``), matched
edges tight (``r = 0``), and every free row matched by one Dijkstra search on the
reduced costs along alternating paths, after which the potentials of the settled
columns move by ``d_j - D`` (``D`` the length of the shortest augmenting path), which
keeps them feasible and the matching tight. At the end ``(u, v)`` are optimal duals of
the sparse LP, so no separate dual solve is needed.

Unlike SciPy's ``min_weight_full_bipartite_matching`` (which always starts from
scratch) the state ``(u, v, match)`` can be warm started: from approximate potentials
(:func:`auction` phases at decreasing epsilon on the graph, or in low dimension the
auction over all pairs of :func:`wgdiff.metrics._powertree.tree_auction` with its
assignment kept, then :func:`restore_feasibility` sets
``u_i = min_j c_ij - v_j`` and keeps the matched edges that are tight) and, after
edges are added to the graph, from the previous solution: only rows that gained an
edge of negative reduced cost get a new ``u_i`` and are freed, and only free rows are
augmented.

All functions are ``numba.njit`` (compiled on first use, ``cache=False``) and mutate
their array arguments in place.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=False)
def auction(indptr, cols, cost, v, match_row, match_col, eps):
    """One Gauss-Seidel forward auction phase at ``eps`` from an empty assignment.

    Each free row takes the column of least ``c_ij - v_j`` and lowers its potential
    by the gap to the second least plus ``eps``, evicting the previous owner
    (Bertsekas 1988, in cost form). The result is eps-complementary slack: every row's
    matched ``c - v`` is within ``eps`` of its row minimum. Run at decreasing ``eps``
    (epsilon scaling), it leaves potentials close to optimal and few rows that the
    exact augmentation has to repair.

    Returns:
        The number of bids.
    """
    n = len(indptr) - 1
    match_row[:] = -1
    match_col[:] = -1
    queue = np.arange(n)
    head, size, bids = 0, n, 0
    while size > 0:
        i = queue[head]
        head = (head + 1) % n
        size -= 1
        best, second, arg = np.inf, np.inf, -1
        for e in range(indptr[i], indptr[i + 1]):
            r = cost[e] - v[cols[e]]
            if r < best:
                best, second, arg = r, best, e
            elif r < second:
                second = r
        j = cols[arg]
        gap = second - best if second < np.inf else 0.0
        v[j] -= gap + eps
        previous = match_col[j]
        match_col[j] = i
        match_row[i] = arg
        bids += 1
        if previous >= 0:
            match_row[previous] = -1
            queue[(head + size) % n] = previous
            size += 1
    return bids


@numba.njit(cache=False)
def restore_feasibility(indptr, cols, cost, u, v, match_row, match_col, fresh, slack):
    """Make ``(u, v)`` feasible on the edges, freeing rows whose match is not tight.

    For each row ``m_i = min_j c_ij - v_j`` over its edges. A matched row whose matched
    ``c - v`` is within ``slack`` of ``m_i`` keeps it, with ``u_i`` making it tight
    (smaller excesses are rounding; the search clips them at 0). Other rows (every row
    when ``fresh``) get ``u_i = m_i`` and are freed, e.g. after new edges of negative
    reduced cost were added or after an auction. Then every free row takes its tight
    (arg-min) column when that column is free (greedy).

    Returns:
        The number of rows left free.
    """
    n = len(indptr) - 1
    if fresh:
        match_row[:] = -1
        match_col[:] = -1
    for i in range(n):
        best, arg = np.inf, -1
        for e in range(indptr[i], indptr[i + 1]):
            r = cost[e] - v[cols[e]]
            if r < best:
                best, arg = r, e
        if match_row[i] >= 0:
            tight = cost[match_row[i]] - v[cols[match_row[i]]]
            if tight <= best + slack:
                u[i] = tight
                continue
            match_col[cols[match_row[i]]] = -1
            match_row[i] = -1
        u[i] = best
        j = cols[arg]
        if match_col[j] < 0:
            match_row[i] = arg
            match_col[j] = i
    free = 0
    for i in range(n):
        if match_row[i] < 0:
            free += 1
    return free


@numba.njit(cache=False)
def _heap_push(keys, items, size, key, item):
    pos = size
    keys[pos], items[pos] = key, item
    while pos > 0:
        parent = (pos - 1) >> 1
        if keys[parent] <= keys[pos]:
            break
        keys[parent], keys[pos] = keys[pos], keys[parent]
        items[parent], items[pos] = items[pos], items[parent]
        pos = parent
    return size + 1


@numba.njit(cache=False)
def _heap_pop(keys, items, size):
    key, item = keys[0], items[0]
    size -= 1
    keys[0], items[0] = keys[size], items[size]
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        child = left
        if left + 1 < size and keys[left + 1] < keys[left]:
            child = left + 1
        if keys[pos] <= keys[child]:
            break
        keys[pos], keys[child] = keys[child], keys[pos]
        items[pos], items[child] = items[child], items[pos]
        pos = child
    return key, item, size


@numba.njit(cache=False)
def augment_free_rows(indptr, cols, cost, u, v, match_row, match_col):
    """Match every free row by a shortest augmenting path (Dijkstra on reduced costs).

    ``match_row[i]`` is the edge index of row i's match (-1: free), ``match_col[j]``
    the row matched to column j (-1: free). On entry ``(u, v)`` must be feasible on the
    edges and matched edges tight (as :func:`restore_feasibility` leaves them); so they
    are on exit, with every row matched.

    Returns:
        ``(settled, failed)``: total columns settled over all searches (the work), and
        the number of rows for which no augmenting path exists (0 when the graph has a
        perfect matching).
    """
    n = len(indptr) - 1
    n_edges = len(cols)
    dist = np.full(n, np.inf)
    pred = np.full(n, -1, np.int64)  # edge by which a column was reached
    pred_row = np.full(n, -1, np.int64)  # and its row
    done = np.zeros(n, np.bool_)
    touched = np.empty(n, np.int64)
    settled_list = np.empty(n, np.int64)
    keys = np.empty(n_edges + 1)
    items = np.empty(n_edges + 1, np.int64)
    settled_total, failed = 0, 0
    for start in range(n):
        if match_row[start] >= 0:
            continue
        n_touched, n_settled, size = 0, 0, 0
        i, d_i, sink, final = start, 0.0, -1, 0.0
        while True:
            # scan row i, reached at distance d_i
            for e in range(indptr[i], indptr[i + 1]):
                j = cols[e]
                if done[j]:
                    continue
                r = cost[e] - u[i] - v[j]
                nd = d_i + (r if r > 0.0 else 0.0)
                if nd < dist[j]:
                    if dist[j] == np.inf:
                        touched[n_touched] = j
                        n_touched += 1
                    dist[j] = nd
                    pred[j] = e
                    pred_row[j] = i
                    size = _heap_push(keys, items, size, nd, j)
            # the nearest unsettled column
            j = -1
            while size > 0:
                key, item, size = _heap_pop(keys, items, size)
                if not done[item] and key == dist[item]:
                    j = item
                    break
            if j < 0:
                break
            if match_col[j] < 0:
                sink, final = j, dist[j]
                break
            done[j] = True
            settled_list[n_settled] = j
            n_settled += 1
            i, d_i = match_col[j], dist[j]
        if sink < 0:
            failed += 1
        else:
            # potentials of the settled columns, then flip the path
            for s in range(n_settled):
                j = settled_list[s]
                v[j] += dist[j] - final
            j = sink
            while True:
                row = pred_row[j]
                previous = match_row[row]
                match_row[row] = pred[j]
                match_col[j] = row
                if row == start:
                    break
                j = cols[previous]
            # tree rows (now matched to the settled columns and the sink): tight
            for s in range(n_settled + 1):
                row = match_col[settled_list[s] if s < n_settled else sink]
                u[row] = cost[match_row[row]] - v[cols[match_row[row]]]
        settled_total += n_settled
        for t in range(n_touched):
            j = touched[t]
            dist[j] = np.inf
            done[j] = False
            pred[j] = -1
            pred_row[j] = -1
    return settled_total, failed
