r"""Projection objective of the Predict-Project sampler (Ghimire et al. sec 8.2, after eq. 34).

Translation to forward time (Song et al.'s convention, used throughout wgdiff).
Ghimire's reverse time is ``tau = T - t`` and their VP SDE is
``dx = -b x dt + sqrt(2 b) dW``; ours is ``dx = -beta/2 x dt + sqrt(beta) dW``,
so ``b = beta / 2``, and for any SDE with diffusion ``g`` (their Theorem 1)
``b(t) = g(t)^2 / 2``. A reverse step of size ``h`` goes from ``t`` to
``t' = t - h`` (their ``tau -> tau + delta-tau``).

The objective. Draw ``x0`` from the data, a step count ``N`` (so ``h = (T - eps)/N``,
the sampler's step), a time ``t ~ U(eps + h, T)``, ``x_t = m(t) x0 + s(t) z``, and

- ``x_pred = x_t - h [f(x_t, t) - g(t)^2 s_theta(x_t, t)]``, one noise-free reverse
  Euler-Maruyama step (Ghimire eq. 29 without the noise),
- ``x_mean = m(t') x0``, the forward-marginal mean at ``t'`` given ``x0`` (eq. 30),

and minimize over the projection net ``T_phi(y, t', h)``

    L = E || x_pred + T_phi(x_pred, t', h) - x_mean ||^2 + c(t) || T_phi(x_pred, t', h) ||^2,
    c(t) = sqrt(b(t)) / 2 = g(t) / (2 sqrt 2)

(the paper's ``sqrt(beta_tau)/2``, from ``h_W = 1/sqrt(beta)`` in eq. 33). Unlike the
paper's ``T_theta(x, tau)``, ``T_phi`` also receives the step ``h``, so that one net
serves every ``N``.

Optimal projection (derivation). For fixed ``(t, h)`` the loss is a conditional
expectation given ``y = x_pred``; pointwise in ``y`` it is
``E[|y + T - x_mean|^2 | y] + c |T|^2``, a strictly convex quadratic in the
vector ``T``, minimized by

    T*(y) = (E[x_mean | x_pred = y] - y) / (1 + c),

with minimum value ``Var(x_mean | y) + c / (1 + c) |E[x_mean | y] - y|^2`` (expand
``|r - T|^2 + c |T|^2`` with ``r = x_mean - y`` and complete the square). So ``T*``
is a shrunk pull towards the denoised mean; ``sqrt(b) T*`` is the paper's
negative Wasserstein gradient (eq. 35-36) in this quadratic case.

Gaussian target, exact score (closed form used by the tests). Let
``x0 ~ N(mu0, diag(v0))``. With ``f = -a(t) x``, ``v_t = m^2 v0 + s^2`` and the exact
score ``-(x - m mu0)/v_t``, the predict step is affine, ``x_pred = A x_t + B`` with

    A = 1 + h (a - g^2 / v_t),    B = h g^2 m mu0 / v_t,

and ``E[x0 | x_t] = mu0 + (m v0 / v_t)(x_t - m mu0)``, ``Var(x0 | x_t) = v0 s^2 / v_t``
(Gaussian conditioning, coordinatewise). For ``A != 0`` conditioning on ``x_pred``
is conditioning on ``x_t = (y - B)/A``, hence

    T*(y) = (m' E[x0 | x_t = (y - B)/A] - y) / (1 + c),
    L*(t, h) = sum_i [ m'^2 v0 s^2 / v_t + c/(1 + c) E_{x_t}(m' E[x0|x_t] - x_pred)^2 ],

with ``m' = m(t')``; the expectation of the square of the affine function
``u = (k - A) x_t + m' mu0 - k m mu0 - B`` (``k = m' m v0 / v_t``) under
``x_t ~ N(m mu0, v_t)`` is ``(k - A)^2 v_t + (m' mu0 - A m mu0 - B)^2``. The
objective's minimum over ``T_phi`` is ``E_{N, t} L*(t, h)``, computed by quadrature
in ``gaussian_projection_minimum``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sde import VPSDE
    >>> sde = VPSDE()
    >>> x0 = jnp.ones((64, 2))
    >>> zero = lambda y, t, h: jnp.zeros_like(y)
    >>> score = lambda x, t: -x
    >>> float(projection_loss(jax.random.key(0), sde, score, zero, x0, n_steps=20)) > 0
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wgdiff._checks import check_finite, check_positive_int
from wgdiff._types import Array, ArrayLike, PRNGKey, ProjectFn, PyTree, ScoreFn
from wgdiff.sde import SDE, broadcast_time

Steps = int | Sequence[int]
"""A step count ``N`` or a sequence of them."""


def _sum_event(v: Array) -> Array:
    return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


def ghimire_beta(sde: SDE, t: ArrayLike) -> Array:
    """Ghimire's ``beta`` (their Theorem 1: ``beta = g^2 / 2``); VP: half of Song's ``beta``."""
    return 0.5 * sde.diffusion(t) ** 2


def projection_weight(sde: SDE, t: ArrayLike) -> Array:
    """``c(t) = sqrt(beta_G(t)) / 2``, the weight of ``||T||^2`` in the objective."""
    return 0.5 * jnp.sqrt(ghimire_beta(sde, t))


def step_size(sde: SDE, n_steps: ArrayLike, eps: float) -> Array:
    """The sampler's uniform step ``h = (T - eps) / N``."""
    return (sde.T - eps) / jnp.asarray(n_steps, dtype=jnp.result_type(float))


