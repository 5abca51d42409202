"""Quick runs of experiments/wasserstein_bound.py and experiments/conservativity.py."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

# Paper reproductions (even --quick) take minutes of CPU: run with `pytest -m slow`.
pytestmark = pytest.mark.slow

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load(name):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bound_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("wasserstein_bound")
    load("wasserstein_bound").main(["--quick", "--out", str(out)])
    return out


def test_wasserstein_bound_quick(bound_results):
    results = json.loads((bound_results / "wasserstein_bound_quick.json").read_text())
    assert (bound_results / "wasserstein_bound_quick.png").exists()
    for name in ("one_gaussian", "two_moons", "four_clusters"):
        entry = results["datasets"][name]
        trace = entry["trace"]
        assert entry["n_checkpoints"] == len(trace) > 0
        # every checkpoint is counted: non-finite ones are failures, not dropped
        n_fail = sum(1 for r in trace if not r["finite"])
        assert entry["n_nonfinite"] == n_fail
        passes = sum(1 for r in trace if r["finite"] and r["w2"] <= r["bound"])
        assert entry["share_under_bound"] == pytest.approx(passes / len(trace))
        assert len(entry["violations"]) == len(trace) - n_fail - passes
        for row in trace:
            # the sampler's step was halved at least once and recorded
            assert len(row["sampler_levels"]) == len(row["sampler_rms_changes"]) + 1 >= 2
            if row["finite"]:
                # sliced W2 (mean over directions) never exceeds the exact W2 of the batch
                assert row["sliced_w2"] <= row["w2"] * (1 + 1e-4) + 1e-6
                assert row["j_dsm"] > 0
                # L_s over the sampled region covers the trajectory by construction
                assert row["outside_region_max"] == 0.0
                assert len(row["lipschitz_region"]) == len(entry["times"])
    intercept = results["four_cluster_intercept"]
    assert intercept["authors_stored"] == 5.19
    assert intercept["authors_level"]["j_sm"] < intercept["authors_level"]["j_dsm"]
    assert set(results["regularization_study"]) >= {"none", "weight_clip"}
    horizon = results["time_horizon_study"]
    assert len(horizon["T"]) == len(horizon["offset"]) >= 1
    assert results["deviations"]
    assert results["cpu_seconds"] > 0 and len(results["load_average_end"]) == 3


def test_conservativity_quick(tmp_path):
    results = load("conservativity").main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "conservativity_quick.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(results["summary"]))
    assert (tmp_path / "conservativity_quick.png").exists()
    models = saved["two_d"]["models"]
    assert set(models) == {
        "score_mlp_dsm",
        "potential_mlp_dsm",
        "velocity_mlp_wgf_fm_uniform_score",
        "velocity_mlp_wgf_fm_g4_over_4",
    }
    # the gradient of a scalar net is conservative whatever its training
    assert saved["summary"]["potential_mlp_at_float_precision"]
    assert models["score_mlp_dsm"]["dc_max_over_t"] > 1e-3
    # the exact score's floors on the same loops are at float precision
    assert all(saved["summary"]["exact_floor_at_float_precision"].values())
    for entry in models.values():
        assert math.isfinite(entry["w2_probability_flow"])
        for row in entry["per_time"]:
            assert "exact_floor_ic_projected_interpolated_max" in row
            for key, value in row.items():
                if key.startswith("ic_"):
                    assert 0.0 <= value <= 1.0 + 1e-6
    assert saved["digits"]["per_time"]
    assert "exact_floor_dc_max" in saved["digits"]["per_time"][0]
