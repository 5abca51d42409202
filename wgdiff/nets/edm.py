r"""EDM preconditioning (Karras et al. 2022, sec. 5 and Table 1) as a network wrapper.

For any SDE of ``wgdiff.sde`` write ``x = m (x0 + sigma eps)`` with ``sigma = s/m``;
in the scaled variable ``y = x/m`` the denoiser is

    D(y; sigma) = c_skip y + c_out F(c_in y, c_noise),
    c_skip = sigma_d^2 / (sigma^2 + sigma_d^2),  c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2),
    c_in = 1 / sqrt(sigma^2 + sigma_d^2),        c_noise = log(sigma) / 4

(EDM Table 1, "Ours"), so the raw network ``F`` sees unit-variance inputs and
regresses a unit-variance target at every noise level. The wrapper predicts
``x0``: use it through ``ScoreModel.from_data(module.apply, sde, params)`` (or
``score_apply(module.apply, sde, "data")`` for the losses).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.nets import ScoreMLP
    >>> from wgdiff.sde import VPSDE
    >>> net = EDMPrecond(ScoreMLP(features=(16,)), VPSDE())
    >>> params = net.init(jax.random.key(0), jnp.ones((3, 2)), jnp.full((3,), 0.5))
    >>> net.apply(params, jnp.ones((3, 2)), jnp.full((3,), 0.5)).shape
    (3, 2)
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from wgdiff._types import Array, ArrayLike
from wgdiff.sde import SDE, broadcast_time


def edm_coefficients(
    sigma: ArrayLike, sigma_data: float = 0.5
) -> tuple[Array, Array, Array, Array]:
    """``(c_skip, c_out, c_in, c_noise)`` of EDM Table 1 for noise levels ``sigma`` (any shape)."""
    sigma = jnp.asarray(sigma)
    norm = sigma**2 + sigma_data**2
    return (
        sigma_data**2 / norm,
        sigma * sigma_data / jnp.sqrt(norm),
        1.0 / jnp.sqrt(norm),
        0.25 * jnp.log(sigma),
    )


class EDMPrecond(nn.Module):
    """``D(x, t)``: data prediction from a raw net ``F(x_in (n, *event), c_noise (n,))``.

    Attributes:
        net: the raw network, called as ``net(c_in y, c_noise)``.
        sde: forward SDE giving ``m(t)``, ``s(t)``.
        sigma_data: data standard deviation (EDM: 0.5).
    """

    net: nn.Module
    sde: SDE
    sigma_data: float = 0.5

    @nn.compact
    def __call__(self, x: Array, t: ArrayLike) -> Array:
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        m, s = self.sde.marginal_coeffs(t)
        sigma = s / m
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        y = x / broadcast_time(m, x)
        out = self.net(broadcast_time(c_in, x) * y, c_noise)
        return broadcast_time(c_skip, x) * y + broadcast_time(c_out, x) * out


__all__ = ["EDMPrecond", "edm_coefficients"]
