"""The record helper every benchmark uses: timings, targets and where a record may go.

A benchmark measures with :func:`measure` (wall and CPU time of every repeat, the first
call -- tracing and compilation -- kept apart, medians and spread), states its goals with
:func:`target`, and writes one record with :func:`write_result`, which adds the machine
as detected at run time (``jax.devices()``, load average, date, versions, the process's
CPU and wall time so far).

The quick/full rule: a record says whether it is a quick run (``record["quick"]``).
Quick records are written only under :func:`quick_results_dir` (a temporary folder,
``$WGDIFF_BENCH_QUICK_DIR`` to choose another), never under the committed
``benchmarks/results/``; asking for that raises ``ValueError``. A full record replaces
``<results_dir>/<name>.json`` and is also appended, whole, to
``<results_dir>/history/<name>.jsonl``, so a failing run stays on record with its date
after a later run passes.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import jax

# The committed full-run records. ``RESULTS_DIR`` is where full records go and may be
# rebound (the runner points it at its --results-dir); ``FULL_RESULTS_DIR`` never is.
FULL_RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_DIR = FULL_RESULTS_DIR
# Where quick records go when set (the runner sets it); else see quick_results_dir().
QUICK_RESULTS_DIR: Path | None = None
HISTORY_SUBDIR = "history"
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "diffrax", "ott-jax", "pot", "numpy")
_START_WALL = time.perf_counter()


def quick_results_dir() -> Path:
    """Where quick records go: ``QUICK_RESULTS_DIR``, ``$WGDIFF_BENCH_QUICK_DIR`` or a temp dir.

    The last is ``<tmp>/wgdiff-bench-quick``, outside any checkout.
    """
    if QUICK_RESULTS_DIR is not None:
        return Path(QUICK_RESULTS_DIR)
    override = os.environ.get("WGDIFF_BENCH_QUICK_DIR")
    return Path(override) if override else Path(tempfile.gettempdir()) / "wgdiff-bench-quick"


def is_under(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or inside it (after resolving links)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_quick_dir(results_dir: Path) -> Path:
    """Refuse a quick run's output folder inside the committed full records.

    Raises:
        ValueError: if ``results_dir`` is ``benchmarks/results`` or a folder in it.
    """
    if is_under(results_dir, FULL_RESULTS_DIR):
        raise ValueError(
            f"results_dir: a quick run may not write into the committed full records "
            f"({FULL_RESULTS_DIR}); got {results_dir}. Quick records go to "
            f"{quick_results_dir()} (set WGDIFF_BENCH_QUICK_DIR to choose another)"
        )
    return Path(results_dir)


def _git_commit() -> dict | None:
    repo = FULL_RESULTS_DIR.parent.parent
    if not (repo / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head or None}


def machine_info() -> dict:
    """The machine as detected now: date, cores, load, devices, versions, process times."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kinds": sorted({d.device_kind for d in devices}),
        "versions": versions,
        # Since this process imported benchmarks._common: CPU (all threads) beside wall.
        "process_cpu_s": time.process_time(),
        "process_wall_s": time.perf_counter() - _START_WALL,
        "source": _git_commit(),
    }


def _spread(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        # Relative spread of the repeats: (max - min) / median.
        "rel_range": (ordered[-1] - ordered[0]) / statistics.median(ordered)
        if statistics.median(ordered) > 0
        else 0.0,
        "all": values,
    }


