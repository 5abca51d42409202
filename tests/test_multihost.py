"""A real two-process JAX job on 127.0.0.1 (gloo CPU collectives) trains data-parallel.

Each process owns 2 CPU devices (4 global devices), feeds only its own rows of
the global batch through ``jax.make_array_from_process_local_data`` and writes
orbax checkpoints into the shared run directory. Both processes must end with
identical parameters, equal to a single-process single-device run on the same
global batches.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

N_STEPS = 6
GLOBAL_BATCH = 16
SEED = 3


def _setup():
    """Model, loss, optimizer and the global-batch sampler shared by every run."""
    import jax
    import optax

    from wgdiff.losses import dsm_objective
    from wgdiff.nets import ScoreMLP
    from wgdiff.sde import VPSDE

    model = ScoreMLP(features=(16, 16), embed_dim=8)
    data = jax.random.normal(jax.random.key(SEED), (64, 2)) * 0.5 + 1.0
    params = model.init(jax.random.key(SEED + 1), data[:1], jax.numpy.zeros((1,)))
    loss_fn = dsm_objective(VPSDE(), model.apply)
    optimizer = optax.adam(1e-2)
    return data, params, loss_fn, optimizer


def _flat(tree) -> np.ndarray:
    import jax

    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _worker(port: int, process_id: int, run_dir: str, out: str) -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", 2)
    from wgdiff.train.parallel import initialize_distributed

    info = initialize_distributed(f"127.0.0.1:{port}", 2, process_id, initialization_timeout=120)
    from wgdiff.train import create_train_state, dataset_sampler, fit
    from wgdiff.train.parallel import data_mesh, make_parallel_train_step, process_rows

    data, params, loss_fn, optimizer = _setup()
    mesh = data_mesh()
    rows = process_rows(GLOBAL_BATCH, mesh)
    global_sampler = jax.jit(dataset_sampler(data, GLOBAL_BATCH))

    def local_rows(key):
        # The whole batch is cheap here; a real pipeline would read only its rows.
        return np.asarray(global_sampler(key))[rows]

    state = create_train_state(jax.random.key(SEED + 2), params, optimizer)
    step = make_parallel_train_step(loss_fn, optimizer, mesh=mesh, ema_decay=0.9)
    state, history = fit(
        state,
        step,
        local_rows,
        N_STEPS,
        data_key=jax.random.key(SEED + 3),
        run_dir=run_dir,
        checkpoint_every=3,
        log_every=1,
        progress=False,
        mesh=mesh,
        sample_on_host=True,
        config={"seed": SEED},
    )
    first = [np.asarray(leaf.addressable_shards[0].data) for leaf in jax.tree.leaves(state.params)]
    np.savez(
        out,
        params=_flat(state.params),
        ema=_flat(state.ema_params),
        local_replicas_equal=all(
            np.array_equal(a, np.asarray(b.addressable_shards[1].data))
            for a, b in zip(first, jax.tree.leaves(state.params), strict=True)
        ),
        losses=np.array([row["loss"] for row in history]),
        rows=[rows.start, rows.stop],
    )
    Path(out + ".json").write_text(json.dumps(info._asdict()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.multidevice
def test_two_processes_match_single_process(tmp_path):
    import jax

    from wgdiff.train import create_train_state, dataset_sampler, fit, make_train_step

    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                str(port),
                str(pid),
                str(tmp_path / "run"),
                str(tmp_path / f"p{pid}.npz"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=240)[0])
        finally:
            proc.kill()
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]

    data, params, loss_fn, optimizer = _setup()
    state = create_train_state(jax.random.key(SEED + 2), params, optimizer)
    step = make_train_step(loss_fn, optimizer, ema_decay=0.9)
    ref, ref_history = fit(
        state,
        step,
        dataset_sampler(data, GLOBAL_BATCH),
        N_STEPS,
        data_key=jax.random.key(SEED + 3),
        log_every=1,
        progress=False,
    )

    results = [np.load(tmp_path / f"p{pid}.npz") for pid in (0, 1)]
    infos = [json.loads((tmp_path / f"p{pid}.npz.json").read_text()) for pid in (0, 1)]
    assert [i["process_index"] for i in infos] == [0, 1]
    assert all(
        i["process_count"] == 2 and i["device_count"] == 4 and i["initialized"] for i in infos
    )
    # Each process fed half of the global batch.
    assert [list(r["rows"]) for r in results] == [[0, 8], [8, 16]]
    # Replicated parameters: every device of both processes holds the same bits.
    assert all(bool(r["local_replicas_equal"]) for r in results)
    np.testing.assert_array_equal(results[0]["params"], results[1]["params"])
    np.testing.assert_array_equal(results[0]["ema"], results[1]["ema"])
    # Against one device: the same updates up to float32 summation order of the
    # batch mean and the gradient all-reduce (~1e-7 relative per step, 6 Adam steps).
    np.testing.assert_allclose(results[0]["params"], _flat(ref.params), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results[0]["losses"], [r["loss"] for r in ref_history], rtol=1e-5)
    assert int(ref.step) == N_STEPS
    # Checkpoints written jointly by the two processes, with the run config inside.
    steps = sorted(
        int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()
    )
    assert steps == [3, 6]
    from wgdiff.train.checkpoint import checkpoint_manager, restore_checkpoint, restore_config

    manager = checkpoint_manager(tmp_path / "run")
    restored = restore_checkpoint(manager, create_train_state(jax.random.key(0), params, optimizer))
    assert restore_config(manager) == {"seed": SEED}
    manager.close()
    np.testing.assert_array_equal(_flat(restored.params), results[0]["params"])


if __name__ == "__main__":
    _worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
