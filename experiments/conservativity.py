"""Vuong et al.: do trained diffusion models learn a conservative score?

Trains, on the same 2-D data (FFJORD's eight Gaussians, a Gaussian mixture whose
perturbed score is known exactly) and the same VP SDE:

- a ``ScoreMLP`` (unconstrained vector field) with denoising score matching,
- a ``PotentialMLP`` (score = gradient of a scalar net, conservative by construction)
  with the same loss,
- a ``ScoreMLP`` used as a velocity field with Vuong's WGF flow-matching loss,

and a small ``UNet`` on the 8 x 8 digits. For each, across diffusion times, it
measures the differential constraint (DC: relative Jacobian asymmetry
``|J - J^T|_F / |J|_F`` at forward-noised data) and the integral constraint (IC:
``|oint s.dx| / oint |s||dx|`` on Vuong's three loop constructions), and compares
the samples of the flow-matching model (probability-flow ODE of its velocity) with
those of DSM (reverse SDE and probability-flow ODE) by W2 to held-out data. The
exact mixture score goes through the same diagnostics: its numbers are the floor
set by float32 and the loops' discretization.

Run: ``python experiments/conservativity.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wgdiff import conservativity as cons
from wgdiff.data import toy
from wgdiff.data.images import load_digits
from wgdiff.losses.flow_matching import velocity_to_score, wgf_flow_matching_objective
from wgdiff.metrics import w2
from wgdiff.nets import PotentialMLP, ScoreMLP
from wgdiff.nets.unet import UNet
from wgdiff.samplers import euler_maruyama, probability_flow
from wgdiff.sde import VPSDE
from wgdiff.train import fit_score_model
from wgdiff.wpo import empirical_score_fn as wpo_empirical_score_fn

RESULTS = Path(__file__).resolve().parent / "results"
SDE = VPSDE(beta_min=0.1, beta_max=20.0)
EPS = 1e-3
DATA = "eight_gaussians"
# Vertices per loop: the trapezoid rule's error on the exact score stays at float
# precision (<= 1e-5 of oint |s||dx|) with these; the projected loops place their
# vertices equally in arc length (wgdiff.conservativity.projected_interpolated_loops).
# The plain interpolated loops' error is O(h^2): 64 per edge left 8.8e-5 in the
# session-19 record; 64 / 128 / 256 per edge measured 4.5e-5 / 1.1e-5 / 2.8e-6 on 32
# eight-Gaussian loops at the six times.
LOOP_BUILDERS = {
    "corrupted_circle": functools.partial(cons.corrupted_circle_loops, n_points=256),
    "interpolated": functools.partial(cons.interpolated_loops, points_per_edge=256),
    "projected_interpolated": functools.partial(
        cons.projected_interpolated_loops, points_per_edge=512
    ),
}
FLOAT_PRECISION = 1e-5


def train(key, model, objective, data, n_steps: int, batch: int):
    """``wgdiff.train.fit_score_model`` (AdamW 1e-3, cosine decay, EMA 0.999).

    ``objective``: ``None`` for the recipe's likelihood-weighted DSM, or an
    ``objective(sde, apply)`` such as the WGF flow-matching loss (the net is then a
    velocity field). Returns ``(fn(x, t), losses)`` with the EMA parameters.
    """
    result = fit_score_model(
        SDE,
        model,
        data,
        key=key,
        n_steps=n_steps,
        batch_size=batch,
        objective=objective,
        log_every=max(n_steps // 10, 1),
    )
    return result.score_fn, [float(h["loss"]) for h in result.history]


def diagnostic_inputs(key, data, times, cfg):
    """The points (DC) and loops (IC) at each time, shared by every model and the exact score."""
    inputs = []
    for t in times:
        key, k_noise, k_asym, *k_loops = jax.random.split(key, 3 + len(LOOP_BUILDERS))
        xt, _ = SDE.marginal_sample(k_noise, data[: cfg["n_points"]], float(t))
        loops = {
            name: build(k, SDE, data[: cfg["n_loops"]], float(t))
            for (name, build), k in zip(LOOP_BUILDERS.items(), k_loops, strict=True)
        }
        inputs.append({"t": float(t), "xt": xt, "k_asym": k_asym, "loops": loops})
    return inputs


def diagnostics(score_fn, inputs, jacobian_method="exact"):
    """DC and IC violations at each time on the shared points and loops."""
    rows = []
    for inp in inputs:
        t = inp["t"]
        asym = np.asarray(
            cons.jacobian_asymmetry(
                score_fn, inp["xt"], t, method=jacobian_method, key=inp["k_asym"], n_projections=64
            )
        )
        row = {
            "t": t,
            "dc_mean": float(asym.mean()),
            "dc_median": float(np.median(asym)),
            "dc_max": float(asym.max()),
        }
        for name, loops in inp["loops"].items():
            viol = np.asarray(cons.loop_violation(score_fn, loops, t))
            row[f"ic_{name}_mean"] = float(viol.mean())
            row[f"ic_{name}_max"] = float(viol.max())
        rows.append(row)
    return rows


def beside_floor(rows, floor_rows):
    """Each diagnostic with the exact score's value on the same points and loops."""
    out = []
    for row, floor in zip(rows, floor_rows, strict=True):
        merged = dict(row)
        for k, v in floor.items():
            if k != "t":
                merged[f"exact_floor_{k}"] = v
        out.append(merged)
    return out


