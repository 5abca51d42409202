"""Zhang et al. sec. 5: the WPO-informed kernel model vs DSM, vs early stopping, and in 6-D.

Scaled down to a CPU budget of ~25 core-minutes on a heavily shared 2-core machine
(every part records its CPU time, wall time and load average). Parts:

- ``fig2`` (Fig. 2, 3, 5): WPO kernel model (Alg. 1, closed-form ISM at the
  terminal time) vs a DSM-trained ``ScoreMLP`` (same 5 x 64 GeLU trunk, VP SDE)
  on the same thin-moons training set, 3 seeds. Both are evaluated at the same
  step counts (matched steps); DSM, ~10x cheaper per step, continues to a
  similar CPU time. W2 to held-out data is the mean over 5 draws of 1000
  samples (5 disjoint held-out references) and over the seeds; the time-to-level
  comparison uses a level fixed in advance, 1.5 x the W2 between two fresh
  1000-point data sets (the data floor). Fig. 3: the model's own density
  (eq. 25); Fig. 5: covariance ellipses and their alignment with the moons.
- ``fig6`` (Fig. 6): the reverse SDE driven by the empirical kernel score
  (eq. 23) stopped at ``eps``, with ``eps`` chosen on a validation split (the
  early-stopped sampler draws from the isotropic KDE of variance ``eps``, whose
  validation likelihood is exact), against the WPO model with its std cap
  chosen on the same split: held-out log-likelihood and the nearest-neighbour
  memorization ratio.
- ``fig4`` (Fig. 4): 6-D swiss roll. First the diagnosis at the previous run's
  setting (1000 centres, 2000 steps): per-kernel std spectrum and softmax share
  logged during training, the held-out ISM with and without a std cap, and a
  positive-diagonal (log-Cholesky) net as an ablation. Then the run at the
  largest scale the budget allows (``roll_n_centers`` centres, 6 hidden layers,
  the paper's 1e6 training points), reporting the best-validation checkpoint
  (``wgdiff.wpo.BestValidationCheckpoint``) before and after the std cap
  (``WPOKernelModel.cap_std`` chosen by ``tune_max_std``), against the true
  held-out log-likelihood (Monte Carlo over the noise-free roll) and an
  isotropic KDE with validated bandwidth on the same training points.
- ``fig4capacity``: what a fixed number of kernels reaches on the same data: isotropic
  KDEs with validated bandwidth on the WPO model's own centres and on random training
  subsets of 3000, 1e4 and 1e5 points (about a CPU-minute).
- ``fig4paper``: the ``fig4`` run with the paper's 5000 centres (``paper_n_centers``),
  everything else equal.

Authors' settings (papers/README.md): 1000 centres (paper text: 5000), Adam
2e-3, batch 64, ``Gamma = L L^T + 0.01 I``; we train for fewer steps (see
``config``/``deviations`` in the JSON).

Run: ``python experiments/wpo_kernel.py [--quick] [--part PART] [--out DIR]`` with PART one of
fig2, fig6, fig4diag, fig4ablation, fig4, fig4capacity, fig4paper, all (default),
merge.
Full parts write ``results/wpo_kernel_part_<part>.json``; ``--part merge``
assembles ``results/wpo_kernel.json``. ``--quick`` writes ``wpo_kernel_quick*``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from wgdiff.data import toy
from wgdiff.losses import dsm_loss
from wgdiff.metrics import nearest_neighbor_ratio, w2
from wgdiff.nets import ScoreMLP
from wgdiff.nets.cholesky import CholeskyMLP, exact_gelu, fill_lower_triangular
from wgdiff.samplers import euler_maruyama, log_likelihood
from wgdiff.sde import VPSDE, BrownianSDE
from wgdiff.train import create_train_state, dataset_sampler, fit, make_train_step
from wgdiff.wpo import (
    AUTHORS_SETTINGS,
    BestValidationCheckpoint,
    empirical_log_density,
    empirical_score_fn,
    init_wpo,
    ism_loss,
    kernel_diagnostics,
    log_density,
    marginal_mixture,
    model_from_params,
    nonfinite_updates,
    split_centers,
    tune_kde_variance,
    tune_max_std,
    wpo_optimizer,
)

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "wpo_kernel"
PARTS = ("fig2", "fig6", "fig4diag", "fig4ablation", "fig4", "fig4capacity", "fig4paper")

FULL = {
    "seeds": 3,
    "n_train": 20_000,
    "n_centers": AUTHORS_SETTINGS["n_centers"],
    "n_draws": 5,
    "n_eval_samples": 1_000,
    "matched_steps": (250, 500, 1_000),
    "dsm_extra_steps": (3_000, 8_000),
    "n_ll_dsm": 100,
    "sampler_steps": 250,
    "mem_datasets": ("thin_moons", "swiss_roll_2d"),
    "mem_n_train": 2_000,
    "mem_n_val": 500,
    "mem_wpo_steps": 2_000,
    "mem_samples": 2_000,
    "mem_eps": (1e-1, 1e-2, 1e-3, 1e-4, 1e-5),
    "mem_eps_grid": tuple(float(e) for e in np.geomspace(1e-5, 1e-1, 17)),
    "mem_steps_per_stage": 80,
    "diag_n_train": 20_000,
    "diag_n_centers": 1_000,
    "diag_steps": 2_000,
    "diag_log_every": 500,
    "roll_n_train": 1_000_000,
    "roll_n_train_base": 50_000,
    "roll_n_val": 2_000,
    "roll_n_centers": 3_000,
    "paper_n_centers": 5_000,
    "roll_hidden": (64,) * 6,
    "roll_steps": 20_000,
    "roll_log_every": 1_000,
    "roll_n_ism_eval": 2_000,
    "roll_train_max_std": 1.0,
    "roll_warmup": 200,
    "roll_chunk": 1_024,
    "roll_true_ll_mc": (50_000, 100_000),
    "kde_bandwidths": (0.04, 0.05, 0.06, 0.07, 0.08, 0.1, 0.12),
    "capacity_kernels": (3_000, 10_000, 100_000),
    "capacity_bandwidths": tuple(float(h) for h in np.geomspace(0.04, 0.4, 11)),
    "grid": 160,
}
QUICK = {
    "seeds": 2,
    "n_train": 1_200,
    "n_centers": 100,
    "n_draws": 2,
    "n_eval_samples": 100,
    "matched_steps": (10, 20),
    "dsm_extra_steps": (40,),
    "n_ll_dsm": 8,
    "sampler_steps": 50,
    "mem_datasets": ("thin_moons",),
    "mem_n_train": 300,
    "mem_n_val": 100,
    "mem_wpo_steps": 50,
    "mem_samples": 200,
    "mem_eps": (1e-2, 1e-4),
    "mem_eps_grid": (1e-4, 1e-3, 1e-2),
    "mem_steps_per_stage": 20,
    "diag_n_train": 600,
    "diag_n_centers": 100,
    "diag_steps": 20,
    "diag_log_every": 10,
    "roll_n_train": 1_500,
    "roll_n_train_base": 1_000,
    "roll_n_val": 200,
    "roll_n_centers": 200,
    "paper_n_centers": 300,
    "roll_hidden": (16,) * 2,
    "roll_steps": 20,
    "roll_log_every": 10,
    "roll_n_ism_eval": 200,
    "roll_train_max_std": 1.0,
    "roll_warmup": 5,
    "roll_chunk": 256,
    "roll_true_ll_mc": (2_000, 4_000),
    "kde_bandwidths": (0.08, 0.12),
    "capacity_kernels": (200, 400),
    "capacity_bandwidths": (0.08, 0.16, 0.32),
    "grid": 40,
}
BATCH = AUTHORS_SETTINGS["batch_size"]
LR = AUTHORS_SETTINGS["learning_rate"]
# Initial kernel bandwidth (CholeskyMLP diag_offset = 1/0.1): with the authors' plain net every
# kernel starts at covariance ~ I / 0.01 (see wgdiff.wpo.training.init_wpo).
INIT_BANDWIDTH = 0.1
WIDE_STD = 1.0  # the 6-D kernels' widest std counted as "wide" above this (data noise std 0.1)
LEVEL_FACTOR = 1.5  # time-to-level: W2 <= 1.5 x the data floor, fixed before the run
ROLL_NOISE = 0.1


def machine_record(start_wall: float, start_cpu: float) -> dict:
    return {
        "wall_seconds": time.perf_counter() - start_wall,
        "cpu_seconds": time.process_time() - start_cpu,
        "load_average_end": list(os.getloadavg()),
        "machine": "2 CPU cores shared with other jobs: wall time is not a clean measure",
    }


# -- training with evaluations at given step counts ------------------------------------------


def train_evaluated(state, train_step, sample_batch, data_key, eval_steps, evaluate):
    """``wgdiff.train.fit`` on the process CPU clock, evaluating at the step counts ``eval_steps``.

    ``fit`` times training only: compilation (its first step), evaluation and
    logging are off the clock, which is the process CPU time over all threads
    (the 2 cores are shared by other jobs, so wall time would hand whichever
    model trains during a quiet spell a larger budget).

    Returns:
        ``(state, rows)``: one row per step of ``eval_steps``, with ``steps``,
        ``train_seconds``, ``loss`` and the entries of ``evaluate(state)``.
    """
    grid = sorted(set(int(s) for s in eval_steps))
    every = math.gcd(*grid)

    def at_grid(st):
        return {"evaluated": True, **evaluate(st)} if int(st.step) in grid else None

    state, history = fit(
        state,
        train_step,
        sample_batch,
        grid[-1],
        data_key=data_key,
        clock="process",
        evaluate=at_grid,
        evaluate_every=every,
        log_every=grid[-1],
        progress=False,
    )
    rows = [
        {
            "steps": r["step"],
            "train_seconds": r["train_seconds"],
            "loss": r["loss"],
            **{k: v for k, v in r.items() if k not in _FIT_KEYS},
        }
        for r in history
        if r.get("evaluated")
    ]
    return state, rows


_FIT_KEYS = ("step", "train_seconds", "loss", "time", "compile_seconds", "stopped", "evaluated")


def w2_draws(samples, references) -> dict:
    """W2 of ``len(references)`` disjoint sample draws against disjoint held-out references."""
    n = references[0].shape[0]
    values = [float(w2(samples[k * n : (k + 1) * n], ref)) for k, ref in enumerate(references)]
    return {"w2_mean": float(np.mean(values)), "w2_std": float(np.std(values)), "w2_draws": values}


def data_floor(sample_fn, key, references) -> dict:
    """W2 between each held-out reference and a fresh data set of the same size."""
    n = references[0].shape[0]
    fresh = sample_fn(key, n * len(references))
    return w2_draws(fresh, references)


# -- Fig. 2: WPO vs DSM at matched steps and time to a fixed W2 level -------------------------


def fig2_one_seed(key, cfg, references, test):
    k_data, k_split, k_wpo, k_dsm, k_eval = jax.random.split(key, 5)
    train = toy.sample_thin_moons(k_data, cfg["n_train"])
    centers, pool = split_centers(k_split, train, cfg["n_centers"])
    # Keys derived before k_wpo / k_dsm are donated with the train states made from them.
    k_wpo_batch, k_dsm_batch = jax.random.fold_in(k_wpo, 1), jax.random.fold_in(k_dsm, 1)
    net, state, step, sampler = init_wpo(
        k_wpo, centers, pool, init_bandwidth=INIT_BANDWIDTH, learning_rate=LR, batch_size=BATCH
    )
    sde = VPSDE()
    score_net = ScoreMLP(features=(64,) * 5, activation=exact_gelu)
    params = score_net.init(k_dsm, train[:1], jnp.zeros((1,)))
    optimizer = optax.adam(LR)

    def dsm_objective(p, key, batch):
        return dsm_loss(key, sde, functools.partial(score_net.apply, p), batch, weighting="sigma2")

    n_total = cfg["n_draws"] * cfg["n_eval_samples"]
    n_ll = cfg["n_ll_dsm"]
    matched = tuple(cfg["matched_steps"])
    dsm_steps = matched + tuple(cfg["dsm_extra_steps"])

    def eval_wpo(st):
        model = model_from_params(net, st.params, centers)
        k_i = jax.random.fold_in(k_eval, int(st.step))
        return {
            **w2_draws(model.sample(k_i, n_total), references),
            "heldout_ll": float(jnp.mean(model.log_prob(test))),
            "heldout_ll_subset": float(jnp.mean(model.log_prob(test[:n_ll]))),
            "widest_kernel_std_max": float(np.max(model.kernel_stds())),
        }

    def eval_dsm(st):
        score_fn = functools.partial(score_net.apply, st.params)
        k_i = jax.random.fold_in(k_eval, int(st.step))
        samples = euler_maruyama(k_i, sde, score_fn, (n_total, 2), cfg["sampler_steps"])
        row = w2_draws(samples, references)
        if int(st.step) in (matched[-1], dsm_steps[-1]):
            ll = log_likelihood(k_i, sde, score_fn, test[:n_ll], rtol=1e-4, atol=1e-4)
            row["heldout_ll_subset"] = float(jnp.mean(ll))
        return row

    wpo_state, wpo_rows = train_evaluated(state, step, sampler, k_wpo_batch, matched, eval_wpo)
    _, dsm_rows = train_evaluated(
        create_train_state(k_dsm, params, optimizer),
        make_train_step(dsm_objective, optimizer, ema_decay=0.0),
        dataset_sampler(train, BATCH),
        k_dsm_batch,
        dsm_steps,
        eval_dsm,
    )
    curves = {"wpo": wpo_rows, "dsm": dsm_rows}
    return curves, (net, wpo_state.params, centers, train)


def first_reaching(rows, level):
    for row in rows:
        if row["w2_mean"] <= level:
            return {"steps": row["steps"], "train_seconds": row["train_seconds"]}
    return None


def fig2_summary(per_seed, floor, cfg):
    """Seed-averaged curves, the fixed-level comparison and the matched-step table."""
    level = LEVEL_FACTOR * floor
    avg = {}
    for m in ("wpo", "dsm"):
        rows = zip(*[s[m] for s in per_seed], strict=True)
        avg[m] = []
        for group in rows:
            w = np.array([r["w2_mean"] for r in group])
            entry = {
                "steps": group[0]["steps"],
                "train_seconds": float(np.mean([r["train_seconds"] for r in group])),
                "w2_mean": float(w.mean()),
                "w2_sem_over_seeds": float(w.std(ddof=1) / math.sqrt(len(w)))
                if len(w) > 1
                else None,
            }
            lls = [r["heldout_ll_subset"] for r in group if "heldout_ll_subset" in r]
            if len(lls) == len(group):
                entry["heldout_ll_subset"] = float(np.mean(lls))
            if m == "wpo":
                entry["heldout_ll"] = float(np.mean([r["heldout_ll"] for r in group]))
            avg[m].append(entry)
    matched = []
    for i, (w_row, d_row) in enumerate(zip(avg["wpo"], avg["dsm"], strict=False)):
        diffs = [s["wpo"][i]["w2_mean"] - s["dsm"][i]["w2_mean"] for s in per_seed]
        matched.append(
            {
                "steps": w_row["steps"],
                "w2_wpo": w_row["w2_mean"],
                "w2_dsm": d_row["w2_mean"],
                "w2_wpo_minus_dsm": float(np.mean(diffs)),
                "w2_wpo_minus_dsm_per_seed": [float(d) for d in diffs],
                "train_seconds_wpo": w_row["train_seconds"],
                "train_seconds_dsm": d_row["train_seconds"],
            }
        )
    reach = {m: first_reaching(avg[m], level) for m in avg}
    per_seed_reach = {m: [first_reaching(s[m], level) for s in per_seed] for m in avg}
    reached = {m: r for m, r in reach.items() if r is not None}
    final = {m: avg[m][-1] for m in avg}
    best = {m: min(avg[m], key=lambda r: r["w2_mean"]) for m in avg}
    return {
        "w2_level": level,
        "w2_level_rule": f"{LEVEL_FACTOR} x data floor (fixed before the run)",
        "reach_level_seed_averaged": reach,
        "reach_level_per_seed": per_seed_reach,
        "first_to_level": (
            min(reached, key=lambda m: reached[m]["train_seconds"]) if reached else None
        ),
        "matched_steps": matched,
        "final": {m: {k: final[m][k] for k in final[m] if k != "w2_sem_over_seeds"} for m in final},
        "best_checkpoint": best,
        "better_final_w2": min(final, key=lambda m: final[m]["w2_mean"]),
        "curves_seed_averaged": avg,
    }


def run_fig2(key, cfg):
    k_test, k_floor, k_seeds, k5 = jax.random.split(key, 4)
    n = cfg["n_eval_samples"]
    test = toy.sample_thin_moons(k_test, cfg["n_draws"] * n)
    references = [test[k * n : (k + 1) * n] for k in range(cfg["n_draws"])]
    floor = data_floor(toy.sample_thin_moons, k_floor, references)
    per_seed, first = [], None
    for seed in range(cfg["seeds"]):
        curves, trained = fig2_one_seed(jax.random.fold_in(k_seeds, seed), cfg, references, test)
        per_seed.append(curves)
        first = first or trained
    out = {
        "dataset": "thin_moons",
        "data_floor": floor,
        **fig2_summary(per_seed, floor["w2_mean"], cfg),
        "per_seed_curves": per_seed,
        "wpo_init_bandwidth": INIT_BANDWIDTH,
        "wpo_cap": "none: on thin moons no kernel widens (widest_kernel_std_max in the curves)",
        "dsm_sampler": f"Euler-Maruyama, {cfg['sampler_steps']} steps, VPSDE(0.1, 20)",
        "dsm_ll": (
            "wgdiff.samplers.log_likelihood (prob.-flow ODE, exact trace, rtol=atol=1e-4) on "
            f"the first {cfg['n_ll_dsm']} held-out points, at the last matched step and the end"
        ),
    }
    net, params, centers, train = first
    thin_model = model_from_params(net, params, centers)
    fig5, ellipses = fig5_ellipses(thin_model, k5)
    fig3 = {
        "heldout_ll": out["per_seed_curves"][0]["wpo"][-1]["heldout_ll"],
        "note": "seed 0's final model; density plotted straight from eq. 25",
    }
    return {"fig2": out, "fig3": fig3, "fig5": fig5}, (thin_model, train, ellipses)


# -- Fig. 3 and 5: density and covariance ellipses -----------------------------------------


def moon_tangent(z):
    """Unit tangent of the noise-free thin moon nearest to each point ``z (n, 2)``."""
    upper, lower = np.array([0.0, 0.0]), np.array([1.0, 0.5])
    d_up = np.abs(np.linalg.norm(z - upper, axis=1) - 1.0)
    d_lo = np.abs(np.linalg.norm(z - lower, axis=1) - 1.0)
    radial = np.where((d_up <= d_lo)[:, None], z - upper, z - lower)
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    return np.stack([-radial[:, 1], radial[:, 0]], axis=1)


def fig5_ellipses(model, key, n_show=25):
    idx = np.asarray(jax.random.choice(key, model.n_centers, (n_show,), replace=False))
    covs = np.asarray(model.covariances(), np.float64)
    evals, evecs = np.linalg.eigh(covs)
    z = np.asarray(model.centers, np.float64)
    major = evecs[:, :, -1]
    alignment = np.abs(np.sum(major * moon_tangent(z), axis=1))
    ratio = np.sqrt(evals[:, -1] / evals[:, 0])
    return {
        "shown_centres": idx.tolist(),
        "std_major_median": float(np.median(np.sqrt(evals[:, -1]))),
        "std_minor_median": float(np.median(np.sqrt(evals[:, 0]))),
        "anisotropy_median": float(np.median(ratio)),
        "major_axis_tangent_cos_median": float(np.median(alignment)),
        "share_major_axis_within_30deg_of_tangent": float(
            np.mean(alignment > math.cos(math.pi / 6))
        ),
        "data_noise_std": 0.02,
    }, (z[idx], evals[idx], evecs[idx])


def density_grid(logp_fn, lo, hi, n):
    xs = np.linspace(lo[0], hi[0], n)
    ys = np.linspace(lo[1], hi[1], n)
    xx, yy = np.meshgrid(xs, ys, indexing="xy")
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
    return xs, ys, np.exp(np.asarray(logp_fn(pts))).reshape(n, n)


# -- reverse SDE in stages -----------------------------------------------------------------


def staged_reverse_sde(key, score_fn, x_T, T, eps_list, steps_per_stage):
    """Reverse SDE of ``BrownianSDE(1)`` from T down through each eps, keeping the samples.

    ``BrownianSDE`` is time-homogeneous (its marginal at ``t`` does not depend on
    the horizon), so a process with horizon ``T' = eps_{k-1}`` continues the
    previous one exactly with the same score: each stage uses
    ``steps_per_stage`` uniform steps, keeping ``h / t`` small even at tiny eps.
    """
    out, x, start = {}, x_T, T
    for k, eps in enumerate(eps_list):
        sde = BrownianSDE(beta=1.0, T=float(start))
        x = euler_maruyama(
            jax.random.fold_in(key, k),
            sde,
            score_fn,
            x.shape,
            steps_per_stage,
            eps=float(eps),
            x_init=x,
        )
        out[eps] = x
        start = eps
    return out


# -- Fig. 6: early stopping with a validated eps vs WPO with a validated cap ----------------


def fig6_memorization(key, name, cfg):
    k_tr, k_val, k_te, k_split, k_init, k_run = jax.random.split(key, 6)
    sample = toy.get(name)
    train = sample(k_tr, cfg["mem_n_train"])
    val = sample(k_val, cfg["mem_n_val"])
    test = sample(k_te, cfg["mem_samples"])
    n = cfg["mem_samples"]
    # Early stopping at eps samples the KDE of variance eps: its validation likelihood is exact.
    eps_choice = tune_kde_variance(train, val, cfg["mem_eps_grid"])
    eps_list = sorted(set(cfg["mem_eps"]) | {eps_choice.best}, reverse=True)
    brownian = BrownianSDE(beta=1.0)
    # Exact p_T of the empirical measure: a training point plus N(0, T I).
    k_idx, k_noise = jax.random.split(k_run)
    x_T = train[jax.random.randint(k_idx, (n,), 0, train.shape[0])] + jnp.sqrt(
        brownian.T
    ) * jax.random.normal(k_noise, (n, 2))
    stages = staged_reverse_sde(
        k_run,
        empirical_score_fn(train, brownian),
        x_T,
        brownian.T,
        eps_list,
        cfg["mem_steps_per_stage"],
    )
    empirical = [
        {
            "eps_variance": eps,
            "validation_chosen": eps == eps_choice.best,
            "nn_ratio": float(nearest_neighbor_ratio(x, train, test)),
            "heldout_ll": float(jnp.mean(empirical_log_density(test, train, eps))),
            "w2": float(w2(x, test)),
        }
        for eps, x in stages.items()
    ]
    n_centers = min(cfg["n_centers"], train.shape[0] // 2)
    centers, pool = split_centers(k_split, train, n_centers)
    k_batch = jax.random.fold_in(k_init, 1)
    net, state, step, sampler = init_wpo(
        k_init, centers, pool, init_bandwidth=INIT_BANDWIDTH, learning_rate=LR, batch_size=BATCH
    )
    state, _ = fit(
        state,
        step,
        sampler,
        cfg["mem_wpo_steps"],
        data_key=k_batch,
        log_every=cfg["mem_wpo_steps"],
        progress=False,
    )
    raw = model_from_params(net, state.params, centers)
    capped, cap_choice = tune_max_std(raw, val)

    def wpo_row(model, k):
        direct = model.sample(jax.random.fold_in(k_run, 99 + k), n)
        return {
            "nn_ratio_direct_samples": float(nearest_neighbor_ratio(direct, train, test)),
            "heldout_ll": float(jnp.mean(model.log_prob(test))),
            "w2": float(w2(direct, test)),
            "widest_kernel_std_max": float(np.max(model.kernel_stds())),
        }, direct

    raw_row, _ = wpo_row(raw, 0)
    capped_row, direct = wpo_row(capped, 1)
    wpo_T = capped.sample(jax.random.fold_in(k_run, 98), n, brownian.T, brownian)
    via_sde = euler_maruyama(
        jax.random.fold_in(k_run, 97),
        brownian,
        capped.score_fn(brownian),
        (n, 2),
        4 * cfg["mem_steps_per_stage"],
        eps=1e-3,
        x_init=wpo_T,
    )
    capped_row["nn_ratio_reverse_sde"] = float(nearest_neighbor_ratio(via_sde, train, test))
    chosen = next(r for r in empirical if r["validation_chosen"])
    res = {
        "dataset": name,
        "n_train": int(train.shape[0]),
        "n_validation": int(val.shape[0]),
        "empirical": empirical,
        "early_stopping_eps_choice": eps_choice.to_dict(),
        "wpo": {
            "steps": int(state.step),
            "n_centers": n_centers,
            "uncapped": raw_row,
            "capped": capped_row,
            "max_std_choice": cap_choice.to_dict(),
        },
        "validated_comparison": {
            "early_stopping_eps": eps_choice.best,
            "early_stopping_heldout_ll": chosen["heldout_ll"],
            "early_stopping_nn_ratio": chosen["nn_ratio"],
            "wpo_heldout_ll": capped_row["heldout_ll"],
            "wpo_nn_ratio": capped_row["nn_ratio_direct_samples"],
            "better_heldout_ll": (
                "wpo" if capped_row["heldout_ll"] > chosen["heldout_ll"] else "early_stopping"
            ),
        },
    }
    plots = {"train": train, "stages": stages, "wpo": direct}
    return res, plots


def run_fig6(key, cfg):
    results, plots = [], []
    for i, name in enumerate(cfg["mem_datasets"]):
        res, p = fig6_memorization(jax.random.fold_in(key, i), name, cfg)
        results.append(res)
        plots.append((name, res, p))
    return {"fig6": results}, plots


# -- Fig. 4: 6-D swiss roll: diagnosis, fix, scale ------------------------------------------


class LogCholeskyMLP(CholeskyMLP):
    """Ablation: ``CholeskyMLP`` with a positive diagonal ``diag_offset * exp(raw)``.

    Pinheiro & Bates' log-Cholesky form: ``L`` can never pass through a zero
    diagonal, so ``L L^T`` is never singular. Used only to test whether the 6-D
    collapse is a conditioning problem of the plain parametrization.
    """

    @nn.compact
    def __call__(self, z):
        d = z.shape[-1]
        h = z
        for width in self.features:
            h = self.activation(nn.Dense(width)(h))
        raw = fill_lower_triangular(nn.Dense(d * (d + 1) // 2)(h), d)
        eye = jnp.eye(d, dtype=h.dtype)
        diag = self.diag_offset * jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))
        return raw * (1.0 - eye) + diag[..., None, :] * eye


def roll_sets(key, n_train, n_val, n_test):
    k_tr, k_val, k_te = jax.random.split(key, 3)
    return (
        toy.sample_swiss_roll_6d(k_tr, n_train),
        toy.sample_swiss_roll_6d(k_val, n_val),
        toy.sample_swiss_roll_6d(k_te, n_test),
    )


def true_roll_ll(key, test, n_mc: int) -> float:
    """Monte Carlo true mean log-density of the 6-D roll at ``test``.

    ``x = (r, 0, 0, 0) + 0.1 eps`` with r on the noise-free roll: the density is
    ``E_r N(x_{1:3}; r, 0.01 I) * N(x_{4:6}; 0, 0.01 I)``; the expectation is a
    mean over ``n_mc`` noise-free roll points (a KDE of exactly the noise variance).
    """
    clean = toy.sample_swiss_roll_3d(key, n_mc, noise=0.0)
    var = ROLL_NOISE**2
    ll_roll = empirical_log_density(test[:, :3], clean, var, chunk_size=2048)
    ll_rest = jnp.sum(-0.5 * test[:, 3:] ** 2 / var - 0.5 * jnp.log(2 * jnp.pi * var), axis=1)
    return float(jnp.mean(ll_roll + ll_rest))


def roll_centers(key, train, n_centers):
    """``train_roll``'s split of ``train`` into centres and ISM pool, and its init key."""
    k_split, k_init = jax.random.split(key)
    return (*split_centers(k_split, train, n_centers), k_init)


