"""Core benchmarks: scan-sampler overhead, diffrax vs scan at equal NFE, train steps per second.

Sampler overhead = time(euler_maruyama, N steps) / (N x time of one ScoreMLP forward pass on
the same batch); 1.0 means the sampler adds nothing to the network calls (target <= 1.15,
judged on the median of interleaved repeats). Every timing keeps wall and CPU time, the first
(compiling) call apart and the spread of repeats (``benchmarks._common.measure``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import measure, target, write_result
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
    m_forward, m_em, m_pf = [], [], []
    for r in range(repeats):
        m_forward.append(measure(forward, params, x, t, repeats=n_steps, warmup=1 if r else 3))
        m_em.append(measure(run_em, jax.random.key(r), repeats=1))
        m_pf.append(measure(run_pf, jax.random.key(r), repeats=1))
    t_forward, t_em, t_pf = (
        float(np.median([m["wall_s"] for m in ms])) for ms in (m_forward, m_em, m_pf)
    )
    em_ratios = [
        e["wall_s"] / (n_steps * f["wall_s"]) for e, f in zip(m_em, m_forward, strict=True)
    ]
    return {
        "batch": batch,
        "n_steps": n_steps,
        "repeats": repeats,
        "forward_seconds": t_forward,
        "euler_maruyama_seconds": t_em,
        "probability_flow_euler_seconds": t_pf,
        "forward_cpu_seconds": float(np.median([m["cpu_s"] for m in m_forward])),
        "euler_maruyama_cpu_seconds": float(np.median([m["cpu_s"] for m in m_em])),
        "euler_maruyama_compile_seconds": m_em[0]["compile_wall_s"],
        "em_overhead_ratio": t_em / (n_steps * t_forward),
        "pf_overhead_ratio": t_pf / (n_steps * t_forward),
        "em_overhead_ratio_per_repeat": em_ratios,
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
    m_scan = measure(scan, jax.random.key(0), repeats=repeats)
    m_dfx = measure(dfx, jax.random.key(0), repeats=repeats)
    same = float(jnp.max(jnp.abs(scan(jax.random.key(0)) - dfx(jax.random.key(0)))))
    return {
        "batch": batch,
        "nfe": n_steps,
        "scan_euler_seconds": m_scan["wall_s"],
        "diffrax_euler_seconds": m_dfx["wall_s"],
        "diffrax_over_scan": m_dfx["wall_s"] / m_scan["wall_s"],
        "max_abs_difference": same,
        "timings": {"scan": m_scan, "diffrax": m_dfx},
    }


def train_throughput(batch: int, n_steps: int, repeats: int) -> dict:
    """Blocks of ``n_steps`` jitted train steps (the state carried from block to block)."""
    model, params = _model()
    step = make_train_step(dsm_objective(VPSDE(), model.apply))
    holder = {"state": create_train_state(jax.random.key(0), params)}
    data = jax.random.normal(jax.random.key(1), (batch, 2))

    def block():
        state = holder["state"]
        for _ in range(n_steps):
            state, metrics = step(state, data)
        holder["state"] = state
        return metrics["loss"]

    timing = measure(block, repeats=repeats)
    return {
        "batch": batch,
        "steps": n_steps,
        "steps_per_second": n_steps / timing["wall_s"],
        "cpu_seconds_per_step": timing["cpu_s"] / n_steps,
        "timing": timing,
    }


def run(quick: bool = False) -> dict:
    overhead = sampler_overhead(4096, 50 if quick else 500, 2 if quick else 5)
    record = {
        "sampler_overhead": overhead,
        "diffrax_vs_scan": diffrax_vs_scan(
            512 if quick else 4096, 20 if quick else 200, 2 if quick else 3
        ),
        "train": train_throughput(256, 20 if quick else 500, 2 if quick else 3),
        "quick": quick,
    }
    record["targets"] = targets(record)
    write_result("core", record)
    return record


def targets(record: dict) -> list[dict]:
    """The sampler-overhead goal, judged on the median of interleaved repeats.

    Also applied by the runner to records written before records carried targets.
    """
    overhead = record["sampler_overhead"]
    return [
        target(
            "Euler-Maruyama time / (N x net forward), median of interleaved repeats",
            overhead["em_overhead_ratio"],
            at_most=overhead.get("target_ratio", 1.15),
        )
    ]


def headline(r: dict) -> dict:
    """Sampler overhead ratios, diffrax vs scan, train steps per second."""
    so, dx, tr = r["sampler_overhead"], r["diffrax_vs_scan"], r["train"]
    return {
        f"Euler-Maruyama time / ({so['n_steps']} x net forward), batch {so['batch']}": so[
            "em_overhead_ratio"
        ],
        "probability-flow Euler time / (N x net forward)": so["pf_overhead_ratio"],
        f"diffrax Euler / scan Euler time at equal NFE = {dx['nfe']}": dx["diffrax_over_scan"],
        "diffrax vs scan samples, max abs difference": dx["max_abs_difference"],
        f"DSM train steps/s (ScoreMLP, batch {tr['batch']})": tr["steps_per_second"],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
