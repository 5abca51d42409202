"""Data-parallel training on ``jax.jit`` + ``NamedSharding``, from one device to many hosts.

The global batch is split along its first axis over a one-dimensional ``("data",)``
mesh of every device of every process; parameters, optimizer state and EMA are
replicated. The train step is the single-device step (``state.train_step_fn``)
compiled with these shardings: XLA's SPMD partitioner computes each device's
part of the loss and all-reduces the gradients, so the update equals the
single-device update on the same global batch up to float summation order.
Random numbers drawn inside the step (DSM times and noise) do not depend on the
sharding because ``jax_threefry_partitionable`` is on (the JAX default), which
is what makes loss curves agree across 1, 2 and 8 devices.

Multi-host: every process runs the same program after ``initialize_distributed``;
each feeds only its own rows of the global batch (``shard_batch``, built on
``jax.make_array_from_process_local_data``). ``pmap`` is not used (maintenance
mode since JAX 0.8).

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from wgdiff.train import create_train_state
    >>> mesh = data_mesh()
    >>> loss_fn = lambda p, key, batch: jnp.mean((batch @ p["w"]) ** 2)
    >>> state = replicate(create_train_state(jax.random.key(0), {"w": jnp.ones(2)},
    ...                                      optax.sgd(0.1)), mesh)
    >>> step = make_parallel_train_step(loss_fn, optax.sgd(0.1), mesh=mesh)
    >>> batch = shard_batch(jnp.ones((4 * mesh.size, 2)), mesh)
    >>> state, metrics = step(state, batch)
    >>> int(state.step), float(metrics["loss"])
    (1, 4.0)
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from wgdiff._checks import check_positive_int
from wgdiff.train.state import _check_decay, default_optimizer, train_step_fn

DATA_AXIS = "data"

# Environment variables by which a launcher announces a multi-process job that
# ``jax.distributed.initialize()`` can configure itself from (its cluster
# auto-detection covers SLURM, Open MPI, Cloud TPU and explicit JAX_* variables).
_CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE")


class DistributedInfo(NamedTuple):
    """Where this process sits in the (possibly multi-host) job."""

    process_index: int
    process_count: int
    local_device_count: int
    device_count: int
    initialized: bool  # whether jax.distributed is running (False: plain single process)


def _info() -> DistributedInfo:
    return DistributedInfo(
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.distributed.is_initialized(),
    )


def _cluster_detected(environ) -> bool:
    """True when the environment describes a job of more than one process."""
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        return True
    for name in _CLUSTER_SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return True
    # A Cloud TPU pod slice lists its workers; a multislice job names a coordinator.
    return "," in environ.get("TPU_WORKER_HOSTNAMES", "") or bool(
        environ.get("MEGASCALE_COORDINATOR_ADDRESS")
    )


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: list[int] | None = None,
    initialization_timeout: int = 300,
    environ: Mapping[str, str] | None = None,
) -> DistributedInfo:
    """Start JAX's multi-process runtime when the job has several processes.

    Call it first, before any other JAX computation, with the same arguments
    (except ``process_id``) in every process. With all three arguments ``None``
    the job is auto-detected: under SLURM (``srun``), Open MPI (``mpirun``), on a
    Cloud TPU pod or with ``JAX_COORDINATOR_ADDRESS`` set, ``jax.distributed``
    configures itself; otherwise this is a single-process run and nothing is
    started. Repeated calls return the current layout. CPU processes exchange
    gradients through gloo collectives.

    Args:
        coordinator: ``"host:port"`` of process 0, reachable from every process.
        num_processes: total number of processes.
        process_id: this process's index in ``[0, num_processes)``.
        local_device_ids: devices of this host the process should use (default all).
        initialization_timeout: seconds to wait for every process to connect.
        environ: environment mapping for auto-detection (default ``os.environ``).

    Returns:
        ``DistributedInfo`` of this process.
    """
    environ = os.environ if environ is None else environ
    explicit = (coordinator, num_processes, process_id) != (None, None, None)
    if jax.distributed.is_initialized():
        return _info()
    if num_processes is not None:
        num_processes = check_positive_int(num_processes, "num_processes")
    if process_id is not None:
        if isinstance(process_id, bool) or not isinstance(process_id, int) or process_id < 0:
            raise ValueError(f"process_id must be a non-negative integer, got {process_id!r}")
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(
                f"process_id must lie in [0, num_processes) = [0, {num_processes}), "
                f"got {process_id}"
            )
    if coordinator is not None and not re.fullmatch(r"\[?[\w.:-]+\]?:\d+", coordinator):
        raise ValueError(f"coordinator must look like 'host:port', got {coordinator!r}")
    if explicit and num_processes == 1 and coordinator is None:
        return _info()
    if not explicit and not _cluster_detected(environ):
        return _info()
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):
        # Without a collectives backend, CPU processes cannot all-reduce gradients.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    return _info()


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """One-axis ``("data",)`` mesh over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must hold at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state, metrics)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """First (batch) axis split over ``"data"``, the others whole on each device."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copy a pytree of arrays onto every device of ``mesh`` as global replicated arrays.

    In a multi-process job every process must pass the same values (create the
    state from the same key everywhere); each process only writes its own devices.
    """
    sharding = replicated_sharding(mesh)

    def put(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def _check_batch_rows(n_rows: int, mesh: Mesh) -> None:
    if n_rows % mesh.size:
        raise ValueError(
            f"the global batch size must be divisible by the number of devices "
            f"{mesh.size} of the mesh, got {n_rows}"
        )


def process_rows(global_batch_size: int, mesh: Mesh) -> slice:
    """Rows of a global batch that this process feeds (contiguous, in device order)."""
    global_batch_size = check_positive_int(global_batch_size, "global_batch_size")
    _check_batch_rows(global_batch_size, mesh)
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_batch_size,))
    starts = sorted({idx[0].start or 0 for idx in index_map.values()})
    stops = sorted(
        {global_batch_size if idx[0].stop is None else idx[0].stop for idx in index_map.values()}
    )
    if any(b != a for a, b in zip(stops[:-1], starts[1:], strict=True)):
        raise ValueError(
            "this process's devices do not hold contiguous rows of the batch; "
            "build the mesh with data_mesh() so devices are in process order"
        )
    return slice(starts[0], stops[-1])


