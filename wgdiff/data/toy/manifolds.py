"""Toy sets concentrated near curves and surfaces: moons, circles, swiss rolls.

These have no closed-form density; each sampler's docstring gives the exact
generative geometry (and its relation to scikit-learn's generator where there
is one). Samplers take the key first and return ``(n, d)`` arrays.

Example:
    >>> import jax
    >>> sample_two_moons(jax.random.key(0), 6).shape
    (6, 2)
    >>> sample_swiss_roll_6d(jax.random.key(0), 3).shape
    (3, 6)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from wgdiff._checks import check_positive_int
from wgdiff._types import Array


def _check_nonnegative(value, name):
    if not value >= 0:
        raise ValueError(f"{name} must be nonnegative, got {value!r}")


def _two_groups(n):
    """sklearn's split: the first ``n // 2`` points in group 0, the rest in group 1."""
    return jnp.arange(n) >= n // 2


def sample_moons(key: Array, n: int, *, noise: float = 0.1, scale: float = 1.0) -> jax.Array:
    """Two interleaving half circles, scikit-learn's ``make_moons`` geometry: ``(n, 2)``.

    ``n // 2`` points on the upper moon ``(cos a, sin a)`` and the remaining
    ones on the lower moon ``(1 - cos a, 1/2 - sin a)``, ``a ~ U[0, pi]``,
    plus ``N(0, noise^2 I)``, the whole multiplied by ``scale`` (so the noise
    std in the output is ``noise * scale``), rows shuffled.

    Equivalence with ``sklearn.datasets.make_moons(n, noise=noise) * scale``:
    the same formula, except that sklearn puts the angles on
    ``linspace(0, pi, n // 2)`` instead of drawing them uniformly. The two
    agree in law as ``n -> inf`` (the linspace is the quantile grid of
    ``U[0, pi]``), which is what a sampler that takes a key must produce.
    Exact moments (``scale = 1``): mean ``(1/2, 1/4)``, covariance
    ``diag(3/4, 1/2 - 4/pi^2 + (4/pi - 1/2)^2 / 4) + noise^2 I`` with
    off-diagonal ``-(4/pi - 1/2) / 4``.
    """
    n = check_positive_int(n, "n")
    _check_nonnegative(noise, "noise")
    return _moons(key, n, noise, scale)


@functools.partial(jax.jit, static_argnames="n")
def _moons(key, n, noise, scale):
    key_angle, key_noise, key_perm = jax.random.split(key, 3)
    angle = jnp.pi * jax.random.uniform(key_angle, (n,))
    lower = _two_groups(n)
    x = jnp.where(lower, 1.0 - jnp.cos(angle), jnp.cos(angle))
    y = jnp.where(lower, 0.5 - jnp.sin(angle), jnp.sin(angle))
    points = jnp.stack([x, y], axis=-1) + noise * jax.random.normal(key_noise, (n, 2))
    return scale * jax.random.permutation(key_perm, points)


def sample_two_moons(key: Array, n: int) -> jax.Array:
    """Kwon et al. sec 4.1 two moons: ``make_moons(noise=0.1) / 2`` (authors' code): ``(n, 2)``.

    :func:`sample_moons` with ``noise = 0.1``, ``scale = 1/2``: the moons have
    radius 1/2 and the output noise std is 0.05.
    """
    return sample_moons(key, n, noise=0.1, scale=0.5)


def sample_thin_moons(key: Array, n: int) -> jax.Array:
    """Zhang et al. sec 5.1-5.2 "two thin moons": ``(n, 2)``.

    The paper gives neither code nor parameters, only that the moons are thin
    (nearly one-dimensional); our choice: :func:`sample_moons` at sklearn's
    native scale (radius 1) with ``noise = 0.02``, i.e. ``make_moons(noise=0.02)``.
    """
    return sample_moons(key, n, noise=0.02, scale=1.0)


def sample_circles(key: Array, n: int, *, factor: float = 0.5, noise: float = 0.05) -> jax.Array:
    """Two concentric circles, scikit-learn's ``make_circles`` geometry: ``(n, 2)``.

    ``n // 2`` points on the unit circle and the rest on the circle of radius
    ``factor``, angle ``a ~ U[0, 2 pi)`` (sklearn: a linspace without
    endpoint, the same law as ``n -> inf``), plus ``N(0, noise^2 I)``, rows
    shuffled. Defaults ``factor = 0.5``, ``noise = 0.05`` (our choice; sklearn's
    default factor is 0.8). Exact mean 0, covariance
    ``((1 + factor^2) / 4 + noise^2) I`` for even ``n``.
    """
    n = check_positive_int(n, "n")
    _check_nonnegative(noise, "noise")
    if not 0 < factor < 1:
        raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
    return _circles(key, n, factor, noise)


