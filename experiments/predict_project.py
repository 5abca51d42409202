"""Ghimire et al. Table 1 at CPU scale: Euler-Maruyama vs Predict-Project (Alg. 1).

(a) 2-D eight-Gaussian mixture, W2 to fresh data: with the exact mixture score
    (control: only the projection net is learned) and with a jointly trained
    score + projection pair (``wgdiff.losses.projection.joint_objective``).
    delta_mu from the paper (app. B.1), from our ``auto_delta_mu`` rule, and the
    best of a small grid (an oracle, for context). One step-conditioned
    projection net serves every N; nets trained at a single N are compared.
(b) 8x8 digits, UNet score and projection nets trained jointly, FD-digits
    (Frechet distance of a small digits classifier's features; not FID).
(c) The reverse-variance sweep of sec 6.2 (alpha) at fixed N with Euler-Maruyama.

Writes ``<out>/predict_project.json`` and ``predict_project_*.png``.
Usage: ``python experiments/predict_project.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff.data.images import array_batch_sampler, load_digits
from wgdiff.data.toy.registry import mixture
from wgdiff.image_features import fd_digits, load_or_train_digits_classifier
from wgdiff.losses.projection import StepConditioned, joint_objective, projection_loss
from wgdiff.metrics import w2
from wgdiff.nets import ScoreMLP
from wgdiff.nets.unet import UNet
from wgdiff.samplers.predict_project import PAPER_DELTA_MU, auto_delta_mu, predict_project
from wgdiff.samplers.scan import euler_maruyama
from wgdiff.sde import VPSDE
from wgdiff.train import create_train_state, default_optimizer, fit, make_train_step

RESULTS = Path(__file__).resolve().parent / "results"

# Ghimire et al. Table 1 (FID, 64x64 images); "-" where the paper reports nothing.
PAPER_TABLE1 = {
    "N": [1000, 100, 40, 20],
    "Celeb-A": {
        "score": [6.331, 35.14, 149.42, 222.71],
        "predict_project": [None, 20.54, 68.23, 121.12],
    },
    "LSUN": {
        "score": [15.12, 34.62, 122.23, 246.17],
        "predict_project": [None, 25.35, 66.61, 164.32],
    },
    "SVHN": {
        "score": [18.95, 146.63, 183.30, 285.61],
        "predict_project": [None, 149.56, 174.34, 152.94],
    },
}

FULL = {
    "n_values": [1000, 100, 40, 20, 10],
    "proj_train_n": [10, 20, 40, 100, 1000],
    "single_n": [20],
    "delta_mu_grid": [0.3, 1.0, 3.0],
    "alphas": [0.0, 0.5, 1.0, 2.0],
    "alpha_n": 100,
    "toy_steps": 2500,
    "toy_proj_steps": 1200,
    "toy_batch": 512,
    "toy_eval": 1000,
    "digit_net": "unet",
    "digit_steps": 600,
    "digit_batch": 32,
    "digit_eval": 100,
    "digit_n_values": [1000, 100, 40, 20, 10],
    "digit_pp_max_n": 100,
    "digit_alpha_n": 40,
    "digit_alphas": [],
    "unet_score": 16,
    "unet_project": 8,
    "classifier_steps": 1500,
}
# The quick run swaps the digits UNets for MLPs on the flattened images: compiling a
# UNet sampler per N would dominate a < 60 s test.
QUICK = {
    "n_values": [20, 10],
    "proj_train_n": [10, 20],
    "single_n": [10],
    "delta_mu_grid": [0.3, 1.0],
    "alphas": [0.0, 1.0],
    "alpha_n": 20,
    "toy_steps": 150,
    "toy_proj_steps": 100,
    "toy_batch": 128,
    "toy_eval": 200,
    "digit_net": "mlp",
    "digit_steps": 20,
    "digit_batch": 16,
    "digit_eval": 32,
    "digit_n_values": [20, 10],
    "digit_pp_max_n": 100,
    "digit_alpha_n": 20,
    "digit_alphas": [0.0, 1.0],
    "unet_score": 8,
    "unet_project": 8,
    "classifier_steps": 60,
}


def noise_param(apply_fn, sde):
    """Score ``-eps_theta(x, t) / s(t)`` from a noise-predicting net (DSM with sigma2 weighting)."""

    def score_apply(params, x, t):
        s = sde.marginal_coeffs(t)[1]
        return -apply_fn(params, x, t) / s.reshape((-1,) + (1,) * (x.ndim - 1))

    return score_apply


def train(loss_fn, params, sample_batch, n_steps, seed, lr=2e-3):
    """``wgdiff.train`` loop; returns EMA parameters and the last logged loss."""
    optimizer = default_optimizer(lr)
    state = create_train_state(jax.random.key(seed), params, optimizer)
    step = make_train_step(loss_fn, optimizer, ema_decay=0.995 if n_steps > 1000 else 0.9)
    state, history = fit(
        state,
        step,
        sample_batch,
        n_steps,
        data_key=jax.random.key(seed + 1),
        log_every=max(1, n_steps // 10),
        progress=False,
    )
    last = history[-1]["loss"] if history else float("nan")
    return state.ema_params, float(last)


def sample_table(key, sde, score_fn, project_fn, shape, cfg, delta_mus, metric, keep=None):
    """EM and Predict-Project (per delta_mu rule) at every N, plus the delta_mu grid oracle.

    ``keep``: optional dict filled with ``("EM" | "PP", N) -> samples`` (PP with the auto rule).
    """
    rows = {}
    for n in cfg["n_values"]:
        em = euler_maruyama(key, sde, score_fn, shape, n)
        row = {"em": metric(em)}
        if keep is not None:
            keep[("EM", n)] = np.asarray(em)
        for rule, values in delta_mus.items():
            if n in values:
                x = predict_project(key, sde, score_fn, project_fn, shape, n, delta_mu=values[n])
                row[f"pp_{rule}"] = metric(x)
                row[f"delta_mu_{rule}"] = values[n]
                if keep is not None and rule == "auto":
                    keep[("PP", n)] = np.asarray(x)
        if "delta_mu_grid" in cfg and cfg.get("grid", True):
            grid = {
                dm: metric(predict_project(key, sde, score_fn, project_fn, shape, n, delta_mu=dm))
                for dm in cfg["delta_mu_grid"]
            }
            best = min(grid, key=grid.get)
            row["pp_grid"] = {str(k): v for k, v in grid.items()}
            row["pp_best"], row["delta_mu_best"] = grid[best], best
        rows[str(n)] = row
    return rows


def paper_rule(n_values):
    """The paper's delta_mu (app. B.1); N = 10 is not in the paper: we reuse N = 20's 1.0."""
    return {n: PAPER_DELTA_MU.get(n, 1.0) for n in n_values if n <= 100}


def run_mixture(cfg, sde, seed):
    gm = mixture("eight_gaussians")
    exact_score = gm.score_fn(sde)
    data = gm.sample(jax.random.key(seed), 50_000)
    reference = np.asarray(gm.sample(jax.random.key(seed + 100), cfg["toy_eval"]))
    floor = w2(np.asarray(gm.sample(jax.random.key(seed + 200), cfg["toy_eval"])), reference)
    metric = lambda x: w2(np.asarray(x), reference)
    shape = (cfg["toy_eval"], 2)
    sampler = array_batch_sampler(data, cfg["toy_batch"])
    proj_net = StepConditioned(ScoreMLP(features=(64, 64, 64)))
    proj_init = proj_net.init(jax.random.key(seed + 2), jnp.zeros((1, 2)), jnp.ones(1), jnp.ones(1))
    out = {
        "dataset": "eight_gaussians (wgdiff.data.toy, radius 2 sqrt 2, std sqrt 2 / 4)",
        "w2_floor_two_reference_sets": floor,
        "n_eval": cfg["toy_eval"],
    }
    timings = {}

    def train_projection(score_fn, n_steps_set, seed_offset):
        loss = lambda p, k, b: projection_loss(
            k, sde, score_fn, functools.partial(proj_net.apply, p), b, n_steps=n_steps_set
        )
        return train(loss, proj_init, sampler, cfg["toy_proj_steps"], seed + seed_offset)

    # (a1) exact score control.
    start = time.perf_counter()
    proj_params, proj_loss = train_projection(exact_score, cfg["proj_train_n"], 10)
    project_fn = functools.partial(proj_net.apply, proj_params)
    delta_mus = {
        "paper": paper_rule(cfg["n_values"]),
        "auto": auto_delta_mu(
            jax.random.key(seed + 3), sde, exact_score, project_fn, data[:4000], cfg["n_values"]
        ),
    }
    out["exact_score"] = {
        "projection_final_loss": proj_loss,
        "delta_mu_auto": delta_mus["auto"],
        "table": sample_table(
            jax.random.key(seed + 4), sde, exact_score, project_fn, shape, cfg, delta_mus, metric
        ),
    }
    timings["exact_score"] = time.perf_counter() - start
    print(f"mixture exact-score table done ({timings['exact_score']:.0f} s)", flush=True)

    # Single-N projection nets vs the step-conditioned one (exact score, same delta_mu).
    start = time.perf_counter()
    single = {}
    for n in cfg["single_n"]:
        params_n, _ = train_projection(exact_score, [n], 20 + n)
        dm = delta_mus["auto"][n]
        key = jax.random.key(seed + 4)
        single[str(n)] = {
            "delta_mu_auto": dm,
            "single_n_net": metric(
                predict_project(
                    key,
                    sde,
                    exact_score,
                    functools.partial(proj_net.apply, params_n),
                    shape,
                    n,
                    delta_mu=dm,
                )
            ),
            "step_conditioned_net": metric(
                predict_project(key, sde, exact_score, project_fn, shape, n, delta_mu=dm)
            ),
            "em": out["exact_score"]["table"][str(n)]["em"],
        }
    out["single_n_vs_conditioned"] = single
    timings["single_n"] = time.perf_counter() - start

    # (a2) learned score and projection, trained jointly.
    start = time.perf_counter()
    score_net = ScoreMLP(features=(128, 128, 128))
    score_apply = noise_param(score_net.apply, sde)
    params = {
        "score": score_net.init(jax.random.key(seed + 5), jnp.zeros((1, 2)), jnp.ones(1)),
        "project": proj_init,
    }
    loss_fn = joint_objective(sde, score_apply, proj_net.apply, n_steps=cfg["proj_train_n"])
    params, joint_loss = train(loss_fn, params, sampler, cfg["toy_steps"], seed + 30)
    score_fn = functools.partial(score_apply, params["score"])
    project_fn = functools.partial(proj_net.apply, params["project"])
    delta_mus = {
        "paper": paper_rule(cfg["n_values"]),
        "auto": auto_delta_mu(
            jax.random.key(seed + 3), sde, score_fn, project_fn, data[:4000], cfg["n_values"]
        ),
    }
    out["learned"] = {
        "joint_final_loss": joint_loss,
        "delta_mu_auto": delta_mus["auto"],
        "table": sample_table(
            jax.random.key(seed + 4), sde, score_fn, project_fn, shape, cfg, delta_mus, metric
        ),
    }
    timings["learned"] = time.perf_counter() - start
    print(f"mixture learned table done ({timings['learned']:.0f} s)", flush=True)

    # (c) reverse-variance alpha sweep at fixed N (Euler-Maruyama).
    key = jax.random.key(seed + 6)
    out["alpha_sweep"] = {
        "n_steps": cfg["alpha_n"],
        "exact_score": {
            str(a): metric(euler_maruyama(key, sde, exact_score, shape, cfg["alpha_n"], alpha=a))
            for a in cfg["alphas"]
        },
        "learned": {
            str(a): metric(euler_maruyama(key, sde, score_fn, shape, cfg["digit_alpha_n"], alpha=a))
            for a in cfg["alphas"]
        },
    }
    out["seconds"] = timings
    samples = {
        f"{name} N={n}": np.asarray(sampler_fn(jax.random.key(seed + 7), n))
        for n in (cfg["n_values"][-2:])
        for name, sampler_fn in [
            ("EM", lambda k, n: euler_maruyama(k, sde, score_fn, shape, n)),
            (
                "PP",
                lambda k, n: predict_project(
                    k, sde, score_fn, project_fn, shape, n, delta_mu=delta_mus["auto"][n]
                ),
            ),
        ]
    }
    return out, samples, reference


def run_digits(cfg, sde, seed, out_dir):
    images = jnp.asarray(load_digits())
    start = time.perf_counter()
    clf_params, clf_info = load_or_train_digits_classifier(
        out_dir, seed=seed, n_steps=cfg["classifier_steps"]
    )
    reference = np.asarray(images)
    rng = np.random.default_rng(seed)
    floor = fd_digits(
        reference[rng.choice(len(reference), cfg["digit_eval"], replace=False)],
        reference,
        params=clf_params,
    )
    metric = lambda x: fd_digits(np.asarray(x), reference, params=clf_params)
    if cfg["digit_net"] == "unet":
        score_net = UNet(base_channels=cfg["unet_score"])
        proj_net = StepConditioned(UNet(base_channels=cfg["unet_project"]))
    else:
        score_net = ScoreMLP(features=(64, 64))
        proj_net = StepConditioned(ScoreMLP(features=(64, 64)))
    x1 = jnp.zeros((1, 8, 8, 1))
    params = {
        "score": score_net.init(jax.random.key(seed + 1), x1, jnp.ones(1)),
        "project": proj_net.init(jax.random.key(seed + 2), x1, jnp.ones(1), jnp.ones(1)),
    }
    score_apply = noise_param(score_net.apply, sde)
    loss_fn = joint_objective(sde, score_apply, proj_net.apply, n_steps=cfg["proj_train_n"])
    train_start = time.perf_counter()
    params, joint_loss = train(
        loss_fn,
        params,
        array_batch_sampler(images, cfg["digit_batch"]),
        cfg["digit_steps"],
        seed + 3,
        lr=1e-3,
    )
    train_seconds = time.perf_counter() - train_start
    print(f"digits trained ({train_seconds:.0f} s)", flush=True)
    score_fn = functools.partial(score_apply, params["score"])
    project_fn = functools.partial(proj_net.apply, params["project"])
    pp_n = [n for n in cfg["digit_n_values"] if n <= cfg["digit_pp_max_n"]]
    delta_mus = {
        "paper": paper_rule(pp_n),
        "auto": auto_delta_mu(
            jax.random.key(seed + 4),
            sde,
            score_fn,
            project_fn,
            images[:512],
            pp_n,
            n_repeats=2,
        ),
    }
    shape = (cfg["digit_eval"], 8, 8, 1)
    table_samples = {}
    table = sample_table(
        jax.random.key(seed + 5),
        sde,
        score_fn,
        project_fn,
        shape,
        {**cfg, "grid": False, "n_values": cfg["digit_n_values"]},
        delta_mus,
        metric,
        keep=table_samples,
    )
    key = jax.random.key(seed + 6)
    alpha = {
        str(a): metric(euler_maruyama(key, sde, score_fn, shape, cfg["digit_alpha_n"], alpha=a))
        for a in cfg["digit_alphas"]
    }
    # Sample grids reuse the evaluation draws (no extra compiles of the UNet samplers).
    grids = {
        f"{name} N={n}": samples[: min(16, shape[0])]
        for (name, n), samples in table_samples.items()
        if n in (1000, 40, 20, 10)
    }
    result = {
        "classifier": clf_info,
        "fd_digits_floor_real_subset": floor,
        "n_eval": cfg["digit_eval"],
        "train_steps": cfg["digit_steps"],
        "train_images_per_second": cfg["digit_steps"] * cfg["digit_batch"] / train_seconds,
        "joint_final_loss": joint_loss,
        "delta_mu_auto": delta_mus["auto"],
        "table": table,
        "alpha_sweep": {"n_steps": cfg["digit_alpha_n"], "fd_digits": alpha},
        "seconds": time.perf_counter() - start,
    }
    return result, grids


def pp_minus_em(result) -> dict:
    """Paired differences PP - EM (same key: same prior draw and noise); < 0: projection helps."""
    parts = {
        "mixture_exact_score_w2": result["mixture"]["exact_score"]["table"],
        "mixture_learned_w2": result["mixture"]["learned"]["table"],
        "digits_fd_digits": result["digits"]["table"],
    }
    out = {
        "note": "EM and Predict-Project runs share the PRNG key, so these are paired "
        "differences; the metric's own sampling noise is in the *_floor fields"
    }
    for name, table in parts.items():
        out[name] = {
            n: {k[3:]: row[k] - row["em"] for k in row if k.startswith("pp_") and k != "pp_grid"}
            for n, row in table.items()
        }
    return out


def markdown_table(result) -> str:
    """Table 1 analogue: paper FID rows, then our W2 / FD-digits rows."""
    ns = result["config"]["n_values"]
    head = "| setting | " + " | ".join(f"N={n}" for n in ns) + " |\n|---|" + "---|" * len(ns)
    lines = [head]
    for name in ("Celeb-A", "LSUN", "SVHN"):
        for label, key in (("score", "score"), ("PP", "predict_project")):
            vals = dict(zip(PAPER_TABLE1["N"], PAPER_TABLE1[name][key], strict=True))
            cells = [f"{vals[n]:.2f}" if vals.get(n) is not None else "-" for n in ns]
            lines.append(f"| paper {name} FID, {label} | " + " | ".join(cells) + " |")

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    sections = [
        ("mixture W2, exact score", result["mixture"]["exact_score"]["table"]),
        ("mixture W2, learned", result["mixture"]["learned"]["table"]),
    ]
    if "digits" in result:
        sections.append(("digits FD-digits, learned", result["digits"]["table"]))
    for label, table in sections:
        for key, name in (
            ("em", "EM"),
            ("pp_paper", "PP, paper delta_mu"),
            ("pp_auto", "PP, auto delta_mu"),
            ("pp_best", "PP, best grid delta_mu"),
        ):
            cells = [fmt(table.get(str(n), {}).get(key)) for n in ns]
            if any(c != "-" for c in cells):
                lines.append(f"| ours {label}: {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(out_dir, toy_samples, reference, digit_grids):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(toy_samples)
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3 * (len(names) + 1), 3))
    for ax, name in zip(axes, ["data"] + names, strict=True):
        pts = reference if name == "data" else toy_samples[name]
        ax.scatter(pts[:, 0], pts[:, 1], s=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-5, 5)
        ax.set_ylim(-5, 5)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out_dir / "predict_project_mixture.png", dpi=100)
    plt.close(fig)
    if digit_grids:
        fig, axes = plt.subplots(1, len(digit_grids), figsize=(2.2 * len(digit_grids), 2.4))
        axes = np.atleast_1d(axes)
        for ax, (name, imgs) in zip(axes, digit_grids.items(), strict=True):
            tiles = np.clip(imgs[:16, :, :, 0], -1, 1).reshape(4, 4, 8, 8)
            ax.imshow(tiles.transpose(0, 2, 1, 3).reshape(32, 32), cmap="gray_r")
            ax.set_title(name, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / "predict_project_digits.png", dpi=100)
        plt.close(fig)


def _save_part(out_dir, name, result, arrays):
    (out_dir / f"predict_project_part_{name}.json").write_text(
        json.dumps(result, indent=2, default=float)
    )
    np.savez(out_dir / f"predict_project_part_{name}.npz", **arrays)


def _load_part(out_dir, name):
    result = json.loads((out_dir / f"predict_project_part_{name}.json").read_text())
    with np.load(out_dir / f"predict_project_part_{name}.npz") as arrays:
        return result, dict(arrays)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for tests (< ~60 s)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--part",
        choices=("all", "mixture", "digits", "merge"),
        default="all",
        help="run one part and save it (two processes can run the parts side by side), "
        "or merge saved parts into the results file",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    sde = VPSDE()
    start = time.perf_counter()
    if args.part == "mixture":
        mix, toy_samples, reference = run_mixture(cfg, sde, args.seed)
        _save_part(args.out, "mixture", mix, {**toy_samples, "reference": reference})
        return mix
    if args.part == "digits":
        digits, grids = run_digits(cfg, sde, args.seed, args.out)
        _save_part(args.out, "digits", digits, grids)
        return digits
    if args.part == "merge":
        mix, toy_samples = _load_part(args.out, "mixture")
        reference = toy_samples.pop("reference")
        digits, grids = _load_part(args.out, "digits")
    else:
        mix, toy_samples, reference = run_mixture(cfg, sde, args.seed)
        digits, grids = run_digits(cfg, sde, args.seed, args.out)
    result = {
        "experiment": "predict_project",
        "paper": "Ghimire et al., Geometry of Score Based "
        "Generative Models, Table 1, Alg. 1, sec 6.2, app. B.1",
        "quick": args.quick,
        "config": cfg,
        "sde": "VPSDE(beta_min=0.1, beta_max=20, linear)",
        "scaled_down": (
            "CPU scale: the paper trains 64x64 CelebA/LSUN/SVHN UNets for 50k-450k iterations "
            "and reports FID; here a 2-D eight-Gaussian mixture (W2, exact and learned score) "
            f"and 8x8 digits ({cfg['digit_net']} score and projection nets, "
            f"{cfg['digit_steps']} joint steps of batch {cfg['digit_batch']}, FD-digits on "
            f"{cfg['digit_eval']} samples). FD-digits is not FID; only trends are comparable."
        ),
        "paper_table1_fid": PAPER_TABLE1,
        "paper_delta_mu": PAPER_DELTA_MU,
        "delta_mu_rules": {
            "paper": "app. B.1 values; N = 10 (not in the paper) reuses N = 20's 1.0",
            "auto": "wgdiff auto_delta_mu: min(1, |1 - E|T_N|^2 / E|T_1000|^2|) from the "
            "trained projection net on training data",
            "best": "best of delta_mu_grid by the evaluation metric itself (oracle, context only)",
        },
        "mixture": mix,
        "digits": digits,
    }
    if args.part == "all":
        result["seconds_total"] = time.perf_counter() - start
    result["pp_minus_em"] = pp_minus_em(result)
    result["table_markdown"] = markdown_table(result)
    plot(args.out, toy_samples, reference, grids)
    path = args.out / "predict_project.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print(result["table_markdown"])
    return result


if __name__ == "__main__":
    main()