def predict_step(sde: SDE, score_fn: ScoreFn, x: Array, t: ArrayLike, h: ArrayLike) -> Array:
    """Noise-free reverse Euler step from ``t`` to ``t - h`` (Ghimire eq. 29 without ``z``).

    ``x_pred = x - h [f(x, t) - g(t)^2 s(x, t)]``; ``t``, ``h``: scalar or ``(n,)``.
    """
    return x - broadcast_time(h, x) * sde.reverse_drift(score_fn, x, t, alpha=1.0)


def _check_n_steps(n_steps: Steps) -> np.ndarray:
    values = np.atleast_1d(np.asarray(n_steps))
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"n_steps must be a positive int or a 1-D sequence of them, got {n_steps!r}"
        )
    for v in values:
        check_positive_int(v.item() if hasattr(v, "item") else v, "n_steps")
    return values.astype(np.int64)


def projection_terms(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    project_fn: ProjectFn,
    x0: ArrayLike,
    *,
    n_steps: Steps,
    eps: float = 1e-3,
    stop_score_gradient: bool = True,
) -> dict[str, Array]:
    """Per-example pieces of the projection objective.

    Args:
        key: PRNG key.
        sde: forward SDE.
        score_fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        project_fn: ``(y (n, *event), t' (n,), h (n,)) -> (n, *event)``, the projection net.
        x0: ``(n, *event)`` data batch.
        n_steps: an int ``N`` or a sequence of them; each example draws one
            uniformly, with step ``h = (T - eps)/N``.
        eps: the sampler's final time.
        stop_score_gradient: when True, the objective does not train the score
            net through ``x_pred`` (the score is trained by score matching only).

    Returns:
        dict of ``(n,)`` arrays: ``"fit"`` = ``|x_pred + T - x_mean|^2``,
        ``"norm"`` = ``|T|^2``, ``"weight"`` = ``c(t)``, ``"t"``, ``"h"``, and
        ``"loss"`` = ``fit + weight * norm``; and the ``(n, *event)`` arrays
        ``"x_pred"``, ``"x_mean"`` and ``"projection"`` = ``T(x_pred, t - h, h)``.
    """
    x0 = jnp.asarray(x0)
    steps = jnp.asarray(_check_n_steps(n_steps))
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape (n, *event), got shape {x0.shape}")
    if not (0.0 < float(eps) < sde.T):
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps!r}")
    check_finite(x0, "x0")
    n = x0.shape[0]
    n_key, t_key, z_key = jax.random.split(key, 3)
    h = step_size(sde, steps[jax.random.randint(n_key, (n,), 0, steps.shape[0])], eps)
    h = h.astype(x0.dtype)
    t = eps + h + jax.random.uniform(t_key, (n,), x0.dtype) * (sde.T - eps - h)
    t_next = t - h
    z = jax.random.normal(z_key, x0.shape, x0.dtype)
    m, s = sde.marginal_coeffs(t)
    x_t = broadcast_time(m, x0) * x0 + broadcast_time(s, x0) * z
    x_pred = predict_step(sde, score_fn, x_t, t, h)
    if stop_score_gradient:
        x_pred = jax.lax.stop_gradient(x_pred)
    x_mean = broadcast_time(sde.marginal_coeffs(t_next)[0], x0) * x0
    proj = project_fn(x_pred, t_next, h)
    fit = _sum_event((x_pred + proj - x_mean) ** 2)
    norm = _sum_event(proj**2)
    weight = projection_weight(sde, t)
    return {
        "fit": fit,
        "norm": norm,
        "weight": weight,
        "t": t,
        "h": h,
        "loss": fit + weight * norm,
        "x_pred": x_pred,
        "x_mean": x_mean,
        "projection": proj,
    }