def _max_over_t(rows, prefix):
    return max(v for r in rows for k, v in r.items() if k.startswith(prefix) and k.endswith("_max"))


def summarize(rows):
    """Maxima over times: DC, and IC per loop type."""
    out = {"dc_max_over_t": max(r["dc_max"] for r in rows)}
    for name in LOOP_BUILDERS:
        out[f"ic_{name}_max_over_t"] = max(r[f"ic_{name}_max"] for r in rows)
        out[f"ic_{name}_mean_over_t"] = float(np.mean([r[f"ic_{name}_mean"] for r in rows]))
    out["ic_max_over_t"] = _max_over_t(rows, "ic_")
    return out


def two_d_study(key, cfg):
    k_data, k_held, k_inputs, *keys = jax.random.split(key, 8)
    data = toy.get(DATA)(k_data, cfg["n_train"])
    heldout = toy.get(DATA)(k_held, cfg["n_heldout"])
    times = np.geomspace(0.01, 1.0, cfg["n_times"])
    mlp = dict(features=(128,) * 3, activation=nn.softplus)
    fm = functools.partial(wgf_flow_matching_objective, eps=EPS)
    models = {
        "score_mlp_dsm": (ScoreMLP(**mlp), None, "score"),
        "potential_mlp_dsm": (PotentialMLP(**mlp), None, "score"),
        "velocity_mlp_wgf_fm_uniform_score": (
            ScoreMLP(**mlp),
            functools.partial(fm, weighting="uniform_score"),
            "velocity",
        ),
        "velocity_mlp_wgf_fm_g4_over_4": (
            ScoreMLP(**mlp),
            functools.partial(fm, weighting="g4_over_4"),
            "velocity",
        ),
    }
    out = {"data": DATA, "times": times.tolist(), "models": {}}
    samples = {}
    inputs = diagnostic_inputs(k_inputs, heldout, times, cfg)
    exact = toy.mixture(DATA).score_fn(SDE)
    exact_rows = diagnostics(exact, inputs)
    out["exact_score"] = {"per_time": exact_rows, **summarize(exact_rows)}
    out["exact_score"]["at_float_precision"] = {
        name: out["exact_score"][f"ic_{name}_max_over_t"] <= FLOAT_PRECISION
        for name in LOOP_BUILDERS
    }
    for (name, (model, loss, kind)), k in zip(models.items(), keys, strict=False):
        k_train, k_em, k_pf = jax.random.split(k, 3)
        fn, losses = train(k_train, model, loss, data, cfg["steps_2d"], 256)
        score_fn = velocity_to_score(SDE, fn) if kind == "velocity" else fn
        rows = diagnostics(score_fn, inputs)
        shape = (cfg["n_heldout"], 2)
        entry = {
            "kind": kind,
            "final_loss": losses[-1],
            "per_time": beside_floor(rows, exact_rows),
            **summarize(rows),
        }
        pf = probability_flow(
            k_pf, SDE, score_fn, shape, cfg["sample_steps"], method="heun", eps=EPS
        )
        entry["w2_probability_flow"] = float(w2(heldout, pf))
        samples[f"{name} (PF-ODE)"] = pf
        if kind == "score":
            em = euler_maruyama(k_em, SDE, score_fn, shape, cfg["sample_steps"], eps=EPS)
            entry["w2_reverse_sde"] = float(w2(heldout, em))
            samples[f"{name} (reverse SDE)"] = em
        out["models"][name] = entry
    reference = toy.get(DATA)(keys[-1], cfg["n_heldout"])
    out["w2_heldout_vs_fresh_data"] = float(w2(heldout, reference))
    return out, heldout, samples


