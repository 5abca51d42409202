"""Post-update transforms, fit's budget and evaluation callbacks, and fit_score_model.

References: a hand-written optax loop (clipping after each update), NumPy float64 SVD
(spectral norms), a fake clock that advances a fixed amount per train step (budget
and evaluate_at_s without timing the machine), and the closed-form score of a
Gaussian under the VP SDE (the recipe trains a net that matches it).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wgdiff.losses import dsm_objective
from wgdiff.nets import ScoreMLP
from wgdiff.sde import VPSDE
from wgdiff.train import (
    chain_post_updates,
    clip_params,
    create_train_state,
    dataset_sampler,
    fit,
    fit_score_model,
    make_train_step,
    spectral_normalize,
)
from wgdiff.train import loop as loop_module


def quadratic_loss(p, key, batch):
    return jnp.sum((p["w"] - batch) ** 2) + jnp.sum(p["b"] ** 2)


# -- transforms ---------------------------------------------------------------------------
def test_clip_params_step_matches_hand_written_loop():
    """post_update runs after the optimizer, before the EMA: same as clipping by hand."""
    opt = optax.sgd(0.3)
    params = {"w": jnp.zeros(3), "b": jnp.array([0.5, -0.02])}
    target = jnp.array([1.0, -0.05, -2.0])
    step = make_train_step(quadratic_loss, opt, ema_decay=0.5, post_update=clip_params(0.1))
    state = create_train_state(jax.random.key(0), params, opt)
    w, b = np.zeros(3), np.array([0.5, -0.02])
    ema_w, ema_b = w.copy(), b.copy()
    for _ in range(4):
        state, _ = step(state, target)
        w = np.clip(w - 0.3 * 2 * (w - np.asarray(target)), -0.1, 0.1)
        b = np.clip(b - 0.3 * 2 * b, -0.1, 0.1)
        ema_w, ema_b = 0.5 * ema_w + 0.5 * w, 0.5 * ema_b + 0.5 * b
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-6)
    np.testing.assert_allclose(state.params["b"], b, rtol=1e-6)
    np.testing.assert_allclose(state.ema_params["w"], ema_w, rtol=1e-6)
    assert jnp.max(jnp.abs(state.params["w"])) <= np.float32(0.1)
    # Without the transform the same step leaves the box.
    free = make_train_step(quadratic_loss, opt, ema_decay=0.5)
    s2, _ = free(create_train_state(jax.random.key(0), params, opt), target)
    assert float(jnp.max(jnp.abs(s2.params["w"]))) > 0.1


def test_spectral_normalize_against_numpy_svd():
    rng = np.random.default_rng(0)
    params = {
        "Dense_0": {"kernel": jnp.asarray(rng.normal(size=(5, 7))), "bias": jnp.ones(7)},
        "Conv_0": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 4)))},
        "embed": jnp.asarray(rng.normal(size=(4, 4))),
    }
    out = spectral_normalize(params)
    for name in ("Dense_0", "Conv_0"):
        k = np.asarray(out[name]["kernel"], np.float64)
        sigma = np.linalg.svd(k.reshape(-1, k.shape[-1]), compute_uv=False)[0]
        assert sigma == pytest.approx(1.0, rel=1e-5)
        ratio = np.asarray(params[name]["kernel"]) / k
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)  # a rescaling only
    np.testing.assert_array_equal(out["Dense_0"]["bias"], params["Dense_0"]["bias"])
    np.testing.assert_array_equal(out["embed"], params["embed"])  # not named "kernel"


def test_chain_post_updates_order_and_validation():
    double = lambda p: jax.tree.map(lambda x: 2 * x, p)
    p = {"w": jnp.array([0.08])}
    assert float(chain_post_updates(clip_params(0.1), double)(p)["w"][0]) == pytest.approx(0.16)
    assert float(chain_post_updates(double, clip_params(0.1))(p)["w"][0]) == pytest.approx(0.1)
    assert chain_post_updates(None) is None
    with pytest.raises(TypeError, match="callables"):
        chain_post_updates(0.1)
    with pytest.raises(ValueError, match="bound must be positive"):
        clip_params(0.0)
    with pytest.raises(TypeError, match="post_update"):
        make_train_step(quadratic_loss, optax.sgd(0.1), post_update="clip")


# -- budget and evaluation callbacks ---------------------------------------------------------
DT = 1.0 / 64  # fake seconds per train step (exact in binary)


def _counting_run(monkeypatch, n_steps, **kwargs):
    """fit on a quadratic with a fake clock: each train step costs exactly DT seconds."""
    counter = {"steps": 0}
    monkeypatch.setitem(loop_module.CLOCKS, "wall", lambda: counter["steps"] * DT)
    opt = optax.sgd(0.01)
    step = make_train_step(quadratic_loss, opt, ema_decay=0.0)

    def counted(state, batch):
        counter["steps"] += 1
        return step(state, batch)

    params = {"w": jnp.zeros(2), "b": jnp.zeros(1)}
    state = create_train_state(jax.random.key(0), params, opt)
    sample = lambda key: jax.random.normal(key, (2,))
    return fit(state, counted, sample, n_steps, progress=False, **kwargs)


def test_budget_stops_on_the_training_clock(monkeypatch):
    state, history = _counting_run(monkeypatch, 10_000, budget_s=50 * DT, clock_every=5)
    # The first step (compilation) is off the clock: after `done` steps the clock reads
    # (done - 1) DT; it is read every 5 steps, so the run stops at done = 55.
    assert int(state.step) == 55
    last = history[-1]
    assert last["stopped"] == "budget" and last["step"] == 55
    assert last["train_seconds"] == pytest.approx(54 * DT)
    assert last["compile_seconds"] == pytest.approx(DT)
    # Without a budget the same call runs to n_steps.
    state, history = _counting_run(monkeypatch, 30, log_every=10)
    assert int(state.step) == 30 and history[-1]["stopped"] == "n_steps"
    assert [h["step"] for h in history] == [10, 20, 30]


def test_evaluate_every_at_seconds_and_at_the_end(monkeypatch):
    calls = []

    def evaluate(state):
        calls.append(int(state.step))
        return {"w_norm": float(jnp.linalg.norm(state.params["w"]))}

    state, history = _counting_run(
        monkeypatch,
        40,
        log_every=100,
        clock_every=5,
        evaluate=evaluate,
        evaluate_every=20,
        evaluate_at_s=[10 * DT, 12 * DT],
    )
    # at_s: first clock reading with (done - 1) DT >= 10 DT is done = 15 (both 10 and 12
    # DT crossed by then? 14 DT >= 12 DT: yes, one evaluation for both); every 20: 20, 40;
    # and the end (40, already evaluated there).
    assert calls == [15, 20, 40]
    rows = {h["step"]: h for h in history}
    assert rows[15]["evaluate_at_s"] == pytest.approx(12 * DT)
    assert all("w_norm" in rows[s] for s in calls) and rows[40]["stopped"] == "n_steps"
    assert all("loss" in h for h in history)


def test_fit_argument_validation():
    state = create_train_state(jax.random.key(0), {"w": jnp.zeros(1)}, optax.sgd(0.1))
    step = make_train_step(lambda p, k, b: jnp.sum(p["w"] ** 2), optax.sgd(0.1))
    sample = lambda key: jnp.zeros(1)
    with pytest.raises(ValueError, match="budget_s must be positive"):
        fit(state, step, sample, 5, budget_s=0.0, progress=False)
    with pytest.raises(ValueError, match="clock must be one of"):
        fit(state, step, sample, 5, clock="gpu", progress=False)
    with pytest.raises(ValueError, match="need an evaluate callback"):
        fit(state, step, sample, 5, evaluate_every=2, progress=False)
    with pytest.raises(ValueError, match="evaluate_at_s"):
        fit(state, step, sample, 5, evaluate=lambda s: {}, evaluate_at_s=[-1.0], progress=False)


# -- the recipe ---------------------------------------------------------------------------
MU, SIGMA = np.array([1.0, -0.5]), 0.5


def gaussian_score(sde, x, t):
    """Exact score of p_t for x0 ~ N(MU, SIGMA^2 I) under the VP SDE."""
    m, s = sde.marginal_coeffs(jnp.asarray(t))
    var = m**2 * SIGMA**2 + s**2
    return -(x - m * MU) / var


@pytest.mark.parametrize("output", ["score", "noise"])
def test_fit_score_model_learns_the_gaussian_score(output):
    sde = VPSDE()
    data = MU + SIGMA * jax.random.normal(jax.random.key(0), (4096, 2))
    result = fit_score_model(
        sde,
        ScoreMLP(features=(64, 64)),
        data,
        key=jax.random.key(1),
        n_steps=1500,
        batch_size=256,
        learning_rate=3e-3,
        output=output,
        weighting="sigma2",
        ema_decay=0.99,
        log_every=500,
    )
    assert int(result.state.step) == 1500 and result.history[-1]["stopped"] == "n_steps"
    for t in (0.3, 0.7):
        x, _ = sde.marginal_sample(jax.random.key(2), data[:512], t)
        exact = gaussian_score(sde, x, t)
        err = jnp.linalg.norm(result.score_fn(x, t) - exact) / jnp.linalg.norm(exact)
        # Closed form vs a 2-layer MLP after 1500 steps: ~5% with either output; an
        # untrained net or a wrong wiring (sign, std scaling) gives O(1).
        assert float(err) < 0.15, (output, t, float(err))


def test_fit_score_model_is_the_documented_composition():
    """The recipe equals init + default_optimizer + dsm_objective + make_train_step + fit."""
    from wgdiff.train import default_optimizer

    sde, model = VPSDE(), ScoreMLP(features=(8,))
    data = jax.random.normal(jax.random.key(0), (64, 2))
    key = jax.random.key(5)
    result = fit_score_model(
        sde, model, data, key=key, n_steps=12, batch_size=16, log_every=4, mesh=None
    )
    k_init, k_state, k_data = jax.random.split(key, 3)
    params = model.init(k_init, data[:2], jnp.full((2,), 0.5))
    opt = default_optimizer(1e-3, decay_steps=12)
    step = make_train_step(dsm_objective(sde, model.apply), opt, ema_decay=0.999)
    state, history = fit(
        create_train_state(k_state, params, opt),
        step,
        dataset_sampler(data, 16),
        12,
        data_key=k_data,
        log_every=4,
        progress=False,
    )
    for a, b in zip(jax.tree.leaves(result.state), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [h["loss"] for h in result.history] == [h["loss"] for h in history]


def test_fit_score_model_post_update_budget_and_evaluate():
    sde = VPSDE()
    data = jax.random.normal(jax.random.key(0), (128, 2))
    seen = []

    def evaluate(score_fn, state):
        seen.append(int(state.step))
        return {"score_mean": float(jnp.mean(score_fn(data[:8], 0.5)))}

    result = fit_score_model(
        sde,
        ScoreMLP(features=(16,)),
        data,
        key=jax.random.key(1),
        n_steps=20,
        batch_size=16,
        post_update=clip_params(0.05),
        evaluate=evaluate,
        evaluate_every=10,
        log_every=10,
    )
    for leaf in jax.tree.leaves(result.state.params):
        assert jnp.max(jnp.abs(leaf)) <= np.float32(0.05)
    for leaf in jax.tree.leaves(result.state.ema_params):  # convex combination, float32 rounding
        assert jnp.max(jnp.abs(leaf)) <= np.float32(0.05) * (1 + 1e-6)
    assert seen == [10, 20] and "score_mean" in result.history[-1]
    np.testing.assert_allclose(
        result.score_fn(data[:3], 0.5), result.apply(result.params, data[:3], 0.5)
    )


def test_fit_score_model_validation():
    sde, model = VPSDE(), ScoreMLP(features=(4,))
    data = jnp.zeros((8, 2))
    with pytest.raises(TypeError, match="sde must be"):
        fit_score_model("vp", model, data, key=jax.random.key(0), n_steps=2)
    with pytest.raises(ValueError, match="output must be one of"):
        fit_score_model(sde, model, data, key=jax.random.key(0), n_steps=2, output="eps")
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        fit_score_model(sde, model, data, key=jax.random.key(0), n_steps=2, lr_schedule="exp")
    with pytest.raises(ValueError, match="warmup_steps"):
        fit_score_model(sde, model, data, key=jax.random.key(0), n_steps=2, warmup_steps=5)
    with pytest.raises(ValueError, match="data must have shape"):
        fit_score_model(sde, model, jnp.zeros(8), key=jax.random.key(0), n_steps=2)


def test_default_optimizer_warmup_schedule():
    from wgdiff.train import default_optimizer

    # The learning rate the AdamW step sees, read back from a 1-D problem with
    # gradient 1: the first AdamW update magnitude equals the learning rate.
    def first_update(opt):
        params = jnp.zeros(1)
        state = opt.init(params)
        updates, _ = opt.update(jnp.ones(1), state, params)
        return float(-updates[0])

    assert first_update(default_optimizer(1e-2)) == pytest.approx(1e-2, rel=1e-3)
    assert first_update(default_optimizer(1e-2, decay_steps=100, warmup_steps=10)) == 0.0
    with pytest.raises(ValueError, match="warmup_steps"):
        default_optimizer(1e-2, decay_steps=10, warmup_steps=10)
