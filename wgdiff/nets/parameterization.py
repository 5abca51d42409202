r"""Model parameterizations: one ``ScoreModel`` and the conversions between outputs.

A network for a diffusion model predicts one of several equivalent quantities.
With the SDE's Gaussian marginal ``x_t = m(t) x0 + s(t) eps`` (``wgdiff.sde``):

- ``"score"``: ``grad log p_t(x) = -eps / s``;
- ``"noise"``: ``eps`` (Ho et al. 2020);
- ``"data"``: ``x0`` (the denoiser ``D``; Karras et al. 2022, Lu et al. 2022b);
- ``"v"``: ``v = m eps - s x0`` (Salimans & Ho 2022, for any ``m, s``);
- ``"flow"``: the probability-flow velocity ``dx/dt = m' x0 + s' eps`` in forward time
  (= ``f - g^2 s_theta / 2``, Song et al. 2021 eq. 13; what flow matching regresses).

All conversions go through ``(x0, eps)``: each kind is a linear map of it, and
``x = m x0 + s eps`` closes the system (for ``"flow"`` the determinant is
``m s' - m' s > 0``). They are written once, in :func:`convert`.

The score of ``p_t`` grows like ``1 / s(t)`` as ``t -> 0``, so a network asked to
output it directly fits it poorly; predicting ``eps`` (``ScoreModel.from_noise``, or
``std_scaled_apply``, which divides by ``s``) keeps the target O(1).

Example:
    >>> import jax.numpy as jnp
    >>> from wgdiff.sde import VPSDE
    >>> model = ScoreModel.from_noise(lambda x, t: jnp.zeros_like(x), VPSDE())
    >>> x = jnp.ones((3, 2))
    >>> bool(jnp.allclose(model.data(x, 0.5), x / VPSDE().marginal_coeffs(0.5)[0]))
    True
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import struct
from jax.tree_util import Partial

from wgdiff._types import Array, ArrayLike
from wgdiff.sde import SDE, broadcast_time

KINDS = ("score", "noise", "data", "v", "flow")


def pytree_callable(fn: Callable, name: str) -> Callable:
    """``functools.partial`` -> ``jax.tree_util.Partial`` so its arguments become traced leaves.

    Raises TypeError naming ``name`` if ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    if isinstance(fn, functools.partial) and not isinstance(fn, Partial):
        return Partial(pytree_callable(fn.func, name), *fn.args, **fn.keywords)
    return fn


def _coeffs(sde: SDE, t: ArrayLike, x: Array) -> tuple[Array, Array]:
    t = jnp.asarray(t, x.dtype)
    m, s = sde.marginal_coeffs(t)
    return broadcast_time(m, x), broadcast_time(s, x)


def _to_data_noise(sde: SDE, kind: str, out: Array, x: Array, t: ArrayLike) -> tuple[Array, Array]:
    """``(x0, eps)`` from a model output of ``kind`` at ``(x, t)``."""
    m, s = _coeffs(sde, t, x)
    if kind == "score":
        eps = -s * out
        return (x - s * eps) / m, eps
    if kind == "noise":
        return (x - s * out) / m, out
    if kind == "data":
        return out, (x - m * out) / s
    if kind == "v":
        norm = m**2 + s**2
        return (m * x - s * out) / norm, (s * x + m * out) / norm
    dm, ds = (broadcast_time(c, x) for c in sde.marginal_coeffs_derivative(jnp.asarray(t, x.dtype)))
    det = m * ds - dm * s
    return (ds * x - s * out) / det, (m * out - dm * x) / det


