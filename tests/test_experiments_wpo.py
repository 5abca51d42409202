"""The WPO experiment's --quick run: writes a complete JSON (under a quick name) and the figures."""

from __future__ import annotations

import json
import math

import pytest

from experiments import wpo_kernel

# Paper reproductions (even --quick) take minutes of CPU: run with `pytest -m slow`.
pytestmark = pytest.mark.slow


def test_wpo_kernel_quick(tmp_path):
    wpo_kernel.main(["--quick", "--out", str(tmp_path)])
    assert not (tmp_path / "wpo_kernel.json").exists()  # never the full record's name
    res = json.loads((tmp_path / "wpo_kernel_quick.json").read_text())
    assert res["config"]["quick"] is True
    quick = wpo_kernel.QUICK
    fig2 = res["fig2"]
    n_checkpoints = len(quick["matched_steps"]) + len(quick["dsm_extra_steps"])
    assert len(fig2["per_seed_curves"]) == quick["seeds"]
    for seed in fig2["per_seed_curves"]:
        assert len(seed["wpo"]) == len(quick["matched_steps"])
        assert len(seed["dsm"]) == n_checkpoints
        for model in ("wpo", "dsm"):
            steps = [r["steps"] for r in seed[model]]
            assert steps == sorted(steps)
            assert all(len(r["w2_draws"]) == quick["n_draws"] for r in seed[model])
    # The level is fixed by the data floor, not by either model's results.
    assert fig2["w2_level"] == pytest.approx(1.5 * fig2["data_floor"]["w2_mean"])
    assert [r["steps"] for r in fig2["matched_steps"]] == list(quick["matched_steps"])
    mem = res["fig6"][0]
    # Smaller early-stopping variance puts the reverse-SDE samples closer to training points.
    ratios = [r["nn_ratio"] for r in sorted(mem["empirical"], key=lambda r: -r["eps_variance"])]
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))
    assert sum(r["validation_chosen"] for r in mem["empirical"]) == 1
    assert mem["validated_comparison"]["early_stopping_eps"] in quick["mem_eps_grid"]
    assert math.isfinite(mem["wpo"]["capped"]["heldout_ll"])
    roll = res["fig4"]["scaled_run"]
    # The cap is chosen by validation likelihood: it cannot lower it.
    assert roll["after_fix"]["validation_ll"] >= roll["before_fix"]["validation_ll"] - 1e-6
    assert math.isfinite(roll["true_heldout_ll"]) and math.isfinite(
        roll["kde_baseline"]["heldout_ll"]
    )
    # The training-time fix is logged: the NaN guard on every row, no kernel above the cap.
    fix = roll["training_fix"]
    assert fix["jitter"] == pytest.approx(fix["train_max_std"] ** -2)
    for row in roll["training_log"][1:]:
        assert row["params_finite"] and row["nonfinite_updates_skipped"] >= 0
        assert row["widest_std_max"] <= fix["train_max_std"] * (1 + 1e-5)
        assert math.isfinite(row["pool_ism"]) and math.isfinite(row["validation_ism"])
    # The reported model is the best-validation checkpoint, trained on the enlarged pool.
    best = max(roll["training_log"], key=lambda r: r["validation_ll"])
    assert roll["best_step"] == best["steps"]
    assert roll["before_fix"]["validation_ll"] == pytest.approx(best["validation_ll"], rel=1e-5)
    assert roll["ism_pool_size"] == quick["roll_n_train"] - quick["roll_n_centers"]
    assert roll["heldout_rows_in_training_set"] == 0
    # Capacity diagnosis: isotropic KDEs on the WPO model's own centres, then on random
    # training subsets of the configured sizes, each bandwidth a grid value chosen on
    # the validation split (so its validation score is the grid's best).
    capacity = res["fig4_capacity"]["rows"]
    assert [r["n_kernels"] for r in capacity] == [
        quick["roll_n_centers"],
        *quick["capacity_kernels"],
    ]
    for row in capacity:
        assert math.isfinite(row["heldout_ll"]) and math.isfinite(row["validation_ll"])
        assert min(abs(row["bandwidth"] - h) for h in quick["capacity_bandwidths"]) < 1e-12
    paper = res["fig4_paper_centres"]["scaled_run"]
    assert paper["n_centers"] == quick["paper_n_centers"]
    assert paper["heldout_rows_in_training_set"] == 0 and paper["steps"] == roll["steps"]
    assert res["parts_not_run"] == []
    for key, label in (("fig4_diagnosis", "cholesky"), ("fig4_ablation", "log_cholesky_ablation")):
        log = res[key][label]["training_log"]
        assert [r["steps"] for r in log] == sorted(r["steps"] for r in log)
    assert res["fig5"]["std_major_median"] >= res["fig5"]["std_minor_median"] > 0
    for part in wpo_kernel.PARTS:
        for name in res[f"run_{part}"]["figures"]:
            assert (tmp_path / name).stat().st_size > 0
