"""The ``wgdiff`` command line: ``demo``, ``train``, ``sample``, ``evaluate``.

Options are parsed here and turned into typed objects (an SDE, a network);
library functions never see this module's dictionaries.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the command line imports JAX lazily
    import flax.linen as nn
    import jax

    from wgdiff._types import ScoreFn
    from wgdiff.samplers.base import Solver
    from wgdiff.samplers.grids import TimeGrid as Grid
    from wgdiff.sde import SDE, VPSDE
    from wgdiff.train import TrainState

NETS = ("mlp", "potential")
# The one table from command-line names to wgdiff.samplers classes (with constructor
# arguments); imported lazily so that `wgdiff --help` stays fast.
SOLVERS = {
    "em": ("EulerMaruyama", {}),
    "reverse-diffusion": ("ReverseDiffusion", {}),
    "pc": ("PredictorCorrector", {}),
    "ancestral": ("Ancestral", {}),
    "ddim": ("DDIM", {}),
    "ddim-eta1": ("DDIM", {"eta": 1.0}),
    "pf-euler": ("ProbabilityFlowEuler", {}),
    "pf-heun": ("ProbabilityFlowHeun", {}),
    "heun": ("Heun", {}),
    "heun-churn": ("Heun", {"churn": 40.0}),
    "dpm-solver-1": ("DPMSolver", {"order": 1}),
    "dpm-solver-2": ("DPMSolver", {"order": 2}),
    "dpm-solver-3": ("DPMSolver", {"order": 3}),
    "dpm++2s": ("DPMSolverPP", {"order": 2, "multistep": False}),
    "dpm++3s": ("DPMSolverPP", {"order": 3, "multistep": False}),
    "dpm++2m": ("DPMSolverPP", {"order": 2}),
    "dpm++3m": ("DPMSolverPP", {"order": 3}),
    "dpm++2m-sde": ("DPMSolverPP", {"order": 2, "sde": True}),
    "unipc": ("UniPC", {"order": 2}),
}
GRIDS = {
    "uniform": "UniformGrid",
    "quadratic": "QuadraticGrid",
    "logsnr": "LogSNRGrid",
    "karras": "KarrasGrid",
}
# "ode" / "sde": diffrax's adaptive Tsit5 / SPaRK (wgdiff.samplers.diffrax_solve).
SAMPLERS = (*SOLVERS, "ode", "sde")
DEFAULT_STEPS = 500
ACTIVATIONS = ("softplus", "silu", "gelu", "tanh")


# -- building typed objects from a run config --------------------------------------------
def build_sde(config: dict) -> VPSDE:
    from wgdiff.sde import VPSDE

    return VPSDE(
        beta_min=config["beta_min"],
        beta_max=config["beta_max"],
        schedule=config["schedule"],
        T=config["T"],
    )


def build_model(config: dict) -> nn.Module:
    import flax.linen as nn

    from wgdiff.nets import PotentialMLP, ScoreMLP

    cls = {"mlp": ScoreMLP, "potential": PotentialMLP}[config["net"]]
    return cls(
        features=tuple(config["features"]),
        activation=getattr(nn, config["activation"]),
        time_scale=1000.0 / config["T"],
    )


def split_dataset(
    name: str, n_train: int, n_heldout: int, seed: int
) -> tuple[jax.Array, jax.Array]:
    """Train and held-out draws of a toy set from independent keys."""
    import jax

    from wgdiff.data import toy

    sampler = toy.get(name)
    k_train, k_held = jax.random.split(jax.random.key(seed))
    return sampler(k_train, n_train), sampler(k_held, n_heldout)


def train_run(
    config: dict, run_dir: Path, *, progress: bool = True
) -> tuple[Callable, TrainState, list[dict], jax.Array]:
    """Train the configured score model; returns ``(score apply, state, history, heldout)``.

    ``wgdiff.train.fit_score_model`` with the net predicting the noise (its output is
    divided by the marginal std, ``output="noise"``), data-parallel over every device
    when there are several.
    """
    import jax

    from wgdiff.train import fit_score_model

    train, heldout = split_dataset(
        config["dataset"], config["n_train"], config["n_heldout"], config["seed"]
    )
    result = fit_score_model(
        build_sde(config),
        build_model(config),
        train,
        key=jax.random.key(config["seed"] + 1),
        n_steps=config["steps"],
        batch_size=config["batch_size"],
        learning_rate=config["lr"],
        warmup_steps=config.get("warmup_steps", 0),
        output="noise",
        weighting=config["weighting"],
        ema_decay=config["ema_decay"],
        run_dir=run_dir,
        checkpoint_every=config["checkpoint_every"],
        config=config,
        log_every=100,
        progress=progress,
    )
    return result.apply, result.state, result.history, heldout


def load_run(run_dir: Path) -> tuple[dict, Callable, Any, jax.Array]:
    """``(config, score apply function, ema_params, heldout)`` of a trained run directory."""
    import jax
    import jax.numpy as jnp

    from wgdiff.train import (
        checkpoint_manager,
        create_train_state,
        default_optimizer,
        restore_checkpoint,
    )

    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise SystemExit(f"error: {run_dir} has no config.json; train first with `wgdiff train`")
    config = json.loads(config_path.read_text())
    model = build_model(config)
    train, heldout = split_dataset(
        config["dataset"], config["n_train"], config["n_heldout"], config["seed"]
    )
    params = model.init(jax.random.key(0), train[:1], jnp.zeros((1,)))
    optimizer = default_optimizer(
        config["lr"], decay_steps=config["steps"], warmup_steps=config.get("warmup_steps", 0)
    )
    like = create_train_state(jax.random.key(0), params, optimizer)
    manager = checkpoint_manager(run_dir)
    state = restore_checkpoint(manager, like)
    manager.close()
    from wgdiff.nets import std_scaled_apply

    return config, std_scaled_apply(model.apply, build_sde(config)), state.ema_params, heldout


def build_solver(name: str) -> Solver:
    """The ``wgdiff.samplers`` solver called ``name`` in ``SOLVERS``."""
    from wgdiff import samplers

    if name not in SOLVERS:
        raise ValueError(f"--solver must be one of {tuple(SOLVERS)}, got {name!r}")
    cls, kwargs = SOLVERS[name]
    return getattr(samplers, cls)(**kwargs)


def build_grid(name: str, n_steps: int) -> Grid:
    """The ``wgdiff.samplers`` time grid called ``name`` in ``GRIDS``, with ``n_steps`` steps."""
    from wgdiff import samplers

    if name not in GRIDS:
        raise ValueError(f"--grid must be one of {tuple(GRIDS)}, got {name!r}")
    return getattr(samplers, GRIDS[name])(n_steps)


def solver_and_grid(
    sampler: str, grid: str, steps: int | None, nfe: int | None
) -> tuple[Solver, Grid]:
    """``(solver, grid)`` for a ``SOLVERS`` name: ``steps`` steps, or as many as ``nfe`` buys
    (at least the solver's ``min_steps``), default ``DEFAULT_STEPS``."""
    solver = build_solver(sampler)
    if steps is not None and nfe is not None:
        raise ValueError("give --steps or --nfe, not both")
    if nfe is not None:
        if nfe < 1:
            raise ValueError(f"--nfe must be a positive integer, got {nfe}")
        steps = max(solver.min_steps, nfe // solver.nfe_per_step)
    return solver, build_grid(grid, DEFAULT_STEPS if steps is None else steps)


def draw_samples(
    key: jax.Array,
    sde: SDE,
    score_fn: ScoreFn,
    n: int,
    dim: int,
    sampler: str,
    steps: int | None,
    tol: float = 1e-3,
    *,
    grid: str = "uniform",
    nfe: int | None = None,
) -> tuple[jax.Array, dict]:
    """Samples and NFE from one of ``SAMPLERS`` (``tol``: diffrax rtol = atol when adaptive).

    ``SOLVERS`` names run ``wgdiff.samplers.sample`` on the ``GRIDS`` grid ``grid``;
    ``"ode"``/``"sde"`` run ``diffrax_solve`` (adaptive unless ``steps``).
    """
    from wgdiff import samplers

    shape = (n, dim)
    if sampler in SOLVERS:
        solver, time_grid = solver_and_grid(sampler, grid, steps, nfe)
        res = samplers.sample(key, sde, score_fn, shape, solver, time_grid)
        return res.x, {"nfe": res.nfe}
    if sampler not in SAMPLERS:
        raise ValueError(f"--solver must be one of {SAMPLERS}, got {sampler!r}")
    x, stats = samplers.diffrax_solve(
        key, sde, score_fn, shape, kind=sampler, n_steps=steps, rtol=tol, atol=tol
    )
    return x, {"nfe": stats["nfe"]}


def scatter_png(path: Path, panels: list[tuple[str, object]], reference: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ref = np.asarray(reference)
    lo, hi = ref.min(0) - 0.5 * ref.std(0), ref.max(0) + 0.5 * ref.std(0)
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3), squeeze=False)
    for ax, (title, pts) in zip(axes[0], panels, strict=True):
        pts = np.asarray(pts)
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.5)
        ax.set(title=title, xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- commands ----------------------------------------------------------------------------
def _config_from_args(args) -> dict:
    return {
        "dataset": args.dataset,
        "net": args.net,
        "features": [args.width] * args.depth,
        "activation": args.activation,
        "beta_min": args.beta_min,
        "beta_max": args.beta_max,
        "schedule": args.schedule,
        "T": args.T,
        "weighting": args.weighting,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "ema_decay": args.ema_decay,
        "n_train": args.n_train,
        "n_heldout": args.n_heldout,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
    }


def cmd_train(args: argparse.Namespace) -> int:
    import jax

    from wgdiff.train.parallel import initialize_distributed

    # Before any JAX computation: joins a multi-host run (no-op for one process).
    initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    config = _config_from_args(args)
    run_dir = Path(args.run_dir)
    start = time.perf_counter()
    _, state, history, _ = train_run(config, run_dir, progress=not args.quiet)
    if jax.process_index() != 0:
        return 0
    print(
        f"trained {int(state.step)} steps in {time.perf_counter() - start:.1f}s; "
        f"final loss {history[-1]['loss']:.4f}; run directory {run_dir}"
    )
    return 0


def _sample_run(args: argparse.Namespace, n: int | None) -> tuple:
    """Load ``--run-dir`` and draw ``n`` samples (default: as many as held-out points).

    Returns ``(run_dir, sde, score_fn, heldout, x, info)``.
    """
    import jax

    run_dir = Path(args.run_dir)
    config, apply, params, heldout = load_run(run_dir)
    sde = build_sde(config)
    score_fn = functools.partial(apply, params)
    x, info = draw_samples(
        jax.random.key(args.seed),
        sde,
        score_fn,
        heldout.shape[0] if n is None else n,
        heldout.shape[1],
        args.sampler,
        args.steps,
        grid=args.grid,
        nfe=args.nfe,
    )
    return run_dir, sde, score_fn, heldout, x, info


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    run_dir, _, _, heldout, x, info = _sample_run(args, args.n)
    out = Path(args.out) if args.out else run_dir / f"samples_{args.sampler}_{args.steps}.npy"
    np.save(out, np.asarray(x))
    if heldout.shape[1] == 2:
        scatter_png(
            out.with_suffix(".png"),
            [("held-out data", heldout), (f"{args.sampler}, NFE {info['nfe']:.0f}", x)],
            heldout,
        )
    print(f"wrote {args.n} samples ({args.sampler}, NFE {info['nfe']:.0f}) to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import jax

    from wgdiff import metrics

    run_dir, sde, score_fn, heldout, x, info = _sample_run(args, None)
    w2 = metrics.w2_with_info(x, heldout)
    # The certificates sample with the same solver and grid (diffrax: Euler-Maruyama).
    sampler = args.sampler if args.sampler in SOLVERS else "em"
    solver, grid = solver_and_grid(sampler, args.grid, args.steps, args.nfe)
    certificates = _certificates(
        jax.random.key(args.seed + 1), sde, score_fn, heldout, solver=solver, grid=grid
    )
    report = {
        "sampler": args.sampler,
        "steps": args.steps,
        "nfe": info["nfe"],
        "w2": w2,
        "certificates": certificates,
    }
    path = run_dir / "evaluation.json"
    path.write_text(json.dumps(report, indent=2, default=float))
    bound, cons = certificates["bound"], certificates["conservativity"]
    print(
        f"W2 to held-out data ({args.sampler}, NFE {info['nfe']:.0f}): {w2['value']:.4f} "
        f"[{w2['method']}]"
    )
    print(f"W2 between held-out halves (floor):   {certificates['w2_heldout_halves']:.4f}")
    print(
        f"Kwon upper bound on W2:               {bound['bound']:.4f} "
        f"({bound['loss_kind']} = {bound['loss']:.4f}, offset {bound['offset']:.4f}, "
        f"holds: {bound['bound_holds']})"
    )
    print(f"max Jacobian asymmetry ||J-J^T||/||J||: {cons['max_jacobian_asymmetry']:.4f}")
    print(f"max closed-loop integral violation:   {cons['max_loop_violation']:.4f}")
    print(f"wrote {path}")
    return 0


def _certificates(key, sde, score_fn, heldout, *, solver, grid) -> dict:
    """Kwon bound and conservativity numbers (``wgdiff.evaluation``)."""
    from wgdiff import evaluation

    return evaluation.evaluate_score_model(
        key, sde, score_fn, heldout=heldout, solver=solver, grid=grid
    )


def cmd_demo(args: argparse.Namespace) -> int:
    import jax
    import numpy as np

    from wgdiff import metrics
    from wgdiff._checks import check_positive_int
    from wgdiff.data import toy

    check_positive_int(args.repeats, "--repeats")
    start, cpu_start = time.perf_counter(), time.process_time()
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "dataset": args.dataset,
        "net": "mlp",
        "features": [128] * 4,
        "activation": "silu",
        "beta_min": 0.1,
        "beta_max": 20.0,
        "schedule": "linear",
        "T": 1.0,
        "weighting": "sigma2",
        # Chosen on seed 1 among 8 settings (steps, batch, learning rate, warm-up, EMA,
        # smallest training time), reported on the default seed 0: see README.
        "lr": 3e-3,
        "warmup_steps": min(500, args.steps // 10),
        "batch_size": 256,
        "steps": args.steps,
        "ema_decay": 0.999,
        "n_train": 20_000,
        "n_heldout": args.n_samples,
        "seed": args.seed,
        "checkpoint_every": None,
    }
    print(f"[1/3] training a score MLP on {args.dataset} ({args.steps} steps, VP SDE, DSM)")
    apply, state, history, heldout = train_run(config, run_dir, progress=not args.quiet)
    train_time, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    sde = build_sde(config)
    score_fn = functools.partial(apply, state.ema_params)
    sampler_runs = [("em", s, None) for s in args.em_steps]
    sampler_runs += [("pf-heun", s, None) for s in args.ode_steps]
    sampler_runs.append(("ode", None, None))
    sampler_runs += [(name, None, args.nfe) for name in args.solver]
    print(f"[2/3] sampling {args.n_samples} points with {len(sampler_runs)} sampler settings")
    rows, panels, draws = [], [], {}
    key = jax.random.key(args.seed + 7)
    # Empirical W2 between two n-point sets varies from draw to draw (mass shifts between
    # the moons), so each row and the floor are medians over `repeats` independent draws.
    for i, (name, steps, nfe) in enumerate(sampler_runs):
        w2s, seconds = [], []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            x, info = draw_samples(
                jax.random.fold_in(jax.random.fold_in(key, i), r),
                sde,
                score_fn,
                args.n_samples,
                heldout.shape[1],
                name,
                steps,
                grid="uniform" if nfe is None else args.grid,
                nfe=nfe,
            )
            x = jax.block_until_ready(x)
            seconds.append(time.perf_counter() - t0)
            w2 = metrics.w2_with_info(x, heldout)
            w2s.append(float(w2["value"]))
            draws[f"row_{i}_{r}"] = np.asarray(x)
        label = {"em": "Euler-Maruyama", "pf-heun": "prob. flow Heun", "ode": "prob. flow Tsit5"}
        label = label[name] if nfe is None else f"{name} ({args.grid})"
        rows.append(
            {
                "sampler": label,
                "steps": steps or ("adaptive" if nfe is None else f"NFE {nfe}"),
                "nfe": info["nfe"],
                "w2": float(np.median(w2s)),
                "w2_draws": w2s,
                "w2_method": w2["method"],
                "seconds": float(np.median(seconds)),
            }
        )
        panels.append((f"{label}\n{rows[-1]['steps']} steps, W2 {w2s[-1]:.3f}", x))
    floor_key = jax.random.key(args.seed + 99)
    fresh_draws = [
        toy.get(args.dataset)(jax.random.fold_in(floor_key, r), args.n_samples)
        for r in range(args.repeats)
    ]
    floor_draws = [float(metrics.w2(fresh, heldout)) for fresh in fresh_draws]
    floor = float(np.median(floor_draws))
    draws.update({f"fresh_{r}": np.asarray(f) for r, f in enumerate(fresh_draws)})
    for r in rows:
        r["w2_over_floor"] = r["w2"] / floor
    print(
        f"[3/3] W2 to held-out data, median of {args.repeats} draws (lower is better; "
        "floor: fresh data vs held-out data)"
    )
    header = f"{'sampler':<18}{'steps':>9}{'NFE':>8}{'W2':>9}{'/floor':>8}{'seconds':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['sampler']:<18}{r['steps']!s:>9}{r['nfe']:>8.0f}{r['w2']:>9.4f}"
            f"{r['w2_over_floor']:>8.2f}{r['seconds']:>9.2f}"
        )
    lines.append(f"{'fresh data (floor)':<18}{'':>9}{'':>8}{floor:>9.4f}{1.0:>8.2f}{'':>9}")
    print("\n".join(lines))
    scatter_png(run_dir / "samples.png", [("held-out data", heldout), *panels], heldout)
    np.savez(run_dir / "samples.npz", heldout=np.asarray(heldout), **draws)
    result = {
        "dataset": args.dataset,
        "config": config,
        "train_seconds": train_time,
        "train_cpu_seconds": train_cpu,
        "final_loss": history[-1]["loss"],
        "rows": rows,
        "w2_fresh_vs_heldout": floor,
        "w2_fresh_vs_heldout_draws": floor_draws,
        "repeats": args.repeats,
        "total_seconds": time.perf_counter() - start,
        # CPU time (all threads) beside wall time: on a shared machine wall time is noisy.
        "total_cpu_seconds": time.process_time() - cpu_start,
        "load_average_1_5_15": list(os.getloadavg()),
        "w2_definition": "W2 distance (not squared) between empirical measures, "
        f"{args.n_samples} points each; each W2 (and the floor) is the median over "
        f"{args.repeats} independent draws",
    }
    (run_dir / "results.json").write_text(json.dumps(result, indent=2))
    print(
        f"wrote {run_dir / 'samples.png'}, samples.npz and results.json "
        f"in {result['total_seconds']:.0f} s ({result['total_cpu_seconds']:.0f} s CPU)"
    )
    return 0


# -- parser ------------------------------------------------------------------------------
def _add_train_options(p) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--dataset", default="two_moons", help="toy data set (default: two_moons)")
    g.add_argument("--net", choices=NETS, default="mlp", help="score network (default: mlp)")
    g.add_argument("--width", type=int, default=128, help="hidden width (default: 128)")
    g.add_argument("--depth", type=int, default=4, help="hidden layers (default: 4)")
    g.add_argument("--activation", choices=ACTIVATIONS, default="silu", help="(default: silu)")
    g = p.add_argument_group("forward SDE (VP)")
    g.add_argument("--beta-min", type=float, default=0.1, help="(default: 0.1)")
    g.add_argument("--beta-max", type=float, default=20.0, help="(default: 20.0)")
    g.add_argument(
        "--schedule",
        choices=("linear", "cosine", "sigmoid"),
        default="linear",
        help="beta schedule (default: linear)",
    )
    g.add_argument("--T", type=float, default=1.0, help="time horizon (default: 1.0)")
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--weighting",
        choices=("likelihood", "sigma2", "none"),
        default="sigma2",
        help="DSM weighting lambda(t) (default: sigma2)",
    )
    g.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default: 2e-3)")
    g.add_argument("--batch-size", type=int, default=256, help="(default: 256)")
    g.add_argument("--steps", type=int, default=5000, help="training steps (default: 5000)")
    g.add_argument("--ema-decay", type=float, default=0.995, help="(default: 0.995)")
    g.add_argument("--n-train", type=int, default=20_000, help="training points (default: 20000)")
    g.add_argument("--n-heldout", type=int, default=2000, help="held-out points (default: 2000)")
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=1000,
        help="checkpoint interval in steps (default: 1000)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgdiff",
        description="Score-based diffusion models through Wasserstein geometry.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "demo",
        help="train on a 2-D toy set, sample, print a W2/NFE table",
        description="Train a score MLP on a 2-D toy set on CPU, sample with "
        "Euler-Maruyama and the probability-flow ODE at several step counts, "
        "print W2 to held-out data and NFE, write samples.png and results.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", default="two_moons", help="toy data set")
    p.add_argument(
        "--steps",
        type=int,
        default=24_000,
        help="training steps (AdamW 3e-3, min(500, steps/10) warm-up steps, cosine decay, "
        "batch 256)",
    )
    p.add_argument("--n-samples", type=int, default=2000, help="samples per sampler")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="independent draws per sampler (and fresh data sets for the floor); the table "
        "shows the median W2",
    )
    p.add_argument(
        "--em-steps",
        type=int,
        nargs="+",
        default=[10, 100, 1000],
        help="Euler-Maruyama step counts",
    )
    p.add_argument(
        "--ode-steps",
        type=int,
        nargs="+",
        default=[10, 50],
        help="probability-flow Heun step counts",
    )
    p.add_argument(
        "--solver",
        nargs="*",
        choices=tuple(SOLVERS),
        default=["dpm++2m"],
        help="further wgdiff.samplers solvers, each at --nfe on --grid",
    )
    p.add_argument("--grid", choices=tuple(GRIDS), default="logsnr", help="grid of --solver")
    p.add_argument("--nfe", type=int, default=20, help="model evaluations of each --solver")
    p.add_argument("--run-dir", default="runs/demo", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train",
        help="train a score model with denoising score matching",
        description="Train a score network on a toy data set with DSM under a "
        "VP SDE; checkpoints and metrics.jsonl go to --run-dir, and running the "
        "same command again resumes from the latest checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_train_options(p)
    p.add_argument("--run-dir", default="runs/train", help="run directory")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("devices and hosts")
    g.add_argument(
        "--coordinator",
        default=None,
        help="host:port of process 0 of a multi-host run (default: auto-detect under SLURM, "
        "Open MPI or on a Cloud TPU pod; otherwise a single process)",
    )
    g.add_argument("--num-processes", type=int, default=None, help="processes in the run")
    g.add_argument("--process-id", type=int, default=None, help="this process's index")
    p.set_defaults(func=cmd_train)

    for name, func, text in (
        ("sample", cmd_sample, "draw samples from a trained run (EMA parameters)"),
        ("evaluate", cmd_evaluate, "W2 to held-out data, Kwon bound, conservativity"),
    ):
        p = sub.add_parser(
            name,
            help=text,
            description=text.capitalize() + ".",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        p.add_argument("--run-dir", default="runs/train", help="trained run directory")
        p.add_argument(
            "--solver",
            "--sampler",
            dest="sampler",
            choices=SAMPLERS,
            default="em",
            help="a wgdiff.samplers solver (em: Euler-Maruyama, pc: predictor-corrector, "
            "heun: EDM, dpm++2m: DPM-Solver++(2M), ...), or ode/sde: diffrax (adaptive "
            "unless --steps)",
        )
        p.add_argument(
            "--grid", choices=tuple(GRIDS), default="uniform", help="time grid of the solver"
        )
        p.add_argument(
            "--steps",
            type=int,
            default=None,
            help=f"solver steps (default: {DEFAULT_STEPS}, adaptive for diffrax)",
        )
        p.add_argument("--nfe", type=int, default=None, help="model evaluations instead of --steps")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        if name == "sample":
            p.add_argument("--n", type=int, default=2000, help="number of samples")
            p.add_argument("--out", default=None, help="output .npy (default: in run dir)")
        p.set_defaults(func=func)
    from wgdiff.bench import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the runner parses its own options
        from wgdiff.bench import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
