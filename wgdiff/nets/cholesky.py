"""Cholesky-factor network for the WPO kernel model's local precisions (Zhang sec. 4.2, Alg. 1).

``CholeskyMLP`` maps a kernel centre ``z in R^d`` to the ``d(d+1)/2`` entries of
a lower-triangular ``L(z)`` (Pinheiro & Bates' unconstrained parametrization)
and the precision is ``Gamma(z) = L L^T + jitter I``. The authors' code adds
``0.01 I`` so precisions stay positive definite whatever the net outputs; that
is the default ``jitter``. Architecture as in the paper: 5 hidden layers of 64
units with (exact, erf) GeLU.

Example:
    >>> import jax, jax.numpy as jnp
    >>> net = CholeskyMLP()
    >>> params = net.init(jax.random.key(0), jnp.zeros((3, 2)))
    >>> net.apply(params, jnp.ones((3, 2)), method=net.precision).shape
    (3, 2, 2)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from wgdiff._checks import check_ndim
from wgdiff._types import Array
from wgdiff.nets.mlp import dense_stack

exact_gelu = functools.partial(nn.gelu, approximate=False)


def fill_lower_triangular(entries: Array, dim: int) -> Array:
    """``(..., d(d+1)/2)`` entries -> ``(..., d, d)`` lower-triangular matrices (row-major)."""
    rows, cols = jnp.tril_indices(dim)
    out = jnp.zeros(entries.shape[:-1] + (dim, dim), entries.dtype)
    return out.at[..., rows, cols].set(entries)


class CholeskyMLP(nn.Module):
    """Centre ``(N, d)`` -> lower-triangular Cholesky factor ``(N, d, d)``.

    Attributes:
        features: hidden layer widths (paper: five layers of 64).
        activation: hidden nonlinearity (paper: GeLU).
        jitter: ``epsilon`` in ``Gamma = L L^T + epsilon I`` (authors' code: 0.01).
        diag_offset: constant added to the diagonal of ``L`` (default 0, the authors'
            plain net). With the default initialization ``L`` starts near 0, i.e. every
            kernel starts with covariance ~ ``1/jitter`` = 100; an offset ``1/h`` starts
            them at bandwidth ``h`` instead (see ``wgdiff.wpo.training``).
    """

    features: Sequence[int] = (64,) * 5
    activation: Callable = exact_gelu
    jitter: float = 0.01
    diag_offset: float = 0.0

    @nn.compact
    def __call__(self, z: Array) -> Array:
        check_ndim(z, 2, "z", "(N, d)")
        d = z.shape[-1]
        entries = dense_stack(z, self.features, self.activation, d * (d + 1) // 2)
        offset = self.diag_offset * jnp.eye(d, dtype=entries.dtype)
        return fill_lower_triangular(entries, d) + offset

    def precision(self, z: Array) -> Array:
        """``Gamma(z) = L(z) L(z)^T + jitter I``: ``(N, d, d)`` symmetric positive definite."""
        chol = self(z)
        eye = jnp.eye(chol.shape[-1], dtype=chol.dtype)
        return chol @ jnp.swapaxes(chol, -1, -2) + self.jitter * eye


__all__ = ["CholeskyMLP", "fill_lower_triangular"]
