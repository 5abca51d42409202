"""Couplings of a minibatch: which source point is paired with which target point.

A coupling takes a source batch ``x0`` and a target batch ``x1`` (both ``(n, *event)``)
and returns re-paired batches ``(x0', x1')`` whose rows are draws from a coupling
``pi`` of the two empirical measures (Tong et al. 2024, sec. 3.2 and Alg. 1):

- :class:`IndependentCoupling`: rows as given (the product coupling for independent
  draws, I-CFM; the model's own pairs for reflow).
- :class:`ExactOTCoupling`: the optimal assignment for ``|x0_i - x1_j|^2`` (OT-CFM);
  a permutation of ``x1``, so every point is used once.
- :class:`SinkhornCoupling`: for every source row a partner drawn from the entropic OT
  plan.
- :class:`SchrodingerBridgeCoupling`: the entropic plan at ``epsilon = 2 sigma^2``,
  the static Schroedinger bridge of Brownian motion with diffusion ``sigma``
  (Tong et al. sec. 3.3), to pair with
  :class:`~wgdiff.flows.paths.SchrodingerBridgePath`.

The plans come from the OT engine, :mod:`wgdiff.metrics`: the exact assignment is
:func:`wgdiff.metrics.exact_assignment` (certified sparse solver on the host through
``jax.pure_callback``), the entropic plan :func:`wgdiff.metrics.sinkhorn_log_plan`
(log-domain Sinkhorn in the trace). Both run inside ``jax.jit``, so a coupling is part
of a jitted training step; pairings never carry gradients (they are data). Events of
any rank are flattened for the cost ``|x0_i - x1_j|^2``.

Example:
    >>> import jax.numpy as jnp
    >>> x0 = jnp.array([[0.0], [10.0]])
    >>> x1 = jnp.array([[11.0], [1.0]])
    >>> _, paired = ExactOTCoupling().pair(None, x0, x1)
    >>> paired[:, 0].tolist()
    [1.0, 11.0]
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wgdiff._checks import check_positive
from wgdiff._types import Array, PRNGKey
from wgdiff.geometry import squared_distances
from wgdiff.metrics import exact_assignment, sinkhorn_log_plan


def _flat(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


def check_batches(x0: Array, x1: Array) -> None:
    """``x0`` and ``x1`` must be batches of the same shape ``(n, *event)``, ``n >= 1``.

    Raises:
        ValueError: naming ``x0`` or the two shapes.
    """
    if np.ndim(x0) < 2:
        raise ValueError(f"x0 must have shape (n, *event), got shape {np.shape(x0)}")
    if np.shape(x0) != np.shape(x1):
        raise ValueError(
            f"x0 and x1 must have the same shape (n, *event), got {np.shape(x0)} and {np.shape(x1)}"
        )


class Coupling(abc.ABC):
    """Base class: ``pair(key, x0, x1) -> (x0', x1')`` with the shapes of the inputs."""

    @abc.abstractmethod
    def pair(self, key: PRNGKey | None, x0: Array, x1: Array) -> tuple[Array, Array]:
        """Re-paired batches; ``key`` is used only by sampled couplings."""


@struct.dataclass
class IndependentCoupling(Coupling):
    """The rows as given: ``x0[i]`` with ``x1[i]``.

    For independently drawn batches this is the product coupling (Tong et al.'s I-CFM,
    Lipman et al.'s CFM); for batches of pairs ``(x0, flow(x0))`` it is the reflow
    coupling of Liu et al. (2023).
    """

    def pair(self, key: PRNGKey | None, x0: Array, x1: Array) -> tuple[Array, Array]:
        check_batches(x0, x1)
        return x0, x1


@struct.dataclass
class ExactOTCoupling(Coupling):
    """Exact minibatch OT for the squared Euclidean cost (OT-CFM, Tong et al. sec. 3.2).

    ``x1`` permuted by :func:`wgdiff.metrics.exact_assignment`, the permutation ``s``
    minimizing ``sum_i |x0_i - x1_s(i)|^2`` (the exact plan between two uniform
    ``n``-point measures is a permutation, Birkhoff).
    """

    def pair(self, key: PRNGKey | None, x0: Array, x1: Array) -> tuple[Array, Array]:
        check_batches(x0, x1)
        return x0, x1[exact_assignment(_flat(x0), _flat(x1))]


def _draw_from_plan(key: PRNGKey, x0: Array, x1: Array, log_plan: Array) -> tuple[Array, Array]:
    """Pairs drawn from the plan ``P``, stratified over its rows.

    Every source row ``i`` is kept once and its partner ``j ~ P[i, :] / sum_j P[i, j]``
    is drawn from the conditional plan; as the rows of a coupling of uniform measures
    carry mass ``1/n``, the pairs are draws from ``P`` (Tong et al. Alg. 1 draws ``i``
    too, with replacement; stratifying removes that variance). ``O(n m)`` work.
    """
    return x0, x1[jax.random.categorical(key, log_plan, axis=-1)]


def _entropic_pairs(key, x0, x1, epsilon, threshold, max_iterations):
    log_plan = sinkhorn_log_plan(
        _flat(x0), _flat(x1), epsilon=epsilon, threshold=threshold, max_iterations=max_iterations
    )
    return _draw_from_plan(key, x0, x1, log_plan)


@struct.dataclass
class SinkhornCoupling(Coupling):
    """Pairs drawn from the entropic OT plan of the batch (Tong et al.'s Sinkhorn OT-CFM).

    Attributes:
        epsilon: entropic regularization; relative to the batch's mean squared
            distance ``mean_ij |x0_i - x1_j|^2`` when ``relative`` (scale free; 0.01
            is close to the exact plan on 2-D toy data), absolute otherwise.
        relative: see ``epsilon``.
        threshold: Sinkhorn tolerance on the L1 marginal error.
        max_iterations: Sinkhorn iteration cap.
    """

    epsilon: float = 0.01
    relative: bool = struct.field(pytree_node=False, default=True)
    threshold: float = struct.field(pytree_node=False, default=1e-3)
    max_iterations: int = struct.field(pytree_node=False, default=1000)

    def __post_init__(self):
        check_positive(self.epsilon, "epsilon")

    def pair(self, key: PRNGKey, x0: Array, x1: Array) -> tuple[Array, Array]:
        check_batches(x0, x1)
        eps = jnp.asarray(self.epsilon, jnp.result_type(x0, float))
        if self.relative:
            eps = eps * jnp.mean(squared_distances(_flat(x0), _flat(x1)))
        return _entropic_pairs(key, x0, x1, eps, self.threshold, self.max_iterations)


@struct.dataclass
class SchrodingerBridgeCoupling(Coupling):
    """Entropic OT plan at ``epsilon = 2 sigma^2`` (absolute): the static Schroedinger
    bridge between the batches for Brownian motion with diffusion ``sigma``
    (Tong et al. sec. 3.3, SB-CFM). Use with ``SchrodingerBridgePath(sigma)``."""

    sigma: float = 1.0
    threshold: float = struct.field(pytree_node=False, default=1e-3)
    max_iterations: int = struct.field(pytree_node=False, default=1000)

    def __post_init__(self):
        check_positive(self.sigma, "sigma")

    def pair(self, key: PRNGKey, x0: Array, x1: Array) -> tuple[Array, Array]:
        check_batches(x0, x1)
        eps = jnp.asarray(2.0 * self.sigma**2, jnp.result_type(x0, float))
        return _entropic_pairs(key, x0, x1, eps, self.threshold, self.max_iterations)


__all__ = [
    "Coupling",
    "ExactOTCoupling",
    "IndependentCoupling",
    "SchrodingerBridgeCoupling",
    "SinkhornCoupling",
    "check_batches",
]
