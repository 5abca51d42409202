"""Core benchmarks: scan-sampler overhead, diffrax vs scan at equal NFE, train steps per second.

Sampler overhead = time(euler_maruyama, N steps) / (N x time of one ScoreMLP forward pass on
the same batch); 1.0 means the sampler adds nothing to the network calls (target <= 1.15).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import time_call, write_result
from wgdiff.losses import dsm_objective
from wgdiff.nets import ScoreMLP
from wgdiff.samplers import diffrax_solve, euler_maruyama, probability_flow
from wgdiff.sde import VPSDE
from wgdiff.train import create_train_state, make_train_step


def _model(width=128, depth=4):
    model = ScoreMLP(features=(width,) * depth, activation=jax.nn.silu)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.zeros((1,)))
    return model, params


def sampler_overhead(batch: int, n_steps: int, repeats: int) -> dict:
    model, params = _model()
    score_fn = functools.partial(model.apply, params)
    sde = VPSDE()
    x = jax.random.normal(jax.random.key(1), (batch, 2))
    t = jnp.full((batch,), 0.5)
    forward = jax.jit(model.apply)
    run_em = lambda key: euler_maruyama(key, sde, score_fn, (batch, 2), n_steps)
    run_pf = lambda key: probability_flow(key, sde, score_fn, (batch, 2), n_steps)
    # Interleaved so that load from other processes hits all three alike; medians of repeats.
    t_forward, t_em, t_pf = [], [], []
    for r in range(repeats):
        t_forward.append(time_call(forward, params, x, t, repeats=n_steps, warmup=1 if r else 3))
        t_em.append(time_call(run_em, jax.random.key(r), repeats=1))
        t_pf.append(time_call(run_pf, jax.random.key(r), repeats=1))
    t_forward, t_em, t_pf = (float(np.median(v)) for v in (t_forward, t_em, t_pf))
    return {
        "batch": batch,
        "n_steps": n_steps,
        "forward_seconds": t_forward,
        "euler_maruyama_seconds": t_em,
        "probability_flow_euler_seconds": t_pf,
        "em_overhead_ratio": t_em / (n_steps * t_forward),
        "pf_overhead_ratio": t_pf / (n_steps * t_forward),
        "target_ratio": 1.15,
    }


def diffrax_vs_scan(batch: int, n_steps: int, repeats: int) -> dict:
    model, params = _model()
    score_fn = functools.partial(model.apply, params)
    sde = VPSDE()
    scan = lambda key: probability_flow(key, sde, score_fn, (batch, 2), n_steps)
    dfx = lambda key: diffrax_solve(
        key, sde, score_fn, (batch, 2), kind="ode", solver="euler", n_steps=n_steps
    )[0]
    t_scan = time_call(scan, jax.random.key(0), repeats=repeats)
    t_dfx = time_call(dfx, jax.random.key(0), repeats=repeats)
    same = float(jnp.max(jnp.abs(scan(jax.random.key(0)) - dfx(jax.random.key(0)))))
    return {
        "batch": batch,
        "nfe": n_steps,
        "scan_euler_seconds": t_scan,
        "diffrax_euler_seconds": t_dfx,
        "diffrax_over_scan": t_dfx / t_scan,
        "max_abs_difference": same,
    }


def train_throughput(batch: int, n_steps: int) -> dict:
    model, params = _model()
    step = make_train_step(dsm_objective(VPSDE(), model.apply))
    state = create_train_state(jax.random.key(0), params)
    data = jax.random.normal(jax.random.key(1), (batch, 2))
    state, metrics = step(state, data)
    jax.block_until_ready(metrics["loss"])
    start = time.perf_counter()
    for _ in range(n_steps):
        state, metrics = step(state, data)
    jax.block_until_ready(metrics["loss"])
    seconds = time.perf_counter() - start
    return {"batch": batch, "steps": n_steps, "steps_per_second": n_steps / seconds}


def run(quick: bool = False) -> dict:
    record = {
        "sampler_overhead": sampler_overhead(4096, 50 if quick else 500, 2 if quick else 5),
        "diffrax_vs_scan": diffrax_vs_scan(
            512 if quick else 4096, 20 if quick else 200, 2 if quick else 3
        ),
        "train": train_throughput(256, 20 if quick else 500),
        "quick": quick,
    }
    write_result("core_quick" if quick else "core", record)
    return record


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
