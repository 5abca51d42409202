"""The benchmark runner and record helper: discovery, isolation, failures recorded,
headlines, SUMMARY.md, the quick/full rule, timings with CPU time and history.

The runner's mechanics are checked on small synthetic benchmarks written to a temporary
folder (fast: each runs in its own interpreter, as real ones do); one real benchmark runs
in quick mode through ``python -m benchmarks``; the whole quick suite is a slow test that
also checks that ``benchmarks/results/`` is left as it was. Nothing is timed here: the
runner's numbers are measurements, not test conditions.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks import _common, runner

REPO = Path(__file__).resolve().parent.parent
FULL = REPO / "benchmarks" / "results"

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
    assert runner.headline(record, lambda r: {"b": 2.0}) == {"a": 1.0}
    # A module extractor that no longer fits the record falls back to the generic one.
    changed = {"quick": False, "rows": [{"n": 10}], "total_seconds": 4.0}
    assert runner.headline(changed, lambda r: {"x": r["rows"][0]["s"]}) == {"total_seconds": 4.0}
    assert runner.headline({"x": 1}, lambda r: {"custom": r["x"] * 2}) == {"custom": 2}


def test_format_numbers():
    assert runner._format(3.233985479302251e-16) == "3.23e-16"
    assert runner._format(13.341110740941954) == "13.3"
    assert runner._format(336502.5034059708) == "3.37e+05"
    assert runner._format(0.0118) == "0.0118"
    assert runner._format(512) == "512"
    assert runner._format(True) == "True"


@pytest.mark.parametrize("path", sorted(FULL.glob("*.json")), ids=lambda p: p.name)
def test_committed_results_have_headlines(path):
    """Committed records (full runs) give a non-empty table of numbers in SUMMARY.md."""
    record = json.loads(path.read_text())
    if path.stem.startswith("SUMMARY"):
        assert record["outcomes"], "empty summary"
        return
    entries = runner.record_headline(record)
    assert entries, f"{path.name}: no headline numbers"
    for label, value in entries.items():
        assert isinstance(label, str) and isinstance(value, int | float | str), (label, value)


def test_quick_real_benchmark_through_cli(tmp_path):
    """``wgdiff bench --quick --only bounds``: a real benchmark end to end, results untouched.

    The default quick folder (``WGDIFF_BENCH_QUICK_DIR``) receives the records, and
    ``git status`` of ``benchmarks/results/`` and its files' contents are as before (the
    same check over every benchmark is the slow ``test_full_quick_suite``).
    """
    before = _snapshot(FULL)
    proc = subprocess.run(
        [sys.executable, "-m", "wgdiff.cli", "bench", "--quick", "--only", "bounds"],
        cwd=REPO,
        env={**os.environ, "WGDIFF_BENCH_QUICK_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _snapshot(FULL) == before
    record = json.loads((tmp_path / "bounds_quick.json").read_text())
    assert record["quick"] is True and record["machine"]["versions"]["jax"]
    summary = (tmp_path / "SUMMARY_quick.md").read_text()
    assert "| `bounds` | Jacobian asymmetry s, exact / projection (d=8) |" in summary


def test_wgdiff_bench_command(capfd):
    """``wgdiff bench`` runs the checkout's runner (a child process; sys.path untouched)."""
    from wgdiff.cli import main

    before = list(sys.path)
    assert main(["bench", "--list"]) == 0
    listed = capfd.readouterr().out.split()
    assert {"w2", "core", "sdflow"} <= set(listed)
    assert sys.path == before


def test_wgdiff_bench_without_checkout(monkeypatch, capsys):
    """From an installed wheel (no benchmarks/ next to the package) it says what it needs."""
    from wgdiff import bench

    monkeypatch.setattr(bench, "_REPO", Path("/nonexistent/site-packages"))
    assert bench.main(["--list"]) == 2
    err = capsys.readouterr().err
    assert "needs a source checkout" in err and "pip install -e ." in err


# -- the quick/full rule and the record helper --------------------------------------------
def test_quick_record_never_lands_among_full_records(tmp_path, monkeypatch):
    monkeypatch.setattr(_common, "QUICK_RESULTS_DIR", None)
    monkeypatch.setenv("WGDIFF_BENCH_QUICK_DIR", str(tmp_path / "quick"))
    # A benchmark that names its record "train" in both modes (the old bench_train bug).
    path = _common.write_result("train", {"quick": True, "x": 1.0})
    assert path == tmp_path / "quick" / "train_quick.json"
    assert json.loads(path.read_text())["quick"] is True
    for folder in (FULL, FULL / "sub"):
        with pytest.raises(ValueError, match="quick run may not write into the committed"):
            _common.write_result("train", {"quick": True}, folder)
        with pytest.raises(ValueError, match="quick run may not write"):
            runner.resolve_results_dir(folder, quick=True)
    with pytest.raises(ValueError, match="must say whether it is a quick run"):
        _common.write_result("train", {"x": 1.0}, tmp_path)
    with pytest.raises(ValueError, match="disagrees"):
        _common.write_result("train", {"quick": False}, tmp_path, quick=True)
    with pytest.raises(ValueError, match="named like a quick one"):
        _common.write_result("train_quick", {"quick": False}, tmp_path)
    assert runner.resolve_results_dir(None, quick=True) == tmp_path / "quick"
    assert runner.resolve_results_dir(None, quick=False) == FULL


