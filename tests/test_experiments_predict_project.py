"""The Predict-Project experiment's quick run writes a complete, consistent results file."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "predict_project.py"


def _module():
    spec = importlib.util.spec_from_file_location("exp_predict_project", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    module = _module()
    out = tmp_path_factory.mktemp("pp")
    module.main(["--quick", "--out", str(out)])
    return module, out, json.loads((out / "predict_project_quick.json").read_text())


def test_paired_verdicts_follow_the_t_interval():
    """Fast: the verdict logic on hand-made seeds (no sampling)."""
    module = _module()
    better = module.paired([1.0, 1.1, 0.9], [2.0, 2.1, 1.95])
    assert better["verdict"] == "better" and better["mean"] < 0
    tie = module.paired([1.0, 2.0, 0.5], [1.2, 1.1, 1.0])
    assert tie["verdict"] == "no resolved difference"
    worse = module.paired([3.0, 3.1, 2.9], [1.0, 1.05, 0.95])
    assert worse["verdict"] == "worse"
    # 95% t interval with 2 degrees of freedom (t = 4.303).
    d = np.array([1.0, 2.0, 0.5]) - np.array([1.2, 1.1, 1.0])
    np.testing.assert_allclose(
        tie["ci95_half_width"], 4.3027 * d.std(ddof=1) / np.sqrt(3), rtol=1e-4
    )
    assert module.paper_delta_mu(20) == 1.0 and module.paper_delta_mu(100) == pytest.approx(0.1)
    assert module.paper_delta_mu(40) == pytest.approx(0.4) and module.paper_delta_mu(5) == 1.0
    assert 0.1 < module.paper_delta_mu(50) < 0.4


@pytest.mark.slow
def test_quick_run_is_complete_and_consistent(quick_run):
    module, out, result = quick_run
    assert result["quick"] is True and "scaled_down" in result
    assert not (out / "predict_project.json").exists()  # quick never writes the full name
    cfg = result["config"]
    for part in ("exact_score", "learned"):
        res = result["mixture"][part]
        seeds = cfg["mix_eval"][part]["seeds"]
        assert res["n_eval"] == cfg["mix_eval"][part]["n"] and res["seeds"] == seeds
        for nfe in cfg["nfe"]:
            row = res["table"][str(nfe)]
            for name in ("em", "ddim", "dpmpp2m", "heun_karras", "pc", "pp_paper", "pp_auto"):
                assert len(row[name]["values"]) == seeds
                assert all(math.isfinite(v) and v >= 0 for v in row[name]["values"])
            # Equal NFE: PP runs NFE / 2 steps of two network calls.
            assert res["nfe_used"][f"pp_auto@{nfe}"] == nfe
            assert res["nfe_used"][f"em@{nfe}"] == nfe
            v = res["verdicts"][str(nfe)]
            best = v["best_other_solver"]
            assert row[best]["mean"] == min(
                s["mean"] for k, s in row.items() if not k.startswith("pp_") and k != "em_half"
            )
            assert v["pp_auto"]["vs_em"]["verdict"] in ("better", "worse", "no resolved difference")
        assert "pp_literal" in res["table"]["20"]
        assert set(res["alpha_sweep_first_seed"]["10"]["values"]) == {"0.0", "1.0"}
        assert res["alpha_sweep_first_seed"]["10"]["n_steps"] == 10
        assert res["capacity"]["relative_error_to_oracle"]
        # delta_mu sweep on every seed, each value compared with EM at the same NFE: the
        # oracle's on the exact score, the net's on the learned mixture.
        arm = "oracle" if part == "exact_score" else "net"
        assert list(res["sweep"][str(cfg["sweep_nfe"][0])]) == [arm]
        for nfe in cfg["sweep_nfe"]:
            for dm in cfg["delta_mu_sweep"]:
                cell = res["sweep"][str(nfe)][arm][str(dm)]
                assert len(cell["values"]) == seeds
                em = res["table"][str(nfe)]["em"]["values"]
                assert cell["vs_em"]["mean"] == np.mean(np.subtract(cell["values"], em))
    # The oracle needs a bijective predict map: absent at NFE 10 (N = 5), present at 20.
    exact = result["mixture"]["exact_score"]["table"]
    assert "pp_oracle" not in exact["10"] and "pp_oracle" in exact["20"]
    assert "pp_oracle" not in result["mixture"]["learned"]["table"]["20"]
    w2_rows = result["mixture"]["exact_w2_subset"]
    sub = cfg["w2_subset"]
    assert w2_rows["n"] == sub["n"]
    assert len(w2_rows["exact_score"]["20"]["pp_oracle"]["values"]) == sub["seeds"]
    assert w2_rows["exact_score"]["floor"]["mean"] > 0
    digits = result["digits"]
    assert math.isfinite(digits["quality_em"]["fd_digits"])
    # FD-digits at training checkpoints; the last one is the final net's quality number.
    checkpoints = digits["training"]["fd_digits_checkpoints"]
    every = cfg["digit_steps"] // cfg["digit_checkpoints"]
    assert [c["step"] for c in checkpoints[: cfg["digit_checkpoints"]]] == [
        every * (i + 1) for i in range(cfg["digit_checkpoints"])
    ]
    quality = digits["quality_em"]
    per_seed = quality["fd_digits_per_seed"]["values"]
    assert (
        len(per_seed) == cfg["digit_quality_seeds"]
        and per_seed[0] == checkpoints[-1]["fd_digits_em"]
    )
    assert quality["fd_digits"] == pytest.approx(np.mean(per_seed))
    floor = digits["fd_digits_floor_real_subset"]
    assert len(floor["values"]) == cfg["digit_quality_seeds"] and floor["mean"] >= 0
    assert quality["ratio_to_floor"] == pytest.approx(quality["fd_digits"] / floor["mean"])
    assert "pp_literal" in digits["table"]["10"]
    assert result["statement"] and result["headline"]["digits"]["10"]["pp"]
    assert (out / "predict_project_quick_mixture.png").stat().st_size > 0
    assert (out / "predict_project_quick_digits.png").stat().st_size > 0
    assert (out / "digits_classifier.msgpack").exists()
    # --part all: the two parts ran as processes side by side, then the merge.
    run = result["full_run"]
    assert run["wall_s"] >= run["wall_s_parts"] > 0 and run["cpu_s"] > 0
    assert len(run["load_average_start"]) == 3 and len(run["load_average_end"]) == 3
    assert (out / "predict_project_quick_part_mixture.json").exists()
    assert len(run["code"]["commit"]) == 40  # the commit the run came from
