"""Tests of wgdiff.data.toy against closed forms, scipy, sklearn and autodiff.

Monte Carlo tolerances are 5 standard errors (estimated from the samples
themselves), so a correct sampler fails with probability < 1e-5 per entry and
the keys are fixed anyway; a wrong scale or centre moves a moment by far more.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats
from sklearn.datasets import make_moons

from wgdiff.data import toy
from wgdiff.sde import VESDE, VPSDE, BrownianSDE

SDES = [VPSDE(beta_min=0.1, beta_max=20.0), VESDE(sigma_min=0.01, sigma_max=5.0), BrownianSDE(2.0)]
SDE_IDS = ["vp", "ve", "brownian"]
# Two sample sizes only, so each jitted sampler compiles once per mixture shape.
N_MC = 20000
N_SMALL = 32


def assert_moments(x, mean, cov, n_se=5.0):
    """Sample mean and covariance of ``x`` within ``n_se`` standard errors of ``(mean, cov)``."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    centred = x - x.mean(0)
    se_mean = centred.std(0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), n_se * se_mean + 1e-6)
    # Entry (i, j) is the mean of c_i c_j; its standard error from E[c_i^2 c_j^2] - E[c_i c_j]^2.
    second = centred.T @ centred / n
    fourth = (centred**2).T @ centred**2 / n
    se_cov = np.sqrt(np.maximum(fourth - second**2, 0.0) / n)
    np.testing.assert_array_less(np.abs(second - cov), n_se * se_cov + 1e-6)


@jax.jit
def grad_log_prob(gm, x):
    """Autodiff reference for the score: per-row ``jax.grad`` of ``gm.log_prob``."""
    return jax.vmap(jax.grad(lambda xi: gm.log_prob(xi[None])[0]))(x)


def scipy_mixture_logpdf(x, gm):
    """float64 reference: log sum_k w_k N(x; mu_k, C_k) by scipy.stats."""
    means = np.asarray(gm.means, np.float64)
    covs = np.asarray(gm.component_covariances(), np.float64)
    weights = np.asarray(gm.weights, np.float64)
    comps = np.stack(
        [stats.multivariate_normal(means[k], covs[k]).logpdf(x) for k in range(len(weights))],
        axis=-1,
    ).reshape(len(x), -1)
    return np.logaddexp.reduce(comps + np.log(weights), axis=-1)


def random_full_mixture(key, k=3, d=3):
    km, kc, kw = jax.random.split(key, 3)
    means = jax.random.normal(km, (k, d))
    a = jax.random.normal(kc, (k, d, d)) * 0.5
    covs = a @ jnp.swapaxes(a, 1, 2) + 0.1 * jnp.eye(d)
    weights = jax.random.uniform(kw, (k,)) + 0.2
    return toy.GaussianMixture.full(means, covs, weights)


def random_isotropic_mixture(key, k=4, d=2):
    km, ks, kw = jax.random.split(key, 3)
    means = 2.0 * jax.random.normal(km, (k, d))
    stds = 0.3 + 0.4 * jax.random.uniform(ks, (k,))
    weights = jax.random.uniform(kw, (k,)) + 0.2
    return toy.GaussianMixture.isotropic(means, stds, weights)


# -- registry -------------------------------------------------------------------------
@pytest.mark.parametrize("name", toy.NAMES)
def test_registry_samplers_shape_dtype_finite(name):
    x = toy.get(name)(jax.random.key(0), N_MC)
    assert x.shape == (N_MC, toy.DIMS[name])
    assert x.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(x)))


def test_registry_rejects_bad_names_and_sizes():
    with pytest.raises(ValueError, match="two_moons"):
        toy.get("moons2")
    with pytest.raises(ValueError, match="grid25"):
        toy.mixture("two_moons")
    for name in toy.NAMES:
        for n in (0, -3, 2.5):
            with pytest.raises(ValueError, match="n must be a positive integer"):
                toy.get(name)(jax.random.key(0), n)
    with pytest.raises(ValueError, match="n must be"):
        toy.grid25_mixture().sample(jax.random.key(0), 0)


# -- mixture sets: exact moments ---------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in toy.MIXTURE_NAMES if n != "one_gaussian"])
def test_mixture_sets_sample_moments(name):
    gm = toy.mixture(name)
    for x in (toy.get(name)(jax.random.key(1), N_MC), gm.sample(jax.random.key(2), N_MC)):
        assert_moments(x, np.asarray(gm.mean()), np.asarray(gm.covariance()))


