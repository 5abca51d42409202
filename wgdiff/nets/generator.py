"""Generator and discriminator networks for SD-flow model optimization (Weber sec. 5, 6.2).

``GeneratorMLP`` maps latents ``xi (n, l)`` to samples ``(n, d)``;
``LinearGenerator`` is the single linear layer ``x = B xi + mu`` of Weber's
R^50 experiment (App. C.4: ``B`` from ``N(0, 0.01)``, ``mu = 0``);
``DiscriminatorMLP`` returns the pre-activation ``h(x) (n,)`` whose gradient is
the SD direction for an optimal discriminator (eq. 35).

Example:
    >>> import jax, jax.numpy as jnp
    >>> gen = LinearGenerator(out_dim=50)
    >>> params = gen.init(jax.random.key(0), jnp.zeros((1, 25)))
    >>> gen.apply(params, jnp.zeros((3, 25))).shape
    (3, 50)
    >>> disc = DiscriminatorMLP(features=(16, 16))
    >>> disc.apply(disc.init(jax.random.key(1), jnp.zeros((1, 2))), jnp.ones((4, 2))).shape
    (4,)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from wgdiff._types import Array
from wgdiff.nets.mlp import dense_stack


class GeneratorMLP(nn.Module):
    """MLP generator ``xi (n, l) -> x (n, out_dim)``.

    Attributes:
        out_dim: sample dimension ``d``.
        features: hidden widths.
        activation: hidden nonlinearity.
    """

    out_dim: int
    features: Sequence[int] = (128, 128)
    activation: Callable = nn.gelu

    @nn.compact
    def __call__(self, xi: Array) -> Array:
        return dense_stack(xi, self.features, self.activation, self.out_dim)


def _normal_init(std: float) -> Callable:
    return nn.initializers.normal(stddev=std)


class LinearGenerator(nn.Module):
    """``x = B xi + mu`` (Weber App. C.4), ``B`` initialised ``N(0, init_std^2)``, ``mu = 0``.

    Attributes:
        out_dim: sample dimension (50 in the paper).
        init_std: standard deviation of the initial ``B`` entries (0.1: variance 0.01).
    """

    out_dim: int
    init_std: float = 0.1

    @nn.compact
    def __call__(self, xi: Array) -> Array:
        b = self.param("B", _normal_init(self.init_std), (self.out_dim, xi.shape[-1]))
        mu = self.param("mu", nn.initializers.zeros, (self.out_dim,))
        return xi @ b.T + mu


class DiscriminatorMLP(nn.Module):
    """MLP discriminator returning the pre-activation logit ``h(x) (n,)`` (Weber eq. 34).

    Attributes:
        features: hidden widths.
        activation: hidden nonlinearity (smooth, so ``grad h`` is continuous).
    """

    features: Sequence[int] = (128, 128)
    activation: Callable = nn.gelu

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return jnp.squeeze(dense_stack(x, self.features, self.activation, 1), -1)
