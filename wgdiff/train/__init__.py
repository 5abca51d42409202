"""Training: state, jit train step with EMA, data parallelism, fit loop, checkpoints and resume."""

from wgdiff.train.checkpoint import (
    CheckpointError,
    abstract_state,
    checkpoint_manager,
    quarantine_steps,
    restore_checkpoint,
    restore_config,
    restore_latest,
    save_checkpoint,
)
from wgdiff.train.loop import dataset_sampler, fit
from wgdiff.train.parallel import (
    DATA_AXIS,
    DistributedInfo,
    batch_sharding,
    data_mesh,
    initialize_distributed,
    make_parallel_train_step,
    process_rows,
    replicate,
    replicated_sharding,
    shard_batch,
)
from wgdiff.train.state import (
    DEFAULT_LEARNING_RATE,
    TrainState,
    apply_update,
    create_train_state,
    default_optimizer,
    make_train_step,
    train_step_fn,
)

__all__ = [
    "DATA_AXIS",
    "DEFAULT_LEARNING_RATE",
    "CheckpointError",
    "DistributedInfo",
    "TrainState",
    "abstract_state",
    "apply_update",
    "batch_sharding",
    "checkpoint_manager",
    "create_train_state",
    "data_mesh",
    "dataset_sampler",
    "default_optimizer",
    "fit",
    "initialize_distributed",
    "make_parallel_train_step",
    "make_train_step",
    "process_rows",
    "quarantine_steps",
    "replicate",
    "replicated_sharding",
    "restore_checkpoint",
    "restore_config",
    "restore_latest",
    "save_checkpoint",
    "shard_batch",
    "train_step_fn",
]
