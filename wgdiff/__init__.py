"""wgdiff: score-based diffusion models through Wasserstein geometry, in JAX/Flax.

Subpackages (``import wgdiff as wg``): ``wg.sde`` forward processes, ``wg.nets`` Flax
networks, ``wg.losses`` score-matching objectives, ``wg.samplers`` reverse-time samplers,
``wg.metrics`` distances between point sets, ``wg.train`` the training loop,
``wg.data`` toy and image data, and one module per paper: ``wg.sdflow`` (Weber),
``wg.wpo`` (Zhang et al.), ``wg.bounds`` (Kwon et al.), ``wg.conservativity``
(Vuong et al.), ``wg.samplers.predict_project`` (Ghimire et al.).

Subpackages are imported on first use (PEP 562), so ``import wgdiff`` is cheap and
``wg.metrics`` (OTT), ``wg.train`` checkpoints (orbax), ``wg.samplers`` (diffrax) or
image data (TFDS) load only when a program touches them.
"""

import importlib as _importlib
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("wgdiff")  # single source: pyproject.toml
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_SUBMODULES = (
    "bounds",
    "conservativity",
    "data",
    "evaluation",
    "flows",
    "geometry",
    "image_features",
    "losses",
    "metrics",
    "nets",
    "samplers",
    "sde",
    "sdflow",
    "train",
    "wpo",
)
_FROM_SDE = ("SDE", "VESDE", "VPSDE", "BrownianSDE")

__all__ = ["SDE", "VESDE", "VPSDE", "BrownianSDE", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = _importlib.import_module(f"wgdiff.{name}")
        globals()[name] = module
        return module
    if name in _FROM_SDE:
        value = getattr(_importlib.import_module("wgdiff.sde"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wgdiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
