"""Nearest-neighbour distances and the memorization ratio.

Weber (app. C.3, Fig. 4) compares the distances from synthetic points to their
nearest target point with the target points' own nearest-neighbour distances
(excluding themselves); a generator that copies its training data puts a spike at 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff._types import ArrayLike
from wgdiff.geometry import map_row_chunks, squared_distances
from wgdiff.metrics._common import (
    DEFAULT_CHUNK_SIZE,
    check_chunk_size,
    check_pair,
    to_float_array,
)


@functools.partial(jax.jit, static_argnames=("exclude_self", "chunk_size"))
def _nearest_neighbor_distances(x, y, exclude_self, chunk_size):
    n = x.shape[0]

    def chunk_distances(x_chunk, rows):
        squared = squared_distances(x_chunk, y)
        if exclude_self:
            own = rows[:, None] == jnp.arange(y.shape[0])[None, :]
            squared = jnp.where(own, jnp.inf, squared)
        nearest = jnp.argmin(squared, axis=1)
        # The Gram form cancels for near-coincident points; recompute the winner's
        # distance from the difference so a copied point gives exactly 0.
        return jnp.linalg.norm(x_chunk - y[nearest], axis=1)

    return map_row_chunks(chunk_distances, x, chunk_size).reshape(-1)[:n]


def nearest_neighbor_distances(
    x: ArrayLike, y: ArrayLike, *, exclude_self: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> jax.Array:
    """Euclidean distance from each point of ``x`` to its nearest point of ``y``.

    Args:
        x: (n, d) query points.
        y: (m, d) reference points.
        exclude_self: ``x`` and ``y`` are the same set (same shape); point i is not
            its own neighbour (Weber Fig. 4, target-to-target distances).
        chunk_size: query rows per chunk; memory is O(chunk_size * m).

    Returns:
        (n,) distances.

    Example:
        >>> import jax.numpy as jnp
        >>> y = jnp.array([[0.0, 0.0], [3.0, 4.0]])
        >>> nearest_neighbor_distances(jnp.array([[0.0, 1.0]]), y).tolist()
        [1.0]
    """
    check_pair(x, y)
    chunk_size = check_chunk_size(chunk_size)
    if exclude_self and (np.shape(x) != np.shape(y) or np.shape(y)[0] < 2):
        raise ValueError(
            "exclude_self=True needs x and y to be the same (n, d) set with n >= 2, got "
            f"shapes {np.shape(x)} and {np.shape(y)}"
        )
    x, y = to_float_array(x), to_float_array(y)
    dtype = jnp.result_type(x, y)
    return _nearest_neighbor_distances(
        x.astype(dtype), y.astype(dtype), bool(exclude_self), chunk_size
    )


def nearest_neighbor_ratio(
    samples: ArrayLike,
    train: ArrayLike,
    reference: ArrayLike,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> jax.Array:
    """Memorization ratio: mean NN distance of samples to train over that of fresh data.

    ``mean_i min_j |s_i - t_j| / mean_k min_j |r_k - t_j|`` with ``r`` fresh points
    from the data distribution that are not in ``train``. Near 0: samples sit on
    training points (memorization). Near 1: samples are as far from the training
    set as new data. Well above 1: samples are off the data.

    Args:
        samples: (n, d) generated points.
        train: (m, d) training points.
        reference: (k, d) held-out data points, none of them in ``train``.
        chunk_size: rows per chunk; memory is O(chunk_size * m).

    Returns:
        Scalar ratio.

    Raises:
        ValueError: bad shapes, NaN/Inf, or ``reference`` points that coincide with
            ``train`` points (zero denominator).
    """
    check_pair(samples, train, "samples", "train")
    check_pair(reference, train, "reference", "train")
    numerator = jnp.mean(nearest_neighbor_distances(samples, train, chunk_size=chunk_size))
    denominator = jnp.mean(nearest_neighbor_distances(reference, train, chunk_size=chunk_size))
    if not float(denominator) > 0.0:
        raise ValueError(
            "reference must be fresh data not in train: its mean nearest-neighbour "
            "distance to train is 0"
        )
    return numerator / denominator
