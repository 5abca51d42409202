"""Zhang et al.: empirical kernel score and the WPO-informed kernel model.

- ``kernel``: the normalized Gaussian mixture's density, score (eq. 29) and
  closed-form implicit score matching (eq. 30-31); the empirical kernel score
  (eq. 23) that memorizes.
- ``evolution``: closed-form time evolution (Prop. 4.1) under any affine SDE,
  and coordinate marginals.
- ``model``: ``WPOKernelModel``, the mixture at every diffusion time, with a
  ``score_fn(x, t)`` for the samplers and direct sampling.
- ``lifted``: the lifted-space shallow-network reading (eq. 32-34).
- ``training``: Alg. 1 (ISM at the terminal time) through ``wgdiff.train``.
- ``tuning``: kernel-collapse diagnostics, the std cap chosen on a validation
  split, and the validated KDE / early-stopping variance.
"""

from wgdiff.wpo.evolution import evolve, evolve_affine, evolve_mixture, marginal_mixture
from wgdiff.wpo.kernel import (
    DEFAULT_CHUNK_SIZE,
    empirical_kernel_score,
    empirical_log_density,
    ism_loss,
    ism_terms,
    kernel_score,
    log_density,
    stream_softmax,
)
from wgdiff.wpo.lifted import (
    LiftedWeights,
    lift,
    lifted_log_density,
    lifted_score,
    lifted_weights,
)
from wgdiff.wpo.model import EmpiricalKernelScore, WPOKernelModel, empirical_score_fn
from wgdiff.wpo.training import (
    AUTHORS_SETTINGS,
    BestValidationCheckpoint,
    fit_wpo,
    init_wpo,
    ism_objective,
    model_from_params,
    nonfinite_updates,
    split_centers,
    wpo_optimizer,
)
from wgdiff.wpo.tuning import (
    STARVED_SHARE,
    KernelDiagnostics,
    ValidationChoice,
    kernel_diagnostics,
    tune_kde_variance,
    tune_max_std,
)

__all__ = [
    "AUTHORS_SETTINGS",
    "DEFAULT_CHUNK_SIZE",
    "STARVED_SHARE",
    "BestValidationCheckpoint",
    "EmpiricalKernelScore",
    "KernelDiagnostics",
    "LiftedWeights",
    "ValidationChoice",
    "WPOKernelModel",
    "empirical_kernel_score",
    "empirical_log_density",
    "empirical_score_fn",
    "evolve",
    "evolve_affine",
    "evolve_mixture",
    "fit_wpo",
    "init_wpo",
    "ism_objective",
    "ism_loss",
    "ism_terms",
    "kernel_diagnostics",
    "kernel_score",
    "lift",
    "lifted_log_density",
    "lifted_score",
    "lifted_weights",
    "log_density",
    "marginal_mixture",
    "model_from_params",
    "nonfinite_updates",
    "split_centers",
    "stream_softmax",
    "tune_kde_variance",
    "tune_max_std",
    "wpo_optimizer",
]
