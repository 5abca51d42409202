"""Data-parallel train steps per second on 1, 2 and 4 CPU devices, and the largest batch.

For each device count a fresh subprocess sets ``jax_num_cpu_devices`` and, for
a ScoreMLP on 2-D data and a small UNet on 8x8x1 images, measures

1. train steps per second (DSM loss, AdamW, EMA; ``make_parallel_train_step``
   over a ``("data",)`` mesh of all devices) at a fixed global batch: the
   median over repeats of the time for a block of steps, blocking at the end.
   The batch is built once and reused, so data loading is not timed;
2. the largest global batch that fits: the batch is doubled from the fixed
   one until a step fails to allocate (out of memory), one step takes longer
   than ``step_time_limit_s``, or ``max_doublings`` is reached; the record
   says which stopped the search and the process's peak resident memory.

The CPU "devices" are slices of the same 2 shared cores, so more devices add
partitioning and all-reduce overhead and no speed-up: read the numbers as the
cost of the data-parallel machinery, not as scaling.

Run: ``nice -n 10 python -m benchmarks.bench_train`` (writes benchmarks/results/train.json;
``--quick`` writes ``train_quick.json`` to the quick folder of ``benchmarks._common``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import write_result

REPO = Path(__file__).resolve().parent.parent
DEVICE_COUNTS = (1, 2, 4)

# Fixed global batches (divisible by 4 devices) and search limits per model.
MODELS = {
    "ScoreMLP": {"batch": 256, "max_doublings": 8},
    "UNet": {"batch": 32, "max_doublings": 6},
}


def _build(model_name: str):
    """``(model, example input shape without batch)`` of the benchmarked nets."""
    from wgdiff.nets import ScoreMLP
    from wgdiff.nets.unet import UNet

    if model_name == "ScoreMLP":
        return ScoreMLP(features=(64, 64, 64, 64)), (2,)
    return UNet(base_channels=32, channel_mult=(1, 2)), (8, 8, 1)


def _setup(model_name: str, mesh, batch: int):
    import jax
    import jax.numpy as jnp

    from wgdiff.losses import dsm_objective
    from wgdiff.sde import VPSDE
    from wgdiff.train import create_train_state, default_optimizer
    from wgdiff.train.parallel import make_parallel_train_step, replicate, shard_batch

    model, event = _build(model_name)
    params = model.init(jax.random.key(0), jnp.zeros((1, *event)), jnp.zeros((1,)))
    optimizer = default_optimizer(1e-3)
    step = make_parallel_train_step(
        dsm_objective(VPSDE(), model.apply), optimizer, mesh=mesh, ema_decay=0.999
    )
    state = replicate(create_train_state(jax.random.key(1), params, optimizer), mesh)
    data = jax.random.normal(jax.random.key(2), (batch, *event))
    n_params = sum(x.size for x in jax.tree.leaves(params))
    return step, state, shard_batch(data, mesh), n_params


def _steps_per_second(step, state, batch, n_steps: int, repeats: int):
    """Steps/s from the median block of ``n_steps`` steps, and the block's full timing."""
    from benchmarks._common import measure

    holder = {"state": state}

    def block():
        state = holder["state"]
        for _ in range(n_steps):
            state, metrics = step(state, batch)
        holder["state"] = state
        return state, metrics

    timing = measure(block, repeats=repeats)
    return n_steps / timing["wall_s"], timing


def _is_out_of_memory(err: Exception) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or isinstance(err, MemoryError)


