"""Weber, *The Score-Difference Flow*: Tables 1-4 and Figures 1-5.

Tables 1/3: 25-Gaussian grid in R^2; Tables 2/4: 30-Gaussian question mark in
R^3. Every condition of sec. 7.1 (ADAGRAD x BATCH x CONST x ANNEAL [x OFFSET])
for SD flow, MMD gradient flow and SVGD, ``--trials`` independent trials of
``--steps`` iterations, eta = 0.1. A run converges when its minimum CFD
(K = 256 frequencies ~ N(0, I), evaluated every ``--cfd-every`` steps against
the target set) falls below the threshold computed as the paper does: the
maximum CFD over ``--threshold-pairs`` pairs of independent target draws of
the same size. Also: Fig. 1/2 evolution strips, Fig. 3 swiss roll <->
question mark interpolation, Fig. 4 nearest-neighbour histogram, Fig. 5
R^50 generator fit (Alg. 2, App. C.4).

Geometry (Weber published no code; see ``GEOMETRY`` below and
``wgdiff.data.toy``): grid centres {-4,-2,0,2,4}^2, std 0.05; base N((-10, 10),
I), beyond the top-left component (-4, 4). Question mark: 30 centres in the
plane z = 0 (hook of 20 on a unit circle, stem of 4, dot of 6), std 0.1; base
N(target mean + OFFSET, 0.5^2 I) with OFFSET = (3, 3, 3) or 0 (centred).

Usage:
    python experiments/sd_flow_tables.py            # full run -> experiments/results/
    python experiments/sd_flow_tables.py --quick --out /tmp/sd
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wgdiff import metrics, sdflow  # noqa: E402
from wgdiff.data import toy  # noqa: E402
from wgdiff.nets.generator import LinearGenerator  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
NAME = "sd_flow"
METHODS = ("sd", "mmd", "svgd")
# SVGD needs the target score. "svgd" uses the exact mixture score; "svgd_kernel"
# estimates it from the target sample (batch) at the condition's bandwidth,
# (D_p(x) - x) / sigma^2, i.e. SVGD sees the same data as SD and MMD.
ALL_METHODS = METHODS + ("svgd_kernel",)
PAPER_COLUMN = {"sd": 0, "mmd": 1, "svgd": 2, "svgd_kernel": 2}
PAPER_THRESHOLDS = {"grid": 0.0651, "question_mark": 0.0612}
GEOMETRY = {
    "grid": {
        "target": "wgdiff.data.toy.grid25_mixture: centres {-4,-2,0,2,4}^2, std 0.05, "
        "equal weights",
        "base": "N((-10, 10), I): far off, closest to the top-left component (-4, 4)",
        "cosine": {"sigma2_max": 10.0, "sigma2_min": 0.5},
    },
    "question_mark": {
        "target": "wgdiff.data.toy.question_mark_mixture: 30 centres in the plane z = 0 "
        "(20-centre hook on the unit circle about (0, 1, 0), 4-centre stem, "
        "6-centre octahedral dot at (0, -1.75, 0)), std 0.1",
        "base": "N(target mean + offset, 0.5^2 I), offset (3, 3, 3) (OFFSET) or 0 (centred)",
        "cosine": {"sigma2_max": 4.0, "sigma2_min": 0.5},
    },
}
GRID_BASE_MEAN = (-10.0, 10.0)
GRID_BASE_STD = 1.0
QM_OFFSET = (3.0, 3.0, 3.0)
QM_BASE_STD = 0.5

# Paper numbers, copied from the text. Rows in the paper's order (N before Y,
# ADAGRAD outermost). Convergence: (SD, MMD, SVGD); mean minimum CFD likewise.
PAPER_TABLE1 = [(1, 0, 0)] * 8 + [(1, 0, 1)] * 8
PAPER_TABLE3 = [
    (0.0007, 0.6129, 0.8495), (0.0007, 0.6111, 0.8521), (0.0007, 0.5816, 0.7878),
    (0.0009, 0.5837, 0.7978), (0.0374, 0.9382, 0.7944), (0.0357, 0.9365, 0.7863),
    (0.0371, 0.9230, 0.7454), (0.0389, 0.9249, 0.7494), (0.0006, 0.1584, 0.0033),
    (0.0006, 0.1622, 0.0031), (0.0006, 0.1566, 0.0029), (0.0006, 0.1553, 0.0028),
    (0.0359, 0.1884, 0.0412), (0.0399, 0.1895, 0.0414), (0.0381, 0.1892, 0.0377),
    (0.0385, 0.1902, 0.0359),
]  # fmt: skip
PAPER_TABLE2 = [(1, 0, 0)] * 16 + [
    (1, 1, 1), (1, 0, 1), (1, 1, 1), (1, 0, 1), (1, 1, 1), (1, 0, 1), (1, 1, 1), (1, 0, 1),
] + [(1, 0, 1)] * 8  # fmt: skip
PAPER_TABLE4 = [
    (0.0002, 0.1020, 0.2407), (0.0026, 0.7050, 0.6994), (0.0004, 0.1020, 0.2407),
    (0.0020, 0.7050, 0.6995), (0.0005, 0.1186, 0.2761), (0.0006, 0.5953, 0.7006),
    (0.0005, 0.1185, 0.2762), (0.0006, 0.5953, 0.7006), (0.0146, 0.1689, 0.1804),
    (0.0136, 0.8250, 0.6060), (0.0157, 0.1734, 0.1725), (0.0172, 0.8231, 0.6051),
    (0.0159, 0.2086, 0.2410), (0.0157, 0.8348, 0.6168), (0.0167, 0.2045, 0.2359),
    (0.0168, 0.8404, 0.6265), (0.0039, 0.0029, 0.0059), (0.0038, 0.1945, 0.0057),
    (0.0037, 0.0033, 0.0059), (0.0042, 0.1938, 0.0060), (0.0056, 0.0039, 0.0077),
    (0.0056, 0.0847, 0.0081), (0.0056, 0.0041, 0.0082), (0.0056, 0.0841, 0.0083),
    (0.0154, 0.0972, 0.0175), (0.0163, 0.3141, 0.0185), (0.0148, 0.0972, 0.0176),
    (0.0162, 0.3117, 0.0164), (0.0146, 0.1122, 0.0242), (0.0162, 0.2915, 0.0228),
    (0.0165, 0.1111, 0.0222), (0.0149, 0.2922, 0.0238),
]  # fmt: skip

FULL = dict(
    n_points=1024, batch_size=128, steps=1000, trials=5, cfd_every=5, segment=50,
    threshold_pairs=1000, r50_steps=1000, r50_train=10000, interp_steps=1000,
)  # fmt: skip
QUICK = dict(
    n_points=128, batch_size=32, steps=40, trials=1, cfd_every=5, segment=20,
    threshold_pairs=50, r50_steps=40, r50_train=1024, interp_steps=40,
)  # fmt: skip


def condition_rows(with_offset: bool) -> list[dict]:
    """Conditions in the paper's row order (ADAGRAD, BATCH, CONST, ANNEAL[, OFFSET])."""
    names = ["adagrad", "batch", "const", "anneal"] + (["offset"] if with_offset else [])
    return [
        dict(zip(names, flags, strict=True)) for flags in itertools.product(*[(0, 1)] * len(names))
    ]


