"""Closed-form evolution of a Gaussian mixture under a forward SDE (Zhang Prop. 4.1).

A Gaussian mixture stays a Gaussian mixture under every forward SDE of
``wgdiff.sde``: each has an affine drift, so ``x_t = m(t) x_0 + s(t) eps`` and a
component ``N(Z, Gamma^-1)`` becomes

    N(m Z, m^2 Gamma^-1 + s^2 I),   precision  Gamma_t = Gamma (m^2 I + s^2 Gamma)^-1.

- ``BrownianSDE(beta)`` (the heat equation ``d eta/ds = beta^2/2 Laplacian eta``):
  ``m = 1``, ``s^2 = beta^2 t``, so ``Gamma_t = (Gamma^-1 + beta^2 t I)^-1`` (Prop. 4.1).
- ``VPSDE``: ``m = exp(-B(t)/2)``, ``s^2 = 1 - exp(-B(t))`` with ``B = int_0^t beta``:
  centres shrink by ``m`` and the covariance becomes ``m^2 Gamma^-1 + s^2 I``.
- ``VESDE``: ``m = 1``, ``s^2 = sigma(t)^2 - sigma_min^2``.

``Gamma (m^2 I + s^2 Gamma)^-1`` needs no inverse of ``Gamma`` and is exact at
``t = 0``; the two factors commute, so the product is symmetric and we
symmetrize only to remove round-off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax.numpy as jnp

from wgdiff._checks import check_finite, check_ndim
from wgdiff._types import Array, ArrayLike

if TYPE_CHECKING:
    from wgdiff.sde import SDE


def _check_precisions(precisions):
    check_ndim(precisions, 3, "precisions", "(N, d, d)")
    if precisions.shape[1] != precisions.shape[2]:
        raise ValueError(f"precisions must have shape (N, d, d), got {precisions.shape}")
    check_finite(precisions, "precisions")


def evolve_affine(precisions: ArrayLike, mean_coeff: ArrayLike, std: ArrayLike) -> Array:
    """Precisions after ``x -> m x + s eps``: ``Gamma (m^2 I + s^2 Gamma)^-1``.

    Args:
        precisions: ``(N, d, d)``.
        mean_coeff: scalar ``m``.
        std: scalar ``s``.

    Returns:
        ``(N, d, d)`` evolved precisions.
    """
    precisions = jnp.asarray(precisions)
    _check_precisions(precisions)
    d = precisions.shape[-1]
    m2 = jnp.asarray(mean_coeff, precisions.dtype) ** 2
    s2 = jnp.asarray(std, precisions.dtype) ** 2
    if m2.ndim or s2.ndim:
        raise ValueError("mean_coeff and std must be scalars; use WPOKernelModel for per-sample t")
    system = m2 * jnp.eye(d, dtype=precisions.dtype) + s2 * precisions
    evolved = jnp.linalg.solve(system, precisions)
    return 0.5 * (evolved + jnp.swapaxes(evolved, -1, -2))


def evolve(precisions: ArrayLike, beta: ArrayLike, t: ArrayLike) -> Array:
    """Heat-equation evolution of the precisions, ``(Gamma^-1 + beta^2 t I)^-1`` (Zhang Prop. 4.1).

    The mixture with these precisions (same centres) is ``eta(., t)``, the
    solution of ``d eta/dt = beta^2/2 Laplacian eta`` started from the mixture;
    its score is the WPO-informed score at noise level ``t``.

    Args:
        precisions: ``(N, d, d)`` precisions at ``t = 0``.
        beta: diffusion coefficient of ``BrownianSDE``.
        t: scalar time ``>= 0``.

    Returns:
        ``(N, d, d)`` precisions at time ``t``.

    Example:
        >>> import jax.numpy as jnp
        >>> evolve(4.0 * jnp.eye(2)[None], 1.0, 0.25)[0].tolist()
        [[2.0, 0.0], [0.0, 2.0]]
    """
    if jnp.ndim(t) or jnp.ndim(beta):
        raise ValueError("beta and t must be scalars")
    return evolve_affine(precisions, 1.0, jnp.asarray(beta) * jnp.sqrt(jnp.asarray(t)))


def evolve_mixture(
    centers: ArrayLike, precisions: ArrayLike, sde: SDE, t: ArrayLike
) -> tuple[Array, Array]:
    """Mixture ``(centres, precisions)`` at forward time ``t`` of ``sde`` (any affine SDE).

    Args:
        centers: ``(N, d)``.
        precisions: ``(N, d, d)``.
        sde: a ``wgdiff.sde`` process exposing ``marginal_coeffs(t) -> (m, s)``.
        t: scalar forward time.

    Returns:
        ``(m Z, Gamma (m^2 I + s^2 Gamma)^-1)``: ``(N, d)`` and ``(N, d, d)``.
    """
    centers = jnp.asarray(centers)
    check_ndim(centers, 2, "centers", "(N, d)")
    if jnp.ndim(t):
        raise ValueError(f"t must be a scalar, got shape {jnp.shape(t)}")
    m, s = sde.marginal_coeffs(jnp.asarray(t, centers.dtype))
    return m * centers, evolve_affine(precisions, m, s)


def marginal_mixture(
    centers: ArrayLike, precisions: ArrayLike, dims: Sequence[int]
) -> tuple[Array, Array]:
    """Marginal of the mixture on coordinates ``dims`` (Zhang Fig. 4).

    A Gaussian's marginal keeps the sub-block of its *covariance*, not of its
    precision: ``Gamma_marg = ((Gamma^-1)[dims, dims])^-1``.

    Args:
        centers: ``(N, d)``.
        precisions: ``(N, d, d)``.
        dims: sequence of k distinct coordinate indices.

    Returns:
        ``(centers[:, dims], marginal precisions (N, k, k))``.
    """
    centers, precisions = jnp.asarray(centers), jnp.asarray(precisions)
    check_ndim(centers, 2, "centers", "(N, d)")
    _check_precisions(precisions)
    d = centers.shape[1]
    dims = tuple(int(i) for i in dims)
    if not dims or len(set(dims)) != len(dims) or min(dims) < 0 or max(dims) >= d:
        raise ValueError(f"dims must be distinct indices in [0, {d}), got {dims}")
    idx = jnp.asarray(dims)
    covariances = jnp.linalg.inv(precisions)
    sub = covariances[:, idx[:, None], idx[None, :]]
    marg = jnp.linalg.inv(sub)
    return centers[:, idx], 0.5 * (marg + jnp.swapaxes(marg, -1, -2))


__all__ = ["evolve", "evolve_affine", "evolve_mixture", "marginal_mixture"]