def projection_loss(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    project_fn: ProjectFn,
    x0: ArrayLike,
    *,
    n_steps: Steps,
    eps: float = 1e-3,
    stop_score_gradient: bool = True,
) -> Array:
    """The sec 8.2 projection objective, averaged over the batch (see the module docstring).

    Returns:
        Scalar ``mean(|x_pred + T - x_mean|^2 + c(t) |T|^2)``.
    """
    terms = projection_terms(
        key,
        sde,
        score_fn,
        project_fn,
        x0,
        n_steps=n_steps,
        eps=eps,
        stop_score_gradient=stop_score_gradient,
    )
    return jnp.mean(terms["loss"])


def joint_objective(
    sde: SDE,
    score_apply: Callable[[PyTree, Array, Array], Array],
    project_apply: Callable[[PyTree, Array, Array, Array], Array],
    *,
    n_steps: Steps,
    eps: float = 1e-3,
    weighting: str = "sigma2",
    projection_coeff: float = 1.0,
) -> Callable[[PyTree, PRNGKey, Array], Array]:
    """``loss_fn(params, key, batch)`` training score net and projection net in one step.

    Both apply functions take the whole parameter tree (e.g. a ``ScoreAndProjection``
    module's, or a dict ``{"score": ..., "project": ...}`` with apply functions that
    pick their part). The loss is
    ``dsm_loss(score) + projection_coeff * projection_loss(project; score)`` with the
    score held fixed inside the projection term, so each net gets the gradient of
    its own objective and one optimizer step updates both (Ghimire app. B: "we
    jointly train the score model and projection model").

    Args:
        sde: forward SDE.
        score_apply: ``(params, x, t) -> score``.
        project_apply: ``(params, y, t', h) -> projection``.
        n_steps: ``N`` or sequence of ``N`` for the projection term.
        eps: sampler's final time.
        weighting: DSM weighting (see ``wgdiff.losses.dsm_loss``).
        projection_coeff: weight of the projection term (does not change either
            net's optimum when their parameters are disjoint).

    Returns:
        ``loss_fn(params, key, batch) -> scalar``: for ``wgdiff.train.make_train_step``,
        or ``objective=lambda sde, apply: joint_objective(sde, apply, ...)`` of
        ``wgdiff.train.fit_score_model``.
    """
    from wgdiff.losses.score_matching import dsm_loss

    _check_n_steps(n_steps)

    def loss_fn(params: PyTree, key: PRNGKey, batch: Array) -> Array:
        score_key, proj_key = jax.random.split(key)
        score_fn = lambda x, t: score_apply(params, x, t)
        project_fn = lambda y, t, h: project_apply(params, y, t, h)
        score_term = dsm_loss(score_key, sde, score_fn, batch, weighting=weighting)
        proj_term = projection_loss(
            proj_key,
            sde,
            score_fn,
            project_fn,
            batch,
            n_steps=n_steps,
            eps=eps,
            stop_score_gradient=True,
        )
        return score_term + projection_coeff * proj_term

    return loss_fn


