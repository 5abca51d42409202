"""Flow matching with optimal-transport couplings, reflow and transport certificates.

- :mod:`~wgdiff.flows.paths`: conditional probability paths (linear / rectified, VP,
  variance-preserving cosine, Schroedinger bridge) and the DSM probability flow in
  flow time.
- :mod:`~wgdiff.flows.couplings`: minibatch couplings (independent, exact OT,
  Sinkhorn-plan sampled, Schroedinger bridge) on the OT engine (:mod:`wgdiff.metrics`).
- :mod:`~wgdiff.flows.loss`: the conditional flow-matching loss and its training
  objective.
- :mod:`~wgdiff.flows.reflow`: rectified-flow reflow pairs.
- :mod:`~wgdiff.flows.sampling`: pushing samples through a velocity (solver engine).
- :mod:`~wgdiff.flows.likelihood`: log-density by the instantaneous change of variables.
- :mod:`~wgdiff.flows.certificates`: kinetic energy, gap ratio ``E / W2^2``,
  straightness.

Flow time ``t`` runs from ``0`` (source) to ``1`` (target).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff import flows
    >>> x0 = jax.random.normal(jax.random.key(0), (128, 2))
    >>> energy, x1 = flows.kinetic_energy(lambda x, t: x, x0, n_steps=64)
    >>> bool(energy > 0)
    True
"""

from wgdiff.flows.certificates import kinetic_energy, path_energy, transport_certificate
from wgdiff.flows.couplings import (
    Coupling,
    ExactOTCoupling,
    IndependentCoupling,
    SchrodingerBridgeCoupling,
    SinkhornCoupling,
)
from wgdiff.flows.likelihood import log_likelihood
from wgdiff.flows.loss import (
    cfm_loss,
    cfm_objective,
    conditional_sample,
    pair_sampler,
    standard_normal,
)
from wgdiff.flows.paths import (
    CosinePath,
    LinearPath,
    ProbabilityPath,
    SchrodingerBridgePath,
    VPPath,
    diffusion_time,
    probability_flow_velocity,
)
from wgdiff.flows.reflow import reflow_pairs
from wgdiff.flows.sampling import FLOW_METHODS, FLOW_SDE, FlowResult, flow_model, integrate_flow

__all__ = [
    "FLOW_METHODS",
    "FLOW_SDE",
    "CosinePath",
    "Coupling",
    "ExactOTCoupling",
    "FlowResult",
    "IndependentCoupling",
    "LinearPath",
    "ProbabilityPath",
    "SchrodingerBridgeCoupling",
    "SchrodingerBridgePath",
    "SinkhornCoupling",
    "VPPath",
    "cfm_loss",
    "cfm_objective",
    "conditional_sample",
    "diffusion_time",
    "flow_model",
    "integrate_flow",
    "kinetic_energy",
    "log_likelihood",
    "pair_sampler",
    "path_energy",
    "probability_flow_velocity",
    "reflow_pairs",
    "standard_normal",
    "transport_certificate",
]
