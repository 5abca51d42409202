"""Orbax checkpoints of a ``TrainState`` with its run config, robust to kills and corruption.

Layout: ``<run_dir>/checkpoints/<step>/{state,config}``. Orbax writes each save
into a temporary directory and renames it only when complete, so a process
killed during a save loses that save and nothing else; leftover temporary
directories are ignored and cleaned up by the next manager. A checkpoint that
is corrupt or partial on disk (truncated file, missing file) fails to restore:
``restore_latest`` then says which step failed and why, falls back to the
newest step that restores, and ``fit`` moves the bad steps to
``<run_dir>/checkpoints-corrupt/`` so later saves do not collide with them.

Restoring goes through an abstract target (shapes, dtypes and *target*
shardings), so a checkpoint written on 8 devices restores on 1 and vice versa.

Example:
    >>> import tempfile, jax, jax.numpy as jnp, optax
    >>> from wgdiff.train import create_train_state
    >>> state = create_train_state(jax.random.key(0), {"w": jnp.ones(3)}, optax.sgd(0.1))
    >>> with tempfile.TemporaryDirectory() as run_dir:
    ...     manager = checkpoint_manager(run_dir)
    ...     save_checkpoint(manager, state, config={"lr": 0.1})
    ...     manager.wait_until_finished()
    ...     restored = restore_checkpoint(manager, state)
    ...     config = restore_config(manager)
    ...     manager.close()
    >>> restored.params["w"].tolist(), config
    ([1.0, 1.0, 1.0], {'lr': 0.1})
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, SingleDeviceSharding

from wgdiff.train.parallel import replicated_sharding
from wgdiff.train.state import TrainState

if TYPE_CHECKING:
    import orbax.checkpoint as ocp


def _ocp():
    """orbax.checkpoint, imported on first use (it is slow to import and only needed here)."""
    import orbax.checkpoint

    return orbax.checkpoint


CHECKPOINT_SUBDIR = "checkpoints"
CORRUPT_SUBDIR = "checkpoints-corrupt"


class CheckpointError(RuntimeError):
    """A checkpoint could not be restored (corrupt, partial, or a different model)."""


def checkpoint_manager(run_dir: str | Path, *, max_to_keep: int = 3) -> ocp.CheckpointManager:
    """Orbax manager on ``<run_dir>/checkpoints`` keeping the last ``max_to_keep`` steps.

    Temporary directories left by a save that was killed are removed on creation.
    """
    directory = Path(run_dir).resolve() / CHECKPOINT_SUBDIR
    options = _ocp().CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True
    )
    return _ocp().CheckpointManager(directory, options=options)


def save_checkpoint(
    manager: ocp.CheckpointManager, state: TrainState, config: dict | None = None
) -> None:
    """Save ``state`` (params, opt state, EMA, step, key) and the JSON run ``config``.

    Asynchronous: arrays are copied off the devices before this returns (so the
    caller may donate ``state`` next), files are written in the background;
    call ``manager.wait_until_finished()`` before exiting.
    """
    items = {"state": _ocp().args.StandardSave(state)}
    if config is not None:
        items["config"] = _ocp().args.JsonSave(config)
    manager.save(int(state.step), args=_ocp().args.Composite(**items))


def abstract_state(like: TrainState, mesh: Mesh | None = None) -> TrainState:
    """Shapes, dtypes and target shardings of ``like`` for restoring.

    With ``mesh`` every array is restored replicated over it; otherwise onto the
    sharding ``like`` already has (host values go to the default device).
    """
    target = None if mesh is None else replicated_sharding(mesh)
    default = SingleDeviceSharding(jax.devices()[0])

    def leaf(x):
        sharding = target or (x.sharding if isinstance(x, jax.Array) else default)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(leaf, like)


def _restore_step(manager: ocp.CheckpointManager, abstract, step: int):
    restored = manager.restore(
        step, args=_ocp().args.Composite(state=_ocp().args.StandardRestore(abstract))
    )
    return restored["state"]


def _reason(err: BaseException) -> str:
    """First line of an error, without orbax's multi-kilobyte TensorStore spec."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text[:300]}"


