"""wgdiff.flows through the solver engine: sampling, likelihood, reflow.

References: the Gaussian closed forms of ``_flows_gaussians`` (float64 NumPy).
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _flows_gaussians import (
    A_OT,
    M0,
    M1,
    S0,
    W2SQ,
    gaussian_draws,
    gaussian_logpdf,
    independent_marginal_velocity,
    ot_interpolation_velocity,
)

from wgdiff import flows
from wgdiff.nets import ScoreMLP
from wgdiff.samplers import Diffrax
from wgdiff.train import dataset_sampler, fit_score_model


# -- sampling through the solver engine ----------------------------------------------------
def test_straight_flow_is_exact_in_one_euler_step():
    x0 = gaussian_draws(jax.random.key(11), 64, M0, S0)
    mapped = M1 + np.asarray(x0, np.float64) @ A_OT.T
    one = flows.integrate_flow(ot_interpolation_velocity, x0, n_steps=1, method="euler")
    assert one.nfe == 1
    np.testing.assert_allclose(one.x, mapped, atol=1e-5)
    with pytest.raises(ValueError, match="method"):
        flows.integrate_flow(ot_interpolation_velocity, x0, n_steps=2, method="rk4")


@pytest.mark.slow  # ~3.5 CPU-s of diffrax compilation; Diffrax itself: tests/test_solvers.py
def test_adaptive_flow_integration_agrees_with_the_map():
    x0 = gaussian_draws(jax.random.key(11), 64, M0, S0)
    mapped = M1 + np.asarray(x0, np.float64) @ A_OT.T
    adaptive = flows.integrate_flow(
        ot_interpolation_velocity,
        x0,
        n_steps=None,
        method=Diffrax(diffrax.Tsit5(), rtol=1e-6, atol=1e-6),
    )
    np.testing.assert_allclose(adaptive.x, mapped, atol=1e-4)
    assert adaptive.nfe > 1


# -- likelihood ------------------------------------------------------------------------------
def test_flow_likelihood_matches_gaussian_pushforward_from_any_source():
    """McCann's interpolation from N(m0, D0) (a non-standard source, passed as
    source_logp) to N(m1, D1): log p_1 in closed form. Its Jacobian is diagonal, so
    Rademacher probes give the trace exactly and the Hutchinson estimate must match to
    the ODE tolerance (the estimator itself: tests/test_samplers.py)."""
    m0, s0 = np.array([0.5, -1.0]), np.diag([0.25, 2.0])
    m1, s1 = np.array([1.0, 1.0]), np.diag([4.0, 0.5])
    scale = np.sqrt(np.diag(s1) / np.diag(s0))  # the OT map is diagonal

    def velocity(x, t):
        t = t[:, None]
        x_src = m0 + (x - ((1 - t) * m0 + t * m1)) / ((1 - t) + t * scale)
        return (m1 - m0) + (x_src - m0) * (scale - 1)

    def source_logp(z):
        return -0.5 * jnp.sum((z - m0) ** 2 / np.diag(s0), 1) - 0.5 * np.log(
            np.linalg.det(2 * np.pi * s0)
        )

    x = gaussian_draws(jax.random.key(14), 16, m1, s1)
    est = flows.log_likelihood(
        jax.random.key(2), velocity, x, source_logp=source_logp, trace="hutchinson"
    )
    np.testing.assert_allclose(est, gaussian_logpdf(x, m1, s1), atol=2e-3)


# -- reflow ----------------------------------------------------------------------------------
def test_reflow_with_the_exact_regressor_straightens_and_keeps_the_coupling():
    """Reflow of the independent-coupling Gaussian flow, whose map Phi(x0) = c + G x0 is
    affine: for the deterministic pairs (x0, Phi(x0)) the CFM minimizer of the straight
    path is known in closed form, v(x, t) = c + (G - I) x0 with
    x0 = ((1 - t) I + t G)^{-1} (x - t c) (each x_t has one preimage). So the reflowed flow
    must keep the coupling (same endpoints; Liu et al. Thm. 3.5) with straight,
    constant-speed paths (Thm. 3.6): straightness 1 and gap ratio = the coupling ratio.
    (G, c) are read off reflow_pairs by float64 least squares. A trained MLP: the slow test
    below."""
    pairs = np.asarray(
        flows.reflow_pairs(
            independent_marginal_velocity,
            gaussian_draws(jax.random.key(16), 300, M0, S0),
            n_steps=32,
        ),
        np.float64,
    )
    design = np.concatenate([pairs[:, 0], np.ones((300, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, pairs[:, 1], rcond=None)
    g, c = coef[:2].T, coef[2]
    assert np.abs(design @ coef - pairs[:, 1]).max() < 1e-4  # the map is affine

    def reflowed(x, t):
        t = t[:, None, None]
        b = (1 - t) * jnp.eye(2) + t * jnp.asarray(g, x.dtype)
        x0 = jnp.linalg.solve(b, (x - t[:, 0] * c)[..., None])[..., 0]
        return c + x0 @ jnp.asarray(g - np.eye(2), x.dtype).T

    x_eval = gaussian_draws(jax.random.key(15), 300, M0, S0)
    before = flows.transport_certificate(independent_marginal_velocity, x_eval, n_steps=32)
    after = flows.transport_certificate(reflowed, x_eval, n_steps=32)
    assert before["gap_ratio"] > 1.4 and before["straightness"] < 0.7
    assert after["straightness"] == pytest.approx(1.0, abs=1e-4)
    assert after["gap_ratio"] == pytest.approx(before["coupling_ratio"], rel=1e-3)
    moved = np.mean(np.sum((np.asarray(after["x1"]) - np.asarray(before["x1"])) ** 2, 1))
    assert moved < 1e-4 * W2SQ


@pytest.mark.slow  # trains an MLP (~9 CPU-s); the closed-form reflow above is the fast check
def test_reflow_reduces_the_energy_gap():
    """Reflow of the independent-coupling Gaussian flow (closed form, curved trajectories):
    an MLP trained on its own (x0, Phi(x0)) pairs keeps the coupling and straightens the
    paths, so the gap ratio E / W2^2 falls towards the coupling ratio."""
    x_eval = gaussian_draws(jax.random.key(15), 300, M0, S0)
    before = flows.transport_certificate(independent_marginal_velocity, x_eval, n_steps=16)
    pairs = flows.reflow_pairs(
        independent_marginal_velocity, gaussian_draws(jax.random.key(16), 2048, M0, S0), n_steps=16
    )
    model = ScoreMLP(features=(32, 32))

    def objective(sde, apply):
        return flows.cfm_objective(
            apply, path=flows.LinearPath(), coupling=flows.IndependentCoupling()
        )

    fit = fit_score_model(
        flows.FLOW_SDE,
        model,
        dataset_sampler(pairs, 128),
        key=jax.random.key(17),
        n_steps=300,
        params=model.init(jax.random.key(18), jnp.zeros((2, 2)), jnp.zeros(2)),
        objective=objective,
        ema_decay=0.9,
        mesh=None,
    )
    after = flows.transport_certificate(
        jax.tree_util.Partial(model.apply, fit.params), x_eval, n_steps=16
    )
    # measured: gap 1.469 -> 1.011, straightness 0.681 -> 0.989, moved 0.003 W2^2
    assert before["gap_ratio"] > 1.4
    assert after["straightness"] > before["straightness"]
    assert after["gap_ratio"] - 1.0 < 0.1 * (before["gap_ratio"] - 1.0)
    # the reflowed map is the same transport: its endpoints match the base flow's
    moved = np.mean(np.sum((np.asarray(after["x1"]) - np.asarray(before["x1"])) ** 2, 1))
    assert moved < 0.05 * W2SQ
