"""Solvers against independent float64 NumPy transcriptions of the published algorithms.

- DPM-Solver++(2M): Lu et al. 2022b, Algorithm 2, on a grid uniform in log-SNR.
- Heun: Karras et al. 2022 (EDM), Algorithm 1, on their rho = 7 schedule.
- Predictor-corrector: Song et al. 2021 (score_sde ``ReverseDiffusionPredictor`` +
  ``LangevinCorrector``) for the VE SDE, fed the same Gaussian draws as the library.

The transcriptions below use only NumPy and the papers' formulas (the VP/VE
schedules are re-derived here, not taken from wgdiff). Target: the exact
posterior mean of Gaussian data ``N(MU, diag(V0))``.
"""

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff.samplers import (
    DPMSolverPP,
    Heun,
    KarrasGrid,
    LangevinCorrector,
    LogSNRGrid,
    PredictorCorrector,
    ReverseDiffusion,
    ScoreModel,
    UniformGrid,
    sample,
)
from wgdiff.sde import VESDE, VPSDE

MU = np.array([1.0, -0.5])
V0 = np.array([0.3, 0.05])
B0, B1 = 0.1, 20.0
SMIN, SMAX = 0.01, 20.0
EPS = 1e-3


# -- independent NumPy schedules ---------------------------------------------------
def vp_alpha_sigma(t):
    """Song et al.'s VP SDE (linear beta, T = 1): log alpha = -B/2, B = b0 t + (b1 - b0) t^2 / 2."""
    B = B0 * t + 0.5 * (B1 - B0) * t**2
    return np.exp(-0.5 * B), np.sqrt(1.0 - np.exp(-B))


def vp_inverse_lambda(lam):
    """Lu et al. 2022 app.: t(lambda) for the linear schedule.

    ``B(t) = -2 log alpha = log(1 + e^{-2 lam})``; solve ``(b1 - b0)/2 t^2 + b0 t - B = 0``.
    """
    big_b = np.logaddexp(0.0, -2.0 * lam)
    return (-B0 + np.sqrt(B0**2 + 2.0 * (B1 - B0) * big_b)) / (B1 - B0)


def gaussian_x0(x, alpha, sigma):
    """E[x0 | x_t = x] for x0 ~ N(MU, diag(V0)), x_t = alpha x0 + sigma z."""
    return MU + alpha * V0 / (alpha**2 * V0 + sigma**2) * (x - alpha * MU)


def gaussian_score_jax(sde):
    mu, v0 = jnp.asarray(MU), jnp.asarray(V0)

    def score(x, t):
        m, s = sde.marginal_coeffs(t)
        m, s = m[:, None], s[:, None]
        return -(x - m * mu) / (m**2 * v0 + s**2)

    return score


def x_start(n=6):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 2))


# -- DPM-Solver++(2M), Lu et al. 2022b Algorithm 2 ------------------------------------
def dpm_solver_pp_2m_numpy(x_T, n_steps):
    a_T, s_T = vp_alpha_sigma(1.0)
    a_e, s_e = vp_alpha_sigma(EPS)
    lams = np.linspace(np.log(a_T / s_T), np.log(a_e / s_e), n_steps + 1)
    ts = vp_inverse_lambda(lams)
    ts[0], ts[-1] = 1.0, EPS
    x = x_T.copy()
    a, s = vp_alpha_sigma(ts[0])
    prev = gaussian_x0(x, a, s)  # x_theta(x_{t_0}, t_0)
    # i = 1: first-order step
    a1, s1 = vp_alpha_sigma(ts[1])
    h = lams[1] - lams[0]
    x = (s1 / s) * x - a1 * (np.exp(-h) - 1.0) * prev
    for i in range(2, n_steps + 1):
        a_prev, s_prev = vp_alpha_sigma(ts[i - 1])
        a_i, s_i = vp_alpha_sigma(ts[i])
        h_prev, h = lams[i - 1] - lams[i - 2], lams[i] - lams[i - 1]
        r = h_prev / h
        cur = gaussian_x0(x, a_prev, s_prev)
        D = (1.0 + 1.0 / (2.0 * r)) * cur - 1.0 / (2.0 * r) * prev
        x = (s_i / s_prev) * x - a_i * (np.exp(-h) - 1.0) * D
        prev = cur
    return x


def test_dpm_solver_pp_2m_matches_algorithm_2():
    x_T = x_start()
    with jax.enable_x64(True):
        sde = VPSDE(beta_min=B0, beta_max=B1)
        for n in (10, 25):
            got = sample(
                None,
                sde,
                gaussian_score_jax(sde),
                x_T.shape,
                DPMSolverPP(order=2),
                LogSNRGrid(n, eps=EPS),
                x_init=jnp.asarray(x_T),
            ).x
            np.testing.assert_allclose(np.asarray(got), dpm_solver_pp_2m_numpy(x_T, n), rtol=1e-4)