def train_roll(key, train, val, cfg_model, log_every, n_steps, more_ism_data=None):
    """Train the WPO model on the 6-D roll, logging the collapse diagnostics every few steps.

    The centres are split off ``train``; the ISM pool is the rest of ``train`` plus
    ``more_ism_data`` (if given), so a larger pool keeps the centres of ``train`` alone.
    Every ``log_every`` steps the library's ``BestValidationCheckpoint`` scores the
    validation log-likelihood; the diagnostics (NaN guard, std spectrum, softmax shares,
    ISM on pool points vs validation points) join its rows.

    Returns:
        ``(best_model, final_model, log, last_row, pool_size)``.
    """
    centers, pool, k_init = roll_centers(key, train, cfg_model["n_centers"])
    if more_ism_data is not None:
        pool = jnp.concatenate([pool, more_ism_data])
    k_batch = jax.random.fold_in(k_init, 1)
    net, state, step, sampler = init_wpo(
        k_init,
        centers,
        pool,
        net=cfg_model["net"],
        optimizer=cfg_model.get("optimizer"),
        max_std=cfg_model.get("max_std"),
        chunk_size=cfg_model["chunk"],
    )
    chunk = cfg_model["chunk"]
    pool_eval = pool[: cfg_model["n_ism_eval"]]

    def diagnostics(model, st):
        print(f"train_roll: step {int(st.step)}, CPU {time.process_time():.0f} s", flush=True)
        prec = model.precisions()
        return {
            "pool_ism": float(ism_loss(pool_eval, centers, prec, chunk_size=chunk)),
            "validation_ism": float(ism_loss(val, centers, prec, chunk_size=chunk)),
            **kernel_diagnostics(model, val).summary(WIDE_STD),
        }

    checkpoint = BestValidationCheckpoint(net, centers, val, chunk_size=chunk, extra=diagnostics)

    def diagnose(st):
        # NaN guard, logged: fit raises on a non-finite logged loss; wpo_optimizer skips
        # (and counts) non-finite updates; non-finite parameters end the run here.
        finite = all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(st.params))
        guard = {"params_finite": finite, "nonfinite_updates_skipped": nonfinite_updates(st)}
        if not finite:
            raise FloatingPointError(f"non-finite parameters at step {int(st.step)}: {guard}")
        return {**guard, **checkpoint(st)}

    initial = {"steps": 0, "train_seconds": 0.0, **diagnose(state)}
    steps = range(log_every, n_steps + 1, log_every)
    state, rows = train_evaluated(state, step, sampler, k_batch, steps, diagnose)
    final = model_from_params(net, state.params, centers, chunk_size=chunk)
    return checkpoint.model(), final, [initial, *rows], rows[-1], int(pool.shape[0])


