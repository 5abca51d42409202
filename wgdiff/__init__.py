"""wgdiff: score-based diffusion models through Wasserstein geometry, in JAX/Flax.

Subpackages (``import wgdiff as wg``): ``wg.sde`` forward processes, ``wg.nets`` Flax
networks, ``wg.losses`` score-matching objectives, ``wg.samplers`` reverse-time samplers,
``wg.metrics`` distances between point sets, ``wg.train`` the training loop,
``wg.data`` toy and image data, and one module per paper: ``wg.sdflow`` (Weber),
``wg.wpo`` (Zhang et al.), ``wg.bounds`` (Kwon et al.), ``wg.conservativity``
(Vuong et al.), ``wg.samplers.predict_project`` (Ghimire et al.).
"""

from wgdiff import (
    bounds,
    conservativity,
    data,
    evaluation,
    image_features,
    losses,
    metrics,
    nets,
    samplers,
    sde,
    sdflow,
    train,
    wpo,
)
from wgdiff.sde import SDE, VESDE, VPSDE, BrownianSDE

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "BrownianSDE",
    "__version__",
    "bounds",
    "conservativity",
    "data",
    "evaluation",
    "image_features",
    "losses",
    "metrics",
    "nets",
    "samplers",
    "sde",
    "sdflow",
    "train",
    "wpo",
]