def make_table_runner(method, batch_size, n_steps, segment, cfd_every, target_score):
    """One jitted program advancing a stack of runs (conditions x trials) by ``segment`` steps.

    The stack is mapped with ``lax.map`` rather than ``vmap``: the flow vmaps
    correctly, but on CPU the batched kernel blocks ran ~5x slower than running
    the same compiled step over the runs in sequence (measured, see the JSON).
    """
    flow = sdflow.particle_flow(method, n_steps, batch_size=batch_size, target_score=target_score)

    def one(state, target, cfd_key):
        monitor = lambda p: metrics.cfd(p, target, key=cfd_key)
        return sdflow.run_particle_flow(
            flow, state, target, segment, monitor=monitor, monitor_every=cfd_every
        )

    run = jax.jit(lambda states, target, keys: jax.lax.map(
        lambda sk: one(sk[0], target, sk[1]), (states, keys)))  # fmt: skip
    init = jax.jit(jax.vmap(flow.init))
    return init, run


def run_table(key, table, cfg, log, methods=METHODS):
    """All conditions x methods x trials of one table; returns per-run min CFD and snapshots."""
    d = 2 if table == "grid" else 3
    with_offset = table == "question_mark"
    gm = toy.grid25_mixture() if table == "grid" else toy.question_mark_mixture()
    cosine = GEOMETRY[table]["cosine"]
    k_target, k_base, k_flow, k_cfd, k_thr = jax.random.split(key, 5)
    n = cfg["n_points"]
    target = gm.sample(k_target, n)
    rows = condition_rows(with_offset)
    trials = cfg["trials"]

    # Base draws: one standard-normal draw per trial, shifted/scaled per condition.
    unit = jax.random.normal(k_base, (trials, n, d))
    if table == "grid":
        bases = {0: GRID_BASE_STD * unit + jnp.asarray(GRID_BASE_MEAN)}
    else:
        centre = target.mean(0)
        bases = {
            0: QM_BASE_STD * unit + centre,
            1: QM_BASE_STD * unit + centre + jnp.asarray(QM_OFFSET),
        }
    sigma2_const = {
        off: [float(sdflow.median_heuristic_sigma2(b)) for b in base] for off, base in bases.items()
    }

    initial_cfd = {
        off: [
            float(metrics.cfd(b, target, key=jax.random.fold_in(k_cfd, t)))
            for t, b in enumerate(base)
        ]
        for off, base in bases.items()
    }
    start = time.time()
    thr = metrics.cfd_threshold(k_thr, gm.sample, n, n_trials=cfg["threshold_pairs"])
    log(
        f"[{table}] CFD threshold {thr:.4f} (paper {PAPER_THRESHOLDS[table]}) "
        f"in {time.time() - start:.1f}s"
    )

    snapshot_steps = sorted({0, *range(cfg["segment"], cfg["steps"] + 1, cfg["segment"])})
    results = {m: {} for m in methods}
    snapshots = {m: {} for m in methods}
    timings = {}
    for method in methods:
        for batch in (0, 1):
            sel = [i for i, r in enumerate(rows) if r["batch"] == batch]
            conds, states_particles, keys, cfd_keys = [], [], [], []
            for i in sel:
                r = rows[i]
                off = r.get("offset", 0)
                for t in range(trials):
                    conds.append(sdflow.FlowConditions.create(
                        adagrad=bool(r["adagrad"]), anneal=bool(r["anneal"]),
                        constant_noise=bool(r["const"]), sigma2_const=sigma2_const[off][t],
                        sigma2_max=cosine["sigma2_max"], sigma2_min=cosine["sigma2_min"],
                        step_size=0.1,
                    ))  # fmt: skip
                    states_particles.append(bases[off][t])
                    keys.append(jax.random.fold_in(k_flow, t))
                    cfd_keys.append(jax.random.fold_in(k_cfd, t))
            init, run = make_table_runner(
                "svgd" if method == "svgd_kernel" else method,
                cfg["batch_size"] if batch else None, cfg["steps"], cfg["segment"],
                cfg["cfd_every"], None if method == "svgd_kernel" else gm.score,
            )  # fmt: skip
            start = time.time()
            state = init(
                jnp.stack(keys), jnp.stack(states_particles), sdflow.stack_conditions(conds)
            )
            cfd_keys = jnp.stack(cfd_keys)
            traces, snaps = [], [np.asarray(state.particles)]
            for _ in range(cfg["steps"] // cfg["segment"]):
                state, trace = run(state, target, cfd_keys)
                traces.append(np.asarray(trace))
                snaps.append(np.asarray(state.particles))
            trace = np.concatenate(traces, axis=1)  # (runs, steps / cfd_every)
            trace = np.where(np.isfinite(trace), trace, np.inf)
            elapsed = time.time() - start
            timings[f"{method}/batch={batch}"] = elapsed
            log(
                f"[{table}] {method:4s} batch={batch}: {len(conds)} runs x {cfg['steps']} steps "
                f"in {elapsed:.1f}s"
            )
            min_cfd = trace.min(axis=1).reshape(len(sel), trials)
            final_finite = np.isfinite(snaps[-1]).all(axis=(1, 2)).reshape(len(sel), trials)
            for j, i in enumerate(sel):
                results[method][i] = {
                    "min_cfd": min_cfd[j].tolist(),
                    "final_finite": final_finite[j].tolist(),
                }
                # Trial-0 snapshots of every row, for the evolution strips and Fig. 4.
                snapshots[method][i] = np.stack([s[j * trials] for s in snaps])
    return dict(
        target=np.asarray(target), rows=rows, threshold=thr, results=results,
        snapshots=snapshots, snapshot_steps=snapshot_steps, timings=timings,
        sigma2_const=sigma2_const, initial_cfd=initial_cfd,
    )  # fmt: skip


def table_markdown(table_out, paper_conv, paper_cfd, with_offset) -> tuple[str, str, list]:
    """Markdown for convergence (Table 1/2) and mean minimum CFD (Table 3/4), ours | paper."""
    thr = table_out["threshold"]
    methods = list(table_out["results"])
    head = ["ADAGRAD", "BATCH", "CONST", "ANNEAL"] + (["OFFSET"] if with_offset else [])
    yn = lambda v: "Y" if v else "N"
    ours = " | ".join(m.upper() for m in methods)
    paper = " | ".join(f"paper {m.upper()}" for m in methods)
    conv_lines = ["| " + " | ".join(head) + f" | {ours} | {paper} |"]
    cfd_lines = [conv_lines[0]]
    sep = "|" + "---|" * (len(head) + 2 * len(methods))
    conv_lines.append(sep)
    cfd_lines.append(sep)
    records = []
    for i, row in enumerate(table_out["rows"]):
        flags = " | ".join(
            yn(row[k]) for k in ["adagrad", "batch", "const", "anneal", "offset"][: len(head)]
        )
        conv, means = [], []
        for m in methods:
            vals = np.asarray(table_out["results"][m][i]["min_cfd"])
            conv.append(float(np.mean(vals < thr)))
            means.append(float(np.mean(vals)) if np.all(np.isfinite(vals)) else float("inf"))
        p_conv = [paper_conv[i][PAPER_COLUMN[m]] for m in methods]
        p_cfd = [paper_cfd[i][PAPER_COLUMN[m]] for m in methods]
        conv_lines.append(
            f"| {flags} | " + " | ".join(f"{c:.1f}" for c in conv) + " | "
            + " | ".join(str(v) for v in p_conv) + " |"
        )  # fmt: skip
        cfd_lines.append(
            f"| {flags} | " + " | ".join(f"{c:.4f}" for c in means) + " | "
            + " | ".join(f"{v:.4f}" for v in p_cfd) + " |"
        )  # fmt: skip
        records.append(
            dict(
                row=row,
                convergence=dict(zip(methods, conv, strict=True)),
                mean_min_cfd=dict(zip(methods, means, strict=True)),
                paper_convergence=dict(zip(methods, p_conv, strict=True)),
                paper_mean_min_cfd=dict(zip(methods, p_cfd, strict=True)),
            )
        )
    return "\n".join(conv_lines), "\n".join(cfd_lines), records


def plot_strip(path, table_out, row_index, title):
    """Evolution strips (Fig. 1/2): rows = methods, columns = snapshot steps."""
    steps = table_out["snapshot_steps"]
    show = [s for s in (0, 50, 100, 250, 500, steps[-1]) if s in steps] or steps
    cols = [steps.index(s) for s in show]
    target = table_out["target"]
    methods = list(table_out["snapshots"])
    fig, axes = plt.subplots(
        len(methods), len(cols), figsize=(2.2 * len(cols), 2.2 * len(methods)), squeeze=False
    )
    for r, m in enumerate(methods):
        snaps = table_out["snapshots"][m][row_index]
        for c, idx in enumerate(cols):
            ax = axes[r, c]
            ax.scatter(target[:, 0], target[:, 1], s=1, c="tab:red", alpha=0.3)
            pts = snaps[idx]
            ok = np.isfinite(pts).all(1)
            ax.scatter(pts[ok, 0], pts[ok, 1], s=1, c="tab:blue", alpha=0.5)
            ax.set_xlim(-12, 8) if target.shape[1] == 2 else ax.set_xlim(-3, 6)
            ax.set_ylim(-8, 12) if target.shape[1] == 2 else ax.set_ylim(-3, 6)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"step {show[c]}", fontsize=8)
            if c == 0:
                ax.set_ylabel(m.upper())
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_interpolation(key, cfg, log):
    """Fig. 3: SD flow swiss roll -> question mark and back (cosine schedule of sec. 7.2.2)."""
    n = cfg["n_points"]
    k1, k2, k3 = jax.random.split(key, 3)
    roll = toy.sample_swiss_roll_3d(k1, n)
    qm = toy.question_mark_mixture().sample(k2, n)
    steps = cfg["interp_steps"]
    flow = sdflow.particle_flow("sd", steps)
    cond = sdflow.FlowConditions.create(
        anneal=True, constant_noise=False, sigma2_max=4.0, sigma2_min=0.5, step_size=0.1
    )
    conds = sdflow.stack_conditions([cond, cond])
    state = jax.vmap(flow.init)(jax.random.split(k3, 2), jnp.stack([roll, qm]), conds)
    targets = jnp.stack([qm, roll])
    seg = cfg["segment"]
    run = jax.jit(jax.vmap(lambda s, t: sdflow.run_particle_flow(flow, s, t, seg)[0]))
    snaps = [np.asarray(state.particles)]
    start = time.time()
    for _ in range(steps // seg):
        state = run(state, targets)
        snaps.append(np.asarray(state.particles))
    log(f"[interpolation] {steps} steps in {time.time() - start:.1f}s")
    final_cfd = [
        float(metrics.cfd(snaps[-1][i], targets[i], key=jax.random.key(7))) for i in range(2)
    ]
    return dict(snapshots=np.stack(snaps, 1), steps=list(range(0, steps + 1, seg)),
                final_cfd={"roll_to_question_mark": final_cfd[0],
                           "question_mark_to_roll": final_cfd[1]})  # fmt: skip


def plot_interpolation(path, interp):
    steps = interp["steps"]
    show = [s for s in (0, 50, 100, 250, 500, steps[-1]) if s in steps] or steps
    fig = plt.figure(figsize=(2.4 * len(show), 5.0))
    for r in range(2):
        for c, s in enumerate(show):
            ax = fig.add_subplot(2, len(show), r * len(show) + c + 1, projection="3d")
            pts = interp["snapshots"][r, steps.index(s)]
            ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], s=1, c="tab:blue")
            ax.set_title(f"step {s}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_zticks([])
    fig.suptitle(
        "Fig. 3: swiss roll -> question mark (top), question mark -> swiss roll (bottom)",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def nn_histogram(path, synthetic, target, title):
    """Fig. 4: distances to the first nearest neighbour in the target set."""
    syn = np.asarray(metrics.nearest_neighbor_distances(synthetic, target))
    tgt = np.asarray(metrics.nearest_neighbor_distances(target, target, exclude_self=True))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bins = np.linspace(0, max(syn.max(), tgt.max()), 40)
    ax.hist(syn, bins=bins, alpha=0.5, color="tab:blue", label="synthetic -> target")
    ax.hist(tgt, bins=bins, alpha=0.5, color="tab:red", label="target -> target (excl. self)")
    ax.set_xlabel("distance to first nearest neighbour in the target set")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return dict(synthetic_mean=float(syn.mean()), target_mean=float(tgt.mean()),
                ratio=float(syn.mean() / tgt.mean()),
                synthetic_frac_below_1e_3=float(np.mean(syn < 1e-3)))  # fmt: skip


def run_r50(key, cfg, log):
    """App. C.4 / Fig. 5: linear generator on N(mu, B B^T) in R^50 with Alg. 2."""
    k_params, k_train, k_gen, k_flow, k_eval, k_held = jax.random.split(key, 6)
    B, mu = toy.linear_gaussian_params(k_params)
    train = toy.sample_linear_gaussian(k_train, cfg["r50_train"], B, mu)
    model = LinearGenerator(out_dim=50)
    params = model.init(k_gen, jnp.zeros((1, 25)))
    gen_fn = model.apply
    batch = min(1024, cfg["r50_train"])
    # sigma^2 = 10 x mean distance of the initial synthetic batch to its first NN in the target.
    init_batch = gen_fn(params, jax.random.normal(k_eval, (batch, 25)))
    nn0 = float(jnp.mean(metrics.nearest_neighbor_distances(init_batch, train)))
    sigma2 = 10.0 * nn0
    flow = sdflow.generator_flow(
        gen_fn, optax.sgd(1e-3), latent_dim=25, batch_size=batch,
        sigma=math.sqrt(sigma2), step_size=1.0,
    )  # fmt: skip

    @jax.jit
    def step(state, k):
        idx = jax.random.choice(k, train.shape[0], (batch,), replace=False)
        return flow.update(state, train[idx])

    state = flow.init(k_flow, params)
    start = time.time()
    losses = []
    for k in jax.random.split(k_flow, cfg["r50_steps"]):
        state, info = step(state, k)
        losses.append(float(info["loss"]))
    log(
        f"[R^50] {cfg['r50_steps']} generator steps in {time.time() - start:.1f}s, "
        f"sigma^2 = {sigma2:.1f}"
    )
    b_hat, mu_hat = state.params["params"]["B"], state.params["params"]["mu"]
    cov, cov_hat = B @ B.T, b_hat @ b_hat.T
    generated = gen_fn(state.params, jax.random.normal(k_eval, (batch, 25)))
    held = toy.sample_linear_gaussian(k_held, batch, B, mu)
    syn_nn = np.asarray(metrics.nearest_neighbor_distances(generated, train))
    held_nn = np.asarray(metrics.nearest_neighbor_distances(held, train))
    self_nn = np.asarray(metrics.nearest_neighbor_distances(train, train, exclude_self=True))
    return dict(
        sigma2=sigma2, initial_mean_nn_distance=nn0, steps=cfg["r50_steps"], batch=batch,
        n_train=cfg["r50_train"],
        mean_abs_error=float(jnp.mean(jnp.abs(mu_hat - mu))),
        mean_rel_error=float(jnp.linalg.norm(mu_hat - mu) / jnp.linalg.norm(mu)),
        cov_rel_frobenius_error=float(jnp.linalg.norm(cov_hat - cov) / jnp.linalg.norm(cov)),
        cov_max_abs_error=float(jnp.max(jnp.abs(cov_hat - cov))),
        nn_synthetic_mean=float(syn_nn.mean()), nn_heldout_target_mean=float(held_nn.mean()),
        nn_target_self_mean=float(self_nn.mean()),
        nn_ratio_synthetic_over_target_self=float(syn_nn.mean() / self_nn.mean()),
        loss_first=losses[0], loss_last=losses[-1],
        _plot=dict(mu=np.asarray(mu), mu_hat=np.asarray(mu_hat), cov=np.asarray(cov),
                   cov_hat=np.asarray(cov_hat), syn_nn=syn_nn, self_nn=self_nn),
    )  # fmt: skip


def plot_r50(path, r50):
    p = r50["_plot"]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].scatter(p["mu"], p["mu_hat"], s=6)
    lo, hi = p["mu"].min(), p["mu"].max()
    axes[0].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[0].set_xlabel(r"$\mu$")
    axes[0].set_ylabel(r"$\hat\mu$")
    iu = np.triu_indices(p["cov"].shape[0])
    axes[1].scatter(p["cov"][iu], p["cov_hat"][iu], s=2)
    lo, hi = p["cov"].min(), p["cov"].max()
    axes[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[1].set_xlabel(r"$BB^\top$")
    axes[1].set_ylabel(r"$\hat B\hat B^\top$")
    bins = np.linspace(0, max(p["syn_nn"].max(), p["self_nn"].max()), 40)
    axes[2].hist(p["syn_nn"], bins=bins, alpha=0.5, label="synthetic -> target")
    axes[2].hist(p["self_nn"], bins=bins, alpha=0.5, label="target -> target (excl. self)")
    axes[2].legend(fontsize=7)
    axes[2].set_xlabel("first-NN distance")
    fig.suptitle(f"Fig. 5: R^50 linear generator, {r50['steps']} steps of Alg. 2", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings for the tests")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=None, help="override trials per condition")
    parser.add_argument(
        "--trials-question-mark", type=int, default=None,
        help="override trials per condition for Tables 2/4 only",
    )  # fmt: skip
    parser.add_argument("--tables", default="grid,question_mark")
    parser.add_argument("--skip-extras", action="store_true", help="only Tables 1-4")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help=f"subset of {ALL_METHODS}, comma-separated"
    )
    parser.add_argument("--name", default=NAME, help="prefix of the output files")
    args = parser.parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.trials is not None:
        cfg["trials"] = args.trials
    cfg["trials_question_mark"] = (
        args.trials_question_mark if args.trials_question_mark is not None else cfg["trials"]
    )
    methods = tuple(m for m in args.methods.split(",") if m)
    if not methods or any(m not in ALL_METHODS for m in methods):
        parser.error(f"--methods must be a subset of {ALL_METHODS}, got {args.methods!r}")
    name = args.name
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_lines = []

    def log(msg):
        print(msg, flush=True)
        log_lines.append(msg)

    key = jax.random.key(args.seed)
    k_grid, k_qm, k_interp, k_r50 = jax.random.split(key, 4)
    record = dict(
        paper="Weber, The Score-Difference Flow for Implicit Generative Modeling (TMLR)",
        quick=args.quick, methods=list(methods), config=cfg, geometry=GEOMETRY,
        paper_thresholds=PAPER_THRESHOLDS,
        scaled_down=[f"{k}: {cfg[k]} (paper/full {FULL.get(k, FULL['trials'])})"
                     for k in cfg if cfg[k] != FULL.get(k, FULL["trials"])],
        notes=[
            "min CFD is taken over evaluations every cfd_every steps (not every step)",
            "CFD compares the particles with the target set they were fit to, as the paper's "
            "values far below the threshold imply",
            "SVGD uses the exact mixture score; its kernel bandwidth is the condition's sigma",
            "SD step is eta/2 (D_p(z) - D_q(z)) (eq. 15); MMD eq. 47; SVGD eq. 51",
        ],
    )  # fmt: skip
    t0 = time.time()
    markdown = [f"# SD flow tables ({'quick' if args.quick else 'full'} run)\n"]
    tables = [t for t in args.tables.split(",") if t]
    specs = {
        "grid": (k_grid, PAPER_TABLE1, PAPER_TABLE3, "Table 1", "Table 3", False),
        "question_mark": (k_qm, PAPER_TABLE2, PAPER_TABLE4, "Table 2", "Table 4", True),
    }
    outs = {}
    for table in tables:
        k, p_conv, p_cfd, name_conv, name_cfd, with_offset = specs[table]
        start = time.time()
        table_cfg = dict(cfg, trials=cfg["trials_question_mark"]) if with_offset else cfg
        res = run_table(k, table, table_cfg, log, methods)
        outs[table] = res
        conv_md, cfd_md, rows = table_markdown(res, p_conv, p_cfd, with_offset)
        markdown += [
            f"## {name_conv}: convergence probability ({table}, threshold {res['threshold']:.4f}, "
            f"paper {PAPER_THRESHOLDS[table]})\n", conv_md, "",
            f"## {name_cfd}: mean minimum CFD ({table})\n", cfd_md, "",
        ]  # fmt: skip
        sd_conv = [r["convergence"]["sd"] for r in rows if "sd" in r["convergence"]]
        record[table] = dict(
            threshold=res["threshold"], rows=rows, timings_s=res["timings"],
            wall_s=time.time() - start,
            sd_converged_every_condition=bool(sd_conv) and min(sd_conv) == 1.0,
            sigma2_const=res["sigma2_const"], initial_cfd=res["initial_cfd"],
            min_cfd_per_trial={m: {str(i): res["results"][m][i] for i in res["results"][m]}
                               for m in methods},
        )  # fmt: skip
        strip_row = 1 if table == "grid" else 3  # the rows the paper's Figs. 1 and 2 show
        fig_name = "fig1_grid_strip.png" if table == "grid" else "fig2_question_mark_strip.png"
        flags = " ".join(
            f"{k.upper()}={'Y' if v else 'N'}" for k, v in res["rows"][strip_row].items()
        )
        plot_strip(out / f"{name}_{fig_name}", res, strip_row, f"{table}: {flags}, trial 0")
        _dump(out, record, markdown, log_lines, t0, name)

    if not args.skip_extras:
        if "question_mark" in outs and "sd" in methods:
            res = outs["question_mark"]
            final = res["snapshots"]["sd"][3][-1]
            record["nearest_neighbour"] = nn_histogram(
                out / f"{name}_fig4_nn_histogram.png", final, res["target"],
                "Fig. 4: SD flow on the question mark (Table 2 row 4, trial 0)",
            )  # fmt: skip
        interp = run_interpolation(k_interp, cfg, log)
        plot_interpolation(out / f"{name}_fig3_interpolation.png", interp)
        record["interpolation"] = dict(final_cfd=interp["final_cfd"], steps=cfg["interp_steps"])
        r50 = run_r50(k_r50, cfg, log)
        plot_r50(out / f"{name}_fig5_r50.png", r50)
        record["r50"] = {k: v for k, v in r50.items() if not k.startswith("_")}
        markdown += [
            "## R^50 generator (App. C.4, Fig. 5)\n",
            f"- mean: mean |mu_hat - mu| = {r50['mean_abs_error']:.4f}, "
            f"relative L2 error {r50['mean_rel_error']:.4f}",
            f"- covariance: relative Frobenius error {r50['cov_rel_frobenius_error']:.4f}",
            f"- nearest neighbours: synthetic -> target {r50['nn_synthetic_mean']:.3f}, "
            f"target -> target (excl. self) {r50['nn_target_self_mean']:.3f}, "
            f"held-out target -> target {r50['nn_heldout_target_mean']:.3f}",
            "",
        ]  # fmt: skip
    _dump(out, record, markdown, log_lines, t0, name)
    return record


def _dump(out, record, markdown, log_lines, t0, name=NAME):
    """Write the JSON and markdown so far (after each stage, so a long run keeps its tables)."""
    record["wall_s"] = time.time() - t0
    record["log"] = log_lines
    (out / f"{name}_tables.md").write_text("\n".join(markdown) + "\n")
    (out / f"{name}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
