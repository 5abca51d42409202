"""Tests of wgdiff.conservativity (Vuong et al.) and the WGF flow-matching loss."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgdiff import conservativity as cons
from wgdiff.losses import flow_matching as fm
from wgdiff.nets import PotentialMLP, ScoreMLP
from wgdiff.sde import VPSDE

SDE = VPSDE(beta_min=0.1, beta_max=20.0)


def rotation(rate):
    return lambda x, t: rate * jnp.stack([-x[:, 1], x[:, 0]], axis=1)


def circle(radius, k, centre=(0.0, 0.0)):
    theta = jnp.linspace(0, 2 * jnp.pi, k, endpoint=False)
    return jnp.asarray(centre) + radius * jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)


def analytic_gradient_field(x, t):
    # grad of phi(x, y) = sin(2x) cos(y) + x^2 y + t x
    gx = 2 * jnp.cos(2 * x[:, 0]) * jnp.cos(x[:, 1]) + 2 * x[:, 0] * x[:, 1] + t
    gy = -jnp.sin(2 * x[:, 0]) * jnp.sin(x[:, 1]) + x[:, 0] ** 2
    return jnp.stack([gx, gy], axis=1)


def test_jacobian_asymmetry_zero_for_gradient_of_random_scalar_net():
    model = PotentialMLP(features=(32, 32))
    x = jax.random.normal(jax.random.key(0), (16, 3))
    params = model.init(jax.random.key(1), x, jnp.zeros((16,)))
    asym = cons.jacobian_asymmetry(functools.partial(model.apply, params), x, 0.3)
    assert asym.shape == (16,)
    assert float(jnp.max(asym)) < 1e-5  # a Hessian: symmetric up to float32 rounding


def test_jacobian_asymmetry_nonzero_for_score_mlp():
    model = ScoreMLP(features=(32, 32))
    x = jax.random.normal(jax.random.key(2), (8, 3))
    params = model.init(jax.random.key(3), x, jnp.zeros((8,)))
    assert (
        float(jnp.min(cons.jacobian_asymmetry(functools.partial(model.apply, params), x, 0.3)))
        > 1e-2
    )


def test_jacobian_asymmetry_closed_form_linear_and_projection_estimate():
    a = jax.random.normal(jax.random.key(4), (12, 12))
    field = lambda x, t: x @ a.T
    x = jax.random.normal(jax.random.key(5), (4, 12))
    closed = float(jnp.linalg.norm(a - a.T) / jnp.linalg.norm(a))
    np.testing.assert_allclose(cons.jacobian_asymmetry(field, x, 0.0), closed, rtol=1e-5)
    est = cons.jacobian_asymmetry(
        field, x, 0.0, method="projection", key=jax.random.key(6), n_projections=512, chunk_size=64
    )
    # relative error ~ sqrt(2 / 512) = 6%; 4 sigma
    np.testing.assert_allclose(est, closed, rtol=0.25)


def test_projection_estimate_zero_for_conservative_images():
    # image-shaped events flow through flattening; a symmetric linear map on (2, 3, 3)
    b = jax.random.normal(jax.random.key(7), (18, 18))
    sym = b + b.T
    field = lambda x, t: (x.reshape(x.shape[0], -1) @ sym).reshape(x.shape)
    x = jax.random.normal(jax.random.key(8), (3, 2, 3, 3))
    assert float(jnp.max(cons.jacobian_asymmetry(field, x, 0.0))) < 1e-5
    est = cons.jacobian_asymmetry(
        field, x, 0.0, method="projection", key=jax.random.key(9), n_projections=16
    )
    assert float(jnp.max(est)) < 1e-5


def test_loop_integral_rotation_circle():
    r, rate, k = 0.7, 1.3, 2000
    loops = jnp.stack([circle(r, k), circle(r, k, centre=(2.0, -1.0))])
    got = cons.loop_integral(rotation(rate), loops, 0.0)
    # Trapezoid is exact for a linear field on a polygon: 2 * rate * area(k-gon)...
    polygon = 2 * rate * 0.5 * k * r**2 * np.sin(2 * np.pi / k)
    np.testing.assert_allclose(got, polygon, rtol=1e-5)
    # ...which tends to 2 pi r^2 * rate (the curl is 2 * rate); k-gon error ~ 1e-6 here.
    np.testing.assert_allclose(got, 2 * np.pi * r**2 * rate, rtol=1e-4)
    np.testing.assert_allclose(
        cons.loop_violation(rotation(rate), loops[:1], 0.0), 1.0, rtol=1e-4
    )  # a circulating field attains the maximum


def test_loop_integral_zero_for_gradient_field_and_per_loop_times():
    loops = jnp.stack([circle(0.9, 1000, (0.2, 0.1)), circle(0.5, 1000, (-1.0, 0.4))])
    times = jnp.array([0.0, 2.0])
    work = cons.loop_integral(analytic_gradient_field, loops, times)
    # trapezoid error O(h^2) ~ 1e-6 of the O(1) path integrals of |s|
    assert float(jnp.max(jnp.abs(work))) < 1e-4
    assert float(jnp.max(cons.loop_violation(analytic_gradient_field, loops, times))) < 1e-4


def test_loop_builders_geometry():
    x0 = jax.random.normal(jax.random.key(10), (5, 3))
    t = 0.4
    m_t, s_t = SDE.marginal_coeffs(jnp.asarray(t))
    centre = m_t * x0[:, None]
    circ = cons.corrupted_circle_loops(jax.random.key(11), SDE, x0, t, n_points=32)
    assert circ.shape == (5, 32, 3)
    np.testing.assert_allclose(jnp.linalg.norm(circ - centre, axis=-1), s_t * np.sqrt(3), rtol=1e-5)
    inter = cons.interpolated_loops(jax.random.key(12), SDE, x0, t, n_anchors=4, points_per_edge=8)
    proj = cons.projected_interpolated_loops(
        jax.random.key(12), SDE, x0, t, n_anchors=4, points_per_edge=8
    )
    assert inter.shape == proj.shape == (5, 32, 3)
    anchors = inter[:, ::8]
    np.testing.assert_allclose(proj[:, ::8], anchors, rtol=1e-5, atol=1e-6)
    # midpoints of interpolated edges lie on the chord; projected ones at the mean radius
    mid = inter[:, 4]
    np.testing.assert_allclose(mid, 0.5 * (anchors[:, 0] + anchors[:, 1]), atol=1e-6)
    radii = jnp.linalg.norm(anchors - centre, axis=-1)
    np.testing.assert_allclose(
        jnp.linalg.norm(proj[:, 4] - centre[:, 0], axis=-1),
        0.5 * (radii[:, 0] + radii[:, 1]),
        rtol=1e-5,
    )
    # every loop of a gradient field closes (here the exact score of N(0, I))
    score = lambda x, t: -x
    for loops in (circ, inter, proj):
        assert float(jnp.max(cons.loop_violation(score, loops, t))) < 1e-5


def test_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        cons.jacobian_asymmetry(rotation(1.0), jnp.ones((2, 2)), 0.0, method="svd")
    with pytest.raises(ValueError, match="key"):
        cons.jacobian_asymmetry(rotation(1.0), jnp.ones((2, 2)), 0.0, method="projection")
    with pytest.raises(ValueError, match="loops"):
        cons.loop_integral(rotation(1.0), jnp.ones((2, 2, 2)), 0.0)
    with pytest.raises(ValueError, match="t must"):
        cons.loop_integral(rotation(1.0), jnp.ones((2, 5, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match="x0"):
        cons.corrupted_circle_loops(jax.random.key(0), SDE, jnp.ones((3,)), 0.5)


# ------------------------------------------------------------------ WGF flow matching
def test_velocity_score_round_trip():
    score = lambda x, t: -x * (1.0 + t) + 0.3
    v = fm.score_to_velocity(SDE, score)
    back = fm.velocity_to_score(SDE, v)
    x = jax.random.normal(jax.random.key(13), (6, 2))
    np.testing.assert_allclose(back(x, 0.4), score(x, 0.4), rtol=1e-5, atol=1e-5)


def test_flow_matching_minimized_by_wgf_velocity():
    # Gaussian data: the WGF velocity f - g^2/2 grad log p_t is known in closed form.
    mu, sigma0 = jnp.array([0.5, -1.0]), 0.5

    def true_score(x, t):
        m, s = SDE.marginal_coeffs(jnp.asarray(t))
        var = m**2 * sigma0**2 + s**2
        return -(x - m[..., None] * mu) / var[..., None]

    x0 = mu + sigma0 * jax.random.normal(jax.random.key(14), (20000, 2))
    v_star = fm.score_to_velocity(SDE, true_score)
    delta = jnp.array([0.3, -0.2])
    v_off = lambda x, t: v_star(x, t) + delta
    key = jax.random.key(15)
    loss_star = fm.wgf_flow_matching_loss(key, SDE, v_star, x0, eps=1e-2)
    loss_off = fm.wgf_flow_matching_loss(key, SDE, v_off, x0, eps=1e-2)
    # Pythagoras for the conditional mean: the excess is |delta|^2 = 0.13 up to the
    # cross term 2 delta.E[v* - u], whose Monte Carlo std is ~0.01 here.
    assert float(loss_off - loss_star) == pytest.approx(float(jnp.sum(delta**2)), abs=0.04)


def test_conditional_velocity_generates_conditional_path():
    # The conditional WGF velocity is the time derivative of t -> m(t) x0 + s(t) z
    # (VP: s' = beta m^2 / (2 s)), i.e. it transports p(x_t | x0) along fixed z.
    x0 = jax.random.normal(jax.random.key(16), (4, 2))
    z = jax.random.normal(jax.random.key(17), (4, 2))
    t = 0.37

    def path(tt):
        m, s = SDE.marginal_coeffs(tt)
        return m * x0 + s * z

    xt = path(jnp.asarray(t))
    dpath = jax.jvp(path, (jnp.asarray(t),), (jnp.asarray(1.0),))[1]
    np.testing.assert_allclose(fm.conditional_wgf_velocity(SDE, xt, z, t), dpath, rtol=1e-4)
