r"""Time grids: objects that turn an SDE into descending sampling times ``T = t_0 > ... > t_N > 0``.

Every solver runs on every grid. The grids differ in where they put their
``N`` steps:

- :class:`UniformGrid`: uniform in ``t`` (the classical choice, Song et al. 2021);
- :class:`QuadraticGrid`: ``t_i = eps + (T - eps) (1 - i/N)^2``, denser near the data
  (DDIM's "quadratic" skip, Song et al. 2020 sec. D.2);
- :class:`LogSNRGrid`: uniform in ``lambda = log(m/s)`` (Lu et al. 2022 sec. 3.3, the
  recommended grid of DPM-Solver(++));
- :class:`KarrasGrid`: ``sigma_i = (sigma_max^{1/rho} + i/N (sigma_min^{1/rho} -
  sigma_max^{1/rho}))^rho`` in ``sigma = s/m = e^{-lambda}`` (Karras et al. 2022 eq. 5);
- :class:`ArrayGrid`: the user's times.

``grid.times(sde)`` returns the ``(N + 1,)`` array and checks it: strictly
descending, inside ``(0, T]`` (``[0, T]`` for SDEs with ``allows_zero_time``, the
flow paths).

Example:
    >>> from wgdiff.sde import VPSDE
    >>> UniformGrid(4, eps=0.2).times(VPSDE()).tolist()
    [1.0, 0.800000011920929, 0.6000000238418579, 0.4000000059604645, 0.20000000298023224]
"""

from __future__ import annotations

import abc

import jax.numpy as jnp
import numpy as np
from flax import struct

from wgdiff._checks import check_positive, check_positive_int
from wgdiff._types import Array, ArrayLike
from wgdiff.sde import SDE


def _check_eps(eps: float, sde: SDE) -> float:
    if float(eps) == 0.0 and sde.allows_zero_time:
        return 0.0
    if not (0.0 < float(eps) < sde.T):
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps!r}")
    return float(eps)


def check_times(times: ArrayLike, sde: SDE, name: str = "grid") -> Array:
    """Validate ``(N + 1,)`` times: 1-D, finite, strictly descending, inside ``(0, T]``."""
    arr = np.asarray(times, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2:
        raise ValueError(f"{name} must give at least two times (N + 1,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} times contain NaN or Inf")
    if not np.all(np.diff(arr) < 0):
        raise ValueError(f"{name} times must strictly descend from T towards 0, got {arr.tolist()}")
    if (
        arr[-1] < 0.0
        or (arr[-1] == 0.0 and not sde.allows_zero_time)
        or arr[0] > sde.T * (1 + 1e-6)
    ):
        raise ValueError(
            f"{name} times must lie in (0, T] = (0, {sde.T}], got [{arr[-1]}, {arr[0]}]"
        )
    return jnp.asarray(times, dtype=jnp.result_type(float))


class TimeGrid(abc.ABC):
    """Base class: ``times(sde) -> (N + 1,)`` descending times, validated."""

    @abc.abstractmethod
    def build(self, sde: SDE) -> ArrayLike:
        """The ``(N + 1,)`` times, unvalidated."""

    def times(self, sde: SDE) -> Array:
        """``(N + 1,)`` strictly descending times in ``(0, T]``; else ValueError naming ``grid``."""
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a wgdiff.sde.SDE, got {type(sde).__name__}")
        return check_times(self.build(sde), sde)


@struct.dataclass
class _StepsGrid(TimeGrid):
    """A grid of ``n_steps`` steps from ``T`` down to ``eps`` (the fields of the grids below)."""

    n_steps: int = struct.field(pytree_node=False)
    eps: float = struct.field(pytree_node=False, default=1e-3)

    def __post_init__(self) -> None:
        check_positive_int(self.n_steps, "n_steps")


@struct.dataclass
class UniformGrid(_StepsGrid):
    """``N + 1`` times uniformly spaced from ``T`` down to ``eps``."""

    def build(self, sde: SDE) -> Array:
        return jnp.linspace(sde.T, _check_eps(self.eps, sde), self.n_steps + 1)


@struct.dataclass
class QuadraticGrid(_StepsGrid):
    """``t_i = eps + (T - eps)(1 - i/N)^2``: quadratically denser near the data."""

    def build(self, sde: SDE) -> Array:
        eps = _check_eps(self.eps, sde)
        u = 1.0 - np.arange(self.n_steps + 1) / self.n_steps
        return jnp.asarray(eps + (sde.T - eps) * u**2)


@struct.dataclass
class LogSNRGrid(_StepsGrid):
    """Uniform in ``lambda = log(m/s)`` from ``lambda(T)`` to ``lambda(eps)`` (Lu et al. 2022)."""

    def build(self, sde: SDE) -> Array:
        eps = _check_eps(self.eps, sde)
        lam = jnp.linspace(sde.log_snr(sde.T), sde.log_snr(eps), self.n_steps + 1)
        t = sde.time_at_log_snr(lam)
        # End points exactly, not through the inverse's rounding.
        return t.at[0].set(sde.T).at[-1].set(eps)


@struct.dataclass
class KarrasGrid(TimeGrid):
    """Karras et al. 2022 eq. 5 in ``sigma = s/m``, mapped back to times.

    ``sigma_max`` defaults to ``sigma(T)`` and ``sigma_min`` to ``sigma(1e-3)``; a
    ``sigma_max`` below ``sigma(T)`` starts the grid below ``T`` (then pass
    ``x_init`` to ``sample``).
    """

    n_steps: int = struct.field(pytree_node=False)
    rho: float = struct.field(pytree_node=False, default=7.0)
    sigma_min: float | None = struct.field(pytree_node=False, default=None)
    sigma_max: float | None = struct.field(pytree_node=False, default=None)

    def __post_init__(self) -> None:
        check_positive_int(self.n_steps, "n_steps")
        check_positive(self.rho, "rho")
        for name in ("sigma_min", "sigma_max"):
            if getattr(self, name) is not None:
                check_positive(getattr(self, name), name)

    def build(self, sde: SDE) -> Array:
        hi = float(jnp.exp(-sde.log_snr(sde.T))) if self.sigma_max is None else self.sigma_max
        lo = float(jnp.exp(-sde.log_snr(1e-3))) if self.sigma_min is None else self.sigma_min
        if not np.isfinite(hi):
            raise ValueError(
                f"sigma_max must be finite; sigma(T) = s/m is infinite for {type(sde).__name__}, "
                "pass sigma_max"
            )
        if not lo < hi:
            raise ValueError(f"sigma_min must be below sigma_max, got {lo} >= {hi}")
        i = np.arange(self.n_steps + 1) / self.n_steps
        inv = 1.0 / self.rho
        sigma = (hi**inv + i * (lo**inv - hi**inv)) ** self.rho
        t = sde.time_at_log_snr(-jnp.log(jnp.asarray(sigma)))
        return t.at[0].set(sde.T) if self.sigma_max is None else t


@struct.dataclass
class ArrayGrid(TimeGrid):
    """The given times ``(N + 1,)``, descending in ``(0, T]``."""

    values: tuple = struct.field(pytree_node=False)

    def __post_init__(self) -> None:
        # A tuple of floats: hashable, so the grid can be a static jit argument.
        object.__setattr__(self, "values", tuple(float(v) for v in np.ravel(self.values)))

    def build(self, sde: SDE) -> Array:
        return jnp.asarray(self.values)


__all__ = [
    "ArrayGrid",
    "KarrasGrid",
    "LogSNRGrid",
    "QuadraticGrid",
    "TimeGrid",
    "UniformGrid",
    "check_times",
]
