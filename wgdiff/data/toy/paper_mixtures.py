"""The toy sets of the papers that are Gaussian mixtures, with exact mixture constructors.

Each ``<name>_mixture()`` returns the exact :class:`GaussianMixture` and each
``sample_<name>(key, n)`` draws ``(n, d)`` samples (float32 unless x64 is on).
The geometry of each set, and which paper and section it comes from, is in
its docstring; where a paper gives no code the choice is ours and is stated
exactly so it can be quoted.

Example:
    >>> import jax
    >>> sample_grid25(jax.random.key(0), 4).shape
    (4, 2)
    >>> question_mark_mixture().means.shape
    (30, 3)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff._checks import check_positive_int
from wgdiff._types import Array
from wgdiff.data.toy.gaussian_mixture import GaussianMixture

# Kwon et al. sec 4.1 (values from the authors' code, see shared/papers/README.md).
ONE_GAUSSIAN_VARIANCE = 0.1
ONE_GAUSSIAN_CLIP = 1.0
FOUR_CLUSTERS_OFFSET = 0.5
FOUR_CLUSTERS_STD = 0.0125

# Weber sec 7.2.1: the usual 5x5 grid of the GAN literature.
GRID25_SPACING = 2.0
GRID25_STD = 0.05

# Weber sec 7.2.2: our reconstruction of the 30-Gaussian question mark.
QUESTION_MARK_STD = 0.1

# FFJORD's "8gaussians" (scale 4, noise 0.5, both divided by sqrt 2).
EIGHT_GAUSSIANS_RADIUS = 2.0 * np.sqrt(2.0)
EIGHT_GAUSSIANS_STD = 0.25 * np.sqrt(2.0)

# Weber appendix C.4.
LINEAR_GAUSSIAN_DIM = 50
LINEAR_GAUSSIAN_LATENT_DIM = 25
LINEAR_GAUSSIAN_B_STD = 0.5  # entries of B ~ N(0, 0.25)
LINEAR_GAUSSIAN_MU_MEAN = 10.0  # entries of mu ~ N(10, 1)
LINEAR_GAUSSIAN_DEFAULT_SEED = 0


# -- one Gaussian (Kwon) ----------------------------------------------------------
def one_gaussian_mixture() -> GaussianMixture:
    """Kwon et al. sec 4.1 "one cluster" ``N(0, 0.1 I)`` in R^2, *without* the clipping.

    One component, mean ``(0, 0)``, covariance ``0.1 I`` (std ``sqrt(0.1)``).
    The sampler :func:`sample_one_gaussian` also clips to ``[-1, 1]^2`` as the
    authors' code does; the clip moves mass ``2 (1 - Phi(sqrt(10))) = 1.6e-3``
    per coordinate, so this mixture is the exact law only up to that.
    """
    return GaussianMixture.isotropic(jnp.zeros((1, 2)), jnp.sqrt(ONE_GAUSSIAN_VARIANCE))


def sample_one_gaussian(key: Array, n: int) -> jax.Array:
    """Kwon et al. sec 4.1: ``N(0, 0.1 I)`` in R^2 clipped coordinatewise to ``[-1, 1]``.

    Returns ``(n, 2)``.
    """
    n = check_positive_int(n, "n")
    x = jnp.sqrt(ONE_GAUSSIAN_VARIANCE) * jax.random.normal(key, (n, 2))
    return jnp.clip(x, -ONE_GAUSSIAN_CLIP, ONE_GAUSSIAN_CLIP)


# -- four clusters (Kwon) ---------------------------------------------------------
def four_clusters_mixture() -> GaussianMixture:
    """Kwon et al. sec 4.1 four clusters in R^2.

    Centres ``(+-0.5, +-0.5)``, isotropic std ``0.0125`` (the authors' code:
    0.1 divided by 8; the paper's text says covariance 0.01 I), equal weights.
    """
    c = FOUR_CLUSTERS_OFFSET
    means = jnp.asarray(np.array([[c, c], [c, -c], [-c, c], [-c, -c]]))
    return GaussianMixture.isotropic(means, FOUR_CLUSTERS_STD)


def sample_four_clusters(key: Array, n: int) -> jax.Array:
    """Samples of :func:`four_clusters_mixture`: ``(n, 2)``."""
    return four_clusters_mixture().sample(key, n)


# -- 25-Gaussian grid (Weber) -----------------------------------------------------
def grid25_mixture() -> GaussianMixture:
    """Weber sec 7.2.1 "25-Gaussian grid" in R^2 (no code published; the usual grid).

    Centres ``(2i, 2j)`` for ``i, j in {-2, -1, 0, 1, 2}`` (i.e. the grid
    ``{-4, -2, 0, 2, 4}^2``, as in ALI / VEEGAN / PacGAN), isotropic std
    ``0.05``, equal weights ``1/25``. Components are ordered row-major in
    ``(i, j)``: index ``5 (i + 2) + (j + 2)``. Mean 0, covariance
    ``(8 + 0.05^2) I``.
    """
    ticks = GRID25_SPACING * np.arange(-2.0, 3.0)
    means = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), axis=-1).reshape(25, 2)
    return GaussianMixture.isotropic(jnp.asarray(means), GRID25_STD)


def sample_grid25(key: Array, n: int) -> jax.Array:
    """Samples of :func:`grid25_mixture`: ``(n, 2)``."""
    return grid25_mixture().sample(key, n)


# -- question mark (Weber) --------------------------------------------------------
def question_mark_centres() -> np.ndarray:
    """The 30 question-mark centres, ``(30, 3)`` float64; see :func:`question_mark_mixture`."""
    angles = np.pi - np.arange(20) * (1.5 * np.pi / 19)
    hook = np.stack([np.cos(angles), 1.0 + np.sin(angles), np.zeros(20)], axis=-1)
    stem = np.stack([np.zeros(4), -0.25 * np.arange(1, 5), np.zeros(4)], axis=-1)
    dot = np.array([0.0, -1.75, 0.0]) + 0.15 * np.concatenate([np.eye(3), -np.eye(3)])
    return np.concatenate([hook, stem, dot])


def question_mark_mixture() -> GaussianMixture:
    """Weber sec 7.2.2 "mystery distribution": 30 Gaussians in R^3 shaped as a question mark.

    No code or coordinates were published; this is our reconstruction. The
    figure lies in the plane ``z = 0`` (upright in ``(x, y)``), equal weights
    ``1/30``, isotropic std ``0.1`` for every component, centres
    (:func:`question_mark_centres`):

    - hook, 20 centres on the circle of radius 1 about ``(0, 1, 0)``:
      ``(cos a_j, 1 + sin a_j, 0)``, ``a_j = pi - j (3 pi / 2) / 19``,
      ``j = 0..19``, running from ``(-1, 1, 0)`` over the top ``(0, 2, 0)``
      and down the right side to ``(0, 0, 0)`` (spacing ~0.248);
    - stem, 4 centres ``(0, -0.25 k, 0)``, ``k = 1..4``;
    - dot, 6 centres at the vertices of an octahedron of radius 0.15 about
      ``(0, -1.75, 0)``: ``(0, -1.75, 0) +- 0.15 e_i``.
    """
    return GaussianMixture.isotropic(jnp.asarray(question_mark_centres()), QUESTION_MARK_STD)


def sample_question_mark(key: Array, n: int) -> jax.Array:
    """Samples of :func:`question_mark_mixture`: ``(n, 3)``."""
    return question_mark_mixture().sample(key, n)


# -- 8 Gaussians ------------------------------------------------------------------
def eight_gaussians_mixture() -> GaussianMixture:
    """Eight Gaussians on a ring in R^2 (the common FFJORD toy set).

    Centres ``2 sqrt(2) (cos(pi k / 4), sin(pi k / 4))``, ``k = 0..7``;
    isotropic std ``sqrt(2) / 4 ~ 0.354``; equal weights. (FFJORD draws
    ``4 c_k + 0.5 eps`` and divides by 1.414; we divide by ``sqrt(2)`` exactly.)
    """
    angles = np.arange(8) * (np.pi / 4)
    means = EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return GaussianMixture.isotropic(jnp.asarray(means), EIGHT_GAUSSIANS_STD)


def sample_eight_gaussians(key: Array, n: int) -> jax.Array:
    """Samples of :func:`eight_gaussians_mixture`: ``(n, 2)``."""
    return eight_gaussians_mixture().sample(key, n)


# -- R^50 linear Gaussian (Weber appendix C.4) --------------------------------------
def linear_gaussian_params(
    key: Array, dim: int = LINEAR_GAUSSIAN_DIM, latent_dim: int = LINEAR_GAUSSIAN_LATENT_DIM
) -> tuple[Array, Array]:
    """Draw Weber's (appendix C.4) ground truth ``B: (dim, latent_dim)``, ``mu: (dim,)``.

    Entries ``B_ij ~ N(0, 0.25)`` (std 0.5) and ``mu_i ~ N(10, 1)``; the
    target is ``x = B z + mu``, ``z ~ N(0, I_latent_dim)``, i.e.
    ``N(mu, B B^T)`` with a rank-``latent_dim`` covariance.
    """
    dim = check_positive_int(dim, "dim")
    latent_dim = check_positive_int(latent_dim, "latent_dim")
    key_b, key_mu = jax.random.split(key)
    B = LINEAR_GAUSSIAN_B_STD * jax.random.normal(key_b, (dim, latent_dim))
    mu = LINEAR_GAUSSIAN_MU_MEAN + jax.random.normal(key_mu, (dim,))
    return B, mu


def default_linear_gaussian_params() -> tuple[Array, Array]:
    """The registry's fixed instance: ``linear_gaussian_params(jax.random.key(0))``."""
    return linear_gaussian_params(jax.random.key(LINEAR_GAUSSIAN_DEFAULT_SEED))


def _check_linear_params(B, mu):
    B, mu = jnp.asarray(B), jnp.asarray(mu)
    if B.ndim != 2 or mu.shape != (B.shape[0],):
        raise ValueError(
            f"B must have shape (d, r) and mu shape (d,), got {B.shape} and {mu.shape}"
        )
    return B, mu


def linear_gaussian_moments(B: Array, mu: Array) -> tuple[Array, Array]:
    """Exact mean ``mu: (d,)`` and covariance ``B B^T: (d, d)`` of ``x = B z + mu``."""
    B, mu = _check_linear_params(B, mu)
    return mu, B @ B.T


def linear_gaussian_mixture(B: Array | None = None, mu: Array | None = None) -> GaussianMixture:
    """``N(mu, B B^T)`` as a one-component full-covariance mixture (defaults: registry instance).

    ``B B^T`` has rank ``r < d`` so the law has no density at ``t = 0``; its
    SDE-perturbed versions (``s(t) > 0``) are exact and non-degenerate.
    """
    if B is None and mu is None:
        B, mu = default_linear_gaussian_params()
    mean, cov = linear_gaussian_moments(B, mu)
    return GaussianMixture.full(mean[None], cov[None])


def sample_linear_gaussian(
    key: Array, n: int, B: Array | None = None, mu: Array | None = None
) -> jax.Array:
    """Weber appendix C.4: ``x = B z + mu``, ``z ~ N(0, I_r)``: ``(n, d)``.

    ``B: (d, r)``, ``mu: (d,)``; both ``None`` = the registry instance
    :func:`default_linear_gaussian_params`.
    """
    n = check_positive_int(n, "n")
    if B is None and mu is None:
        B, mu = default_linear_gaussian_params()
    B, mu = _check_linear_params(B, mu)
    z = jax.random.normal(key, (n, B.shape[1]), B.dtype)
    return z @ B.T + mu


__all__ = [
    "default_linear_gaussian_params",
    "eight_gaussians_mixture",
    "four_clusters_mixture",
    "grid25_mixture",
    "linear_gaussian_mixture",
    "linear_gaussian_moments",
    "linear_gaussian_params",
    "one_gaussian_mixture",
    "question_mark_centres",
    "question_mark_mixture",
    "sample_eight_gaussians",
    "sample_four_clusters",
    "sample_grid25",
    "sample_linear_gaussian",
    "sample_one_gaussian",
    "sample_question_mark",
]
