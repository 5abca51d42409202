"""Training objectives for score models."""

from wgdiff.losses.score_matching import (
    DIVERGENCES,
    WEIGHTINGS,
    divergence,
    dsm_loss,
    dsm_objective,
    ism_loss,
)

__all__ = ["DIVERGENCES", "WEIGHTINGS", "divergence", "dsm_loss", "dsm_objective", "ism_loss"]