def roll_eval(model, key, references, test, val) -> dict:
    n_total = len(references) * references[0].shape[0]
    return {
        "heldout_ll": float(jnp.mean(model.log_prob(test))),
        "validation_ll": float(jnp.mean(model.log_prob(val))),
        "heldout_ism": float(ism_loss(test, model.centers, model.precisions())),
        **w2_draws(model.sample(key, n_total), references),
        **kernel_diagnostics(model, val).summary(WIDE_STD),
    }


def run_fig4_diagnosis(key, cfg, nets=("cholesky",)):
    """The collapse at the previous run's setting (1000 centres, 5 x 64, 2000 steps).

    ``nets``: ``"cholesky"`` (the library's net) and/or ``"log_cholesky_ablation"``.
    """
    k_diag, _, _, k_eval, k_floor = jax.random.split(key, 5)
    n = cfg["n_eval_samples"]
    n_test = cfg["n_draws"] * n
    train, val, test = roll_sets(k_diag, cfg["diag_n_train"], cfg["roll_n_val"], n_test)
    references = [test[k * n : (k + 1) * n] for k in range(cfg["n_draws"])]
    diagnosis = {"setting": "previous run: 1000 centres, 5 x 64 GeLU, 2000 steps, 2e4 points"}
    all_nets = {
        "cholesky": CholeskyMLP(diag_offset=1.0 / INIT_BANDWIDTH),
        "log_cholesky_ablation": LogCholeskyMLP(diag_offset=1.0 / INIT_BANDWIDTH),
    }
    for label in nets:
        net = all_nets[label]
        spec = {"n_centers": cfg["diag_n_centers"], "net": net, "chunk": 256}
        spec["n_ism_eval"] = cfg["roll_n_ism_eval"]
        # the previous run's setting: its final parameters (no checkpoint choice)
        _, model, log, _, _ = train_roll(
            k_diag, train, val, spec, cfg["diag_log_every"], cfg["diag_steps"]
        )
        capped, choice = tune_max_std(model, val)
        fixed_caps = {
            f"cap_{c:g}": roll_eval(model.cap_std(c), k_eval, references, test, val)
            for c in (3.0, 1.0, 0.5)
        }
        diagnosis[label] = {
            "training_log": log,
            "before_fix": roll_eval(model, k_eval, references, test, val),
            "after_fix": roll_eval(capped, k_eval, references, test, val),
            "max_std_choice": choice.to_dict(),
            "fixed_caps": fixed_caps,
        }
    diagnosis["data_floor"] = data_floor(toy.sample_swiss_roll_6d, k_floor, references)
    diagnosis["wide_std_threshold"] = WIDE_STD
    return {"fig4_diagnosis" if "cholesky" in nets else "fig4_ablation": diagnosis}