def measure(fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: int = 1) -> dict:
    """Wall and CPU time of ``fn(*args)``, blocking on the result, first call apart.

    The first of the ``warmup`` calls is timed on its own (``first_call_*``: tracing,
    compilation and one run); ``compile_wall_s`` is that minus the median steady call.
    CPU time is ``time.process_time`` (all threads of this process), so a ratio of CPU
    to wall above 1 shows XLA's threads and one well below 1 a machine busy elsewhere.

    Returns:
        ``{"repeats", "wall_s", "cpu_s" (medians), "wall", "cpu" ({median, min, max,
        rel_range, all}), "first_call_wall_s", "first_call_cpu_s", "compile_wall_s",
        "load_average_1m"}``.

    Raises:
        ValueError: if ``repeats`` < 1 or ``warmup`` < 1.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be a positive int, got {warmup!r}")
    c0, w0 = time.process_time(), time.perf_counter()
    jax.block_until_ready(fn(*args))
    first_wall, first_cpu = time.perf_counter() - w0, time.process_time() - c0
    for _ in range(warmup - 1):
        jax.block_until_ready(fn(*args))
    walls, cpus = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    wall, cpu = _spread(walls), _spread(cpus)
    return {
        "repeats": repeats,
        "wall_s": wall["median"],
        "cpu_s": cpu["median"],
        "wall": wall,
        "cpu": cpu,
        "first_call_wall_s": first_wall,
        "first_call_cpu_s": first_cpu,
        "compile_wall_s": max(first_wall - wall["median"], 0.0),
        "load_average_1m": os.getloadavg()[0],
    }


def time_call(fn: Callable[..., Any], *args: Any, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn(*args)`` in seconds: ``measure(...)["wall_s"]``.

    Prefer :func:`measure` in new code: it keeps the CPU time, the first call and the
    spread, which a record should carry.
    """
    return measure(fn, *args, repeats=repeats, warmup=warmup)["wall_s"]


def target(
    label: str, value: float, *, at_most: float | None = None, at_least: float | None = None
) -> dict:
    """One goal of a benchmark and whether this run met it (judge on medians).

    Raises:
        ValueError: unless exactly one of ``at_most``, ``at_least`` is given.
    """
    if (at_most is None) == (at_least is None):
        raise ValueError("target: give exactly one of at_most, at_least")
    value = float(value)
    met = value <= at_most if at_most is not None else value >= at_least
    bound = {"at_most": at_most} if at_most is not None else {"at_least": at_least}
    return {"label": label, "value": value, **bound, "met": bool(met)}


def _json_default(value):
    try:
        return value.item()  # NumPy / JAX scalars
    except (AttributeError, ValueError):
        pass
    try:
        return list(value)
    except TypeError:
        return str(value)


def write_result(
    name: str, record: dict, results_dir: Path | None = None, *, quick: bool | None = None
) -> Path:
    """Write ``record`` with the machine to ``<dir>/<name>.json``; full runs also to history.

    Args:
        name: record name, e.g. ``"train"``; a quick record's file is ``<name>_quick.json``
            (a ``_quick`` suffix already in ``name`` is kept as is).
        record: the measurements; its ``"quick"`` entry says which kind of run it is.
        results_dir: full records: default ``RESULTS_DIR`` (``benchmarks/results``);
            quick records: default :func:`quick_results_dir`, never inside
            ``benchmarks/results``.
        quick: overrides ``record["quick"]``; one of the two must be given.

    Returns:
        The path written.

    Raises:
        ValueError: if the record does not say whether it is quick, if ``quick`` and
            ``record["quick"]`` disagree, or if a quick record would land among the full ones.
    """
    if quick is None:
        if "quick" not in record:
            raise ValueError("record must say whether it is a quick run: record['quick']")
        quick = bool(record["quick"])
    elif "quick" in record and bool(record["quick"]) != bool(quick):
        raise ValueError(f"quick={quick} disagrees with record['quick']={record['quick']}")
    record = {**record, "quick": bool(quick)}
    if quick:
        out_dir = check_quick_dir(results_dir if results_dir is not None else quick_results_dir())
        name = name if name.endswith("_quick") else f"{name}_quick"
    else:
        if name.endswith("_quick"):
            raise ValueError(f"name: a full record may not be named like a quick one: {name!r}")
        out_dir = Path(results_dir) if results_dir is not None else Path(RESULTS_DIR)
    targets = record.get("targets")
    if targets:
        record["targets_met"] = all(t["met"] for t in targets)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    full = {"name": name, "machine": machine_info(), **record}
    path.write_text(json.dumps(full, indent=2, default=_json_default) + "\n")
    if not quick:
        history = out_dir / HISTORY_SUBDIR / f"{name}.jsonl"
        history.parent.mkdir(parents=True, exist_ok=True)
        with history.open("a") as fh:
            fh.write(json.dumps(full, default=_json_default) + "\n")
    return path
