"""W2 between point clouds: wgdiff exact / Sinkhorn vs POT ``emd2`` / ``sinkhorn2`` and OTT.

For each (n, d): x ~ N(0, I_d), y ~ N(m, 0.25 I_d) with m = (1, -0.5, 0, ...), n points
each. In one process, side by side: POT's network simplex ``ot.emd2`` (the reference
value), ``wgdiff.metrics.exact_ot`` (certified), ``wgdiff.metrics.sinkhorn`` (debiased,
default epsilon rule), and at small n POT's ``ot.sinkhorn2`` (log domain) and OTT's
``sinkhorn_divergence`` at wgdiff's final epsilon. Every timing is a :func:`measure`
(first call apart, so JAX compilation is separate from the warm median; CPU time beside
wall time; load average). The Gaussian check (N(0, I) vs N(0, diag(4, 1/4)), closed
form W2 = 1.118) runs in a fresh subprocess, which also gives its peak RSS.

The development machine is shared (2 cores, several agents): wall times are inflated
and noisy; the ratios measured side by side in one process (wall and CPU) are the
meaningful numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import ot
from scipy.spatial.distance import cdist

from benchmarks._common import measure, target, write_result
from wgdiff import metrics

# Grid of the committed run: d = 2 at n = 500 to 8000 (the ratio points 2000,
# 4000, 8000), d = 16 and 64 at n = 2000; POT sinkhorn2 / OTT at n = 500 only (POT's
# NumPy log-domain Sinkhorn alone ran for minutes at n = 1000).
FULL_GRID = ((500, 2), (2000, 2), (4000, 2), (8000, 2), (2000, 16), (2000, 64))
QUICK_GRID = ((200, 2), (150, 16))
ENTROPIC_REFERENCE_MAX_N = 500
POT_SINKHORN_MAX_ITERATIONS = 1000
# The Gaussian check N(0, I) vs N(0, diag(4, 1/4)) in a fresh process (peak RSS). The
# issue asks for n = 1e5: one streamed pass there is 1e10 pair evaluations (~10 CPU-s
# here), and at n = 8000 this problem took 68 full iterations (~2.3 passes each; measured
# 2026-12-01 17:30), so 1e5 would be ~26 CPU-minutes, beyond the ~15 CPU-minute budget
# of the shared 2-core machine; the committed run uses n = 50000 (~7 CPU-minutes).
GAUSSIAN_N_FULL, GAUSSIAN_N_QUICK = 50_000, 1000
GAUSSIAN_W2 = float(np.sqrt(1.25))  # (2 - 1)^2 + (1/2 - 1)^2 = 1.25


def _clouds(n: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    shift = np.zeros(d)
    shift[:2] = (1.0, -0.5)
    return rng.normal(size=(n, d)), 0.5 * rng.normal(size=(n, d)) + shift


def _pot_emd2(x, y):
    w = np.full(len(x), 1.0 / len(x))
    return float(ot.emd2(w, w, cdist(x, y, "sqeuclidean"), numItermax=10**8))


def _repeats(n: int) -> int:
    return 3 if n <= 1000 else 1


def _row(n: int, d: int) -> dict:
    x, y = _clouds(n, d, seed=n + d)
    row = {"n": n, "d": d, "load_average_1m": os.getloadavg()[0]}
    reps = _repeats(n)
    # Each solver's value comes from its first timed call (no extra untimed solve).
    last = {}

    def keep(name, fn):
        def call():
            last[name] = fn(x, y)
            return last[name]

        return call

    pot_timing = measure(keep("pot", _pot_emd2), repeats=reps)
    reference = last["pot"]
    row["pot_emd2"] = {"value_w2": float(np.sqrt(reference)), **pot_timing}

    exact_timing = measure(keep("exact", metrics.exact_ot), repeats=reps)
    exact = last["exact"]
    row["exact"] = {
        "relative_error_w2sq": abs(exact.cost - reference) / reference,
        "certified": exact.certificate["certified"],
        "max_violation": exact.certificate["max_violation"],
        "rounds": exact.certificate["rounds"],
        "candidate_edges": exact.certificate["candidate_edges"],
        "phase_seconds": exact.certificate.get("seconds"),
        **exact_timing,
    }
    row["exact_over_pot_wall"] = row["exact"]["wall_s"] / row["pot_emd2"]["wall_s"]
    row["exact_over_pot_cpu"] = row["exact"]["cpu_s"] / row["pot_emd2"]["cpu_s"]

    sinkhorn_timing = measure(keep("sinkhorn", metrics.sinkhorn), repeats=reps)
    out = last["sinkhorn"]
    value = float(np.sqrt(max(float(out.divergence), 0.0)))
    eps = float(out.epsilon)
    row["sinkhorn"] = {
        "value_w2": value,
        "relative_error_w2": abs(value - np.sqrt(reference)) / np.sqrt(reference),
        "converged": bool(out.converged),
        "epsilon": eps,
        "iterations": int(out.iterations),
        "coarse_iterations": int(out.coarse_iterations),
        "marginal_errors": [float(e) for e in out.marginal_errors],
        "gap": float(out.gap),
        **sinkhorn_timing,
    }
    row["sinkhorn_over_pot_wall"] = row["sinkhorn"]["wall_s"] / row["pot_emd2"]["wall_s"]
    row["sinkhorn_over_pot_cpu"] = row["sinkhorn"]["cpu_s"] / row["pot_emd2"]["cpu_s"]

    if n <= ENTROPIC_REFERENCE_MAX_N:
        w = np.full(n, 1.0 / n)
        cost = cdist(x, y, "sqeuclidean")

        def pot_sinkhorn():
            return float(
                ot.sinkhorn2(
                    w, w, cost, eps, method="sinkhorn_log", numItermax=POT_SINKHORN_MAX_ITERATIONS
                )
            )

        row["pot_sinkhorn2_same_eps"] = {
            "value_ot_eps": pot_sinkhorn(),
            "wgdiff_ot_eps": float(metrics.sinkhorn(x, y, epsilon=eps, debias=False).divergence),
            **measure(pot_sinkhorn, repeats=1),
        }
        try:
            from ott.geometry import pointcloud
            from ott.tools import sinkhorn_divergence

            def ott_divergence():
                return sinkhorn_divergence.sinkhorn_divergence(
                    pointcloud.PointCloud, x, y, epsilon=eps
                )[0]

            row["ott_sinkhorn_divergence_same_eps"] = {
                "value_w2": float(np.sqrt(max(float(ott_divergence()), 0.0))),
                **measure(ott_divergence, repeats=1),
            }
        except Exception as err:  # OTT is optional here; record why it is missing
            row["ott_sinkhorn_divergence_same_eps"] = {"error": repr(err)}
    ex, sk = row["exact"], row["sinkhorn"]
    print(
        f"n={n} d={d}: POT {row['pot_emd2']['wall_s']:.2f}s exact {ex['wall_s']:.2f}s "
        f"(err {ex['relative_error_w2sq']:.1e}, certified {ex['certified']}) "
        f"sinkhorn {sk['wall_s']:.2f}s (err {sk['relative_error_w2']:.1e}, "
        f"converged {sk['converged']}) load {row['load_average_1m']:.1f}",
        flush=True,
    )
    return row


_GAUSSIAN_SCRIPT = """
import json, os, resource, sys, time
import numpy as np
from wgdiff import metrics
def peak_rss_gib():
    # VmHWM: peak RSS of this process image. ru_maxrss is not used: Linux carries the
    # parent's peak across fork/exec into it (a 3.1 GiB benchmark parent showed up as
    # the child's peak in the 2026-12-01 record).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