def test_cli_refuses_quick_into_full_results():
    """``python -m benchmarks --quick --results-dir benchmarks/results`` stops before running."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "core"]
        + ["--results-dir", "benchmarks/results"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "quick run may not write into the committed" in proc.stderr


def test_full_record_machine_targets_and_history(tmp_path):
    goal = _common.target("overhead ratio", 1.51, at_most=1.15)
    assert goal == {"label": "overhead ratio", "value": 1.51, "at_most": 1.15, "met": False}
    assert _common.target("speed", 3.0, at_least=2.0)["met"] is True
    with pytest.raises(ValueError, match="exactly one"):
        _common.target("x", 1.0)
    first = _common.write_result("core", {"quick": False, "targets": [goal]}, tmp_path)
    passed = _common.target("overhead ratio", 0.97, at_most=1.15)
    _common.write_result("core", {"quick": False, "targets": [passed]}, tmp_path)
    latest = json.loads(first.read_text())
    assert latest["targets_met"] is True
    machine = latest["machine"]
    import jax

    assert machine["devices"] == [str(d) for d in jax.devices()]  # detected, not typed
    assert len(machine["load_average_1_5_15"]) == 3
    assert machine["process_cpu_s"] > 0 and machine["process_wall_s"] > 0
    assert machine["date"].startswith(time.strftime("%Y", time.gmtime()))
    # The failing run is kept, with its date, after the passing one replaced it.
    history = [json.loads(line) for line in (tmp_path / "history" / "core.jsonl").open()]
    assert [h["targets_met"] for h in history] == [False, True]
    assert all(h["machine"]["date"] for h in history)


def test_measure_keeps_cpu_compile_and_spread():
    import jax
    import jax.numpy as jnp

    fn = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T)
    x = jnp.ones((64, 64))
    m = _common.measure(fn, x, repeats=4)
    assert m["repeats"] == 4 and len(m["wall"]["all"]) == 4 and len(m["cpu"]["all"]) == 4
    assert m["wall"]["min"] <= m["wall_s"] <= m["wall"]["max"]
    assert m["cpu"]["min"] <= m["cpu_s"] <= m["cpu"]["max"]
    # The first call compiles (tracing + XLA); it is kept out of the steady repeats.
    assert m["first_call_wall_s"] > m["wall"]["max"]
    assert m["compile_wall_s"] == pytest.approx(m["first_call_wall_s"] - m["wall_s"])
    with pytest.raises(ValueError, match="repeats"):
        _common.measure(fn, x, repeats=0)


def test_summary_shows_targets_and_cpu(tmp_path):
    source = """
from benchmarks._common import target, write_result

def run(quick=False):
    record = {"quick": quick, "headline": {"ratio": 1.51},
              "targets": [target("ratio", 1.51, at_most=1.15)]}
    write_result("goal", record)
    return record
"""
    folder = _write_benches(tmp_path / "b", goal=source)
    outcomes = runner.run_all(
        quick=True, results_dir=tmp_path / "r", bench_dir=folder, log=lambda s: None
    )
    assert outcomes[0]["cpu_seconds"] > 0
    summary = (tmp_path / "r" / "SUMMARY_quick.md").read_text()
    assert "|  | target: ratio <= 1.15 | 1.51 (**MISSED**) |" in summary
    assert "s CPU (load " in summary


def _snapshot(folder: Path) -> tuple[str, dict]:
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--", str(folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout
    digests = {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    return status, digests


@pytest.mark.slow
def test_full_quick_suite(tmp_path):
    """``wgdiff bench --quick``: every benchmark runs, and benchmarks/results/ is untouched.

    ``git status --porcelain benchmarks/results/`` (ignored files included) and every
    file's content are the same before and after; the quick records are in the quick folder.
    """
    before = _snapshot(FULL)
    env = {**os.environ, "WGDIFF_BENCH_QUICK_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "wgdiff.cli", "bench", "--quick"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert _snapshot(FULL) == before
    summary = json.loads((tmp_path / "SUMMARY_quick.json").read_text())
    failed = {o["name"]: o.get("error") for o in summary["outcomes"] if o["status"] != "ok"}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-3000:])
    assert all(o["headline"] for o in summary["outcomes"])
    assert {p.stem for p in tmp_path.glob("*_quick.json")} >= {"core_quick", "train_quick"}


def test_history_flags_old_failing_records(tmp_path):
    """A record from before targets were stored is judged by its module's targets()."""
    history = tmp_path / "history"
    history.mkdir()
    rows = [
        {"machine": {"date": "2026-11-23T05:36"}, "sampler_overhead": {"em_overhead_ratio": 1.51}},
        {"machine": {"date": "2026-11-23T06:14"}, "sampler_overhead": {"em_overhead_ratio": 0.97}},
    ]
    (history / "core.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    notes = runner.history_notes(tmp_path, ["core"])
    assert notes == [
        "`core`: 2 full runs on record, 2026-11-23T05:36 (targets MISSED); 2026-11-23T06:14"
    ]
    runner.write_summary(
        [{"name": "core", "status": "ok", "finished": "now", "headline": {"x": 1.0}}],
        tmp_path,
        quick=False,
    )
    assert "(targets MISSED)" in (tmp_path / "SUMMARY.md").read_text()
