"""The trained WPO-informed kernel model as a generative model at every diffusion time.

``WPOKernelModel`` holds the centres and an eigendecomposition
``Gamma_i = U_i diag(lambda_i) U_i^T`` of the terminal precisions. Under any
affine forward SDE (``x_t = m x_0 + s eps``, see ``wgdiff.wpo.evolution``) the
evolved precision is ``U_i diag(lambda_i / (m^2 + s^2 lambda_i)) U_i^T``: the
eigenvectors do not move. Computing in the eigenbasis makes the score at a
*different time for every sample* cost the same as at a single time, which is
what lets ``score_fn(x, t)`` plug into every sampler of ``wgdiff.samplers``
(scalar or ``(n,)`` times, BrownianSDE / VPSDE / VESDE).

Sampling needs no SDE at all (Zhang Remark 4.3): pick a centre uniformly and
add ``N(0, m^2 Gamma_i^-1 + s^2 I)`` noise.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sde import BrownianSDE
    >>> model = WPOKernelModel.from_precisions(jnp.zeros((1, 2)), 4.0 * jnp.eye(2)[None])
    >>> score_fn = model.score_fn(BrownianSDE(beta=1.0))
    >>> score_fn(jnp.ones((1, 2)), 0.25).tolist()  # precision (1/4 + 1/4)^-1 = 2
    [[-2.0, -2.0]]
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import struct
from jax.tree_util import Partial

from wgdiff._checks import check_finite, check_ndim, check_positive, check_positive_int
from wgdiff._types import Array, ArrayLike, PRNGKey, ScoreFn
from wgdiff.wpo.kernel import (
    DEFAULT_CHUNK_SIZE,
    check_mixture,
    empirical_kernel_score,
    stream_softmax,
)

if TYPE_CHECKING:
    from wgdiff.sde import SDE

_LOG_2PI = math.log(2.0 * math.pi)


@struct.dataclass
class WPOKernelModel:
    """Equal-weight Gaussian mixture ``1/N sum_i N(Z_i, Gamma_i^-1)`` (Zhang eq. 25-26).

    Attributes:
        centers: ``(N, d)`` kernel centres ``Z_i``.
        eigvals: ``(N, d)`` eigenvalues of ``Gamma_i`` (positive).
        eigvecs: ``(N, d, d)`` orthonormal eigenvectors (columns) of ``Gamma_i``.
        chunk_size: centres per streamed chunk (static).
    """

    centers: jax.Array
    eigvals: jax.Array
    eigvecs: jax.Array
    chunk_size: int = struct.field(pytree_node=False, default=DEFAULT_CHUNK_SIZE)

    @classmethod
    def from_precisions(
        cls, centers: ArrayLike, precisions: ArrayLike, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> WPOKernelModel:
        """Build from centres ``(N, d)`` and positive-definite precisions ``(N, d, d)``."""
        centers, precisions = jnp.asarray(centers), jnp.asarray(precisions)
        check_mixture(centers, centers, precisions)
        check_positive_int(chunk_size, "chunk_size")
        eigvals, eigvecs = jnp.linalg.eigh(0.5 * (precisions + jnp.swapaxes(precisions, -1, -2)))
        if not isinstance(eigvals, jax.core.Tracer) and not bool(jnp.all(eigvals > 0)):
            raise ValueError("precisions must be positive definite")
        return cls(centers=centers, eigvals=eigvals, eigvecs=eigvecs, chunk_size=chunk_size)

    @property
    def dim(self) -> int:
        return self.centers.shape[1]

    @property
    def n_centers(self) -> int:
        return self.centers.shape[0]

    def precisions(self, sde: SDE | None = None, t: ArrayLike = 0.0) -> Array:
        """``(N, d, d)`` precisions at scalar time ``t`` of ``sde`` (``t = 0`` if no sde)."""
        m, s = self._coeffs(sde, t, None)
        lam = self.eigvals / (m**2 + s**2 * self.eigvals)
        return jnp.einsum("nij,nj,nkj->nik", self.eigvecs, lam, self.eigvecs)

    def covariances(self, sde: SDE | None = None, t: ArrayLike = 0.0) -> Array:
        """``(N, d, d)`` covariances ``m^2 Gamma^-1 + s^2 I`` at scalar time ``t``."""
        m, s = self._coeffs(sde, t, None)
        var = m**2 / self.eigvals + s**2
        return jnp.einsum("nij,nj,nkj->nik", self.eigvecs, var, self.eigvecs)

    def evolved_centers(self, sde: SDE | None = None, t: ArrayLike = 0.0) -> Array:
        """``(N, d)`` centres ``m(t) Z_i`` at scalar time ``t``."""
        m, _ = self._coeffs(sde, t, None)
        return m * self.centers

    def _coeffs(self, sde, t, n):
        dtype = self.centers.dtype
        t = jnp.asarray(t, dtype)
        if n is None and t.ndim:
            raise ValueError(f"t must be a scalar here, got shape {t.shape}")
        if n is not None:
            check_ndim(t, (0, 1), "t", "() or (n,)")
            if t.ndim == 1 and t.shape[0] != n:
                raise ValueError(f"t must have shape () or (n,) = ({n},), got {t.shape}")
        if sde is None:
            m, s = jnp.ones_like(t), jnp.zeros_like(t)
        else:
            m, s = sde.marginal_coeffs(t)
        if n is not None:
            m, s = jnp.broadcast_to(m, (n,)), jnp.broadcast_to(s, (n,))
        return m.astype(dtype), s.astype(dtype)

    def kernel_stds(self) -> Array:
        """``(N, d)`` standard deviation of each kernel along its eigenvectors, widest first."""
        return 1.0 / jnp.sqrt(self.eigvals)

    def cap_std(self, max_std: float) -> WPOKernelModel:
        """The model with every kernel's std capped at ``max_std`` in every direction.

        Eigenvalues are floored, ``lambda -> max(lambda, 1 / max_std^2)``, with the
        eigenvectors and centres unchanged, so the result is again a normalized
        mixture and every formula (eq. 25-31, Prop. 4.1) applies to it as is.
        This is the fix for the 6-D kernel collapse (``wgdiff.wpo.validation``):
        the ISM objective is nearly flat in the width of a kernel along a
        direction where the data are locally uniform, so it lets kernels grow
        until the jitter floor ``1 / sqrt(jitter)`` and spill mass far off the
        support, which score matching cannot see.

        Args:
            max_std: positive cap; ``inf`` returns an identical model.
        """
        check_positive(max_std, "max_std")
        floor = 1.0 / jnp.asarray(max_std, self.eigvals.dtype) ** 2
        return self.replace(eigvals=jnp.maximum(self.eigvals, floor))

    def responsibilities(self, x: ArrayLike, t: ArrayLike = 0.0, sde: SDE | None = None) -> Array:
        """``(N,)`` mean softmax weight of each kernel over the points ``x (n, d)``.

        ``r_i = 1/n sum_x softmax_i(y(x))``; ``sum_i r_i = 1``, so ``N r_i`` is the
        kernel's share relative to an equal split (1 = its fair share, 0 = starved:
        no ISM gradient reaches it).
        """
        x = self._check_x(x)
        return _responsibilities(self, x, sde, jnp.asarray(t))

    def _chunk_fn(self, x, sde, t):
        n = x.shape[0]
        m, s = self._coeffs(sde, t, n)
        m2, s2 = (m**2)[:, None, None], (s**2)[:, None, None]
        m_col = m[:, None, None]
        log_n = math.log(self.n_centers)
        d = self.dim

        def chunk_fn(chunk):
            z, lam, vecs = chunk
            diff = x[:, None, :] - m_col * z[None, :, :]  # (n, c, d)
            proj = jnp.einsum("ncd,cde->nce", diff, vecs)  # eigen-coordinates
            lam_t = lam[None] / (m2 + s2 * lam[None])  # (n, c, d)
            logits = (
                -0.5 * jnp.sum(lam_t * proj**2, axis=-1)
                + 0.5 * jnp.sum(jnp.log(lam_t), axis=-1)
                - 0.5 * d * _LOG_2PI
                - log_n
            )
            gamma_diff = jnp.einsum("cde,nce->ncd", vecs, lam_t * proj)
            return logits, gamma_diff

        return chunk_fn

    def _check_x(self, x):
        x = jnp.asarray(x)
        check_ndim(x, 2, "x", "(n, d)")
        if x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, d) with d = {self.dim}, got {x.shape}")
        check_finite(x, "x")
        return x

    def _stream(self, x, sde, t):
        return _model_stream(self, self._check_x(x), sde, jnp.asarray(t))

    def log_prob(self, x: ArrayLike, t: ArrayLike = 0.0, sde: SDE | None = None) -> Array:
        """Log-density ``(n,)`` at forward time ``t`` (scalar or ``(n,)``) of ``sde``."""
        lse, _ = self._stream(x, sde, t)
        return lse

    def score(self, x: ArrayLike, t: ArrayLike = 0.0, sde: SDE | None = None) -> Array:
        """Score ``(n, d)`` at forward time ``t`` of ``sde`` (Zhang eq. 26; eq. 29 at t = 0)."""
        _, gamma_diff = self._stream(x, sde, t)
        return -gamma_diff

    def score_fn(self, sde: SDE | None) -> ScoreFn:
        """A ``score_fn(x, t)`` for ``wgdiff.samplers``: the exact score of the evolved mixture.

        Returned as a ``jax.tree_util.Partial`` whose leaves are the model and
        the SDE, so jitted samplers trace them instead of baking them in.
        """
        return Partial(_model_score, self, sde)

    def sample(self, key: PRNGKey, n: int, t: ArrayLike = 0.0, sde: SDE | None = None) -> Array:
        """``(n, d)`` exact draws of the mixture at scalar time ``t`` (no SDE simulated)."""
        n = check_positive_int(n, "n")
        m, s = self._coeffs(sde, t, None)
        key_idx, key_noise = jax.random.split(key)
        idx = jax.random.randint(key_idx, (n,), 0, self.n_centers)
        eps = jax.random.normal(key_noise, (n, self.dim), self.centers.dtype)
        std = jnp.sqrt(m**2 / self.eigvals[idx] + s**2)  # along each eigenvector
        noise = jnp.einsum("nij,nj->ni", self.eigvecs[idx], std * eps)
        return m * self.centers[idx] + noise


# Compiled once per (model shapes, sde type, x and t shapes): repeated eager calls
# (validation sweeps over caps, evaluation loops) reuse the executable.
@jax.jit
def _model_stream(model, x, sde, t):
    chunk_fn = model._chunk_fn(x, sde, t)
    return stream_softmax(
        chunk_fn, (model.centers, model.eigvals, model.eigvecs), x.shape[0], model.chunk_size
    )


@jax.jit
def _responsibilities(model, x, sde, t):
    lse, _ = _model_stream(model, x, sde, t)
    chunk_fn = model._chunk_fn(x, sde, t)
    operands = (model.centers, model.eigvals, model.eigvecs)
    size = min(model.chunk_size, model.n_centers)
    n_chunks = -(-model.n_centers // size)
    pad = n_chunks * size - model.n_centers

    def split(a):
        a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,) + a.shape[1:])], axis=0)
        return a.reshape((n_chunks, size) + a.shape[1:])

    def one(chunk):
        logits, _ = chunk_fn(chunk)
        return jnp.mean(jnp.exp(logits - lse[:, None]), axis=0)

    shares = jax.lax.map(one, jax.tree_util.tree_map(split, operands))
    return shares.reshape(-1)[: model.n_centers]


def _model_score(model, sde, x, t):
    return model.score(x, t, sde)


@struct.dataclass
class EmpiricalKernelScore:
    """Callable pytree ``score_fn(x, t)`` of the diffused empirical measure.

    Built by ``empirical_score_fn``.
    """

    data: jax.Array
    sde: object
    chunk_size: int = struct.field(pytree_node=False, default=DEFAULT_CHUNK_SIZE)

    def __call__(self, x: ArrayLike, t: ArrayLike) -> Array:
        t = jnp.asarray(t, x.dtype)
        m, s = self.sde.marginal_coeffs(t)
        m = jnp.broadcast_to(m, (x.shape[0],)).astype(x.dtype)
        s = jnp.broadcast_to(s, (x.shape[0],)).astype(x.dtype)
        variance = (s / m) ** 2
        score = empirical_kernel_score(
            x / m[:, None], self.data, variance, chunk_size=self.chunk_size
        )
        return score / m[:, None]


def empirical_score_fn(
    data: ArrayLike, sde: SDE, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> EmpiricalKernelScore:
    """``score_fn(x, t)`` of the empirical distribution diffused by ``sde`` (Zhang eq. 23).

    Under ``x_t = m x_0 + s eps`` the diffused empirical measure is
    ``1/M sum_j N(m X_j, s^2 I)``; its score is
    ``empirical_kernel_score(x / m, data, (s / m)^2) / m``. For ``BrownianSDE``
    this is eq. 23 with variance ``beta^2 t``. The reverse SDE driven by it
    memorizes: it returns the training points, blurred only by early stopping.

    Args:
        data: ``(M, d)`` training points.
        sde: a ``wgdiff.sde`` process.
        chunk_size: data points per streamed chunk.

    Returns:
        ``score_fn(x (n, d), t scalar or (n,)) -> (n, d)``; ``t`` must be ``> 0``.
    """
    data = jnp.asarray(data)
    check_ndim(data, 2, "data", "(M, d)")
    check_finite(data, "data")
    check_positive_int(chunk_size, "chunk_size")
    return EmpiricalKernelScore(data=data, sde=sde, chunk_size=chunk_size)


__all__ = ["EmpiricalKernelScore", "WPOKernelModel", "empirical_score_fn"]
