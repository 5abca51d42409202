"""The wgdiff command line: help texts, demo, train -> sample -> evaluate."""

import json
import subprocess
import sys

import numpy as np
import pytest

from wgdiff.cli import build_parser, main

COMMANDS = ("demo", "train", "sample", "evaluate")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "default" in text and "--run-dir" in text


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "wgdiff.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert all(c in out for c in COMMANDS)


def test_demo_writes_table_json_and_png(tmp_path, capsys):
    run_dir = tmp_path / "demo"
    code = main(
        [
            "demo",
            "--steps",
            "200",
            "--n-samples",
            "300",
            "--em-steps",
            "5",
            "50",
            "--ode-steps",
            "5",
            "--run-dir",
            str(run_dir),
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Euler-Maruyama" in out and "fresh data (floor)" in out
    result = json.loads((run_dir / "results.json").read_text())
    rows = result["rows"]
    assert [r["nfe"] for r in rows[:3]] == [5, 50, 10]
    assert all(np.isfinite(r["w2"]) and r["w2"] > 0 for r in rows)
    assert (run_dir / "samples.png").stat().st_size > 10_000


def test_train_sample_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [
        "train",
        "--steps",
        "60",
        "--width",
        "16",
        "--depth",
        "2",
        "--checkpoint-every",
        "30",
        "--n-train",
        "500",
        "--n-heldout",
        "200",
        "--run-dir",
        str(run_dir),
        "--quiet",
    ]
    assert main(args) == 0
    assert (run_dir / "config.json").exists()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    out = tmp_path / "x.npy"
    assert (
        main(["sample", "--run-dir", str(run_dir), "--steps", "20", "--n", "64", "--out", str(out)])
        == 0
    )
    x = np.load(out)
    assert x.shape == (64, 2) and np.all(np.isfinite(x))
    assert "wrote 64 samples" in capsys.readouterr().out
    assert main(["evaluate", "--run-dir", str(run_dir), "--steps", "20"]) == 0
    report = json.loads((run_dir / "evaluation.json").read_text())
    assert report["nfe"] == 20 and np.isfinite(report["w2"]["value"])
    assert report["certificates"]["bound"]["bound"] > 0
    assert "Kwon upper bound" in capsys.readouterr().out


def test_bad_arguments_exit_with_a_message(tmp_path, capsys):
    code = main(["demo", "--steps", "0", "--run-dir", str(tmp_path / "d"), "--quiet"])
    assert code == 2
    assert "steps must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sample", "--sampler", "rk45"])
    with pytest.raises(SystemExit, match="config.json"):
        main(["sample", "--run-dir", str(tmp_path / "missing")])