def shared_rows(held_out, train) -> int:
    """Rows of ``train`` that are bit-identical to a row of ``held_out`` (a key-reuse check)."""
    held = {row.tobytes() for row in np.asarray(held_out)}
    return sum(row.tobytes() in held for row in np.asarray(train))


def fig4_sets(key, cfg):
    """The Fig. 4 data: ``(base, more, val, test, shared)`` from the key of ``run_fig4``.

    ``base`` is the ``roll_n_train_base``-point training set the centres are split from,
    ``more`` the extra ISM points (``base + more`` = the paper's 1e6 training points);
    ``shared`` counts training rows equal to a validation or test row (must be 0).
    """
    k_more, k_big = jax.random.split(key, 5)[:2]
    n_test = cfg["n_draws"] * cfg["n_eval_samples"]
    base, val, test = roll_sets(k_big, cfg["roll_n_train_base"], cfg["roll_n_val"], n_test)
    # k_more, not a key derived from k_big: fold_in(k_big, i) is split(k_big, 3)[i], so
    # fold_in(k_big, 2) reproduced the test set inside the pool (caught in a first run).
    more = toy.sample_swiss_roll_6d(k_more, cfg["roll_n_train"] - cfg["roll_n_train_base"])
    shared = shared_rows(jnp.concatenate([val, test]), jnp.concatenate([base, more]))
    if shared:
        raise ValueError(f"{shared} training rows are validation or test rows")
    return base, more, val, test, shared


