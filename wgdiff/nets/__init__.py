"""Flax linen networks: score MLPs, conservative potentials, image UNets."""

from wgdiff.nets.mlp import MLP, PotentialMLP, ScalarMLP, ScoreMLP, SinusoidalEmbedding
from wgdiff.nets.parameterization import std_scaled_apply

__all__ = [
    "MLP",
    "PotentialMLP",
    "ScalarMLP",
    "ScoreMLP",
    "SinusoidalEmbedding",
    "std_scaled_apply",
]
