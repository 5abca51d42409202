"""Quick run of experiments/flow_matching.py (minutes of CPU: slow)."""

import json
import math

import pytest

from experiments import flow_matching

pytestmark = pytest.mark.slow


def test_flow_matching_quick(tmp_path):
    flow_matching.main(["--quick", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "flow_matching_quick.json").read_text())
    assert (tmp_path / "flow_matching_quick.png").exists()
    assert results["complete"] and results["config"]["quick"]
    assert set(results["tasks"]) == set(flow_matching.QUICK["tasks"])
    data_to_data = results["tasks"]["moons_to_eight_gaussians"]["methods"]
    assert "dsm_pf" not in data_to_data and "rectified_reflow" in data_to_data
    for entry in results["tasks"].values():
        for method, res in entry["methods"].items():
            assert set(res["w2_euler"]) == {str(n) for n in flow_matching.NFES}, method
            assert all(math.isfinite(v) and v >= 0 for v in res["w2_euler"].values())
            cert = res["certificate"]
            # exact inequalities of the discrete certificate (wgdiff.flows.certificates)
            assert cert["gap_ratio"] >= 1.0 - 1e-6
            assert 0.0 < cert["straightness"] <= 1.0 + 1e-6
            assert res["training"]["cpu_s"] > 0
    assert len(results["summary"]) == sum(len(e["methods"]) for e in results["tasks"].values())
