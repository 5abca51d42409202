"""Shared helpers for benchmarks: timing side by side and writing results with the machine."""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

import jax

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "diffrax", "ott-jax", "pot", "numpy")


def machine_info() -> dict:
    """Cores, device and library versions, recorded with every result."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "versions": versions,
    }


def time_call(fn, *args, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn(*args)`` in seconds, blocking on the result."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def write_result(name: str, record: dict, results_dir: Path | None = None) -> Path:
    """Write ``record`` plus the machine description to ``<results_dir>/<name>.json``."""
    out_dir = Path(results_dir) if results_dir is not None else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps({"name": name, "machine": machine_info(), **record}, indent=2))
    return path