def test_linear_gaussian_params_and_moments():
    B, mu = toy.linear_gaussian_params(jax.random.key(3))
    assert B.shape == (50, 25) and mu.shape == (50,)
    # Entries: B ~ N(0, 0.25), mu ~ N(10, 1); 1250 and 50 draws, 5 standard errors.
    assert abs(float(B.std()) - 0.5) < 5 * 0.5 / np.sqrt(2 * 1250)
    assert abs(float(mu.mean()) - 10.0) < 5 / np.sqrt(50)
    mean, cov = toy.linear_gaussian_moments(B, mu)
    np.testing.assert_allclose(
        cov, np.asarray(B, np.float64) @ np.asarray(B, np.float64).T, rtol=1e-5, atol=1e-5
    )
    x = toy.sample_linear_gaussian(jax.random.key(4), N_MC, B, mu)
    assert_moments(x, np.asarray(mean), np.asarray(cov))
    assert np.linalg.matrix_rank(np.asarray(cov, np.float64), tol=1e-3) == 25


def test_one_gaussian_clipped_moments():
    sigma = np.sqrt(0.1)
    a = 1.0 / sigma
    # E[clip(X, -1, 1)^2] for X ~ N(0, sigma^2): truncated second moment plus clipped mass.
    var = sigma**2 * (2 * stats.norm.cdf(a) - 1 - 2 * a * stats.norm.pdf(a)) + 2 * stats.norm.sf(a)
    x = toy.sample_one_gaussian(jax.random.key(5), N_MC)
    assert float(jnp.abs(x).max()) <= 1.0
    assert_moments(x, np.zeros(2), var * np.eye(2))
    gm = toy.one_gaussian_mixture()
    np.testing.assert_allclose(gm.covariance(), 0.1 * np.eye(2), rtol=1e-6)