def run_fig4_capacity(key, cfg):
    """How far a fixed number of kernels can get: isotropic KDEs of a given size.

    The WPO model of ``run_fig4`` has ``roll_n_centers`` kernels. An isotropic KDE on
    its very centres, and on random subsets of the 1e6 training points of each size in
    ``capacity_kernels``, with the bandwidth chosen on the validation split, gives the
    held-out log-likelihood a model of that many kernels reaches without learned
    covariances (the 1e6-kernel KDE is ``run_fig4``'s ``kde_baseline``).
    """
    base, more, val, test, _ = fig4_sets(key, cfg)
    train = jnp.concatenate([base, more])
    # the centres of run_fig4's model (train_roll with run_fig4's key)
    centers = roll_centers(jax.random.split(key, 5)[1], base, cfg["roll_n_centers"])[0]
    grid = [h * h for h in cfg["capacity_bandwidths"]]

    def kde_row(kernels, label):
        choice = tune_kde_variance(kernels, val, grid)
        edge = bool(np.isclose(choice.best, grid[0]) or np.isclose(choice.best, grid[-1]))
        return {
            "kernels": label,
            "n_kernels": int(kernels.shape[0]),
            "bandwidth": math.sqrt(choice.best),
            "bandwidth_at_grid_edge": edge,
            "validation_ll": float(max(choice.scores)),
            "heldout_ll": float(jnp.mean(empirical_log_density(test, kernels, choice.best))),
        }

    rows = [kde_row(centers, "the WPO model's own centres")]
    k_sub = jax.random.fold_in(key, 11)
    for size in cfg["capacity_kernels"]:
        index = jax.random.choice(jax.random.fold_in(k_sub, size), train.shape[0], (size,), False)
        rows.append(kde_row(train[index], "random subset of the training points"))
    return {"fig4_capacity": {"bandwidth_grid": list(cfg["capacity_bandwidths"]), "rows": rows}}


