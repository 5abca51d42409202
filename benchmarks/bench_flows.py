"""Minibatch-coupling cost of OT-CFM training: coupling time over the network step time.

For batch sizes 256 to 4096 (2-D points, the toy setting of the flow-matching
experiment) it times, each jit-compiled and measured apart from compilation:

- ``step``: one CFM train step (``ScoreMLP`` 3 x 128, AdamW, independent coupling: the
  network's forward, backward and update, nothing else);
- ``exact``: ``ExactOTCoupling().pair`` (squared-distance matrix on the device, then the
  host assignment through ``jax.pure_callback``);
- ``sinkhorn``: ``SinkhornCoupling(epsilon=0.05).pair`` (relative epsilon, OTT log-domain
  Sinkhorn, row-stratified draws from the plan).

The ratio ``coupling / step`` is the overhead factor an OT coupling adds to a training
step (Tong et al. report it as negligible at batch 256 on a GPU; on CPU it is not).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from benchmarks._common import measure, write_result
from wgdiff import flows
from wgdiff.nets import ScoreMLP
from wgdiff.train import create_train_state, make_train_step

FULL_BATCHES = (256, 512, 1024, 2048, 4096)
QUICK_BATCHES = (256, 512)


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
        rows.append(
            {
                "batch": batch,
                "step": step,
                "exact": exact,
                "sinkhorn": sinkhorn,
                "exact_over_step_wall": exact["wall_s"] / step["wall_s"],
                "sinkhorn_over_step_wall": sinkhorn["wall_s"] / step["wall_s"],
                "exact_over_step_cpu": exact["cpu_s"] / step["cpu_s"],
                "sinkhorn_over_step_cpu": sinkhorn["cpu_s"] / step["cpu_s"],
            }
        )
        row = rows[-1]
        print(
            f"batch {batch}: step {step['wall_s'] * 1e3:.1f} ms, exact x"
            f"{row['exact_over_step_wall']:.1f}, sinkhorn x{row['sinkhorn_over_step_wall']:.1f}",
            flush=True,
        )
    record = {
        "rows": rows,
        "batches": list(batches),
        "batches_planned": list(QUICK_BATCHES if quick else FULL_BATCHES),
        "quick": quick,
        "note": "medians of repeats after a compiling call; CPU, 2 cores shared with other "
        "agents (load average in machine). The exact assignment is scipy's "
        "linear_sum_assignment (O(n^3)) on the host.",
    }
    write_result("flows", record)
    return record


def headline(record: dict) -> dict:
    """Coupling time over network step time at the smallest and largest batch."""
    out = {}
    for row in (record["rows"][0], record["rows"][-1]):
        b = row["batch"]
        out[f"exact OT coupling / CFM step, batch {b}"] = row["exact_over_step_wall"]
        out[f"Sinkhorn coupling / CFM step, batch {b}"] = row["sinkhorn_over_step_wall"]
    return out


if __name__ == "__main__":
    import sys

    cap = [int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--max-batch=")]
    run(quick="--quick" in sys.argv, max_batch=cap[0] if cap else None)