n = int(sys.argv[1])
rng = np.random.default_rng(0)
x = rng.normal(size=(n, 2)); y = rng.normal(size=(n, 2)) * np.sqrt([4.0, 0.25])
c0, w0 = time.process_time(), time.perf_counter()
out = metrics.sinkhorn(x, y)
value = float(np.sqrt(max(float(out.divergence), 0.0)))
print(json.dumps({
    "n": n, "d": 2, "value_w2": value, "epsilon": float(out.epsilon),
    "iterations": int(out.iterations), "coarse_iterations": int(out.coarse_iterations),
    "converged": bool(out.converged),
    "marginal_errors": [float(e) for e in out.marginal_errors],
    "cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
    "peak_rss_gib": peak_rss_gib(),
    "load_average_1m_end": os.getloadavg()[0],
}))
"""


def _gaussian_check(n: int) -> dict:
    """Debiased Sinkhorn (default rule, streamed) between N(0, I) and N(0, diag(4, 1/4))
    samples in a fresh process: the value against the closed form and the peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", _GAUSSIAN_SCRIPT, str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["closed_form_w2"] = GAUSSIAN_W2
    row["relative_error_w2"] = abs(row["value_w2"] - GAUSSIAN_W2) / GAUSSIAN_W2
    print(f"gaussian check: {row}", flush=True)
    return row


