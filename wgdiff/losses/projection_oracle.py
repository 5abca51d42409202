r"""The exact optimum of Ghimire's projection objective for Gaussian mixtures, and eq. 35.

Two projections that judge Predict-Project (Ghimire et al. Alg. 1) free of training
error, for data whose perturbed score and density are known in closed form
(``wgdiff.data.toy.GaussianMixture``):

- ``OracleProjection``: the exact minimizer ``T*`` of the sec 8.2 objective (what a
  projection net of unlimited capacity, trained to convergence, learns);
- ``Eq35Projection``: the *literal* eq. 35 push, ``-grad_W2 J = 2 (E[x_mean | y] - y)``,
  which the trained ``T*`` only delivers shrunk by the objective's penalty.

Notation (forward time, as in ``wgdiff.losses.projection``): a reverse step of
size ``h`` goes from ``t`` to ``t' = t - h``; ``x_t = m x0 + s z`` with
``(m, s) = marginal_coeffs(t)``, ``m' = m(t')``; the predict step with the exact
score ``S = grad log p_t`` is

    y = x_pred = F(x_t),   F(x) = x - h [f(x, t) - g^2 S(x, t)] = (1 + h a) x + h g^2 S(x, t)

(``f = -a x``); the target is ``x_mean = m' x0``; ``b = g^2 / 2`` is Ghimire's
``beta`` and ``c = sqrt(b) / 2`` the weight of ``|T|^2`` in the objective
``L(T) = E |y + T(y) - x_mean|^2 + c |T(y)|^2``.

Derivation of ``T*``.

1. Pointwise minimization (``wgdiff.losses.projection``): ``L`` is, given ``y``,
   the strictly convex quadratic ``E[|y + T - x_mean|^2 | y] + c |T|^2``, so
   ``T*(y) = (E[x_mean | x_pred = y] - y) / (1 + c)``.
2. Tweedie's formula, exact for any data law under a Gaussian perturbation:
   ``E[x0 | x_t = x] = (x + s^2 S(x, t)) / m``, hence
   ``E[x_mean | x_t = x] = (m'/m) (x + s^2 S(x, t)) =: mu(x)``.
3. ``x_pred`` is a deterministic function of ``x_t``, so
   ``E[x_mean | x_pred = y] = E[mu(x_t) | F(x_t) = y]``. When ``F`` is a bijection this
   is ``mu(F^{-1}(y))``, and

       T*(y) = (mu(F^{-1}(y)) - y) / (1 + c).

   (When ``F`` folds, the law of ``x_t`` given ``F(x_t) = y`` spreads over all the
   preimages with weights ``p_t(x_i) / |det DF(x_i)|``; that case is not covered.)
4. When is ``F`` a bijection? ``F = grad phi`` with
   ``phi(x) = (1 + h a) |x|^2 / 2 + h g^2 log p_t(x)``, so ``DF`` is symmetric,
   ``DF = (1 + h a) I + h g^2 grad^2 log p_t``. For a mixture with perturbed
   component covariances ``V_k = m^2 C_k + s^2 I`` and responsibilities ``r_k``,
   ``grad^2 log p_t = -sum_k r_k V_k^{-1} + Cov_r(S_k) >= -max_k V_k^{-1}``, hence
   ``DF >= A I`` with ``A = 1 + h a - h g^2 / min_k lambda_min(V_k)``. If ``A > 0``,
   ``phi`` is strongly convex and ``F`` a bijection of ``R^d`` (``bijective``). For
   the default VP SDE (``beta`` from 0.1 to 20) on a uniform grid the first step
   has ``A ~ 1 - h beta_max / 2``: positive for ``N >= 10`` steps (``1e-3`` at
   ``N = 10``), while at ``N = 5`` (``h = 0.2``) ``A ~ -1``: the predict step reflects
   ``x`` and, where ``Cov_r`` is large, folds (on the eight-Gaussian ring we counted
   up to nine preimages per point at ``t = 0.4``).
5. ``F^{-1}(y)`` by damped Newton from the best (by residual) of up to three starts,
   inverses of ``F`` with the score of one Gaussian alone (affine, so exact when
   ``x_t``'s posterior sits on it): the two components whose affine preimage weight
   (step 3 with ``F_k`` for ``F``) is largest, and the moment-matched Gaussian. The
   Jacobian is the closed form of step 4, ``grad^2 log p_t = sum_k r_k (S_k S_k^T -
   V_k^{-1}) - S S^T`` (one pass over the components gives ``F`` and ``DF``). A point
   takes the full Newton step where that does not raise its residual; elsewhere the
   best of the steps scaled by 1/2, 1/4 or none (by residual; those are only computed
   when some point needs them). The iteration stops early once every residual is at
   round-off, ``|F(x) - y| <= 8 eps_mach (1 + |y|)``; a point there stays.
   ``preimage`` returns the residual.

The literal eq. 35. The functional of eq. 34 is ``J(nu) = E_{(y, x_mean)}|y - x_mean|^2``
over the coupling of ``mu_pred`` and ``mu_mean``; pushing ``mu_pred`` by
``I + eps T`` changes it by
``d/d eps J((I + eps T)#mu_pred)|_0 = 2 E[(y - x_mean) . T(y)] = <2 (y - E[x_mean | y]), T>``,
so ``grad_W2 J(mu_pred)(y) = 2 (y - E[x_mean | y])`` and eq. 35 moves
``x_proj = x_pred + 2 (E[x_mean | y] - y) delta_mu h``. Alg. 1 line 5 moves
``x_pred + sqrt(b) T delta_mu h``; with the trained ``T* = (E - y)/(1 + c)`` that is
``2 c / (1 + c) (E - y) delta_mu h``, the fraction ``c / (1 + c) = sqrt(b) / (2 + sqrt(b))``
of eq. 35 (0.1 at ``b = 0.05``, 0.61 at ``b = 10``). The paper's "after training,
``sqrt(b) T* = -grad_W2 J``" holds for the linearized problem of eq. 32
(``T* = -h_W grad J`` with ``h_W = 1/sqrt(b)``), not for eq. 33-34, whose ``J`` is
quadratic in ``T``. ``Eq35Projection(base)`` rescales any projection ``T`` (the oracle
or a trained net) by ``(1 + c)/c = 1 + 2/sqrt(b)``, so that Alg. 1 line 5 applies the
literal eq. 35 push ``2 (1 + c) T`` (``= 2 (E - y)`` at ``T = T*``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.data.toy import mixture
    >>> from wgdiff.sde import VPSDE
    >>> oracle = OracleProjection(mixture("eight_gaussians"), VPSDE())
    >>> y = jnp.zeros((4, 2))
    >>> oracle(y, jnp.full(4, 0.45), jnp.full(4, 0.05)).shape
    (4, 2)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wgdiff._types import Array, ArrayLike, PRNGKey, ScoreFn
from wgdiff.data.toy import GaussianMixture
from wgdiff.losses.projection import (
    ProjectFn,
    Steps,
    _check_n_steps,
    ghimire_beta,
    predict_step,
    projection_terms,
    projection_weight,
)
from wgdiff.sde import SDE, broadcast_time

#: Newton step scales: the full step, else the best of the others or none (by residual).
_DAMPING = (1.0, 0.5, 0.25)
#: Smallest |eigenvalue| of a component's affine predict map used to build a start.
_MIN_PIVOT = 1e-3
#: Component starts tried per point (by their log-weight), besides the moment-matched one.
_CANDIDATES = 2
#: Newton stops at a residual of this many machine epsilons times ``1 + |y|``.
_TOL_EPS = 8


class Preimage(NamedTuple):
    """``x = F^{-1}(y)`` for a batch: ``x (n, d)`` and ``residual (n,) = |F(x) - y|``."""

    x: Array
    residual: Array


def _as_time(t, n, dtype):
    return jnp.broadcast_to(jnp.asarray(t, dtype).reshape(-1), (n,))


def _starts(gm: GaussianMixture, sde: SDE, y, t, h):
    """Starts for ``F^{-1}(y)``: the exact inverse of ``F`` for each component alone and
    for the moment-matched Gaussian (``F`` is affine when ``p_t`` is one Gaussian).

    Returns:
        ``(n, K + 1, d)`` starts and ``(n, K)`` log-weights of the component starts,
        ``log w_k N(x_k; m mu_k, V_k) - log |det M_k|``: the preimage weight of step 3
        if ``F`` were the affine ``F_k`` (``M_k = DF_k``).
    """
    covs = jnp.concatenate([gm.component_covariances(), gm.covariance()[None]], axis=0)
    means = jnp.concatenate([gm.means, gm.mean()[None]], axis=0)  # (S, d)
    lam, vecs = jnp.linalg.eigh(covs.astype(y.dtype))  # (S, d), (S, d, d)
    a = sde.drift_coeff(t)[:, None, None]
    g2 = (sde.diffusion(t) ** 2)[:, None, None]
    m, s = (v[:, None, None] for v in sde.marginal_coeffs(t))
    hh = h[:, None, None]
    var = m**2 * jnp.maximum(lam, 0.0)[None] + s**2  # (n, S, d) eigenvalues of V_k
    pivot = 1.0 + hh * a - hh * g2 / var  # eigenvalues of the affine map M_k
    pivot = jnp.where(pivot >= 0, jnp.maximum(pivot, _MIN_PIVOT), jnp.minimum(pivot, -_MIN_PIVOT))
    # F_k(x) = M_k x + h g^2 V_k^{-1} m mu_k, so x = M_k^{-1} (y - h g^2 V_k^{-1} m mu_k).
    mu_rot = jnp.einsum("sji,sj->si", vecs, means)[None]  # (1, S, d) in eigen-coordinates
    y_rot = jnp.einsum("sji,nj->nsi", vecs, y)
    x_rot = (y_rot - hh * g2 * m * mu_rot / var) / pivot
    k = gm.means.shape[0]
    log_density = -0.5 * jnp.sum((x_rot - m * mu_rot) ** 2 / var + jnp.log(var), axis=-1)
    log_weight = (
        jnp.log(gm.weights) + (log_density - jnp.sum(jnp.log(jnp.abs(pivot)), axis=-1))[:, :k]
    )
    return jnp.einsum("sij,nsj->nsi", vecs, x_rot), log_weight


@struct.dataclass
class OracleProjection:
    """Exact ``T*(y, t', h)`` of the sec 8.2 objective for mixture data with its exact score.

    Call: ``y (n, d)`` predicted points, ``t'`` and ``h`` scalar or ``(n,)`` (the step
    goes from ``t = t' + h`` to ``t'``, the ``project_fn`` signature of
    ``wgdiff.samplers.predict_project``) -> ``(n, d)``,
    ``(mu(F^{-1}(y)) - y) / (1 + c(t))`` (module docstring, steps 1-5); exact where
    ``bijective(t, h)``.

    Attributes:
        mixture: the data law.
        sde: the forward SDE.
        newton_steps: damped Newton iterations per start.
    """

    mixture: GaussianMixture
    sde: SDE
    newton_steps: int = struct.field(pytree_node=False, default=6)

    def __call__(self, y: ArrayLike, t_next: ArrayLike, h: ArrayLike) -> Array:
        return _oracle_call(self, jnp.asarray(y), t_next, h)

    def predict_map(self, x: ArrayLike, t: ArrayLike, h: ArrayLike) -> Array:
        """``F(x) = x - h [f(x, t) - g^2 S(x, t)]``: ``x (n, d)``, ``t, h (n,)`` -> ``(n, d)``."""
        return predict_step(self.sde, self.mixture.score_fn(self.sde), x, t, h)

    def denoised_target(self, x: ArrayLike, t: ArrayLike, h: ArrayLike) -> Array:
        """``mu(x) = E[x_mean | x_t = x] = (m(t - h) / m(t)) (x + s(t)^2 S(x, t))`` (Tweedie)."""
        m, s = self.sde.marginal_coeffs(t)
        m_next = self.sde.marginal_coeffs(t - h)[0]
        score = self.mixture.score_fn(self.sde)(x, t)
        return (m_next / m)[:, None] * (x + (s**2)[:, None] * score)

    def bijective(self, t: ArrayLike, h: ArrayLike) -> Array:
        """True where ``A = 1 + h a - h g^2 / min_k lambda_min(V_k) > 0`` (step 4).

        Then ``F`` is a bijection and ``__call__`` is exact; elsewhere ``F`` may fold
        and the oracle (one preimage) is not the optimum. ``t``, ``h``: scalars or arrays.
        """
        t, h = jnp.asarray(t), jnp.asarray(h)
        lam = jnp.linalg.eigvalsh(self.mixture.component_covariances()).min()
        m, s = self.sde.marginal_coeffs(t)
        g2 = self.sde.diffusion(t) ** 2
        return 1.0 + h * self.sde.drift_coeff(t) - h * g2 / (m**2 * lam + s**2) > 0

    def preimage(self, y: ArrayLike, t: ArrayLike, h: ArrayLike) -> Preimage:
        """``x = F^{-1}(y)`` by damped Newton (step 5), with its residual ``|F(x) - y|``.

        Args:
            y: ``(n, d)``.
            t: current time, ``(n,)`` or scalar.
            h: step, ``(n,)`` or scalar.
        """
        return _preimage(self, jnp.asarray(y), t, h)

    def predict_and_jacobian(self, x: ArrayLike, t: ArrayLike, h: ArrayLike) -> tuple[Array, Array]:
        """``F(x)`` and ``DF(x) = (1 + h a) I + h g^2 grad^2 log p_t(x)`` in closed form.

        ``grad^2 log p_t = sum_k r_k (S_k S_k^T - V_k^{-1}) - S S^T`` with the
        responsibilities ``r_k``, component scores ``S_k`` and ``S = sum_k r_k S_k``
        (module docstring, step 4).

        Args:
            x: ``(n, d)``; ``t``, ``h``: ``(n,)``.

        Returns:
            ``F (n, d)`` and ``DF (n, d, d)``.
        """
        gm, sde = self.mixture, self.sde
        x = jnp.asarray(x)
        m, s = sde.marginal_coeffs(t)
        log_comp, comp_score = gm._components(x, m[:, None], s[:, None], with_score=True)
        resp = jax.nn.softmax(log_comp + jnp.log(gm.weights), axis=-1)  # (n, K)
        score = jnp.einsum("nk,nkd->nd", resp, comp_score)
        lam, vecs = jnp.linalg.eigh(gm.component_covariances().astype(x.dtype))  # (K, d)
        m3, s3 = m[:, None, None], s[:, None, None]
        inv_var = 1.0 / (m3**2 * jnp.maximum(lam, 0.0)[None] + s3**2)  # (n, K, d)
        precision = jnp.einsum("nk,kij,nkj,klj->nil", resp, vecs, inv_var, vecs)
        second = jnp.einsum("nk,nki,nkj->nij", resp, comp_score, comp_score)
        hessian = second - precision - score[:, :, None] * score[:, None, :]
        g2 = sde.diffusion(t) ** 2
        f = x - h[:, None] * (sde.drift(x, t) - g2[:, None] * score)
        eye = jnp.eye(x.shape[1], dtype=x.dtype)
        identity_part = (1.0 + h * sde.drift_coeff(t))[:, None, None] * eye
        jac = identity_part + (h * g2)[:, None, None] * hessian
        return f, jac

    def _newton_preimage(self, y, t, h) -> Preimage:
        y = jnp.asarray(y)
        n, d = y.shape
        t, h = _as_time(t, n, y.dtype), _as_time(h, n, y.dtype)
        starts, log_weight = _starts(self.mixture, self.sde, y, t, h)  # (n, S, d), (n, K)
        # Candidates: the _CANDIDATES most probable component starts and the moment-matched one.
        top = jax.lax.top_k(log_weight, min(_CANDIDATES, log_weight.shape[1]))[1]
        pick = jnp.concatenate([top, jnp.full((n, 1), starts.shape[1] - 1, top.dtype)], axis=1)
        starts = jnp.take_along_axis(starts, pick[:, :, None], axis=1)
        n_starts = starts.shape[1]
        rep = lambda v: jnp.repeat(v, n_starts, axis=0)
        miss = jnp.linalg.norm(
            self.predict_map(starts.reshape(-1, d), rep(t), rep(h)).reshape(n, n_starts, d)
            - y[:, None],
            axis=-1,
        )
        miss = jnp.where(jnp.isfinite(miss), miss, jnp.inf)
        best = jnp.argmin(miss, axis=-1)
        x = jnp.take_along_axis(starts, best[:, None, None], axis=1)[:, 0]
        norm = jnp.min(miss, axis=-1)
        tol = _TOL_EPS * jnp.finfo(y.dtype).eps * (1.0 + jnp.linalg.norm(y, axis=-1))

        def residual(z):
            r = jnp.linalg.norm(self.predict_map(z, t, h) - y, axis=-1)
            return jnp.where(jnp.isfinite(r), r, jnp.inf)

        def newton(carry):
            i, z, norm_z = carry
            f, jac = self.predict_and_jacobian(z, t, h)
            step = jnp.linalg.solve(jac, (f - y)[..., None])[..., 0]
            step = jnp.where(jnp.isfinite(step), step, 0.0)
            done = norm_z <= tol  # at round-off: stays
            full = jnp.where(done[:, None], z, z - step)
            norm_full = jnp.where(done, norm_z, residual(full))
            take_full = norm_full <= norm_z

            def damped(_):
                tries = jnp.stack([z - c * step for c in _DAMPING[1:]] + [z])
                norms = jnp.stack([residual(c) for c in tries[:-1]] + [norm_z])
                pick = jnp.argmin(norms, axis=0)
                best_z = jnp.take_along_axis(tries, pick[None, :, None], axis=0)[0]
                best_norm = jnp.take_along_axis(norms, pick[None], axis=0)[0]
                return (
                    jnp.where(take_full[:, None], full, best_z),
                    jnp.where(take_full, norm_full, best_norm),
                )

            z, norm_z = jax.lax.cond(jnp.all(take_full), lambda _: (full, norm_full), damped, None)
            return i + 1, z, norm_z

        def keep_going(carry):
            i, _, norm_z = carry
            return (i < self.newton_steps) & jnp.any(norm_z > tol)

        _, x, norm = jax.lax.while_loop(keep_going, newton, (0, x, norm))
        return Preimage(x, norm)

    def conditional_mean(self, y: ArrayLike, t: ArrayLike, h: ArrayLike) -> Array:
        """``E[x_mean | x_pred = y] = mu(F^{-1}(y))`` (steps 2-3; exact where ``bijective``).

        Args:
            y: ``(n, d)``; ``t`` (current time), ``h``: ``(n,)`` or scalars.

        Returns:
            ``(n, d)``.
        """
        y = jnp.asarray(y)
        n = y.shape[0]
        t, h = _as_time(t, n, y.dtype), _as_time(h, n, y.dtype)
        return self.denoised_target(self.preimage(y, t, h).x, t, h)


@jax.jit
def _preimage(oracle: OracleProjection, y, t, h) -> Preimage:
    return oracle._newton_preimage(y, t, h)


@jax.jit
def _oracle_call(oracle: OracleProjection, y, t_next, h):
    n = y.shape[0]
    h = _as_time(h, n, y.dtype)
    t = _as_time(t_next, n, y.dtype) + h
    target = oracle.conditional_mean(y, t, h)
    return (target - y) / (1.0 + projection_weight(oracle.sde, t))[:, None]


@struct.dataclass
class Eq35Projection:
    """``T_35(y, t', h) = (1 + 2 / sqrt(b(t))) T(y, t', h)``: Alg. 1 then applies eq. 35.

    With ``base`` the trained optimum ``T* = (E[x_mean | y] - y) / (1 + c)``, Alg. 1
    line 5 moves ``sqrt(b) T_35 delta_mu h = 2 (E[x_mean | y] - y) delta_mu h``,
    the unshrunk negative Wasserstein gradient of eq. 35 (module docstring).

    Attributes:
        base: a projection ``(y, t', h) -> like y`` (``OracleProjection`` or a net).
        sde: the forward SDE (for ``b(t) = g(t)^2 / 2``).
    """

    base: ProjectFn
    sde: SDE

    def __call__(self, y: ArrayLike, t_next: ArrayLike, h: ArrayLike) -> Array:
        y = jnp.asarray(y)
        n = y.shape[0]
        h = _as_time(h, n, y.dtype)
        t = _as_time(t_next, n, y.dtype) + h
        factor = 1.0 + 2.0 / jnp.sqrt(ghimire_beta(self.sde, t))
        return broadcast_time(factor, y) * self.base(y, t_next, h)


def projection_relative_error(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    project_fn: ProjectFn,
    reference_fn: ProjectFn,
    x0: ArrayLike,
    *,
    n_steps: Steps,
    eps: float = 1e-3,
) -> dict[int, float]:
    """Held-out ``||T - T_ref|| / ||T_ref||`` on the objective's own distribution, per ``N``.

    Draws ``(t, x_t, x_pred)`` as in ``projection_terms`` (same ``key`` for every
    ``N``) and returns ``sqrt(sum |T - T_ref|^2 / sum |T_ref|^2)`` over the batch,
    with ``T`` and ``T_ref`` evaluated at ``(x_pred, t', h_N)``.

    Args:
        key: PRNG key.
        sde, score_fn: as in ``projection_loss`` (the score of the predict step).
        project_fn: the projection to assess (e.g. a trained net).
        reference_fn: the reference, e.g. ``OracleProjection``.
        x0: ``(n, *event)`` held-out data.
        n_steps: ``N`` or a sequence of them.
        eps: the sampler's final time.

    Returns:
        dict ``N -> relative error``.
    """
    out = {}
    for n in _check_n_steps(n_steps):
        terms = projection_terms(key, sde, score_fn, reference_fn, x0, n_steps=int(n), eps=eps)
        got = project_fn(terms["x_pred"], terms["t"] - terms["h"], terms["h"])
        ref = terms["projection"]
        out[int(n)] = float(jnp.sqrt(jnp.sum((got - ref) ** 2) / jnp.sum(ref**2)))
    return out


def oracle_minimum(
    key: PRNGKey, oracle: OracleProjection, x0: ArrayLike, *, n_steps: Steps, eps: float = 1e-3
) -> tuple[float, float]:
    """Monte Carlo value ``E L(T*)`` with its standard error (for the trained nets' gap).

    Returns:
        ``(mean, standard error)`` of the per-example loss at the oracle.
    """
    terms = projection_terms(
        key, oracle.sde, oracle.mixture.score_fn(oracle.sde), oracle, x0, n_steps=n_steps, eps=eps
    )
    loss = np.asarray(terms["loss"], np.float64)
    return float(loss.mean()), float(loss.std(ddof=1) / np.sqrt(loss.size))


__all__ = [
    "Eq35Projection",
    "OracleProjection",
    "Preimage",
    "oracle_minimum",
    "projection_relative_error",
]
