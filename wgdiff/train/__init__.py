"""Training: state, jit train step with EMA, fit loop with checkpoints and resume."""

from wgdiff.train.loop import (
    checkpoint_manager,
    dataset_sampler,
    fit,
    restore_checkpoint,
    save_checkpoint,
)
from wgdiff.train.state import (
    DEFAULT_LEARNING_RATE,
    TrainState,
    apply_update,
    create_train_state,
    default_optimizer,
    make_train_step,
)

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "TrainState",
    "apply_update",
    "checkpoint_manager",
    "create_train_state",
    "dataset_sampler",
    "default_optimizer",
    "fit",
    "make_train_step",
    "restore_checkpoint",
    "save_checkpoint",
]