def _largest_batch(
    model_name: str, mesh, first: dict, max_doublings: int, step_time_limit_s: float
) -> dict:
    """Bounded doubling search from the already measured ``first`` point.

    Every tried batch is recorded with its step time and the peak resident memory.
    """
    import jax

    tried = [first]
    stop = f"reached max_doublings={max_doublings}"
    batch = first["global_batch"]
    for _ in range(max_doublings):
        batch *= 2
        try:
            step, state, data, _ = _setup(model_name, mesh, batch)
            state, _ = step(state, data)  # compile and first step
            jax.block_until_ready(state)
            t0 = time.perf_counter()
            state, metrics = step(state, data)
            jax.block_until_ready((state, metrics))
            seconds = time.perf_counter() - t0
        except Exception as err:  # XLA raises its runtime error type on allocation failure
            if not _is_out_of_memory(err):
                raise
            stop = f"out of memory at global batch {batch}"
            break
        del state, data
        tried.append(
            {
                "global_batch": batch,
                "step_seconds": seconds,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
        if seconds > step_time_limit_s:
            stop = f"step time {seconds:.2f}s > limit {step_time_limit_s}s"
            break
    return {
        "largest_global_batch": tried[-1]["global_batch"],
        "stopped_because": stop,
        "tried": tried,
    }


def worker(n_devices: int, quick: bool) -> dict:
    """Measurements on ``n_devices`` CPU devices (run in a fresh process)."""
    import jax

    jax.config.update("jax_num_cpu_devices", n_devices)
    from wgdiff.train.parallel import data_mesh

    mesh = data_mesh()
    assert mesh.size == n_devices, (mesh.size, n_devices)
    out = {"n_devices": n_devices, "models": {}}
    for name, spec in MODELS.items():
        step, state, data, n_params = _setup(name, mesh, spec["batch"])
        rate, timing = _steps_per_second(
            step, state, data, n_steps=5 if quick else 10, repeats=2 if quick else 3
        )
        del step, state, data
        first = {
            "global_batch": spec["batch"],
            "step_seconds": 1.0 / rate,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        search = _largest_batch(
            name,
            mesh,
            first,
            1 if quick else spec["max_doublings"],
            step_time_limit_s=0.5 if quick else 2.0,
        )
        out["models"][name] = {
            "n_params": int(n_params),
            "global_batch": spec["batch"],
            "steps_per_second": rate,
            "cpu_seconds_per_step": timing["cpu_s"] / (5 if quick else 10),
            "examples_per_second": rate * spec["batch"],
            "timing": timing,
            **search,
        }
    return out


def run(quick: bool = False) -> dict:
    """One subprocess per device count; results side by side."""
    counts = (1, 2) if quick else DEVICE_COUNTS
    per_count = []
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            out = Path(tmp) / f"{n}.json"
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bench_train",
                "--worker",
                str(n),
                "--out",
                str(out),
            ] + (["--quick"] if quick else [])
            subprocess.run(cmd, cwd=REPO, env=env, check=True)
            per_count.append(json.loads(out.read_text()))
    table = {
        name: {str(r["n_devices"]): r["models"][name]["steps_per_second"] for r in per_count}
        for name in MODELS
    }
    import jax

    accelerators = [str(d) for d in jax.devices() if d.platform != "cpu"]
    record = {
        "quick": quick,
        "what": "data-parallel train steps/s (DSM, AdamW, EMA) on a ('data',) mesh of N CPU "
        "devices that share the same cores; largest global batch by bounded doubling",
        "note": f"CPU devices here are slices of {os.cpu_count()} cores, so more devices "
        "cannot be faster; the numbers show the data-parallel overhead. Accelerators "
        f"detected at run time: {', '.join(accelerators) or 'none'} (the rows are CPU only).",
        "accelerators_detected": accelerators,
        "load_average_at_end": os.getloadavg(),
        "steps_per_second": table,
        "per_device_count": per_count,
    }
    write_result("train", record)
    return record


def headline(record: dict) -> dict:
    """Steps per second per model and device count, and the largest batch on 1 device."""
    out = {
        f"{name} steps/s on {n} dev": rate
        for name, rates in record["steps_per_second"].items()
        for n, rate in rates.items()
    }
    first = record["per_device_count"][0]
    for name, result in first["models"].items():
        out[f"{name} largest global batch ({first['n_devices']} dev)"] = result[
            "largest_global_batch"
        ]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, help="internal: measure on this many devices")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.worker is not None:
        args.out.write_text(json.dumps(worker(args.worker, args.quick)))
        return
    print(json.dumps(run(quick=args.quick)["steps_per_second"], indent=2))


if __name__ == "__main__":
    main()