def empirical_score_fn(images):
    """Exact score of the training set perturbed by the SDE (a mixture of point masses).

    ``wgdiff.wpo.empirical_score_fn`` streams over the training points in chunks (the
    dense full-covariance mixture ran out of memory on 2048-vertex loops).
    """
    flat = jnp.asarray(images).reshape(images.shape[0], -1)
    fn = wpo_empirical_score_fn(flat, SDE)

    def score_fn(x, t):
        return fn(x.reshape(x.shape[0], -1), t).reshape(x.shape)

    return score_fn


def digits_study(key, cfg):
    images = jnp.asarray(load_digits())
    k_perm, k_train, k_diag = jax.random.split(key, 3)
    perm = jax.random.permutation(k_perm, images.shape[0])
    train_set, heldout = images[perm[200:]], images[perm[:200]]
    model = UNet(base_channels=cfg["unet_channels"], channel_mult=(1, 2))
    score_fn, losses = train(k_train, model, None, train_set, cfg["steps_unet"], 64)
    times = np.geomspace(0.01, 1.0, cfg["n_times_unet"])
    sub = {**cfg, "n_points": cfg["n_points_unet"], "n_loops": cfg["n_loops_unet"]}
    inputs = diagnostic_inputs(k_diag, heldout, times, sub)
    floor_rows = diagnostics(empirical_score_fn(train_set), inputs)
    rows = diagnostics(score_fn, inputs)
    k_proj = jax.random.fold_in(k_diag, 1)
    xt, _ = SDE.marginal_sample(k_proj, heldout[: cfg["n_points_unet"]], 0.1)
    exact = cons.jacobian_asymmetry(score_fn, xt, 0.1)
    projected = cons.jacobian_asymmetry(
        score_fn, xt, 0.1, method="projection", key=k_proj, n_projections=128
    )
    return {
        "model": f"UNet(base_channels={cfg['unet_channels']}, channel_mult=(1, 2))",
        "train_steps": cfg["steps_unet"],
        "final_loss": losses[-1],
        "floor": "exact score of the training set perturbed by the SDE (mixture of point masses)",
        "per_time": beside_floor(rows, floor_rows),
        **summarize(rows),
        "exact_floor": summarize(floor_rows),
        "projection_check_t0.1": {
            "exact_mean": float(jnp.mean(exact)),
            "projection_mean": float(jnp.mean(projected)),
        },
    }


def plot(results, heldout, samples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(20, 9))
    two_d = results["two_d"]
    for name, entry in {**two_d["models"], "exact score": two_d["exact_score"]}.items():
        t = [r["t"] for r in entry["per_time"]]
        axes[0, 0].loglog(t, [max(r["dc_mean"], 1e-9) for r in entry["per_time"]], "o-", label=name)
        for col, loop in enumerate(LOOP_BUILDERS, start=1):
            axes[0, col].loglog(
                t, [max(r[f"ic_{loop}_mean"], 1e-9) for r in entry["per_time"]], "o-", label=name
            )
    if "digits" in results:
        d = results["digits"]["per_time"]
        t = [r["t"] for r in d]
        axes[0, 0].loglog(t, [r["dc_mean"] for r in d], "k^--", label="UNet digits")
        for col, loop in enumerate(LOOP_BUILDERS, start=1):
            axes[0, col].loglog(t, [r[f"ic_{loop}_mean"] for r in d], "k^--", label="UNet digits")
    axes[0, 0].set_title("DC: mean |J - J^T|_F / |J|_F")
    for col, loop in enumerate(LOOP_BUILDERS, start=1):
        axes[0, col].set_title(f"IC: mean |oint s.dx| / oint |s||dx| ({loop})")
    for ax in axes[0]:
        ax.set_xlabel("t")
        ax.legend(fontsize=7)
    for ax, (name, x) in zip(axes[1], samples.items(), strict=False):
        ax.scatter(heldout[:, 0], heldout[:, 1], s=2, c="lightgrey", label="held-out")
        ax.scatter(x[:, 0], x[:, 1], s=2, label=name)
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


FULL = {
    "n_train": 20000,
    "n_heldout": 1000,
    "steps_2d": 4000,
    "sample_steps": 500,
    "n_times": 6,
    "n_points": 256,
    "n_loops": 32,
    "unet_channels": 32,
    "steps_unet": 1500,
    "n_times_unet": 4,
    "n_points_unet": 16,
    "n_loops_unet": 4,
}
QUICK = {
    "n_train": 2000,
    "n_heldout": 200,
    "steps_2d": 40,
    "sample_steps": 10,
    "n_times": 1,
    "n_points": 8,
    "n_loops": 2,
    "unet_channels": 8,
    "steps_unet": 2,
    "n_times_unet": 1,
    "n_points_unet": 2,
    "n_loops_unet": 1,
}


