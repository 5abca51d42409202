"""W2 between 2-D point clouds: wgdiff exact and Sinkhorn vs POT's exact ``ot.emd2``.

For each n, x ~ N(0, I_2) and y ~ N((1, -0.5), 0.25 I_2), n points each. POT's
network simplex gives the reference value; we report each wgdiff method's relative
error and its wall and CPU time, side by side, in one run. The exact column stops
where the n^3 extrapolation of the last measured assignment CPU time exceeds
``EXACT_BUDGET_CPU_S`` (recorded as skipped, with the prediction). CPU time, not
wall time, drives that decision so that load from other processes does not.

Timings on a shared machine are noisy: the CPU seconds (all threads of this
process) are the steadier number, and the load average is recorded with each row.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
import ot
from scipy.spatial.distance import cdist

from benchmarks._common import write_result
from wgdiff import metrics

FULL_SIZES = (500, 1000, 2000, 4000, 8000)
QUICK_SIZES = (200, 500)
EXACT_BUDGET_CPU_S = 240.0


def _timed(fn):
    """(result, wall seconds, CPU seconds) of one call, blocking on JAX results."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = jax.block_until_ready(fn())
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _clouds(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = 0.5 * rng.normal(size=(n, 2)) + np.array([1.0, -0.5])
    return x, y


def _pot_w2(x, y):
    n = len(x)
    weights = np.full(n, 1.0 / n)
    return float(np.sqrt(ot.emd2(weights, weights, cdist(x, y, "sqeuclidean"), numItermax=10**8)))


def run(quick: bool = False) -> dict:
    sizes = QUICK_SIZES if quick else FULL_SIZES
    rows = []
    last_exact = None  # (n, CPU seconds) of the last exact assignment measured
    for n in sizes:
        x, y = _clouds(n, seed=n)
        row = {"n": n, "d": 2, "load_average_1min": os.getloadavg()[0]}

        reference, wall, cpu = _timed(lambda x=x, y=y: _pot_w2(x, y))
        row["pot_emd2"] = {"value": reference, "wall_s": wall, "cpu_s": cpu}

        predicted = None if last_exact is None else last_exact[1] * (n / last_exact[0]) ** 3
        if predicted is not None and predicted > EXACT_BUDGET_CPU_S:
            row["exact"] = {
                "skipped": True,
                "reason": (
                    f"linear_sum_assignment predicted {predicted:.0f} CPU s (n^3 from "
                    f"{last_exact[1]:.1f} CPU s at n={last_exact[0]}) > budget "
                    f"{EXACT_BUDGET_CPU_S:.0f} CPU s"
                ),
            }
        else:
            value, wall, cpu = _timed(lambda x=x, y=y: metrics.w2(x, y, method="exact"))
            last_exact = (n, cpu)
            row["exact"] = {
                "value": value,
                "relative_error": abs(value - reference) / reference,
                "wall_s": wall,
                "cpu_s": cpu,
            }

        # first call includes jit compilation for this shape; for n <= 2000 a second,
        # warm call is timed too (at larger n it would double a minutes-long run)
        info, wall, cpu = _timed(lambda x=x, y=y: metrics.w2_with_info(x, y, method="sinkhorn"))
        sinkhorn = {
            "value": info["value"],
            "relative_error": abs(info["value"] - reference) / reference,
            "converged": info["converged"],
            "epsilon": info["epsilon"],
            "iterations_xy": info["iterations"],
            "stages": info["stages"],
            "first_call_wall_s": wall,
            "first_call_cpu_s": cpu,
        }
        if n <= 2000:
            _, wall, cpu = _timed(lambda x=x, y=y: metrics.w2(x, y, method="sinkhorn"))
            sinkhorn.update(warm_wall_s=wall, warm_cpu_s=cpu)
        row["sinkhorn"] = sinkhorn
        rows.append(row)
        print(
            f"n={n}: POT {reference:.6f} ({row['pot_emd2']['wall_s']:.2f} s), "
            f"exact {row['exact'].get('relative_error', 'skipped')}, "
            f"sinkhorn rel err {sinkhorn['relative_error']:.2e} "
            f"({sinkhorn['first_call_wall_s']:.2f} s, converged={sinkhorn['converged']})",
            flush=True,
        )

    record = {
        "quick": quick,
        "description": (
            "W2 (distance, not squared) between n-point clouds x ~ N(0, I_2), "
            "y ~ N((1, -0.5), 0.25 I_2): wgdiff exact (scipy linear_sum_assignment, "
            "float64) and debiased Sinkhorn (OTT-JAX, float32, default two-stage epsilon) "
            "vs POT ot.emd2 (network simplex) as reference"
        ),
        "exact_budget_cpu_s": EXACT_BUDGET_CPU_S,
        "rows": rows,
    }
    write_result("w2_quick" if quick else "w2", record)
    return record


if __name__ == "__main__":
    run(quick=False)