def run(quick: bool = False) -> dict:
    grid = QUICK_GRID if quick else FULL_GRID
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    # the Gaussian check first: the longest single solve, so a run that cannot
    # afford it shows that at its start
    gaussian = _gaussian_check(GAUSSIAN_N_QUICK if quick else GAUSSIAN_N_FULL)
    rows = [_row(n, d) for n, d in grid]
    targets = []
    for row in rows:
        if row["d"] == 2 and row["n"] >= 4000:
            targets.append(
                target(f"exact / POT wall at n={row['n']}", row["exact_over_pot_wall"], at_most=1.0)
            )
            targets.append(
                target(
                    f"Sinkhorn / POT exact wall at n={row['n']}",
                    row["sinkhorn_over_pot_wall"],
                    at_most=0.3,
                )
            )
        if row["d"] == 2 and row["n"] == 4000:
            targets.append(
                target(
                    f"Sinkhorn rel. error at n={row['n']}",
                    row["sinkhorn"]["relative_error_w2"],
                    at_most=5e-3,
                )
            )
    n = gaussian["n"]
    targets.append(
        target(
            f"Gaussian check rel. error vs closed form at n={n}",
            gaussian["relative_error_w2"],
            at_most=0.02,
        )
    )
    label = f"Gaussian check peak RSS GiB at n={n}"
    targets.append(target(label, gaussian["peak_rss_gib"], at_most=2.0))
    record = {
        "quick": quick,
        "description": (
            "W2 between x ~ N(0, I_d) and y ~ N((1, -0.5, 0..), 0.25 I_d), n points each: "
            "wgdiff exact_ot (certified, float64) and debiased sinkhorn (float32, default "
            "epsilon rule, Anderson steps at the target; dense cost matrices up to 1024^2, "
            "streamed above from a 1024-point multiscale start) vs POT emd2 "
            "(reference) and, at n <= 500, POT sinkhorn2 / OTT sinkhorn_divergence at the "
            "same epsilon; one process, side by side. Gaussian check: debiased Sinkhorn "
            "between N(0, I) and N(0, diag(4, 1/4)) samples vs the closed form W2 = 1.118, "
            "in a fresh process (peak RSS)."
        ),
        "machine_note": (
            "shared 2-core machine, ~5 agents and the lead's test runs: wall times are "
            "inflated and noisy (load average in every row); CPU seconds are steadier"
        ),
        "cut_from_the_issue_grid": (
            f"the Gaussian check is run at n = {n}; exact and Sinkhorn timings above "
            "n = 8000 (exact n = 1e5 in d = 2 not measured); d = 16 / 64 "
            "only at n = 2000; POT sinkhorn2 / OTT only at n = 500"
        ),
        "rows": rows,
        "gaussian_check": gaussian,
        "targets": targets,
        "total_wall_s": time.perf_counter() - start_wall,
        "total_cpu_s": time.process_time() - start_cpu,
    }
    write_result("w2", record)
    return record


def headline(record: dict) -> dict:
    """n: exact / POT and Sinkhorn / POT wall ratios, errors (for the runner's table)."""
    out = {}
    for row in record["rows"]:
        key = f"n={row['n']} d={row['d']}"
        out[f"{key}: exact/POT, Sinkhorn/POT wall"] = (
            f"{row['exact_over_pot_wall']:.2f} / {row['sinkhorn_over_pot_wall']:.2f}"
        )
        errors = row["exact"]["relative_error_w2sq"], row["sinkhorn"]["relative_error_w2"]
        out[f"{key}: rel. err exact, Sinkhorn"] = f"{errors[0]:.1e} / {errors[1]:.1e}"
    gauss = record.get("gaussian_check")
    if gauss:
        out[f"Gaussian check n={gauss['n']}: W2 (closed form 1.118), peak RSS"] = (
            f"{gauss['value_w2']:.4f} ({gauss['relative_error_w2']:.1e}), "
            f"{gauss['peak_rss_gib']:.2f} GiB"
        )
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args().quick)
