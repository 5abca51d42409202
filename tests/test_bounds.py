"""Tests of wgdiff.bounds (Kwon et al.) against closed forms and brute-force NumPy."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from wgdiff import bounds
from wgdiff.sde import VPSDE, BrownianSDE

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


# The same two properties (refinement only raises the grid maximum; never above the sup of
# lambda_max(sym J) on the box) are asserted in the default run by
# test_one_sided_lipschitz_converges_for_linear_field and
# test_region_lipschitz_covers_the_trajectory_where_the_grid_does_not (same ascent code).
@pytest.mark.slow
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


def _np_vp(t):
    """float64 NumPy transcription of the linear VP schedule: (m(t), s(t)^2, beta(t))."""
    b0, b1 = SDE.beta_min, SDE.beta_max
    big_b = b0 * t + 0.5 * (b1 - b0) * t**2
    m = np.exp(-0.5 * big_b)
    return m, 1.0 - m**2, b0 + (b1 - b0) * t


def reverse_gaussian_moments(var_scale, shift):
    """Mean and per-coordinate variance of q_{T0}: reverse-time Fokker-Planck (Kwon eq. 6)
    for the affine model started at q_T = p_T, integrated in float64 (NumPy only: an
    eager JAX call per right-hand side evaluation cost seconds)."""

    def rhs(t, y):
        m, s2, beta = _np_vp(t)
        v = var_scale * (m**2 * SIGMA0**2 + s2)
        c = m * MU0 + shift
        a = -beta / 2 + beta / v  # u(x) = a x - beta c / v
        return np.concatenate([a * y[:2] - beta * c / v, [2 * a * y[2] - beta]])

    m_T, s2_T, _ = _np_vp(SDE.T)
    y_T = np.concatenate([m_T * MU0, [m_T**2 * SIGMA0**2 + s2_T]])
    sol = solve_ivp(rhs, (SDE.T, T0), y_T, rtol=1e-10, atol=1e-12)
    return sol.y[:2, -1], sol.y[2, -1]


@pytest.mark.parametrize(
    "var_scale,shift",
    [(1.6, (0.05, -0.02)), pytest.param(0.7, (0.0, 0.03), marks=pytest.mark.slow)],
)
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
    # L_s is given (any value): J_SM = 0 makes the bound independent of it
    res = bounds.wasserstein_bound(
        jax.random.key(9),
        SDE,
        true_score,
        x0,
        n_times=32,
        eps=T0,
        true_score_fn=true_score,
        lipschitz=jnp.full((32,), -1.0),
    )
    assert float(res.loss) < 1e-8
    assert float(res.bound) == pytest.approx(float(res.start_offset), rel=1e-3)


def test_j_sm_below_j_dsm_with_known_score():
    # Theorem 2: J_DSM = J_SM + 1/2 int g^2 E[|grad log p_0t|^2 - |grad log p_t|^2] >= J_SM.
    x0 = jnp.asarray(MU0) + SIGMA0 * jax.random.normal(jax.random.key(10), (2048, 2))
    times = bounds.time_grid(SDE, 48, eps=T0)
    # (the exact score itself, J_SM = 0, is test_exact_score_gives_zero_j_sm_and_start_offset_only;
    # the gap does not depend on the model, so one model suffices)
    model = make_model(1.3, np.array([0.1, 0.0]))
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


# ------------------------------------------------- trajectory and sampled-region L_s
def test_reverse_sde_path_levels_share_one_brownian_path():
    # With f = 0 and s = 0 the path is x_T - beta (W(T) - W(t)): every level must
    # give the same states (the increments of a level are sums of the finer ones),
    # and the increments over an interval have variance beta^2 dt.
    sde = BrownianSDE(beta=0.7)
    times = jnp.array([0.05, 0.2, 0.45, 1.0])
    x_T = jnp.zeros((4000, 2))
    zero = lambda x, t: jnp.zeros_like(x)
    coarse = bounds.reverse_sde_path(jax.random.key(0), sde, zero, x_T, times, substeps=1)
    fine = bounds.reverse_sde_path(jax.random.key(0), sde, zero, x_T, times, substeps=1, level=3)
    assert coarse.shape == fine.shape == (4, 4000, 2)
    np.testing.assert_allclose(coarse, fine, atol=1e-5)  # float32 sums of 8 terms
    var = np.var(np.asarray(fine[:-1] - fine[1:]), axis=(1, 2))
    # 8000 draws per interval: relative sd of a variance estimate sqrt(2/8000) = 1.6%
    np.testing.assert_allclose(var, 0.49 * np.diff(np.asarray(times)), rtol=0.07)


def true_score_per_example(x, t):
    """``true_score`` for a time per example, ``t (n,)``."""
    m, _ = SDE.marginal_coeffs(t)
    return -(x - m[:, None] * jnp.asarray(MU0, x.dtype)) / true_var(t)[:, None]


def test_reverse_sde_path_with_exact_score_follows_the_marginals():
    # Started from p_T with the exact score, q_t = p_t at every recorded time.
    x0 = jnp.asarray(MU0) + SIGMA0 * jax.random.normal(jax.random.key(1), (4096, 2))
    times = bounds.time_grid(SDE, 8, eps=T0)
    x_T = bounds.forward_noised(jax.random.key(2), SDE, x0, times[-1:])[0]
    path = bounds.reverse_sde_path(
        jax.random.key(3), SDE, true_score_per_example, x_T, times, substeps=32
    )
    m, _ = SDE.marginal_coeffs(times)
    mean = np.asarray(path.mean(axis=1))
    np.testing.assert_allclose(mean, np.outer(np.asarray(m), MU0), atol=0.04)
    # MC error ~2% (8192 draws) plus the O(h) Euler bias (8% at 8 steps per interval, ~2% at 32)
    var = np.asarray(path.var(axis=1)).mean(axis=-1)  # per coordinate (their means differ)
    np.testing.assert_allclose(var, true_var(times), rtol=0.06)


def _stiff_converged_path(max_level):
    """``converged_reverse_path`` for the stiff field ``s = -20 x``: x <- x (1 + h beta / 2
    - 20 h beta) blows up until h beta < ~0.1, so the coarse levels are unstable."""
    times = jnp.linspace(0.1, 1.0, 6)
    x_T = jax.random.normal(jax.random.key(4), (256, 2))
    return bounds.converged_reverse_path(
        jax.random.key(5),
        SDE,
        lambda x, t: -20.0 * x,
        x_T,
        times,
        substeps=2,
        max_level=max_level,
        rtol=0.02,
    )


def test_converged_reverse_path_flags_unstable_levels():
    # The two coarsest levels (10 and 20 steps) are unstable, so the change between them
    # is huge and the path is reported unconverged (the slow test below follows the
    # halving to convergence).
    short = _stiff_converged_path(max_level=1)
    assert not short.converged and short.n_steps == 20 and list(short.levels) == [10, 20]
    assert len(short.rms_changes) == 1 and short.rms_changes[0] > 1.0


@pytest.mark.slow
def test_converged_reverse_path_halves_until_stable():
    res = _stiff_converged_path(max_level=7)
    assert res.converged
    assert list(res.levels) == [10 * 2**lev for lev in range(len(res.levels))]
    assert len(res.levels) >= 4  # the coarse levels are unstable
    assert res.rms_changes[0] > 1e3 * res.rms_changes[-1]
    # strong order 1 for additive noise once stable: the change halves per level
    assert 0.3 < res.rms_changes[-1] / res.rms_changes[-2] < 0.7
    short = _stiff_converged_path(max_level=1)
    assert not short.converged and short.n_steps == 20


def test_region_lipschitz_exact_for_linear_field():
    # For s = A x every pair quotient is a Rayleigh quotient of sym(A) and the local
    # estimate is its top eigenvalue at every point: exact.
    times = jnp.array([0.1, 0.5, 1.0])
    x0 = jax.random.normal(jax.random.key(6), (40, 2))
    traj = 3.0 * jax.random.normal(jax.random.key(7), (3, 40, 2))
    reg = bounds.region_lipschitz(
        jax.random.key(8), SDE, linear_field, x0, traj, times, n_pair_points=32, refine_steps=20
    )
    np.testing.assert_allclose(reg.local, TOP_EIG, rtol=1e-5)
    np.testing.assert_allclose(reg.value, TOP_EIG, rtol=1e-5)
    assert float(jnp.max(reg.pairwise)) <= TOP_EIG + 1e-5
    # the box is that of the union of both point sets
    np.testing.assert_allclose(reg.upper, jnp.maximum(jnp.max(traj, 1), reg.upper), rtol=1e-6)
    assert float(jnp.max(bounds.outside_share(traj, reg.lower, reg.upper))) == 0.0


def bump_field(x, t):
    # expands strongly only far from the authors' grid: sym-Jacobian ~ 4 exp(-|x - c|^2)
    c = jnp.array([-2.0, -2.0])
    r2 = jnp.sum((x - c) ** 2, axis=-1, keepdims=True)
    return -0.5 * x + 4.0 * (x - c) * jnp.exp(-r2)


def test_region_lipschitz_covers_the_trajectory_where_the_grid_does_not():
    times = jnp.array([0.1, 0.5, 1.0])
    ticks = jnp.linspace(0.0, 0.9, 10)
    grid = jnp.stack(jnp.meshgrid(ticks, ticks), -1).reshape(-1, 2)
    x0 = jax.random.uniform(jax.random.key(9), (64, 2), minval=-0.5, maxval=1.0)
    traj = jax.random.uniform(jax.random.key(10), (3, 64, 2), minval=-3.0, maxval=1.0)
    # One bound, two estimates of L_s: only the points it is measured on differ.
    bound = functools.partial(
        bounds.wasserstein_bound,
        jax.random.key(12),
        SDE,
        bump_field,
        x0,
        times=times,
        trajectory=traj,
        n_noise=1,
    )
    # the authors' estimate: L_s on the grid (lipschitz_profile), and the bound built on it
    on_grid = bound(lipschitz_points=grid)
    assert float(jnp.min(on_grid.sampled_outside)) > 0.5  # most of the trajectory leaves the grid
    # the region estimate (region_lipschitz with refinement), through the bound's own path
    on_region = bound(refine_steps=100)
    np.testing.assert_array_equal(on_region.sampled_outside, 0.0)
    grid_est, value = np.asarray(on_grid.lipschitz), np.asarray(on_region.lipschitz)
    assert np.all(value >= grid_est - 1e-6)
    assert float(np.min(value - grid_est)) > 1.0  # the bump is found, the grid misses it
    # and never above the true constant on the box, the sup of lambda_max(sym J)
    dense = jnp.stack(jnp.meshgrid(jnp.linspace(-3.2, 1.2, 90), jnp.linspace(-3.2, 1.2, 90)), -1)
    sup = float(jnp.max(bounds.local_one_sided_lipschitz(bump_field, dense.reshape(-1, 2), 0.0)))
    assert float(np.max(value)) <= sup + 1e-2


def test_intercept_finite_where_integrating_factor_overflows():
    # constant L: log I = c (B(t) - B(t0)), c = 1/2 + L; int beta I^2 = (e^{2 c dB} - 1) / (2 c)
    times = jnp.linspace(0.01, 1.0, 10001)
    L = 40.0
    res = bounds.wasserstein_bound(
        jax.random.key(13),
        SDE,
        true_score,
        jnp.ones((8, 2)),
        times=times,
        lipschitz=jnp.full_like(times, L),
        n_noise=1,
    )
    assert not np.isfinite(float(res.integrating_factor[-1]))  # e^{324} overflows float32
    c = 0.5 + L
    dB = float(SDE.integrated_beta(1.0) - SDE.integrated_beta(0.01))
    exact = 0.5 * (
        math.log(2.0) + 2 * c * dB + math.log(-math.expm1(-2 * c * dB)) - math.log(2 * c)
    )
    # trapezoid error (lambda h)^2 / 12 with lambda = 2 c beta <= 650, h = 1e-4: 4e-4
    assert float(res.intercept) == pytest.approx(exact, abs=1e-2)


def test_region_bad_inputs():
    with pytest.raises(ValueError, match="trajectory"):
        bounds.region_lipschitz(
            jax.random.key(0),
            SDE,
            linear_field,
            jnp.ones((4, 2)),
            jnp.ones((2, 4, 2)),
            jnp.array([0.1, 0.5, 1.0]),
        )
    with pytest.raises(ValueError, match="level"):
        bounds.reverse_sde_path(
            jax.random.key(0),
            SDE,
            linear_field,
            jnp.ones((4, 2)),
            jnp.array([0.1, 1.0]),
            level=-1,
        )
    with pytest.raises(ValueError, match="max_level"):
        bounds.converged_reverse_path(
            jax.random.key(0),
            SDE,
            linear_field,
            jnp.ones((4, 2)),
            jnp.array([0.1, 1.0]),
            max_level=0,
        )
