"""Checkpoints survive SIGKILL, corruption and a change of device count.

- A run killed with SIGKILL mid-run (possibly inside an asynchronous save)
  resumes to bitwise the same final parameters as an uninterrupted run.
- A checkpoint written on 8 devices restores on 1, and one written on 1
  restores replicated over 4 (abstract target shardings).
- A truncated or partial checkpoint is refused with a message naming the step
  and the failure; ``fit`` moves it aside and resumes from the previous good one.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

N_STEPS = 40
SEED = 5


def _setup():
    import jax
    import jax.numpy as jnp
    import optax

    from wgdiff.losses import dsm_objective
    from wgdiff.nets import ScoreMLP
    from wgdiff.sde import VPSDE
    from wgdiff.train import create_train_state, dataset_sampler

    model = ScoreMLP(features=(16, 16), embed_dim=8)
    data = jax.random.normal(jax.random.key(SEED), (64, 2))
    params = model.init(jax.random.key(SEED + 1), data[:1], jnp.zeros((1,)))
    optimizer = optax.adam(1e-2)
    state = create_train_state(jax.random.key(SEED + 2), params, optimizer)
    return state, dsm_objective(VPSDE(), model.apply), optimizer, dataset_sampler(data, 16)


def _fit(n_steps, run_dir=None, checkpoint_every=None, step_wrapper=None, mesh=None):
    import jax

    from wgdiff.train import fit, make_train_step
    from wgdiff.train.parallel import make_parallel_train_step

    state, loss_fn, optimizer, sampler = _setup()
    if mesh is None:
        step = make_train_step(loss_fn, optimizer, ema_decay=0.9)
    else:
        step = make_parallel_train_step(loss_fn, optimizer, mesh=mesh, ema_decay=0.9)
    if step_wrapper is not None:
        step = step_wrapper(step)
    return fit(
        state,
        step,
        sampler,
        n_steps,
        data_key=jax.random.key(SEED + 3),
        run_dir=run_dir,
        checkpoint_every=checkpoint_every,
        log_every=5,
        progress=False,
        mesh=mesh,
        config={"seed": SEED, "n_steps": n_steps},
    )[0]


def _flat(tree) -> np.ndarray:
    import jax

    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


def _slow_worker(run_dir: str) -> None:
    """Train with a pause per step so that the parent can kill it mid-run."""

    def slow(step):
        def wrapped(state, batch):
            time.sleep(0.05)
            return step(state, batch)

        return wrapped

    _fit(N_STEPS, run_dir, checkpoint_every=2, step_wrapper=slow)


def _steps_on_disk(run_dir: Path) -> list[int]:
    directory = run_dir / "checkpoints"
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def test_sigkill_mid_run_resumes_to_uninterrupted_result(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, __file__, "slow", str(run_dir)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not any(s >= 10 for s in _steps_on_disk(run_dir)):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = max(_steps_on_disk(run_dir))
    assert 10 <= killed_at < N_STEPS

    resumed = _fit(N_STEPS, run_dir, checkpoint_every=2)
    reference = _fit(N_STEPS)
    assert int(resumed.step) == N_STEPS
    # Same device, same compiled step, same batches and keys: identical bits.
    np.testing.assert_array_equal(_flat(resumed.params), _flat(reference.params))
    np.testing.assert_array_equal(_flat(resumed.opt_state), _flat(reference.opt_state))
    np.testing.assert_array_equal(_flat(resumed.ema_params), _flat(reference.ema_params))
    # Nothing half-written is left behind by the killed save.
    assert not [p for p in (run_dir / "checkpoints").iterdir() if "tmp" in p.name]


def _truncate_largest_file(step_dir: Path) -> Path:
    files = [p for p in step_dir.rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    with biggest.open("r+b") as fh:
        fh.truncate(biggest.stat().st_size // 2)
    return biggest


def test_truncated_checkpoint_refused_and_previous_used(tmp_path):
    from wgdiff.train.checkpoint import (
        CheckpointError,
        checkpoint_manager,
        restore_checkpoint,
        restore_config,
        restore_latest,
    )

    run_dir = tmp_path / "run"
    _fit(6, run_dir, checkpoint_every=2)
    assert _steps_on_disk(run_dir) == [2, 4, 6]
    _truncate_largest_file(run_dir / "checkpoints" / "6")
    # A partial checkpoint: step 4 lost its array metadata.
    next((run_dir / "checkpoints" / "4" / "state").glob("_METADATA")).unlink()
    # What a save killed before its commit leaves behind: a temporary directory.
    shutil.copytree(
        run_dir / "checkpoints" / "2", run_dir / "checkpoints" / "8.orbax-checkpoint-tmp-1700000000"
    )

    like = _setup()[0]
    manager = checkpoint_manager(run_dir)
    assert manager.all_steps() == [2, 4, 6]  # the unfinished save is not a checkpoint
    with pytest.raises(CheckpointError, match=r"checkpoint step 6 .* is corrupt or partial"):
        restore_checkpoint(manager, like, step=6)
    with pytest.warns(UserWarning, match="step 6 .* corrupt or partial") as caught:
        state, step, bad = restore_latest(manager, like)
    assert any("step 4" in str(w.message) for w in caught)
    assert (step, bad, int(state.step)) == (2, [6, 4], 2)
    assert restore_config(manager, 2) == {"seed": SEED, "n_steps": 6}
    manager.close()

    with pytest.warns(UserWarning, match="restored checkpoint step 2 instead"):
        resumed = _fit(8, run_dir, checkpoint_every=2)
    assert sorted(p.name.split("-")[0] for p in (run_dir / "checkpoints-corrupt").iterdir()) == [
        "4",
        "6",
    ]
    assert _steps_on_disk(run_dir) == [4, 6, 8]
    np.testing.assert_array_equal(_flat(resumed.params), _flat(_fit(8).params))


def test_no_restorable_checkpoint_is_a_clear_error(tmp_path):
    from wgdiff.train import fit

    run_dir = tmp_path / "run"
    _fit(2, run_dir, checkpoint_every=2)
    _truncate_largest_file(run_dir / "checkpoints" / "2")
    state, loss_fn, optimizer, sampler = _setup()
    from wgdiff.train import make_train_step
    from wgdiff.train.checkpoint import CheckpointError

    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="could be restored"):
        fit(state, make_train_step(loss_fn, optimizer), sampler, 4, run_dir=run_dir, progress=False)
    assert _steps_on_disk(run_dir) == [2]  # nothing is moved when no step works


def test_config_absent_and_missing_step(tmp_path):
    from wgdiff.train.checkpoint import (
        checkpoint_manager,
        restore_checkpoint,
        restore_config,
        save_checkpoint,
    )

    state = _setup()[0]
    manager = checkpoint_manager(tmp_path)
    save_checkpoint(manager, state)  # no config given
    manager.wait_until_finished()
    assert restore_config(manager) is None
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 5 .* available: \[0\]"):
        restore_checkpoint(manager, state, step=5)
    manager.close()


def _device_count_worker(one_device_run: str, eight_device_run: str, out: str) -> None:
    import jax

    jax.config.update("jax_num_cpu_devices", 8)
    from wgdiff.train.checkpoint import checkpoint_manager, restore_checkpoint
    from wgdiff.train.parallel import data_mesh

    # 1 -> 4: a single-device checkpoint restored replicated over 4 devices.
    mesh4 = data_mesh(jax.devices()[:4])
    manager = checkpoint_manager(one_device_run)
    on4 = restore_checkpoint(manager, _setup()[0], mesh=mesh4)
    manager.close()
    leaf = jax.tree.leaves(on4.params)[0]
    # 8 devices: train data-parallel and checkpoint.
    state8 = _fit(4, eight_device_run, checkpoint_every=2, mesh=data_mesh())
    np.savez(
        out,
        on4=_flat(on4.params),
        on4_devices=len(leaf.sharding.device_set),
        on4_shards=len(leaf.addressable_shards),
        params8=_flat(state8.params),
        step8=int(state8.step),
    )


@pytest.mark.multidevice
def test_checkpoint_moves_between_device_counts(tmp_path):
    from wgdiff.train.checkpoint import checkpoint_manager, restore_checkpoint

    one_run, eight_run, out = tmp_path / "one", tmp_path / "eight", tmp_path / "out.npz"
    state1 = _fit(2, one_run, checkpoint_every=2)
    proc = subprocess.run(
        [sys.executable, __file__, "devices", str(one_run), str(eight_run), str(out)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = np.load(out)
    np.testing.assert_array_equal(result["on4"], _flat(state1.params))
    assert int(result["on4_devices"]) == 4 and int(result["on4_shards"]) == 4

    manager = checkpoint_manager(eight_run)
    on1 = restore_checkpoint(manager, _setup()[0])
    manager.close()
    assert int(result["step8"]) == int(on1.step) == 4
    assert all(len(x.sharding.device_set) == 1 for x in __import__("jax").tree.leaves(on1))
    np.testing.assert_array_equal(_flat(on1.params), result["params8"])


if __name__ == "__main__":
    if sys.argv[1] == "slow":
        _slow_worker(sys.argv[2])
    else:
        _device_count_worker(*sys.argv[2:5])