def shard_batch(local_batch: Any, mesh: Mesh) -> Any:
    """Global batch array from this process's rows: ``(n_local, *event) -> (n_global, *event)``.

    Single process: ``local_batch`` is the whole batch, placed split over the
    devices. Multi-host: each process passes its ``process_rows`` of the global
    batch (``jax.make_array_from_process_local_data``); no data crosses hosts.
    """
    leaves = jax.tree.leaves(local_batch)
    if not leaves:
        raise ValueError("local_batch must hold at least one array")
    sharding = batch_sharding(mesh)
    n_processes = jax.process_count()

    def put(leaf):
        leaf = np.asarray(leaf) if not isinstance(leaf, jax.Array) else leaf
        if leaf.ndim < 1:
            raise ValueError(f"batch arrays must have shape (n, *event), got shape {leaf.shape}")
        global_shape = (leaf.shape[0] * n_processes, *leaf.shape[1:])
        _check_batch_rows(global_shape[0], mesh)
        return jax.make_array_from_process_local_data(sharding, leaf, global_shape)

    return jax.tree.map(put, local_batch)


def make_parallel_train_step(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation | None = None,
    *,
    mesh: Mesh | None = None,
    ema_decay: float = 0.999,
    has_aux: bool = False,
    donate: bool = True,
    post_update: Callable | None = None,
) -> Callable:
    """Data-parallel ``step(state, batch) -> (state, metrics)`` over ``mesh``.

    The same computation as ``make_train_step`` (``loss_fn`` is the mean over the
    global batch), compiled with the state and metrics replicated and the batch
    split along ``"data"``; the gradient all-reduce is inserted by the compiler.

    Args:
        loss_fn: ``loss_fn(params, key, batch) -> scalar`` (or ``(scalar, aux)``).
        optimizer: optax transformation (default AdamW 1e-3 with clipping).
        mesh: ``("data",)`` mesh (default ``data_mesh()``: all devices).
        ema_decay: EMA factor in ``[0, 1)``.
        has_aux: whether ``loss_fn`` returns auxiliary metrics.
        donate: donate the input state's buffers.
        post_update: ``params -> params`` applied after every update (as in
            ``make_train_step``).

    Returns:
        The jitted step. ``state`` must be replicated on ``mesh`` (``replicate``) and
        ``batch`` a global array split by ``shard_batch`` (or a host array when
        there is one process).
    """
    optimizer = default_optimizer() if optimizer is None else optimizer
    _check_decay(ema_decay)
    mesh = data_mesh() if mesh is None else mesh
    replicated = replicated_sharding(mesh)
    step = train_step_fn(
        loss_fn, optimizer, ema_decay=ema_decay, has_aux=has_aux, post_update=post_update
    )
    return jax.jit(
        step,
        in_shardings=(replicated, batch_sharding(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,) if donate else (),
    )


def global_batch_fn(sample_batch: Callable, data_key: jax.Array, mesh: Mesh) -> Callable:
    """``i -> sample_batch(fold_in(data_key, i))`` computed split over ``mesh``.

    Each process computes only the rows its devices hold; with partitionable
    threefry they equal the rows of the single-device batch.
    """
    shape = jax.eval_shape(sample_batch, data_key)
    for leaf in jax.tree.leaves(shape):
        if len(leaf.shape) < 1:
            raise ValueError(
                f"sample_batch must return arrays of shape (n, *event), got shape {leaf.shape}"
            )
        _check_batch_rows(leaf.shape[0], mesh)
    return jax.jit(
        lambda i: sample_batch(jax.random.fold_in(data_key, i)), out_shardings=batch_sharding(mesh)
    )


__all__ = [
    "DATA_AXIS",
    "DistributedInfo",
    "batch_sharding",
    "data_mesh",
    "global_batch_fn",
    "initialize_distributed",
    "make_parallel_train_step",
    "process_rows",
    "replicate",
    "replicated_sharding",
    "shard_batch",
]
