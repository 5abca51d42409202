"""Data: toy distributions with exact densities and scores, and image pipelines."""

from wgdiff.data import images, toy

__all__ = ["images", "toy"]