def run_fig4(key, cfg):
    """The largest 6-D run the budget allows, with the library's fixes, and baselines.

    Centres, validation and test sets are those of the ``roll_n_train_base``-point
    record (same keys); the ISM pool adds ``roll_n_train - roll_n_train_base`` fresh
    points (the paper's 1e6 training points), so the pool size is the only change
    from that record besides the best-validation checkpoint.
    """
    _, k_big, k_true, k_eval, k_floor = jax.random.split(key, 5)
    n = cfg["n_eval_samples"]
    out = {"wide_std_threshold": WIDE_STD}
    base, more, val, test, shared = fig4_sets(key, cfg)
    train = jnp.concatenate([base, more])
    n_test = test.shape[0]
    references = [test[k * n : (k + 1) * n] for k in range(cfg["n_draws"])]
    spec = {
        "n_centers": cfg["roll_n_centers"],
        "net": CholeskyMLP(features=cfg["roll_hidden"], diag_offset=1.0 / INIT_BANDWIDTH),
        "chunk": cfg["roll_chunk"],
        "n_ism_eval": cfg["roll_n_ism_eval"],
        # The training-time fix (wgdiff.wpo.training): std cap during training, and
        # clipped, warmed-up, cosine-decayed Adam that skips non-finite updates.
        "max_std": cfg["roll_train_max_std"],
        "optimizer": wpo_optimizer(cfg["roll_steps"], warmup_steps=cfg["roll_warmup"]),
    }
    best, final, log, last, pool_size = train_roll(
        k_big, base, val, spec, cfg["roll_log_every"], cfg["roll_steps"], more_ism_data=more
    )
    capped, choice = tune_max_std(best, val)
    floor = data_floor(toy.sample_swiss_roll_6d, jax.random.fold_in(k_floor, 1), references)
    true_ll = {
        m: true_roll_ll(jax.random.fold_in(k_true, m), test, m) for m in cfg["roll_true_ll_mc"]
    }
    true_value = true_ll[max(true_ll)]
    kde_choice = tune_kde_variance(train, val, [h * h for h in cfg["kde_bandwidths"]])
    k_idx, k_noise = jax.random.split(jax.random.fold_in(k_eval, 7))
    kde_samples = train[jax.random.randint(k_idx, (n_test,), 0, train.shape[0])] + math.sqrt(
        kde_choice.best
    ) * jax.random.normal(k_noise, (n_test, 6))
    kde = {
        "bandwidth": math.sqrt(kde_choice.best),
        "variance_choice": kde_choice.to_dict(),
        "n_kernels": int(train.shape[0]),
        "heldout_ll": float(jnp.mean(empirical_log_density(test, train, kde_choice.best))),
        **w2_draws(kde_samples, references),
    }
    after = roll_eval(capped, k_eval, references, test, val)
    out["scaled_run"] = {
        "n_centers": cfg["roll_n_centers"],
        "hidden": list(cfg["roll_hidden"]),
        "training_fix": {
            "train_max_std": cfg["roll_train_max_std"],
            "jitter": 1.0 / cfg["roll_train_max_std"] ** 2,
            "optimizer": "wgdiff.wpo.wpo_optimizer: clip 1.0, warm-up "
            f"{cfg['roll_warmup']}, cosine {LR:g} -> {LR * 0.01:g}, skip non-finite updates",
            "nonfinite_updates_skipped": last["nonfinite_updates_skipped"],
            "ism_pool": f"{pool_size} points (paper: 1e6 training points)",
            "checkpoint": "wgdiff.wpo.BestValidationCheckpoint: the parameters of best "
            f"validation log-likelihood, scored every {cfg['roll_log_every']} steps on the "
            f"{cfg['roll_n_val']}-point validation split (disjoint from the test set)",
        },
        "n_train": cfg["roll_n_train"],
        "n_train_base": cfg["roll_n_train_base"],
        "heldout_rows_in_training_set": shared,
        "ism_pool_size": pool_size,
        "draws_per_pool_point": BATCH * last["steps"] / pool_size,
        "steps": last["steps"],
        "train_seconds": last["train_seconds"],
        "fraction_of_2e4_steps": last["steps"] / 2e4,
        "fraction_of_paper_1e5_steps": last["steps"] / 1e5,
        "training_log": log,
        "best_step": last["best_step"],
        "final_step_model": roll_eval(final, k_eval, references, test, val),
        "before_fix": roll_eval(best, k_eval, references, test, val),
        "after_fix": after,
        "reported_model": "after_fix: best-validation checkpoint, std cap chosen on validation",
        "max_std_choice": choice.to_dict(),
        "data_floor": floor,
        "true_heldout_ll_mc": {str(m): v for m, v in true_ll.items()},
        "true_heldout_ll": true_value,
        "kde_baseline": kde,
        "targets": {
            "w2_within_2x_floor": after["w2_mean"] <= 2 * floor["w2_mean"],
            "w2_ratio_to_floor": after["w2_mean"] / floor["w2_mean"],
            "ll_within_0.3_of_true": after["heldout_ll"] >= true_value - 0.3,
            "ll_shortfall": true_value - after["heldout_ll"],
        },
    }
    return {"fig4": out}, (capped, test)