@functools.partial(jax.jit, static_argnames="n")
def _circles(key, n, factor, noise):
    key_angle, key_noise, key_perm = jax.random.split(key, 3)
    angle = 2 * jnp.pi * jax.random.uniform(key_angle, (n,))
    radius = jnp.where(_two_groups(n), factor, 1.0)
    points = radius[:, None] * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    points = points + noise * jax.random.normal(key_noise, (n, 2))
    return jax.random.permutation(key_perm, points)


def _roll_parameter(key, n):
    """sklearn's swiss-roll parameter ``t = 3 pi / 2 (1 + 2 u)``, ``u ~ U[0, 1]``."""
    return 1.5 * jnp.pi * (1.0 + 2.0 * jax.random.uniform(key, (n,)))


def sample_swiss_roll_2d(
    key: Array, n: int, *, noise: float = 0.2, scale: float = 0.2
) -> jax.Array:
    """Planar swiss roll (spiral): ``scale (t cos t, t sin t) + N(0, noise^2 I)``: ``(n, 2)``.

    ``t = 3 pi / 2 (1 + 2 u)``, ``u ~ U[0, 1]`` (sklearn ``make_swiss_roll``'s
    ``t``; these are its ``x`` and ``z`` coordinates). Defaults reproduce the
    common FFJORD set ``make_swiss_roll(noise=1.0)[:, [0, 2]] / 5``: scale
    1/5, output noise std 0.2. Extent about ``[-1.9, 2.6] x [-2.9, 2.9]``.
    """
    n = check_positive_int(n, "n")
    _check_nonnegative(noise, "noise")
    return _swiss_roll_2d(key, n, noise, scale)


@functools.partial(jax.jit, static_argnames="n")
def _swiss_roll_2d(key, n, noise, scale):
    key_t, key_noise = jax.random.split(key)
    t = _roll_parameter(key_t, n)
    points = scale * jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=-1)
    return points + noise * jax.random.normal(key_noise, (n, 2))


def _swiss_roll_3d_clean(key, n, scale):
    key_t, key_h = jax.random.split(key)
    t = _roll_parameter(key_t, n)
    height = 21.0 * (jax.random.uniform(key_h, (n,)) - 0.5)
    return scale * jnp.stack([t * jnp.cos(t), height, t * jnp.sin(t)], axis=-1)


def sample_swiss_roll_3d(
    key: Array, n: int, *, noise: float = 0.1, scale: float = 0.2
) -> jax.Array:
    """Swiss roll surface in R^3 (Weber appendix C.2 interpolation; sklearn geometry): ``(n, 3)``.

    ``scale (t cos t, 21 (v - 1/2), t sin t) + N(0, noise^2 I)`` with
    ``t = 3 pi / 2 (1 + 2 u)``, ``u, v ~ U[0, 1]``: sklearn's
    ``make_swiss_roll`` with its height ``21 v`` centred at 0, then scaled by
    1/5 (extent about ``[-1.9, 2.6] x [-2.1, 2.1] x [-2.9, 2.9]``, comparable
    to :func:`question_mark_mixture`); output noise std 0.1 by default.
    """
    n = check_positive_int(n, "n")
    _check_nonnegative(noise, "noise")
    return _swiss_roll_3d(key, n, noise, scale)


@functools.partial(jax.jit, static_argnames="n")
def _swiss_roll_3d(key, n, noise, scale):
    key_roll, key_noise = jax.random.split(key)
    points = _swiss_roll_3d_clean(key_roll, n, scale)
    return points + noise * jax.random.normal(key_noise, (n, 3))


def sample_swiss_roll_6d(
    key: Array, n: int, *, noise: float = 0.1, scale: float = 0.2
) -> jax.Array:
    """Zhang et al. sec 5.1 / Fig 4: the 3-D swiss roll noisily embedded in R^6: ``(n, 6)``.

    The paper gives no construction beyond "3D swissroll noisily embedded in
    a six-dimensional space"; our choice: the noise-free roll of
    :func:`sample_swiss_roll_3d` (same ``scale``) in coordinates 1-3, zeros in
    coordinates 4-6, plus isotropic ``N(0, noise^2 I_6)`` on all six, i.e.
    ``x = (r, 0, 0, 0) + noise * eps``. Coordinates 4-6 are pure
    ``N(0, 0.01)`` noise, independent of the first three.
    """
    n = check_positive_int(n, "n")
    _check_nonnegative(noise, "noise")
    return _swiss_roll_6d(key, n, noise, scale)


@functools.partial(jax.jit, static_argnames="n")
def _swiss_roll_6d(key, n, noise, scale):
    key_roll, key_noise = jax.random.split(key)
    roll = _swiss_roll_3d_clean(key_roll, n, scale)
    points = jnp.concatenate([roll, jnp.zeros_like(roll)], axis=-1)
    return points + noise * jax.random.normal(key_noise, (n, 6))


__all__ = [
    "sample_circles",
    "sample_moons",
    "sample_swiss_roll_2d",
    "sample_swiss_roll_3d",
    "sample_swiss_roll_6d",
    "sample_thin_moons",
    "sample_two_moons",
]
