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

A run can also stop on a time budget (``budget_s``, on a wall or CPU clock that leaves
compilation and evaluation out) and call an ``evaluate(state)`` callback every so many
steps or at given training-clock seconds; its numbers join the logged rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
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


def dataset_sampler(data: jax.Array, batch_size: int) -> Callable[[jax.Array], jax.Array]:
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


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


def _check_eval_args(evaluate, evaluate_every, evaluate_at_s, budget_s, clock, clock_every):
    if evaluate is not None and not callable(evaluate):
        raise TypeError(f"evaluate must be a callable state -> dict, got {evaluate!r}")
    if (evaluate_every is not None or evaluate_at_s is not None) and evaluate is None:
        raise ValueError("evaluate_every / evaluate_at_s need an evaluate callback")
    if evaluate_every is not None:
        check_positive_int(evaluate_every, "evaluate_every")
    at = sorted(float(s) for s in evaluate_at_s) if evaluate_at_s is not None else []
    if any(not (s >= 0 and np.isfinite(s)) for s in at):
        raise ValueError(f"evaluate_at_s must be finite seconds >= 0, got {evaluate_at_s!r}")
    if budget_s is not None and not float(budget_s) > 0:
        raise ValueError(f"budget_s must be positive seconds, got {budget_s!r}")
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {tuple(CLOCKS)}, got {clock!r}")
    check_positive_int(clock_every, "clock_every")
    return at


def fit(
    state: TrainState,
    train_step: Callable,
    sample_batch: Callable,
    n_steps: int,
    *,
    data_key: jax.Array | None = None,
    run_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    log_every: int = 100,
    progress: bool = True,
    config: dict | None = None,
    max_to_keep: int = 3,
    mesh: Mesh | None = None,
    sample_on_host: bool = False,
    budget_s: float | None = None,
    clock: str = "wall",
    clock_every: int = 25,
    evaluate: Callable[[TrainState], dict | None] | None = None,
    evaluate_every: int | None = None,
    evaluate_at_s: Sequence[float] | None = None,
) -> tuple[TrainState, list[dict]]:
    """Train until ``state.step == n_steps`` or the time budget is spent, resuming from ``run_dir``.

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
        budget_s: stop once the training clock reaches this many seconds (``n_steps``
            stays the upper limit). The training clock leaves out the first step of
            this call (compilation; reported as ``compile_seconds``), evaluation,
            logging and checkpointing.
        clock: ``"wall"`` (``time.perf_counter``) or ``"process"`` (this process's CPU
            time over all threads, ``time.process_time``: fairer than wall time on a
            machine shared with other jobs, meaningless for work on an accelerator).
        clock_every: with ``budget_s`` or ``evaluate_at_s``, the clock is read (waiting
            for the device) every this many steps, so a budget may overrun by up to
            that many steps.
        evaluate: ``evaluate(state) -> dict | None`` of JSON-able numbers, merged into
            the history row of the step it ran at (and ``metrics.jsonl``); always run
            once at the end. Its time is not on the training clock.
        evaluate_every: run ``evaluate`` every this many steps.
        evaluate_at_s: run ``evaluate`` when the training clock first passes each of
            these seconds (at the next clock reading); the row records
            ``evaluate_at_s``.

    Returns:
        ``(state, history)``: ``history`` is the list of logged rows, each with
        ``step``, the metrics, ``time`` (wall seconds since the call started),
        ``train_seconds`` (the training clock) and ``compile_seconds``; evaluation
        rows also hold the ``evaluate`` entries; the last row has ``stopped``
        (``"n_steps"`` or ``"budget"``).

    Raises:
        ValueError: for bad arguments (named); FloatingPointError when a logged loss
            is not finite.
    """
    n_steps = check_positive_int(n_steps, "n_steps")
    log_every = check_positive_int(log_every, "log_every")
    at_s = _check_eval_args(evaluate, evaluate_every, evaluate_at_s, budget_s, clock, clock_every)
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
    read_clock = CLOCKS[clock]
    timed = budget_s is not None or bool(at_s)
    t0 = time.perf_counter()
    train_s, compile_s, segment_start = 0.0, 0.0, read_clock()
    bar = tqdm(
        total=n_steps,
        initial=start,
        disable=not (progress and is_writer),
        desc="train",
        unit="step",
    )

    def log_row(step_no: int, metrics: dict, extra: dict) -> None:
        row = {
            "step": step_no,
            **{k: float(v) for k, v in metrics.items()},
            "time": time.perf_counter() - t0,
            "train_seconds": train_s,
            "compile_seconds": compile_s,
            **extra,
        }
        history.append(row)
        if log_path is not None:
            _write_jsonl(log_path, [row])
        bar.set_postfix(loss=f"{row['loss']:.4g}")
        if not np.isfinite(row["loss"]):
            bar.close()
            raise FloatingPointError(f"loss is {row['loss']} at step {step_no}")

    last_eval_step = None
    for i in range(start, n_steps):
        state, metrics = train_step(state, batch_fn(jnp.asarray(i)))
        done = i + 1
        first = i == start
        evaluate_now = bool(evaluate_every) and done % evaluate_every == 0
        logged = done % log_every == 0 or done == n_steps
        checkpoint = manager is not None and checkpoint_every and done % checkpoint_every == 0
        read = first or logged or evaluate_now or checkpoint or (timed and done % clock_every == 0)
        if not read:
            bar.update(1)
            continue
        jax.block_until_ready(metrics["loss"])
        elapsed = read_clock() - segment_start
        if first:
            compile_s = elapsed  # compilation and the first step, off the training clock
        else:
            train_s += elapsed
        extra: dict = {}
        crossed = [s for s in at_s if s <= train_s]
        if crossed:
            at_s = at_s[len(crossed) :]
            evaluate_now = True
            extra["evaluate_at_s"] = crossed[-1]
        stop = budget_s is not None and train_s >= budget_s
        final = stop or done == n_steps
        if final:
            extra["stopped"] = "budget" if stop and done < n_steps else "n_steps"
            evaluate_now = evaluate is not None
        if evaluate_now and evaluate is not None:
            extra.update(evaluate(state) or {})
            last_eval_step = done
        if logged or evaluate_now or final:
            log_row(done, metrics, extra)
        if checkpoint:
            save_checkpoint(manager, state, config)
        bar.update(1)
        if stop:
            break
        segment_start = read_clock()
    else:
        if start >= n_steps and evaluate is not None and last_eval_step is None:
            # Resumed at the end: nothing to train, the final evaluation still runs.
            history.append({"step": start, "stopped": "n_steps", **(evaluate(state) or {})})
    bar.close()
    if manager is not None:
        if manager.latest_step() != int(state.step):
            save_checkpoint(manager, state, config)
        manager.wait_until_finished()
        manager.close()
    return state, history


__all__ = [
    "CLOCKS",
    "checkpoint_manager",
    "dataset_sampler",
    "fit",
    "restore_checkpoint",
    "save_checkpoint",
]
