"""The benchmark runner: discovery, isolation, failures recorded, headlines, SUMMARY.md.

The runner's mechanics are checked on small synthetic benchmarks written to a temporary
folder (fast: each runs in its own interpreter, as real ones do); one real benchmark runs
in quick mode through ``python -m benchmarks``; the whole quick suite is a slow test.
Nothing is timed here: the runner's numbers are measurements, not test conditions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# benchmarks/ is a package of the checkout, not of the installed wgdiff.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import runner  # noqa: E402

GOOD = """
from benchmarks._common import write_result

def run(quick=False):
    record = {"quick": quick, "headline": {"speedup vs reference": 12.5, "max error": 3e-7},
              "rows": [1, 2, 3]}
    write_result("good_quick" if quick else "good", record)
    return record
"""
PLAIN = """
def run(quick=False):
    return {"quick": quick, "description": "no headline", "steps_per_second": 250.0,
            "nested": {"ratio": 1.5}, "converged": True}
"""
NESTED = """
def run(quick=False):
    return {"quick": quick, "first": {"ratio": 0.75, "n": 64}, "second": {"label": "x"}}
"""
WITH_FUNCTION = """
def run(quick=False):
    return {"quick": quick, "rows": [{"n": 10, "s": 0.5}, {"n": 20, "s": 2.0}]}

def headline(record):
    return {f"s at n={r['n']}": r["s"] for r in record["rows"]}
"""
BROKEN = """
def run(quick=False):
    raise RuntimeError("solver diverged at n=4000")
"""
CRASH = """
import os

def run(quick=False):
    os._exit(3)
"""
SLOW = """
import time

def run(quick=False):
    time.sleep(600)
    return {}