def convert(sde: SDE, kind: str, target: str, out: Array, x: Array, t: ArrayLike) -> Array:
    """Turn a model output of ``kind`` into ``target`` (both in ``KINDS``).

    Args:
        sde: forward SDE whose marginal ``(m, s)`` defines the relation.
        kind, target: output kinds.
        out: ``(n, *event)`` model output at ``(x, t)``.
        x: ``(n, *event)`` points.
        t: scalar or ``(n,)`` times.

    Returns:
        ``(n, *event)``. The identity when ``kind == target``; score -> flow uses
        ``f - g^2 s / 2`` (Song et al. eq. 13) so that it needs no ``m', s'``.
    """
    if kind not in KINDS or target not in KINDS:
        raise ValueError(f"kind and target must be in {KINDS}, got {kind!r} -> {target!r}")
    if kind == target:
        return out
    if {kind, target} == {"score", "noise"}:
        s = _coeffs(sde, t, x)[1]
        return -out / s if kind == "noise" else -s * out
    if kind == "score" and target == "flow":
        g = broadcast_time(sde.diffusion(jnp.asarray(t, x.dtype)), x)
        return sde.drift(x, t) - 0.5 * g**2 * out
    x0, eps = _to_data_noise(sde, kind, out, x, t)
    m, s = _coeffs(sde, t, x)
    if target == "score":
        return -eps / s
    if target == "noise":
        return eps
    if target == "data":
        return x0
    if target == "v":
        return m * eps - s * x0
    dm, ds = (broadcast_time(c, x) for c in sde.marginal_coeffs_derivative(jnp.asarray(t, x.dtype)))
    return dm * x0 + ds * eps


def _reverse_flow_time(fn: Callable, T: float, x: Array, t: Array) -> Array:
    return -fn(x, T - t)


@struct.dataclass
class ScoreModel:
    """A diffusion model: a function ``fn(x, t)`` predicting ``kind``, and its SDE.

    A pytree: the parameters inside ``fn`` (a ``jax.tree_util.Partial``) and the
    SDE's coefficients are leaves, so the jit-compiled samplers trace them and a
    model with new parameters of the same shapes reuses the compiled program.
    Calling the model returns the score, so a ``ScoreModel`` goes wherever a
    ``score_fn(x, t)`` does.

    Build it with ``from_score``, ``from_noise``, ``from_data`` or ``from_velocity``;
    each takes ``apply_fn`` and optional ``params``: ``apply_fn(params, x, t)`` when
    ``params`` is given, else ``apply_fn(x, t)``.

    Attributes:
        fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        sde: forward SDE (``wgdiff.sde``).
        kind: one of ``KINDS``.
    """

    fn: Callable
    sde: SDE
    kind: str = struct.field(pytree_node=False, default="score")

    @classmethod
    def _build(cls, apply_fn, sde, params, kind) -> ScoreModel:
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a wgdiff.sde.SDE, got {type(sde).__name__}")
        fn = pytree_callable(apply_fn, "apply_fn")
        if params is not None:
            fn = Partial(fn, params)
        return cls(fn=fn, sde=sde, kind=kind)

    @classmethod
    def from_score(cls, apply_fn: Callable, sde: SDE, params: Any = None) -> ScoreModel:
        """The network predicts the score ``grad log p_t``."""
        return cls._build(apply_fn, sde, params, "score")

    @classmethod
    def from_noise(cls, apply_fn: Callable, sde: SDE, params: Any = None) -> ScoreModel:
        """The network predicts ``eps`` in ``x_t = m x0 + s eps`` (score ``-eps / s``)."""
        return cls._build(apply_fn, sde, params, "noise")

    @classmethod
    def from_data(cls, apply_fn: Callable, sde: SDE, params: Any = None) -> ScoreModel:
        """The network predicts ``x0`` (a denoiser; score ``(m x0 - x) / s^2``)."""
        return cls._build(apply_fn, sde, params, "data")

    @classmethod
    def from_velocity(
        cls,
        apply_fn: Callable,
        sde: SDE,
        params: Any = None,
        *,
        kind: str = "flow",
        flow_time: bool = False,
    ) -> ScoreModel:
        """The network predicts a velocity.

        Args:
            apply_fn: the network.
            sde: forward SDE; for a flow-matching model on the straight path use
                ``wgdiff.sde.RectifiedFlowSDE()``.
            params: optional parameters.
            kind: ``"flow"``: the probability-flow velocity ``dx/dt`` in forward time
                (data at 0, noise at ``T``); ``"v"``: ``v = m eps - s x0``.
            flow_time: only for ``kind="flow"``: the network uses flow-matching time
                ``tau = T - t`` (noise at 0, data at ``T``, as in Lipman et al.) and
                returns ``dx/dtau``; the model then uses ``-apply(x, T - t)``.
        """
        if kind not in ("flow", "v"):
            raise ValueError(f"kind must be 'flow' or 'v', got {kind!r}")
        model = cls._build(apply_fn, sde, params, kind)
        if flow_time:
            if kind != "flow":
                raise ValueError("flow_time=True needs kind='flow'")
            model = model.replace(fn=Partial(_reverse_flow_time, model.fn, float(sde.T)))
        return model

    def _out(self, target: str, x: Array, t: ArrayLike) -> Array:
        return self.predict(x, t, (target,))[0]

    def predict(self, x: Array, t: ArrayLike, targets: tuple[str, ...]) -> tuple[Array, ...]:
        """Several kinds from one network evaluation: a tuple, one ``(n, *event)`` per target."""
        t = jnp.asarray(t, x.dtype)
        tt = jnp.broadcast_to(t, (x.shape[0],)) if t.ndim == 0 else t
        out = self.fn(x, tt)
        return tuple(convert(self.sde, self.kind, target, out, x, tt) for target in targets)

    def score(self, x: Array, t: ArrayLike) -> Array:
        """``(n, *event)`` score at ``x``, ``t`` scalar or ``(n,)``."""
        return self._out("score", x, t)

    def noise(self, x: Array, t: ArrayLike) -> Array:
        """``(n, *event)`` noise prediction ``eps``."""
        return self._out("noise", x, t)

    def data(self, x: Array, t: ArrayLike) -> Array:
        """``(n, *event)`` data prediction ``x0``."""
        return self._out("data", x, t)

    def velocity(self, x: Array, t: ArrayLike) -> Array:
        """``(n, *event)`` probability-flow velocity ``dx/dt``."""
        return self._out("flow", x, t)

    def __call__(self, x: Array, t: ArrayLike) -> Array:
        return self.score(x, t)


