"""The Predict-Project experiment's quick run writes a complete, consistent results file."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

# Paper reproductions (even --quick) take minutes of CPU: run with `pytest -m slow`.
pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "predict_project.py"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("exp_predict_project", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("pp")
    module.main(["--quick", "--out", str(out)])
    return module, out


def test_quick_run_writes_json_and_pngs(quick_run):
    _, out = quick_run
    result = json.loads((out / "predict_project.json").read_text())
    assert result["quick"] is True and "scaled_down" in result
    assert (out / "predict_project_mixture.png").stat().st_size > 0
    assert (out / "predict_project_digits.png").stat().st_size > 0
    ns = result["config"]["n_values"]
    for part in ("exact_score", "learned"):
        table = result["mixture"][part]["table"]
        for n in ns:
            row = table[str(n)]
            for key in ("em", "pp_paper", "pp_auto", "pp_best"):
                assert math.isfinite(row[key]) and row[key] >= 0
            # The oracle is the grid minimum, by construction.
            assert row["pp_best"] == min(row["pp_grid"].values())
        assert all(0.0 <= v <= 1.0 for v in result["mixture"][part]["delta_mu_auto"].values())
    digits = result["digits"]
    for n in ns:
        assert math.isfinite(digits["table"][str(n)]["em"])
        assert math.isfinite(digits["table"][str(n)]["pp_auto"])
    assert digits["fd_digits_floor_real_subset"] >= 0
    assert set(result["mixture"]["alpha_sweep"]["exact_score"]) == {"0.0", "1.0"}
    # The markdown table carries the paper's FID next to our rows.
    md = result["table_markdown"]
    assert "paper Celeb-A FID, score" in md and "ours mixture W2, exact score: EM" in md
    # The classifier is cached in the run directory and reused.
    assert (out / "digits_classifier.msgpack").exists()
