"""The WPO experiment's --quick run: writes a complete JSON and the figures."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

# Paper reproductions (even --quick) take minutes of CPU: run with `pytest -m slow`.
pytestmark = pytest.mark.slow

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "wpo_kernel.py"
_SPEC = importlib.util.spec_from_file_location("wpo_kernel", _PATH)
wpo_kernel = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(wpo_kernel)


def test_wpo_kernel_quick(tmp_path):
    wpo_kernel.main(["--quick", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "wpo_kernel.json").read_text())
    assert res["config"]["quick"] is True
    curves = res["fig2"]["curves"]
    for model in ("wpo", "dsm"):
        assert len(curves[model]) == wpo_kernel.QUICK["n_checkpoints"]
        for row in curves[model]:
            assert math.isfinite(row["w2"]) and math.isfinite(row["heldout_ll_subset"])
        seconds = [r["train_seconds"] for r in curves[model]]
        assert seconds == sorted(seconds)
    assert res["fig2"]["reach"]["first_to_w2_level"] in ("wpo", "dsm")
    mem = res["fig6"][0]["empirical"]
    # Smaller early-stopping variance puts the reverse-SDE samples closer to training points:
    # the memorization ratio must fall as eps falls.
    ratios = [r["nn_ratio"] for r in sorted(mem, key=lambda r: -r["eps_variance"])]
    assert all(a > b for a, b in zip(ratios, ratios[1:], strict=False))
    assert math.isfinite(res["fig6"][0]["wpo"]["nn_ratio_direct_samples"])
    assert math.isfinite(res["fig4"]["heldout_ll"])
    assert res["fig5"]["std_major_median"] >= res["fig5"]["std_minor_median"] > 0
    for path in res["figures"]:
        assert (tmp_path / path.split("/")[-1]).stat().st_size > 0
