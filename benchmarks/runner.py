"""Run every ``benchmarks/bench_*.py`` and summarize the headline numbers in one table.

Each benchmark module exposes ``run(quick: bool = False) -> dict``; ``run`` measures
its comparisons side by side and writes ``<results_dir>/<name>.json`` through
``benchmarks._common.write_result``. This runner

1. discovers the modules (``--only`` picks some, by ``w2`` or ``bench_w2``),
2. runs them one after another, each in a fresh subprocess by default (a crash,
   a leaked ``jax.config`` setting or a memory spike stays in that process;
   ``--in-process`` runs them in this one), optionally under a time limit,
   recording each one's wall and CPU time and the load average around it,
3. records a failing or timed-out benchmark with its error instead of stopping,
4. writes ``SUMMARY.json`` (every outcome with its headline numbers and targets) and
   ``SUMMARY.md`` (one markdown table, with the date and the machine) in the
   results directory. With ``--only`` the other benchmarks' previous entries are
   kept, each with its own date.

The quick/full rule (see ``benchmarks._common``): a quick run writes its records and
``SUMMARY_quick.*`` to a temporary folder by default and refuses a ``--results-dir``
inside the committed ``benchmarks/results/``, so it can never overwrite a full record.

Headline numbers of a record, first found wins:

- ``record["headline"]``: a ``{label: value}`` dict the benchmark chose;
- ``headline(record) -> dict``, a function in the benchmark module;
- otherwise the record's top-level numbers (then one level down), flattened.

Run: ``python -m benchmarks [--quick] [--only NAME ...] [--timeout S]``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_RESULTS_DIR = BENCH_DIR / "results"


def default_results_dir(quick: bool) -> Path:
    """``benchmarks/results`` for full runs, the quick folder of ``_common`` for quick ones."""
    from benchmarks._common import quick_results_dir

    return quick_results_dir() if quick else DEFAULT_RESULTS_DIR


def resolve_results_dir(results_dir: Path | None, quick: bool) -> Path:
    """The folder a run writes to; a quick run's may not be inside ``benchmarks/results``.

    Raises:
        ValueError: for a quick run whose ``results_dir`` is among the full records.
    """
    from benchmarks._common import check_quick_dir

    folder = Path(results_dir) if results_dir is not None else default_results_dir(quick)
    return check_quick_dir(folder) if quick else folder


# Keys that describe a record rather than measure something.
_DESCRIPTIVE_KEYS = {"name", "quick", "machine", "description", "note", "what", "headline"}
_MAX_GENERIC_ENTRIES = 8
_ERROR_TAIL_LINES = 25


# -- discovery and running ---------------------------------------------------------------
def discover(only: Iterable[str] | None = None, bench_dir: Path | None = None) -> list[Path]:
    """The ``bench_*.py`` files of ``bench_dir`` (sorted), or those named in ``only``.

    Raises:
        ValueError: if a name in ``only`` matches no benchmark file.
    """
    directory = Path(bench_dir) if bench_dir is not None else BENCH_DIR
    files = {p.stem.removeprefix("bench_"): p for p in sorted(directory.glob("bench_*.py"))}
    if not only:
        return list(files.values())
    chosen = []
    for name in only:
        short = name.removesuffix(".py").removeprefix("bench_")
        if short not in files:
            raise ValueError(f"only: no benchmark named {name!r}; available: {sorted(files)}")
        chosen.append(files[short])
    return chosen


def _load_module(path: Path):
    """Import a benchmark file: as ``benchmarks.<stem>`` when it lives in this package."""
    if path.resolve().parent == BENCH_DIR:
        return importlib.import_module(f"benchmarks.{path.stem}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_module(path: Path, quick: bool, results_dir: Path) -> dict:
    """Import the benchmark and call ``run(quick)`` with results going to ``results_dir``."""
    from benchmarks import _common

    # write_result reads these at call time, so this redirects every benchmark.
    if quick:
        _common.QUICK_RESULTS_DIR = _common.check_quick_dir(Path(results_dir))
    else:
        _common.RESULTS_DIR = Path(results_dir)
    module = _load_module(path)
    record = module.run(quick=quick)
    if not isinstance(record, dict):
        raise TypeError(f"{path.name}: run() returned {type(record).__name__}, expected dict")
    entries = headline(record, getattr(module, "headline", None))
    return {"record": record, "headline": entries, "targets": record.get("targets", [])}


def _tail(text: str, n_lines: int = _ERROR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-n_lines:])


def _run_subprocess(
    path: Path, quick: bool, results_dir: Path, timeout: float | None, verbose: bool
) -> dict:
    """One benchmark in a fresh interpreter; returns the worker's payload or the failure."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outcome.json"
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.runner",
            "--worker",
            str(path),
            "--results-dir",
            str(results_dir),
            "--worker-out",
            str(out),
        ] + (["--quick"] if quick else [])
        # A session of its own, so a timeout can end the benchmark and any subprocess it started.
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=None if verbose else subprocess.PIPE,
            stderr=None if verbose else subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            return {
                "status": "timeout",
                "error": f"timed out after {timeout:g} s",
                "output_tail": _tail(output or ""),
            }
        if out.exists():
            return json.loads(out.read_text())
        return {
            "status": "failed",
            "error": f"worker exited with code {proc.returncode} and no result",
            "output_tail": _tail(output or ""),
        }


