"""Flax linen networks: score MLPs, conservative potentials, image UNets, WPO precisions,
generators and discriminators, and output parameterizations."""

from wgdiff.nets.cholesky import CholeskyMLP, fill_lower_triangular
from wgdiff.nets.edm import EDMPrecond, edm_coefficients
from wgdiff.nets.embedding import sinusoidal_embedding, time_vector
from wgdiff.nets.generator import DiscriminatorMLP, GeneratorMLP, LinearGenerator
from wgdiff.nets.mlp import MLP, PotentialMLP, ScalarMLP, ScoreMLP, dense_stack
from wgdiff.nets.parameterization import ScoreModel, score_apply, std_scaled_apply
from wgdiff.nets.unet import AttentionBlock, ResBlock, UNet

__all__ = [
    "MLP",
    "AttentionBlock",
    "CholeskyMLP",
    "DiscriminatorMLP",
    "EDMPrecond",
    "GeneratorMLP",
    "LinearGenerator",
    "PotentialMLP",
    "ResBlock",
    "ScalarMLP",
    "ScoreMLP",
    "ScoreModel",
    "UNet",
    "dense_stack",
    "edm_coefficients",
    "fill_lower_triangular",
    "score_apply",
    "sinusoidal_embedding",
    "std_scaled_apply",
    "time_vector",
]
