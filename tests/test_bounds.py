"""Tests of wgdiff.bounds (Kwon et al.) against closed forms and brute-force NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from wgdiff import bounds
from wgdiff.sde import VPSDE

A = jnp.array([[0.5, 2.0], [-0.4, -1.5]])
TOP_EIG = float(np.linalg.eigvalsh(0.5 * (np.asarray(A) + np.asarray(A).T))[-1])


def linear_field(x, t):
    return x @ A.T


def tanh_field(x, t):
    w = jnp.array([[1.5, -2.0], [0.7, 0.3]])
    return jnp.tanh(x @ w.T + t) * jnp.array([2.0, -1.0]) + 0.3 * x[:, ::-1]


def test_one_sided_lipschitz_exact_for_linear_field_with_eigenvector_pair():
    # A pair whose difference is the top eigenvector attains the maximum exactly.
    _, vecs = np.linalg.eigh(0.5 * (np.asarray(A) + np.asarray(A).T))
    pts = jnp.concatenate(
        [
            jnp.zeros((1, 2)),
            jnp.asarray(vecs[:, -1])[None],
            jax.random.normal(jax.random.key(0), (20, 2)),
        ]
    )
    est = bounds.one_sided_lipschitz(linear_field, pts, 0.0)
    assert abs(float(est) - TOP_EIG) < 1e-5  # float32 rounding of a quotient of O(1) terms


def test_one_sided_lipschitz_converges_for_linear_field():
    pts = jax.random.normal(jax.random.key(1), (200, 2))
    grid = float(bounds.one_sided_lipschitz(linear_field, pts, 0.0))
    # Every pair value is a Rayleigh quotient, hence <= the top eigenvalue...
    assert grid <= TOP_EIG + 1e-5
    # ...and 200 random points give ~20k directions, within 1e-2 of the top one.
    assert grid > TOP_EIG - 1e-2
    refined = float(bounds.one_sided_lipschitz(linear_field, pts, 0.0, refine_steps=100))
    assert refined >= grid
    assert abs(refined - TOP_EIG) < 1e-4  # ascent on the Rayleigh quotient converges


def test_one_sided_lipschitz_matches_numpy_brute_force_and_chunking():
    pts = jax.random.uniform(jax.random.key(2), (37, 2), minval=-1.0, maxval=1.0)
    s = np.asarray(tanh_field(pts, 0.3), np.float64)
    x = np.asarray(pts, np.float64)
    best = -np.inf
    for j in range(len(x)):
        for k in range(len(x)):
            if j != k:
                dx = x[j] - x[k]
                best = max(best, (s[j] - s[k]) @ dx / (dx @ dx))
    for chunk in (5, 37, 256):  # 37 = 7 * 5 + 2 exercises the padded last chunk
        est = float(bounds.one_sided_lipschitz(tanh_field, pts, 0.3, chunk_size=chunk))
        assert est == pytest.approx(best, rel=1e-4)  # float32 vs float64


def test_refinement_only_raises_and_stays_below_jacobian_sup():
    pts = jax.random.uniform(jax.random.key(3), (25, 2), minval=-1.0, maxval=1.0)
    grid = float(bounds.one_sided_lipschitz(tanh_field, pts, 0.3))
    refined = float(bounds.one_sided_lipschitz(tanh_field, pts, 0.3, refine_steps=60))
    assert refined >= grid
    # The one-sided constant on the box is the sup of lambda_max(sym J); a dense grid
    # of the box bounds it from below, so it may exceed the refined estimate only by
    # the grid's resolution error.
    dense = jnp.stack(jnp.meshgrid(jnp.linspace(-1, 1, 60), jnp.linspace(-1, 1, 60)), -1)
    local = bounds.local_one_sided_lipschitz(tanh_field, dense.reshape(-1, 2), 0.3)
    assert refined <= float(jnp.max(local)) + 1e-2


def test_local_one_sided_lipschitz_linear():
    pts = jax.random.normal(jax.random.key(4), (5, 2))
    np.testing.assert_allclose(
        bounds.local_one_sided_lipschitz(linear_field, pts, 0.0), TOP_EIG, rtol=1e-5
    )


def test_lipschitz_profile_shared_and_per_time():
    times = jnp.array([0.1, 0.5, 1.0])
    pts = jax.random.normal(jax.random.key(5), (30, 2))
    shared = bounds.lipschitz_profile(tanh_field, pts, times)
    per_time = bounds.lipschitz_profile(tanh_field, jnp.stack([pts] * 3), times, per_time=True)
    singles = [bounds.one_sided_lipschitz(tanh_field, pts, t) for t in times]
    np.testing.assert_allclose(shared, singles, rtol=1e-6)
    np.testing.assert_allclose(per_time, singles, rtol=1e-6)


def test_integrating_factor_closed_form_for_constant_lipschitz():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    times = jnp.linspace(0.01, 1.0, 2001)
    L = -0.7
    factor = bounds.integrating_factor(sde, times, jnp.full_like(times, L))
    # L_f = beta/2 and g^2 = beta, so the exponent is (1/2 + L) (B(t) - B(t_0)).
    exact = jnp.exp((0.5 + L) * (sde.integrated_beta(times) - sde.integrated_beta(times[0])))
    np.testing.assert_allclose(factor, exact, rtol=1e-4)  # trapezoid error O(h^2)


def test_time_grid():
    sde = VPSDE(T=10.0)
    grid = np.asarray(bounds.time_grid(sde, 40, eps=0.1))
    assert grid.shape == (40,)
    assert grid[0] == pytest.approx(0.1) and grid[-1] == pytest.approx(10.0)
    assert np.all(np.diff(grid) > 0)


# ------------------------------------------------------------ Gaussian data, closed forms
MU0 = np.array([0.5, -0.3])
SIGMA0 = 0.3
SDE = VPSDE(beta_min=0.1, beta_max=8.0)
T0 = 1e-2


def true_var(t):
    m, s = SDE.marginal_coeffs(t)
    return m**2 * SIGMA0**2 + s**2


def true_score(x, t):
    m, _ = SDE.marginal_coeffs(t)
    return -(x - m * jnp.asarray(MU0, x.dtype)) / true_var(t)


def make_model(var_scale, shift):
    shift = np.asarray(shift)

    def score(x, t):
        m, _ = SDE.marginal_coeffs(t)
        c = m * jnp.asarray(MU0, x.dtype) + jnp.asarray(shift, x.dtype)
        return -(x - c) / (var_scale * true_var(t))

    return score


def closed_form_j_sm(var_scale, shift, times):
    """1/2 int beta [d v (1/v - 1/(c v))^2 + |shift|^2 / (c v)^2] dt, fine trapezoid."""
    t = np.asarray(times, np.float64)
    v = np.asarray(true_var(jnp.asarray(t)), np.float64)
    beta = np.asarray(SDE.beta(jnp.asarray(t)), np.float64)
    err = 2 * v * (1 / v - 1 / (var_scale * v)) ** 2 + np.sum(shift**2) / (var_scale * v) ** 2
    return 0.5 * np.trapezoid(beta * err, t)


def reverse_gaussian_moments(var_scale, shift):
    """Mean and per-coordinate variance of q_{T0}: reverse-time Fokker-Planck (Kwon eq. 6)
    for the affine model started at q_T = p_T, integrated in float64."""

    def rhs(t, y):
        m = float(SDE.marginal_coeffs(t)[0])
        beta = float(SDE.beta(t))
        v = var_scale * float(true_var(t))
        c = m * MU0 + shift
        a = -beta / 2 + beta / v  # u(x) = a x - beta c / v
        return np.concatenate([a * y[:2] - beta * c / v, [2 * a * y[2] - beta]])

    m_T = float(SDE.marginal_coeffs(SDE.T)[0])
    y_T = np.concatenate([m_T * MU0, [float(true_var(SDE.T))]])
    sol = solve_ivp(rhs, (SDE.T, T0), y_T, rtol=1e-10, atol=1e-12)
    return sol.y[:2, -1], sol.y[2, -1]


@pytest.mark.parametrize("var_scale,shift", [(1.6, (0.05, -0.02)), (0.7, (0.0, 0.03))])
def test_bound_holds_in_closed_form_gaussian_case(var_scale, shift):
    shift = np.asarray(shift)
    model = make_model(var_scale, shift)
    x0 = jnp.asarray(MU0) + SIGMA0 * jax.random.normal(jax.random.key(6), (4096, 2))
    times = jnp.concatenate([jnp.geomspace(T0, 0.1, 60)[:-1], jnp.linspace(0.1, 1.0, 90)])
    grid = jnp.stack(jnp.meshgrid(jnp.linspace(-1, 1, 4), jnp.linspace(-1, 1, 4)), -1)
    res = bounds.wasserstein_bound(
        jax.random.key(7),
        SDE,
        model,
        x0,
        times=times,
        lipschitz_points=grid.reshape(-1, 2),
        true_score_fn=true_score,
        n_noise=2,
    )
    # L_s of the linear model is exactly -1 / v(t) (isotropic Jacobian).
    np.testing.assert_allclose(res.lipschitz, -1 / (var_scale * true_var(times)), rtol=1e-4)
    # Monte Carlo J_SM against the closed form: 8192 samples, a few % error at most.
    assert float(res.loss) == pytest.approx(closed_form_j_sm(var_scale, shift, times), rel=0.05)
    mean_q, var_q = reverse_gaussian_moments(var_scale, shift)
    w2_data = np.sqrt(np.sum((MU0 - mean_q) ** 2) + 2 * (SIGMA0 - np.sqrt(var_q)) ** 2)
    assert w2_data <= float(res.bound)
    m0 = float(SDE.marginal_coeffs(T0)[0])
    w2_t0 = np.sqrt(
        np.sum((m0 * MU0 - mean_q) ** 2) + 2 * (np.sqrt(float(true_var(T0))) - np.sqrt(var_q)) ** 2
    )
    assert w2_t0 <= float(jnp.sqrt(2 * res.weight_integral * res.loss))
    assert float(res.offset) == 0.0 and float(res.integrating_factor[0]) == 1.0


def test_exact_score_gives_zero_j_sm_and_start_offset_only():
    x0 = jnp.asarray(MU0) + SIGMA0 * jax.random.normal(jax.random.key(8), (512, 2))
    res = bounds.wasserstein_bound(
        jax.random.key(9), SDE, true_score, x0, n_times=32, eps=T0, true_score_fn=true_score
    )
    assert float(res.loss) < 1e-8
    assert float(res.bound) == pytest.approx(float(res.start_offset), rel=1e-3)


def test_j_sm_below_j_dsm_with_known_score():
    # Theorem 2: J_DSM = J_SM + 1/2 int g^2 E[|grad log p_0t|^2 - |grad log p_t|^2] >= J_SM.
    x0 = jnp.asarray(MU0) + SIGMA0 * jax.random.normal(jax.random.key(10), (2048, 2))
    times = bounds.time_grid(SDE, 48, eps=T0)
    for model in (make_model(1.3, np.array([0.1, 0.0])), true_score, tanh_field):
        key = jax.random.key(11)
        j_dsm = bounds.denoising_objective(key, SDE, model, x0, times, n_noise=2)
        j_sm = bounds.score_objective(key, SDE, model, true_score, x0, times, n_noise=2)
        # the gap is about int beta (d/s^2 - d/v) / 2 >= 1 here, far above MC noise
        assert float(j_sm) + 0.5 < float(j_dsm)


def test_prior_w2_upper_bound_dominates_gaussian_closed_form():
    x0 = jnp.asarray(MU0) + SIGMA0 * jax.random.normal(jax.random.key(12), (8192, 2))
    m, _ = SDE.marginal_coeffs(SDE.T)
    exact = np.sqrt(
        float(m) ** 2 * np.sum(MU0**2)
        + 2 * (np.sqrt(float(true_var(SDE.T))) - float(SDE.prior_std())) ** 2
    )
    assert exact <= float(bounds.prior_w2_upper_bound(SDE, x0)) * (1 + 1e-3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="points"):
        bounds.one_sided_lipschitz(linear_field, jnp.ones((3,)), 0.0)
    with pytest.raises(ValueError, match="points"):
        bounds.one_sided_lipschitz(linear_field, jnp.ones((1, 2)), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        bounds.one_sided_lipschitz(linear_field, jnp.full((3, 2), jnp.nan), 0.0)
    with pytest.raises(ValueError, match="times"):
        bounds.integrating_factor(SDE, jnp.array([0.5, 0.2]), jnp.zeros(2))
    with pytest.raises(ValueError, match="lipschitz"):
        bounds.integrating_factor(SDE, jnp.array([0.2, 0.5]), jnp.zeros(3))
    with pytest.raises(ValueError, match="times"):
        bounds.wasserstein_bound(
            jax.random.key(0), SDE, linear_field, jnp.ones((4, 2)), times=jnp.array([0.0, 1.0])
        )
    with pytest.raises(ValueError, match="per_time|shape"):
        bounds.lipschitz_profile(linear_field, jnp.ones((4, 2)), jnp.ones(3), per_time=True)
