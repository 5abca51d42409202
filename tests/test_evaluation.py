"""Tests of wgdiff.evaluation.evaluate_score_model on models with known answers."""

import jax
import jax.numpy as jnp
import pytest

from wgdiff.data import toy
from wgdiff.evaluation import evaluate_score_model
from wgdiff.sde import VPSDE

SDE = VPSDE(beta_min=0.1, beta_max=20.0)
MIXTURE = toy.mixture("four_clusters").replace(stds=jnp.full((4,), 0.15))


@pytest.fixture(scope="module")
def heldout():
    return MIXTURE.sample(jax.random.key(0), 256)


def test_exact_score_report(heldout):
    score = MIXTURE.score_fn(SDE)
    report = evaluate_score_model(
        jax.random.key(1),
        SDE,
        score,
        heldout=heldout,
        n_steps=200,
        n_times=24,
        true_score_fn=score,
        time_fractions=(0.05, 0.5),
        n_conservativity_points=16,
        n_loops=4,
    )
    # the exact score: J_SM = 0, the bound is the start offset plus the prior offset
    assert report["bound"]["loss_kind"] == "J_SM"
    assert report["bound"]["loss"] < 1e-8
    assert report["bound"]["bound"] == pytest.approx(
        report["bound"]["start_offset"] + report["bound"]["offset"], rel=1e-4
    )
    # a gradient field: DC and IC hold to float32 rounding
    assert report["conservativity"]["jacobian_method"] == "exact"
    assert report["conservativity"]["max_jacobian_asymmetry"] < 1e-4
    # IC: trapezoid error of 256-vertex loops on a curved field (measured ~1e-3)
    assert report["conservativity"]["max_loop_violation"] < 5e-3
    # 256 exact-score samples vs 256 held-out points: only the sampling noise of two
    # empirical measures remains, the scale of W2 between two held-out halves of 128
    # (the bound on the population W2, ~0.02 here, does not cover that noise)
    assert report["w2"] < 1.5 * report["w2_heldout_halves"]


def test_forward_noised_start_and_non_conservative_field(heldout):
    score = MIXTURE.score_fn(SDE)
    swirl = lambda x, t: score(x, t) + 2.0 * jnp.stack([-x[:, 1], x[:, 0]], axis=1)
    report = evaluate_score_model(
        jax.random.key(2),
        SDE,
        swirl,
        heldout=heldout,
        start="forward_noised",
        n_steps=100,
        n_times=24,
        time_fractions=(0.5,),
        n_conservativity_points=8,
        n_loops=4,
    )
    assert report["bound"]["offset"] == 0.0  # p_T = q_T
    assert report["bound"]["loss_kind"] == "J_DSM"
    assert report["bound"]["bound_holds"]
    assert report["conservativity"]["max_jacobian_asymmetry"] > 0.1
    assert report["conservativity"]["max_loop_violation"] > 0.1


def test_bad_arguments(heldout):
    score = MIXTURE.score_fn(SDE)
    with pytest.raises(ValueError, match="start"):
        evaluate_score_model(jax.random.key(0), SDE, score, heldout=heldout, start="data")
    with pytest.raises(ValueError, match="n_samples"):
        evaluate_score_model(
            jax.random.key(0), SDE, score, heldout=heldout, start="forward_noised", n_samples=10
        )
    with pytest.raises(ValueError, match="heldout"):
        evaluate_score_model(jax.random.key(0), SDE, score, heldout=jnp.ones(3))


def test_any_solver_and_grid(heldout):
    """A deterministic solver on a log-SNR grid reaches the same sampling-noise floor with
    the exact score; ``n_steps`` is not needed when a grid is given."""
    from wgdiff.samplers import DPMSolverPP, LogSNRGrid

    score = MIXTURE.score_fn(SDE)
    report = evaluate_score_model(
        jax.random.key(3),
        SDE,
        score,
        heldout=heldout,
        n_steps=None,
        solver=DPMSolverPP(),
        grid=LogSNRGrid(25),
        n_times=16,
        time_fractions=(0.5,),
        n_conservativity_points=8,
        n_loops=2,
    )
    assert (report["solver"], report["grid"], report["n_steps"], report["nfe"]) == (
        "DPMSolverPP",
        "LogSNRGrid",
        25,
        25,
    )
    assert report["w2"] < 1.5 * report["w2_heldout_halves"]
