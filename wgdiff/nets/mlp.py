"""Multilayer-perceptron score networks for low-dimensional data.

``ScoreMLP`` covers Kwon et al.'s 4x64 softplus net
(``ScoreMLP(features=(64,) * 4, activation=nn.softplus)``) and Zhang et al.'s
5x64 GeLU net (``ScoreMLP(features=(64,) * 5, activation=nn.gelu)``).
``PotentialMLP`` returns the gradient of a scalar network, so its Jacobian is
symmetric (conservative by construction; Vuong et al.).

Example:
    >>> import functools, jax, jax.numpy as jnp
    >>> model = ScoreMLP(features=(32, 32))
    >>> params = model.init(jax.random.key(0), jnp.zeros((4, 2)), jnp.zeros((4,)))
    >>> score_fn = functools.partial(model.apply, params)
    >>> score_fn(jnp.ones((4, 2)), 0.5).shape
    (4, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from wgdiff._types import Array
from wgdiff.nets.embedding import sinusoidal_embedding, time_vector


def dense_stack(h: Array, features: Sequence[int], activation: Callable, out_dim: int) -> Array:
    """``Dense(w) -> activation`` for each hidden width, then a linear ``Dense(out_dim)``.

    Call it inside an ``nn.compact`` method: the layers become that module's
    ``Dense_0, Dense_1, ...``.
    """
    for width in features:
        h = activation(nn.Dense(width)(h))
    return nn.Dense(out_dim)(h)


class MLP(nn.Module):
    """``[x, embed(t)] -> hidden layers -> out_dim``; the trunk of the MLP nets."""

    features: Sequence[int] = (64, 64, 64, 64)
    out_dim: int = 1
    activation: Callable = nn.softplus
    embed_dim: int = 32
    time_scale: float = 1000.0

    @nn.compact
    def __call__(self, x: Array, t: float | Array) -> Array:
        h = x.reshape(x.shape[0], -1)
        emb = sinusoidal_embedding(time_vector(t, x), self.embed_dim, time_scale=self.time_scale)
        h = jnp.concatenate([h, emb], axis=-1)
        return dense_stack(h, self.features, self.activation, self.out_dim)


class _TimeConditioned(nn.Module):
    """The fields the MLP nets share, and their ``[x, embed(t)]`` trunk.

    Attributes:
        features: hidden widths.
        activation: elementwise nonlinearity.
        embed_dim: size of the sinusoidal time embedding.
        time_scale: multiplies ``t`` before embedding (use ``1000 / T`` for horizon ``T``).
    """

    features: Sequence[int] = (64, 64, 64, 64)
    activation: Callable = nn.softplus
    embed_dim: int = 32
    time_scale: float = 1000.0

    def trunk(self, out_dim: int) -> MLP:
        return MLP(self.features, out_dim, self.activation, self.embed_dim, self.time_scale)


class ScoreMLP(_TimeConditioned):
    """Time-conditioned MLP score ``s(x, t)``: ``x (n, d)``, ``t`` scalar or ``(n,)`` -> ``(n, d)``.

    Attributes: ``features``, ``activation``, ``embed_dim``, ``time_scale`` (see ``MLP``).
    """

    @nn.compact
    def __call__(self, x: Array, t: float | Array) -> Array:
        return self.trunk(math.prod(x.shape[1:]))(x, t).reshape(x.shape)


class ScalarMLP(_TimeConditioned):
    """A scalar potential ``phi(x, t)``: ``(n, d) -> (n,)``."""

    @nn.compact
    def __call__(self, x: Array, t: float | Array) -> Array:
        return self.trunk(1)(x, t)[:, 0]


class PotentialMLP(_TimeConditioned):
    """Conservative score ``s(x, t) = grad_x phi(x, t)`` of a scalar MLP ``phi``.

    The Jacobian of ``s`` is the Hessian of ``phi``, symmetric to float precision, so
    every closed-loop integral of ``s`` vanishes (Vuong et al.'s constraints hold).
    ``__call__``: ``x (n, d)``, ``t`` -> ``(n, d)``; ``potential``: ``-> (n,)``.
    """

    def setup(self) -> None:
        self.phi = ScalarMLP(self.features, self.activation, self.embed_dim, self.time_scale)

    def potential(self, x: Array, t: float | Array) -> Array:
        return self.phi(x, t)

    def __call__(self, x: Array, t: float | Array) -> Array:
        (grad,) = nn.grad(lambda mdl, y: jnp.sum(mdl(y, t)), self.phi, x)
        return grad


__all__ = ["MLP", "PotentialMLP", "ScalarMLP", "ScoreMLP", "dense_stack"]
