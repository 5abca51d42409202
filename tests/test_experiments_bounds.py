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
        assert entry["n_points"] > 0
        assert 0.0 <= entry["share_w2_under_per_checkpoint_bound"] <= 1.0
        assert math.isfinite(entry["intercept_authors_grid"])
        assert len(entry["lipschitz_refined"]) == len(entry["times"])
        for row in entry["trace"]:
            if row["finite"]:
                # sliced W2 (mean over directions) never exceeds the exact W2 of the batch
                assert row["sliced_w2"] <= row["w2"] * (1 + 1e-4) + 1e-6
                assert row["j_dsm"] > 0
    # Theorem 2 on the Gaussian-mixture sets, at the end of training (the Monte Carlo
    # cross term 2 E[s.(s* - target)] is noisy while the loss is being maximized)
    for name in ("one_gaussian", "four_clusters"):
        final = results["datasets"][name]["final"]
        assert final["j_sm"] <= final["j_dsm"]
        assert 0.0 <= results["datasets"][name]["share_j_sm_le_j_dsm"] <= 1.0
    intercept = results["four_cluster_intercept"]
    assert intercept["authors_stored"] == 5.19
    assert math.isfinite(intercept["ours_authors_grid"])
    assert set(results["regularization_study"]) >= {"none", "weight_clip"}
    horizon = results["time_horizon_study"]
    assert len(horizon["T"]) == len(horizon["offset"]) >= 1
    assert all(o >= 0 for o in horizon["offset"])
    assert results["deviations"]


def test_conservativity_quick(tmp_path):
    results = load("conservativity").main(["--quick", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "conservativity_quick.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(results["summary"]))
    assert (tmp_path / "conservativity_quick.png").exists()
    models = saved["two_d"]["models"]
    assert set(models) == {"score_mlp_dsm", "potential_mlp_dsm", "velocity_mlp_wgf_fm"}
    # the gradient of a scalar net is conservative whatever its training
    assert saved["summary"]["potential_mlp_at_float_precision"]
    assert models["score_mlp_dsm"]["dc_max_over_t"] > 1e-3
    for entry in models.values():
        assert math.isfinite(entry["w2_probability_flow"])
        for row in entry["per_time"]:
            for key, value in row.items():
                if key.startswith("ic_"):
                    assert 0.0 <= value <= 1.0 + 1e-6
    assert saved["digits"]["per_time"]
