"""SD-flow benchmarks (Weber): chunked kernel sums vs dense, 10^5-particle memory, peers.

Measured side by side in one run:

- ``sd_step``: one ``score_difference`` at N = M = 1024 (d = 2 and d = 50), chunked
  (library defaults, and forced 256 x 256 blocks) vs one dense ``jnp`` evaluation
  of the same kernel sums (full ``(n, N)`` logits, softmax, matmul); target ratio <= 1.2.
- ``memory_1e5``: ``score_difference`` with N = M = n = 10^5, d = 2, in a fresh
  subprocess; peak resident memory (``ru_maxrss``) against the same subprocess
  doing a 1000-point call, target < 2 GiB.
- ``svgd_vs_numpy``: our jitted SVGD (median bandwidth, Liu & Wang's AdaGrad) vs a
  plain NumPy transcription of Liu & Wang's ``svgd.py``: time per step and the
  largest particle difference after 100 steps (ours in float64 for the comparison).
- ``sd_flow_vs_dense``: 100 steps of the kernel SD particle flow vs a dense ``jnp``
  flow (time per step) and vs a float64 NumPy flow (final particle difference).
- ``table1_wall``: wall time of Table 1 as measured by ``experiments/sd_flow_tables.py``
  (read from its results JSON, with the trials it ran).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import time_call, write_result
from wgdiff import sdflow

EXPERIMENT_JSON = Path(__file__).resolve().parents[1] / "experiments" / "results" / "sd_flow.json"


def dense_score_difference(z, target, source, sigma):
    """Reference: the same kernel sums with the full (n, N) logits in memory."""

    def denoise(points):
        logits = -sdflow.squared_distances(z, points) / (2 * sigma**2)
        return jax.nn.softmax(logits, axis=1) @ points

    return denoise(target) - denoise(source)


def bench_sd_step(quick: bool) -> list[dict]:
    rows = []
    n = 256 if quick else 1024
    for d in (2, 50):
        keys = jax.random.split(jax.random.key(d), 3)
        z, target, source = (jax.random.normal(k, (n, d)) for k in keys)
        sigma = jnp.float32(np.sqrt(d))
        dense = jax.jit(dense_score_difference)
        chunked = jax.jit(sdflow.score_difference)
        small = jax.jit(
            lambda a, b, c, s: sdflow.score_difference(a, b, c, s, z_chunk=256, point_chunk=256)
        )
        repeats = 5 if quick else 20
        t_dense = time_call(dense, z, target, source, sigma, repeats=repeats)
        t_chunked = time_call(chunked, z, target, source, sigma, repeats=repeats)
        t_small = time_call(small, z, target, source, sigma, repeats=repeats)
        err = float(
            jnp.max(jnp.abs(chunked(z, target, source, sigma) - dense(z, target, source, sigma)))
        )
        rows.append(
            dict(
                n=n, d=d, dense_s=t_dense, chunked_default_s=t_chunked,
                chunked_256x256_s=t_small, ratio_default=t_chunked / t_dense,
                ratio_256x256=t_small / t_dense, max_abs_diff=err,
                default_chunks=[sdflow.kernels.DEFAULT_Z_CHUNK,
                                sdflow.kernels.DEFAULT_POINT_CHUNK],
            )
        )  # fmt: skip
    return rows


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import jax, jax.numpy as jnp
    from wgdiff import sdflow
    n = int(sys.argv[1])
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    z = jax.random.normal(k1, (n, 2))
    target = jax.random.normal(k2, (n, 2)) + 3.0
    source = jax.random.normal(k3, (n, 2))
    start = time.perf_counter()
    f = jax.jit(sdflow.score_difference).lower(z, target, source, 0.5).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(f(z, target, source, 0.5))
    wall = time.perf_counter() - start
    print(json.dumps(dict(
        n=n, wall_s=wall, compile_s=compile_s, finite=bool(jnp.all(jnp.isfinite(out))),
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )))
    """
)


