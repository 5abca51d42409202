"""Train state, step and fit loop: EMA, resume, no retracing, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from wgdiff.losses import dsm_objective
from wgdiff.nets import ScoreMLP
from wgdiff.sde import VPSDE
from wgdiff.train import create_train_state, dataset_sampler, fit, make_train_step


def quadratic_step(ema_decay):
    loss = lambda p, key, batch: jnp.sum((p["w"] - batch) ** 2)
    return make_train_step(loss, optax.sgd(0.1), ema_decay=ema_decay)


def test_step_is_gradient_descent_with_ema():
    state = create_train_state(jax.random.key(0), {"w": jnp.zeros(2)}, optax.sgd(0.1))
    step = quadratic_step(0.5)
    target = jnp.array([1.0, -1.0])
    w, ema = np.zeros(2), np.zeros(2)
    for _ in range(3):
        state, metrics = step(state, target)
        w = w - 0.1 * 2 * (w - np.asarray(target))
        ema = 0.5 * ema + 0.5 * w
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-6)
    np.testing.assert_allclose(state.ema_params["w"], ema, rtol=1e-6)
    assert int(state.step) == 3


def test_train_step_does_not_retrace():
    traces = []

    def loss(p, key, batch):
        traces.append(1)
        return jnp.sum((p["w"] - batch) ** 2)

    step = make_train_step(loss, optax.sgd(0.1))
    state = create_train_state(jax.random.key(0), {"w": jnp.zeros(2)}, optax.sgd(0.1))
    for i in range(3):
        state, _ = step(state, jnp.full(2, float(i)))
    assert len(traces) == 1


def small_run(tmp_path, name, n_steps, checkpoint_every=None):
    model = ScoreMLP(features=(16, 16))
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
    data = 0.5 * jax.random.normal(jax.random.key(1), (256, 2))
    optimizer = optax.adam(1e-2)
    step = make_train_step(
        dsm_objective(VPSDE(), model.apply, weighting="sigma2"), optimizer, ema_decay=0.9
    )
    state = create_train_state(jax.random.key(2), params, optimizer)
    return fit(
        state,
        step,
        dataset_sampler(data, 32),
        n_steps,
        data_key=jax.random.key(3),
        run_dir=None if name is None else tmp_path / name,
        checkpoint_every=checkpoint_every,
        log_every=5,
        progress=False,
    )


def test_resume_reaches_the_uninterrupted_parameters(tmp_path):
    full, history = small_run(tmp_path, None, 30)
    small_run(tmp_path, "resumed", 20, checkpoint_every=10)  # "stopped" after step 20
    resumed, _ = small_run(tmp_path, "resumed", 30, checkpoint_every=10)
    assert int(resumed.step) == 30
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and len(history) == 6


def test_dsm_training_reduces_the_loss(tmp_path):
    trained, _ = small_run(tmp_path, None, 150)
    initial, _ = small_run(tmp_path, None, 1)
    data = 0.5 * jax.random.normal(jax.random.key(9), (4096, 2))
    loss = dsm_objective(VPSDE(), ScoreMLP(features=(16, 16)).apply, weighting="sigma2")
    # Same key and batch for both: the difference is the parameters only.
    before = float(loss(initial.params, jax.random.key(4), data))
    after = float(loss(trained.params, jax.random.key(4), data))
    assert after < 0.8 * before


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: make_train_step(lambda p, k, b: 0.0, ema_decay=1.0), "ema_decay"),
        (lambda: dataset_sampler(jnp.ones(5), 2), "data"),
        (lambda: dataset_sampler(jnp.array([[0.0], [jnp.inf]]), 2), "NaN or Inf"),
        (lambda: dataset_sampler(jnp.ones((5, 2)), 0), "batch_size"),
        (lambda: fit(None, None, None, 0), "n_steps"),
        (lambda: fit(None, None, None, 5, checkpoint_every=2), "run_dir"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
