"""Toy distributions of the five papers, exact Gaussian mixtures and a name registry.

- :mod:`wgdiff.data.toy.gaussian_mixture`: :class:`GaussianMixture` (density, score,
  SDE-perturbed mixture and its exact score).
- :mod:`wgdiff.data.toy.paper_mixtures`: the sets that are mixtures (one Gaussian,
  four clusters, 25-grid, question mark, 8 Gaussians, R^50 linear Gaussian).
- :mod:`wgdiff.data.toy.manifolds`: moons, thin moons, circles, swiss rolls.
- :mod:`wgdiff.data.toy.registry`: ``get(name)``, ``mixture(name)``, ``NAMES``.

Every sampler is ``sample_<name>(key, n) -> (n, d)``.
"""

from wgdiff.data.toy.gaussian_mixture import GaussianMixture
from wgdiff.data.toy.manifolds import (
    sample_circles,
    sample_moons,
    sample_swiss_roll_2d,
    sample_swiss_roll_3d,
    sample_swiss_roll_6d,
    sample_thin_moons,
    sample_two_moons,
)
from wgdiff.data.toy.paper_mixtures import (
    default_linear_gaussian_params,
    eight_gaussians_mixture,
    four_clusters_mixture,
    grid25_mixture,
    linear_gaussian_mixture,
    linear_gaussian_moments,
    linear_gaussian_params,
    one_gaussian_mixture,
    question_mark_centres,
    question_mark_mixture,
    sample_eight_gaussians,
    sample_four_clusters,
    sample_grid25,
    sample_linear_gaussian,
    sample_one_gaussian,
    sample_question_mark,
)
from wgdiff.data.toy.registry import DIMS, MIXTURE_NAMES, NAMES, get, mixture

__all__ = [
    "DIMS",
    "GaussianMixture",
    "MIXTURE_NAMES",
    "NAMES",
    "default_linear_gaussian_params",
    "eight_gaussians_mixture",
    "four_clusters_mixture",
    "get",
    "grid25_mixture",
    "linear_gaussian_mixture",
    "linear_gaussian_moments",
    "linear_gaussian_params",
    "mixture",
    "one_gaussian_mixture",
    "question_mark_centres",
    "question_mark_mixture",
    "sample_circles",
    "sample_eight_gaussians",
    "sample_four_clusters",
    "sample_grid25",
    "sample_linear_gaussian",
    "sample_moons",
    "sample_one_gaussian",
    "sample_question_mark",
    "sample_swiss_roll_2d",
    "sample_swiss_roll_3d",
    "sample_swiss_roll_6d",
    "sample_thin_moons",
    "sample_two_moons",
]