"""


def _write_benches(folder: Path, **sources: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        (folder / f"bench_{name}.py").write_text(textwrap.dedent(source))
    return folder


def test_discover_and_bad_name(tmp_path):
    folder = _write_benches(tmp_path / "b", good=GOOD, plain=PLAIN)
    assert [p.stem for p in runner.discover(bench_dir=folder)] == ["bench_good", "bench_plain"]
    assert [p.stem for p in runner.discover(["bench_plain"], folder)] == ["bench_plain"]
    with pytest.raises(ValueError, match="only: no benchmark named 'missing'"):
        runner.discover(["missing"], folder)
    # The real suite: every bench_*.py next to the runner.
    real = {p.stem for p in runner.discover()}
    assert {"bench_w2", "bench_core"} <= real


def test_suite_records_failures_and_writes_summary(tmp_path):
    folder = _write_benches(
        tmp_path / "b", good=GOOD, plain=PLAIN, broken=BROKEN, crash=CRASH, nested=NESTED
    )
    results = tmp_path / "results"
    outcomes = runner.run_all(quick=True, results_dir=results, bench_dir=folder, log=lambda s: None)
    by_name = {o["name"]: o for o in outcomes}
    assert sorted(by_name) == ["broken", "crash", "good", "nested", "plain"]

    assert by_name["good"]["status"] == "ok"
    assert by_name["good"]["headline"] == {"speedup vs reference": 12.5, "max error": 3e-7}
    # The benchmark's own write_result went to the runner's results directory.
    written = json.loads((results / "good_quick.json").read_text())
    assert written["rows"] == [1, 2, 3] and "cpu_count" in written["machine"]
    # No headline: top-level numbers, descriptive keys left out.
    assert by_name["plain"]["headline"] == {"steps_per_second": 250.0, "converged": True}
    # No top-level numbers: one level down.
    assert by_name["nested"]["headline"] == {
        "first.ratio": 0.75,
        "first.n": 64,
        "second.label": "x",
    }
    broken = by_name["broken"]
    assert broken["status"] == "failed"
    assert broken["error"] == "RuntimeError: solver diverged at n=4000"
    assert "raise RuntimeError" in broken["output_tail"]
    crash = by_name["crash"]
    assert crash["status"] == "failed" and "exited with code 3" in crash["error"]

    summary = (results / "SUMMARY_quick.md").read_text()
    assert "| `good` | speedup vs reference | 12.5 |" in summary
    assert "|  | max error | 3.00e-07 |" in summary
    assert "| `broken` | **FAILED** | RuntimeError: solver diverged at n=4000 |" in summary
    assert "cores" in summary and "jax " in summary  # machine and versions
    saved = json.loads((results / "SUMMARY_quick.json").read_text())
    assert [o["name"] for o in saved["outcomes"]] == sorted(by_name)
    assert not (results / "SUMMARY.md").exists()  # quick runs never touch the full summary


def test_only_merges_into_previous_summary(tmp_path):
    folder = _write_benches(tmp_path / "b", good=GOOD, broken=BROKEN)
    results = tmp_path / "results"
    runner.run_all(quick=True, results_dir=results, bench_dir=folder, log=lambda s: None)
    # Fix the broken benchmark and rerun only it: the other entry is kept.
    _write_benches(folder, broken=PLAIN)
    runner.run_all(
        ["broken"], quick=True, results_dir=results, bench_dir=folder, log=lambda s: None
    )
    saved = {
        o["name"]: o for o in json.loads((results / "SUMMARY_quick.json").read_text())["outcomes"]
    }
    assert saved["broken"]["status"] == "ok"
    assert saved["good"]["headline"]["speedup vs reference"] == 12.5


def test_summary_from_existing_records(tmp_path):
    """``--from-results``: the table from records on disk, each with its own date."""
    folder = _write_benches(tmp_path / "b", good=GOOD, fn=WITH_FUNCTION, plain=PLAIN)
    results = tmp_path / "results"
    results.mkdir()
    (results / "good.json").write_text(
        json.dumps(
            {
                "name": "good",
                "quick": False,
                "machine": {"date": "2026-01-02"},
                "headline": {"speedup": 3.0},
            }
        )
    )
    (results / "bench_fn.json").write_text(
        json.dumps({"name": "bench_fn", "quick": False, "rows": [{"n": 4, "s": 1.0}]})
    )
    (results / "plain_quick.json").write_text(json.dumps({"name": "plain_quick", "x": 1.0}))
    outcomes = runner.outcomes_from_results(results_dir=results, bench_dir=folder)
    by_name = {o["name"]: o for o in outcomes}
    assert by_name["good"]["headline"] == {"speedup": 3.0}
    assert by_name["good"]["finished"] == "2026-01-02"
    assert by_name["fn"]["headline"] == {"s at n=4": 1.0}  # the module's headline()
    assert by_name["plain"]["status"] == "missing"  # only a quick record exists
    runner.write_summary(outcomes, results, quick=False)
    summary = (results / "SUMMARY.md").read_text()
    assert "| `good` | speedup | 3 |" in summary
    assert "| `plain` | **MISSING** |" in summary
    assert "`good` (good.json, 2026-01-02)" in summary


def test_module_headline_function_and_in_process(tmp_path):
    folder = _write_benches(tmp_path / "b", fn=WITH_FUNCTION, broken=BROKEN)
    path = folder / "bench_fn.py"
    outcome = runner.run_benchmark(path, quick=True, results_dir=tmp_path, isolate=False)
    assert outcome["status"] == "ok"
    assert outcome["headline"] == {"s at n=10": 0.5, "s at n=20": 2.0}
    failed = runner.run_benchmark(
        folder / "bench_broken.py", quick=True, results_dir=tmp_path, isolate=False
    )
    assert failed["status"] == "failed" and "solver diverged" in failed["error"]


def test_timeout_ends_the_benchmark(tmp_path):
    folder = _write_benches(tmp_path / "b", slow=SLOW)
    outcome = runner.run_benchmark(
        folder / "bench_slow.py", quick=True, results_dir=tmp_path, timeout=5.0
    )
    assert outcome["status"] == "timeout"
    assert outcome["error"] == "timed out after 5 s"
    assert outcome["seconds"] < 120  # killed, not waited for (600 s sleep)


def test_headline_precedence_and_fallback():
    record = {"headline": {"a": 1.0}, "rows": []}
    assert runner.headline(record, module="bench_w2") == {"a": 1.0}
    # A built-in extractor that no longer fits the record falls back to the generic one.
    changed = {"quick": False, "rows": [{"n": 10}], "total_seconds": 4.0}
    assert runner.headline(changed, module="bench_w2") == {"total_seconds": 4.0}
    assert runner.headline({"x": 1}, lambda r: {"custom": r["x"] * 2}) == {"custom": 2}


def test_format_numbers():
    assert runner._format(3.233985479302251e-16) == "3.23e-16"
    assert runner._format(13.341110740941954) == "13.3"
    assert runner._format(336502.5034059708) == "3.37e+05"
    assert runner._format(0.0118) == "0.0118"
    assert runner._format(512) == "512"
    assert runner._format(True) == "True"


@pytest.mark.parametrize("path", sorted((REPO / "benchmarks" / "results").glob("*.json")))
def test_committed_results_have_headlines(path):
    """Committed records (full runs) give a non-empty table of numbers in SUMMARY.md."""
    record = json.loads(path.read_text())
    if path.stem.startswith("SUMMARY"):
        assert record["outcomes"], "empty summary"
        return
    entries = runner.headline(record, module=record["name"].removesuffix("_quick"))
    assert entries, f"{path.name}: no headline numbers"
    for label, value in entries.items():
        assert isinstance(label, str) and isinstance(value, int | float | str), (label, value)


def test_quick_real_benchmark_through_cli(tmp_path):
    """``python -m benchmarks --quick --only bounds``: a real benchmark end to end."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "bounds"]
        + ["--results-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "bounds_quick.json").read_text())
    assert record["quick"] is True and record["machine"]["versions"]["jax"]
    summary = (tmp_path / "SUMMARY_quick.md").read_text()
    assert "| `bounds` | Jacobian asymmetry s, exact / projection (d=8) |" in summary


def test_wgdiff_bench_command(capsys):
    """``wgdiff bench`` is the same runner behind the console script."""
    from wgdiff.cli import main

    assert main(["bench", "--list"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"w2", "core", "sdflow"} <= set(listed)


@pytest.mark.slow
def test_full_quick_suite(tmp_path):
    """``wgdiff bench --quick``: every benchmark in quick mode runs without failing."""
    outcomes = runner.run_all(quick=True, results_dir=tmp_path, log=print)
    failed = {o["name"]: o.get("error") for o in outcomes if o["status"] != "ok"}
    assert not failed, failed
    assert all(o["headline"] for o in outcomes)
