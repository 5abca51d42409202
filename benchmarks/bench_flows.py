"""Minibatch-coupling cost of OT-CFM training: coupling time over the network step time.

For batch sizes 256 to 4096 (2-D points, the toy setting of the flow-matching
experiment) it times, each jit-compiled and measured apart from compilation:

- ``step``: one CFM train step (``ScoreMLP`` 3 x 128, AdamW, independent coupling: the
  network's forward, backward and update, nothing else);
- ``exact``: ``ExactOTCoupling().pair``, the OT engine's exact solver
  (``wgdiff.metrics.exact_assignment``: Sinkhorn potentials in the trace, then the
  certified sparse assignment on the host through ``jax.pure_callback``);
- ``host_lsa`` (up to batch ``LSA_MAX_BATCH``): the dense host assignment the coupling
  used before, SciPy's ``linear_sum_assignment`` (O(n^3)) on the NumPy cost matrix, as
  the reference the engine's solver must beat;
- ``sinkhorn``: ``SinkhornCoupling(epsilon=0.05).pair`` (relative epsilon,
  ``wgdiff.metrics.sinkhorn_log_plan`` log-domain Sinkhorn, row-stratified draws from
  the plan).

The ratio ``coupling / step`` is the overhead factor an OT coupling adds to a training
step (Tong et al. report it as negligible at batch 256 on a GPU; on CPU it is not).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from benchmarks._common import measure, write_result
from wgdiff import flows
from wgdiff.nets import ScoreMLP
from wgdiff.train import create_train_state, make_train_step

FULL_BATCHES = (256, 512, 1024, 2048, 4096)
QUICK_BATCHES = (256, 512)
# The dense reference costs ~9 CPU-s a call at 2048 on this machine (x8 per doubling).
LSA_MAX_BATCH = 2048


def _batch(batch: int):
    k0, k1 = jax.random.split(jax.random.key(batch))
    x0 = jax.random.normal(k0, (batch, 2))
    x1 = flows.standard_normal((2,))(k1, batch) * 0.5 + 2.0
    return x0, x1


def step_time(batch: int, repeats: int) -> dict:
    model = ScoreMLP(features=(128, 128, 128))
    params = model.init(jax.random.key(0), jnp.zeros((2, 2)), jnp.zeros(2))
    loss = flows.cfm_objective(
        model.apply, path=flows.LinearPath(), coupling=flows.IndependentCoupling()
    )
    step = make_train_step(loss, donate=False)
    state = create_train_state(jax.random.key(1), params)
    data = jnp.stack(_batch(batch), axis=1)
    return measure(lambda: step(state, data)[1]["loss"], repeats=repeats)


def coupling_time(coupling, batch: int, repeats: int) -> dict:
    x0, x1 = _batch(batch)
    pair = jax.jit(functools.partial(coupling.pair))
    key = jax.random.key(2)
    return measure(lambda: pair(key, x0, x1)[1], repeats=repeats)


def host_lsa_time(batch: int, repeats: int) -> dict:
    x0, x1 = (np.asarray(a, np.float64) for a in _batch(batch))

    def solve():
        cost = np.sum((x0[:, None, :] - x1[None, :, :]) ** 2, axis=-1)
        return linear_sum_assignment(cost)[1]

    return measure(solve, repeats=repeats)


def run(quick: bool = False, max_batch: int | None = None) -> dict:
    """Time every batch size (``max_batch`` caps them; the record lists what ran)."""
    rows = []
    batches = QUICK_BATCHES if quick else FULL_BATCHES
    batches = tuple(b for b in batches if max_batch is None or b <= max_batch)
    for batch in batches:
        repeats = 2 if quick else (3 if batch <= 1024 else 1)
        step = step_time(batch, repeats)
        exact = coupling_time(flows.ExactOTCoupling(), batch, repeats)
        sinkhorn = coupling_time(flows.SinkhornCoupling(epsilon=0.05), batch, repeats)
        lsa = host_lsa_time(batch, repeats) if batch <= LSA_MAX_BATCH else None
        rows.append(
            {
                "batch": batch,
                "step": step,
                "exact": exact,
                "sinkhorn": sinkhorn,
                "host_lsa": lsa,
                "host_lsa_over_exact_cpu": lsa["cpu_s"] / exact["cpu_s"] if lsa else None,
                "host_lsa_over_exact_wall": lsa["wall_s"] / exact["wall_s"] if lsa else None,
                "exact_over_step_wall": exact["wall_s"] / step["wall_s"],
                "sinkhorn_over_step_wall": sinkhorn["wall_s"] / step["wall_s"],
                "exact_over_step_cpu": exact["cpu_s"] / step["cpu_s"],
                "sinkhorn_over_step_cpu": sinkhorn["cpu_s"] / step["cpu_s"],
            }
        )
        row = rows[-1]
        lsa_text = f", host LSA / exact x{row['host_lsa_over_exact_cpu']:.1f}" if lsa else ""
        print(
            f"batch {batch}: step {step['cpu_s'] * 1e3:.1f} ms CPU, exact x"
            f"{row['exact_over_step_cpu']:.1f}, sinkhorn x{row['sinkhorn_over_step_cpu']:.1f}"
            f" (CPU ratios){lsa_text}",
            flush=True,
        )
    record = {
        "rows": rows,
        "batches": list(batches),
        "batches_planned": list(QUICK_BATCHES if quick else FULL_BATCHES),
        "quick": quick,
        "lsa_max_batch": LSA_MAX_BATCH,
        "exact_solver": "wgdiff.metrics.exact_assignment (the coupling's); host_lsa: "
        "scipy.optimize.linear_sum_assignment on the dense float64 cost (reference)",
        "note": "medians of repeats after a compiling call; CPU, 2 cores shared with other "
        "agents (load average in machine and per measurement): wall times are inflated by "
        "the load, CPU times are this process's (all threads).",
    }
    write_result("flows", record)
    return record


def headline(record: dict) -> dict:
    """Coupling time over network step time at the smallest and largest batch."""
    out = {}
    for row in (record["rows"][0], record["rows"][-1]):
        b = row["batch"]
        out[f"exact OT coupling / CFM step (CPU), batch {b}"] = row["exact_over_step_cpu"]
        out[f"Sinkhorn coupling / CFM step (CPU), batch {b}"] = row["sinkhorn_over_step_cpu"]
    return out


if __name__ == "__main__":
    import sys

    cap = [int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--max-batch=")]
    run(quick="--quick" in sys.argv, max_batch=cap[0] if cap else None)
