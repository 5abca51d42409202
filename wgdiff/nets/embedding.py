"""The sinusoidal time embedding shared by every time-conditioned net (MLPs and the UNet).

Transformer-style features (Vaswani et al. 2017; DDPM's time embedding, Ho et al. 2020):
``[sin(w_k tau), cos(w_k tau)]`` with ``tau = time_scale * t`` and frequencies
``w_k = max_period^(-k / (half - 1))``, ``k = 0 .. half - 1``, geometric from 1 down
to ``1 / max_period``; with ``time_scale = 1000`` times in ``[0, 1]`` span the range of
DDPM's integer steps. An odd ``dim`` gets one zero column.

Example:
    >>> import jax.numpy as jnp
    >>> sinusoidal_embedding(jnp.array([0.0, 0.5]), 4).shape
    (2, 4)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from wgdiff._checks import check_positive_int


def time_vector(t: float | jax.Array, x: jax.Array) -> jax.Array:
    """A scalar or ``(n,)`` time as ``(n,)`` in ``x``'s dtype, for ``x (n, ...)``.

    Raises:
        ValueError: if ``t`` is neither a scalar nor of shape ``(n,)``.
    """
    t = jnp.asarray(t, dtype=x.dtype)
    if t.ndim == 0:
        return jnp.full((x.shape[0],), t)
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"t must be a scalar or have shape (n,) = ({x.shape[0]},), got shape {t.shape}"
        )
    return t


def sinusoidal_embedding(
    t: jax.Array, dim: int, *, time_scale: float = 1000.0, max_period: float = 10_000.0
) -> jax.Array:
    """Sinusoidal features of ``time_scale * t``: ``t (n,)`` -> ``(n, dim)``, ``t``'s dtype.

    Args:
        t: ``(n,)`` times.
        dim: number of features (``>= 2``).
        time_scale: multiplies ``t`` (use ``1000 / T`` for a horizon ``T``).
        max_period: the slowest frequency is ``1 / max_period``.
    """
    dim = check_positive_int(dim, "dim")
    if dim < 2:
        raise ValueError(f"dim must be at least 2, got {dim}")
    t = jnp.asarray(t)
    if t.ndim != 1:
        raise ValueError(f"t must have shape (n,), got shape {t.shape}")
    dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=dtype) / max(half - 1, 1))
    args = (time_scale * t.astype(dtype))[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


__all__ = ["sinusoidal_embedding", "time_vector"]