def digits_summary(digits):
    return {
        "dc_max": digits["dc_max_over_t"],
        "dc_max_floor": digits["exact_floor"]["dc_max_over_t"],
        **{f"ic_{n}_max": digits[f"ic_{n}_max_over_t"] for n in LOOP_BUILDERS},
        **{f"ic_{n}_max_floor": digits["exact_floor"][f"ic_{n}_max_over_t"] for n in LOOP_BUILDERS},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for tests (< 60 s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-digits", action="store_true", help="skip the 8 x 8 digits UNet study")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    start, cpu_start, load_start = time.perf_counter(), time.process_time(), os.getloadavg()
    k2d, kdig = jax.random.split(jax.random.key(args.seed))
    results = {
        "config": {
            **cfg,
            "quick": args.quick,
            "seed": args.seed,
            "sde": "VPSDE linear beta 0.1..20, T = 1",
            "eps": EPS,
            "mlp": "3 x 128 softplus",
            "optimizer": (
                "wgdiff.train.fit_score_model defaults: AdamW 1e-3, cosine decay to 5%, "
                "grad clip 1, EMA 0.999; likelihood-weighted DSM"
            ),
            "batch_2d": 256,
            "batch_digits": 64,
        }
    }
    results["two_d"], heldout, samples = two_d_study(k2d, cfg)
    digits = not args.no_digits
    if digits:
        results["digits"] = digits_study(kdig, cfg)
    else:
        results["digits_not_run"] = "--no-digits"
    models = results["two_d"]["models"]
    exact = results["two_d"]["exact_score"]
    results["summary"] = {
        "exact_score_floor": {
            "dc_max": exact["dc_max_over_t"],
            **{f"ic_{n}_max": exact[f"ic_{n}_max_over_t"] for n in LOOP_BUILDERS},
        },
        "models": {
            name: {
                "dc_max": entry["dc_max_over_t"],
                **{f"ic_{n}_max": entry[f"ic_{n}_max_over_t"] for n in LOOP_BUILDERS},
                **{f"ic_{n}_mean": entry[f"ic_{n}_mean_over_t"] for n in LOOP_BUILDERS},
                **{k: v for k, v in entry.items() if k.startswith("w2")},
            }
            for name, entry in models.items()
        },
        "potential_mlp_at_float_precision": models["potential_mlp_dsm"]["dc_max_over_t"] < 1e-4,
        "score_mlp_violates_dc": models["score_mlp_dsm"]["dc_max_over_t"] > 1e-3,
        "exact_floor_at_float_precision": exact["at_float_precision"],
    }
    if digits:
        results["summary"]["unet_digits"] = digits_summary(results["digits"])
    results["notes"] = [
        "DC is measured at 2-D points forward-noised from held-out data; the PotentialMLP "
        "Jacobian is a Hessian built by jacfwd of grad, symmetric to float32 rounding.",
        "IC uses |oint s.dx| / oint |s||dx| in [0, 1] on closed polylines (trapezoid rule): "
        "circles of corrupted samples around m(t) x0, corrupted samples joined by linear "
        "interpolation, and the same projected radially onto the shell of p(x_t | x0).",
        "The flow-matching models regress the WGF velocity f - g^2/2 grad log p_t with "
        "t ~ U(eps, T), once with Vuong's uniform weight in score units "
        "(|s_v - grad log p_0t|^2) and once as a plain velocity regression (|v - u|^2, "
        "g^4/4 in score units); samples come from integrating the velocity (Heun), and DC/IC "
        "numbers are those of the implied score 2 (f - v) / g^2.",
        "Every model's diagnostics use the same points and loops per time as the exact "
        "score's (exact_floor_* beside each value); on the digits the floor is the exact "
        "score of the training set perturbed by the SDE.",
        "Scaled down for 2 shared CPU cores: 4000 steps for the 2-D nets, 1500 for the "
        "digits UNet (base 32 channels, 2 levels); UNet diagnostics on 16 points, 4 loops "
        "per time (the earlier record used 8000 and 3000 steps).",
    ]
    results["wall_seconds"] = time.perf_counter() - start
    results["cpu_seconds"] = time.process_time() - cpu_start
    results["load_average_start"] = list(load_start)
    results["load_average_end"] = list(os.getloadavg())
    results["machine_note"] = "2 CPU cores shared with 4 other agents; wall time is inflated"
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (args.out / f"conservativity{suffix}.json").write_text(json.dumps(results, indent=1))
    plot(
        results,
        np.asarray(heldout),
        {k: np.asarray(v) for k, v in samples.items()},
        args.out / f"conservativity{suffix}.png",
    )
    return results


if __name__ == "__main__":
    main()
