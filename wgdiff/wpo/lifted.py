"""Lifted-space neural-network reading of the kernel model (Zhang sec. 6.2, eq. 32-34).

With the lifting ``T(x) = [vec(x x^T); x]`` in ``R^(d^2 + d)`` the log-weights
of the mixture are *linear* in the lifted input,

    y(x) = A T(x) + b,   A = [G  H],

so the model is a shallow network: a linear layer in the lifted space followed
by a log-sum-exp (density) or a softmax (score, eq. 34). For the correctly
normalized mixture (see ``wgdiff.wpo.kernel``) the rows are

    G_i = -1/2 vec(Gamma_i),  H_i = Gamma_i Z_i,
    b_i = -1/2 Z_i^T Gamma_i Z_i + 1/2 log det Gamma_i - d/2 log 2 pi - log N.

The paper's eq. 33 drops the ``-1/2`` on ``G`` and the ``-1/2 Z^T Gamma Z``
term in ``b`` (it is needed: it is the constant of the expanded quadratic), and
eq. 34 writes ``grad y = F x - H^T`` with the opposite sign; we use the
expansion above, which reproduces ``log_density`` and ``kernel_score``
exactly. The score is ``J_T(x)^T A^T softmax(y)``: with ``w = A^T softmax(y)``
split as ``[W (d x d); w_H]`` it is ``(W + W^T) x + w_H``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

from wgdiff._checks import check_finite, check_ndim
from wgdiff._types import Array, ArrayLike
from wgdiff.wpo.kernel import DEFAULT_CHUNK_SIZE, check_mixture, stream_softmax


@struct.dataclass
class LiftedWeights:
    """Weights of the lifted shallow network (Zhang eq. 33).

    Attributes:
        weight: ``(N, d^2 + d)`` the matrix ``A = [G H]``.
        bias: ``(N,)`` the vector ``b``.
    """

    weight: jax.Array
    bias: jax.Array

    @property
    def dim(self) -> int:
        lifted = self.weight.shape[1]
        return int(round((-1 + math.sqrt(1 + 4 * lifted)) / 2))


def lift(x: ArrayLike) -> Array:
    """Lifting operator ``T(x) = [vec(x x^T); x]`` (Zhang eq. 32): ``(n, d) -> (n, d^2 + d)``.

    Example:
        >>> import jax.numpy as jnp
        >>> lift(jnp.array([[1.0, 2.0]])).tolist()
        [[1.0, 2.0, 2.0, 4.0, 1.0, 2.0]]
    """
    x = jnp.asarray(x)
    check_ndim(x, 2, "x", "(n, d)")
    outer = x[:, :, None] * x[:, None, :]
    return jnp.concatenate([outer.reshape(x.shape[0], -1), x], axis=1)


def lifted_weights(centers: ArrayLike, precisions: ArrayLike) -> LiftedWeights:
    """Weights ``A, b`` of the lifted network equal to the mixture ``(centers, precisions)``.

    Args:
        centers: ``(N, d)``.
        precisions: ``(N, d, d)`` symmetric positive definite.

    Returns:
        ``LiftedWeights`` with ``weight: (N, d^2 + d)`` and ``bias: (N,)``.
    """
    centers, precisions = jnp.asarray(centers), jnp.asarray(precisions)
    check_mixture(centers, centers, precisions)
    n_centers, d = centers.shape
    g = -0.5 * precisions.reshape(n_centers, d * d)
    h = jnp.einsum("nij,nj->ni", precisions, centers)
    chol = jnp.linalg.cholesky(precisions)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    bias = (
        -0.5 * jnp.sum(centers * h, axis=-1)
        + 0.5 * logdet
        - 0.5 * d * math.log(2 * math.pi)
        - math.log(n_centers)
    )
    return LiftedWeights(weight=jnp.concatenate([g, h], axis=1), bias=bias)


def _lifted_stream(x, weights: LiftedWeights, chunk_size):
    x = jnp.asarray(x)
    check_ndim(x, 2, "x", "(n, d)")
    d = weights.dim
    if x.shape[1] != d or weights.weight.shape[1] != d * d + d:
        raise ValueError(
            f"x must have shape (n, d) and weights.weight (N, d^2 + d); got {x.shape} "
            f"and {weights.weight.shape}"
        )
    check_finite(x, "x")
    lifted = lift(x)

    def chunk_fn(chunk):
        a, b = chunk
        logits = lifted @ a.T + b[None, :]  # linear layer in the lifted space
        return logits, jnp.broadcast_to(a[None], (x.shape[0],) + a.shape)

    return stream_softmax(chunk_fn, (weights.weight, weights.bias), x.shape[0], chunk_size)


def lifted_log_density(
    x: ArrayLike, weights: LiftedWeights, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Array:
    """``logsumexp(A T(x) + b)``: ``(n,)``, equal to ``log_density`` of the mixture."""
    lse, _ = _lifted_stream(x, weights, chunk_size)
    return lse


def lifted_score(
    x: ArrayLike, weights: LiftedWeights, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Array:
    """Score as a shallow lifted network (Zhang eq. 34): ``(n, d)``.

    ``J_T(x)^T A^T softmax(A T(x) + b)``, equal to ``kernel_score`` of the mixture.
    """
    x = jnp.asarray(x)
    _, mean_rows = _lifted_stream(x, weights, chunk_size)
    d = x.shape[1]
    w_quad = mean_rows[:, : d * d].reshape(-1, d, d)
    w_lin = mean_rows[:, d * d :]
    return jnp.einsum("nij,nj->ni", w_quad + jnp.swapaxes(w_quad, -1, -2), x) + w_lin


__all__ = ["LiftedWeights", "lift", "lifted_log_density", "lifted_score", "lifted_weights"]
