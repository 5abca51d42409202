"""The conditional flow-matching loss (Lipman et al. 2023 eq. 9; Tong et al. 2024 eq. 11).

For a coupling ``pi`` of source and target, a conditional path ``x_t | (x0, x1)`` and its
conditional velocity ``u_t``,

    L(theta) = E_{t ~ U(t_min, t_max)} E_{(x0, x1) ~ pi} E_z |v_theta(x_t, t) - u_t|^2,

whose minimizer is the marginal velocity ``E[u_t | x_t]`` (Tong et al. Thm. 3.2). The
source is any distribution: a Gaussian, a data set, or the model's own pairs (reflow).

Training batches are pairs ``(n, 2, *event)``: ``batch[:, 0]`` source draws and
``batch[:, 1]`` target draws (:func:`pair_sampler`); the coupling re-pairs them.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.flows import ExactOTCoupling, LinearPath
    >>> x0 = jax.random.normal(jax.random.key(0), (64, 2))
    >>> loss = cfm_loss(jax.random.key(1), lambda x, t: jnp.zeros_like(x), x0, x0 + 3.0,
    ...                 path=LinearPath(), coupling=ExactOTCoupling())
    >>> round(float(loss), 4)   # |u|^2 = |(3, 3)|^2: the optimal pairing is the shift
    18.0
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff._checks import check_finite, check_positive_int
from wgdiff._types import Array, PRNGKey, VelocityFn
from wgdiff.flows.couplings import Coupling, check_batches
from wgdiff.flows.paths import ProbabilityPath


def _check_path_coupling(path, coupling) -> None:
    if not isinstance(path, ProbabilityPath):
        raise TypeError(f"path must be a wgdiff.flows ProbabilityPath, got {type(path).__name__}")
    if not isinstance(coupling, Coupling):
        raise TypeError(f"coupling must be a wgdiff.flows Coupling, got {type(coupling).__name__}")


def conditional_sample(
    key: PRNGKey, x0: Array, x1: Array, *, path: ProbabilityPath, coupling: Coupling
) -> tuple[Array, Array, Array]:
    """Couple the batch, draw ``t`` and ``z``, and return ``(x_t, t, u_t)``.

    Args:
        key: PRNG key (coupling draw, times, noise).
        x0: ``(n, *event)`` source batch.
        x1: ``(n, *event)`` target batch.
        path: the conditional probability path.
        coupling: how the batch is paired.

    Returns:
        ``x_t (n, *event)``, ``t (n,)`` and the regression target ``u_t (n, *event)``.
    """
    k_pair, k_t, k_z = jax.random.split(key, 3)
    x0, x1 = coupling.pair(k_pair, x0, x1)
    t_min, t_max = path.time_range()
    t = jax.random.uniform(k_t, (x0.shape[0],), x0.dtype, t_min, t_max)
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    xt, ut = path.sample(x0, x1, t, z)
    return xt, t, ut


def cfm_loss(
    key: PRNGKey,
    velocity_fn: VelocityFn,
    x0: Array,
    x1: Array,
    *,
    path: ProbabilityPath,
    coupling: Coupling,
) -> Array:
    """Conditional flow matching ``E |v(x_t, t) - u_t(x_t | x0, x1)|^2`` on one batch.

    Args:
        key: PRNG key.
        velocity_fn: ``(x (n, *event), t (n,)) -> (n, *event)``, flow time ``t``
            (``0`` source, ``1`` target).
        x0: ``(n, *event)`` source batch (any distribution).
        x1: ``(n, *event)`` target batch.
        path: conditional path (:mod:`wgdiff.flows.paths`).
        coupling: minibatch coupling (:mod:`wgdiff.flows.couplings`).

    Returns:
        Scalar loss (squared error summed over the event, averaged over the batch).
    """
    check_batches(x0, x1)
    check_finite(x0, "x0")
    check_finite(x1, "x1")
    _check_path_coupling(path, coupling)
    x0, x1 = jnp.asarray(x0), jnp.asarray(x1)
    xt, t, ut = conditional_sample(key, x0, x1, path=path, coupling=coupling)
    residual = velocity_fn(xt, t) - ut
    return jnp.mean(jnp.sum(residual.reshape(x0.shape[0], -1) ** 2, axis=-1))


def cfm_objective(apply_fn: Callable, *, path: ProbabilityPath, coupling: Coupling) -> Callable:
    """``loss_fn(params, key, batch)`` for ``wgdiff.train`` with batches of pairs.

    ``batch`` is ``(n, 2, *event)``: ``batch[:, 0]`` source, ``batch[:, 1]`` target
    (from :func:`pair_sampler`, or ``wgdiff.train.dataset_sampler`` over stacked reflow
    pairs).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from wgdiff.nets import ScoreMLP
        >>> from wgdiff.flows import IndependentCoupling, LinearPath
        >>> model = ScoreMLP(features=(16,))
        >>> params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
        >>> loss_fn = cfm_objective(model.apply, path=LinearPath(),
        ...                         coupling=IndependentCoupling())
        >>> loss_fn(params, jax.random.key(1), jnp.ones((8, 2, 2))).shape
        ()
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable (params, x, t), got {type(apply_fn).__name__}")
    _check_path_coupling(path, coupling)

    def loss_fn(params, key, batch):
        if np.ndim(batch) < 3 or np.shape(batch)[1] != 2:
            raise ValueError(
                f"batch must have shape (n, 2, *event) (source, target), got {np.shape(batch)}"
            )
        return cfm_loss(
            key,
            lambda x, t: apply_fn(params, x, t),
            batch[:, 0],
            batch[:, 1],
            path=path,
            coupling=coupling,
        )

    return loss_fn


def pair_sampler(sample_source: Callable, sample_target: Callable, batch_size: int) -> Callable:
    """``sample_batch(key) -> (batch_size, 2, *event)``: independent source and target draws.

    Args:
        sample_source: ``(key, n) -> (n, *event)``, e.g. ``wgdiff.data.toy.get(name)`` or
            a standard normal.
        sample_target: ``(key, n) -> (n, *event)``.
        batch_size: rows per batch.

    Example:
        >>> import jax
        >>> normal = lambda key, n: jax.random.normal(key, (n, 2))
        >>> pair_sampler(normal, normal, 4)(jax.random.key(0)).shape
        (4, 2, 2)
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    for name, fn in (("sample_source", sample_source), ("sample_target", sample_target)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable (key, n) -> (n, *event)")

    def sample_batch(key):
        k0, k1 = jax.random.split(key)
        return jnp.stack([sample_source(k0, batch_size), sample_target(k1, batch_size)], axis=1)

    return sample_batch


def standard_normal(shape_event: tuple[int, ...]) -> Callable:
    """``(key, n) -> (n, *shape_event)`` standard normal draws (a :func:`pair_sampler` source)."""
    event = tuple(int(s) for s in shape_event)

    def sample(key, n):
        return jax.random.normal(key, (n, *event))

    return sample


__all__ = ["cfm_loss", "cfm_objective", "conditional_sample", "pair_sampler", "standard_normal"]