def test_documented_geometries():
    grid = np.asarray(toy.grid25_mixture().means)
    np.testing.assert_array_equal(np.unique(grid[:, 0]), [-4, -2, 0, 2, 4])
    assert len({tuple(p) for p in grid}) == 25
    np.testing.assert_allclose(toy.grid25_mixture().stds, 0.05)
    np.testing.assert_allclose(toy.four_clusters_mixture().stds, 0.0125)
    np.testing.assert_array_equal(np.abs(np.asarray(toy.four_clusters_mixture().means)), 0.5)
    c = toy.question_mark_centres()
    assert c.shape == (30, 3)
    np.testing.assert_allclose(np.linalg.norm(c[:20, :2] - [0, 1], axis=1), 1.0)
    np.testing.assert_allclose(c[0], [-1, 1, 0], atol=1e-12)
    np.testing.assert_allclose(c[19], [0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(c[20:24, 1], [-0.25, -0.5, -0.75, -1.0])
    np.testing.assert_allclose(c[24:].mean(0), [0, -1.75, 0], atol=1e-12)
    dist = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(30)
    assert dist.min() > 0.2  # no two centres merge at std 0.1
    ring = np.asarray(toy.eight_gaussians_mixture().means)
    np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 2 * np.sqrt(2), rtol=1e-6)


# -- manifold sets: exact moments and sklearn ---------------------------------------------
def moons_moments(noise, scale):
    c = 4 / np.pi - 0.5
    cov = np.array([[0.75, -c / 4], [-c / 4, 0.5 - 4 / np.pi**2 + c**2 / 4]])
    return scale * np.array([0.5, 0.25]), scale**2 * (cov + noise**2 * np.eye(2))


def test_two_moons_matches_closed_form_and_sklearn():
    n = N_MC
    mean, cov = moons_moments(0.1, 0.5)
    ours = toy.sample_two_moons(jax.random.key(6), n)
    assert_moments(ours, mean, cov)
    ref = make_moons(n, noise=0.1, random_state=0)[0] / 2
    assert_moments(ref, mean, cov)
    # Both against each other: the sklearn linspace only removes angle noise.
    np.testing.assert_allclose(np.asarray(ours).mean(0), ref.mean(0), atol=0.01)
    np.testing.assert_allclose(np.cov(np.asarray(ours).T), np.cov(ref.T), atol=0.01)
    # Half the points on each moon: the lower moon's points have y below 1/4 - noise-free.
    clean = toy.sample_moons(jax.random.key(7), N_MC, noise=0.0, scale=1.0)
    upper = np.abs(np.linalg.norm(np.asarray(clean), axis=1) - 1.0) < 1e-5
    assert upper.sum() == N_MC // 2


def test_thin_moons_moments():
    mean, cov = moons_moments(0.02, 1.0)
    assert_moments(toy.sample_thin_moons(jax.random.key(8), N_MC), mean, cov)


def test_circles_moments_and_radii():
    x = toy.sample_circles(jax.random.key(9), N_MC, factor=0.5, noise=0.05)
    assert_moments(x, np.zeros(2), ((1 + 0.25) / 4 + 0.05**2) * np.eye(2))
    r = np.linalg.norm(np.asarray(toy.sample_circles(jax.random.key(10), N_MC, noise=0.0)), axis=1)
    np.testing.assert_allclose(np.sort(r), np.repeat([0.5, 1.0], N_MC // 2), rtol=1e-5)


def roll_moments():
    """E and Cov of (t cos t, t sin t), t ~ U[3 pi / 2, 9 pi / 2], by quadrature."""
    a, b = 1.5 * np.pi, 4.5 * np.pi

    def expect(f):
        return integrate.quad(f, a, b, limit=200)[0] / (b - a)

    fx, fy = (lambda t: t * np.cos(t)), (lambda t: t * np.sin(t))
    mx, my = expect(fx), expect(fy)
    cxx = expect(lambda t: fx(t) ** 2) - mx**2
    cyy = expect(lambda t: fy(t) ** 2) - my**2
    cxy = expect(lambda t: fx(t) * fy(t)) - mx * my
    return np.array([mx, my]), np.array([[cxx, cxy], [cxy, cyy]])


def test_swiss_rolls_moments():
    m2, c2 = roll_moments()
    s = 0.2
    x2 = toy.sample_swiss_roll_2d(jax.random.key(11), N_MC)
    assert_moments(x2, s * m2, s**2 * c2 + 0.2**2 * np.eye(2))
    idx = np.ix_([0, 2], [0, 2])
    mean3 = np.array([s * m2[0], 0.0, s * m2[1]])
    cov3 = np.zeros((3, 3))
    cov3[idx] = s**2 * c2
    cov3[1, 1] = s**2 * 21**2 / 12
    x3 = toy.sample_swiss_roll_3d(jax.random.key(12), N_MC)
    assert_moments(x3, mean3, cov3 + 0.1**2 * np.eye(3))
    x6 = toy.sample_swiss_roll_6d(jax.random.key(13), N_MC)
    cov6 = np.zeros((6, 6))
    cov6[:3, :3] = cov3
    assert_moments(x6, np.concatenate([mean3, np.zeros(3)]), cov6 + 0.1**2 * np.eye(6))


# -- GaussianMixture: density and score ------------------------------------------------------
@pytest.mark.parametrize("kind", ["isotropic", "full"])
def test_log_prob_matches_scipy(kind):
    gm = (random_isotropic_mixture if kind == "isotropic" else random_full_mixture)(
        jax.random.key(14)
    )
    x = gm.sample(jax.random.key(15), N_SMALL) + 0.3 * jax.random.normal(
        jax.random.key(16), (N_SMALL, gm.dim)
    )
    ref = scipy_mixture_logpdf(np.asarray(x, np.float64), gm)
    # float32: relative rounding ~1e-7 on terms of size ~|log p| <~ 30.
    np.testing.assert_allclose(gm.log_prob(x), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["four_clusters", "grid25", "question_mark", "eight_gaussians"])
def test_named_mixture_log_prob_matches_scipy(name):
    gm = toy.mixture(name)
    x = gm.sample(jax.random.key(17), N_SMALL)
    ref = scipy_mixture_logpdf(np.asarray(x, np.float64), gm)
    np.testing.assert_allclose(gm.log_prob(x), ref, rtol=1e-5, atol=1e-4)


def test_log_prob_float64_matches_scipy_tightly():
    with jax.enable_x64(True):
        gm = random_full_mixture(jax.random.key(18))
        assert gm.means.dtype == jnp.float64
        x = gm.sample(jax.random.key(19), N_SMALL)
        assert x.dtype == jnp.float64
        ref = scipy_mixture_logpdf(np.asarray(x), gm)
        np.testing.assert_allclose(gm.log_prob(x), ref, rtol=1e-10, atol=1e-10)


def test_log_prob_integrates_to_one_on_grid():
    gm = random_isotropic_mixture(jax.random.key(20))
    lo, hi, m = -9.0, 9.0, 721
    ticks = np.linspace(lo, hi, m)
    grid = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), -1).reshape(-1, 2)
    dens = np.exp(np.asarray(gm.log_prob(jnp.asarray(grid)), np.float64))
    mass = dens.sum() * (ticks[1] - ticks[0]) ** 2
    # Riemann sum of a smooth density (stds >= 0.3, step 0.025): error << 1e-3; tails outside
    # [-9, 9]^2 are < 1e-6 for these means (|mu| < 6).
    assert np.max(np.abs(np.asarray(gm.means))) < 6
    assert abs(mass - 1.0) < 1e-3


@pytest.mark.parametrize("kind", ["isotropic", "full"])
def test_score_is_grad_log_prob(kind):
    gm = (random_isotropic_mixture if kind == "isotropic" else random_full_mixture)(
        jax.random.key(21)
    )
    x = gm.sample(jax.random.key(22), N_SMALL) + 0.5
    grad = grad_log_prob(gm, x)
    np.testing.assert_allclose(gm.score(x), grad, rtol=1e-4, atol=1e-4)


def test_far_field_is_stable_in_float32():
    gm = toy.four_clusters_mixture()  # std 0.0125: exp(log N) underflows at |x| ~ 1
    x = jnp.array([[50.0, -40.0], [3.0, 3.0]])
    lp = gm.log_prob(x)
    ref = scipy_mixture_logpdf(np.asarray(x, np.float64), gm)
    assert np.all(np.isfinite(np.asarray(lp)))
    np.testing.assert_allclose(lp, ref, rtol=1e-5)
    # Far away the nearest centre dominates: score = -(x - mu_nearest) / std^2.
    np.testing.assert_allclose(
        gm.score(x[:1]), -(x[:1] - jnp.array([0.5, -0.5])) / 0.0125**2, rtol=1e-5
    )


# -- perturbed mixtures ---------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("name", ["question_mark", "random_full"])
def test_perturbed_score_is_grad_of_perturbed_log_prob(sde, name):
    gm = random_full_mixture(jax.random.key(23)) if name == "random_full" else toy.mixture(name)
    t = 0.3
    pt = gm.perturbed(sde, t)
    x = pt.sample(jax.random.key(24), N_SMALL)
    grad = grad_log_prob(pt, x)
    score = gm.score_fn(sde)(x, t)
    scale = float(jnp.abs(grad).max())
    np.testing.assert_allclose(score, grad, atol=1e-5 * scale, rtol=1e-4)
    np.testing.assert_allclose(pt.score(x), score, atol=1e-5 * scale, rtol=1e-4)
    np.testing.assert_allclose(gm.log_prob_fn(sde)(x, t), pt.log_prob(x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("name", ["question_mark", "random_full"])
def test_perturbed_moments_match_monte_carlo(sde, name):
    gm = random_full_mixture(jax.random.key(25)) if name == "random_full" else toy.mixture(name)
    t = 0.2
    x0 = gm.sample(jax.random.key(26), N_MC)
    xt, _ = sde.marginal_sample(jax.random.key(27), x0, t)
    pt = gm.perturbed(sde, t)
    assert_moments(xt, np.asarray(pt.mean()), np.asarray(pt.covariance()))
    # Closed form of the perturbation itself.
    m, s = (float(v) for v in sde.marginal_coeffs(jnp.asarray(t)))
    np.testing.assert_allclose(pt.mean(), m * gm.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        pt.covariance(), m**2 * gm.covariance() + s**2 * np.eye(gm.dim), rtol=1e-4, atol=1e-5
    )


def test_perturbed_singular_linear_gaussian_matches_scipy():
    sde = VPSDE()
    gm = toy.linear_gaussian_mixture()
    B, mu = toy.default_linear_gaussian_params()
    B64, mu64 = np.asarray(B, np.float64), np.asarray(mu, np.float64)
    t = 0.5
    m, s = (float(v) for v in sde.marginal_coeffs(jnp.asarray(t)))
    ref = stats.multivariate_normal(m * mu64, m**2 * B64 @ B64.T + s**2 * np.eye(50))
    x = gm.perturbed(sde, t).sample(jax.random.key(28), N_SMALL)
    # float32 eigh of B B^T (eigenvalues up to ~35): relative error ~1e-6 on terms of size ~50.
    np.testing.assert_allclose(
        gm.log_prob_fn(sde)(x, t), ref.logpdf(np.asarray(x, np.float64)), rtol=1e-4, atol=1e-3
    )
    exact_score = -np.linalg.solve(ref.cov, (np.asarray(x, np.float64) - ref.mean).T).T
    np.testing.assert_allclose(
        gm.score_fn(sde)(x, t), exact_score, rtol=1e-3, atol=1e-3 * np.abs(exact_score).max()
    )


def per_sample_case(gm):
    # From eps = 1e-3 as the samplers do: VESDE.marginal_coeffs gives NaN at t = 0 under jit
    # (sqrt of a rounding-negative sigma^2 - sigma_min^2), reported to the sde.py owner.
    t = jnp.linspace(1e-3, 1.0, N_SMALL)
    x = gm.sample(jax.random.key(29), N_SMALL) * 1.1
    return x, t


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_per_sample_time(sde):
    gm = toy.question_mark_mixture()
    x, t = per_sample_case(gm)
    per_sample = gm.score_fn(sde)(x, t)
    one_by_one = jnp.concatenate(
        [gm.perturbed(sde, float(ti)).score(x[i : i + 1]) for i, ti in enumerate(t)]
    )
    scale = float(jnp.abs(one_by_one).max())
    np.testing.assert_allclose(per_sample, one_by_one, rtol=1e-4, atol=1e-5 * scale)


def test_score_fn_under_jit_and_vmap():
    sde = VPSDE()
    gm = toy.question_mark_mixture()
    score_fn = gm.score_fn(sde)
    x, t = per_sample_case(gm)
    reference = score_fn(x, t)
    scale = float(jnp.abs(reference).max())
    np.testing.assert_allclose(jax.jit(score_fn)(x, t), reference, rtol=1e-5, atol=1e-6 * scale)
    # vmap over a leading batch of (x, t) pairs and over single examples.
    batched = jax.vmap(score_fn)(jnp.stack([x, x[::-1]]), jnp.stack([t, t[::-1]]))
    np.testing.assert_allclose(batched[0], reference, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(batched[1], reference[::-1], rtol=1e-5, atol=1e-6 * scale)
    single = jax.vmap(lambda xi, ti: score_fn(xi[None], ti)[0])(x, t)
    np.testing.assert_allclose(single, reference, rtol=1e-5, atol=1e-6 * scale)
    # The mixture itself is a pytree: it passes through jit as an argument.
    jitted = jax.jit(lambda g, xx: g.score_fn(sde)(xx, 0.5))(gm, x)
    np.testing.assert_allclose(
        jitted, gm.perturbed(sde, 0.5).score(x), rtol=1e-5, atol=1e-6 * scale
    )


def test_bad_inputs_raise():
    gm = toy.grid25_mixture()
    sde = VPSDE()
    with pytest.raises(ValueError, match=r"x must have shape \(n, d\)"):
        gm.log_prob(jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(n,\)"):
        gm.score_fn(sde)(jnp.zeros((4, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="t must lie in"):
        gm.score_fn(sde)(jnp.zeros((4, 2)), 1.5)
    with pytest.raises(ValueError, match="t must be a scalar"):
        gm.perturbed(sde, jnp.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        gm.score(jnp.full((1, 2), jnp.nan))
    with pytest.raises(ValueError, match="stds must have shape"):
        toy.GaussianMixture.isotropic(jnp.zeros((3, 2)), jnp.ones(2))
    with pytest.raises(ValueError, match="stds must be positive"):
        toy.GaussianMixture.isotropic(jnp.zeros((2, 2)), jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="covs must have shape"):
        toy.GaussianMixture.full(jnp.zeros((2, 2)), jnp.ones((2, 3, 3)))
    with pytest.raises(ValueError, match="positive semi-definite"):
        toy.GaussianMixture.full(jnp.zeros((1, 2)), -jnp.eye(2)[None])
    with pytest.raises(ValueError, match="weights must"):
        toy.GaussianMixture.isotropic(jnp.zeros((2, 2)), 1.0, jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="means must have shape"):
        toy.GaussianMixture.isotropic(jnp.zeros(3), 1.0)