def _worker(path: Path, quick: bool, results_dir: Path, worker_out: Path) -> int:
    """Subprocess side: run one benchmark, write ``{status, record, headline}`` or the error."""
    try:
        payload = {"status": "ok", **_run_module(path, quick, results_dir)}
    except Exception as err:  # noqa: BLE001 - any failure of a benchmark is reported, not raised
        payload = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "output_tail": _tail(traceback.format_exc()),
        }
    worker_out.write_text(json.dumps(payload, default=_json_default))
    return 0 if payload["status"] == "ok" else 1


def run_benchmark(
    path: Path,
    *,
    quick: bool = False,
    results_dir: Path | None = None,
    isolate: bool = True,
    timeout: float | None = None,
    verbose: bool = False,
) -> dict:
    """Run one benchmark file; never raises for the benchmark's own failure.

    Returns:
        ``{"name", "file", "status": "ok"|"failed"|"timeout", "seconds", "finished",
        "headline", "record" (ok) or "error" and "output_tail" (otherwise)}``.
    """
    results_dir = resolve_results_dir(results_dir, quick)
    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    if isolate:
        payload = _run_subprocess(path, quick, results_dir, timeout, verbose)
    else:
        try:
            payload = {"status": "ok", **_run_module(path, quick, results_dir)}
        except Exception as err:  # noqa: BLE001 - recorded as failed, the suite goes on
            payload = {
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "output_tail": _tail(traceback.format_exc()),
            }
    return {
        "name": path.stem.removeprefix("bench_"),
        "file": path.name,
        "quick": quick,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": _cpu_seconds() - cpu_start,
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "finished": _now(),
        "headline": payload.get("headline", {}),
        **{k: v for k, v in payload.items() if k != "headline"},
    }


