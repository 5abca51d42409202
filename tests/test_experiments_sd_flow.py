"""The SD-flow reproduction script: --quick writes complete, sane results; the committed
geometry reproduces the paper's CFD threshold."""

import json
import math
from pathlib import Path

import jax
import pytest

from experiments import sd_flow_tables
from wgdiff import metrics
from wgdiff.data import toy

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results" / "sd_flow.json"


@pytest.fixture(scope="module")
def quick_record(tmp_path_factory):
    out = tmp_path_factory.mktemp("sd_flow")
    record = sd_flow_tables.main(["--quick", "--out", str(out)])
    return out, record


@pytest.mark.slow
def test_quick_run_writes_tables_figures_and_json(quick_record):
    out, record = quick_record
    on_disk = json.loads((out / "sd_flow.json").read_text())
    assert on_disk["quick"] is True and on_disk["scaled_down"]
    for name in ("fig1_grid_strip", "fig2_question_mark_strip", "fig3_interpolation",
                 "fig4_nn_histogram", "fig5_r50"):  # fmt: skip
        assert (out / f"sd_flow_{name}.png").stat().st_size > 1000
    md = (out / "sd_flow_tables.md").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Table 4"):
        assert title in md
    # The step convention is stated from the library constant, not typed by hand.
    assert f"eta * {sd_flow_tables.sdflow.SD_STEP_SCALE} *" in on_disk["method_statements"]["sd"]
    assert "only the drawn particles move" in on_disk["batch_semantics"]
    for table, n_rows in (("grid", 16), ("question_mark", 32)):
        rec = on_disk[table]
        assert len(rec["rows"]) == n_rows
        assert 0 < rec["threshold"] < 1
        assert rec["geometry_search"]["chosen"] in [
            c.get("std", c.get("scale")) for c in rec["geometry_search"]["candidates"]
        ]
        for group in rec["timings"].values():
            assert group["cpu_s"] > 0 and group["kernel_evaluations"] > 0
        for row in rec["rows"]:
            # The paper's three columns on every row; the controls on their row subsets.
            for method in ("sd", "mmd", "svgd"):
                assert 0.0 <= row["convergence"][method] <= 1.0
            assert ("sd_batch_all" in row["convergence"]) == bool(row["row"]["batch"])
            assert math.isfinite(row["mean_min_cfd"]["sd"])
        # The threshold is the mean of the recorded maxima (THRESHOLD_RULE).
        maxima = rec["threshold_estimate"]["maxima"]
        assert len(maxima) == record["config"]["threshold_repeats"]
        assert abs(rec["threshold"] - sum(maxima) / len(maxima)) < 1e-12
    r50 = on_disk["r50"]
    for k in ("mean_abs_error", "cov_rel_frobenius_error", "nn_ratio_synthetic_over_target_self"):
        assert math.isfinite(r50[k])


@pytest.mark.slow
def test_quick_sd_flow_moves_towards_target(quick_record):
    # 40 steps of SGD SD flow (eq. 15's eta/2) on full data under the cosine schedule
    # (large sigma first, so every particle feels the whole target) bring the CFD to the
    # target below the base draw's. CONST rows may first gather on the nearest component,
    # AdaGrad caps steps at ~eta, and BATCH moves each particle in only 1 of 4 updates,
    # so they are not held to this within 40 steps. The question mark's OFFSET rows are
    # not either: at the tables' scale (x4-4.5) the offset base's CFD (0.25) is the
    # level unit-scale frequencies see for any far cloud, and 40 steps measured 0.250
    # from 0.246 (see the geometry finding of sd_flow_tables.md).
    _, record = quick_record
    for table in ("grid", "question_mark"):
        rec = record[table]
        for row in rec["rows"]:
            flags = row["row"]
            moving = flags["const"] == 0 and flags["adagrad"] == 0 and flags["batch"] == 0
            if moving and not flags.get("offset", 0):
                assert row["mean_min_cfd"]["sd"] < rec["initial_cfd"][0][0]
    # R^50: 40 steps of Alg. 2 already put the generator mean within 5% of mu.
    assert record["r50"]["mean_rel_error"] < 0.05


def _max_cfd_over_pairs(gm, key, n, pairs):
    """Weber sec. 7.2's threshold: max CFD between independent n-point target draws
    (wgdiff.metrics.cfd per pair, independent of the tables' sdflow.cfd_pair_values)."""

    def one(k):
        kx, ky, kf = jax.random.split(k, 3)
        return metrics.cfd(gm.sample(kx, n), gm.sample(ky, n), key=kf)

    return float(jax.jit(lambda ks: jax.lax.map(one, ks).max())(jax.random.split(key, pairs)))


