"""wgdiff: score-based diffusion models through Wasserstein geometry."""

from wgdiff import sde
from wgdiff.sde import SDE, VESDE, VPSDE, BrownianSDE

__all__ = ["SDE", "VESDE", "VPSDE", "BrownianSDE", "sde"]
