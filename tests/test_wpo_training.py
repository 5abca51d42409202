"""CholeskyMLP, WPO training through wgdiff.train, and the model inside wgdiff.samplers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgdiff.nets.cholesky import CholeskyMLP, fill_lower_triangular
from wgdiff.samplers import euler_maruyama, probability_flow
from wgdiff.sde import VPSDE, BrownianSDE
from wgdiff.wpo import (
    WPOKernelModel,
    empirical_score_fn,
    init_wpo,
    ism_loss,
    ism_objective,
    model_from_params,
    split_centers,
)


def test_cholesky_mlp_lower_triangular_and_positive_definite():
    net = CholeskyMLP(features=(16, 16), jitter=0.05)
    z = jax.random.normal(jax.random.key(0), (5, 3))
    params = net.init(jax.random.key(1), z)
    chol = net.apply(params, z)
    assert chol.shape == (5, 3, 3)
    np.testing.assert_array_equal(np.triu(np.asarray(chol), 1), 0.0)
    prec = net.apply(params, z, method=net.precision)
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