class ScoreAndProjection(nn.Module):
    """A score net and a projection net in one parameter tree (Ghimire app. B: same-size nets).

    ``__call__(x, t)`` is the score net (so ``wgdiff.train.fit_score_model`` treats the
    pair as a score model); ``project(y, t', h)`` the projection net. Initialize both
    with ``init(key, x, t, method=ScoreAndProjection.init_both)``.

    Attributes:
        score: ``(x, t) -> like x``.
        projection: ``(y, t', h) -> like y`` (e.g. ``StepConditioned(...)``).
    """

    score: nn.Module
    projection: nn.Module

    def __call__(self, x: Array, t: ArrayLike) -> Array:
        return self.score(x, t)

    def project(self, y: Array, t: ArrayLike, h: ArrayLike) -> Array:
        return self.projection(y, t, h)

    def init_both(self, x: Array, t: ArrayLike) -> tuple[Array, Array]:
        return self.score(x, t), self.projection(x, t, jnp.full_like(jnp.asarray(t), 1e-2))

    def project_apply(self, params: PyTree, y: Array, t: ArrayLike, h: ArrayLike) -> Array:
        """``(params, y, t', h) -> T``, the ``project_apply`` of ``joint_objective``."""
        return self.apply(params, y, t, h, method=ScoreAndProjection.project)


class StepConditioned(nn.Module):
    """Turn a score-shaped net ``base(x, t) -> like x`` into a projection net ``T(y, t', h)``.

    The step enters as one extra input feature (flat data) or channel (images),
    ``u = -log10(h) / 3`` (about 1 at ``h = 1e-3``, 0.33 at ``h = 0.1``); the base
    net sees ``[y, u]`` and its extra output feature / channel is dropped. Works
    with ``ScoreMLP`` and ``UNet`` (whose outputs are shaped like their inputs).

    Call: ``y (n, *event)``, ``t`` and ``h`` scalar or ``(n,)`` -> ``(n, *event)``.
    """

    base: nn.Module

    @nn.compact
    def __call__(self, y: Array, t: ArrayLike, h: ArrayLike) -> Array:
        h = jnp.broadcast_to(jnp.asarray(h, y.dtype).reshape(-1), (y.shape[0],))
        u = -jnp.log10(h) / 3.0
        feature = jnp.broadcast_to(broadcast_time(u, y[..., :1]), y.shape[:-1] + (1,))
        out = self.base(jnp.concatenate([y, feature], axis=-1), t)
        return out[..., : y.shape[-1]]


# --------------------------------------------------------------------------- closed forms


def _gaussian_pieces(
    sde: SDE, mean0: np.ndarray, var0: np.ndarray, t: ArrayLike, h: ArrayLike
) -> tuple[np.ndarray, ...]:
    t = np.asarray(t, dtype=np.float64)
    a = np.asarray(sde.drift_coeff(t), np.float64)
    g2 = np.asarray(sde.diffusion(t), np.float64) ** 2
    m, s = (np.asarray(v, np.float64) for v in sde.marginal_coeffs(t))
    m_next = np.asarray(sde.marginal_coeffs(t - h)[0], np.float64)
    v_t = m**2 * var0 + s**2
    A = 1.0 + h * (a - g2 / v_t)
    B = h * g2 * m * mean0 / v_t
    k = m_next * m * var0 / v_t
    c = 0.5 * np.sqrt(0.5 * g2)
    return a, g2, m, s, m_next, v_t, A, B, k, c


