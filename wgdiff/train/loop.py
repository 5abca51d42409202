"""The fit loop: batches, progress bar, JSON-lines metrics log, orbax checkpoints and resume.

A run directory holds ``checkpoints/`` (orbax ``CheckpointManager``; each
checkpoint also stores the run config), ``metrics.jsonl`` (one JSON object per
logged step) and ``config.json``. Calling ``fit`` again on the same directory
resumes from the newest checkpoint that reads back (a corrupt one is reported,
moved aside and the previous one used) and reaches the same parameters as an
uninterrupted run: the batch of step ``i`` is drawn from ``fold_in(data_key, i)``
and the step's own randomness comes from the key stored in the state.

With ``mesh=`` the same loop trains data-parallel (``wgdiff.train.parallel``):
the state is replicated over the mesh, each step's global batch is split over
its devices, and in a multi-host job every process runs ``fit`` identically
while only process 0 writes logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from wgdiff._checks import check_finite, check_positive_int
from wgdiff.train.checkpoint import (
    checkpoint_manager,
    quarantine_steps,
    restore_checkpoint,
    restore_latest,
    save_checkpoint,
)
from wgdiff.train.parallel import global_batch_fn, replicate, shard_batch
from wgdiff.train.state import TrainState


def dataset_sampler(data, batch_size: int) -> Callable:
    """``sample_batch(key) -> (batch_size, *event)`` drawing rows of ``data`` with replacement.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> sample = dataset_sampler(jnp.arange(10.0)[:, None], 4)
        >>> sample(jax.random.key(0)).shape
        (4, 1)
    """
    data = jnp.asarray(data)
    if data.ndim < 2:
        raise ValueError(f"data must have shape (n, *event), got shape {data.shape}")
    check_finite(data, "data")
    batch_size = check_positive_int(batch_size, "batch_size")

    def sample_batch(key):
        return data[jax.random.randint(key, (batch_size,), 0, data.shape[0])]

    return sample_batch


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("a") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def fit(
    state: TrainState,
    train_step: Callable,
    sample_batch: Callable,
    n_steps: int,
    *,
    data_key=None,
    run_dir=None,
    checkpoint_every: int | None = None,
    log_every: int = 100,
    progress: bool = True,
    config: dict | None = None,
    max_to_keep: int = 3,
    mesh: Mesh | None = None,
    sample_on_host: bool = False,
):
    """Train until ``state.step == n_steps``, resuming from ``run_dir`` if it holds checkpoints.

    Args:
        state: initial state (also the restore template on resume).
        train_step: ``(state, batch) -> (state, metrics)`` from ``make_train_step``
            (or ``make_parallel_train_step`` with ``mesh``).
        sample_batch: ``key -> batch`` (e.g. ``dataset_sampler``); jit-compiled here.
            With ``sample_on_host`` it is called eagerly instead and returns this
            process's rows of the global batch (e.g. from a NumPy data pipeline).
        n_steps: total number of steps of the run (not additional steps).
        data_key: key for the batches (default ``jax.random.key(0)``).
        run_dir: directory for checkpoints, ``metrics.jsonl`` and ``config.json``.
        checkpoint_every: save every this many steps (and at the end); needs ``run_dir``.
        log_every: metrics are pulled from the device and logged every this many steps.
        progress: show a tqdm progress bar.
        config: JSON-serialisable run configuration, written to ``config.json`` and
            saved inside every checkpoint.
        max_to_keep: checkpoints kept.
        mesh: train data-parallel over this ``("data",)`` mesh
            (``wgdiff.train.parallel.data_mesh``); the global batch size must be
            divisible by its number of devices.
        sample_on_host: see ``sample_batch``.

    Returns:
        ``(state, history)`` with ``history`` the list of logged metric dicts.
    """
    n_steps = check_positive_int(n_steps, "n_steps")
    log_every = check_positive_int(log_every, "log_every")
    if checkpoint_every is not None:
        check_positive_int(checkpoint_every, "checkpoint_every")
        if run_dir is None:
            raise ValueError("checkpoint_every needs a run_dir to write checkpoints to")
    data_key = jax.random.key(0) if data_key is None else data_key
    is_writer = jax.process_index() == 0
    if mesh is not None:
        state = replicate(state, mesh)
    manager = None
    log_path = None
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if config is not None and is_writer:
            (run_dir / "config.json").write_text(json.dumps(config, indent=2))
        log_path = run_dir / "metrics.jsonl" if is_writer else None
        manager = checkpoint_manager(run_dir, max_to_keep=max_to_keep)
        if manager.latest_step() is not None:
            state, _, bad_steps = restore_latest(manager, state, mesh=mesh)
            # Out of the way, so that saving those step numbers again cannot collide.
            quarantine_steps(manager, bad_steps)
    if sample_on_host:

        def batch_fn(i):
            local = sample_batch(jax.random.fold_in(data_key, i))
            return local if mesh is None else shard_batch(local, mesh)
    elif mesh is not None:
        batch_fn = global_batch_fn(sample_batch, data_key, mesh)
    else:
        batch_fn = jax.jit(lambda i: sample_batch(jax.random.fold_in(data_key, i)))
    start = int(state.step)
    history: list[dict] = []
    pending: list[tuple[int, dict]] = []
    t0 = time.perf_counter()
    bar = tqdm(
        total=n_steps,
        initial=start,
        disable=not (progress and is_writer),
        desc="train",
        unit="step",
    )

    def flush():
        rows = []
        for step_no, metrics in pending:
            row = {
                "step": step_no,
                **{k: float(v) for k, v in metrics.items()},
                "time": time.perf_counter() - t0,
            }
            rows.append(row)
        pending.clear()
        if rows:
            history.extend(rows)
            if log_path is not None:
                _write_jsonl(log_path, rows)
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4g}")

    for i in range(start, n_steps):
        state, metrics = train_step(state, batch_fn(jnp.asarray(i)))
        done = i + 1
        if done % log_every == 0 or done == n_steps:
            pending.append((done, metrics))
            flush()
            if not np.isfinite(history[-1]["loss"]):
                bar.close()
                raise FloatingPointError(f"loss is {history[-1]['loss']} at step {done}")
        if manager is not None and checkpoint_every and done % checkpoint_every == 0:
            save_checkpoint(manager, state, config)
        bar.update(1)
    bar.close()
    if manager is not None:
        if manager.latest_step() != int(state.step):
            save_checkpoint(manager, state, config)
        manager.wait_until_finished()
        manager.close()
    return state, history


__all__ = [
    "checkpoint_manager",
    "dataset_sampler",
    "fit",
    "restore_checkpoint",
    "save_checkpoint",
]
