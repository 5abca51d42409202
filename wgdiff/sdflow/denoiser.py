"""Denoiser form of SD flow (Weber sec. 3.2, eq. 17-19).

The target's optimal denoiser ``D_p(z; sigma) = E[x | z]`` comes from a score
model through Tweedie's formula; the source side stays a kernel estimate
(``D_q`` of eq. 41 on the current particles), or is replaced by the clean
particle itself, which gives the update ``y <- (1 - rho) y + rho D_p(z)`` of
eq. 19 (the denoising-diffusion reverse step of sec. 4).

A score model for an SDE with ``x_t = m(t) x_0 + s(t) eps`` sees noise level
``sigma = s(t) / m(t)`` in the unscaled coordinates ``z = x_0 + sigma eps``
that SD flow uses, so :func:`tweedie_denoiser` inverts that ratio for ``t``
and returns ``D_p(z) = (m z + s^2 score(m z, t)) / m``.

Example:
    >>> import jax.numpy as jnp
    >>> from wgdiff.sde import VESDE
    >>> sde = VESDE(sigma_min=0.01, sigma_max=10.0)
    >>> # Standard normal data: the score of N(0, (1 + s^2) I) is -x / (1 + s^2).
    >>> score_fn = lambda x, t: -x / (1.0 + sde.marginal_coeffs(t)[1] ** 2)
    >>> denoise = tweedie_denoiser(score_fn, sde, 1.0)
    >>> denoise(jnp.array([[2.0, -2.0]]))  # E[x | z] = z / (1 + sigma^2)
    Array([[ 1., -1.]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from wgdiff._checks import check_positive, is_concrete
from wgdiff.sdflow.directions import kernel_denoiser
from wgdiff.sdflow.kernels import DEFAULT_POINT_CHUNK, DEFAULT_Z_CHUNK, check_point_set

if TYPE_CHECKING:
    from wgdiff.sde import SDE

_BISECTION_STEPS = 60


def noise_level_time(sde: SDE, sigma: ArrayLike) -> jax.Array:
    """Time ``t`` at which ``s(t) / m(t) = sigma`` for ``sde`` (bisection, jit-safe).

    ``s/m`` increases with ``t`` for every SDE in :mod:`wgdiff.sde`. Concrete
    ``sigma`` outside ``[s/m at t=0, s/m at T]`` raises ``ValueError``.
    """
    check_positive(sigma, "sigma")

    def ratio(t):
        m, s = sde.marginal_coeffs(t)
        return s / m

    if is_concrete(sigma):
        lo_r, hi_r = float(ratio(jnp.asarray(0.0))), float(ratio(jnp.asarray(sde.T)))
        if float(np.min(sigma)) < lo_r or float(np.max(sigma)) > hi_r:
            raise ValueError(
                f"sigma must lie in the SDE's noise range [{lo_r:.4g}, {hi_r:.4g}], got {sigma}"
            )
    sigma = jnp.asarray(sigma, jnp.float32)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = ratio(mid) < sigma
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(
        0, _BISECTION_STEPS, body, (jnp.zeros_like(sigma), jnp.full_like(sigma, sde.T))
    )
    return 0.5 * (lo + hi)


def tweedie_denoiser(
    score_fn: Callable, sde: SDE, sigma: ArrayLike
) -> Callable[[jax.Array], jax.Array]:
    """Optimal-denoiser estimate ``D_p(z; sigma)`` from a score model (Weber eq. 18, footnote 9).

    Args:
        score_fn: ``(x (n, d), t) -> (n, d)``, a score model of ``sde``'s marginals of p.
        sde: a :mod:`wgdiff.sde` process (``marginal_coeffs``, ``T``).
        sigma: scalar noise level of the proxy ``z = x + sigma eps``.

    Returns:
        ``denoise(z (n, d)) -> (n, d)``, Tweedie's ``E[x | z]``.
    """
    t = noise_level_time(sde, sigma)
    m, s = sde.marginal_coeffs(t)

    def denoise(z):
        scaled = m * z
        return (scaled + s**2 * score_fn(scaled, t)) / m

    return denoise


def denoiser_score_difference(
    z: jax.Array,
    denoiser: Callable[[jax.Array], jax.Array],
    source: jax.Array,
    sigma: ArrayLike,
    *,
    z_chunk: int = DEFAULT_Z_CHUNK,
    point_chunk: int = DEFAULT_POINT_CHUNK,
) -> jax.Array:
    """``D_p(z) - D_q(z)`` (Weber eq. 18): a learned target denoiser against the
    kernel denoiser of the current source sample.

    Args:
        z: (n, d) noisy particles.
        denoiser: ``(n, d) -> (n, d)`` estimate of ``D_p(.; sigma)``, e.g. :func:`tweedie_denoiser`.
        source: (M, d) current clean particles.
        sigma: scalar noise level.

    Returns:
        (n, d) SD direction (``sigma^2`` times the score difference).
    """
    check_point_set(z, "z")
    check_point_set(source, "source", z.shape[1])
    denoised = denoiser(z)
    if denoised.shape != z.shape:
        raise ValueError(f"denoiser(z) must have shape {z.shape}, got {denoised.shape}")
    return denoised - kernel_denoiser(z, source, sigma, z_chunk=z_chunk, point_chunk=point_chunk)


def denoiser_update(y: jax.Array, denoised: jax.Array, rho: ArrayLike) -> jax.Array:
    """Weber eq. 19: ``y <- (1 - rho) y + rho D_p(z)``, ``D_q(z)`` replaced by ``y``.

    Args:
        y: (n, d) clean particles.
        denoised: (n, d) ``D_p(z)`` at their noisy copies ``z = y + sigma eps``.
        rho: step in (0, 1]; ``rho = 1 - sigma_s^2 / sigma_t^2`` is the DDPM reverse step (eq. 21).

    Returns:
        (n, d) moved particles.
    """
    if np.shape(y) != np.shape(denoised):
        raise ValueError(
            f"denoised must have the shape of y {np.shape(y)}, got {np.shape(denoised)}"
        )
    if is_concrete(rho) and not 0 < float(rho) <= 1:
        raise ValueError(f"rho must lie in (0, 1], got {rho}")
    return (1 - rho) * y + rho * denoised
