"""The one streaming kernel primitive: chunked log-sum-exp reductions over point clouds.

Every O(n * m) kernel computation in wgdiff (Sinkhorn in :mod:`wgdiff.metrics`, the
kernel flows of :mod:`wgdiff.sdflow`, the mixtures of :mod:`wgdiff.wpo`, MMD / CFD /
nearest neighbours, the pairwise Lipschitz quotients of :mod:`wgdiff.bounds`) goes
through the functions here, so memory stays O(chunk * chunk) whatever n and m are:

* :func:`squared_distances` -- the one pairwise ``|x_i - y_j|^2``.
* :func:`map_row_chunks` -- ``lax.map`` over row chunks of a query set.
* :func:`stream_softmax` -- online log-sum-exp over chunks of N items (an inner
  ``lax.scan`` carrying a running maximum and rescaled running sums), with
  softmax-weighted means of per-pair payloads.
* :class:`PointCloud` -- the two together for a pair of point sets:
  ``lse_i = log sum_j exp(h_j - scale |x_i - y_j|^2)`` and the weighted means
  ``sum_j w_ij f_j / sum_j w_ij`` of per-point features, memory
  O(row_chunk * col_chunk).

Example:
    >>> import jax.numpy as jnp
    >>> geom = PointCloud(jnp.zeros((1, 2)), jnp.array([[1.0, 0.0], [-1.0, 0.0]]))
    >>> lse, mean = geom.moments(jnp.zeros(2), 0.5, geom.y)
    >>> round(float(lse[0]), 6), mean.tolist()
    (0.193147, [[0.0, 0.0]])
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wgdiff._checks import check_positive_int
from wgdiff._types import ArrayLike, PyTree

# Up to this dimension squared distances are formed from explicit differences, which
# is exact even when |x - y| << |x| (tiny bandwidths far from the origin); above it the
# matmul expansion |x|^2 + |y|^2 - 2 x.y is much faster and its cancellation is
# negligible next to the distances typical there.
DIRECT_DISTANCE_MAX_DIM = 16
DEFAULT_ROW_CHUNK = 512
DEFAULT_COL_CHUNK = 2048


def squared_distances(x: jax.Array | np.ndarray, y: jax.Array | np.ndarray) -> jax.Array:
    """Pairwise squared Euclidean distances ``(n, d), (m, d) -> (n, m)``.

    Explicit differences for ``d <= DIRECT_DISTANCE_MAX_DIM`` (one fused 2-D
    broadcast per coordinate), the Gram form clipped at 0 above. Two NumPy arrays
    give a NumPy result computed on the host (the exact solver's float64 passes,
    which may run inside ``jax.pure_callback`` where JAX must not be called).
    """
    xp = np if isinstance(x, np.ndarray) and isinstance(y, np.ndarray) else jnp
    if x.shape[-1] <= DIRECT_DISTANCE_MAX_DIM:
        return sum((x[:, k, None] - y[None, :, k]) ** 2 for k in range(x.shape[-1]))
    cross = x @ y.T
    sq = xp.sum(x * x, axis=-1)[:, None] + xp.sum(y * y, axis=-1)[None, :] - 2.0 * cross
    return xp.maximum(sq, 0.0)


def map_row_chunks(fn: Callable, x: PyTree, chunk_size: int) -> PyTree:
    """Apply ``fn(x_chunk, rows)`` to row chunks of ``x`` and stack the results.

    ``x`` (a pytree of arrays with leading axis n) is zero-padded to a multiple of
    ``chunk_size``; ``rows`` (chunk,) holds the global row indices of the chunk, so
    ``rows < n`` marks real rows. Returns the per-chunk outputs stacked on a leading
    axis of length ``ceil(n / chunk_size)``.
    """
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    chunk_size = min(check_positive_int(chunk_size, "chunk_size"), n)
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n

    def split(a):
        a = jnp.pad(a, ((0, pad),) + ((0, 0),) * (a.ndim - 1))
        return a.reshape((n_chunks, chunk_size) + a.shape[1:])

    chunks = jax.tree_util.tree_map(split, x)
    rows = jnp.arange(n_chunks * chunk_size).reshape(n_chunks, chunk_size)
    return jax.lax.map(lambda args: fn(*args), (chunks, rows))


def _unchunk(a, n: int):
    """Undo :func:`map_row_chunks` stacking: ``(n_chunks, chunk, ...) -> (n, ...)``."""
    return a.reshape((-1,) + a.shape[2:])[:n]


def _stream(chunk_fn: Callable, operands, n_rows: int, chunk_size: int, accumulate: Callable):
    """Online log-sum-exp over item chunks; ``accumulate(weights, payload)`` sums payloads."""
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    n_items = jax.tree_util.tree_leaves(operands)[0].shape[0]
    chunk_size = min(chunk_size, n_items)
    n_chunks = -(-n_items // chunk_size)
    pad = n_chunks * chunk_size - n_items

    def pad_and_split(a):
        # Padding repeats the first item so padded items stay finite (then masked).
        if pad:
            a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])], axis=0)
        return a.reshape((n_chunks, chunk_size) + a.shape[1:])

    chunked = jax.tree_util.tree_map(pad_and_split, operands)
    valid = (jnp.arange(n_chunks * chunk_size) < n_items).reshape(n_chunks, chunk_size)

    def body(carry, inputs):
        running_max, running_sum, acc = carry
        chunk, mask = inputs
        logits, payload = chunk_fn(chunk)
        logits = jnp.where(mask[None, :], logits, -jnp.inf)
        # The shift cancels exactly, so it is held out of the gradient. A row whose
        # logits are all -inf so far keeps max -inf; exp(-inf - (-inf)) is guarded.
        new_max = jax.lax.stop_gradient(jnp.maximum(running_max, jnp.max(logits, axis=1)))
        safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        rescale = jnp.exp(running_max - safe_max)
        weights = jnp.exp(logits - safe_max[:, None])
        running_sum = running_sum * rescale + jnp.sum(weights, axis=1)

        def rescaled(a, p):
            r = rescale.reshape(rescale.shape + (1,) * (a.ndim - 1))
            return a * r + p

        acc = jax.tree_util.tree_map(rescaled, acc, accumulate(weights, payload))
        return (new_max, running_sum, acc), None

    first = jax.tree_util.tree_map(lambda a: a[0], chunked)
    logits_shape, payload_shape = jax.eval_shape(chunk_fn, first)
    weights_shape = jax.ShapeDtypeStruct(logits_shape.shape, logits_shape.dtype)
    acc_shape = jax.eval_shape(accumulate, weights_shape, payload_shape)
    acc0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), acc_shape)
    dtype = logits_shape.dtype
    init = (jnp.full((n_rows,), -jnp.inf, dtype), jnp.zeros((n_rows,), dtype), acc0)
    (run_max, run_sum, acc), _ = jax.lax.scan(body, init, (chunked, valid))
    lse = run_max + jnp.log(run_sum)
    means = jax.tree_util.tree_map(
        lambda a: a / run_sum.reshape(run_sum.shape + (1,) * (a.ndim - 1)), acc
    )
    return lse, means


def _pair_sum(weights, payload):
    def one(p):
        w = weights.reshape(weights.shape + (1,) * (p.ndim - 2))
        return jnp.sum(w * p, axis=1)

    return jax.tree_util.tree_map(one, payload)


def stream_softmax(
    chunk_fn: Callable,
    operands: PyTree,
    n_rows: int,
    chunk_size: int = 256,
) -> tuple[jax.Array, PyTree]:
    """Log-sum-exp and softmax-weighted means over N items, streamed over chunks.

    ``chunk_fn(chunk) -> (logits, payload)`` receives the operands restricted to a
    chunk of ``c`` items (a pytree of arrays with leading axis ``c``) and returns
    ``logits: (n, c)`` and ``payload``: a pytree of arrays ``(n, c, ...)``. The
    running maximum is held out of the gradient: the log-sum-exp shift cancels
    exactly, so gradients are those of the plain formula.

    Args:
        chunk_fn: per-chunk logits and payloads.
        operands: pytree of arrays with leading axis N (the items summed over).
        n_rows: n, the number of query rows.
        chunk_size: items per chunk; the last chunk is padded and masked.

    Returns:
        ``(lse, means)``: ``lse: (n,)`` the log-sum-exp of the logits over all N
        items and ``means`` the softmax-weighted sums of the payloads, ``(n, ...)``.
    """
    return _stream(chunk_fn, operands, n_rows, chunk_size, _pair_sum)


@struct.dataclass
class PointCloud:
    """Two point sets with chunk sizes; streamed reductions over the Gaussian-type kernel.

    For logits ``h_j - scale * |x_i - y_j|^2`` (a Gibbs kernel with per-column log
    weights ``h``), the reductions never hold more than a
    ``row_chunk x col_chunk`` block: an outer ``lax.map`` over row chunks of ``x``
    and an inner online log-sum-exp scan over column chunks of ``y``.

    Attributes:
        x: (n, d) row points.
        y: (m, d) column points.
        row_chunk: rows per block (static).
        col_chunk: columns per block (static).
    """

    x: jax.Array
    y: jax.Array
    row_chunk: int = struct.field(pytree_node=False, default=DEFAULT_ROW_CHUNK)
    col_chunk: int = struct.field(pytree_node=False, default=DEFAULT_COL_CHUNK)

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape[0], self.y.shape[0]

    def transpose(self) -> PointCloud:
        """The same geometry with the roles of ``x`` and ``y`` exchanged."""
        return PointCloud(self.y, self.x, self.row_chunk, self.col_chunk)

    def _reduce(self, h, scale, features):
        n = self.x.shape[0]
        h = jnp.broadcast_to(jnp.asarray(h, self.x.dtype), (self.y.shape[0],))

        def rows(xc, _):
            def chunk_fn(chunk):
                yc, hc, fc = chunk
                return hc[None, :] - scale * squared_distances(xc, yc), fc

            contract = lambda w, fc: None if fc is None else w @ fc
            return _stream(chunk_fn, (self.y, h, features), xc.shape[0], self.col_chunk, contract)

        lse, means = map_row_chunks(rows, self.x, self.row_chunk)
        return _unchunk(lse, n), None if means is None else _unchunk(means, n)

    def lse(self, h: ArrayLike, scale: ArrayLike) -> jax.Array:
        """``lse_i = log sum_j exp(h_j - scale |x_i - y_j|^2)``, shape (n,).

        Args:
            h: (m,) per-column log weights (or a scalar).
            scale: positive scalar multiplying the squared distances.
        """
        return self._reduce(h, scale, None)[0]

    def moments(
        self, h: ArrayLike, scale: ArrayLike, features: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Log kernel mass and kernel-weighted means of per-column features.

        Args:
            h: (m,) per-column log weights (or a scalar).
            scale: positive scalar multiplying the squared distances.
            features: (m, f) per-column features.

        Returns:
            ``lse`` (n,) as in :meth:`lse` and ``means`` (n, f) with
            ``means_i = sum_j w_ij f_j / sum_j w_ij``, ``w_ij = exp(h_j - scale c_ij)``.
        """
        return self._reduce(h, scale, features)


__all__ = [
    "DEFAULT_COL_CHUNK",
    "DEFAULT_ROW_CHUNK",
    "DIRECT_DISTANCE_MAX_DIM",
    "PointCloud",
    "map_row_chunks",
    "squared_distances",
    "stream_softmax",
]
