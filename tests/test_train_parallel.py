"""Data-parallel training on 8 CPU devices (``jax_num_cpu_devices = 8`` in a subprocess).

The subprocess trains the same tiny DSM problem with the same seed and global
batch on meshes of 1, 2 and 8 devices and with the plain single-device step;
the loss curves and parameters must agree to float tolerance. Determinism on
one device (bitwise-equal training and samples across two runs) and the
distributed-init / batch-shape checks run in this process.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

N_STEPS = 8
GLOBAL_BATCH = 32
SEED = 11


def _problem():
    import jax
    import jax.numpy as jnp
    import optax

    from wgdiff.losses import dsm_objective
    from wgdiff.nets import ScoreMLP
    from wgdiff.sde import VPSDE

    model = ScoreMLP(features=(16, 16), embed_dim=8)
    data = jax.random.normal(jax.random.key(SEED), (128, 2)) @ jnp.array([[1.0, 0.3], [0.0, 0.5]])
    params = model.init(jax.random.key(SEED + 1), data[:1], jnp.zeros((1,)))
    return model, data, params, dsm_objective(VPSDE(), model.apply), optax.adam(3e-3)


def _train(mesh=None):
    """``(final state, loss curve)`` on ``mesh`` (None: the plain single-device step)."""
    import jax

    from wgdiff.train import create_train_state, dataset_sampler, fit, make_train_step
    from wgdiff.train.parallel import make_parallel_train_step

    model, data, params, loss_fn, optimizer = _problem()
    state = create_train_state(jax.random.key(SEED + 2), params, optimizer)
    if mesh is None:
        step = make_train_step(loss_fn, optimizer, ema_decay=0.9)
    else:
        step = make_parallel_train_step(loss_fn, optimizer, mesh=mesh, ema_decay=0.9)
    state, history = fit(
        state,
        step,
        dataset_sampler(data, GLOBAL_BATCH),
        N_STEPS,
        data_key=jax.random.key(SEED + 3),
        log_every=1,
        progress=False,
        mesh=mesh,
    )
    return state, np.array([row["loss"] for row in history])


def _flat(tree) -> np.ndarray:
    import jax

    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _eight_device_worker(out: str) -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", 8)
    from jax.sharding import PartitionSpec as P

    from wgdiff.train import create_train_state
    from wgdiff.train.parallel import (
        batch_sharding,
        data_mesh,
        make_parallel_train_step,
        replicate,
        shard_batch,
    )

    assert jax.device_count() == 8
    results = {}
    plain, results["loss_plain"] = _train(None)
    results["params_plain"] = _flat(plain.params)
    for n in (1, 2, 8):
        state, results[f"loss_{n}"] = _train(data_mesh(jax.devices()[:n]))
        results[f"params_{n}"] = _flat(state.params)
        results[f"ema_{n}"] = _flat(state.ema_params)
        leaf = jax.tree.leaves(state.params)[0]
        results[f"replicated_{n}"] = (
            leaf.sharding.spec == P() and len(leaf.sharding.device_set) == n
        )

    # The step splits the batch: each device sees GLOBAL_BATCH / 8 rows.
    mesh = data_mesh()
    batch = shard_batch(np.ones((GLOBAL_BATCH, 2), np.float32), mesh)
    results["batch_is_split"] = batch.sharding == batch_sharding(mesh) and {
        s.data.shape for s in batch.addressable_shards
    } == {(GLOBAL_BATCH // 8, 2)}
    model, data, params, loss_fn, optimizer = _problem()
    step = make_parallel_train_step(loss_fn, optimizer, mesh=mesh)
    state = replicate(create_train_state(jax.random.key(0), params, optimizer), mesh)
    try:
        step(state, shard_batch(np.ones((12, 2), np.float32), mesh))
        results["indivisible_message"] = ""
    except ValueError as err:
        results["indivisible_message"] = str(err)
    np.savez(out, **results)


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel") / "results.npz"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, __file__, str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return np.load(out)


@pytest.mark.multidevice
def test_loss_curve_same_on_1_2_8_devices(eight_devices):
    r = eight_devices
    # float32 batch means and gradient all-reduces sum in a different order on each
    # mesh (~1e-7 relative per op); after 8 Adam steps differences stay far below 1e-4.
    for n in (1, 2, 8):
        np.testing.assert_allclose(r[f"loss_{n}"], r["loss_plain"], rtol=1e-5)
        np.testing.assert_allclose(r[f"params_{n}"], r["params_plain"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r[f"ema_{n}"], r[f"ema_{1}"], rtol=1e-4, atol=1e-5)
        assert bool(r[f"replicated_{n}"])
    # The loss actually changes over the run (the curves compared are not constant).
    assert np.ptp(r["loss_plain"]) > 1e-3


@pytest.mark.multidevice
def test_batch_split_over_devices_and_checked(eight_devices):
    assert bool(eight_devices["batch_is_split"])
    message = str(eight_devices["indivisible_message"])
    assert "divisible by the number of devices 8" in message and "12" in message


def test_training_and_samples_bitwise_reproducible_on_one_device():
    import jax

    from wgdiff.samplers import euler_maruyama
    from wgdiff.sde import VPSDE

    model = _problem()[0]
    runs = []
    for _ in range(2):
        state, losses = _train(None)
        score_fn = lambda x, t, p=state.ema_params: model.apply(p, x, t)
        samples = euler_maruyama(jax.random.key(5), VPSDE(), score_fn, (64, 2), 20)
        runs.append((losses, _flat(state.params), np.asarray(samples)))
    for first, second in zip(*runs, strict=True):
        np.testing.assert_array_equal(first, second)


def test_initialize_distributed_single_process_and_checks():
    from wgdiff.train.parallel import _cluster_detected, initialize_distributed

    info = initialize_distributed(environ={})
    assert (info.process_count, info.process_index, info.initialized) == (1, 0, False)
    assert initialize_distributed(num_processes=1, process_id=0).process_count == 1
    with pytest.raises(ValueError, match="process_id must lie in"):
        initialize_distributed("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="num_processes must be a positive integer"):
        initialize_distributed("127.0.0.1:1234", 0, 0)
    with pytest.raises(ValueError, match="coordinator must look like"):
        initialize_distributed("localhost", 2, 0)
    assert _cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"})
    assert not _cluster_detected({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"})
    assert _cluster_detected({"OMPI_COMM_WORLD_SIZE": "2"})
    assert _cluster_detected({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"})
    assert not _cluster_detected({"TPU_WORKER_HOSTNAMES": "localhost"})


def test_process_rows_single_process():
    from wgdiff.train.parallel import data_mesh, process_rows

    assert process_rows(8, data_mesh()) == slice(0, 8)
    with pytest.raises(ValueError, match="global_batch_size"):
        process_rows(0, data_mesh())


if __name__ == "__main__":
    _eight_device_worker(sys.argv[1])