def restore_latest(
    manager: ocp.CheckpointManager, like: TrainState, *, mesh: Mesh | None = None
) -> tuple[TrainState, int, list[int]]:
    """Restore the newest checkpoint that reads back, falling back past bad ones.

    Args:
        manager: the run's checkpoint manager.
        like: a state of the same structure (template for shapes and dtypes).
        mesh: restore replicated over this mesh (default: ``like``'s shardings).

    Returns:
        ``(state, step, bad_steps)``; ``bad_steps`` are newer steps that failed
        to restore while an older one worked (so they, not the template, are bad).

    Raises:
        FileNotFoundError: the manager holds no checkpoint.
        CheckpointError: no step restores; the message names every failure.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    abstract = abstract_state(like, mesh)
    failures: list[tuple[int, str]] = []
    for step in steps:
        try:
            state = _restore_step(manager, abstract, step)
        except Exception as err:  # orbax/tensorstore raise bare Exception on bad files
            failures.append((step, _reason(err)))
            warnings.warn(
                f"checkpoint step {step} in {manager.directory} is corrupt or partial "
                f"and was not restored ({_reason(err)}); trying the previous step",
                stacklevel=2,
            )
            continue
        if failures:
            warnings.warn(
                f"restored checkpoint step {step} instead of the newest step "
                f"{steps[0]} (corrupt: {[s for s, _ in failures]})",
                stacklevel=2,
            )
        return state, step, [s for s, _ in failures]
    details = "; ".join(f"step {s}: {why}" for s, why in failures)
    raise CheckpointError(
        f"no checkpoint in {manager.directory} could be restored ({details}). "
        "If every step fails, the template state (model, optimizer) differs "
        "from the one that was saved."
    )


def restore_checkpoint(
    manager: ocp.CheckpointManager,
    like: TrainState,
    step: int | None = None,
    *,
    mesh: Mesh | None = None,
) -> TrainState:
    """Restore ``step`` (default: newest that reads back) into the structure of ``like``.

    Shardings come from ``mesh`` (replicated) or from ``like``, never from the
    checkpoint, so the device count may differ from the one that saved it.

    Raises:
        FileNotFoundError: no checkpoint / no such step.
        CheckpointError: the checkpoint at ``step`` is corrupt or partial (with
            ``step=None``: no step restores).
    """
    if step is None:
        return restore_latest(manager, like, mesh=mesh)[0]
    if step not in manager.all_steps():
        raise FileNotFoundError(
            f"no checkpoint for step {step} in {manager.directory}; "
            f"available: {sorted(manager.all_steps())}"
        )
    try:
        return _restore_step(manager, abstract_state(like, mesh), step)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint step {step} in {manager.directory} is corrupt or "
            f"partial, or was saved from a different model: "
            f"{_reason(err)}"
        ) from err


def restore_config(manager: ocp.CheckpointManager, step: int | None = None) -> dict | None:
    """The run config saved with ``step`` (default latest), or ``None`` if none was saved."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {manager.directory}")
    try:
        restored = manager.restore(
            step, args=_ocp().args.Composite(config=_ocp().args.JsonRestore())
        )
    except (KeyError, ValueError, FileNotFoundError):
        return None
    return restored["config"]


def quarantine_steps(manager: ocp.CheckpointManager, steps: list[int]) -> list[Path]:
    """Move bad step directories to ``<run_dir>/checkpoints-corrupt/`` (kept for inspection).

    In a multi-process job process 0 moves them and every process waits for it.
    """
    if not steps:
        return []
    directory = Path(manager.directory)
    target_root = directory.parent / CORRUPT_SUBDIR
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = [target_root / f"{step}-{stamp}" for step in steps]
    if jax.process_index() == 0:
        target_root.mkdir(parents=True, exist_ok=True)
        for step, target in zip(steps, moved, strict=True):
            shutil.move(str(directory / str(step)), str(target))
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("wgdiff_quarantine_checkpoints")
    manager.reload()
    return moved


__all__ = [
    "CheckpointError",
    "abstract_state",
    "checkpoint_manager",
    "quarantine_steps",
    "restore_checkpoint",
    "restore_config",
    "restore_latest",
    "save_checkpoint",
]
