"""Tests for wgdiff.wpo: kernel formulas against autodiff, float64 NumPy and PDE identities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgdiff.sde import VESDE, VPSDE, BrownianSDE
from wgdiff.wpo import (
    WPOKernelModel,
    empirical_kernel_score,
    empirical_log_density,
    empirical_score_fn,
    evolve,
    evolve_affine,
    evolve_mixture,
    ism_loss,
    ism_terms,
    kernel_diagnostics,
    kernel_score,
    lift,
    lifted_log_density,
    lifted_score,
    lifted_weights,
    log_density,
    marginal_mixture,
    tune_kde_variance,
    tune_max_std,
)


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def random_mixture(seed, n_centers, d, dtype=np.float64, scale=1.0):
    """Centres ~ N(0, scale^2 I); precisions A A^T + 0.5 I with well-spread eigenvalues."""
    rng = np.random.default_rng(seed)
    centers = scale * rng.normal(size=(n_centers, d))
    a = rng.normal(size=(n_centers, d, d))
    precisions = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(d)
    return centers.astype(dtype), precisions.astype(dtype)


def numpy_mixture(x, centers, precisions):
    """Float64 brute force, one component at a time: log-density, score, ISM integrand."""
    x, centers, precisions = (np.asarray(a, np.float64) for a in (x, centers, precisions))
    n, d = x.shape
    logs, grads, laps = [], [], []
    for z, gamma in zip(centers, precisions, strict=True):
        cov = np.linalg.inv(gamma)
        diff = x - z
        quad = np.einsum("ni,ij,nj->n", diff, gamma, diff)
        logs.append(
            -0.5 * quad - 0.5 * np.log(np.linalg.det(2 * np.pi * cov)) - np.log(len(centers))
        )
        grad = -diff @ gamma
        grads.append(grad)
        laps.append(np.sum(grad**2, axis=1) - np.trace(gamma))
    logs = np.stack(logs, 1)
    top = logs.max(1, keepdims=True)
    w = np.exp(logs - top)
    lse = top[:, 0] + np.log(w.sum(1))
    w = w / w.sum(1, keepdims=True)
    score = np.einsum("nk,kni->ni", w, np.stack(grads))
    lap_ratio = np.sum(w * np.stack(laps, 1), axis=1)  # pi^-1 Laplacian pi
    return lse, score, 2 * lap_ratio - np.sum(score**2, 1)


@jax.jit
def autodiff_ism_integrand(x, centers, precisions):
    """|s|^2 + 2 div s with s = grad log_density and div by the exact Jacobian trace.

    Module-level jit: compiled once per shape and dtype, shared by the tests below.
    """

    def logp(xi):
        return log_density(xi[None], centers, precisions)[0]

    def one(xi):
        s = jax.grad(logp)(xi)
        return jnp.sum(s**2) + 2 * jnp.trace(jax.hessian(logp)(xi))

    return jax.vmap(one)(x)


# One mixture and one query set for most tests: the streamed kernels compile once per
# (shapes, dtype, chunk_size), so shared shapes keep the default run cheap. 9 centres in
# chunks of 4 leave a padded last chunk.
N_MIX, D_MIX, N_X, CHUNK = 9, 3, 6, 4


def shared_mixture(dtype=np.float64, scale=1.0):
    return random_mixture(0, N_MIX, D_MIX, dtype, scale)


def shared_x(dtype=np.float64):
    return np.random.default_rng(1).normal(size=(N_X, D_MIX)).astype(dtype)


# -- kernel formulas -----------------------------------------------------------------------


def test_log_density_score_ism_match_float64_numpy(x64):
    centers, precisions = shared_mixture()
    x = shared_x()
    lse, score, integrand = numpy_mixture(x, centers, precisions)
    # float64 both sides: agreement to round-off (1e-10 relative leaves room for Cholesky vs det)
    np.testing.assert_allclose(log_density(x, centers, precisions), lse, rtol=1e-10)
    np.testing.assert_allclose(kernel_score(x, centers, precisions), score, rtol=1e-10, atol=1e-12)
    _, closed = ism_terms(x, centers, precisions)
    np.testing.assert_allclose(closed, integrand, rtol=1e-10, atol=1e-12)


def test_kernel_score_is_grad_of_log_density(x64):
    centers, precisions = shared_mixture()
    x = jnp.asarray(shared_x())
    grad = jax.grad(lambda y: jnp.sum(log_density(y, centers, precisions, chunk_size=CHUNK)))(x)
    np.testing.assert_allclose(
        kernel_score(x, centers, precisions, chunk_size=CHUNK), grad, rtol=1e-10
    )


@pytest.mark.parametrize("enable_x64", [True, False])
def test_closed_form_ism_equals_autodiff_ism(enable_x64):
    jax.config.update("jax_enable_x64", enable_x64)
    try:
        dtype = np.float64 if enable_x64 else np.float32
        centers, precisions = shared_mixture(dtype, scale=0.7)
        x = shared_x(dtype)
        closed = ism_loss(x, centers, precisions, chunk_size=CHUNK)
        auto = jnp.mean(autodiff_ism_integrand(jnp.asarray(x), centers, precisions))
        # The issue asks for 1e-5 relative; float64 meets it with room. In float32 the two
        # routes round differently (Hessian through log-sum-exp vs softmax moments), so
        # 1e-4 there: ~100 ulp on terms of size ~|Gamma|^2 |x|^2.
        np.testing.assert_allclose(closed, auto, rtol=1e-5 if enable_x64 else 1e-4)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_ism_gradient_matches_unchunked_reference(x64):
    """Gradient w.r.t. the precisions through the streamed log-sum-exp (held-out maximum)."""
    centers, precisions = shared_mixture()
    x = jnp.asarray(shared_x())

    def reference(p):
        diff = x[:, None, :] - centers[None]
        gd = jnp.einsum("kij,nkj->nki", p, diff)
        logdet = jnp.linalg.slogdet(p)[1]
        y = -0.5 * jnp.sum(diff * gd, -1) + 0.5 * logdet - 1.5 * jnp.log(2 * jnp.pi) - jnp.log(9.0)
        w = jax.nn.softmax(y, axis=1)
        s = -jnp.einsum("nk,nki->ni", w, gd)
        lap = jnp.sum(w * (jnp.sum(gd**2, -1) - jnp.trace(p, axis1=1, axis2=2)), 1)
        return jnp.mean(2 * lap - jnp.sum(s**2, -1))

    grad_ref = jax.jit(jax.grad(reference))(jnp.asarray(precisions))
    grad = jax.jit(jax.grad(lambda p: ism_loss(x, centers, p, chunk_size=CHUNK)))(
        jnp.asarray(precisions)
    )
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-9, atol=1e-12)


def test_chunking_invariance():
    centers, precisions = shared_mixture(np.float32)
    x = shared_x(np.float32)
    ref_lp = log_density(x, centers, precisions)  # one chunk of 256
    ref_terms = ism_terms(x, centers, precisions)
    for chunk in (1, CHUNK):
        # Only the summation order changes: float32 round-off, 1e-5 relative.
        np.testing.assert_allclose(
            log_density(x, centers, precisions, chunk_size=chunk), ref_lp, rtol=1e-5
        )
        for a, b in zip(
            ism_terms(x, centers, precisions, chunk_size=chunk), ref_terms, strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_hundred_thousand_centres_stream():
    """N = 1e5 centres: streamed in chunks; compared with a float64 NumPy brute force."""
    rng = np.random.default_rng(10)
    n_centers, d = 100_000, 2
    centers = rng.normal(size=(n_centers, d)).astype(np.float32)
    precisions = np.broadcast_to(np.diag([4.0, 9.0]), (n_centers, d, d)).astype(np.float32)
    x = rng.normal(size=(4, d)).astype(np.float32)
    diff = x[:, None, :].astype(np.float64) - centers[None].astype(np.float64)
    logits = -0.5 * (4 * diff[..., 0] ** 2 + 9 * diff[..., 1] ** 2)
    top = logits.max(1, keepdims=True)
    lse = (
        top[:, 0]
        + np.log(np.exp(logits - top).sum(1))
        + 0.5 * np.log(36)
        - np.log(2 * np.pi)
        - np.log(n_centers)
    )
    # float32 accumulation over 1e5 terms: 1e-4 relative.
    np.testing.assert_allclose(log_density(x, centers, precisions, chunk_size=4096), lse, rtol=1e-4)


def test_log_density_integrates_to_one(x64):
    centers, precisions = random_mixture(11, 5, 2, scale=0.5)
    grid = np.linspace(-7, 7, 601)
    xx, yy = np.meshgrid(grid, grid, indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel()], 1)
    dens = np.exp(np.asarray(log_density(pts, centers, precisions))).reshape(xx.shape)
    total = np.trapezoid(np.trapezoid(dens, grid, axis=1), grid)
    # Smallest eigenvalue >= 0.5 so the tails beyond |x| = 7 are < 1e-6; step 0.023 resolves
    # std >= ~0.1 to trapezoid error far below 1e-4.
    assert abs(total - 1.0) < 1e-4


def test_empirical_kernel_score_and_density(x64):
    rng = np.random.default_rng(12)
    data, x = rng.normal(size=(N_MIX, D_MIX)), shared_x()
    var = 0.3
    iso = np.broadcast_to(np.eye(3) / var, (N_MIX, 3, 3))
    np.testing.assert_allclose(
        empirical_log_density(x, data, var, chunk_size=CHUNK), log_density(x, data, iso), rtol=1e-10
    )
    np.testing.assert_allclose(
        empirical_kernel_score(x, data, var, chunk_size=CHUNK),
        kernel_score(x, data, iso),
        rtol=1e-10,
    )
    grad = jax.grad(lambda y: jnp.sum(empirical_log_density(y, data, var)))(jnp.asarray(x))
    np.testing.assert_allclose(empirical_kernel_score(x, data, var), grad, rtol=1e-10)
    per_sample = empirical_kernel_score(x, data, jnp.full((6,), var))
    np.testing.assert_allclose(per_sample, empirical_kernel_score(x, data, var), rtol=1e-12)


# -- time evolution -------------------------------------------------------------------------


def test_evolved_density_solves_heat_equation(x64):
    """d eta/ds = beta^2/2 Laplacian eta at random points (Zhang Prop. 4.1), by autodiff."""
    centers, precisions = random_mixture(13, 4, 3, scale=0.8)
    beta = 1.7
    points = jnp.asarray(np.random.default_rng(14).normal(size=(5, 3)))

    def eta(x, s):
        return jnp.exp(log_density(x[None], centers, evolve(precisions, beta, s))[0])

    @jax.jit
    def both_sides(s):
        dt = jax.vmap(jax.grad(eta, argnums=1), (0, None))(points, s)
        lap = jax.vmap(lambda x: jnp.trace(jax.hessian(eta)(x, s)))(points)
        return dt, 0.5 * beta**2 * lap

    for s in (0.05, 0.4):
        np.testing.assert_allclose(*both_sides(s), rtol=1e-8, atol=1e-14)


def test_vp_evolved_density_solves_fokker_planck(x64):
    """VP: d p/dt = -div(f p) + g^2/2 Laplacian p with f = -beta(t) x / 2, g^2 = beta(t)."""
    centers, precisions = random_mixture(15, 3, 2, scale=1.5)
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    points = jnp.asarray(np.random.default_rng(16).normal(size=(4, 2)))

    def p(x, t):
        z, gam = evolve_mixture(centers, precisions, sde, t)
        return jnp.exp(log_density(x[None], z, gam)[0])

    @jax.jit
    def both_sides(t):
        b = sde.beta(t)
        dt = jax.vmap(jax.grad(p, argnums=1), (0, None))(points, t)
        grad = jax.vmap(jax.grad(p), (0, None))(points, t)
        lap = jax.vmap(lambda x: jnp.trace(jax.hessian(p)(x, t)))(points)
        vals = jax.vmap(p, (0, None))(points, t)
        # -div(f p) = beta/2 (d p + x . grad p)
        return dt, 0.5 * b * (2 * vals + jnp.sum(points * grad, 1)) + 0.5 * b * lap

    for t in (0.1, 0.5):
        np.testing.assert_allclose(*both_sides(t), rtol=1e-7, atol=1e-14)


def test_evolve_equals_inverse_formula(x64):
    _, precisions = random_mixture(17, 6, 3)
    expected = np.linalg.inv(np.linalg.inv(precisions) + 2.0**2 * 0.3 * np.eye(3))
    np.testing.assert_allclose(evolve(precisions, 2.0, 0.3), expected, rtol=1e-10)
    np.testing.assert_allclose(evolve(precisions, 2.0, 0.0), precisions, rtol=1e-12)
    vp = np.linalg.inv(0.5**2 * np.linalg.inv(precisions) + 0.8**2 * np.eye(3))
    np.testing.assert_allclose(evolve_affine(precisions, 0.5, 0.8), vp, rtol=1e-10)


def test_marginal_mixture_integrates_out_coordinates(x64):
    centers, precisions = random_mixture(18, 3, 3, scale=0.5)
    z2, g2 = marginal_mixture(centers, precisions, (2, 0))
    pts = np.random.default_rng(19).normal(size=(4, 2)) * 0.7
    grid = np.linspace(-9, 9, 1201)
    full = np.zeros((4, grid.size, 3))
    full[:, :, 2], full[:, :, 0] = pts[:, None, 0], pts[:, None, 1]
    full[:, :, 1] = grid[None]
    dens = np.exp(np.asarray(log_density(full.reshape(-1, 3), centers, precisions)))
    integral = np.trapezoid(dens.reshape(4, grid.size), grid, axis=1)
    # Quadrature over a well-resolved Gaussian slice: 1e-6 relative.
    np.testing.assert_allclose(np.exp(log_density(pts, z2, g2)), integral, rtol=1e-6)


# -- model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sde", [BrownianSDE(beta=1.3), VPSDE(), VESDE(sigma_min=0.01, sigma_max=5.0)]
)
def test_model_score_matches_evolved_mixture(x64, sde):
    centers, precisions = shared_mixture()
    model = WPOKernelModel.from_precisions(centers, precisions, chunk_size=CHUNK)
    x = jnp.asarray(shared_x())
    ts = jnp.asarray([0.0, 0.01, 0.2, 0.45, 0.6, 1.0])
    per_sample = model.score_fn(sde)(x, ts)
    per_sample_lp = model.log_prob(x, ts, sde)
    for i, t in enumerate(ts):
        z, g = evolve_mixture(centers, precisions, sde, t)
        score_i, lp_i = kernel_score(x[i : i + 1], z, g), log_density(x[i : i + 1], z, g)
        np.testing.assert_allclose(per_sample[i], score_i[0], rtol=1e-9)
        np.testing.assert_allclose(per_sample_lp[i], lp_i[0], rtol=1e-10)
        np.testing.assert_allclose(model.precisions(sde, t), g, rtol=1e-9, atol=1e-12)
    if isinstance(sde, BrownianSDE):
        np.testing.assert_allclose(
            model.score(x, 0.2, sde),
            kernel_score(x, centers, evolve(precisions, 1.3, 0.2)),
            rtol=1e-9,
        )


def test_model_samples_have_mixture_moments():
    centers, precisions = random_mixture(22, 4, 2, np.float32, scale=2.0)
    model = WPOKernelModel.from_precisions(centers, precisions)
    sde = VPSDE()
    for sde_, t in ((None, 0.0), (sde, 0.3)):
        x = np.asarray(model.sample(jax.random.key(0), 200_000, t, sde_), np.float64)
        zs = np.asarray(model.evolved_centers(sde_, t), np.float64)
        covs = np.asarray(model.covariances(sde_, t), np.float64)
        mean = zs.mean(0)
        cov = (covs + zs[:, :, None] * zs[:, None, :]).mean(0) - np.outer(mean, mean)
        # 2e5 samples: Monte Carlo error ~ 3 * sqrt(var / n) ~ 0.02 on entries of size ~4.
        np.testing.assert_allclose(x.mean(0), mean, atol=0.03)
        np.testing.assert_allclose(np.cov(x.T), cov, atol=0.06)


def test_empirical_score_fn_under_vp_equals_diffused_mixture(x64):
    data, x = np.random.default_rng(23).normal(size=(N_MIX, D_MIX)), shared_x()
    sde = VPSDE()
    t = 0.4
    m, s = sde.marginal_coeffs(t)
    iso = np.broadcast_to(np.eye(D_MIX) / s**2, (N_MIX, D_MIX, D_MIX))
    np.testing.assert_allclose(
        empirical_score_fn(data, sde, chunk_size=CHUNK)(x, t),
        kernel_score(x, m * data, iso),
        rtol=1e-9,
    )


# -- lifted-space reading -----------------------------------------------------------------


def test_lifted_network_equals_kernel_model(x64):
    centers, precisions = shared_mixture()
    x = shared_x()
    weights = lifted_weights(centers, precisions)
    assert lift(x).shape == (N_X, D_MIX**2 + D_MIX)  # [vec(x x^T); x] (eq. 32)
    np.testing.assert_allclose(
        lifted_log_density(x, weights, chunk_size=CHUNK),
        log_density(x, centers, precisions),
        rtol=1e-10,
    )
    np.testing.assert_allclose(
        lifted_score(x, weights, chunk_size=CHUNK),
        kernel_score(x, centers, precisions),
        rtol=1e-9,
        atol=1e-12,
    )


# -- kernel-collapse fix: std cap, diagnostics, validation choices ---------------------------


def collapsed_mixture():
    """Six kernels on a segment of the x-axis; three are std 10 wide along it (the 6-D collapse)."""
    centers = np.stack([np.linspace(-1.0, 1.0, 6), np.zeros(6)], 1)
    precisions = np.broadcast_to(np.diag([0.01, 100.0]), (6, 2, 2)).copy()
    precisions[::2] = np.diag([4.0, 100.0])  # every other kernel is moderate
    return centers, precisions


def test_cap_std_floors_eigenvalues_and_keeps_closed_form_ism(x64):
    centers, precisions = shared_mixture()
    precisions = precisions / 4.0  # eigenvalues ~0.13 to ~2.5: a cap of std 1 binds on some axes
    model = WPOKernelModel.from_precisions(centers, precisions)
    capped = model.cap_std(1.0)
    lam, vecs = np.linalg.eigh(precisions)
    assert lam.min() < 1.0 < lam.max()
    expected = np.einsum("nij,nj,nkj->nik", vecs, np.maximum(lam, 1.0), vecs)
    np.testing.assert_allclose(capped.precisions(), expected, rtol=1e-10, atol=1e-12)
    assert float(np.max(capped.kernel_stds())) <= 1.0 + 1e-12
    x = shared_x()
    lse, score, integrand = numpy_mixture(x, centers, expected)
    np.testing.assert_allclose(capped.log_prob(x), lse, rtol=1e-10)
    np.testing.assert_allclose(capped.score(x), score, rtol=1e-9, atol=1e-12)
    # The fix changes the precisions only: the closed-form ISM (eq. 30-31) of the capped
    # model still equals the Hyvarinen integrand from an autodiff Hessian, to round-off.
    closed = ism_loss(x, centers, capped.precisions(), chunk_size=CHUNK)
    auto = jnp.mean(autodiff_ism_integrand(jnp.asarray(x), centers, capped.precisions()))
    np.testing.assert_allclose(closed, auto, rtol=1e-10)
    np.testing.assert_allclose(closed, integrand.mean(), rtol=1e-10)
    # A cap above every std (or inf) changes nothing.
    np.testing.assert_array_equal(model.cap_std(np.inf).eigvals, model.eigvals)
    with pytest.raises(ValueError, match="max_std"):
        model.cap_std(0.0)


def test_responsibilities_match_numpy_softmax(x64):
    centers, precisions = shared_mixture()
    x = shared_x()
    model = WPOKernelModel.from_precisions(centers, precisions, chunk_size=CHUNK)  # padded chunk
    logs = np.stack(
        [
            -0.5 * np.einsum("ni,ij,nj->n", x - z, g, x - z) + 0.5 * np.log(np.linalg.det(g))
            for z, g in zip(centers, precisions, strict=True)
        ],
        1,
    )
    w = np.exp(logs - logs.max(1, keepdims=True))
    expected = (w / w.sum(1, keepdims=True)).mean(0)
    np.testing.assert_allclose(model.responsibilities(x), expected, rtol=1e-10)
    np.testing.assert_allclose(float(jnp.sum(model.responsibilities(x))), 1.0, rtol=1e-12)


def test_kernel_diagnostics_spectrum_axis_and_shares(x64):
    centers, precisions = collapsed_mixture()
    model = WPOKernelModel.from_precisions(centers, precisions, chunk_size=4)
    x = np.stack([np.linspace(-1.0, 1.0, 50), np.zeros(50)], 1)
    diag = kernel_diagnostics(model, x)
    np.testing.assert_allclose(diag.stds[1::2], [[10.0, 0.1]] * 3, rtol=1e-12)
    np.testing.assert_allclose(diag.stds[::2], [[0.5, 0.1]] * 3, rtol=1e-12)
    np.testing.assert_allclose(np.abs(diag.widest_axis), [[1.0, 0.0]] * 6, atol=1e-12)
    np.testing.assert_allclose(diag.shares, 6 * model.responsibilities(x), rtol=1e-12)
    summary = diag.summary(wide_std=1.0)
    assert summary["share_kernels_widest_std_above_1"] == 0.5
    assert summary["widest_std_max"] == pytest.approx(10.0)
    np.testing.assert_allclose(summary["widest_axis_mean_abs_component"], [1.0, 0.0], atol=1e-12)


def test_tune_max_std_maximizes_validation_likelihood(x64):
    centers, precisions = collapsed_mixture()
    model = WPOKernelModel.from_precisions(centers, precisions)
    rng = np.random.default_rng(34)
    validation = np.stack([rng.uniform(-1.1, 1.1, 400), 0.1 * rng.normal(size=400)], 1)
    candidates = [0.2, 0.5, 1.0, 3.0, np.inf]
    capped, choice = tune_max_std(model, validation, candidates)
    expected = []
    for c in candidates:
        lam, vecs = np.linalg.eigh(precisions)
        prec = np.einsum("nij,nj,nkj->nik", vecs, np.maximum(lam, 1.0 / c**2), vecs)
        expected.append(numpy_mixture(validation, centers, prec)[0].mean())
    np.testing.assert_allclose(choice.scores, expected, rtol=1e-10)
    assert choice.best == candidates[int(np.argmax(expected))]
    # The wide kernels spill mass past the segment: a finite cap must beat no cap here.
    assert np.isfinite(choice.best) and choice.scores[-1] < max(choice.scores)
    np.testing.assert_array_equal(capped.eigvals, model.cap_std(choice.best).eigvals)
    _, default = tune_max_std(model, validation)  # default grid includes inf
    assert np.isinf(default.candidates[-1]) and len(default.candidates) == 17


def test_tune_kde_variance_matches_numpy(x64):
    data, validation = np.random.default_rng(35).normal(size=(N_MIX, D_MIX)), shared_x()
    variances = [0.01, 0.1, 0.3, 1.0, 3.0]
    choice = tune_kde_variance(data, validation, variances, chunk_size=CHUNK)
    expected = []
    for v in variances:
        sq = np.sum((validation[:, None] - data[None]) ** 2, -1)
        logk = -0.5 * sq / v - 1.5 * np.log(2 * np.pi * v) - np.log(len(data))
        top = logk.max(1, keepdims=True)
        expected.append(np.mean(top[:, 0] + np.log(np.exp(logk - top).sum(1))))
    np.testing.assert_allclose(choice.scores, expected, rtol=1e-10)
    assert choice.best == variances[int(np.argmax(expected))]
    with pytest.raises(ValueError, match="candidates"):
        tune_kde_variance(data, validation, [0.1, -1.0])


# -- validation -----------------------------------------------------------------------------


def test_bad_input_raises():
    centers, precisions = random_mixture(26, 3, 2, np.float32)
    with pytest.raises(ValueError, match="x must have shape"):
        log_density(np.zeros(2), centers, precisions)
    with pytest.raises(ValueError, match="precisions must have shape"):
        kernel_score(np.zeros((1, 2)), centers, precisions[:, :1])
    with pytest.raises(ValueError, match="centers must have shape"):
        ism_loss(np.zeros((1, 3)), centers, precisions)
    with pytest.raises(ValueError, match="NaN"):
        log_density(np.full((1, 2), np.nan), centers, precisions)
    with pytest.raises(ValueError, match="variance"):
        empirical_kernel_score(np.zeros((1, 2)), centers, -1.0)
    with pytest.raises(ValueError, match="positive definite"):
        WPOKernelModel.from_precisions(centers, -precisions)
    with pytest.raises(ValueError, match="dims"):
        marginal_mixture(centers, precisions, (0, 0))
    with pytest.raises(ValueError, match="chunk_size"):
        log_density(np.zeros((1, 2)), centers, precisions, chunk_size=0)