def run_all(
    only: Iterable[str] | None = None,
    *,
    quick: bool = False,
    results_dir: Path | None = None,
    isolate: bool = True,
    timeout: float | None = None,
    bench_dir: Path | None = None,
    verbose: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run the benchmarks one after another, write the summary, return every outcome."""
    results_dir = resolve_results_dir(results_dir, quick)
    results_dir.mkdir(parents=True, exist_ok=True)
    paths = discover(only, bench_dir)
    outcomes = []
    for path in paths:
        log(f"[bench] {path.stem} ({'quick' if quick else 'full'}) ...")
        outcome = run_benchmark(
            path,
            quick=quick,
            results_dir=results_dir,
            isolate=isolate,
            timeout=timeout,
            verbose=verbose,
        )
        status = outcome["status"]
        detail = "" if status == "ok" else f": {outcome['error']}"
        log(f"[bench] {path.stem}: {status} in {outcome['seconds']:.1f} s{detail}")
        outcomes.append(outcome)
    write_summary(outcomes, results_dir, quick=quick, merge=bool(only))
    return outcomes


def outcomes_from_results(
    only: Iterable[str] | None = None,
    *,
    quick: bool = False,
    results_dir: Path | None = None,
    bench_dir: Path | None = None,
) -> list[dict]:
    """Outcomes read from the records already in ``results_dir``, without running anything.

    A record ``<name>.json`` belongs to benchmark ``bench_<short>.py`` when its ``name``,
    less a ``bench_`` prefix and a ``_quick`` suffix, is ``<short>``; its ``quick`` field
    (or the suffix) must match ``quick``. Each outcome carries the record's own date.
    Benchmarks without a record are reported as ``"missing"``.
    """
    results_dir = Path(results_dir) if results_dir is not None else default_results_dir(quick)
    paths = discover(only, bench_dir)
    records = {}
    for path in sorted(results_dir.glob("*.json")):
        if path.stem.startswith("SUMMARY"):
            continue
        record = json.loads(path.read_text())
        name = str(record.get("name", path.stem))
        is_quick = bool(record.get("quick", name.endswith("_quick")))
        if is_quick == quick:
            records[name.removesuffix("_quick").removeprefix("bench_")] = (path, record)
    outcomes = []
    for path in paths:
        short = path.stem.removeprefix("bench_")
        base = {"name": short, "file": path.name, "quick": quick, "seconds": None}
        if short not in records:
            outcomes.append(
                {
                    **base,
                    "status": "missing",
                    "finished": _now(),
                    "headline": {},
                    "error": f"no {'quick' if quick else 'full'}-run record in {results_dir}",
                }
            )
            continue
        record_path, record = records[short]
        module_headline = getattr(_load_module(path), "headline", None)
        outcomes.append(
            {
                **base,
                "status": "ok",
                "finished": record.get("machine", {}).get("date", "unknown"),
                "headline": headline(record, module_headline),
                "targets": record.get("targets", []),
                "source": record_path.name,
            }
        )
    return outcomes


# -- headline numbers --------------------------------------------------------------------
def _is_scalar(value) -> bool:
    return isinstance(value, bool | int | float) or (isinstance(value, str) and len(value) <= 40)


def generic_headline(record: dict) -> dict:
    """Top-level scalar entries of ``record``; if there are none, scalars one level down."""
    entries = {k: v for k, v in record.items() if k not in _DESCRIPTIVE_KEYS and _is_scalar(v)}
    if not any(isinstance(v, int | float) and not isinstance(v, bool) for v in entries.values()):
        for key, value in record.items():
            if key in _DESCRIPTIVE_KEYS or not isinstance(value, dict):
                continue
            for sub, leaf in value.items():
                if sub not in _DESCRIPTIVE_KEYS and _is_scalar(leaf):
                    entries[f"{key}.{sub}"] = leaf
    return dict(list(entries.items())[:_MAX_GENERIC_ENTRIES])


def headline(record: dict, module_headline: Callable | None = None) -> dict:
    """The ``{label: value}`` headline of one record (see the module docstring for the order).

    A module extractor that fails on a changed record falls through to the generic one.
    """
    if isinstance(record.get("headline"), dict) and record["headline"]:
        return dict(record["headline"])
    if module_headline is not None:
        try:
            entries = module_headline(record)
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError):
            entries = None
        if entries:
            return dict(entries)
    return generic_headline(record)


def record_headline(record: dict, bench_dir: Path | None = None) -> dict:
    """The headline of a record read from disk, using its benchmark module's ``headline``."""
    short = str(record.get("name", "")).removesuffix("_quick").removeprefix("bench_")
    path = (Path(bench_dir) if bench_dir is not None else BENCH_DIR) / f"bench_{short}.py"
    module_headline = getattr(_load_module(path), "headline", None) if path.is_file() else None
    return headline(record, module_headline)


# -- summary -----------------------------------------------------------------------------
def _format(value, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (each benchmark's subprocess)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _json_default(value):
    try:
        return value.item()  # NumPy / JAX scalars
    except AttributeError:
        return str(value)


def history_notes(results_dir: Path, names: Iterable[str]) -> list[str]:
    """One line per benchmark with earlier full runs in ``history/<name>.jsonl``.

    Each earlier run is listed by date, with ``targets MISSED`` when its targets failed:
    the record's own ``targets``, or for records older than that field the benchmark
    module's ``targets(record)`` applied to it.
    """
    lines = []
    for name in names:
        module_path = BENCH_DIR / f"bench_{name}.py"
        module = _load_module(module_path) if module_path.is_file() else None
        judge = getattr(module, "targets", None)
        candidates = [Path(results_dir) / "history" / f"{n}.jsonl" for n in (name, f"bench_{name}")]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            continue
        runs = []
        for line in path.read_text().splitlines():
            run = json.loads(line)
            date = run.get("machine", {}).get("date", "unknown date")
            goals = run.get("targets")
            if goals is None and judge is not None:
                try:
                    goals = judge(run)
                except (KeyError, IndexError, TypeError, ValueError):
                    goals = None
            missed = bool(goals) and not all(g["met"] for g in goals)
            runs.append(f"{date}" + (" (targets MISSED)" if missed else ""))
        if len(runs) > 1:
            lines.append(f"`{name}`: {len(runs)} full runs on record, " + "; ".join(runs))
    return lines


def render_summary(
    outcomes: list[dict], machine: dict, *, quick: bool, results_dir: Path | None = None
) -> str:
    """The markdown page: date, machine, then one table of every benchmark's headline."""
    dates = sorted(o["finished"] for o in outcomes)
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if v)
    devices = ", ".join(machine.get("devices", []))
    lines = [
        f"# Benchmark summary ({'quick' if quick else 'full'} run)",
        "",
        f"- Date (UTC): {dates[0]} to {dates[-1]}" if dates else "- Date (UTC): none",
        f"- Machine: {machine.get('cpu_count')} cores, {machine.get('platform')}, "
        f"Python {machine.get('python')}",
        f"- JAX backend: {machine.get('backend')}, devices: {devices}",
        f"- Versions: {versions}",
        "- Regenerate: `python -m benchmarks" + (" --quick" if quick else "") + "`; "
        "each benchmark's full record is `benchmarks/results/<name>.json`.",
        "",
        "| benchmark | measurement | value |",
        "| --- | --- | --- |",
    ]
    for outcome in outcomes:
        name = f"`{outcome['name']}`"
        if outcome["status"] != "ok":
            error = _md_cell(outcome.get("error", ""))
            lines.append(f"| {name} | **{outcome['status'].upper()}** | {error} |")
            continue
        entries = outcome.get("headline") or {"(no numbers)": ""}
        for label, value in entries.items():
            lines.append(f"| {name} | {_md_cell(label)} | {_md_cell(_format(value))} |")
            name = ""
        for goal in outcome.get("targets") or []:
            bound = f"<= {goal['at_most']:g}" if "at_most" in goal else f">= {goal['at_least']:g}"
            verdict = "met" if goal["met"] else "**MISSED**"
            lines.append(
                f"| {name} | target: {_md_cell(goal['label'])} {bound} | "
                f"{_format(goal['value'])} ({verdict}) |"
            )
            name = ""
    lines += [
        "",
    ]
    timed = [o for o in outcomes if o.get("seconds") is not None]
    if timed:
        lines.append(
            "Wall / CPU time per benchmark and 1-min load average before -> after "
            "(this runner, including imports and compilation): "
            + ", ".join(_time_cell(o) for o in timed)
            + "."
        )
    if results_dir is not None and not quick:
        notes = history_notes(results_dir, [o["name"] for o in outcomes])
        if notes:
            lines += ["", "Every full run is kept in `history/<name>.jsonl`, failing ones too:"]
            lines.append("")
            lines += [f"- {note}" for note in notes]
            lines.append("")
    read = [o for o in outcomes if o.get("source")]
    if read:
        lines.append(
            "Read from earlier records (date = that record's run): "
            + ", ".join(f"`{o['name']}` ({o['source']}, {o['finished']})" for o in read)
            + "."
        )
    lines.append("")
    return "\n".join(lines)


def _time_cell(outcome: dict) -> str:
    text = f"`{outcome['name']}` {outcome['seconds']:.0f} s"
    if outcome.get("cpu_seconds") is not None:
        text += f" / {outcome['cpu_seconds']:.0f} s CPU"
    load = outcome.get("load_average_before_after")
    if load:
        text += f" (load {load[0]:.1f} -> {load[1]:.1f})"
    return text


def write_summary(
    outcomes: list[dict], results_dir: Path, *, quick: bool, merge: bool = False
) -> Path:
    """Write ``SUMMARY[_quick].json`` and ``.md``; with ``merge`` keep other benchmarks' entries."""
    from benchmarks._common import machine_info

    stem = "SUMMARY_quick" if quick else "SUMMARY"
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{stem}.json", results_dir / f"{stem}.md"
    by_name = {}
    if merge and json_path.exists():
        by_name = {o["name"]: o for o in json.loads(json_path.read_text())["outcomes"]}
    for outcome in outcomes:
        by_name[outcome["name"]] = {k: v for k, v in outcome.items() if k != "record"}
    merged = [by_name[name] for name in sorted(by_name)]
    machine = machine_info()
    json_path.write_text(
        json.dumps({"machine": machine, "outcomes": merged}, indent=2, default=_json_default)
    )
    md_path.write_text(render_summary(merged, machine, quick=quick, results_dir=results_dir))
    return md_path


# -- command line ------------------------------------------------------------------------
def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Options of ``python -m benchmarks`` (also used by ``wgdiff bench``)."""
    parser = parser or argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (the tests' mode)")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="benchmarks to run, e.g. w2 sdflow"
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="where the JSON records and SUMMARY.md go (default: benchmarks/results for "
        "full runs, a temporary folder for --quick, which may not write into benchmarks/results)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="time limit per benchmark in seconds"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run in this process instead of one subprocess per benchmark",
    )
    parser.add_argument("--verbose", action="store_true", help="show benchmarks' own output")
    parser.add_argument(
        "--from-results",
        action="store_true",
        help="run nothing: rebuild the summary from the records already in --results-dir",
    )
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Exit code 0 when every benchmark ran, 1 when any failed or timed out, 2 on bad names."""
    try:
        if args.list:
            for path in discover():
                print(path.stem.removeprefix("bench_"))
            return 0
        results_dir = resolve_results_dir(args.results_dir, args.quick)
        if args.from_results:
            outcomes = outcomes_from_results(args.only, quick=args.quick, results_dir=results_dir)
            write_summary(outcomes, results_dir, quick=args.quick, merge=False)
            stem = "SUMMARY_quick" if args.quick else "SUMMARY"
            print(f"[bench] summary: {results_dir / (stem + '.md')}")
            return 0 if all(o["status"] == "ok" for o in outcomes) else 1
        outcomes = run_all(
            args.only,
            quick=args.quick,
            results_dir=results_dir,
            isolate=not args.in_process,
            timeout=args.timeout,
            verbose=args.verbose,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stem = "SUMMARY_quick" if args.quick else "SUMMARY"
    print(f"[bench] summary: {results_dir / (stem + '.md')}")
    return 0 if all(o["status"] == "ok" for o in outcomes) else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        results_dir = resolve_results_dir(args.results_dir, args.quick)
        return _worker(args.worker, args.quick, results_dir, args.worker_out)
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
