"""The wgdiff command line: help texts, demo, train -> sample -> evaluate.

Values are checked against independent recomputation: W2 with POT's exact solver on the
samples the commands saved, the held-out set regenerated from the run config.
"""

import json
import subprocess
import sys

import numpy as np
import ot
import pytest

from wgdiff.cli import build_parser, main, split_dataset


def pot_w2(x, y) -> float:
    """Exact W2 (not squared) between equal-weight empirical measures, float64 POT."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sqrt(ot.emd2([], [], ot.dist(x, y), numItermax=10**7)))


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
            "--repeats",
            "2",
            "--run-dir",
            str(run_dir),
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Euler-Maruyama" in out and "fresh data (floor)" in out and "/floor" in out
    result = json.loads((run_dir / "results.json").read_text())
    rows = result["rows"]
    assert [r["nfe"] for r in rows[:3]] == [5, 50, 10]
    saved = np.load(run_dir / "samples.npz")
    config = result["config"]
    _, heldout = split_dataset(
        config["dataset"], config["n_train"], config["n_heldout"], config["seed"]
    )
    np.testing.assert_array_equal(saved["heldout"], np.asarray(heldout))
    # Each W2 and the floor are medians over 2 independent draws (POT recomputes them).
    floor = float(np.median([pot_w2(saved[f"fresh_{r}"], heldout) for r in range(2)]))
    assert result["w2_fresh_vs_heldout"] == pytest.approx(floor, rel=1e-4)
    for i, row in enumerate(rows):
        draws = [saved[f"row_{i}_{r}"] for r in range(2)]
        assert all(x.shape == (300, 2) for x in draws)
        assert not np.array_equal(draws[0], draws[1])  # independent draws
        w2s = [pot_w2(x, heldout) for x in draws]
        assert row["w2_draws"] == pytest.approx(w2s, rel=1e-4), row
        assert row["w2"] == pytest.approx(float(np.median(w2s)), rel=1e-4), row
        assert row["w2_over_floor"] == pytest.approx(row["w2"] / floor, rel=1e-4)
        assert f"{row['w2']:.4f}" in out and f"{row['w2_over_floor']:.2f}" in out
    # 200 training steps cannot reach the floor (the tuned default does: README).
    assert all(r["w2_over_floor"] > 1.0 for r in rows)
    assert result["train_cpu_seconds"] > 0 and len(result["load_average_1_5_15"]) == 3
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
    config = json.loads((run_dir / "config.json").read_text())
    assert config["steps"] == 60 and config["features"] == [16, 16]
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [60] and log[-1]["stopped"] == "n_steps"
    assert f"final loss {log[-1]['loss']:.4f}" in capsys.readouterr().out
    out = tmp_path / "x.npy"
    # As many samples as held-out points, same seed, sampler and steps as `evaluate`: the
    # two commands draw the same points, so evaluate's W2 must be POT's W2 of x.npy.
    sample = ["sample", "--run-dir", str(run_dir), "--steps", "20", "--n", "200"]
    assert main([*sample, "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (200, 2) and np.all(np.isfinite(x))
    assert "wrote 200 samples" in capsys.readouterr().out
    assert main(["evaluate", "--run-dir", str(run_dir), "--steps", "20"]) == 0
    report = json.loads((run_dir / "evaluation.json").read_text())
    _, heldout = split_dataset("two_moons", 500, 200, 0)
    assert report["nfe"] == 20
    assert report["w2"]["value"] == pytest.approx(pot_w2(x, heldout), rel=1e-4)
    halves = pot_w2(heldout[:100], heldout[100:])
    assert report["certificates"]["w2_heldout_halves"] == pytest.approx(halves, rel=1e-4)
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
