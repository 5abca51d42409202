"""Name -> sampler registry of the toy sets, and name -> exact mixture where one exists.

Example:
    >>> import jax
    >>> get("two_moons")(jax.random.key(0), 8).shape
    (8, 2)
    >>> mixture("four_clusters").num_components
    4
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from wgdiff.data.toy import manifolds, paper_mixtures
from wgdiff.data.toy.gaussian_mixture import GaussianMixture

Sampler = Callable[[jax.Array, int], jax.Array]

_SAMPLERS: dict[str, Sampler] = {
    "one_gaussian": paper_mixtures.sample_one_gaussian,
    "two_moons": manifolds.sample_two_moons,
    "thin_moons": manifolds.sample_thin_moons,
    "four_clusters": paper_mixtures.sample_four_clusters,
    "grid25": paper_mixtures.sample_grid25,
    "question_mark": paper_mixtures.sample_question_mark,
    "swiss_roll_2d": manifolds.sample_swiss_roll_2d,
    "swiss_roll_3d": manifolds.sample_swiss_roll_3d,
    "swiss_roll_6d": manifolds.sample_swiss_roll_6d,
    "circles": manifolds.sample_circles,
    "eight_gaussians": paper_mixtures.sample_eight_gaussians,
    "linear_gaussian_50": paper_mixtures.sample_linear_gaussian,
}

_MIXTURES: dict[str, Callable[[], GaussianMixture]] = {
    "one_gaussian": paper_mixtures.one_gaussian_mixture,
    "four_clusters": paper_mixtures.four_clusters_mixture,
    "grid25": paper_mixtures.grid25_mixture,
    "question_mark": paper_mixtures.question_mark_mixture,
    "eight_gaussians": paper_mixtures.eight_gaussians_mixture,
    "linear_gaussian_50": paper_mixtures.linear_gaussian_mixture,
}

NAMES: tuple[str, ...] = tuple(_SAMPLERS)
MIXTURE_NAMES: tuple[str, ...] = tuple(_MIXTURES)

DIMS: dict[str, int] = {
    "one_gaussian": 2,
    "two_moons": 2,
    "thin_moons": 2,
    "four_clusters": 2,
    "grid25": 2,
    "question_mark": 3,
    "swiss_roll_2d": 2,
    "swiss_roll_3d": 3,
    "swiss_roll_6d": 6,
    "circles": 2,
    "eight_gaussians": 2,
    "linear_gaussian_50": 50,
}


def get(name: str) -> Sampler:
    """The sampler ``sample(key, n) -> (n, DIMS[name])`` of a toy set.

    Raises:
        ValueError: unknown ``name`` (the message lists ``NAMES``).
    """
    if name not in _SAMPLERS:
        raise ValueError(f"unknown toy data set name {name!r}; valid names: {', '.join(NAMES)}")
    return _SAMPLERS[name]


def mixture(name: str) -> GaussianMixture:
    """The exact :class:`GaussianMixture` of a toy set that is one (``MIXTURE_NAMES``).

    ``"one_gaussian"`` gives the unclipped ``N(0, 0.1 I)`` (its sampler clips
    at +-1, see ``one_gaussian_mixture``).

    Raises:
        ValueError: ``name`` is not in ``MIXTURE_NAMES`` (the message lists them).
    """
    if name not in _MIXTURES:
        raise ValueError(
            f"no exact Gaussian mixture for {name!r}; valid names: {', '.join(MIXTURE_NAMES)}"
        )
    return _MIXTURES[name]()


__all__ = ["DIMS", "MIXTURE_NAMES", "NAMES", "get", "mixture"]
