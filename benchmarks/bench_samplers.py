"""Solver engine benchmark: error vs NFE for every solver and grid, and per-step overhead.

Two problems, both on the default VP SDE:

(a) ``mixture``: a 3-mode Gaussian mixture in R^2 with its exact score;
(b) ``score_mlp``: the demo's ScoreMLP (4 x 128 SiLU, noise output, sigma^2-weighted DSM)
    trained briefly on two moons through ``wgdiff.train.fit_score_model`` (cached in the
    temp dir between runs).

Deterministic solvers: median and 90th percentile of ``|x - x_ref|`` over the samples,
``x_ref`` a tight adaptive solve of the probability-flow ODE from the same ``x_T``
(diffrax Tsit5, rtol = atol = 1e-6, per example; float32). Stochastic solvers: W2 of their
samples to fresh target draws, beside the two-sample floor (W2 between two target
draws of the same size). NFE in {5, 10, 20, 50, 100}: steps = NFE // nfe_per_step (at
least the solver's minimum).

Overhead: time of a 10-step solve at batch 4096 over (NFE x one ScoreMLP forward on the
same batch), medians of interleaved repeats (target <= 1.1 for every solver).

Cost notes (a 2-core machine shared by 8 agents, load average 20-40): every (solver,
grid, NFE) cell compiles its own scan, so the matrix is cut to fit ~40 minutes of wall
time. (a): every deterministic solver on the log-SNR grid at every NFE and on the uniform
and Karras grids at NFE 10 and 50; every stochastic solver on the uniform grid at every
NFE. (b): deterministic solvers on log-SNR at NFE 10, 20, 50, stochastic ones on uniform
at NFE 20 and 100; the net is trained for 1500 steps. ``DPMSolver(order=1)`` is left out
(it is DDIM, identically); the quadratic grid is exercised by the tests only. W2 is the
exact assignment distance on ``N_W2 = 2000`` points per side, not 8000: at 8000 points
one debiased-Sinkhorn W2 took over 10 minutes under this load, beyond the whole budget.
"""

from __future__ import annotations

import functools
import os
import pickle
import tempfile
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._common import measure, target, write_result
from wgdiff import metrics
from wgdiff.data import toy
from wgdiff.data.toy import GaussianMixture
from wgdiff.nets import ScoreMLP, ScoreModel
from wgdiff.samplers import (
    DDIM,
    Ancestral,
    ArrayGrid,
    Diffrax,
    DPMSolver,
    DPMSolverPP,
    EulerMaruyama,
    Heun,
    KarrasGrid,
    LogSNRGrid,
    PredictorCorrector,
    ProbabilityFlowEuler,
    ProbabilityFlowHeun,
    QuadraticGrid,
    ReverseDiffusion,
    UniformGrid,
    UniPC,
    sample,
)
from wgdiff.sde import VPSDE

NFES = (5, 10, 20, 50, 100)
N_DET = 1000
N_W2 = 2000
SDE = VPSDE()
DETERMINISTIC = {
    "pf-euler": ProbabilityFlowEuler(),
    "pf-heun": ProbabilityFlowHeun(),
    "ddim": DDIM(),
    "heun (EDM)": Heun(),
    "dpm-solver-2": DPMSolver(order=2),
    "dpm-solver-3": DPMSolver(order=3),
    "dpm++2s": DPMSolverPP(order=2, multistep=False),
    "dpm++3s": DPMSolverPP(order=3, multistep=False),
    "dpm++2m": DPMSolverPP(order=2),
    "dpm++3m": DPMSolverPP(order=3),
    "unipc-2": UniPC(order=2),
}
STOCHASTIC = {
    "euler-maruyama": EulerMaruyama(),
    "reverse-diffusion": ReverseDiffusion(),
    "pc (RD + Langevin)": PredictorCorrector(),
    "ancestral": Ancestral(),
    "ddim eta=1": DDIM(eta=1.0),
    "heun churn=40": Heun(churn=40.0),
    "dpm++2m-sde": DPMSolverPP(order=2, sde=True),
}
GRIDS = {
    "uniform": UniformGrid,
    "quadratic": QuadraticGrid,
    "logsnr": LogSNRGrid,
    "karras": KarrasGrid,
}


