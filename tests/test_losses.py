"""Score-matching losses against closed forms for Gaussian data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgdiff.losses import divergence, dsm_loss, dsm_objective, implicit_score_matching_loss
from wgdiff.sde import VPSDE


def test_dsm_loss_of_the_exact_score_is_its_closed_form():
    """For data N(0, s0^2 I) in d dims and the exact score, the DSM loss is
    E_t lambda(t) d (1/s(t)^2 - 1/v(t)), v = m^2 s0^2 + s^2 (DSM = SM + that constant)."""
    sde, s0, d, eps = VPSDE(), 0.7, 3, 0.05

    def var(t):
        m, s = sde.marginal_coeffs(t)
        return m**2 * s0**2 + s**2

    score = lambda x, t: -x / var(t)[:, None]
    x0 = s0 * jax.random.normal(jax.random.key(0), (200_000, d))
    ts = jnp.linspace(eps, sde.T, 20_001)
    for weighting, lam in (
        ("none", lambda t: 1.0),
        ("sigma2", lambda t: sde.marginal_coeffs(t)[1] ** 2),
        ("likelihood", lambda t: sde.beta(t)),
    ):
        integrand = lam(ts) * d * (1 / sde.marginal_coeffs(ts)[1] ** 2 - 1 / var(ts))
        expected = float(jnp.trapezoid(integrand, ts) / (sde.T - eps))
        got = float(dsm_loss(jax.random.key(1), sde, score, x0, weighting=weighting, eps=eps))
        # Monte Carlo over t and x with 2e5 draws: a few percent at most for these integrands.
        assert got == pytest.approx(expected, rel=0.05), weighting


def test_dsm_loss_is_minimised_by_the_true_score():
    sde = VPSDE()
    x0 = 0.5 * jax.random.normal(jax.random.key(0), (50_000, 2))
    var = lambda t: sde.marginal_coeffs(t)[0] ** 2 * 0.25 + sde.marginal_coeffs(t)[1] ** 2
    exact = lambda x, t: -x / var(t)[:, None]
    wrong = lambda x, t: -1.2 * x / var(t)[:, None]
    key = jax.random.key(3)
    assert float(dsm_loss(key, sde, exact, x0)) < float(dsm_loss(key, sde, wrong, x0))


ism_loss = implicit_score_matching_loss


def test_ism_loss_closed_form_and_hutchinson():
    """For s(x) = -x / s0^2 and x ~ N(0, s0^2 I): E|s|^2 + 2 div s = d/s0^2 - 2 d/s0^2."""
    s0, d = 0.5, 4
    x = s0 * jax.random.normal(jax.random.key(0), (100_000, d))
    score = lambda x, t: -x / s0**2
    exact = float(ism_loss(jax.random.key(1), score, x, 0.0))
    assert exact == pytest.approx(-d / s0**2, rel=0.02)
    hutch = float(ism_loss(jax.random.key(1), score, x, 0.0, divergence="hutchinson"))
    # For a multiple of the identity v^T J v = tr J exactly for Rademacher v.
    assert hutch == pytest.approx(exact, rel=1e-5)


@pytest.mark.parametrize("event", [(3,), (2, 2, 1)])
def test_ism_loss_per_example_times_match_the_closed_form(event):
    """t of shape (n,): s_i(x) = -x / v(t_i), v(t) = s0^2 + t, so for the given samples
    |s|^2 + 2 div s = |x_i|^2 / v_i^2 - 2 d / v_i exactly (float64 NumPy transcription).

    The exact divergence once evaluated a batch of one with the whole t array and
    returned a wrong value here (-1.012 instead of -2.612 in the report of issue 16).
    """
    n, s0 = 64, 0.5
    d = int(np.prod(event))
    x = s0 * jax.random.normal(jax.random.key(0), (n, *event))
    t = jnp.linspace(0.0, 1.0, n)
    score = lambda y, tt: -y / (s0**2 + tt).reshape((-1,) + (1,) * len(event))
    xs, ts = np.asarray(x, np.float64).reshape(n, d), np.asarray(t, np.float64)
    v = s0**2 + ts
    closed = np.mean(np.sum(xs**2, axis=1) / v**2 - 2 * d / v)
    exact = float(ism_loss(None, score, x, t))
    assert exact == pytest.approx(closed, rel=1e-5)
    # Rademacher probes: v^T (c I) v = c d exactly, so Hutchinson agrees to rounding.
    hutch = float(ism_loss(jax.random.key(1), score, x, t, divergence="hutchinson"))
    assert hutch == pytest.approx(closed, rel=1e-5)
    # A scalar t is the same as that t for every example.
    same = float(ism_loss(None, score, x, jnp.full((n,), 0.3)))
    assert float(ism_loss(None, score, x, 0.3)) == pytest.approx(same, rel=1e-6)
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        ism_loss(None, score, x, jnp.ones(n + 1))


def test_divergence_estimators_agree_with_autodiff():
    a = jax.random.normal(jax.random.key(0), (3, 3))
    fn = lambda x: jnp.tanh(x @ a)
    x = jax.random.normal(jax.random.key(1), (5, 3))
    exact = divergence(None, fn, x, method="exact")
    brute = jnp.array([jnp.trace(jax.jacfwd(lambda v: fn(v[None])[0])(xi)) for xi in x])
    np.testing.assert_allclose(exact, brute, rtol=1e-5, atol=1e-6)
    hutch = divergence(jax.random.key(2), fn, x, method="hutchinson", n_probes=4000)
    # Rademacher Hutchinson variance is sum_{i != j} J_ij^2 ~ O(1): 4000 probes give ~0.03.
    np.testing.assert_allclose(hutch, exact, atol=0.1)


def test_objective_has_gradients():
    from wgdiff.nets import ScoreMLP

    model = ScoreMLP(features=(8,))
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
    loss_fn = dsm_objective(VPSDE(), model.apply, weighting="sigma2")
    grads = jax.grad(loss_fn)(params, jax.random.key(1), jnp.ones((16, 2)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: dsm_loss(
                jax.random.key(0), VPSDE(), lambda x, t: x, jnp.ones((4, 2)), weighting="snr"
            ),
            "weighting",
        ),
        (lambda: dsm_loss(jax.random.key(0), VPSDE(), lambda x, t: x, jnp.ones(4)), "x0"),
        (
            lambda: ism_loss(
                jax.random.key(0), lambda x, t: x, jnp.ones((4, 2)), 0.0, divergence="trace"
            ),
            "divergence",
        ),
        (
            lambda: divergence(
                jax.random.key(0), lambda x: x, jnp.ones((4, 2)), method="hutchinson", n_probes=0
            ),
            "n_probes",
        ),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