@pytest.mark.slow
def test_rescaled_question_mark_reproduces_the_paper_threshold():
    # The committed run's question-mark scale gives the paper's 0.0612 within 10% by the
    # tables' rule (mean of 5 maxima over 1000 pairs of 1024 points) with fresh draws and
    # keys; the unscaled reconstruction does not (one maximum 0.074 measured).
    record = json.loads(RESULTS.read_text())
    if "question_mark" not in record:
        pytest.skip("the committed record has no Table 2 run (see sd_flow_tables.md)")
    rec = record["question_mark"]
    scale = rec["geometry_search"]["chosen"]
    gm = sd_flow_tables.scaled_mixture(toy.question_mark_mixture(), scale)
    keys = jax.random.split(jax.random.key(123), sd_flow_tables.THRESHOLD_REPEATS)
    thr = sum(_max_cfd_over_pairs(gm, k, 1024, 1000) for k in keys) / len(keys)
    paper = sd_flow_tables.PAPER_THRESHOLDS["question_mark"]
    assert abs(thr - paper) < 0.10 * paper
    assert abs(rec["threshold"] - paper) < 0.10 * paper


def _table_record(methods, threshold=0.05, cpu=10.0):
    """A minimal Table 1 record of the script's shape: every odd row converged."""
    rows = [
        dict(
            row=flags, convergence={m: float(i % 2) for m in methods},
            mean_min_cfd={m: 0.01 for m in methods}, paper_convergence={m: 1 for m in methods},
            paper_mean_min_cfd={m: 0.001 for m in methods},
        )
        for i, flags in enumerate(sd_flow_tables.condition_rows(False))
    ]  # fmt: skip
    return dict(
        trials=5, threshold=threshold, geometry_search=dict(chosen=0.85), rows=rows,
        counts={m: dict(all_trials_converged=8, any_trial_converged=8, paper=16, of=16)
                for m in methods},
        timings={f"{m}/batch=0": dict(cpu_s=cpu) for m in methods},
        min_cfd_per_trial={m: {} for m in methods},
        cost=dict(wall_s=2 * cpu, cpu_s=cpu, load_avg_1min_start=1.0, load_avg_1min_end=2.0),
    )  # fmt: skip


def test_merge_records_joins_columns_sources_and_extras(tmp_path):
    # Runs of other methods on the same geometry become columns of one table; a merged
    # input keeps the runs it came from; a later extras run replaces the figures' record.
    earlier = dict(
        quick=False, grid=_table_record(["sd"]), method_statements={"sd": "SD"},
        batch_semantics="BATCH", merged_from=["run1.json", "run2.json"],
        extras_source="old extras", interpolation={"steps": 1}, log=["a"],
    )  # fmt: skip
    mmd = dict(quick=False, grid=_table_record(["mmd"], cpu=5.0),
               method_statements={"mmd": "MMD"}, log=["b"])  # fmt: skip
    extras = dict(quick=False, extras_source="new extras", interpolation={"steps": 2}, log=["c"])
    paths = []
    for name, rec in (("earlier", earlier), ("mmd", mmd), ("extras", extras)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(rec))
    merged = sd_flow_tables.merge_records(paths)
    assert merged["merged_from"] == ["run1.json", "run2.json", *map(str, paths)]
    assert merged["extras_source"] == "new extras" and merged["interpolation"] == {"steps": 2}
    assert merged["log"] == ["a", "b", "c"]
    assert merged["methods"] == {"grid": ["sd", "mmd"]}
    assert merged["method_statements"] == {"sd": "SD", "mmd": "MMD"}
    grid = merged["grid"]
    assert set(grid["counts"]) == {"sd", "mmd"} and grid["cost"]["cpu_s"] == 15.0
    assert all(set(r["convergence"]) == {"sd", "mmd"} for r in grid["rows"])
    assert grid["trials_by_method"] == {"sd": 5, "mmd": 5}
    md = sd_flow_tables.markdown_from_record(merged)
    assert "Conditions where every trial converged: SD 8/16 (paper 16), MMD 8/16 (paper 16)." in md
    # The paper converges everywhere; our odd rows only: the verdict agrees in 8 of 16.
    assert "is the paper's: SD 8/16, MMD 8/16." in md
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(mmd, grid=_table_record(["mmd"], threshold=0.06))))
    with pytest.raises(ValueError, match="geometry and threshold"):
        sd_flow_tables.merge_records([paths[0], other])
