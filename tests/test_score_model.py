"""ScoreModel conversions, EDM preconditioning, and the SDE log-SNR helpers against closed forms."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgdiff.nets import EDMPrecond, ScoreModel, edm_coefficients, score_apply, std_scaled_apply
from wgdiff.nets.parameterization import KINDS, convert
from wgdiff.sde import SDE, VESDE, VPSDE, BrownianSDE, RectifiedFlowSDE, SubVPSDE

SDES = [
    VPSDE(),
    VPSDE(schedule="cosine"),
    SubVPSDE(),
    VESDE(),
    BrownianSDE(),
    RectifiedFlowSDE(),
]
MU, V0 = 0.7, 0.4


def gaussian_truth(sde, x, t):
    """Score, eps, x0 and PF velocity of N(MU, V0) data in closed form (float64)."""
    m, s = sde.marginal_coeffs(t)
    dm, ds = sde.marginal_coeffs_derivative(t)
    m, s, dm, ds = (v[:, None] for v in (m, s, dm, ds))
    var = m**2 * V0 + s**2
    x0 = MU + m * V0 / var * (x - m * MU)  # E[x0 | x]
    eps = (x - m * x0) / s  # E[eps | x]
    return {
        "score": -(x - m * MU) / var,
        "noise": eps,
        "data": x0,
        "v": m * eps - s * x0,
        "flow": dm * x0 + ds * eps,
    }


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_every_kind_converts_to_every_kind(sde):
    with jax.enable_x64(True):
        x = jnp.linspace(-2.0, 2.0, 5)[:, None]
        t = jnp.linspace(0.1, 0.9, 5)
        truth = gaussian_truth(sde, x, t)
        for kind in KINDS:
            for target in KINDS:
                got = convert(sde, kind, target, truth[kind], x, t)
                np.testing.assert_allclose(got, truth[target], rtol=1e-9, atol=1e-9)


def test_flow_velocity_of_a_score_model_is_the_pf_drift():
    """score -> flow goes through f - g^2 s / 2; the (m', s') route must agree (Song eq. 13)."""
    with jax.enable_x64(True):
        sde = SubVPSDE()
        x = jnp.linspace(-2.0, 2.0, 5)[:, None]
        t = jnp.full((5,), 0.3)
        truth = gaussian_truth(sde, x, t)
        model = ScoreModel.from_score(lambda x, t: gaussian_truth(sde, x, t)["score"], sde)
        np.testing.assert_allclose(model.velocity(x, t), truth["flow"], rtol=1e-9)
        np.testing.assert_allclose(
            sde.probability_flow_drift(model, x, t), truth["flow"], rtol=1e-9
        )


def test_models_are_pytrees_with_traced_parameters():
    sde = VPSDE()
    traces = []

    def apply(params, x, t):
        traces.append(1)
        return params * x

    @jax.jit
    def f(model, x):
        return model.noise(x, 0.5)

    for p in (1.0, 2.0):
        model = ScoreModel.from_score(apply, sde, params=jnp.asarray(p))
        out = f(model, jnp.ones((2, 1)))
    assert len(traces) == 1
    np.testing.assert_allclose(
        out, -2.0 * sde.marginal_coeffs(0.5)[1] * jnp.ones((2, 1)), rtol=1e-6
    )
    # functools.partial becomes a Partial with traced parameters too
    model = ScoreModel.from_noise(functools.partial(apply, jnp.asarray(3.0)), sde)
    assert jax.tree_util.tree_leaves(model)[0] == 3.0


def test_std_scaled_and_score_apply_are_the_noise_conversion():
    sde = VESDE()
    net = lambda p, x, t: p * x
    x, t = jnp.ones((3, 2)), jnp.full((3,), 0.4)
    s = sde.marginal_coeffs(0.4)[1]
    np.testing.assert_allclose(std_scaled_apply(net, sde)(2.0, x, t), 2.0 * x / s, rtol=1e-6)
    np.testing.assert_allclose(score_apply(net, sde, "noise")(2.0, x, t), -2.0 * x / s, rtol=1e-6)


class Zero(nn.Module):
    @nn.compact
    def __call__(self, x, c_noise):
        return 0.0 * nn.Dense(x.shape[-1])(x)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=lambda s: type(s).__name__)
def test_edm_preconditioning_is_exact_for_sigma_data_gaussians(sde):
    """For data N(0, sigma_d^2 I) the optimal denoiser is c_skip y (EDM eq. 7 with F = 0)."""
    with jax.enable_x64(True):
        sd = 0.5
        net = EDMPrecond(Zero(), sde, sigma_data=sd)
        x = jnp.linspace(-3.0, 3.0, 8).reshape(4, 2)
        t = jnp.array([0.05, 0.2, 0.6, 0.95])
        params = net.init(jax.random.key(0), x, t)
        model = ScoreModel.from_data(net.apply, sde, params)
        m, s = sde.marginal_coeffs(t)
        var = m**2 * sd**2 + s**2
        np.testing.assert_allclose(model.score(x, t), -x / var[:, None], rtol=1e-9)
        c_skip, c_out, c_in, c_noise = edm_coefficients(jnp.asarray(2.0), sd)
        # EDM Table 1 at sigma = 2, sigma_data = 0.5
        np.testing.assert_allclose(
            [c_skip, c_out, c_in, c_noise],
            [0.25 / 4.25, 1.0 / np.sqrt(4.25), 1 / np.sqrt(4.25), np.log(2.0) / 4],
            rtol=1e-12,
        )


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_time_at_log_snr_inverts_log_snr(sde):
    with jax.enable_x64(True):
        t = jnp.linspace(0.01, 0.99, 9) * sde.T
        lam = sde.log_snr(t)
        assert bool(jnp.all(jnp.diff(lam) < 0))
        np.testing.assert_allclose(sde.time_at_log_snr(lam), t, rtol=1e-9, atol=1e-12)
        # the generic bisection agrees with the closed forms
        np.testing.assert_allclose(SDE.time_at_log_snr(sde, lam), t, rtol=1e-9, atol=1e-12)


def test_sub_vp_marginal_solves_the_moment_equation():
    """d s^2/dt = -beta s^2 + g^2 and d m/dt = -beta m / 2 (x0 = 0 variance, mean)."""
    with jax.enable_x64(True):
        sde = SubVPSDE()
        t = jnp.linspace(0.05, 0.95, 7)
        (m, s), (dm, ds) = sde.marginal_coeffs(t), sde.marginal_coeffs_derivative(t)
        beta, g = sde.beta(t), sde.diffusion(t)
        np.testing.assert_allclose(2 * s * ds, -beta * s**2 + g**2, rtol=1e-9)
        np.testing.assert_allclose(dm, -0.5 * beta * m, rtol=1e-9)
        assert bool(jnp.all(s**2 <= VPSDE().marginal_coeffs(t)[1] ** 2))


def test_rectified_flow_sde_is_consistent():
    with jax.enable_x64(True):
        sde = RectifiedFlowSDE()
        t = jnp.linspace(0.05, 0.9, 6)
        (m, s), (dm, ds) = sde.marginal_coeffs(t), sde.marginal_coeffs_derivative(t)
        np.testing.assert_allclose(dm, -sde.drift_coeff(t) * m, rtol=1e-12)
        np.testing.assert_allclose(
            2 * s * ds, -2 * sde.drift_coeff(t) * s**2 + sde.diffusion(t) ** 2, rtol=1e-9
        )


def test_bad_kinds_are_refused():
    with pytest.raises(ValueError, match="kind"):
        convert(VPSDE(), "score", "logp", jnp.ones((1, 1)), jnp.ones((1, 1)), 0.5)
    with pytest.raises(TypeError, match="apply_fn"):
        ScoreModel.from_noise("net", VPSDE())
    with pytest.raises(TypeError, match="sde"):
        ScoreModel.from_noise(lambda x, t: x, "vp")
    with pytest.raises(ValueError, match="flow_time"):
        ScoreModel.from_velocity(lambda x, t: x, VPSDE(), kind="v", flow_time=True)
