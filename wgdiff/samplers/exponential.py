r"""Exponential-integrator solvers in the log-SNR ``lambda = log(m/s)``: DDIM, DPM-Solver,
DPM-Solver++, UniPC.

With ``x_t = m_t x0 + s_t eps`` the probability-flow ODE has the exact solution
(variation of constants in ``lambda``: Lu et al. 2022, DPM-Solver, sec. 3.1; Lu et al.
2022b, DPM-Solver++, sec. 3)

    x_t = (m_t/m_s) x_s - m_t int_{lam_s}^{lam_t} e^{-lam} eps(x_lam, lam) dlam
        = (s_t/s_s) x_s + s_t int_{lam_s}^{lam_t} e^{lam} x0(x_lam, lam) dlam,

and the solvers Taylor-expand the noise prediction ``eps`` (DPM-Solver) or the
data prediction ``x0`` (DPM-Solver++, UniPC) in ``lambda``. Step ``t -> t_next``
has ``h = lam(t_next) - lam(t) > 0``. All first-order members coincide with DDIM
(Song et al. 2020): ``x_next = m_next x0 + s_next eps``.

Intermediate times of the singlestep solvers are found with
``sde.time_at_log_snr`` (closed form for the VP linear, VE, sub-VP, Brownian and
rectified-flow SDEs, bisection otherwise).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from wgdiff._types import Array, PyTree
from wgdiff.nets.parameterization import ScoreModel
from wgdiff.samplers.base import Solver, Step, full_time


def _schedule(sde, t):
    m, s = sde.marginal_coeffs(t)
    return m, s, jnp.log(m) - jnp.log(s)


def _no_noise_on_last(step: Step, x_mean, noise):
    return jnp.where(step.last, x_mean, x_mean + noise)


@struct.dataclass
class DDIM(Solver):
    """DDIM (Song et al. 2020, eq. 12) for any SDE with Gaussian marginals.

    ``x_next = m' x0 + sqrt(s'^2 - c^2) eps + c z`` with
    ``c = eta s' sqrt(1 - e^{-2h})``: ``eta = 0`` is the deterministic DDIM (the
    first-order DPM-Solver, global order 1), ``eta = 1`` the ancestral step with
    the posterior variance of ``q(x_next | x_t, x0)``. No noise on the last step.
    """

    eta: float = struct.field(pytree_node=False, default=0.0)
    order = 1
    nfe_per_step = 1

    def __post_init__(self) -> None:
        if not float(self.eta) >= 0.0:
            raise ValueError(f"eta must be >= 0, got {self.eta!r}")

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        sde = model.sde
        _, _, lam = _schedule(sde, step.t)
        m_n, s_n, lam_n = _schedule(sde, step.t_next)
        x0, eps = model.predict(x, full_time(step.t, x), ("data", "noise"))
        if not self.stochastic:
            return m_n * x0 + s_n * eps, state
        c = self.eta * s_n * jnp.sqrt(-jnp.expm1(-2.0 * (lam_n - lam)))
        mean = m_n * x0 + jnp.sqrt(jnp.maximum(s_n**2 - c**2, 0.0)) * eps
        noise = c * jax.random.normal(step.key, x.shape, x.dtype)
        return _no_noise_on_last(step, mean, noise), state


@struct.dataclass
class DPMSolver(Solver):
    """Singlestep DPM-Solver-1/2/3 with noise prediction (Lu et al. 2022).

    ``order=1``: DPM-Solver-1 (= DDIM). ``order=2``: Algorithm 1 (DPM-Solver-2) with
    ``r1 = 1/2``. ``order=3``: Algorithm 2 (DPM-Solver-3) with ``r1 = 1/3``,
    ``r2 = 2/3``. Global order = ``order``; NFE per step = ``order``.
    """

    order: int = struct.field(pytree_node=False, default=2)

    def __post_init__(self) -> None:
        if self.order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got {self.order!r}")

    @property
    def nfe_per_step(self) -> int:
        return self.order

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        sde = model.sde
        m, _, lam = _schedule(sde, step.t)
        m_n, s_n, lam_n = _schedule(sde, step.t_next)
        h = lam_n - lam
        eps_t = model.noise(x, full_time(step.t, x))

        def stage(r):
            t_r = sde.time_at_log_snr(lam + r * h)
            m_r, s_r = sde.marginal_coeffs(t_r)
            return t_r, m_r, s_r

        base = (m_n / m) * x - s_n * jnp.expm1(h) * eps_t
        if self.order == 1:
            return base, state
        if self.order == 2:
            r1 = 0.5
            t1, m1, s1 = stage(r1)
            u1 = (m1 / m) * x - s1 * jnp.expm1(r1 * h) * eps_t
            d1 = model.noise(u1, full_time(t1, x)) - eps_t
            return base - s_n / (2.0 * r1) * jnp.expm1(h) * d1, state
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        t1, m1, s1 = stage(r1)
        t2, m2, s2 = stage(r2)
        u1 = (m1 / m) * x - s1 * jnp.expm1(r1 * h) * eps_t
        d1 = model.noise(u1, full_time(t1, x)) - eps_t
        u2 = (
            (m2 / m) * x
            - s2 * jnp.expm1(r2 * h) * eps_t
            - s2 * r2 / r1 * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * d1
        )
        d2 = model.noise(u2, full_time(t2, x)) - eps_t
        return base - s_n / r2 * (jnp.expm1(h) / h - 1.0) * d2, state


@struct.dataclass
class DPMSolverPP(Solver):
    """DPM-Solver++ with data prediction (Lu et al. 2022b), multistep or singlestep, ODE or SDE.

    - ``multistep=True`` (default): ``order=2`` is DPM-Solver++(2M), Algorithm 2
      of the paper; ``order=3`` is (3M), the third-order multistep update of the
      authors' code. Each step costs one evaluation; the first steps use lower
      orders (warm-up: step 1 first order, step 2 second order). A first-order
      first step limits the **global order to 2** for both 2M and 3M.
      Needs at least ``order`` steps.
    - ``multistep=False``: singlestep DPM-Solver++(2S) (Algorithm 1, ``r1 = 1/2``)
      or (3S) (``r1 = 1/3, r2 = 2/3``); global order = ``order``, ``order`` NFE per step.
    - ``sde=True``: SDE-DPM-Solver++(1 or 2M) (Lu et al. 2022b app., the
      "midpoint" variant of their code), ``x_next = (s'/s) e^{-h} x + m' (1 - e^{-2h}) D +
      s' sqrt(1 - e^{-2h}) z``; multistep, order 1 or 2, weak order 1. No noise on the
      last step.
    """

    order: int = struct.field(pytree_node=False, default=2)
    multistep: bool = struct.field(pytree_node=False, default=True)
    sde: bool = struct.field(pytree_node=False, default=False)

    def __post_init__(self) -> None:
        if self.order not in (1, 2, 3):
            raise ValueError(f"order must be 1, 2 or 3, got {self.order!r}")
        if self.sde and (self.order == 3 or not self.multistep):
            raise ValueError(
                "sde=True supports multistep orders 1 and 2 only; got "
                f"order={self.order}, multistep={self.multistep}"
            )

    @property
    def stochastic(self) -> bool:
        return self.sde

    @property
    def nfe_per_step(self) -> int:
        return 1 if self.multistep else self.order

    @property
    def min_steps(self) -> int:
        return self.order if self.multistep else 1

    @property
    def global_order(self) -> int:
        if self.sde:
            return 1
        return min(self.order, 2) if self.multistep else self.order

    def init(self, model: ScoreModel, x: Array, t0: Array) -> PyTree:
        if not self.multistep:
            return ()
        zero = jnp.zeros((), x.dtype)
        return (jnp.zeros_like(x), jnp.zeros_like(x), zero, zero)

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        if self.multistep:
            return self._multistep(model, x, state, step)
        return self._singlestep(model, x, step), state

    def _multistep(self, model, x, state, step):
        sde = model.sde
        _, s, lam = _schedule(sde, step.t)
        m_n, s_n, lam_n = _schedule(sde, step.t_next)
        d_prev1, d_prev2, lam_prev1, lam_prev2 = state
        d0 = model.data(x, full_time(step.t, x))
        h = lam_n - lam
        # Guarded ratios: the unused (warm-up) branches must not produce inf/NaN.
        safe = lambda v: jnp.where(v > 0, v, 1.0)
        r0 = safe((lam - lam_prev1) / h)
        d1_0 = (d0 - d_prev1) / r0
        if self.sde:
            decay = -jnp.expm1(-2.0 * h)
            mean = (s_n / s) * jnp.exp(-h) * x + m_n * decay * d0
            if self.order == 2:
                mean = jnp.where(step.index >= 1, mean + 0.5 * m_n * decay * d1_0, mean)
            noise = s_n * jnp.sqrt(decay) * jax.random.normal(step.key, x.shape, x.dtype)
            x_next = _no_noise_on_last(step, mean, noise)
        else:
            phi1 = jnp.expm1(-h)
            x_next = (s_n / s) * x - m_n * phi1 * d0
            if self.order >= 2:
                second = x_next - 0.5 * m_n * phi1 * d1_0
                x_next = jnp.where(step.index >= 1, second, x_next)
            if self.order == 3:
                r1 = safe((lam_prev1 - lam_prev2) / h)
                d1_1 = (d_prev1 - d_prev2) / r1
                big_d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                big_d2 = (d1_0 - d1_1) / (r0 + r1)
                phi2 = phi1 / h + 1.0
                phi3 = phi2 / h - 0.5
                third = (s_n / s) * x - m_n * phi1 * d0 + m_n * phi2 * big_d1 - m_n * phi3 * big_d2
                x_next = jnp.where(step.index >= 2, third, x_next)
        return x_next, (d0, d_prev1, lam, lam_prev1)

    def _singlestep(self, model, x, step):
        sde = model.sde
        _, s, lam = _schedule(sde, step.t)
        m_n, s_n, lam_n = _schedule(sde, step.t_next)
        h = lam_n - lam
        d0 = model.data(x, full_time(step.t, x))
        phi1 = jnp.expm1(-h)
        base = (s_n / s) * x - m_n * phi1 * d0
        if self.order == 1:
            return base

        def stage(r):
            t_r = sde.time_at_log_snr(lam + r * h)
            m_r, s_r = sde.marginal_coeffs(t_r)
            return t_r, m_r, s_r

        if self.order == 2:
            r1 = 0.5
            t1, m1, s1 = stage(r1)
            u1 = (s1 / s) * x - m1 * jnp.expm1(-r1 * h) * d0
            d1 = model.data(u1, full_time(t1, x))
            return base - 0.5 / r1 * m_n * phi1 * (d1 - d0)
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        t1, m1, s1 = stage(r1)
        t2, m2, s2 = stage(r2)
        u1 = (s1 / s) * x - m1 * jnp.expm1(-r1 * h) * d0
        d1 = model.data(u1, full_time(t1, x))
        phi22 = jnp.expm1(-r2 * h) / (r2 * h) + 1.0
        u2 = (s2 / s) * x - m2 * jnp.expm1(-r2 * h) * d0 + r2 / r1 * m2 * phi22 * (d1 - d0)
        d2 = model.data(u2, full_time(t2, x))
        phi2 = phi1 / h + 1.0
        return base + 1.0 / r2 * m_n * phi2 * (d2 - d0)


@struct.dataclass
class UniPC(Solver):
    """UniPC (Zhao et al. 2023) with data prediction: UniP-p predictor + UniC corrector.

    ``order=1`` or ``2`` (the issue's UniPC-2), ``variant="bh2"`` (``B(h) = e^h - 1``)
    or ``"bh1"`` (``B(h) = h``). The corrector's evaluation at ``t_next`` is
    reused by the next step, so each step costs one evaluation (the first model
    call happens at ``t_0``; the last step skips the corrector): NFE = ``N``.
    Warm-up: the first step is UniP-1 + UniC-1. UniC raises the order of
    accuracy by one (Zhao et al. 2023, sec. 3), so ``order`` here is the predictor's
    and ``global_order`` is ``order + 1`` (UniPC-2: 3; the warm-up step,
    of local order 3, and the uncorrected last step, also of local order 3, keep it).
    Needs at least ``order`` steps.
    """

    order: int = struct.field(pytree_node=False, default=2)
    variant: str = struct.field(pytree_node=False, default="bh2")
    multistep = True
    nfe_per_step = 1

    def __post_init__(self) -> None:
        if self.order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {self.order!r}")
        if self.variant not in ("bh1", "bh2"):
            raise ValueError(f"variant must be 'bh1' or 'bh2', got {self.variant!r}")

    @property
    def min_steps(self) -> int:
        return self.order

    @property
    def global_order(self) -> int:
        return self.order + 1

    def init(self, model: ScoreModel, x: Array, t0: Array) -> PyTree:
        d0 = model.data(x, full_time(t0, x))
        return (d0, jnp.zeros_like(x), jnp.zeros((), x.dtype))

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        sde = model.sde
        _, s, lam = _schedule(sde, step.t)
        m_n, s_n, lam_n = _schedule(sde, step.t_next)
        d0, d_prev1, lam_prev1 = state
        h = lam_n - lam
        hh = -h
        h_phi_1 = jnp.expm1(hh)
        b_h = hh if self.variant == "bh1" else jnp.expm1(hh)
        h_phi_k1 = h_phi_1 / hh - 1.0
        h_phi_k2 = h_phi_k1 / hh - 0.5
        b1, b2 = h_phi_k1 / b_h, 2.0 * h_phi_k2 / b_h
        base = (s_n / s) * x - m_n * h_phi_1 * d0
        second = self.order == 2
        warm = step.index == 0
        rk = jnp.where(warm, -1.0, (lam_prev1 - lam) / h)
        big_d1 = (d_prev1 - d0) / rk
        # UniP-2 (rho_p = 1/2) after the warm-up; UniP-1 is the DDIM step `base`.
        x_pred = jnp.where(warm | (not second), base, base - m_n * b_h * 0.5 * big_d1)

        def corrected(_):
            d_next = model.data(x_pred, full_time(step.t_next, x))
            d1_t = d_next - d0
            # UniC-2: solve [[1, 1], [rk, 1]] rho = (b1, b2); UniC-1: rho = 1/2.
            rho1 = (b1 - b2) / (1.0 - rk)
            rho2 = b1 - rho1
            corr2 = base - m_n * b_h * (rho1 * big_d1 + rho2 * d1_t)
            corr1 = base - m_n * b_h * 0.5 * d1_t
            return jnp.where(warm | (not second), corr1, corr2), d_next

        def uncorrected(_):
            return x_pred, d0

        x_next, d_next = jax.lax.cond(step.last, uncorrected, corrected, None)
        return x_next, (d_next, d0, lam)


__all__ = ["DDIM", "DPMSolver", "DPMSolverPP", "UniPC"]
