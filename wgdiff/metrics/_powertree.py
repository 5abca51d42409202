"""k-d tree for weighted nearest neighbours ``min_j |p - q_j|^2 + w_j`` (numba).

The query behind the exact solver's certificate and candidate graph in low dimension
(:func:`wgdiff.metrics.exact._power_query` maps ``min_j C_ij - v_j`` to it): points
``q_j`` with weights ``w_j >= 0`` (a power diagram), a branch-and-bound search whose
lower bound on a node is the squared distance from ``p`` to the node's bounding box
plus the least weight in the node. Unlike a k-d tree on points lifted to
``(q_j, sqrt(w_j))`` (a Euclidean nearest-neighbour search), the bound sees each
node's own least weight, so a wide spread of weights across the data (a few columns
of small weight far below the rest) does not widen every search.

:func:`tree_auction` runs the Gauss-Seidel auction over all pairs on such a tree
(each bid one search; the winner's weight raised and the least weights on its path to
the root updated), as Kerber, Morozov & Nigmetov (2017) do for persistence diagrams.

All functions are ``numba.njit`` (compiled on first use, ``cache=False``).
"""

from __future__ import annotations

import numba
import numpy as np

LEAF_SIZE = 8


@numba.njit(cache=False)
def _select(points, order, dim, s, e, mid):
    """Reorder ``order[s:e]`` so that ``order[mid]`` has its sorted place along ``dim``
    (Hoare's quickselect, middle pivot): smaller before, larger after."""
    lo, hi = s, e - 1
    while lo < hi:
        pivot = points[order[(lo + hi) // 2], dim]
        i, j = lo, hi
        while i <= j:
            while points[order[i], dim] < pivot:
                i += 1
            while points[order[j], dim] > pivot:
                j -= 1
            if i <= j:
                order[i], order[j] = order[j], order[i]
                i += 1
                j -= 1
        if mid <= j:
            hi = j
        elif mid >= i:
            lo = i
        else:
            return


@numba.njit(cache=False)
def build_tree(points, weight, leaf_size):
    """A k-d tree of ``points`` (m, d) with weights (m,): median splits on the widest side.

    Returns:
        ``(lo, hi, least, start, end, left, pts, w, order)``: per node its bounding
        box ``lo``/``hi`` (nodes, d), least weight, the range ``start:end`` of its
        points in tree order and its left child (-1 for a leaf; the right child is
        ``left + 1``); the points and weights in tree order and ``order``, the index of
        each tree-order point in ``points``.
    """
    m, d = points.shape
    order = np.arange(m)
    max_nodes = 4 * (m // max(leaf_size, 1) + 1)
    lo = np.empty((max_nodes, d))
    hi = np.empty((max_nodes, d))
    least = np.empty(max_nodes)
    start = np.empty(max_nodes, np.int64)
    end = np.empty(max_nodes, np.int64)
    left = np.full(max_nodes, -1, np.int64)
    stack = np.empty(max_nodes, np.int64)
    start[0], end[0], n_nodes = 0, m, 1
    stack[0], top = 0, 1
    while top > 0:
        top -= 1
        node = stack[top]
        s, e = start[node], end[node]
        lo[node, :] = np.inf
        hi[node, :] = -np.inf
        smallest = np.inf
        for a in range(s, e):
            j = order[a]
            for t in range(d):
                lo[node, t] = min(lo[node, t], points[j, t])
                hi[node, t] = max(hi[node, t], points[j, t])
            smallest = min(smallest, weight[j])
        least[node] = smallest
        if e - s <= leaf_size:
            continue
        dim, width = 0, -1.0
        for t in range(d):
            if hi[node, t] - lo[node, t] > width:
                dim, width = t, hi[node, t] - lo[node, t]
        if width <= 0.0:  # all points equal: one leaf
            continue
        mid = (s + e) // 2
        _select(points, order, dim, s, e, mid)
        left[node] = n_nodes
        start[n_nodes], end[n_nodes] = s, mid
        start[n_nodes + 1], end[n_nodes + 1] = mid, e
        stack[top], stack[top + 1] = n_nodes, n_nodes + 1
        top += 2
        n_nodes += 2
    pts = np.empty((m, d))
    w = np.empty(m)
    for a in range(m):
        for t in range(d):
            pts[a, t] = points[order[a], t]
        w[a] = weight[order[a]]
    return lo[:n_nodes], hi[:n_nodes], least[:n_nodes], start, end, left, pts, w, order


@numba.njit(cache=False)
def _box_bound(lo, hi, least, node, p):
    bound = least[node]
    for t in range(len(p)):
        gap = lo[node, t] - p[t]
        if gap < 0.0:
            gap = p[t] - hi[node, t]
        if gap > 0.0:
            bound += gap * gap
    return bound


@numba.njit(cache=False)
def _search(lo, hi, least, start, end, left, pts, w, p, k, margin, best, arg, stack, bounds):
    """Branch and bound for one query ``p``: the k least values into ``best``/``arg``."""
    best[:] = np.inf
    arg[:] = -1
    stack[0], bounds[0], top = 0, _box_bound(lo, hi, least, 0, p), 1
    while top > 0:
        top -= 1
        node = stack[top]
        if bounds[top] > best[k - 1] + margin:
            continue
        child = left[node]
        if child < 0:
            for a in range(start[node], end[node]):
                value = w[a]
                for t in range(len(p)):
                    diff = p[t] - pts[a, t]
                    value += diff * diff
                if value < best[k - 1]:
                    slot = k - 1
                    while slot > 0 and best[slot - 1] > value:
                        best[slot] = best[slot - 1]
                        arg[slot] = arg[slot - 1]
                        slot -= 1
                    best[slot] = value
                    arg[slot] = a
            continue
        near, far = child, child + 1
        bound_near = _box_bound(lo, hi, least, near, p)
        bound_far = _box_bound(lo, hi, least, far, p)
        if bound_far < bound_near:
            near, far = far, near
            bound_near, bound_far = bound_far, bound_near
        stack[top], bounds[top] = far, bound_far
        stack[top + 1], bounds[top + 1] = near, bound_near
        top += 2


@numba.njit(cache=False)
def query_tree(lo, hi, least, start, end, left, pts, w, order, queries, k, margin):
    """The ``k`` least ``|p - q_j|^2 + w_j`` of each query row (branch and bound).

    A node is skipped when its lower bound exceeds the current k-th least value by
    more than ``margin`` (>= 0; a margin above the rounding of the bound keeps a
    computed minimum from being pruned by round-off).

    Returns:
        ``(values, index)``: (n, k) ascending values and the indices into the tree's
        input points (-1 and inf where fewer than k points exist).
    """
    n = len(queries)
    values = np.empty((n, k))
    index = np.empty((n, k), np.int64)
    stack = np.empty(256, np.int64)
    bounds = np.empty(256)
    for q in range(n):
        _search(
            lo,
            hi,
            least,
            start,
            end,
            left,
            pts,
            w,
            queries[q],
            k,
            margin,
            values[q],
            index[q],
            stack,
            bounds,
        )
        for slot in range(k):
            if index[q, slot] >= 0:
                index[q, slot] = order[index[q, slot]]
    return values, index


@numba.njit(cache=False)
def tree_auction(lo, hi, least, start, end, left, pts, w, order, queries, match_row, eps):
    """One Gauss-Seidel forward auction phase at ``eps`` over all pairs, from empty.

    The dense counterpart of :func:`wgdiff.metrics._assignment.auction`: row ``i``'s
    cost of column ``j`` is ``|p_i - q_j|^2 + w_j`` (up to a row constant), the least
    two are found by :func:`_search`, and the bid raises the winner's weight (lowers
    its potential) by the gap plus ``eps``, the tree's least weights updated along
    the winner's path to the root. ``w`` (tree order) and ``least`` are changed in
    place; ``match_row`` (n,) receives each row's column.

    Returns:
        The number of bids.
    """
    n, m = len(queries), len(pts)
    parent = np.full(len(least), -1, np.int64)
    leaf = np.empty(m, np.int64)
    for node in range(len(least)):
        if left[node] >= 0:
            parent[left[node]] = node
            parent[left[node] + 1] = node
        else:
            for a in range(start[node], end[node]):
                leaf[a] = node
    owner = np.full(m, -1, np.int64)  # tree position -> row
    held = np.full(n, -1, np.int64)  # row -> tree position
    queue = np.arange(n)
    best = np.empty(2)
    arg = np.empty(2, np.int64)
    stack = np.empty(256, np.int64)
    bounds = np.empty(256)
    head, size, bids = 0, n, 0
    while size > 0:
        i = queue[head]
        head = (head + 1) % n
        size -= 1
        _search(
            lo, hi, least, start, end, left, pts, w, queries[i], 2, 0.0, best, arg, stack, bounds
        )
        a = arg[0]
        gap = best[1] - best[0] if arg[1] >= 0 else 0.0
        w[a] += gap + eps
        node = leaf[a]
        smallest = np.inf
        for b in range(start[node], end[node]):
            smallest = min(smallest, w[b])
        least[node] = smallest
        node = parent[node]
        while node >= 0:
            smallest = min(least[left[node]], least[left[node] + 1])
            if smallest == least[node]:
                break
            least[node] = smallest
            node = parent[node]
        previous = owner[a]
        owner[a] = i
        held[i] = a
        bids += 1
        if previous >= 0:
            held[previous] = -1
            queue[(head + size) % n] = previous
            size += 1
    for i in range(n):
        match_row[i] = order[held[i]]
    return bids