# -- plots ------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fig2(out_dir, name, res, thin):
    plt = _plt()
    from matplotlib.patches import Ellipse

    fig2 = res["fig2"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for m, label in (("wpo", "WPO kernel (ISM, t=0)"), ("dsm", "ScoreMLP (DSM, VP)")):
        avg = fig2["curves_seed_averaged"][m]
        for ax, x_key in zip(axes, ("steps", "train_seconds"), strict=True):
            ax.plot([r[x_key] for r in avg], [r["w2_mean"] for r in avg], "o-", label=label)
            for seed in fig2["per_seed_curves"]:
                ax.plot(
                    [r[x_key] for r in seed[m]],
                    [r["w2_mean"] for r in seed[m]],
                    "-",
                    lw=0.5,
                    color="C0" if m == "wpo" else "C1",
                    alpha=0.5,
                )
    for ax, lab in zip(axes, ("training steps", "training CPU seconds"), strict=True):
        ax.axhline(fig2["data_floor"]["w2_mean"], color="k", ls=":", label="data floor")
        ax.axhline(fig2["w2_level"], color="r", ls="--", label=f"level {LEVEL_FACTOR} x floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(lab)
        ax.set_ylabel("W2 to held-out data (mean of 5 draws, 3 seeds)")
        ax.legend(fontsize=7)
    fig.suptitle("Fig. 2 analogue: thin moons, matched steps and CPU time")
    fig.tight_layout()
    paths = [out_dir / f"{name}_fig2.png"]
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    model, train, (z, evals, evecs) = thin
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    xs, ys, dens = density_grid(model.log_prob, (-1.3, -0.8), (2.3, 1.3), res["grid"])
    axes[0].pcolormesh(xs, ys, dens, shading="auto", cmap="viridis")
    axes[0].set_title("Fig. 3: WPO model density (eq. 25), thin moons")
    for ax, zoom in ((axes[1], None), (axes[2], 0.25)):
        ax.scatter(train[:2000, 0], train[:2000, 1], s=1, c="0.7")
        for zi, ev, vec in zip(z, evals, evecs, strict=True):
            angle = math.degrees(math.atan2(vec[1, -1], vec[0, -1]))
            ax.add_patch(
                Ellipse(
                    zi,
                    4 * math.sqrt(ev[-1]),
                    4 * math.sqrt(ev[0]),
                    angle=angle,
                    fill=False,
                    color="r",
                )
            )
            ax.plot(*zi, "r.", ms=3)
        ax.set_aspect("equal")
        if zoom:
            ax.set_xlim(z[0, 0] - zoom, z[0, 0] + zoom)
            ax.set_ylim(z[0, 1] - zoom, z[0, 1] + zoom)
            ax.set_title("zoom on one centre")
        else:
            ax.set_title("Fig. 5: 2-std covariance ellipses at 25 centres")
    fig.tight_layout()
    paths.append(out_dir / f"{name}_fig3_fig5.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def plot_fig6(out_dir, name, mem_plots):
    plt = _plt()
    n_rows = len(mem_plots)
    n_cols = max(len(p["stages"]) for _, _, p in mem_plots) + 2
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.6 * n_rows), squeeze=False)
    for r, (dataset, res, p) in enumerate(mem_plots):
        train = np.asarray(p["train"])
        for c, (eps, x) in enumerate(p["stages"].items()):
            row = res["empirical"][c]
            tag = " (validated)" if row["validation_chosen"] else ""
            axes[r, c].scatter(*np.asarray(x).T, s=1)
            axes[r, c].set_title(
                f"empirical, eps={eps:.2g}{tag}\nNN ratio {row['nn_ratio']:.2f}", fontsize=8
            )
        capped = res["wpo"]["capped"]
        axes[r, -2].scatter(*np.asarray(p["wpo"]).T, s=1, c="C1")
        axes[r, -2].set_title(
            f"WPO (validated cap)\nNN ratio {capped['nn_ratio_direct_samples']:.2f}", fontsize=8
        )
        axes[r, -1].scatter(*train.T, s=1, c="k")
        axes[r, -1].set_title(f"{dataset}: training set", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Fig. 6 analogue: early stopping (eps on a validation split) vs WPO")
    fig.tight_layout()
    path = out_dir / f"{name}_fig6.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def plot_fig4(out_dir, name, roll, grid):
    plt = _plt()
    model, test = roll
    pairs = ((0, 1), (0, 2), (1, 2), (3, 4))
    fig, axes = plt.subplots(2, len(pairs), figsize=(3.2 * len(pairs), 6.4))
    test = np.asarray(test)
    for c, dims in enumerate(pairs):
        zc, gc = marginal_mixture(model.centers, model.precisions(), dims)
        lo = test[:, dims].min(0) - 0.3
        hi = test[:, dims].max(0) + 0.3
        xs, ys, dens = density_grid(lambda p, zc=zc, gc=gc: log_density(p, zc, gc), lo, hi, grid)
        axes[0, c].pcolormesh(xs, ys, dens, shading="auto", cmap="viridis")
        axes[0, c].set_title(f"model marginal x{dims[0]}-x{dims[1]}")
        axes[1, c].scatter(test[:, dims[0]], test[:, dims[1]], s=1, c="k")
        axes[1, c].set_xlim(lo[0], hi[0])
        axes[1, c].set_ylim(lo[1], hi[1])
        axes[1, c].set_title("held-out samples")
    fig.suptitle("Fig. 4 analogue: 6-D swiss roll (validated std cap), 2-D marginals")
    fig.tight_layout()
    path = out_dir / f"{name}_fig4.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


# -- driver -----------------------------------------------------------------------------------


def config_record(cfg, args) -> dict:
    return {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "quick": args.quick,
        "seed": args.seed,
        "batch": BATCH,
        "learning_rate": LR,
        "optimizer": "Adam (all models)",
        "cholesky_net": "exact GeLU MLP, Gamma = L L^T + 0.01 I, diag_offset 10 (bandwidth 0.1)",
        "score_net": "ScoreMLP 5 x 64 exact GeLU, DSM sigma^2 weighting, VPSDE(0.1, 20)",
        "w2_level_factor": LEVEL_FACTOR,
    }


DEVIATIONS = [
    "CPU budget ~25 core-minutes on 2 cores shared by ~8 agents (load average 20-40 during "
    "the run, so ~10x less CPU per wall second than planned; the config was cut once, before "
    "any full result was seen): Fig. 2 trains WPO to "
    "matched_steps[-1] steps and DSM to dsm_extra_steps[-1] (similar CPU time), not the "
    "authors' 5e4; Fig. 4 trains roll_steps steps (fraction_of_2e4_steps / "
    "fraction_of_paper_1e5_steps in fig4.scaled_run) with roll_n_centers centres (paper: "
    "5000) on roll_n_train = 1e6 points (as the paper); the centres, validation and test "
    "sets are those of the earlier roll_n_train_base-point record (same keys), the other "
    "points only enlarge the ISM pool.",
    "Training time is process CPU time (all threads), compilation excluded; the machine is "
    "shared, so seconds are noisy and only the step counts are exact.",
    "Centres are a random subset of the training set, disjoint from the points the ISM "
    "batches are drawn from (the authors drew them independently).",
    "WPO kernels start at bandwidth 0.1 (CholeskyMLP diag_offset = 10) instead of the "
    "authors' plain net (which starts every kernel at covariance I / 0.01).",
    "Fig. 6 and Fig. 4 apply the library's fix: each kernel's std is capped at the value "
    "with the best validation log-likelihood (wgdiff.wpo.tune_max_std); the uncapped model "
    "is reported beside it. Fig. 2 uses no cap. Fig. 4 also trains with the training-time "
    "fix (fig4.scaled_run.training_fix): std <= roll_train_max_std during training "
    "(init_wpo max_std) and wgdiff.wpo.wpo_optimizer instead of constant-rate Adam, and "
    "reports the checkpoint of best validation log-likelihood "
    "(wgdiff.wpo.BestValidationCheckpoint; the last step's model is final_step_model).",
    "DSM held-out log-likelihood (probability-flow ODE) on the first n_ll_dsm test points.",
]


def run_part(part, key, cfg, out_dir, name, plots):
    k2, _, k6, k4 = jax.random.split(key, 4)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    load_start = list(os.getloadavg())
    if part == "fig2":
        res, thin = run_fig2(k2, cfg)
        figures = plot_fig2(out_dir, name, {**res, "grid": cfg["grid"]}, thin) if plots else []
    elif part == "fig6":
        res, mem_plots = run_fig6(k6, cfg)
        figures = plot_fig6(out_dir, name, mem_plots) if plots else []
    elif part == "fig4diag":
        res, figures = run_fig4_diagnosis(k4, cfg), []
    elif part == "fig4ablation":
        res, figures = run_fig4_diagnosis(k4, cfg, ("log_cholesky_ablation",)), []
    elif part == "fig4capacity":
        res, figures = run_fig4_capacity(k4, cfg), []
    elif part == "fig4paper":
        # the same run with the paper's centre count (same data, keys and schedule)
        res, roll = run_fig4(k4, {**cfg, "roll_n_centers": cfg["paper_n_centers"]})
        res = {"fig4_paper_centres": res.pop("fig4")}
        figures = plot_fig4(out_dir, f"{name}_paper_centres", roll, cfg["grid"]) if plots else []
    else:
        res, roll = run_fig4(k4, cfg)
        figures = plot_fig4(out_dir, name, roll, cfg["grid"]) if plots else []
    res["run"] = {
        **machine_record(start_wall, start_cpu),
        "load_average_start": load_start,
        "figures": [str(p.name) for p in figures],
    }
    return res


def merge(out_dir, name, header) -> dict:
    results = dict(header)
    results["parts_not_run"] = []
    for part in PARTS:
        path = out_dir / f"{name}_part_{part}.json"
        if not path.exists():
            results["parts_not_run"].append(part)
            continue
        data = json.loads(path.read_text())
        data[f"run_{part}"] = data.pop("run")
        results.update(data)
    results["cpu_seconds_all_parts"] = sum(
        results[f"run_{p}"]["cpu_seconds"] for p in PARTS if p not in results["parts_not_run"]
    )
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for tests")
    parser.add_argument("--part", choices=(*PARTS, "all", "merge"), default="all")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    name = f"{NAME}_quick" if args.quick else NAME  # a quick run never overwrites the record
    args.out.mkdir(parents=True, exist_ok=True)
    header = {"config": config_record(cfg, args), "deviations": DEVIATIONS}
    key = jax.random.key(args.seed)
    parts = PARTS if args.part in ("all", "merge") else (args.part,)
    if args.part != "merge":
        for part in parts:
            res = run_part(part, key, cfg, args.out, name, not args.no_plots)
            path = args.out / f"{name}_part_{part}.json"
            path.write_text(json.dumps({"config": header["config"], **res}, indent=2))
    if args.part in ("all", "merge"):
        return merge(args.out, name, header)
    return res


if __name__ == "__main__":
    main()
