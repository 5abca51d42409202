"""Gaussian mixtures with exact densities, scores and SDE-perturbed marginals.

A mixture ``p(x) = sum_k w_k N(x; mu_k, C_k)`` pushed through any SDE of
``wgdiff.sde`` stays a Gaussian mixture: with ``x_t = m(t) x_0 + s(t) eps``,

    p_t(x) = sum_k w_k N(x; m mu_k, m^2 C_k + s^2 I),

so its score is known in closed form at every ``t``. This is the exact
reference score every sampler test uses (``GaussianMixture.score_fn``).

Full covariances are handled through the eigendecomposition ``C_k = U_k
diag(lam_k) U_k^T``: the perturbed covariance is ``U_k diag(m^2 lam_k + s^2)
U_k^T`` with the same eigenvectors, so one ``eigh`` per component serves every
``t``, and rank-deficient ``C_k`` (Weber's R^50 linear Gaussian) are exact for
``s > 0``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sde import VPSDE
    >>> gm = GaussianMixture.isotropic(jnp.array([[-1.0, 0.0], [1.0, 0.0]]), jnp.array([0.1, 0.2]))
    >>> gm.sample(jax.random.key(0), 5).shape
    (5, 2)
    >>> score = gm.score_fn(VPSDE())
    >>> score(jnp.zeros((3, 2)), jnp.array([0.1, 0.5, 0.9])).shape
    (3, 2)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wgdiff._checks import check_finite, check_positive_int, check_time, is_concrete
from wgdiff._types import Array

if TYPE_CHECKING:
    from wgdiff.sde import SDE


def _as_float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


@struct.dataclass
class GaussianMixture:
    """Mixture ``sum_k w_k N(mu_k, C_k)`` in ``R^d``; a pytree that passes through ``jax.jit``.

    Exactly one of ``stds`` (isotropic components, ``C_k = stds_k^2 I``) and
    ``covs`` (full components) is set. Build it with :meth:`isotropic` or
    :meth:`full`, which validate the shapes; the raw constructor does not
    (it also runs when JAX rebuilds the pytree inside transformations).

    Attributes:
        means: ``(k, d)`` component means ``mu_k``.
        weights: ``(k,)`` nonnegative weights summing to one.
        stds: ``(k,)`` isotropic standard deviations, or ``None``.
        covs: ``(k, d, d)`` symmetric positive semi-definite covariances, or ``None``.
    """

    means: jax.Array
    weights: jax.Array
    stds: jax.Array | None = None
    covs: jax.Array | None = None

    # -- construction -------------------------------------------------------
    @classmethod
    def isotropic(cls, means: Array, stds: Array, weights: Array | None = None) -> GaussianMixture:
        """Mixture of ``N(mu_k, stds_k^2 I)``.

        Args:
            means: ``(k, d)``.
            stds: ``(k,)`` positive (a scalar is broadcast to all components).
            weights: ``(k,)`` nonnegative, normalized here; ``None`` = equal weights.
        """
        means = _as_float(means)
        _check_means(means)
        k = means.shape[0]
        stds = _as_float(stds).astype(means.dtype)
        if stds.ndim == 0:
            stds = jnp.full((k,), stds)
        if stds.shape != (k,):
            raise ValueError(f"stds must have shape (k,) = ({k},), got {stds.shape}")
        check_finite(stds, "stds")
        if is_concrete(stds) and not np.all(np.asarray(stds) > 0):
            raise ValueError("stds must be positive")
        return cls(means=means, weights=_normalize_weights(weights, k, means.dtype), stds=stds)

    @classmethod
    def full(cls, means: Array, covs: Array, weights: Array | None = None) -> GaussianMixture:
        """Mixture of ``N(mu_k, covs_k)`` with full (possibly singular) covariances.

        Args:
            means: ``(k, d)``.
            covs: ``(k, d, d)`` symmetric positive semi-definite. A singular
                covariance has no density at ``t = 0``: ``log_prob`` and
                ``score`` are then infinite/NaN off its support, while
                sampling and every perturbed quantity with ``s(t) > 0`` are exact.
            weights: ``(k,)`` nonnegative, normalized here; ``None`` = equal weights.
        """
        means = _as_float(means)
        _check_means(means)
        k, d = means.shape
        covs = _as_float(covs).astype(means.dtype)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape (k, d, d) = ({k}, {d}, {d}), got {covs.shape}")
        check_finite(covs, "covs")
        if is_concrete(covs):
            c = np.asarray(covs, dtype=np.float64)
            scale = max(1.0, float(np.abs(c).max()))
            if not np.allclose(c, np.swapaxes(c, 1, 2), atol=1e-5 * scale):
                raise ValueError("covs must be symmetric")
            if np.linalg.eigvalsh(c).min() < -1e-5 * scale:
                raise ValueError("covs must be positive semi-definite")
        return cls(means=means, weights=_normalize_weights(weights, k, means.dtype), covs=covs)

    # -- shape and moments ------------------------------------------------------
    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def component_covariances(self) -> jax.Array:
        """``(k, d, d)`` covariances ``C_k`` (built from ``stds`` when isotropic)."""
        if self.covs is not None:
            return self.covs
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        return self.stds[:, None, None] ** 2 * eye

    def mean(self) -> jax.Array:
        """Exact mixture mean ``sum_k w_k mu_k``: ``(d,)``."""
        return self.weights @ self.means

    def covariance(self) -> jax.Array:
        """Exact mixture covariance ``sum_k w_k (C_k + mu_k mu_k^T) - mu mu^T``: ``(d, d)``."""
        mu = self.mean()
        centred = self.means - mu
        between = jnp.einsum("k,ki,kj->ij", self.weights, centred, centred)
        within = jnp.einsum("k,kij->ij", self.weights, self.component_covariances())
        return within + between

    # -- sampling, density, score -----------------------------------------------
    def sample(self, key: Array, n: int) -> jax.Array:
        """Draw ``n`` samples: ``(n, d)``.

        Component indices are categorical on ``weights``; a full component uses
        the symmetric square root ``U diag(sqrt(lam)) U^T``, valid for singular
        covariances too.
        """
        return _sample(self, key, check_positive_int(n, "n"))

    def log_prob(self, x: Array) -> jax.Array:
        """Log-density ``log p(x)`` by log-sum-exp over components: ``x (n, d) -> (n,)``."""
        return _log_prob(self, self._check_x(x), 1.0, 0.0)

    def score(self, x: Array) -> jax.Array:
        """Score ``grad_x log p(x) = sum_k r_k(x) (-C_k^{-1}(x - mu_k))``: ``(n, d) -> (n, d)``.

        ``r_k`` are the posterior responsibilities, a softmax of the
        weighted component log-densities (stable in float32).
        """
        return _score(self, self._check_x(x), 1.0, 0.0)

    # -- SDE perturbation ---------------------------------------------------------
    def perturbed(self, sde: SDE, t: float | Array) -> GaussianMixture:
        """Law of ``x_t`` when ``x_0`` follows this mixture, for one scalar time ``t``.

        With ``(m, s) = sde.marginal_coeffs(t)``: means ``m mu_k``,
        covariances ``m^2 C_k + s^2 I``, same weights.
        """
        if np.ndim(t) != 0:
            raise ValueError(
                f"t must be a scalar here (use score_fn for per-sample t), got shape {np.shape(t)}"
            )
        check_time(t, sde.T)
        m, s = sde.marginal_coeffs(jnp.asarray(t, self.means.dtype))
        means = m * self.means
        if self.covs is None:
            return self.replace(means=means, stds=jnp.sqrt(m**2 * self.stds**2 + s**2))
        eye = jnp.eye(self.dim, dtype=self.means.dtype)
        return self.replace(means=means, covs=m**2 * self.covs + s**2 * eye)

    def score_fn(self, sde: SDE) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """Exact score of the perturbed mixture as a score model ``score_fn(x, t)``.

        Args:
            sde: any ``wgdiff.sde`` SDE (VP, VE, Brownian).

        Returns:
            ``score_fn(x (n, d), t scalar or (n,)) -> (n, d)``, the score of
            ``p_t`` at each ``x_i`` (at its own ``t_i`` when ``t`` is a vector).
            It traces under ``jit``/``vmap``.
        """

        def score_fn(x, t):
            x, t = self._check_x_t(sde, x, t)
            return _perturbed_score(self, sde, x, t)

        return score_fn

    def log_prob_fn(self, sde: SDE) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """Exact log-density of the perturbed mixture: ``log_prob_fn(x (n, d), t) -> (n,)``."""

        def log_prob_fn(x, t):
            x, t = self._check_x_t(sde, x, t)
            return _perturbed_log_prob(self, sde, x, t)

        return log_prob_fn

    # -- internals ----------------------------------------------------------------
    def _check_x(self, x):
        x = _as_float(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, d) with d = {self.dim}, got {x.shape}")
        check_finite(x, "x")
        return x

    def _check_x_t(self, sde, x, t):
        x = self._check_x(x)
        t = jnp.asarray(t, x.dtype)
        if t.ndim not in (0, 1) or (t.ndim == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(
                f"t must be a scalar or have shape (n,) = ({x.shape[0]},), got {t.shape}"
            )
        check_time(t, sde.T)
        return x, t

    def _components(self, x, m, s, *, with_score: bool):
        """Per-component log-densities ``(n, k)`` and scores ``(n, k, d)`` of ``p_t``.

        ``m``, ``s`` are scalars or ``(n, 1)``; component ``k`` of ``p_t`` is
        ``N(m mu_k, m^2 C_k + s^2 I)``.
        """
        d = self.dim
        m = jnp.asarray(m, x.dtype)
        s = jnp.asarray(s, x.dtype)
        diff = x[:, None, :] - m[..., None] * self.means  # (n, k, d)
        log_norm = 0.5 * d * math.log(2 * math.pi)
        if self.covs is None:
            var = m**2 * self.stds**2 + s**2  # (k,) or (n, k)
            log_comp = -0.5 * jnp.sum(diff**2, axis=-1) / var - 0.5 * d * jnp.log(var) - log_norm
            comp_score = -diff / var[..., None] if with_score else None
            return log_comp, comp_score
        lam, vecs = jnp.linalg.eigh(self.covs)  # (k, d), (k, d, d)
        var = m[..., None] ** 2 * jnp.maximum(lam, 0.0) + s[..., None] ** 2  # (k, d) or (n, k, d)
        proj = jnp.einsum("nki,kij->nkj", diff, vecs)
        log_comp = (
            -0.5 * jnp.sum(proj**2 / var, axis=-1) - 0.5 * jnp.sum(jnp.log(var), axis=-1) - log_norm
        )
        comp_score = -jnp.einsum("nkj,kij->nki", proj / var, vecs) if with_score else None
        return log_comp, comp_score


def _check_means(means):
    if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
        raise ValueError(f"means must have shape (k, d) with k, d >= 1, got {means.shape}")
    check_finite(means, "means")


def _normalize_weights(weights, k, dtype):
    if weights is None:
        return jnp.full((k,), 1.0 / k, dtype)
    weights = _as_float(weights).astype(dtype)
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape (k,) = ({k},), got {weights.shape}")
    check_finite(weights, "weights")
    if is_concrete(weights):
        w = np.asarray(weights)
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError("weights must be nonnegative with a positive sum")
    return weights / jnp.sum(weights)


# Jitted kernels (validation happens eagerly in the methods above). The mixture
# and the SDE are pytrees, so one compilation serves every mixture of a shape.
@functools.partial(jax.jit, static_argnames="n")
def _sample(gm, key, n):
    key_comp, key_noise = jax.random.split(key)
    comp = jax.random.categorical(key_comp, jnp.log(gm.weights), shape=(n,))
    eps = jax.random.normal(key_noise, (n, gm.dim), gm.means.dtype)
    if gm.covs is None:
        return gm.means[comp] + gm.stds[comp, None] * eps
    lam, vecs = jnp.linalg.eigh(gm.covs)
    root = vecs * jnp.sqrt(jnp.maximum(lam, 0.0))[:, None, :]
    return gm.means[comp] + jnp.einsum("nij,nj->ni", root[comp], eps)


@jax.jit
def _log_prob(gm, x, m, s):
    log_comp, _ = gm._components(x, m, s, with_score=False)
    return jax.nn.logsumexp(log_comp + jnp.log(gm.weights), axis=-1)


@jax.jit
def _score(gm, x, m, s):
    log_comp, comp_score = gm._components(x, m, s, with_score=True)
    resp = jax.nn.softmax(log_comp + jnp.log(gm.weights), axis=-1)
    return jnp.einsum("nk,nkd->nd", resp, comp_score)


def _marginal_coeffs(sde, t, dtype):
    """``m(t), s(t)`` shaped ``(n, 1)`` for per-sample ``t: (n,)``, scalars otherwise."""
    m, s = sde.marginal_coeffs(t)
    m, s = jnp.asarray(m, dtype), jnp.asarray(s, dtype)
    if t.ndim == 1:
        m, s = m[:, None], s[:, None]
    return m, s


@jax.jit
def _perturbed_log_prob(gm, sde, x, t):
    return _log_prob(gm, x, *_marginal_coeffs(sde, t, x.dtype))


@jax.jit
def _perturbed_score(gm, sde, x, t):
    return _score(gm, x, *_marginal_coeffs(sde, t, x.dtype))


__all__ = ["GaussianMixture"]