def test_data_prediction_model_gives_the_same_2m_path():
    """The same solve from a model built ``from_data`` (the conversion is exact)."""
    x_T = x_start()
    with jax.enable_x64(True):
        sde = VPSDE(beta_min=B0, beta_max=B1)
        mu, v0 = jnp.asarray(MU), jnp.asarray(V0)

        def denoiser(x, t):
            a, s = sde.marginal_coeffs(t)
            a, s = a[:, None], s[:, None]
            return mu + a * v0 / (a**2 * v0 + s**2) * (x - a * mu)

        model = ScoreModel.from_data(denoiser, sde)
        got = sample(
            None, sde, model, x_T.shape, DPMSolverPP(), LogSNRGrid(10, eps=EPS), x_init=x_T
        ).x
        np.testing.assert_allclose(np.asarray(got), dpm_solver_pp_2m_numpy(x_T, 10), rtol=1e-4)


# -- EDM Algorithm 1 ---------------------------------------------------------------
def ve_sigma(t):
    """Marginal std of the VE SDE with sigma(t) = smin (smax/smin)^t: sqrt(sigma^2 - smin^2)."""
    return np.sqrt((SMIN * (SMAX / SMIN) ** t) ** 2 - SMIN**2)


def edm_heun_numpy(x_T, n_steps, rho=7.0):
    """Karras et al. Alg. 1 with sigma(t) = t, s(t) = 1, D the exact Gaussian denoiser."""
    s_max, s_min = ve_sigma(1.0), ve_sigma(1e-3)
    i = np.arange(n_steps + 1)
    sig = (s_max ** (1 / rho) + i / n_steps * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    x = x_T.copy()
    for k in range(n_steps):
        d = (x - gaussian_x0(x, 1.0, sig[k])) / sig[k]
        x_next = x + (sig[k + 1] - sig[k]) * d
        if sig[k + 1] != 0:
            d_next = (x_next - gaussian_x0(x_next, 1.0, sig[k + 1])) / sig[k + 1]
            x_next = x + (sig[k + 1] - sig[k]) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x


def test_heun_on_karras_grid_matches_edm_algorithm_1():
    x_T = ve_sigma(1.0) * x_start()
    with jax.enable_x64(True):
        sde = VESDE(sigma_min=SMIN, sigma_max=SMAX)
        for n in (8, 18):
            got = sample(
                None, sde, gaussian_score_jax(sde), x_T.shape, Heun(), KarrasGrid(n), x_init=x_T
            ).x
            np.testing.assert_allclose(np.asarray(got), edm_heun_numpy(x_T, n), rtol=1e-4)


# -- score_sde predictor-corrector (VE) ------------------------------------------------
def pc_numpy(x_T, ts, snr, n_corrector, corrector_noise, predictor_noise):
    """score_sde ``pc_sampler`` with ``ReverseDiffusionPredictor`` and ``LangevinCorrector``.

    VE discretization: ``f = 0``, ``G = sqrt(sigma_i^2 - sigma_{i-1}^2)``; Langevin
    ``alpha = 1``; ``denoise=True`` returns the last predictor mean.
    """

    def score(x, t):
        s = ve_sigma(t)
        return -(x - MU) / (V0 + s**2)

    x = x_T.copy()
    for i in range(len(ts) - 1):
        t, t_next = ts[i], ts[i + 1]
        for j in range(n_corrector):
            grad = score(x, t)
            z = corrector_noise[i][j]
            grad_norm = np.mean(np.linalg.norm(grad, axis=-1))
            noise_norm = np.mean(np.linalg.norm(z, axis=-1))
            step = (snr * noise_norm / grad_norm) ** 2 * 2 * 1.0
            x = x + step * grad + np.sqrt(2 * step) * z
        sig = SMIN * (SMAX / SMIN) ** t
        adj = SMIN * (SMAX / SMIN) ** t_next
        g2 = sig**2 - adj**2
        x_mean = x + g2 * score(x, t)
        x = x_mean + np.sqrt(g2) * predictor_noise[i]
    return x_mean


def test_predictor_corrector_matches_score_sde_updates():
    n, n_corr, snr = 12, 2, 0.16
    x_T = ve_sigma(1.0) * x_start(16)
    key = jax.random.key(3)
    with jax.enable_x64(True):
        sde = VESDE(sigma_min=SMIN, sigma_max=SMAX)
        solver = PredictorCorrector(ReverseDiffusion(), LangevinCorrector(snr, n_corr))
        got = sample(
            key, sde, gaussian_score_jax(sde), x_T.shape, solver, UniformGrid(n), x_init=x_T
        ).x
        ts = np.asarray(UniformGrid(n).times(sde))
        # The library's draws, regenerated from the documented key schedule:
        # split(key) -> (prior, noise); split(noise, N) per step; split(step) -> (C, P).
        step_keys = jax.random.split(jax.random.split(key)[1], n)
        corr, pred = [], []
        for k in step_keys:
            k_c, k_p = jax.random.split(k)
            corr.append(
                [
                    np.asarray(jax.random.normal(kk, x_T.shape))
                    for kk in jax.random.split(k_c, n_corr)
                ]
            )
            pred.append(np.asarray(jax.random.normal(k_p, x_T.shape)))
    np.testing.assert_allclose(
        np.asarray(got), pc_numpy(x_T, ts, snr, n_corr, corr, pred), rtol=1e-4
    )
