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


# The two loop-builder tests share shapes and counts, so the builders compile once.
LOOP_X0_SHAPE, LOOP_ANCHORS, LOOP_PPE = (3, 3), 4, 32


def test_loop_builders_geometry():
    x0 = jax.random.normal(jax.random.key(10), LOOP_X0_SHAPE)
    t, ppe = 0.4, LOOP_PPE
    m_t, s_t = SDE.marginal_coeffs(jnp.asarray(t))
    centre = m_t * x0[:, None]
    circ = cons.corrupted_circle_loops(jax.random.key(11), SDE, x0, t, n_points=32)
    assert circ.shape == (3, 32, 3)
    np.testing.assert_allclose(jnp.linalg.norm(circ - centre, axis=-1), s_t * np.sqrt(3), rtol=1e-5)
    inter = cons.interpolated_loops(jax.random.key(12), SDE, x0, t, LOOP_ANCHORS, ppe)
    proj = cons.projected_interpolated_loops(jax.random.key(12), SDE, x0, t, LOOP_ANCHORS, ppe)
    assert inter.shape == proj.shape == (3, 4 * ppe, 3)
    anchors = inter[:, ::ppe]
    np.testing.assert_allclose(proj[:, ::ppe], anchors, rtol=1e-5, atol=1e-6)
    # midpoints of interpolated edges lie on the chord
    mid = inter[:, ppe // 2]
    np.testing.assert_allclose(mid, 0.5 * (anchors[:, 0] + anchors[:, 1]), atol=1e-6)
    # every loop of a gradient field closes (here the exact score of N(0, I))
    score = lambda x, t: -x
    for loops in (circ, inter, proj):
        assert float(jnp.max(cons.loop_violation(score, loops, t))) < 1e-5


def test_projected_loops_are_radial_projections_of_the_chords_equally_spaced():
    # An independent float64 transcription: each vertex must be the radial projection
    # c + (r_a + f (r_b - r_a)) p / |p| of a chord point p = a + f (b - a), and the
    # vertices of an edge must be equally spaced in arc length.
    x0 = jax.random.normal(jax.random.key(20), LOOP_X0_SHAPE)
    t, k, ppe = 0.3, LOOP_ANCHORS, LOOP_PPE
    proj = np.asarray(cons.projected_interpolated_loops(jax.random.key(21), SDE, x0, t, k, ppe))
    inter = np.asarray(cons.interpolated_loops(jax.random.key(21), SDE, x0, t, k, ppe), np.float64)
    m_t = float(SDE.marginal_coeffs(jnp.asarray(t))[0])
    for i in range(3):
        c = m_t * np.asarray(x0[i], np.float64)
        corners = inter[i, ::ppe] - c
        for e in range(k):
            a, b = corners[e], corners[(e + 1) % k]
            verts = proj[i, e * ppe : (e + 1) * ppe] - c
            # the chord parameter of each vertex's ray: least squares on p(f) parallel to v
            for v in verts:
                u = v / np.linalg.norm(v)
                # p(f) - (p(f).u) u = 0 is linear in f
                r0 = a - (a @ u) * u
                r1 = (b - a) - ((b - a) @ u) * u
                f = -(r0 @ r1) / (r1 @ r1)
                p = a + f * (b - a)
                radius = np.linalg.norm(a) + f * (np.linalg.norm(b) - np.linalg.norm(a))
                np.testing.assert_allclose(v, radius * p / np.linalg.norm(p), atol=2e-5)
            nxt = np.concatenate([verts[1:], (corners[(e + 1) % k])[None]])
            steps = np.linalg.norm(nxt - verts, axis=-1)
            # equal arc length up to the chord-vs-arc difference of each small step
            np.testing.assert_allclose(steps, steps.mean(), rtol=2e-2)


@pytest.mark.parametrize(
    "t",
    [pytest.param(0.01, marks=pytest.mark.slow), 0.1, pytest.param(0.3, marks=pytest.mark.slow)],
)
def test_projected_loops_of_an_exact_score_integrate_to_zero(t):
    # The exact score of a Gaussian mixture is a gradient field: on loops with enough
    # vertices per edge the trapezoid rule's circulation is at float precision.
    from wgdiff.data import toy

    exact = toy.mixture("eight_gaussians").score_fn(SDE)
    x0 = toy.get("eight_gaussians")(jax.random.key(22), 16)
    loops = cons.projected_interpolated_loops(jax.random.key(23), SDE, x0, t, points_per_edge=512)
    assert float(jnp.max(cons.loop_violation(exact, loops, t))) < 1e-5


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


def _gaussian_flow_matching_case():
    mu, sigma0 = jnp.array([0.5, -1.0]), 0.5

    def true_score(x, t):
        m, s = SDE.marginal_coeffs(jnp.asarray(t))
        var = m**2 * sigma0**2 + s**2
        return -(x - m[..., None] * mu) / var[..., None]

    x0 = mu + sigma0 * jax.random.normal(jax.random.key(14), (20000, 2))
    return x0, fm.score_to_velocity(SDE, true_score)


def test_flow_matching_minimized_by_wgf_velocity():
    # Gaussian data: the WGF velocity f - g^2/2 grad log p_t is known in closed form.
    x0, v_star = _gaussian_flow_matching_case()
    delta = jnp.array([0.3, -0.2])
    v_off = lambda x, t: v_star(x, t) + delta
    key = jax.random.key(15)
    loss_star = fm.wgf_flow_matching_loss(key, SDE, v_star, x0, eps=1e-2, weighting="g4_over_4")
    loss_off = fm.wgf_flow_matching_loss(key, SDE, v_off, x0, eps=1e-2, weighting="g4_over_4")
    # Pythagoras for the conditional mean: the excess is |delta|^2 = 0.13 up to the
    # cross term 2 delta.E[v* - u], whose Monte Carlo std is ~0.01 here.
    assert float(loss_off - loss_star) == pytest.approx(float(jnp.sum(delta**2)), abs=0.04)


def test_flow_matching_uniform_score_weight_is_dsm_in_score_units():
    # weighting="uniform_score" is E |s_v - grad log p_0t|^2, uniform in t: a velocity
    # whose implied score is off by delta costs exactly |delta|^2 more (plus MC noise),
    # and the loss equals unweighted DSM of the implied score on the same draws.
    x0, v_star = _gaussian_flow_matching_case()
    delta = jnp.array([0.3, -0.2])

    def v_off(x, t):
        g2 = SDE.diffusion(jnp.asarray(t)) ** 2
        return v_star(x, t) - 0.5 * g2[:, None] * delta

    key = jax.random.key(16)
    loss_star = fm.wgf_flow_matching_loss(key, SDE, v_star, x0, eps=1e-2)
    loss_off = fm.wgf_flow_matching_loss(key, SDE, v_off, x0, eps=1e-2)
    assert float(loss_off - loss_star) == pytest.approx(float(jnp.sum(delta**2)), abs=0.04)
    t_key, z_key = jax.random.split(key)
    t = jax.random.uniform(t_key, (x0.shape[0],), x0.dtype, 1e-2, SDE.T)
    xt, z = SDE.marginal_sample(z_key, x0, t)
    s_v = fm.velocity_to_score(SDE, v_off)(xt, t)
    _, s_t = SDE.marginal_coeffs(t)
    dsm = jnp.mean(jnp.sum((s_v + z / s_t[:, None]) ** 2, axis=-1))
    np.testing.assert_allclose(loss_off, dsm, rtol=2e-3)  # float32 round trip through g^2


def test_flow_matching_bad_weighting():
    with pytest.raises(ValueError, match="weighting"):
        fm.wgf_flow_matching_loss(
            jax.random.key(0), SDE, lambda x, t: x, jnp.ones((4, 2)), weighting="velocity"
        )


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