def as_score_model(model: ScoreModel | Callable, sde: SDE) -> ScoreModel:
    """A ``ScoreModel`` as is (its SDE must be of ``sde``'s type), a callable as a score model."""
    if isinstance(model, ScoreModel):
        if type(model.sde) is not type(sde):
            raise ValueError(
                f"model was built for {type(model.sde).__name__}, sampled with {type(sde).__name__}"
            )
        return model
    if not callable(model):
        raise TypeError(
            f"model must be a ScoreModel or a score_fn (x, t) -> like x, got {type(model).__name__}"
        )
    return ScoreModel.from_score(model, sde)


def _score_apply(apply_fn, sde, kind, params, x, t, *args, **kwargs):
    return convert(sde, kind, "score", apply_fn(params, x, t, *args, **kwargs), x, t)


def score_apply(apply_fn: Callable, sde: SDE, kind: str) -> Callable:
    """``(params, x, t) -> score`` from a net ``apply_fn`` predicting ``kind`` (a ``Partial``).

    The ``apply``-like form the losses take (``dsm_objective``), e.g.
    ``score_apply(EDMPrecond(net, sde).apply, sde, "data")``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return Partial(_score_apply, pytree_callable(apply_fn, "apply_fn"), sde, kind)


def _std_scaled(apply_fn, sde, params, x, t, *args, **kwargs):
    out = apply_fn(params, x, t, *args, **kwargs)
    # out / s(t): the net predicts -eps.
    return convert(sde, "noise", "score", -out, out, t)


def std_scaled_apply(apply_fn: Callable, sde: SDE) -> Callable:
    """``apply(params, x, t) / s(t)``: an ``apply``-like function for the score.

    The net predicts ``-eps`` (``ScoreModel.from_noise`` of the negated net). Use it
    wherever ``model.apply`` would go (``dsm_objective``,
    ``functools.partial(..., params)`` for the samplers). The result is a
    ``jax.tree_util.Partial``, so samplers trace it without retracing.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from wgdiff.sde import VPSDE
        >>> sde = VPSDE()
        >>> apply = std_scaled_apply(lambda p, x, t: p * x, sde)
        >>> bool(apply(2.0, jnp.ones((1, 1)), 0.5)[0, 0] == 2.0 / sde.marginal_coeffs(0.5)[1])
        True
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a wgdiff.sde.SDE, got {type(sde).__name__}")
    return Partial(_std_scaled, apply_fn, sde)


__all__ = [
    "KINDS",
    "ScoreModel",
    "as_score_model",
    "convert",
    "pytree_callable",
    "score_apply",
    "std_scaled_apply",
]