def _memory_run(n: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(n)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_memory(quick: bool) -> dict:
    n = 10_000 if quick else 100_000
    baseline = _memory_run(1000)
    big = _memory_run(n)
    dense_logits_gib = n * n * 4 / 2**30
    return dict(
        n=n, d=2, baseline_1000=baseline, run=big,
        peak_rss_gib=big["peak_rss_mib"] / 1024,
        under_2_gib=big["peak_rss_mib"] / 1024 < 2.0,
        dense_logits_would_need_gib=dense_logits_gib,
    )  # fmt: skip


def numpy_svgd(theta, dlnprob, n_iter, stepsize, alpha=0.9, fudge=1e-6):
    """Liu & Wang's svgd.py (SVGD.update with svgd_kernel, h = -1), float64 NumPy."""
    theta = np.copy(theta)
    historical_grad = 0.0
    for it in range(n_iter):
        lnpgrad = dlnprob(theta)
        sq = ((theta[:, None, :] - theta[None, :, :]) ** 2).sum(-1)
        h = np.median(sq)
        h = np.sqrt(0.5 * h / np.log(theta.shape[0] + 1))
        kxy = np.exp(-sq / h**2 / 2)
        dxkxy = -np.matmul(kxy, theta)
        sumkxy = np.sum(kxy, axis=1)
        for i in range(theta.shape[1]):
            dxkxy[:, i] = dxkxy[:, i] + np.multiply(theta[:, i], sumkxy)
        dxkxy = dxkxy / (h**2)
        grad_theta = (np.matmul(kxy, lnpgrad) + dxkxy) / theta.shape[0]
        if it == 0:
            historical_grad = historical_grad + grad_theta**2
        else:
            historical_grad = alpha * historical_grad + (1 - alpha) * (grad_theta**2)
        adj_grad = np.divide(grad_theta, fudge + np.sqrt(historical_grad))
        theta = theta + stepsize * adj_grad
    return theta


def _ours_svgd(score, n_iter, stepsize):
    def run(theta):
        def body(carry, _):
            x, hist = carry
            g = sdflow.svgd_direction(x, score)
            disp, hist = sdflow.adagrad_step(g, hist, stepsize)
            return (x + disp, hist), None

        (x, _), _ = jax.lax.scan(body, (theta, jnp.zeros_like(theta)), None, length=n_iter)
        return x

    return jax.jit(run)


def bench_svgd(quick: bool) -> dict:
    n, d = (128, 2) if quick else (512, 2)
    n_iter = 20 if quick else 100
    mean = np.array([1.0, -1.0])
    precision = np.array([[2.0, 0.5], [0.5, 1.0]])
    theta0 = np.random.default_rng(0).normal(size=(n, d)) * 2.0 - 3.0
    np_score = lambda x: -(x - mean) @ precision
    jnp_score = lambda x: -(x - jnp.asarray(mean, x.dtype)) @ jnp.asarray(precision, x.dtype)
    start = time.perf_counter()
    ref = numpy_svgd(theta0, np_score, n_iter, 0.1)
    numpy_s = (time.perf_counter() - start) / n_iter
    ours32 = _ours_svgd(jnp_score, n_iter, 0.1)
    ours_s = time_call(ours32, jnp.asarray(theta0, jnp.float32), repeats=3) / n_iter
    with jax.enable_x64(True):
        ours64 = np.asarray(_ours_svgd(jnp_score, n_iter, 0.1)(jnp.asarray(theta0)))
    ours32_out = np.asarray(ours32(jnp.asarray(theta0, jnp.float32)))
    return dict(
        n=n, d=d, steps=n_iter, numpy_s_per_step=numpy_s, ours_s_per_step=ours_s,
        speedup=numpy_s / ours_s,
        max_abs_diff_float64=float(np.max(np.abs(ours64 - ref))),
        max_abs_diff_float32=float(np.max(np.abs(ours32_out - ref))),
        particle_scale=float(np.max(np.abs(ref))),
    )  # fmt: skip


def numpy_sd_flow(y, target, sigma, eta, n_iter):
    """Dense float64 NumPy SD flow, z = y (no noise), SGD: y <- y + eta (D_p(y) - D_q(y))."""

    def denoise(z, x):
        logits = -((z[:, None] - x[None]) ** 2).sum(-1) / (2 * sigma**2)
        w = np.exp(logits - logits.max(1, keepdims=True))
        return (w @ x) / w.sum(1, keepdims=True)

    for _ in range(n_iter):
        y = y + eta * (denoise(y, target) - denoise(y, y))
    return y


def bench_sd_flow(quick: bool) -> dict:
    n, d = (256, 2) if quick else (1024, 2)
    n_iter = 20 if quick else 100
    rng = np.random.default_rng(1)
    target = rng.normal(size=(n, d)) * 0.5 + 3.0
    y0 = rng.normal(size=(n, d))
    sigma = 0.7
    flow = sdflow.particle_flow("sd", n_iter)
    cond = sdflow.FlowConditions.create(sigma2_const=sigma**2, step_size=0.1)

    def ours(y, tgt):
        state = flow.init(jax.random.key(0), y, cond)
        return sdflow.run_particle_flow(flow, state, tgt, n_iter)[0].particles

    def dense(y, tgt):
        s = jnp.sqrt(jnp.float32(np.float32(sigma**2)))

        def body(x, _):
            return x + jnp.float32(0.1) * dense_score_difference(x, tgt, x, s), None

        return jax.lax.scan(body, y, None, length=n_iter)[0]

    ours_j, dense_j = jax.jit(ours), jax.jit(dense)
    y32, t32 = jnp.asarray(y0, jnp.float32), jnp.asarray(target, jnp.float32)
    t_ours = time_call(ours_j, y32, t32, repeats=3) / n_iter
    t_dense = time_call(dense_j, y32, t32, repeats=3) / n_iter
    ref = numpy_sd_flow(y0, target, float(np.sqrt(np.float32(sigma**2))), 0.1, n_iter)
    with jax.enable_x64(True):
        ours64 = np.asarray(jax.jit(ours)(jnp.asarray(y0), jnp.asarray(target)))
    return dict(
        n=n, d=d, steps=n_iter, ours_s_per_step=t_ours, dense_jnp_s_per_step=t_dense,
        ratio=t_ours / t_dense,
        max_abs_diff_vs_numpy_float64=float(np.max(np.abs(ours64 - ref))),
        max_abs_diff_float32=float(np.max(np.abs(np.asarray(ours_j(y32, t32)) - ref))),
    )  # fmt: skip


def table1_wall() -> dict:
    if not EXPERIMENT_JSON.exists():
        return dict(available=False, note="run experiments/sd_flow_tables.py first")
    rec = json.loads(EXPERIMENT_JSON.read_text())
    grid = rec.get("grid", {})
    return dict(
        available="wall_s" in grid, wall_s=grid.get("wall_s"), timings_s=grid.get("timings_s"),
        trials=rec.get("config", {}).get("trials"), steps=rec.get("config", {}).get("steps"),
        source=str(EXPERIMENT_JSON.relative_to(EXPERIMENT_JSON.parents[2])),
        note="measured by the experiment run (Table 1 = 16 conditions x 3 methods x trials)",
    )  # fmt: skip


def run(quick: bool = False) -> dict:
    record = dict(
        quick=quick,
        sd_step=bench_sd_step(quick),
        memory_1e5=bench_memory(quick),
        svgd_vs_numpy=bench_svgd(quick),
        sd_flow_vs_dense=bench_sd_flow(quick),
        table1_wall=table1_wall(),
    )
    write_result("sdflow_quick" if quick else "sdflow", record)
    return record


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
