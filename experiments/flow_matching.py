"""Flow matching with optimal-transport couplings against the DSM probability flow.

On 2-D toy problems -- standard normal to eight Gaussians, two moons and the 25-Gaussian
grid, and data to data (two moons to eight Gaussians) -- trains the same MLP as

- ``dsm_pf``: a DSM score (VP SDE, noise parameterization), sampled by its
  probability-flow ODE;
- ``cfm``: conditional flow matching, straight path, independent coupling (I-CFM,
  the first rectified flow);
- ``ot_cfm``: the same with the exact minibatch OT coupling (Tong et al.);
- ``sinkhorn_cfm``: the same with pairs drawn from the entropic plan;
- ``rectified_reflow``: ``cfm`` after one reflow (Liu et al.): retrained, from its own
  parameters, on ``(x0, Phi(x0))`` pairs of the ``cfm`` flow;
- ``vuong_wgf``: Vuong et al.'s WGF flow matching (``wgdiff.losses.flow_matching``,
  its default ``"uniform_score"`` weight: uniform in time in score units), sampled by
  integrating its velocity;
- ``vuong_wgf_velocity``: the same loss with the ``"g4_over_4"`` weight (the plain
  velocity regression, uniform in time in the units the ODE integrates), a diagnosis of
  the poor ``vuong_wgf`` arm,

and reports, per task and method, W2 to held-out target data after Euler (and Heun)
integration at 1, 2, 4, 10 and 100 velocity evaluations; the transport certificate of
the flow (kinetic energy along its own trajectories over W2^2 between the source
sample and its image, straightness, coupling ratio; ``wgdiff.flows.certificates``);
and training wall and CPU time. A figure shows trajectories.

DSM and WGF need a standard normal source, so they are not run on the data-to-data
task. The couplings are those of ``wgdiff.flows`` (exact assignment and entropic plan
from the OT engine, ``wgdiff.metrics``). "Gaussian -> 8 Gaussians" is the
``eight_gaussians`` task (its source is the standard normal) and is reported once.

Run: ``python experiments/flow_matching.py [--quick] [--out DIR]``; a full run in parts:
``--tasks A,B --part a`` (optionally ``--methods``), ..., then ``--merge a b ...``
(methods of one task from several parts are merged; the data of a task depend only on
the seed and the task).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff import flows
from wgdiff.data import toy
from wgdiff.losses.flow_matching import velocity_to_score, wgf_flow_matching_objective
from wgdiff.metrics import w2
from wgdiff.nets import ScoreMLP
from wgdiff.sde import VPSDE
from wgdiff.train import dataset_sampler
from wgdiff.train.recipe import fit_score_model

RESULTS = Path(__file__).resolve().parent / "results"
SDE = VPSDE(beta_min=0.1, beta_max=20.0)
EPS = 1e-3
# task -> (source, target); "gaussian" is N(0, I)
TASKS = {
    "eight_gaussians": ("gaussian", "eight_gaussians"),
    "moons_to_eight_gaussians": ("two_moons", "eight_gaussians"),
    "two_moons": ("gaussian", "two_moons"),
    "grid25": ("gaussian", "grid25"),
}
ALIASES = {"gaussian_to_eight_gaussians": "eight_gaussians"}
METHODS = (
    "dsm_pf",
    "cfm",
    "ot_cfm",
    "sinkhorn_cfm",
    "rectified_reflow",
    "vuong_wgf",
    "vuong_wgf_velocity",
)
# The first six methods take their keys from one split of the task key (the committed
# eight_gaussians / moons records were run so); methods added later fold their index
# into the task key, so adding one changes neither the data nor the other methods.
SPLIT_METHODS = METHODS[:6]
GAUSSIAN_ONLY = ("dsm_pf", "vuong_wgf", "vuong_wgf_velocity")
WGF_WEIGHTING = {"vuong_wgf": "uniform_score", "vuong_wgf_velocity": "g4_over_4"}
NFES = (1, 2, 4, 10, 100)
HEUN_NFES = (2, 4, 10)
SINKHORN_EPSILON = 0.05  # relative to the batch's mean squared distance
CERTIFICATE_STEPS = 50  # Heun, 100 NFE
REFLOW_STEPS = 50  # Heun, 100 NFE per generated pair

FULL = {
    "tasks": tuple(TASKS),
    "steps": 2000,
    "reflow_steps": 1000,
    "n_pairs": 8000,
    "n_eval": 600,
    "n_figure": 96,
}
QUICK = {
    "tasks": ("eight_gaussians", "moons_to_eight_gaussians"),
    "steps": 150,
    "reflow_steps": 100,
    "n_pairs": 1024,
    "n_eval": 256,
    "n_figure": 32,
}
BATCH = 256
DSM_OUTPUT = "noise"
# EMA over ~100 steps: with 0.999 the average still holds the first thousand steps of a
# 3000-step run (measured: DSM PF W2 7.2 with 0.999 vs 0.68 with 0.99 at 1500 steps).
EMA_DECAY = 0.99
MLP = {"features": (128, 128, 128)}


def sampler(name: str):
    if name == "gaussian":
        return flows.standard_normal((2,))
    return toy.get(name)


def clock():
    return time.perf_counter(), time.process_time()


def elapsed(start) -> dict:
    wall, cpu = clock()
    return {"wall_s": wall - start[0], "cpu_s": cpu - start[1]}


def train(method, key, source, target, cfg, init_params=None, pairs=None):
    """Fit one model; returns ``(params, apply, history)``."""
    model = ScoreMLP(**MLP)
    k_init, k_fit = jax.random.split(key)
    params = model.init(k_init, jnp.zeros((2, 2)), jnp.full((2,), 0.5))
    if init_params is not None:
        params = init_params
    steps = cfg["reflow_steps"] if pairs is not None else cfg["steps"]
    common = dict(
        key=k_fit, n_steps=steps, batch_size=BATCH, params=params, mesh=None, ema_decay=EMA_DECAY
    )
    if method == "dsm_pf":
        fit = fit_score_model(
            SDE,
            model,
            lambda k: target(k, BATCH),
            output=DSM_OUTPUT,
            weighting="sigma2",
            t_eps=EPS,
            **common,
        )
    elif method in WGF_WEIGHTING:
        objective = functools.partial(
            wgf_flow_matching_objective, eps=EPS, weighting=WGF_WEIGHTING[method]
        )
        fit = fit_score_model(SDE, model, lambda k: target(k, BATCH), objective=objective, **common)
    else:
        coupling = {
            "cfm": flows.IndependentCoupling(),
            "rectified_reflow": flows.IndependentCoupling(),
            "ot_cfm": flows.ExactOTCoupling(),
            "sinkhorn_cfm": flows.SinkhornCoupling(epsilon=SINKHORN_EPSILON),
        }[method]

        def objective(sde, apply):
            return flows.cfm_objective(apply, path=flows.LinearPath(), coupling=coupling)

        data = (
            dataset_sampler(pairs, BATCH)
            if pairs is not None
            else flows.pair_sampler(source, target, BATCH)
        )
        fit = fit_score_model(SDE, model, data, objective=objective, **common)
    return fit.params, fit.apply, fit.history


def flow_velocity(method, apply, params):
    """The model as a flow-time velocity (t = 0 source, t = 1 target)."""
    net = functools.partial(apply, params)
    if method == "dsm_pf":
        return flows.probability_flow_velocity(SDE, net, eps=EPS)
    if method in WGF_WEIGHTING:
        return flows.probability_flow_velocity(SDE, velocity_to_score(SDE, net), eps=EPS)
    return net


def evaluate(velocity, x0, heldout, cfg):
    """W2 vs NFE (Euler, Heun) and the transport certificate."""
    out = {"w2_euler": {}, "w2_heun": {}}
    for nfe in NFES:
        x1 = flows.integrate_flow(velocity, x0, n_steps=nfe, method="euler").x
        out["w2_euler"][str(nfe)] = w2(np.asarray(x1), heldout, method="exact")
        if nfe in HEUN_NFES:
            x1 = flows.integrate_flow(velocity, x0, n_steps=nfe // 2, method="heun").x
            out["w2_heun"][str(nfe)] = w2(np.asarray(x1), heldout, method="exact")
    cert = flows.transport_certificate(velocity, x0, n_steps=CERTIFICATE_STEPS, method="heun")
    out["certificate"] = {
        k: (v if isinstance(v, str) else float(v))
        for k, v in cert.items()
        if k not in ("x1", "path")
    }
    return out, np.asarray(cert["path"][:, : cfg["n_figure"]])


def task_methods(task: str, methods=METHODS) -> tuple[str, ...]:
    """The methods of ``methods`` that apply to ``task`` (DSM and WGF need N(0, I))."""
    gaussian = TASKS[task][0] == "gaussian"
    return tuple(m for m in methods if gaussian or m not in GAUSSIAN_ONLY)


def method_keys(key) -> dict:
    """Per-method training keys of a task (see :data:`SPLIT_METHODS`)."""
    k_methods = jax.random.split(key, 4 + len(SPLIT_METHODS))[4:]
    keys = dict(zip(SPLIT_METHODS, k_methods, strict=True))
    for index, method in enumerate(METHODS):
        if method not in keys:
            keys[method] = jax.random.fold_in(key, index)
    return keys


def run_task(key, name, cfg, methods=METHODS):
    source_name, target_name = TASKS[name]
    source, target = sampler(source_name), sampler(target_name)
    k_eval, k_held, k_floor, k_pairs = jax.random.split(key, 4 + len(SPLIT_METHODS))[:4]
    keys = method_keys(key)
    x0 = source(k_eval, cfg["n_eval"])
    heldout = np.asarray(target(k_held, cfg["n_eval"]))
    floor = w2(np.asarray(target(k_floor, cfg["n_eval"])), heldout, method="exact")
    source_target = w2(np.asarray(x0), heldout, method="exact")
    entry = {
        "source": source_name,
        "target": target_name,
        "w2_floor": floor,
        "w2_squared_source_target": source_target**2,
        "methods": {},
    }
    paths = {}
    trained = {}
    for method in task_methods(name, methods):
        k = keys[method]
        start = clock()
        if method == "rectified_reflow":
            base_params, apply, _ = trained["cfm"]
            pairs = flows.reflow_pairs(
                flow_velocity("cfm", apply, base_params),
                source(k_pairs, cfg["n_pairs"]),
                n_steps=REFLOW_STEPS,
                method="heun",
            )
            params, apply, history = train(
                method, k, source, target, cfg, init_params=base_params, pairs=pairs
            )
            timing = elapsed(start)
            base = entry["methods"]["cfm"]["training"]
            timing = {
                "wall_s": timing["wall_s"] + base["wall_s"],
                "cpu_s": timing["cpu_s"] + base["cpu_s"],
                "reflow_only_wall_s": timing["wall_s"],
                "reflow_only_cpu_s": timing["cpu_s"],
            }
        else:
            params, apply, history = train(method, k, source, target, cfg)
            timing = elapsed(start)
        trained[method] = (params, apply, history)
        velocity = flow_velocity(method, apply, params)
        start = clock()
        result, path = evaluate(velocity, x0, heldout, cfg)
        result["training"] = {**timing, "steps": history[-1]["step"] if history else None}
        result["final_loss"] = float(history[-1]["loss"]) if history else None
        result["evaluation"] = elapsed(start)
        entry["methods"][method] = result
        paths[method] = path
        print(
            f"{name:26s} {method:17s} W2@1,2,4 = "
            + ", ".join(f"{result['w2_euler'][str(n)]:.3f}" for n in (1, 2, 4))
            + f"  gap {result['certificate']['gap_ratio']:.3f}"
            + f"  train {timing['cpu_s']:.0f} cpu-s",
            flush=True,
        )
    return entry, paths, heldout


def plot(results, paths, heldouts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(paths)
    fig, axes = plt.subplots(
        len(tasks), len(METHODS), figsize=(2.6 * len(METHODS), 2.6 * len(tasks)), squeeze=False
    )
    for row, task in enumerate(tasks):
        labelled = False
        for col, method in enumerate(METHODS):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if method not in paths[task]:
                ax.set_title(f"{method}\n(n/a: needs N(0, I))", fontsize=7)
                ax.axis("off")
                continue
            traj = paths[task][method]
            ax.scatter(*heldouts[task].T, s=1, c="0.8")
            ax.plot(traj[:, :, 0], traj[:, :, 1], c="tab:blue", lw=0.4, alpha=0.6)
            ax.scatter(*traj[0].T, s=3, c="k")
            ax.scatter(*traj[-1].T, s=3, c="tab:red")
            cert = results["tasks"][task]["methods"][method]["certificate"]
            ax.set_title(f"{method}\ngap {cert['gap_ratio']:.2f}", fontsize=8)
            if not labelled:
                ax.set_ylabel(task, fontsize=8)
                labelled = True
    fig.suptitle("trajectories (Heun, 100 NFE): source black, endpoints red", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_table(results) -> list[dict]:
    """Rows of the README table: W2 at 1, 2, 4 NFE (Euler) and the energy gap ratio."""
    rows = []
    for task, entry in results["tasks"].items():
        for method, res in entry["methods"].items():
            rows.append(
                {
                    "task": task,
                    "method": method,
                    **{f"w2_nfe{n}": res["w2_euler"][str(n)] for n in (1, 2, 4)},
                    "w2_heun_nfe4": res["w2_heun"]["4"],
                    "w2_nfe100": res["w2_euler"]["100"],
                    "gap_ratio": res["certificate"]["gap_ratio"],
                    "straightness": res["certificate"]["straightness"],
                    "train_cpu_s": res["training"]["cpu_s"],
                    "w2_floor": entry["w2_floor"],
                }
            )
    return rows


LABELS = {
    "dsm_pf": "DSM, probability-flow ODE",
    "cfm": "CFM (independent)",
    "ot_cfm": "OT-CFM (exact)",
    "sinkhorn_cfm": "Sinkhorn-CFM",
    "rectified_reflow": "rectified flow, 1 reflow",
    "vuong_wgf": "Vuong WGF flow matching (uniform-score weight, default)",
    "vuong_wgf_velocity": "Vuong WGF flow matching (g^4/4 weight: plain velocity regression)",
}


def markdown_tables(results) -> str:
    """One Markdown table per task from the record (the README's rows)."""
    lines = []
    for task, entry in results["tasks"].items():
        lines += [
            f"{task} ({entry['source']} -> {entry['target']}), two-sample W2 floor "
            f"{entry['w2_floor']:.3f}",
            "",
            "| method | W2 @ 1 NFE | 2 NFE | 4 NFE | 4 NFE (Heun) | 100 NFE | gap E / W2^2 "
            "| straightness | train CPU s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for method, res in entry["methods"].items():
            w2e, cert = res["w2_euler"], res["certificate"]
            cells = [w2e["1"], w2e["2"], w2e["4"], res["w2_heun"]["4"], w2e["100"]]
            cells += [cert["gap_ratio"], cert["straightness"]]
            lines.append(
                f"| {LABELS[method]} | "
                + " | ".join(f"{v:.3f}" for v in cells)
                + f" | {res['training']['cpu_s']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def run_info(start, load_start) -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        **elapsed(start),
        "cpu_user_s": usage.ru_utime,
        "cpu_system_s": usage.ru_stime,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "note": "2 CPU cores shared with ~7 other agents: wall times are inflated by load; "
        "CPU times are this process's.",
    }


def finish(results, paths, heldouts, out: Path, suffix: str) -> dict:
    """Summary table, JSON record and trajectory figure."""
    results["summary"] = summary_table(results)
    (out / f"flow_matching{suffix}.json").write_text(json.dumps(results, indent=1))
    (out / f"flow_matching{suffix}.md").write_text(markdown_tables(results))
    figure_tasks = [t for t in TASKS if t in paths]
    plot(results, {t: paths[t] for t in figure_tasks}, heldouts, out / f"flow_matching{suffix}.png")
    return results


def save_part(out: Path, part: str, results, paths, heldouts) -> None:
    (out / f"flow_matching_part_{part}.json").write_text(json.dumps(results, indent=1))
    arrays = {f"{t}/heldout": h for t, h in heldouts.items()}
    arrays.update({f"{t}/{m}": p for t, ps in paths.items() for m, p in ps.items()})
    np.savez_compressed(out / f"flow_matching_part_{part}.npz", **arrays)


def merge(out: Path, parts: list[str]) -> dict:
    """Merge part records (``--part``) into ``flow_matching.json`` and the figure."""
    results, paths, heldouts, runs = None, {}, {}, {}
    for part in parts:
        record = json.loads((out / f"flow_matching_part_{part}.json").read_text())
        if results is None:
            results = {"tasks": {}, "config_by_part": {}}
        results["config"] = record["config"]  # the last part's; all parts' below
        results["config_by_part"][part] = record["config"]
        for task, entry in record["tasks"].items():
            if task not in results["tasks"]:
                results["tasks"][task] = entry
                continue
            merged = results["tasks"][task]
            for field in ("w2_floor", "w2_squared_source_target"):
                if not np.isclose(merged[field], entry[field], rtol=1e-6):
                    raise ValueError(f"part {part} has other {task} data ({field} differs)")
            merged["methods"].update(entry["methods"])
        runs[part] = record["run"]
        with np.load(out / f"flow_matching_part_{part}.npz") as arrays:
            for key in arrays.files:
                task, what = key.split("/")
                if what == "heldout":
                    heldouts[task] = arrays[key]
                else:
                    paths.setdefault(task, {})[what] = arrays[key]
    results["tasks"] = {t: results["tasks"][t] for t in TASKS if t in results["tasks"]}
    for entry in results["tasks"].values():
        entry["methods"] = {m: entry["methods"][m] for m in METHODS if m in entry["methods"]}
    missing = [
        f"{t}/{m}"
        for t in FULL["tasks"]
        for m in task_methods(t)
        if m not in results["tasks"].get(t, {}).get("methods", {})
    ]
    results["complete"] = not missing
    results["run"] = {
        "parts": runs,
        "cpu_s_total": sum(r["cpu_user_s"] + r["cpu_system_s"] for r in runs.values()),
        "note": "each part is a separate process on the shared 2-core machine",
    }
    if missing:
        results["missing"] = missing
    return finish(results, paths, heldouts, out, "")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", help=f"comma-separated subset of {','.join(TASKS)}")
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--part", help="write flow_matching_part_<PART>.json/.npz only")
    parser.add_argument("--merge", nargs="+", metavar="PART", help="merge part records")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        return merge(args.out, args.merge)
    cfg = QUICK if args.quick else FULL
    tasks = cfg["tasks"] if args.tasks is None else tuple(args.tasks.split(","))
    unknown = set(tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}; choose from {list(TASKS)}")
    methods = METHODS if args.methods is None else tuple(args.methods.split(","))
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {list(METHODS)}")
    if "rectified_reflow" in methods and "cfm" not in methods:
        parser.error("rectified_reflow is trained from cfm: list cfm too")
    start = clock()
    load_start = os.getloadavg()
    results = {
        "config": {
            **cfg,
            "quick": args.quick,
            "methods": list(methods),
            "seed": args.seed,
            "batch": BATCH,
            "mlp": "ScoreMLP 3 x 128 softplus, sinusoidal time embedding",
            "optimizer": "fit_score_model default: AdamW 1e-3 cosine decay, grad clip 1",
            "ema_decay": EMA_DECAY,
            "sde": "VPSDE linear beta 0.1..20, T = 1 (dsm_pf, vuong_wgf)",
            "eps": EPS,
            "dsm": "noise parameterization, sigma^2 weighting, t ~ U(eps, 1)",
            "path": "LinearPath(sigma=0) for cfm, ot_cfm, sinkhorn_cfm, rectified_reflow",
            "sinkhorn_epsilon_relative": SINKHORN_EPSILON,
            "couplings": "wgdiff.flows.ExactOTCoupling / SinkhornCoupling on wgdiff.metrics "
            "(exact_assignment, sinkhorn_log_plan)",
            "wgf_weighting": WGF_WEIGHTING,
            "reflow": f"pairs by Heun {REFLOW_STEPS} steps from the cfm flow; retrained "
            "from the cfm parameters",
            "certificate": f"Heun {CERTIFICATE_STEPS} steps (100 NFE), n_eval source points, "
            "exact W2 between the source sample and its image",
            "w2": "exact (assignment) between n_eval samples and n_eval held-out points",
            "nfe": list(NFES),
            "heun_nfe": list(HEUN_NFES),
            "aliases": ALIASES,
        },
        "tasks": {},
    }
    paths, heldouts = {}, {}
    suffix = "_quick" if args.quick else ""
    keys = dict(zip(TASKS, jax.random.split(jax.random.key(args.seed), len(TASKS)), strict=True))
    for name in TASKS:
        if name not in tasks:
            continue
        entry, task_paths, heldout = run_task(keys[name], name, cfg, methods)
        results["tasks"][name] = entry
        paths[name], heldouts[name] = task_paths, heldout
        results["run"] = run_info(start, load_start)
        # written after every task, so a run cut short keeps what it measured
        if args.part:
            save_part(args.out, args.part, results, paths, heldouts)
    results["run"] = run_info(start, load_start)
    results["complete"] = set(tasks) <= set(results["tasks"])
    if args.part:
        save_part(args.out, args.part, results, paths, heldouts)
        return results
    return finish(results, paths, heldouts, args.out, suffix)


if __name__ == "__main__":
    main()