def mixture() -> GaussianMixture:
    """Three overlapping modes: the two-sample W2 floor is then stable (2% over draws)."""
    means = jnp.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    return GaussianMixture.isotropic(means, jnp.array([0.5, 0.5, 0.5]))


def n_steps_for(solver, nfe: int) -> int:
    return max(solver.min_steps, nfe // solver.nfe_per_step)


def trained_score_mlp(steps: int) -> tuple[ScoreModel, object, dict]:
    """The demo's net trained on two moons, cached in the temp dir: ``(model, params, info)``."""
    from wgdiff.train import fit_score_model

    net = ScoreMLP(features=(128,) * 4, activation=jax.nn.silu, time_scale=1000.0)
    data = toy.get("two_moons")(jax.random.key(0), 20_000)
    cache = Path(tempfile.gettempdir()) / f"wgdiff-bench-samplers-scoremlp-{steps}.pkl"
    info = {"train_steps": steps, "cache": str(cache)}
    if cache.exists():
        with cache.open("rb") as fh:
            params = pickle.load(fh)
        info["cached"] = True
    else:
        c0, w0 = time.process_time(), time.perf_counter()
        fit = fit_score_model(
            SDE,
            net,
            data,
            key=jax.random.key(1),
            n_steps=steps,
            batch_size=512,
            learning_rate=2e-3,
            output="noise",
            weighting="sigma2",
            mesh=None,
        )
        params = jax.device_get(fit.params)
        info.update(
            cached=False,
            train_wall_s=time.perf_counter() - w0,
            train_cpu_s=time.process_time() - c0,
            final_loss=float(fit.history[-1]["loss"]),
        )
        with cache.open("wb") as fh:
            pickle.dump(params, fh)
    # The net predicts -eps (std_scaled_apply, output="noise"): a ScoreModel of the score.
    from wgdiff.nets import std_scaled_apply

    model = ScoreModel.from_score(std_scaled_apply(net.apply, SDE), SDE, params)
    return model, params, info


def reference(model, x_T) -> tuple[jax.Array, dict]:
    res = sample(
        None,
        SDE,
        model,
        x_T.shape,
        Diffrax(diffrax.Tsit5(), 1e-6, 1e-6),
        ArrayGrid((SDE.T, 1e-3)),
        x_init=x_T,
    )
    return res.x, {"nfe": res.nfe, "success": res.stats["success"]}


def error_table(model, target_sampler, cells) -> dict:
    """Distances to the reference (deterministic) and W2 (stochastic) for each
    ``(grid, solver name, NFE)`` in ``cells``."""
    x_T = jax.random.normal(jax.random.key(10), (N_DET, 2))
    x_ref, ref_info = reference(model, x_T)
    n_w2 = N_W2
    floor = float(
        metrics.w2(
            target_sampler(jax.random.key(20), n_w2), target_sampler(jax.random.key(21), n_w2)
        )
    )
    w2_target = target_sampler(jax.random.key(22), n_w2)
    rows = []
    for grid_name, name, nfe in cells:
        solver = {**DETERMINISTIC, **STOCHASTIC}[name]
        grid = GRIDS[grid_name](n_steps_for(solver, nfe))
        c0 = time.process_time()
        row = {"solver": name, "grid": grid_name, "nfe_budget": nfe}
        if solver.stochastic:
            res = sample(jax.random.key(nfe), SDE, model, (n_w2, 2), solver, grid)
            row["w2"] = float(metrics.w2(res.x, w2_target, method="exact"))
        else:
            res = sample(None, SDE, model, x_T.shape, solver, grid, x_init=x_T)
            dist = np.linalg.norm(np.asarray(res.x - x_ref), axis=1)
            row.update(median=float(np.median(dist)), p90=float(np.quantile(dist, 0.9)))
        row.update(nfe=res.nfe, n_steps=res.stats["n_steps"], cpu_s=time.process_time() - c0)
        rows.append(row)
    return {"reference": ref_info, "w2_floor": floor, "n_w2": n_w2, "n_det": N_DET, "rows": rows}


def _solve_x(model, shape, solver, grid, key):
    return sample(key, SDE, model, shape, solver, grid).x


def overhead(model, net_apply, params, batch: int, n_steps: int, repeats: int) -> dict:
    """time(solve) / (NFE x time(one forward)) per solver, interleaved medians."""
    x = jax.random.normal(jax.random.key(3), (batch, 2))
    t = jnp.full((batch,), 0.5)
    forward = jax.jit(net_apply)
    out = {}
    for name, solver in {**DETERMINISTIC, **STOCHASTIC}.items():
        grid = LogSNRGrid(n_steps)
        run = functools.partial(_solve_x, model, (batch, 2), solver, grid)
        nfe = solver.nfe(n_steps)
        f_ms, s_ms = [], []
        for r in range(repeats):
            f_ms.append(measure(forward, params, x, t, repeats=nfe, warmup=1 if r else 3))
            s_ms.append(measure(run, jax.random.key(r), repeats=1))
        ratios = [s["wall_s"] / (nfe * f["wall_s"]) for s, f in zip(s_ms, f_ms, strict=True)]
        out[name] = {
            "nfe": nfe,
            "ratio": float(np.median(ratios)),
            "ratios": ratios,
            "forward_wall_s": float(np.median([m["wall_s"] for m in f_ms])),
            "forward_cpu_s": float(np.median([m["cpu_s"] for m in f_ms])),
            "solve_wall_s": float(np.median([m["wall_s"] for m in s_ms])),
            "solve_cpu_s": float(np.median([m["cpu_s"] for m in s_ms])),
            "compile_wall_s": s_ms[0]["compile_wall_s"],
            "load_average_1m": [m["load_average_1m"] for m in s_ms],
        }
    return {"batch": batch, "n_steps": n_steps, "grid": "logsnr", "repeats": repeats, **out}


def plot(record: dict, path: Path) -> None:
    """Top row: deterministic solvers (distance to the reference) per problem and grid;
    bottom row: stochastic solvers (W2, floor dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def panels(names):
        return [
            (problem, g)
            for problem in ("mixture", "score_mlp")
            for g in ("uniform", "logsnr", "karras")
            if any(
                r["grid"] == g and r["solver"] in names for r in record[problem]["errors"]["rows"]
            )
        ]

    rows_spec = [(DETERMINISTIC, "median", "median |x - x_ref| (PF ODE)"), (STOCHASTIC, "w2", "W2")]
    ncol = max(len(panels(names)) for names, _, _ in rows_spec)
    fig, axes = plt.subplots(2, ncol, figsize=(3.3 * ncol, 6.4), squeeze=False)
    for row, (names, key, label) in enumerate(rows_spec):
        cells = panels(names)
        for col in range(ncol):
            ax = axes[row, col]
            if col >= len(cells):
                ax.axis("off")
                continue
            problem, grid = cells[col]
            data = [r for r in record[problem]["errors"]["rows"] if r["grid"] == grid]
            for name in names:
                pts = [(r["nfe"], r[key]) for r in data if r["solver"] == name]
                if pts:
                    ax.loglog(*zip(*pts, strict=True), marker="o", ms=3, label=name)
            if key == "w2":
                ax.axhline(record[problem]["errors"]["w2_floor"], color="k", ls=":", lw=1)
            ax.set_title(f"{problem}, {grid} grid", fontsize=9)
            ax.set_xlabel("NFE")
            if col == 0:
                ax.set_ylabel(label)
        axes[row, len(cells) - 1].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(record: dict, problem: str = "mixture", grid: str = "logsnr") -> str:
    """Rows: solvers; columns: NFE. Deterministic (on ``grid``): median distance to the
    reference; stochastic (uniform grid): W2 to the target."""
    rows = [
        r
        for r in record[problem]["errors"]["rows"]
        if r["grid"] == (grid if r["solver"] in DETERMINISTIC else "uniform")
    ]
    nfes = sorted({r["nfe_budget"] for r in rows})
    head = "| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " | overhead |"
    lines = [head, "|" + "---|" * (len(nfes) + 2)]
    for name in {**DETERMINISTIC, **STOCHASTIC}:
        vals = {r["nfe_budget"]: r.get("median", r.get("w2")) for r in rows if r["solver"] == name}
        ratio = record["overhead"].get(name, {}).get("ratio", float("nan"))
        cells = " | ".join(f"{vals[n]:.4f}" for n in nfes)
        lines.append(f"| {name} | {cells} | {ratio:.2f} |")
    return "\n".join(lines)


def run(quick: bool = False) -> dict:
    c0, w0 = time.process_time(), time.perf_counter()
    load0 = os.getloadavg()
    mix = mixture()
    mix_model = ScoreModel.from_score(mix.score_fn(SDE), SDE)
    nfes = NFES[:2] if quick else NFES
    cross = NFES[1:2] if quick else (10, 50)
    det, sto = list(DETERMINISTIC), list(STOCHASTIC)
    # (a): every deterministic solver on log-SNR at every NFE, and on uniform and Karras at
    # two NFEs; every stochastic solver on uniform at every NFE.
    mix_cells = [("logsnr", s, n) for s in det for n in nfes]
    mix_cells += [(g, s, n) for g in ("uniform", "karras") for s in det for n in cross]
    mix_cells += [("uniform", s, n) for s in sto for n in nfes]
    record = {
        "quick": quick,
        "description": __doc__.split("\n\n")[0],
        "sde": repr(SDE),
        "nfes": list(nfes),
        "load_average_start": load0,
        "mixture": {"errors": error_table(mix_model, mix.sample, mix_cells)},
    }
    net_model, params, train_info = trained_score_mlp(200 if quick else 1500)
    moons = toy.get("two_moons")
    mlp_cells = [("logsnr", s, n) for s in det for n in (nfes if quick else (10, 20, 50))]
    mlp_cells += [("uniform", s, n) for s in sto for n in (nfes[-1:] if quick else (20, 100))]
    record["score_mlp"] = {
        "train": train_info,
        "errors": error_table(net_model, moons, mlp_cells),
    }
    net = ScoreMLP(features=(128,) * 4, activation=jax.nn.silu, time_scale=1000.0)
    record["overhead"] = overhead(
        net_model,
        net.apply,
        params,
        512 if quick else 4096,
        4 if quick else 10,
        2 if quick else 3,
    )
    ratios = {k: v["ratio"] for k, v in record["overhead"].items() if isinstance(v, dict)}
    record["targets"] = [
        target(f"overhead {k} (time / (NFE x forward))", v, at_most=1.1) for k, v in ratios.items()
    ]
    record["run_wall_s"] = time.perf_counter() - w0
    record["run_cpu_s"] = time.process_time() - c0
    record["load_average_end"] = os.getloadavg()
    record["table_mixture_logsnr"] = markdown_table(record)
    path = write_result("samplers", record)
    plot(record, path.with_suffix(".png"))
    return record


def headline(r: dict) -> dict:
    """DPM-Solver++(2M) and PF-Heun errors on the mixture, worst overhead (wall and CPU)."""
    rows = r["mixture"]["errors"]["rows"]
    pick = lambda s, g, n: next(
        (x.get("median") for x in rows if (x["solver"], x["grid"], x["nfe_budget"]) == (s, g, n)),
        None,
    )
    ratios = {k: v["ratio"] for k, v in r["overhead"].items() if isinstance(v, dict)}
    worst = max(ratios, key=ratios.get)
    out = {}
    for n in (10, 100):
        out[f"dpm++2m logsnr, NFE {n}: median |x - x_ref|"] = pick("dpm++2m", "logsnr", n)
    for n in (10, 50):
        out[f"pf-heun uniform, NFE {n}: median |x - x_ref|"] = pick("pf-heun", "uniform", n)
    out[f"worst overhead ratio, wall ({worst})"] = ratios[worst]
    # CPU time: the wall ratio is dominated by the machine's load when it is shared.
    cpu = {
        k: v["solve_cpu_s"] / (v["nfe"] * v["forward_cpu_s"])
        for k, v in r["overhead"].items()
        if isinstance(v, dict)
    }
    worst_cpu = max(cpu, key=cpu.get)
    out[f"worst overhead ratio, CPU time ({worst_cpu})"] = cpu[worst_cpu]
    return out


if __name__ == "__main__":
    import sys

    rec = run(quick="--quick" in sys.argv)
    print(rec["table_mixture_logsnr"])
