"""Flax linen networks: score MLPs, conservative potentials, image UNets."""

from wgdiff.nets.mlp import MLP, PotentialMLP, ScalarMLP, ScoreMLP, SinusoidalEmbedding

__all__ = ["MLP", "PotentialMLP", "ScalarMLP", "ScoreMLP", "SinusoidalEmbedding"]
