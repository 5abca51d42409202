"""Post-update transforms: ``params -> params`` maps applied after every optimizer update.

The train step (``make_train_step``, ``make_parallel_train_step``) takes
``post_update=``; it runs inside the jitted step, right after
``optax.apply_updates`` and before the EMA, so the stored parameters -- and their
EMA, a convex combination of them -- satisfy the constraint exactly. Compose several
with :func:`chain_post_updates` (applied left to right), as ``optax.chain`` composes
gradient transformations.

- :func:`clip_params` (weight clipping, WGAN-style; Kwon et al. sec. 5 regularize the
  score net's Lipschitz constant with it): every parameter projected onto ``[-c, c]``.
- :func:`spectral_normalize`: every kernel divided by its largest singular value
  (exact SVD norm, not power iteration). As ``post_update`` it projects the kernels
  onto unit spectral norm after each step; as a reparametrization,
  ``lambda p, x, t: model.apply(spectral_normalize(p), x, t)``, the optimizer moves
  the raw kernels and the net always sees normalized ones (Miyato et al. 2018).

Example:
    >>> import jax.numpy as jnp
    >>> clip = clip_params(0.1)
    >>> clip({"w": jnp.array([-1.0, 0.05, 3.0])})["w"].tolist()
    [-0.10000000149011612, 0.05000000074505806, 0.10000000149011612]
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from wgdiff._types import PyTree

PostUpdate = Callable[[PyTree], PyTree]


def clip_params(bound: float) -> PostUpdate:
    """``params -> params`` with every entry clipped to ``[-bound, bound]``.

    Raises:
        ValueError: if ``bound`` is not positive.
    """
    bound = float(bound)
    if not bound > 0:
        raise ValueError(f"bound must be positive, got {bound!r}")

    def clip(params: PyTree) -> PyTree:
        return jax.tree.map(lambda p: jnp.clip(p, -bound, bound), params)

    return clip


def _is_kernel(path) -> bool:
    last = path[-1]
    return getattr(last, "key", getattr(last, "name", None)) == "kernel"


def spectral_normalize(params: PyTree) -> PyTree:
    """Divide every ``kernel`` leaf by its largest singular value.

    A Dense kernel ``(d_in, d_out)`` is used as is; a convolution kernel
    ``(*window, c_in, c_out)`` as the ``(prod(window) c_in, c_out)`` matrix (the usual
    convention; its norm bounds the layer's only up to the window size). Other
    leaves (biases, embeddings) are left unchanged.
    """

    def norm(path, leaf):
        if not _is_kernel(path) or leaf.ndim < 2:
            return leaf
        matrix = leaf.reshape(-1, leaf.shape[-1])
        return leaf / jnp.linalg.norm(matrix, ord=2)

    return jax.tree_util.tree_map_with_path(norm, params)


def chain_post_updates(*transforms: PostUpdate | None) -> PostUpdate | None:
    """One ``params -> params`` applying ``transforms`` left to right (``None`` skipped).

    Returns ``None`` when no transform is left (the step then applies none).
    """
    chosen = [t for t in transforms if t is not None]
    for t in chosen:
        if not callable(t):
            raise TypeError(f"post-update transforms must be callables params -> params, got {t!r}")
    if not chosen:
        return None
    if len(chosen) == 1:
        return chosen[0]

    def chained(params: PyTree) -> PyTree:
        for t in chosen:
            params = t(params)
        return params

    return chained


__all__ = ["PostUpdate", "chain_post_updates", "clip_params", "spectral_normalize"]
