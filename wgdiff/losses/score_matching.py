"""Score matching: denoising (Vincent 2011; Song et al. 2021) and implicit (Hyvarinen 2005).

Conventions: ``x0 (n, *event)``; squared errors are summed over event dimensions
and averaged over the batch.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sde import VPSDE
    >>> sde = VPSDE()
    >>> exact_score_of_standard_normal = lambda x, t: -x   # N(0, I) is stationary for VP
    >>> loss = dsm_loss(jax.random.key(0), sde, exact_score_of_standard_normal,
    ...                 jax.random.normal(jax.random.key(1), (512, 2)), weighting="sigma2")
    >>> bool(loss > 0)   # the DSM loss is the SM loss plus a positive constant
    True
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from wgdiff._checks import check_ndim, check_positive_int
from wgdiff._types import Array, PyTree, ScoreFn
from wgdiff.sde import SDE, broadcast_time

# lambda(t) for each weighting; g^2 is the likelihood weighting (Song et al. 2021b, Kwon et al.).
WEIGHTINGS: dict[str, Callable[[SDE, jax.Array], jax.Array]] = {
    "likelihood": lambda sde, t: sde.diffusion(t) ** 2,
    "sigma2": lambda sde, t: sde.marginal_coeffs(t)[1] ** 2,
    "none": lambda sde, t: jnp.ones_like(t),
}
DIVERGENCES = ("exact", "hutchinson")


def _check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {tuple(WEIGHTINGS)}, got {weighting!r}")


def _sum_event(v):
    return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def dsm_loss(
    key: Array,
    sde: SDE,
    score_fn: ScoreFn,
    x0: Array,
    *,
    weighting: str = "likelihood",
    eps: float = 1e-5,
) -> Array:
    """Denoising score matching, ``E_t E lambda(t) |s(x_t, t) - grad log p(x_t | x0)|^2``.

    ``t ~ U(eps, T)`` per example, ``x_t = m(t) x0 + s(t) z`` and
    ``grad log p(x_t | x0) = -z / s(t)``. With ``weighting="likelihood"``
    (``lambda = g^2``) ``(T - eps) / 2`` times this loss is Kwon et al.'s
    ``J_DSM`` (their eq. 5 with their ``lambda = g^2``).

    Args:
        key: PRNG key.
        sde: forward SDE.
        score_fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        x0: ``(n, *event)`` data batch.
        weighting: ``"likelihood"`` (g^2), ``"sigma2"`` (s(t)^2) or ``"none"``.
        eps: smallest time, avoids the singular ``s(0) = 0``.

    Returns:
        Scalar loss.
    """
    _check_weighting(weighting)
    x0 = jnp.asarray(x0)
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (n, *event), got shape {x0.shape}")
    t_key, z_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (x0.shape[0],), x0.dtype, eps, sde.T)
    z = jax.random.normal(z_key, x0.shape, x0.dtype)
    m, s = sde.marginal_coeffs(t)
    xt = broadcast_time(m, x0) * x0 + broadcast_time(s, x0) * z
    residual = score_fn(xt, t) + z / broadcast_time(s, x0)
    return jnp.mean(WEIGHTINGS[weighting](sde, t) * _sum_event(residual**2))


def dsm_objective(
    sde: SDE,
    apply_fn: Callable[[PyTree, Array, Array], Array],
    *,
    weighting: str = "likelihood",
    eps: float = 1e-5,
) -> Callable[[PyTree, Array, Array], Array]:
    """``loss_fn(params, key, batch)`` for ``wgdiff.train`` from a model's ``apply``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from wgdiff.nets import ScoreMLP
        >>> from wgdiff.sde import VPSDE
        >>> model = ScoreMLP(features=(16,))
        >>> params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
        >>> loss_fn = dsm_objective(VPSDE(), model.apply)
        >>> loss_fn(params, jax.random.key(1), jnp.ones((8, 2))).shape
        ()
    """
    _check_weighting(weighting)

    def loss_fn(params, key, batch):
        return dsm_loss(
            key, sde, lambda x, t: apply_fn(params, x, t), batch, weighting=weighting, eps=eps
        )

    return loss_fn


# Exact divergence: basis directions pushed through the whole batch this many at a time.
_EXACT_CHUNK = 16


def divergence(
    key: jax.Array | None,
    fn: Callable[[Array], Array],
    x: jax.Array,
    *,
    method: str = "exact",
    n_probes: int = 1,
) -> jax.Array:
    """Divergence of a vector field ``fn: (n, *event) -> (n, *event)``, per example ``(n,)``.

    ``"exact"`` sums ``(J e_i)_i`` over the ``d`` basis directions ``e_i``, each a JVP
    of the whole batch (so ``fn`` is always called on the batch it was given: a ``fn``
    that closes over per-example times ``t (n,)`` stays correct); ``"hutchinson"``
    averages ``v^T J v`` over ``n_probes`` Rademacher ``v`` (unbiased, one JVP each).
    ``fn`` must act on examples independently.
    """
    if method not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {method!r}")
    n_probes = check_positive_int(n_probes, "n_probes")
    n = x.shape[0]
    d = x[0].size
    if method == "exact":

        def diagonal_entry(i):
            e = jnp.zeros((n, d), x.dtype).at[:, i].set(1.0).reshape(x.shape)
            _, jv = jax.jvp(fn, (x,), (e,))
            return jv.reshape(n, d)[:, i]

        entries = jax.lax.map(diagonal_entry, jnp.arange(d), batch_size=min(d, _EXACT_CHUNK))
        return jnp.sum(entries, axis=0)
    probes = jax.random.rademacher(key, (n_probes,) + x.shape, dtype=x.dtype)

    def one_probe(v):
        _, jv = jax.jvp(fn, (x,), (v,))
        return jnp.sum((jv * v).reshape(x.shape[0], d), axis=-1)

    return jnp.mean(jax.vmap(one_probe)(probes), axis=0)


_divergence = divergence


def implicit_score_matching_loss(
    key: jax.Array | None,
    score_fn: ScoreFn,
    x: jax.Array,
    t: float | jax.Array,
    *,
    divergence: str = "exact",
    n_probes: int = 1,
) -> jax.Array:
    """Implicit score matching of any score function, ``E |s(x, t)|^2 + 2 div s(x, t)``.

    Hyvarinen (2005) eq. 4 times 2, with the divergence by autodiff (exact or
    Hutchinson). Equals ``E |s - grad log p|^2`` minus a constant independent of ``s``
    (Zhang et al. eq. 30 uses this form). For the WPO kernel model's closed form, with
    no autodiff, see ``wgdiff.wpo.ism_loss``.

    Args:
        key: PRNG key (used by the Hutchinson estimator only).
        score_fn: ``(x, t) -> like x``.
        x: ``(n, *event)`` samples of the density whose score is matched.
        t: scalar or ``(n,)`` per-example times passed to ``score_fn``.
        divergence: ``"exact"`` (``d`` JVPs of the batch) or ``"hutchinson"``.
        n_probes: Hutchinson probes.

    Returns:
        Scalar loss.
    """
    x = jnp.asarray(x)
    check_ndim(x, tuple(range(2, 6)), "x", "(n, *event)")
    t = jnp.asarray(t, x.dtype)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
        raise ValueError(f"t must be a scalar or have shape (n,) = ({x.shape[0]},), got {t.shape}")
    fn = lambda y: score_fn(y, t)
    s = fn(x)
    div = _divergence(key, fn, x, method=divergence, n_probes=n_probes)
    return jnp.mean(_sum_event(s**2) + 2.0 * div)


__all__ = [
    "DIVERGENCES",
    "WEIGHTINGS",
    "divergence",
    "dsm_loss",
    "dsm_objective",
    "implicit_score_matching_loss",
]
