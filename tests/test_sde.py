"""Forward SDEs against simulation, quadrature and autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from wgdiff.sde import SCHEDULES, VESDE, VPSDE, BrownianSDE

ALL_SDES = [VPSDE(schedule=s) for s in SCHEDULES] + [VESDE(0.01, 5.0), BrownianSDE(1.5)]
IDS = [f"vp-{s}" for s in SCHEDULES] + ["ve", "brownian"]


def simulate_forward(sde, x0, t_end, n_steps, key):
    """Fine Euler-Maruyama of dx = f dt + g dW from 0 to t_end (independent of the closed form)."""
    h = t_end / n_steps
    x = x0
    for i, k in enumerate(jax.random.split(key, n_steps)):
        t = i * h
        x = x + sde.drift(x, t) * h + sde.diffusion(t) * jnp.sqrt(h) * jax.random.normal(k, x.shape)
    return x


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_marginal_matches_forward_simulation(sde):
    n = 20_000
    x0 = jnp.full((n, 1), 1.5)
    t_end = 0.5 * sde.T
    x = simulate_forward(sde, x0, t_end, 400, jax.random.key(0))
    mean, std = sde.marginal(x0[:1], t_end)
    # Monte Carlo standard errors: std/sqrt(n) for the mean, std/sqrt(2n) for the std;
    # 5 SE plus 2% for the O(h) bias of 400 Euler steps.
    se = float(std[0, 0]) / np.sqrt(n)
    assert abs(float(x.mean()) - float(mean[0, 0])) < 5 * se + 0.02 * abs(float(mean[0, 0]))
    assert abs(float(x.std()) - float(std[0, 0])) < 5 * se / np.sqrt(2) + 0.02 * float(std[0, 0])


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_integrated_beta_is_the_integral_of_beta(schedule):
    sde = VPSDE(beta_min=0.1, beta_max=20.0, schedule=schedule, T=2.0)
    ts = np.linspace(0.0, 2.0, 200_001)
    beta = np.asarray(jax.vmap(sde.beta)(jnp.asarray(ts)), dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (beta[1:] + beta[:-1]) * np.diff(ts))])
    for t in (0.3, 1.1, 2.0):
        i = int(round(t / 2.0 * 200_000))
        assert float(sde.integrated_beta(t)) == pytest.approx(cumulative[i], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("sde", ALL_SDES, ids=IDS)
def test_variance_solves_its_moment_ode(sde):
    """For dx = -a x dt + g dW, var' = -2 a var + g^2 and mean' = -a mean (autodiff check)."""
    var = lambda t: sde.marginal_coeffs(t)[1] ** 2
    mean_coef = lambda t: sde.marginal_coeffs(t)[0]
    for t in (0.2 * sde.T, 0.7 * sde.T):
        t = jnp.asarray(t)
        a, g = sde.drift_coeff(t), sde.diffusion(t)
        assert float(jax.grad(var)(t)) == pytest.approx(float(-2 * a * var(t) + g**2), rel=2e-3)
        assert float(jax.grad(mean_coef)(t)) == pytest.approx(
            float(-a * mean_coef(t)), rel=2e-3, abs=1e-6
        )


def test_vp_prior_is_reached_and_logp_is_gaussian():
    sde = VPSDE()
    m, s = sde.marginal_coeffs(1.0)
    assert float(m) < 1e-2 and float(s) == pytest.approx(1.0, abs=1e-4)
    z = jax.random.normal(jax.random.key(0), (5, 3))
    expected = stats.norm(0, float(sde.prior_std())).logpdf(np.asarray(z)).sum(axis=1)
    np.testing.assert_allclose(np.asarray(sde.prior_logp(z)), expected, rtol=1e-5)


def test_brownian_marginal_is_heat_kernel():
    sde = BrownianSDE(beta=2.0, T=3.0)
    mean, std = sde.marginal(jnp.ones((2, 4)), jnp.array([0.25, 1.0]))
    np.testing.assert_allclose(np.asarray(std[:, 0]), [1.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mean), 1.0)


def test_reverse_drift_interpolates_between_ode_and_sde():
    sde = VPSDE()
    x = jax.random.normal(jax.random.key(1), (4, 2))
    t = jnp.full((4,), 0.3)
    score = lambda y, t: -2.0 * y
    f, g2 = sde.drift(x, t), sde.diffusion(0.3) ** 2
    np.testing.assert_allclose(
        sde.reverse_drift(score, x, t, alpha=1.0), f - g2 * score(x, t), rtol=1e-5
    )
    np.testing.assert_allclose(
        sde.probability_flow_drift(score, x, t), f - 0.5 * g2 * score(x, t), rtol=1e-5
    )
    np.testing.assert_allclose(
        sde.reverse_drift(score, x, t, alpha=3.0), f - 2.0 * g2 * score(x, t), rtol=1e-5
    )


def test_sdes_pass_through_jit_and_vmap():
    @jax.jit
    def std_at(sde, t):
        return sde.marginal_coeffs(t)[1]

    assert float(std_at(VPSDE(beta_max=10.0), 0.5)) == pytest.approx(
        float(VPSDE(beta_max=10.0).marginal_coeffs(0.5)[1]), rel=1e-6
    )
    betas = jax.vmap(lambda b: VPSDE(beta_max=b).beta(1.0))(jnp.array([5.0, 10.0]))
    np.testing.assert_allclose(betas, [5.0, 10.0])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: VPSDE(schedule="quadratic"), "schedule"),
        (lambda: VPSDE(beta_max=-1.0), "beta_max"),
        (lambda: VPSDE(T=0.0), "T"),
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: BrownianSDE(beta=-2.0), "beta"),
        (lambda: VPSDE().marginal(jnp.ones((2, 2)), 1.5), "t must lie"),
        (lambda: VPSDE().marginal(jnp.ones((2, 2)), -0.1), "t must lie"),
        (lambda: VPSDE().drift(jnp.ones((2, 2)), jnp.array([0.1, jnp.nan])), "t contains NaN"),
        (lambda: VPSDE().prior_sample(jax.random.key(0), (0, 2)), "shape"),
    ],
)
def test_bad_input_is_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()