def gaussian_optimal_projection(
    sde: SDE, mean0: ArrayLike, var0: ArrayLike, y: ArrayLike, t: ArrayLike, h: ArrayLike
) -> np.ndarray:
    """Closed-form ``T*(y, t - h, h)`` for ``x0 ~ N(mean0, diag(var0))`` with the exact score.

    Args:
        sde: forward SDE with affine drift.
        mean0, var0: ``(d,)`` data mean and variances.
        y: ``(n, d)`` predicted points ``x_pred``.
        t: current time (the step goes to ``t - h``), scalar or ``(n,)``.
        h: step, scalar or ``(n,)``.

    Returns:
        ``(n, d)`` float64, ``(m' E[x0 | x_t = (y - B)/A] - y) / (1 + c)``.
    """
    mean0, var0 = np.asarray(mean0, np.float64), np.asarray(var0, np.float64)
    t = np.asarray(t, np.float64).reshape(-1, 1)
    h = np.asarray(h, np.float64).reshape(-1, 1)
    _, _, m, _, m_next, v_t, A, B, _, c = _gaussian_pieces(sde, mean0, var0, t, h)
    y = np.asarray(y, np.float64)
    x_t = (y - B) / A
    denoised = mean0 + m * var0 / v_t * (x_t - m * mean0)
    return (m_next * denoised - y) / (1.0 + c)


def _gaussian_average(
    sde: SDE,
    mean0: ArrayLike,
    var0: ArrayLike,
    n_steps: Steps,
    eps: float,
    n_quad: int,
    quantity: str,
) -> float:
    mean0, var0 = np.asarray(mean0, np.float64), np.asarray(var0, np.float64)
    values = []
    for n in _check_n_steps(n_steps):
        h = (sde.T - eps) / float(n)
        edges = np.linspace(eps + h, sde.T, n_quad + 1)
        ts = 0.5 * (edges[1:] + edges[:-1])[:, None]
        _, _, m, s, m_next, v_t, A, B, k, c = _gaussian_pieces(sde, mean0, var0, ts, h)
        # E_{x_t} (m' E[x0 | x_t] - x_pred)^2, the squared pull towards the denoised mean.
        gap_sq = (k - A) ** 2 * v_t + (m_next * mean0 - A * m * mean0 - B) ** 2
        if quantity == "loss":
            per_coord = m_next**2 * var0 * s**2 / v_t + c / (1.0 + c) * gap_sq
        else:
            per_coord = gap_sq / (1.0 + c) ** 2
        values.append(np.sum(per_coord, axis=-1).mean())
    return float(np.mean(values))


def gaussian_projection_minimum(
    sde: SDE,
    mean0: ArrayLike,
    var0: ArrayLike,
    *,
    n_steps: Steps,
    eps: float = 1e-3,
    n_quad: int = 2000,
) -> float:
    """``min_T E L`` for ``x0 ~ N(mean0, diag(var0))`` with the exact score (float64).

    The expectation over ``t ~ U(eps + h, T)`` uses the midpoint rule with
    ``n_quad`` nodes per ``N`` (the integrand is smooth in ``t``); ``N`` is
    averaged uniformly over ``n_steps``.
    """
    return _gaussian_average(sde, mean0, var0, n_steps, eps, n_quad, "loss")


def gaussian_projection_norm(
    sde: SDE,
    mean0: ArrayLike,
    var0: ArrayLike,
    *,
    n_steps: Steps,
    eps: float = 1e-3,
    n_quad: int = 2000,
) -> float:
    """``E ||T*||^2 = E |m' E[x0|x_t] - x_pred|^2 / (1 + c)^2`` for the Gaussian target (float64).

    The squared norm of the optimal projection, the quantity ``auto_delta_mu``
    reads off the trained net; same quadrature as ``gaussian_projection_minimum``.
    """
    return _gaussian_average(sde, mean0, var0, n_steps, eps, n_quad, "norm")


__all__ = [
    "ScoreAndProjection",
    "StepConditioned",
    "gaussian_optimal_projection",
    "gaussian_projection_minimum",
    "gaussian_projection_norm",
    "ghimire_beta",
    "joint_objective",
    "predict_step",
    "projection_loss",
    "projection_terms",
    "projection_weight",
    "step_size",
]
