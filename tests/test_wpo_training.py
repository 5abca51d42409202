"""CholeskyMLP, WPO training through wgdiff.train, and the model inside wgdiff.samplers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wgdiff.nets.cholesky import CholeskyMLP, fill_lower_triangular
from wgdiff.samplers import euler_maruyama, probability_flow
from wgdiff.sde import VPSDE, BrownianSDE
from wgdiff.train import create_train_state, make_train_step
from wgdiff.wpo import (
    BestValidationCheckpoint,
    WPOKernelModel,
    empirical_score_fn,
    fit_wpo,
    init_wpo,
    ism_loss,
    ism_objective,
    log_density,
    model_from_params,
    nonfinite_updates,
    split_centers,
    wpo_optimizer,
)


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def test_cholesky_mlp_lower_triangular_and_positive_definite():
    net = CholeskyMLP(features=(16, 16), jitter=0.05)
    z = jax.random.normal(jax.random.key(0), (5, 3))
    params = jax.jit(net.init)(jax.random.key(1), z)  # one compilation, not one per op
    chol, prec = jax.jit(lambda p: (net.apply(p, z), net.apply(p, z, method=net.precision)))(params)
    assert chol.shape == (5, 3, 3)
    np.testing.assert_array_equal(np.triu(np.asarray(chol), 1), 0.0)
    expected = np.einsum("nij,nkj->nik", chol, chol) + 0.05 * np.eye(3)
    np.testing.assert_allclose(prec, expected, rtol=1e-6)
    # L L^T is PSD, so every eigenvalue is at least the jitter (float32 round-off 1e-6).
    assert np.linalg.eigvalsh(np.asarray(prec, np.float64)).min() >= 0.05 - 1e-6
    np.testing.assert_array_equal(
        fill_lower_triangular(jnp.arange(1.0, 4.0), 2), [[1.0, 0.0], [2.0, 3.0]]
    )


def test_cholesky_mlp_diag_offset_shifts_the_factor():
    z = jax.random.normal(jax.random.key(12), (4, 2))
    plain, shifted = CholeskyMLP(features=(8,)), CholeskyMLP(features=(8,), diag_offset=10.0)
    params = plain.init(jax.random.key(13), z)
    np.testing.assert_allclose(
        shifted.apply(params, z), plain.apply(params, z) + 10.0 * np.eye(2), rtol=1e-6
    )


def test_ism_objective_matches_ism_loss():
    net = CholeskyMLP(features=(8,))
    centers = jax.random.normal(jax.random.key(2), (6, 2))
    batch = jax.random.normal(jax.random.key(3), (10, 2))
    params = net.init(jax.random.key(4), centers)
    loss = ism_objective(net, centers, chunk_size=4)(params, jax.random.key(5), batch)
    prec = net.apply(params, centers, method=net.precision)
    np.testing.assert_allclose(loss, ism_loss(batch, centers, prec), rtol=1e-5)


def test_training_recovers_gaussian_precision():
    """One centre Z: ISM tr(G S G) - 2 tr G, S = mean (x-Z)(x-Z)^T, is minimized at G = S^-1.

    Z is away from 0: at z = 0 the zero-bias GeLU net outputs L = 0 exactly, a saddle of L L^T.
    """
    centre = jnp.array([0.3, -0.2])
    data = centre + jax.random.normal(jax.random.key(6), (2000, 2)) * jnp.array([0.5, 1.0])
    dev = np.asarray(data - centre, np.float64)
    second_moment = dev.T @ dev / dev.shape[0]
    centers = centre[None]
    net, state, train_step, _ = init_wpo(
        jax.random.key(7),
        centers,
        data,
        net=CholeskyMLP(features=(16, 16), jitter=0.01),
        learning_rate=2e-2,
    )
    for _ in range(600):
        state, metrics = train_step(state, data)  # full batch: the exact empirical objective
    learned = net.apply(state.params, centers, method=net.precision)[0]
    # Adam on a strictly convex quadratic in G: 600 steps reach the minimizer to ~1%; 3e-2 slack.
    np.testing.assert_allclose(learned, np.linalg.inv(second_moment), rtol=3e-2, atol=3e-2)
    optimum = np.trace(np.linalg.inv(second_moment)) * -1.0  # tr(S^-1 S S^-1) - 2 tr S^-1
    np.testing.assert_allclose(float(metrics["loss"]), optimum, rtol=1e-3)
    model = model_from_params(net, state.params, centers)
    assert isinstance(model, WPOKernelModel)


def test_training_max_std_caps_kernels_and_ism_stays_the_autodiff_ism(x64):
    """The 6-D fix: jitter 1 / max_std^2 bounds every std during training; the trained
    objective is still the Hyvarinen ISM of the mixture, mean |s|^2 + 2 div s, from an
    autodiff Hessian in float64 (the objective itself runs in float32: rtol 1e-5)."""
    centers = jax.random.normal(jax.random.key(14), (5, 3), jnp.float32)
    data = jax.random.normal(jax.random.key(15), (12, 3), jnp.float32)
    net, state, train_step, _ = init_wpo(
        jax.random.key(16),
        centers,
        data,
        net=CholeskyMLP(features=(8,), diag_offset=1.0),
        max_std=0.5,
        optimizer=wpo_optimizer(4, warmup_steps=1),
    )
    assert net.jitter == 4.0  # 1 / 0.5^2
    for _ in range(3):
        state, _ = train_step(state, data)
    prec = jax.jit(lambda p: net.apply(p, centers, method=net.precision))(state.params)
    prec = np.asarray(prec, np.float64)
    assert np.linalg.eigvalsh(prec).min() >= 4.0 * (1 - 1e-6)  # std <= 0.5 (float32 round-off)
    assert np.linalg.eigvalsh(prec).max() > 4.5  # the cap is not all there is

    def logp(x):
        return log_density(x[None], jnp.asarray(centers, jnp.float64), jnp.asarray(prec))[0]

    def integrand(x):
        s = jax.grad(logp)(x)
        return jnp.sum(s**2) + 2 * jnp.trace(jax.hessian(logp)(x))

    auto = float(jnp.mean(jax.jit(jax.vmap(integrand))(jnp.asarray(data, jnp.float64))))
    loss = jax.jit(ism_objective(net, centers, chunk_size=2))(state.params, jax.random.key(0), data)
    np.testing.assert_allclose(float(loss), auto, rtol=1e-5)
    with pytest.raises(ValueError, match="max_std"):
        init_wpo(jax.random.key(16), centers, data, max_std=0.0)


def test_wpo_optimizer_schedule_clip_and_nonfinite_skip():
    peak, warmup, n, final = 1e-2, 10, 100, 0.1
    opt = wpo_optimizer(n, learning_rate=peak, warmup_steps=warmup, final_fraction=final)

    def rate(k):  # linear warm-up from 0, then cosine to final * peak at step n
        if k < warmup:
            return peak * k / warmup
        cosine = 0.5 * (1 + np.cos(np.pi * (k - warmup) / (n - warmup)))
        return final * peak + (1 - final) * peak * cosine

    # A constant gradient below the clip: Adam's bias-corrected moments are exact, so the
    # update is -rate(k) * g / (|g| + 1e-8) elementwise.
    params, grad = jnp.zeros(2), jnp.array([0.3, -0.4])
    update = jax.jit(opt.update)  # one compilation for the 101 steps
    opt_state = opt.init(params)
    for k in range(n + 1):
        updates, opt_state = update(grad, opt_state, params)
        if k in (0, 5, warmup, 55, n):
            np.testing.assert_allclose(updates, -rate(k) * np.sign(grad), rtol=1e-5, atol=1e-12)
    # Clipping: a gradient of norm 50 enters Adam's first moment as its unit direction.
    opt_state = opt.init(params)
    _, opt_state = update(jnp.array([30.0, 40.0]), opt_state, params)
    mu = optax.tree_utils.tree_get(opt_state, "mu")
    np.testing.assert_allclose(mu, 0.1 * np.array([0.6, 0.8]), rtol=1e-6)  # (1 - b1) g / |g|
    # A non-finite gradient skips the update, and nonfinite_updates counts it.
    state = create_train_state(jax.random.key(17), {"w": jnp.ones(2)}, opt)
    step = make_train_step(lambda p, key, b: jnp.sum((p["w"] - b) ** 2), opt, ema_decay=0.0)
    state, _ = step(state, jnp.array([jnp.nan, 0.0]))
    np.testing.assert_array_equal(state.params["w"], [1.0, 1.0])
    assert nonfinite_updates(state) == 1
    for bad in ({"warmup_steps": n}, {"final_fraction": 0.0}, {"clip_norm": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            wpo_optimizer(n, **{"warmup_steps": warmup, **bad})


def _mixture_ll_float64(x, centers, precisions):
    """Mean log-density of the equal-weight Gaussian mixture, transcribed in float64 NumPy."""
    x, z, g = (np.asarray(a, np.float64) for a in (x, centers, precisions))
    diff = x[:, None, :] - z[None]
    quad = np.einsum("nci,cij,ncj->nc", diff, g, diff)
    logdet = np.linalg.slogdet(g)[1]
    y = -0.5 * quad + 0.5 * logdet - 0.5 * x.shape[1] * np.log(2 * np.pi) - np.log(len(z))
    top = y.max(1, keepdims=True)
    return float(np.mean(top[:, 0] + np.log(np.exp(y - top).sum(1))))


def test_best_validation_checkpoint_keeps_the_best_scored_parameters():
    """The kept model is the best-scoring one (exact mixture likelihood), never a worse later
    one or a non-finite one, and it survives the train step's donation of the state."""
    centers = jax.random.normal(jax.random.key(20), (4, 2))
    data = centers[jax.random.randint(jax.random.key(21), (40,), 0, 4)] + 0.3 * jax.random.normal(
        jax.random.key(22), (40, 2)
    )
    val = data[:20]
    net = CholeskyMLP(features=(8,), diag_offset=3.0)
    params = jax.jit(net.init)(jax.random.key(23), centers[:1])
    precision = jax.jit(lambda p: net.apply(p, centers, method=net.precision))
    state = create_train_state(jax.random.key(23), params, optax.sgd(1.0))
    checkpoint = BestValidationCheckpoint(
        net, centers, val, chunk_size=2, extra=lambda model, st: {"n": model.n_centers}
    )
    good = state.params
    # Kernels 30x narrower (std ~0.01 against data spread 0.3): a much worse validation fit.
    narrow = jax.tree.map(lambda a: a * 30.0, good)
    nan = jax.tree.map(lambda a: a * jnp.nan, good)
    rows = [
        checkpoint(state.replace(params=p, step=jnp.asarray(k)))
        for k, p in ((1, good), (2, narrow), (3, nan))
    ]
    for row, p in zip(rows[:2], (good, narrow), strict=True):
        expected = _mixture_ll_float64(val, centers, precision(p))
        np.testing.assert_allclose(row["validation_ll"], expected, rtol=1e-5)
        assert row["n"] == 4
    assert rows[1]["validation_ll"] < rows[0]["validation_ll"] - 1.0
    assert np.isnan(rows[2]["validation_ll"]) and "n" not in rows[2]
    assert [r["best_step"] for r in rows] == [1, 1, 1] and checkpoint.best_step == 1
    expected = np.asarray(precision(good))
    donate = jax.jit(lambda p: jax.tree.map(lambda a: a + 1.0, p), donate_argnums=0)
    donate(good)  # deletes the buffers of `good`, as a train step does with its state
    assert jax.tree.leaves(good)[0].is_deleted()
    np.testing.assert_allclose(checkpoint.model().precisions(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="validation"):
        BestValidationCheckpoint(net, centers, val[:, :1])


def test_fit_wpo_returns_the_best_validation_checkpoint():
    data = jax.random.normal(jax.random.key(24), (60, 2))
    val = jax.random.normal(jax.random.key(25), (20, 2))
    model, state, history = fit_wpo(
        jax.random.key(26),
        data,
        n_centers=6,
        n_steps=6,
        net=CholeskyMLP(features=(8,), diag_offset=2.0),
        learning_rate=0.1,
        validation=val,
        evaluate_every=2,
        log_every=4,
    )
    scored = [h for h in history if "validation_ll" in h]
    assert [h["step"] for h in scored] == [2, 4, 6] and int(state.step) == 6
    best = max(scored, key=lambda h: h["validation_ll"])
    assert scored[-1]["best_step"] == best["step"]
    np.testing.assert_allclose(float(jnp.mean(model.log_prob(val))), best["validation_ll"])
    with pytest.raises(ValueError, match="evaluate_every"):
        fit_wpo(jax.random.key(26), data, n_centers=6, n_steps=2, evaluate_every=1)


def test_split_centers_is_disjoint():
    data = jnp.arange(20.0).reshape(10, 2)
    centers, rest = split_centers(jax.random.key(8), data, 3)
    assert centers.shape == (3, 2) and rest.shape == (7, 2)
    together = np.sort(np.concatenate([centers[:, 0], rest[:, 0]]))
    np.testing.assert_array_equal(together, np.asarray(data[:, 0]))
    with pytest.raises(ValueError, match="n_centers"):
        split_centers(jax.random.key(8), data, 10)


def _mixture_moments(model, sde, t):
    zs = np.asarray(model.evolved_centers(sde, t), np.float64)
    covs = np.asarray(model.covariances(sde, t), np.float64)
    mean = zs.mean(0)
    return mean, (covs + zs[:, :, None] * zs[:, None, :]).mean(0) - np.outer(mean, mean)


@pytest.mark.parametrize("kind", ["brownian_em", "vp_flow"])
def test_model_drives_samplers_to_its_own_distribution(kind):
    centers = jnp.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]])
    precisions = jnp.stack(
        [jnp.diag(jnp.array(v)) for v in ([25.0, 4.0], [4.0, 25.0], [10.0, 10.0])]
    )
    model = WPOKernelModel.from_precisions(centers, precisions)
    n = 4000
    key_init, key_run = jax.random.split(jax.random.key(9))
    if kind == "brownian_em":
        sde = BrownianSDE(beta=1.0)
        # Start from the exact p_T (the Brownian prior N(0, T I) ignores the data mean).
        x_init = model.sample(key_init, n, sde.T, sde)
        x = euler_maruyama(key_run, sde, model.score_fn(sde), (n, 2), 200, x_init=x_init)
    else:
        sde = VPSDE()
        x = probability_flow(key_run, sde, model.score_fn(sde), (n, 2), 200, method="heun")
    mean, cov = _mixture_moments(model, None, 0.0)
    # Discretization (200 steps) plus Monte Carlo (4000 samples, std ~0.015 on the mean)
    # error: 0.06 absolute on moments of size ~0.7.
    np.testing.assert_allclose(np.asarray(x).mean(0), mean, atol=0.06)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), cov, atol=0.06)


def test_empirical_score_reverse_sde_memorizes():
    """Zhang sec. 4.1: the reverse SDE with the empirical kernel score returns training points."""
    data = jax.random.normal(jax.random.key(10), (30, 2))
    sde = BrownianSDE(beta=1.0)
    x = euler_maruyama(
        jax.random.key(11), sde, empirical_score_fn(data, sde), (500, 2), 400, eps=1e-4
    )
    nn_dist = np.min(np.linalg.norm(np.asarray(x)[:, None] - np.asarray(data)[None], axis=-1), 1)
    # Early stopping at t = 1e-4 leaves std 0.01 around a training point; fresh N(0, I) draws
    # would sit ~0.15 from the nearest of 30 points.
    assert np.median(nn_dist) < 0.03
