"""Projection objective (Ghimire sec 8.2) and the Predict-Project sampler (Alg. 1).

References: Gaussian-conditioning closed forms (derived in wgdiff.losses.projection),
a brute-force NumPy regression for E[x_mean | x_pred], Euler-Maruyama, and a
float64 NumPy re-implementation of Alg. 1.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wgdiff.losses.projection import (
    StepConditioned,
    gaussian_optimal_projection,
    gaussian_projection_minimum,
    gaussian_projection_norm,
    joint_objective,
    projection_loss,
    projection_terms,
)
from wgdiff.losses.score_matching import dsm_loss
from wgdiff.nets import ScoreMLP
from wgdiff.samplers.predict_project import PAPER_DELTA_MU, auto_delta_mu, predict_project
from wgdiff.samplers.scan import euler_maruyama
from wgdiff.sde import VPSDE

SDE_ = VPSDE()
MEAN0 = np.array([0.5, -1.0])
VAR0 = np.array([0.3, 0.05])


def exact_score(x, t):
    """Score of the VP-perturbed N(MEAN0, diag(VAR0))."""
    m, s = SDE_.marginal_coeffs(t)
    m, s = m[:, None], s[:, None]
    return -(x - m * MEAN0) / (m**2 * VAR0 + s**2)


def optimal_projection_jax(y, t_next, h):
    """Closed-form T* in JAX, a transcription of ``gaussian_optimal_projection``.

    Written in jnp rather than as a host callback to the NumPy function: that function
    calls the SDE's JAX methods, and JAX called inside ``jax.pure_callback`` can deadlock
    on CPU (jax-ml/jax#24255). Agreement with the NumPy version is tested below.
    """
    n = y.shape[0]
    h = jnp.broadcast_to(jnp.asarray(h, y.dtype), (n,))
    t = jnp.broadcast_to(jnp.asarray(t_next, y.dtype), (n,)) + h
    a = SDE_.drift_coeff(t)[:, None]
    g2 = (SDE_.diffusion(t) ** 2)[:, None]
    m, s = (v[:, None] for v in SDE_.marginal_coeffs(t))
    m_next = SDE_.marginal_coeffs(t - h)[0][:, None]
    h = h[:, None]
    v_t = m**2 * VAR0 + s**2
    x_t = (y - h * g2 * m * MEAN0 / v_t) / (1.0 + h * (a - g2 / v_t))
    denoised = MEAN0 + m * VAR0 / v_t * (x_t - m * MEAN0)
    return (m_next * denoised - y) / (1.0 + 0.5 * jnp.sqrt(0.5 * g2))


def test_jax_optimal_projection_matches_numpy_closed_form():
    y = jnp.asarray(np.random.default_rng(4).standard_normal((64, 2)), jnp.float32)
    t_next = jnp.linspace(0.05, 0.9, 64)
    got = optimal_projection_jax(y, t_next, 0.05)
    expected = gaussian_optimal_projection(SDE_, MEAN0, VAR0, y, np.asarray(t_next) + 0.05, 0.05)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-4, atol=2e-5)  # float32


def gaussian_data(n, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(MEAN0 + np.sqrt(VAR0) * rng.standard_normal((n, 2)), jnp.float32)


def test_closed_form_optimum_matches_numpy_regression():
    """T* from Gaussian conditioning = least-squares regression of x_mean on x_pred (float64)."""
    rng = np.random.default_rng(1)
    t, h = 0.6, 0.05
    m, s = (float(v) for v in SDE_.marginal_coeffs(t))
    m_next = float(SDE_.marginal_coeffs(t - h)[0])
    beta = float(SDE_.beta(t))
    x0 = MEAN0 + np.sqrt(VAR0) * rng.standard_normal((400_000, 2))
    x_t = m * x0 + s * rng.standard_normal(x0.shape)
    v_t = m**2 * VAR0 + s**2
    score = -(x_t - m * MEAN0) / v_t
    x_pred = x_t + h * (0.5 * beta * x_t + beta * score)
    x_mean = m_next * x0
    c = 0.5 * np.sqrt(beta / 2)
    y = x_pred[:50]
    for i in range(2):  # jointly Gaussian, so the regression is linear per coordinate
        design = np.stack([x_pred[:, i], np.ones(len(x0))], axis=1)
        coef, *_ = np.linalg.lstsq(design, x_mean[:, i], rcond=None)
        expected = (coef[0] * y[:, i] + coef[1] - y[:, i]) / (1 + c)
        got = gaussian_optimal_projection(SDE_, MEAN0, VAR0, y, t, h)[:, i]
        # Regression coefficients from 4e5 samples: error ~1e-3 relative.
        np.testing.assert_allclose(got, expected, atol=5e-3)


@pytest.mark.parametrize("n_steps", [10, 40])
def test_loss_of_closed_form_optimum_equals_closed_form_minimum(n_steps):
    x0 = gaussian_data(20_000)
    terms = projection_terms(
        jax.random.key(2), SDE_, exact_score, optimal_projection_jax, x0, n_steps=n_steps
    )
    mc, se = float(terms["loss"].mean()), float(terms["loss"].std() / np.sqrt(20_000))
    exact = gaussian_projection_minimum(SDE_, MEAN0, VAR0, n_steps=n_steps)
    assert abs(mc - exact) < 4 * se  # Monte Carlo agreement within 4 standard errors
    # Any other projection does worse: T = 0 and T = 1.2 T*.
    worse = projection_loss(
        jax.random.key(2),
        SDE_,
        exact_score,
        lambda y, t, h: 1.2 * optimal_projection_jax(y, t, h),
        x0,
        n_steps=n_steps,
    )
    assert float(worse) > mc
    norm = float(terms["norm"].mean())
    np.testing.assert_allclose(
        norm, gaussian_projection_norm(SDE_, MEAN0, VAR0, n_steps=n_steps), rtol=0.05
    )


@pytest.mark.slow  # 1500 training steps (~15 CPU-s); the closed form itself is tested above
def test_trained_projection_net_reaches_closed_form():
    """A step-conditioned MLP trained on the objective approaches T* and the loss minimum."""
    n_steps = (10, 20)
    net = StepConditioned(ScoreMLP(features=(64, 64)))
    params = net.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.ones(1), jnp.ones(1))
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, 1500))
    opt_state = opt.init(params)
    data = gaussian_data(50_000, seed=3)

    @jax.jit
    def step(params, opt_state, key):
        batch_key, loss_key = jax.random.split(key)
        batch = data[jax.random.randint(batch_key, (512,), 0, data.shape[0])]
        loss = lambda p: projection_loss(
            loss_key,
            SDE_,
            exact_score,
            lambda y, t, h: net.apply(p, y, t, h),
            batch,
            n_steps=n_steps,
        )
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    for key in jax.random.split(jax.random.key(4), 1500):
        params, opt_state, _ = step(params, opt_state, key)

    eval_x0 = gaussian_data(20_000, seed=5)
    eval_key = jax.random.key(6)
    trained = float(
        projection_loss(
            eval_key,
            SDE_,
            exact_score,
            lambda y, t, h: net.apply(params, y, t, h),
            eval_x0,
            n_steps=n_steps,
        )
    )
    zero = float(
        projection_loss(
            eval_key, SDE_, exact_score, lambda y, t, h: 0 * y, eval_x0, n_steps=n_steps
        )
    )
    best = gaussian_projection_minimum(SDE_, MEAN0, VAR0, n_steps=n_steps)
    # The net closes > 95% of the gap between no projection and the optimum
    # (Monte Carlo error of the evaluation is ~0.5% of the gap).
    assert (trained - best) / (zero - best) < 0.05
    # Pointwise: relative L2 error of T_net vs T* on predicted points at (t, h) where T* is
    # not near zero. (Where a coarse step makes x_pred nearly independent of x_t, e.g.
    # t = 0.2 at N = 10, |T*| is ~0.02 and a relative error says nothing.)
    for t, n in [(0.5, 20), (0.9, 10)]:
        h = (1 - 1e-3) / n
        x0 = eval_x0[:500]
        m, s = SDE_.marginal_coeffs(t)
        x_t = m * x0 + s * jax.random.normal(jax.random.key(7), x0.shape)
        tt = jnp.full((500,), t)
        y = x_t - h * SDE_.reverse_drift(exact_score, x_t, tt)
        star = gaussian_optimal_projection(SDE_, MEAN0, VAR0, np.asarray(y, np.float64), t, h)
        got = np.asarray(net.apply(params, y, tt - h, jnp.full((500,), h)))
        rel = np.linalg.norm(got - star) / np.linalg.norm(star)
        assert rel < 0.15, (t, n, rel)


def test_joint_objective_gradients_are_each_nets_own():
    score_net, proj_net = ScoreMLP(features=(16,)), StepConditioned(ScoreMLP(features=(16,)))
    params = {
        "score": score_net.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.ones(1)),
        "project": proj_net.init(jax.random.key(1), jnp.zeros((1, 2)), jnp.ones(1), jnp.ones(1)),
    }
    loss_fn = joint_objective(
        SDE_,
        lambda p, x, t: score_net.apply(p["score"], x, t),
        lambda p, y, t, h: proj_net.apply(p["project"], y, t, h),
        n_steps=(10, 20),
    )
    batch, key = gaussian_data(64), jax.random.key(3)
    score_key, proj_key = jax.random.split(key)
    score_fn = lambda p: lambda x, t: score_net.apply(p, x, t)

    @jax.jit  # one compile for the three gradients
    def gradients(params):
        grads = jax.grad(loss_fn)(params, key, batch)
        g_dsm = jax.grad(
            lambda p: dsm_loss(score_key, SDE_, score_fn(p), batch, weighting="sigma2")
        )(params["score"])
        g_proj = jax.grad(
            lambda p: projection_loss(
                proj_key,
                SDE_,
                score_fn(params["score"]),
                lambda y, t, h: proj_net.apply(p, y, t, h),
                batch,
                n_steps=(10, 20),
            )
        )(params["project"])
        return grads, g_dsm, g_proj

    grads, g_dsm, g_proj = gradients(params)
    for a, b in zip(jax.tree.leaves(grads["score"]), jax.tree.leaves(g_dsm), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads["project"]), jax.tree.leaves(g_proj), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_delta_mu_zero_is_euler_maruyama():
    key, shape = jax.random.key(8), (256, 2)
    pp = predict_project(key, SDE_, exact_score, lambda y, t, h: y, shape, 25, delta_mu=0.0)
    em = euler_maruyama(key, SDE_, exact_score, shape, 25)
    np.testing.assert_allclose(pp, em, atol=1e-5)


def test_matches_numpy_algorithm_1():
    """Float64 NumPy loop of Alg. 1 (same noise draws) with a linear projection T(y) = -0.3 y."""
    n, n_steps, eps, delta_mu = 64, 8, 1e-3, 0.7
    key = jax.random.key(9)
    x_init = np.random.default_rng(0).standard_normal((n, 2))
    got, info = predict_project(
        key,
        SDE_,
        exact_score,
        lambda y, t, h: -0.3 * y,
        (n, 2),
        n_steps,
        delta_mu=delta_mu,
        x_init=x_init,
        return_info=True,
    )
    assert info == {"nfe": n_steps, "projection_evals": n_steps}
    noise_keys = jax.random.split(jax.random.split(key)[1], n_steps)
    ts = np.linspace(1.0, eps, n_steps + 1)
    x = x_init.copy()
    for i in range(n_steps):
        t, h = ts[i], ts[i] - ts[i + 1]
        beta = 0.1 + 19.9 * t
        m = np.exp(-0.5 * (0.1 * t + 0.5 * 19.9 * t**2))
        v_t = m**2 * VAR0 + 1 - m**2
        score = -(x - m * MEAN0) / v_t
        x_pred = x + h * (0.5 * beta * x + beta * score)
        x = x_pred + np.sqrt(beta / 2) * (-0.3 * x_pred) * delta_mu * h
        if i < n_steps - 1:
            z = np.asarray(jax.random.normal(noise_keys[i], (n, 2)), np.float64)
            x = x + np.sqrt(beta * h) * z
    np.testing.assert_allclose(got, x, rtol=1e-4, atol=1e-4)


def test_auto_delta_mu_matches_closed_form_and_decreases():
    x0 = gaussian_data(4000)
    auto = auto_delta_mu(
        jax.random.key(10),
        SDE_,
        exact_score,
        optimal_projection_jax,
        x0,
        [20, 40, 100],
        n_repeats=2,
    )
    ref = gaussian_projection_norm(SDE_, MEAN0, VAR0, n_steps=1000)
    for n, value in auto.items():
        expected = abs(1 - gaussian_projection_norm(SDE_, MEAN0, VAR0, n_steps=n) / ref)
        assert abs(value - expected) < 0.05, (n, value, expected)  # MC error ~0.02 at n=8000
    assert auto[20] > auto[40] > auto[100] > 0
    assert set(PAPER_DELTA_MU) == {20, 40, 100}


def test_step_conditioning_feeds_the_step_as_a_channel():
    class Roll(nn.Module):
        """Rolls channels by one: the output's first channel is the input's last."""

        @nn.compact
        def __call__(self, x, t):
            return jnp.roll(x, 1, axis=-1)

    h = jnp.array([0.1, 0.001])
    for shape in [(2, 4, 4, 3), (2, 3)]:
        y = jax.random.normal(jax.random.key(0), shape)
        out = jax.jit(StepConditioned(Roll()).apply)({}, y, 0.5, h)
        assert out.shape == shape
        # The base saw [y, u] with u = -log10(h) / 3, and the extra output was dropped.
        u = np.broadcast_to(
            (-np.log10(np.asarray(h)) / 3).reshape((2,) + (1,) * (len(shape) - 1)),
            shape[:-1] + (1,),
        )
        np.testing.assert_allclose(out[..., :1], u, atol=1e-6)
        np.testing.assert_allclose(out[..., 1:], y[..., :-1], atol=1e-6)
    mlp = StepConditioned(ScoreMLP(features=(8,)))
    p = jax.jit(mlp.init)(jax.random.key(0), jnp.ones((3, 2)), jnp.ones(3), jnp.ones(3))
    apply = jax.jit(mlp.apply)
    a, b = apply(p, jnp.ones((3, 2)), 0.5, 0.1), apply(p, jnp.ones((3, 2)), 0.5, 0.01)
    assert a.shape == (3, 2) and float(jnp.abs(a - b).max()) > 0


def test_validation():
    proj = lambda y, t, h: y
    with pytest.raises(ValueError, match="delta_mu"):
        predict_project(jax.random.key(0), SDE_, exact_score, proj, (4, 2), 5, delta_mu=-1.0)
    with pytest.raises(ValueError, match="n_steps"):
        predict_project(jax.random.key(0), SDE_, exact_score, proj, (4, 2), 0, delta_mu=1.0)
    with pytest.raises(TypeError, match="project_fn"):
        predict_project(jax.random.key(0), SDE_, exact_score, None, (4, 2), 5, delta_mu=1.0)
    with pytest.raises(ValueError, match="n_steps"):
        projection_loss(
            jax.random.key(0), SDE_, exact_score, proj, jnp.ones((4, 2)), n_steps=[10, 0]
        )
    with pytest.raises(ValueError, match="x0"):
        projection_loss(jax.random.key(0), SDE_, exact_score, proj, jnp.ones(4), n_steps=10)
