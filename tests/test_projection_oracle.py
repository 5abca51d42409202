"""Oracle and literal-eq.-35 projections (wgdiff.losses.projection_oracle).

References: Gaussian conditioning in float64 (``gaussian_optimal_projection`` and a
NumPy transcription here), the first-order optimality conditions of the sec 8.2
objective checked by Monte Carlo, and a Monte Carlo minimizer over projections that
are constant on small balls.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgdiff.data.toy import GaussianMixture, mixture
from wgdiff.losses.projection import (
    gaussian_optimal_projection,
    gaussian_projection_minimum,
    projection_terms,
)
from wgdiff.losses.projection_oracle import (
    Eq35Projection,
    OracleProjection,
    oracle_minimum,
    projection_relative_error,
)
from wgdiff.samplers.predict_project import predict_project
from wgdiff.sde import VPSDE

SDE_ = VPSDE()
MEAN0 = np.array([0.5, -1.0])
VAR0 = np.array([0.3, 0.05])
GAUSS = GaussianMixture.full(jnp.asarray(MEAN0[None]), jnp.asarray(np.diag(VAR0)[None]))
RING = mixture("eight_gaussians")


def _coeffs(t):
    """Float64 VP coefficients (linear beta from 0.1 to 20), transcribed."""
    beta = 0.1 + 19.9 * t
    m = np.exp(-0.5 * (0.1 * t + 0.5 * 19.9 * t**2))
    return beta, m, np.sqrt(1 - m**2)


def test_gaussian_oracle_matches_gaussian_conditioning():
    """One Gaussian component: Tweedie + Newton inversion = the affine closed form."""
    oracle = OracleProjection(GAUSS, SDE_)
    y = jax.random.normal(jax.random.key(0), (64, 2))
    for t, h in [(0.6, 0.05), (0.3, 0.1), (1.0, 0.999 / 12), (0.02, 0.019)]:
        got = oracle(y, jnp.full(64, t - h), jnp.full(64, h))
        want = gaussian_optimal_projection(SDE_, MEAN0, VAR0, np.asarray(y, np.float64), t, h)
        # float32 Newton; at t = 1, h = 1/12 the predict map contracts by ~0.09, so the
        # inverse amplifies float32 round-off of y ~10x (still < 1e-5 here).
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def _objective_samples(n, t, h, seed):
    """(y, x_mean, c) of the sec 8.2 objective at one (t, h), ring mixture, float32."""
    k0, k1 = jax.random.split(jax.random.key(seed))
    x0 = RING.sample(k0, n)
    m, s = SDE_.marginal_coeffs(t)
    x_t = m * x0 + s * jax.random.normal(k1, x0.shape)
    oracle = OracleProjection(RING, SDE_)
    y = oracle.predict_map(x_t, jnp.full(n, t), jnp.full(n, h))
    x_mean = SDE_.marginal_coeffs(t - h)[0] * x0
    c = float(0.5 * np.sqrt(0.5 * _coeffs(t)[0]))
    return oracle, y, x_mean, c


@pytest.mark.parametrize(
    "t, h",
    [(0.5, 0.1), pytest.param(0.25, 0.05, marks=pytest.mark.slow)],  # second (t, h): slow
)
def test_oracle_is_the_monte_carlo_minimizer_on_balls(t, h):
    """Among projections constant on a ball B, the empirical objective's minimizer is
    mean_B (x_mean - y) / (1 + c); by the tower rule it equals mean_B T*(y) in
    expectation. Checked on 12 balls around typical points, to 4 standard errors;
    a projection 10% too short fails the same check."""
    n = 200_000
    oracle, y, x_mean, c = _objective_samples(n, t, h, seed=1)
    star = np.asarray(oracle(y, jnp.full(n, t - h), jnp.full(n, h)), np.float64)
    y, x_mean = np.asarray(y, np.float64), np.asarray(x_mean, np.float64)
    z_true, z_short = [], []
    count = 2000
    for centre in y[:12]:  # balls holding the 2000 nearest predicted points
        dist = np.linalg.norm(y - centre, axis=1)
        inside = dist <= np.partition(dist, count - 1)[count - 1]
        mc_min = (x_mean[inside] - y[inside]) / (1 + c)  # per-example; its mean is the minimizer
        for scale, out in ((1.0, z_true), (0.9, z_short)):
            diff = mc_min - scale * star[inside]
            out.extend(diff.mean(axis=0) / (diff.std(axis=0, ddof=1) / np.sqrt(count)))
    # Sum of 24 squared z-scores: chi-square with 24 dof under the oracle (99.9% point 51.2).
    chi2_true, chi2_short = np.sum(np.square(z_true)), np.sum(np.square(z_short))
    assert chi2_true < 51.2, chi2_true
    assert chi2_short > 51.2, chi2_short  # the same test rejects a 10% shorter projection


def test_perturbing_the_oracle_raises_the_objective():
    """E L(T* + d phi) - E L(T*) = (1 + c) d^2 E|phi|^2 > 0, and the first variation
    2 E[phi . (y + (1 + c) T* - x_mean)] vanishes (within 4 standard errors), for
    several directions phi; for T = 0.8 T* it does not vanish along phi = T*."""
    x0 = RING.sample(jax.random.key(2), 20_000)
    oracle = OracleProjection(RING, SDE_)
    score = RING.score_fn(SDE_)
    key = jax.random.key(3)
    n_steps = (10, 20)
    directions = {
        "constant": lambda y: jnp.broadcast_to(jnp.array([1.0, -0.5]), y.shape),
        "linear": lambda y: 0.3 * y,
        "nonlinear": lambda y: jnp.sin(y[:, ::-1]),
    }
    base = projection_terms(key, SDE_, score, oracle, x0, n_steps=n_steps)
    y, x_mean, star = base["x_pred"], base["x_mean"], base["projection"]
    shrink = (1 + base["weight"])[:, None]
    n = x0.shape[0]

    def first_variation(phi_y, scale):
        g = 2 * jnp.sum(phi_y * (y + shrink * scale * star - x_mean), axis=-1)
        return float(g.mean()), float(g.std() / np.sqrt(n))

    for name, phi in directions.items():
        for delta in (-0.1, 0.1):
            # L(T* + d phi) from the same draws: only the projection changes.
            moved = star + delta * phi(y)
            loss = jnp.sum((y + moved - x_mean) ** 2, -1) + base["weight"] * jnp.sum(moved**2, -1)
            assert float(loss.mean()) > float(base["loss"].mean()), (name, delta)
        mean, se = first_variation(phi(y), 1.0)
        assert abs(mean) < 4 * se, (name, mean, se)
    mean, se = first_variation(star, 0.8)
    assert mean < -6 * se, (mean, se)


def test_eq35_push_is_twice_the_pull_to_the_posterior_mean():
    """One Alg. 1 step with Eq35Projection(oracle) on a Gaussian moves x_pred by
    2 (E[x_mean | x_pred] - x_pred) delta_mu h, E by float64 Gaussian conditioning."""
    n, delta_mu, eps = 32, 0.7, 1e-3
    x_init = np.random.default_rng(4).standard_normal((n, 2))
    lit = Eq35Projection(OracleProjection(GAUSS, SDE_), SDE_)
    got = predict_project(
        jax.random.key(5),
        SDE_,
        GAUSS.score_fn(SDE_),
        lit,
        (n, 2),
        1,
        delta_mu=delta_mu,
        eps=eps,
        x_init=x_init,
    )
    t, h = 1.0, 1.0 - eps
    beta, m, s = _coeffs(t)
    m_next = _coeffs(t - h)[1]
    v = m**2 * VAR0 + s**2
    y = x_init + h * (0.5 * beta * x_init - beta * (x_init - m * MEAN0) / v)
    # x_pred is affine in x_t coordinatewise: y = A x_t + B; invert, condition, push.
    A = 1 + h * (0.5 * beta - beta / v)
    B = h * beta * m * MEAN0 / v
    x_t = (y - B) / A
    posterior = m_next * (MEAN0 + m * VAR0 / v * (x_t - m * MEAN0))
    want = y + 2 * (posterior - y) * delta_mu * h
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    # Alg. 1 with the plain oracle applies the shrunk push sqrt(b) T* = 2c/(1+c) (E - y)
    # (line 5 of Alg. 1 evaluated directly at the same x_pred; no second sampler compile).
    plain = OracleProjection(GAUSS, SDE_)(jnp.asarray(y, jnp.float32), t - h, h)
    c = 0.5 * np.sqrt(beta / 2)
    np.testing.assert_allclose(
        y + np.sqrt(beta / 2) * np.asarray(plain, np.float64) * delta_mu * h,
        y + 2 * c / (1 + c) * (posterior - y) * delta_mu * h,
        rtol=2e-4,
        atol=2e-4,
    )


def test_bijectivity_flag_matches_the_jacobian():
    """bijective(t, h) <=> the bound A > 0; where True, DF is positive definite at
    sampled points; at N = 5 (h = 0.2) it is False and DF has negative eigenvalues."""
    oracle = OracleProjection(RING, SDE_)
    x = 3.0 * jax.random.normal(jax.random.key(6), (2000, 2))

    def min_eig(t, h):
        n = x.shape[0]
        single = lambda xi: oracle.predict_map(xi[None], jnp.full(1, t), jnp.full(1, h))[0]
        jac = jax.vmap(jax.jacfwd(single))(x)
        # the Newton step's closed-form DF (isotropic components) is this autodiff Jacobian
        closed = oracle.predict_and_jacobian(x, jnp.full(n, t), jnp.full(n, h))[1]
        np.testing.assert_allclose(closed, jac, rtol=1e-4, atol=1e-4)  # float32, O(1) entries
        return float(jnp.linalg.eigvalsh(0.5 * (jac + jnp.swapaxes(jac, 1, 2))).min()), n

    for t, h in [(1.0, 0.0999), (0.5, 0.0999), (0.2, 0.0999), (0.05, 0.02)]:
        assert bool(oracle.bijective(t, h))
        assert min_eig(t, h)[0] > 0
    assert not bool(oracle.bijective(0.4, 0.2))
    assert min_eig(0.4, 0.2)[0] < 0


@pytest.mark.slow  # the isotropic case of the same formula runs in the bijectivity test
def test_closed_form_jacobian_is_the_autodiff_jacobian():
    """predict_and_jacobian (the Newton step's F and DF, module docstring step 4) against
    predict_map and forward-mode autodiff of it, for rotated full covariances (the ring's
    isotropic case is checked in the bijectivity test)."""
    rot = np.array([[np.cos(0.6), -np.sin(0.6)], [np.sin(0.6), np.cos(0.6)]])
    covs = np.stack([rot @ np.diag([0.2, 0.01]) @ rot.T, np.diag([0.05, 0.3])])
    gm = GaussianMixture.full(
        jnp.asarray([[1.0, -0.5], [-1.0, 1.0]]), jnp.asarray(covs), jnp.asarray([0.3, 0.7])
    )
    oracle = OracleProjection(gm, SDE_)
    x = 2.0 * jax.random.normal(jax.random.key(16), (300, 2))
    single = lambda xi, t1, h1: oracle.predict_map(xi[None], t1, h1)[0]
    jacobian = jax.vmap(jax.jacfwd(single), in_axes=(0, None, None))
    for t, h in [(0.9, 0.1), (0.3, 0.05), (0.02, 0.01)]:
        tt, hh = jnp.full(300, t), jnp.full(300, h)
        f, jac = oracle.predict_and_jacobian(x, tt, hh)
        np.testing.assert_allclose(f, oracle.predict_map(x, tt, hh), rtol=1e-5, atol=1e-5)
        # DF = I (1 + h a) + ...: O(1) entries; float32 cancellation in
        # sum_k r_k S_k S_k^T - S S^T leaves ~1e-5.
        np.testing.assert_allclose(jac, jacobian(x, tt[:1], hh[:1]), rtol=1e-4, atol=1e-4)


def test_relative_error_and_oracle_minimum():
    x0 = GAUSS.sample(jax.random.key(7), 20_000)
    oracle = OracleProjection(GAUSS, SDE_)
    score = GAUSS.score_fn(SDE_)
    errors = projection_relative_error(
        jax.random.key(8),
        SDE_,
        score,
        lambda y, t, h: 0.9 * oracle(y, t, h),
        oracle,
        x0,
        n_steps=[10, 40],
    )
    assert set(errors) == {10, 40}
    for value in errors.values():
        np.testing.assert_allclose(value, 0.1, rtol=1e-4)
    mean, se = oracle_minimum(jax.random.key(9), oracle, x0, n_steps=[10, 40])
    exact = gaussian_projection_minimum(SDE_, MEAN0, VAR0, n_steps=[10, 40])
    assert abs(mean - exact) < 4 * se
