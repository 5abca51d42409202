"""Ghimire et al. Table 1 at CPU scale: Predict-Project against the field's solvers at equal NFE.

Every sampler gets the same number of network evaluations (NFE); Predict-Project
(Alg. 1) costs two per step (score + projection net), so it runs ``NFE / 2`` steps.

Samplers (``wgdiff.samplers.sample``): Euler-Maruyama (uniform grid), DDIM (uniform),
DPM-Solver++(2M) (log-SNR grid), EDM Heun (Karras grid, two NFE per step), the
predictor-corrector sampler (reverse diffusion + one Langevin corrector step, two NFE
per step), and Predict-Project arms:

- ``pp_paper``: the trained projection net, the paper's delta_mu (app. B.1, interpolated);
- ``pp_auto``: the trained net, ``wgdiff.samplers.auto_delta_mu``;
- ``pp_oracle`` (mixture with the exact score): the exact optimum ``T*`` of the sec 8.2
  objective (``wgdiff.losses.OracleProjection``), delta_mu = 1;
- ``pp_literal``: the literal eq. 35 push ``2 (E[x_mean | y] - y)``
  (``wgdiff.losses.Eq35Projection`` of the oracle with the exact score, of the trained
  net otherwise), delta_mu = 1;
- a delta_mu sweep at ``sweep_nfe`` on every seed, each value compared with EM by paired
  seeds: of the oracle (mixture with the exact score) and of the net (learned mixture,
  digits).

Data: (a) the eight-Gaussian mixture with its exact score (only the projection net is
learned), (b) the same mixture with score and projection nets of equal size trained
jointly, (c) 8x8 digits with same-size UNets trained jointly (FD-digits of EM at
N = 1000 recorded at training checkpoints). Errors: for the mixture, sliced W2
(``wg.metrics.sliced_w2``) on ``mix_eval[part]["n"]`` samples against a fresh reference
set of the same size, over several seeds, and the certified exact W2
(``wg.metrics.w2_with_info(method="exact")``) on the subset ``w2_subset``; for digits,
FD-digits (the Frechet distance of a small digits classifier's features; not FID).
For each data set and NFE the script computes, from paired seeds (same prior draw and
noise keys, same reference), whether each PP arm beats Euler-Maruyama and the best
other solver.

Writes ``<out>/predict_project.json`` (quick runs: ``predict_project_quick.json``) and
``predict_project_*.png``. Usage:
``python experiments/predict_project.py [--quick] [--out DIR] [--part all|mixture|digits|merge]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats
from jax.tree_util import Partial

from wgdiff.data.images import load_digits
from wgdiff.data.toy.registry import mixture
from wgdiff.image_features import fd_digits, load_or_train_digits_classifier
from wgdiff.losses import (
    Eq35Projection,
    OracleProjection,
    ScoreAndProjection,
    StepConditioned,
    joint_objective,
    oracle_minimum,
    projection_loss,
    projection_relative_error,
)
from wgdiff.metrics import sliced_w2, w2_with_info
from wgdiff.nets import ScoreMLP
from wgdiff.nets.unet import UNet
from wgdiff.samplers import (
    DDIM,
    PAPER_DELTA_MU,
    DPMSolverPP,
    EulerMaruyama,
    Heun,
    KarrasGrid,
    LogSNRGrid,
    PredictorCorrector,
    PredictProject,
    UniformGrid,
    auto_delta_mu,
    sample,
)
from wgdiff.sde import VPSDE
from wgdiff.train import fit_score_model

RESULTS = Path(__file__).resolve().parent / "results"
EPS = 1e-3

# Ghimire et al. Table 1 (FID, 64x64 images, equal *steps* N, PP at 2 NFE per step).
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
    "nfe": [10, 20, 40, 100],
    # Per mixture part: sample size and seeds (the exact score is cheap to sample with).
    "mix_eval": {"exact_score": {"n": 200_000, "seeds": 4}, "learned": {"n": 16_000, "seeds": 3}},
    "sliced_projections": 64,
    "w2_subset": {
        "parts": ["exact_score"],
        "nfe": [20],
        "samplers": ["em", "pp_oracle"],
        "seeds": 3,
        "n": 2000,
    },
    "delta_mu_sweep": [0.3, 3.0, 10.0],
    "sweep_nfe": [20, 40],
    "proj_train_n": [5, 10, 20, 50, 100, 1000],
    "alphas": [0.0, 0.5, 1.0, 2.0],
    "alpha_nfe": [20],
    "mix_features": [128, 128, 128],
    "mix_proj_steps": 12_000,
    "mix_joint_steps": 25_000,
    "mix_batch": 512,
    "digit_unet": 16,
    "digit_steps": 20_000,
    "digit_budget_cpu_s": 1500.0,
    "digit_checkpoints": 2,
    "digit_batch": 32,
    "digit_eval": 256,
    "digit_seeds": 2,
    "digit_quality_seeds": 3,
    "digit_nfe": [10, 20, 40],
    "digit_quality_steps": 1000,
    "classifier_steps": 1500,
}
# The quick run (tests) swaps the digits UNets for MLPs on flat images: compiling a
# UNet sampler per solver would dominate it.
QUICK = {
    **FULL,
    "nfe": [10, 20],
    "mix_eval": {"exact_score": {"n": 300, "seeds": 2}, "learned": {"n": 300, "seeds": 2}},
    "sliced_projections": 32,
    "w2_subset": {
        "parts": ["exact_score"],
        "nfe": [20],
        "samplers": ["em", "pp_oracle"],
        "seeds": 2,
        "n": 200,
    },
    "delta_mu_sweep": [0.3, 3.0],
    "sweep_nfe": [20],
    "proj_train_n": [5, 10, 1000],
    "alphas": [0.0, 1.0],
    "alpha_nfe": [10],
    "mix_features": [32, 32],
    "mix_proj_steps": 60,
    "mix_joint_steps": 60,
    "mix_batch": 128,
    "digit_unet": 0,
    "digit_steps": 20,
    "digit_budget_cpu_s": 60.0,
    "digit_checkpoints": 2,
    "digit_batch": 16,
    "digit_eval": 64,
    "digit_seeds": 2,
    "digit_quality_seeds": 2,
    "digit_nfe": [10],
    "digit_quality_steps": 40,
    "classifier_steps": 60,
}


# ----------------------------------------------------------------------------- helpers


def cpu_seconds() -> float:
    """CPU time of this process and its children (s)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def exact_w2(x, y) -> float:
    """Exact W2 of two equal-size point sets (``wg.metrics.w2_with_info``, method "exact"),
    refusing a result whose dual certificate does not hold."""
    info = w2_with_info(np.asarray(x, np.float64), np.asarray(y, np.float64), method="exact")
    if not info["converged"]:
        raise RuntimeError(f"exact W2 certificate failed: {info}")
    return float(info["value"])


def paper_delta_mu(n_steps: int) -> float:
    """App. B.1's hand-tuned delta_mu (N = 20: 1, 40: 0.4, 100: 0.1), log-linear in N between
    them, 1 below N = 20 and 0.1 above N = 100 (our extension; the paper gives three values)."""
    ns = sorted(PAPER_DELTA_MU)
    return float(np.interp(np.log(n_steps), np.log(ns), [PAPER_DELTA_MU[n] for n in ns]))


def baseline_solvers(nfe: int) -> dict:
    """Name -> (solver, grid) with ``nfe`` network evaluations each (the field's samplers)."""
    return {
        "em": (EulerMaruyama(), UniformGrid(nfe, EPS)),
        "ddim": (DDIM(), UniformGrid(nfe, EPS)),
        "dpmpp2m": (DPMSolverPP(order=2), LogSNRGrid(nfe, EPS)),
        "heun_karras": (Heun(), KarrasGrid(nfe // 2)),
        "pc": (PredictorCorrector(), UniformGrid(nfe // 2, EPS)),
    }


def summarize(values) -> dict:
    v = np.asarray(values, np.float64)
    se = float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se, "values": v.tolist()}


def paired(a, b) -> dict:
    """Paired difference ``a - b`` over seeds; ``< 0``: ``a`` is better. 95% t interval."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = d.size
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    half = float(scipy.stats.t.ppf(0.975, n - 1) * se) if n > 1 else float("nan")
    mean = float(d.mean())
    if not np.isfinite(half):
        verdict = "undetermined (one seed)"
    elif mean + half < 0:
        verdict = "better"
    elif mean - half > 0:
        verdict = "worse"
    else:
        verdict = "no resolved difference"
    return {"mean": mean, "se": se, "ci95_half_width": half, "verdict": verdict}


def verdicts(table: dict) -> dict:
    """For each NFE and PP arm: paired comparison with EM and with the best other solver."""
    out = {}
    for nfe, row in table.items():
        others = {k: v for k, v in row.items() if not k.startswith("pp_") and k != "em_half"}
        best = min(others, key=lambda k: others[k]["mean"])
        entry = {"best_other_solver": best}
        for arm, stats in row.items():
            if not arm.startswith("pp_"):
                continue
            entry[arm] = {
                "vs_em": paired(stats["values"], row["em"]["values"]),
                "vs_best_other": paired(stats["values"], row[best]["values"]),
            }
            if "em_half" in row:  # Table 1's own comparison: EM with as many *steps*
                entry[arm]["vs_em_same_steps"] = paired(stats["values"], row["em_half"]["values"])
        out[nfe] = entry
    return out


class Evaluator:
    """Runs solvers from paired keys and scores them; collects values per seed."""

    def __init__(self, sde, model, shape, metric):
        self.sde, self.model, self.shape, self.metric = sde, model, shape, metric
        self.nfe_used = {}

    def run(self, key, name, solver, grid, reference):
        result = sample(key, self.sde, self.model, self.shape, solver, grid)
        nfe = int(result.nfe) + int(result.stats.get("projection_evals", 0))
        self.nfe_used[name] = nfe
        return self.metric(np.asarray(result.x), reference), np.asarray(result.x)


def pp_solvers(nfe: int, arms: dict) -> dict:
    """PP arms at ``nfe // 2`` steps: name -> (solver, grid); ``arms``: name -> (T, delta_mu(N))."""
    n = nfe // 2
    out = {}
    for name, (project_fn, rule) in arms.items():
        dm = rule(n)
        if dm is None:
            continue
        out[name] = (PredictProject(project_fn, jnp.asarray(dm)), UniformGrid(n, EPS), dm)
    return out


def sampler_table(cfg, evaluator, arms, references, *, nfe_list, sweep_arms=None, extra=None):
    """``{nfe: {sampler: summary}}`` over seeds (same key per seed for every sampler).

    ``references``: one per seed; ``extra(name, nfe, samples, reference, seed)`` may
    record more metrics (the exact-W2 subset).
    """
    raw: dict = {}
    delta_mus: dict = {}
    sweep: dict = {}
    keep = {}
    for seed, reference in enumerate(references):
        key = jax.random.key(1000 + seed)
        for nfe in nfe_list:
            runs = {k: (s, g) for k, (s, g) in baseline_solvers(nfe).items()}
            if nfe // 2 not in nfe_list:
                runs["em_half"] = (EulerMaruyama(), UniformGrid(nfe // 2, EPS))
            for name, (solver, grid, dm) in pp_solvers(nfe, arms).items():
                runs[name] = (solver, grid)
                delta_mus.setdefault(str(nfe), {})[name] = dm
            for name, (solver, grid) in runs.items():
                value, x = evaluator.run(key, f"{name}@{nfe}", solver, grid, reference)
                raw.setdefault(str(nfe), {}).setdefault(name, []).append(value)
                if extra is not None:
                    extra(name, nfe, x, reference, seed)
                if seed == 0 and name in ("em", "pp_auto", "pp_oracle", "dpmpp2m"):
                    keep[f"{name} NFE={nfe}"] = x[:2000]
            if sweep_arms and nfe in cfg["sweep_nfe"]:
                for arm, project_fn in sweep_arms.items():
                    for dm in cfg["delta_mu_sweep"]:
                        solver = PredictProject(project_fn, jnp.asarray(dm))
                        value, _ = evaluator.run(
                            key, f"{arm}@{nfe}", solver, UniformGrid(nfe // 2, EPS), reference
                        )
                        row = sweep.setdefault(str(nfe), {}).setdefault(arm, {})
                        row.setdefault(str(dm), []).append(value)
        print(f"  seed {seed} done ({cpu_seconds():.0f} CPU s)", flush=True)
    # Table 1's comparison at equal steps: EM with NFE / 2 steps when that NFE is in the list.
    for nfe in nfe_list:
        if nfe // 2 in nfe_list:
            raw[str(nfe)]["em_half"] = raw[str(nfe // 2)]["em"]
    table = {nfe: {k: summarize(v) for k, v in row.items()} for nfe, row in raw.items()}
    sweep_table = {
        nfe: {
            arm: {dm: {**summarize(v), "vs_em": paired(v, raw[nfe]["em"])} for dm, v in row.items()}
            for arm, row in arms_row.items()
        }
        for nfe, arms_row in sweep.items()
    }
    return {
        "table": table,
        "verdicts": verdicts(table),
        "delta_mu": delta_mus,
        "sweep": sweep_table,
        "nfe_used": evaluator.nfe_used,
    }, keep


def alpha_sweep(cfg, evaluator, reference, nfe_list):
    """Euler-Maruyama with Ghimire's reverse-variance alpha (sec 6.2), first seed."""
    key = jax.random.key(1000)
    return {
        str(nfe): {
            "n_steps": nfe,
            "nfe": nfe,
            "values": {
                str(a): evaluator.run(
                    key,
                    f"em_alpha{a}@{nfe}",
                    EulerMaruyama(alpha=a),
                    UniformGrid(nfe, EPS),
                    reference,
                )[0]
                for a in cfg["alphas"]
            },
        }
        for nfe in nfe_list
    }


# ----------------------------------------------------------------------------- training


def train_projection(cfg, sde, score_fn, net, data, seed, n_steps):
    """The projection net alone on the sec 8.2 objective with a fixed (exact) score."""
    params = net.init(jax.random.key(seed), data[:2], jnp.ones(2), jnp.ones(2))

    def objective(sde, apply):
        return lambda p, k, b: projection_loss(
            k, sde, score_fn, functools.partial(apply, p), b, n_steps=cfg["proj_train_n"]
        )

    fit = fit_score_model(
        sde,
        net,  # not a score model: the objective below replaces DSM
        data,
        key=jax.random.key(seed + 1),
        n_steps=n_steps,
        batch_size=cfg["mix_batch"],
        learning_rate=2e-3,
        objective=objective,
        params=params,
        log_every=max(1, n_steps // 10),
        mesh=None,
    )
    return Partial(net.apply, fit.params), fit.history


def train_joint(cfg, sde, joint, data, seed, n_steps, batch, lr, budget_s=None, **evaluation):
    x1 = jnp.asarray(data[:2])
    params = joint.init(
        jax.random.key(seed), x1, jnp.full(2, 0.5), method=ScoreAndProjection.init_both
    )
    fit = fit_score_model(
        sde,
        joint,
        data,
        key=jax.random.key(seed + 1),
        n_steps=n_steps,
        batch_size=batch,
        learning_rate=lr,
        output="noise",
        objective=lambda sde, apply: joint_objective(
            sde, apply, joint.project_apply, n_steps=cfg["proj_train_n"], eps=EPS
        ),
        params=params,
        budget_s=budget_s,
        clock="process",
        **evaluation,  # evaluate, evaluate_every (digits quality checkpoints)
        log_every=max(1, n_steps // 20),
        mesh=None,
    )
    return Partial(fit.apply, fit.params), Partial(joint.project_apply, fit.params), fit.history


# ----------------------------------------------------------------------------- mixture


def run_mixture(cfg, sde, parts=("exact_score", "learned")):
    gm = mixture("eight_gaussians")
    exact_score = gm.score_fn(sde)
    oracle = OracleProjection(gm, sde)
    data = gm.sample(jax.random.key(1), 50_000)
    held_out = gm.sample(jax.random.key(2), 8000)
    metric = lambda x, ref: float(sliced_w2(jax.random.key(7), x, ref, cfg["sliced_projections"]))
    out = {
        "dataset": "eight_gaussians (wgdiff.data.toy: radius 2 sqrt 2, std sqrt 2 / 4)",
        "metric": f"sliced W2, {cfg['sliced_projections']} directions (wg.metrics.sliced_w2), "
        "against a fresh reference sample of the same size per seed",
    }
    features = tuple(cfg["mix_features"])
    proj_net = StepConditioned(ScoreMLP(features=features))

    def oracle_rule(n_steps):
        times = np.linspace(sde.T, EPS, n_steps + 1)
        ok = bool(np.all(np.asarray(oracle.bijective(times[:-1], times[:-1] - times[1:]))))
        return 1.0 if ok else None

    exact_rows: dict = {}
    sub = cfg["w2_subset"]

    def w2_subset(part):
        def extra(name, nfe, x, reference, seed):
            wanted = part in sub["parts"] and nfe in sub["nfe"] and name in sub["samplers"]
            if wanted and seed < sub["seeds"]:
                rows = exact_rows.setdefault(part, {}).setdefault(str(nfe), {})
                rows.setdefault(name, []).append(exact_w2(x[: sub["n"]], reference[: sub["n"]]))

        return extra

    samples = {}
    for part in parts:
        start_cpu, start = cpu_seconds(), time.perf_counter()
        n, seeds = cfg["mix_eval"][part]["n"], cfg["mix_eval"][part]["seeds"]
        references = [gm.sample(jax.random.key(100 + s), n) for s in range(seeds)]
        floor_sets = [gm.sample(jax.random.key(200 + s), n) for s in range(seeds)]
        floor = summarize([metric(f, r) for f, r in zip(floor_sets, references, strict=True)])
        if part == "exact_score":
            score_fn = exact_score
            project_fn, history = train_projection(
                cfg, sde, exact_score, proj_net, data, 10, cfg["mix_proj_steps"]
            )
            train_info = {"projection_steps": cfg["mix_proj_steps"], "batch": cfg["mix_batch"]}
        else:
            joint = ScoreAndProjection(ScoreMLP(features=features), proj_net)
            score_fn, project_fn, history = train_joint(
                cfg, sde, joint, data, 30, cfg["mix_joint_steps"], cfg["mix_batch"], 2e-3
            )
            train_info = {
                "joint_steps": int(history[-1]["step"]) if history else 0,
                "batch": cfg["mix_batch"],
            }
        train_info["final_loss"] = float(history[-1]["loss"]) if history else float("nan")
        train_info["cpu_s"] = cpu_seconds() - start_cpu
        print(f"mixture {part}: trained ({train_info['cpu_s']:.0f} CPU s)", flush=True)
        auto = auto_delta_mu(
            jax.random.key(3),
            sde,
            score_fn,
            project_fn,
            data[:4000],
            sorted({nfe // 2 for nfe in cfg["nfe"]}),
        )
        # Capacity: held-out distance of the trained net to the exact optimum T* of the
        # exact-score objective (for "learned" it also carries the score net's error).
        bij = [m for m in cfg["proj_train_n"] if oracle_rule(m) is not None]
        capacity = {
            "relative_error_to_oracle": projection_relative_error(
                jax.random.key(4), sde, exact_score, project_fn, oracle, held_out, n_steps=bij
            ),
            "objective_at_net": float(
                projection_loss(
                    jax.random.key(4), sde, exact_score, project_fn, held_out, n_steps=bij
                )
            ),
            "objective_at_oracle": oracle_minimum(jax.random.key(4), oracle, held_out, n_steps=bij),
            "n_steps": bij,
            "projection_net": f"StepConditioned(ScoreMLP{features}), same size as the score net",
        }
        arms = {"pp_paper": (project_fn, paper_delta_mu), "pp_auto": (project_fn, auto.get)}
        if part == "exact_score":  # the oracle arms judge the algorithm free of training error
            arms["pp_oracle"] = (oracle, oracle_rule)
            arms["pp_literal"] = (Eq35Projection(oracle, sde), oracle_rule)
            sweep_arms = {"oracle": oracle}  # the net's sweep runs on the learned mixture
        else:
            arms["pp_literal"] = (Eq35Projection(project_fn, sde), lambda m: 1.0)
            sweep_arms = {"net": project_fn}
        evaluator = Evaluator(sde, score_fn, (n, 2), metric)
        results, keep = sampler_table(
            cfg,
            evaluator,
            arms,
            references,
            nfe_list=cfg["nfe"],
            sweep_arms=sweep_arms,
            extra=w2_subset(part),
        )
        results["alpha_sweep_first_seed"] = alpha_sweep(
            cfg, evaluator, references[0], cfg["alpha_nfe"]
        )
        if part in sub["parts"]:
            exact_floor = [
                exact_w2(floor_sets[s][: sub["n"]], references[s][: sub["n"]])
                for s in range(sub["seeds"])
            ]
            exact_rows.setdefault(part, {})["floor"] = exact_floor
        out[part] = {
            "n_eval": n,
            "seeds": seeds,
            "floor_sliced_w2": floor,
            "training": train_info,
            "delta_mu_auto": auto,
            "capacity": capacity,
            **results,
            "cpu_s": cpu_seconds() - start_cpu,
            "wall_s": time.perf_counter() - start,
        }
        samples.update({f"{part}: {k}": v for k, v in keep.items()})
        samples.setdefault("reference", np.asarray(references[0][:2000]))
        print(f"mixture {part}: done ({out[part]['cpu_s']:.0f} CPU s)", flush=True)
    out["exact_w2_subset"] = {
        "n": sub["n"],
        "method": "wg.metrics.w2_with_info(method='exact'), dual certificate checked",
        **{
            part: {
                key: summarize(v) if key == "floor" else {k: summarize(x) for k, x in v.items()}
                for key, v in rows.items()
            }
            for part, rows in exact_rows.items()
        },
    }
    reference = samples.pop("reference")
    return out, samples, reference


MIXTURE_PARTS = {
    "mixture": ("exact_score", "learned"),
    "mixture_exact": ("exact_score",),
    "mixture_learned": ("learned",),
}


def _load_mixture(out_dir, suffix):
    """The mixture part file, or the two half-parts run side by side, merged."""
    if (out_dir / f"predict_project{suffix}_part_mixture.json").exists():
        return _load_part(out_dir, suffix, "mixture")
    mix, samples = _load_part(out_dir, suffix, "mixture_exact")
    learned, more = _load_part(out_dir, suffix, "mixture_learned")
    mix["learned"] = learned["learned"]
    mix["exact_w2_subset"].update(learned["exact_w2_subset"])
    mix["machine"] = {"exact_score": mix["machine"], "learned": learned["machine"]}
    more.pop("reference")
    return mix, {**samples, **more}


# ----------------------------------------------------------------------------- digits


def run_digits(cfg, sde, out_dir):
    images = jnp.asarray(load_digits())
    start_cpu, start = cpu_seconds(), time.perf_counter()
    clf_params, clf_info = load_or_train_digits_classifier(
        out_dir, seed=0, n_steps=cfg["classifier_steps"]
    )
    reference = np.asarray(images)
    n = cfg["digit_eval"]
    rng = np.random.default_rng(0)
    floors = [
        fd_digits(
            reference[rng.choice(len(reference), n, replace=False)], reference, params=clf_params
        )
        for _ in range(cfg["digit_quality_seeds"])
    ]
    metric = lambda x, ref: float(fd_digits(x, ref, params=clf_params))
    images_of = (lambda x: x.reshape(-1, 8, 8, 1)) if not cfg["digit_unet"] else (lambda x: x)
    image_metric = lambda x, ref: metric(images_of(x), ref)
    if cfg["digit_unet"]:
        joint = ScoreAndProjection(
            UNet(base_channels=cfg["digit_unet"]),
            StepConditioned(UNet(base_channels=cfg["digit_unet"])),
        )
        data, shape = images, (n, 8, 8, 1)
    else:
        joint = ScoreAndProjection(
            ScoreMLP(features=(64, 64)), StepConditioned(ScoreMLP(features=(64, 64)))
        )
        data, shape = images.reshape(images.shape[0], -1), (n, 64)
    quality_steps = cfg["digit_quality_steps"]

    def quality(score_fn, seed=0):
        """FD-digits of EM at ``digit_quality_steps`` (sampling key ``999 + seed``)."""
        model = Partial(score_fn.func, *score_fn.args)  # params traced: one compile
        grid = UniformGrid(quality_steps, EPS)
        x = sample(jax.random.key(999 + seed), sde, model, shape, EulerMaruyama(), grid).x
        return image_metric(np.asarray(x), reference)

    def quality_check(score_fn, state):
        """The training checkpoints' FD-digits on the EMA net (same key each time)."""
        return {"fd_digits_em": quality(score_fn)}

    score_fn, project_fn, history = train_joint(
        cfg,
        sde,
        joint,
        data,
        40,
        cfg["digit_steps"],
        cfg["digit_batch"],
        1e-3,
        budget_s=cfg["digit_budget_cpu_s"],
        evaluate=quality_check,
        evaluate_every=cfg["digit_steps"] // cfg["digit_checkpoints"],
    )
    train_cpu = cpu_seconds() - start_cpu
    print(f"digits trained ({train_cpu:.0f} CPU s, {history[-1]['step']} steps)", flush=True)
    checkpoints = [
        {"step": int(r["step"]), "fd_digits_em": r["fd_digits_em"], "loss": float(r["loss"])}
        for r in history
        if "fd_digits_em" in r
    ]
    # The final EMA net: fit's last evaluation (key 999) and further sampling keys.
    quality_seeds = [checkpoints[-1]["fd_digits_em"]] + [
        quality(score_fn, s) for s in range(1, cfg["digit_quality_seeds"])
    ]
    quality = float(np.mean(quality_seeds))
    evaluator = Evaluator(sde, score_fn, shape, image_metric)
    auto = auto_delta_mu(
        jax.random.key(3),
        sde,
        score_fn,
        project_fn,
        data[:512],
        sorted({nfe // 2 for nfe in cfg["digit_nfe"]}),
        n_repeats=2,
    )
    arms = {
        "pp_paper": (project_fn, paper_delta_mu),
        "pp_auto": (project_fn, auto.get),
        "pp_literal": (Eq35Projection(project_fn, sde), lambda m: 1.0),
    }
    results, keep = sampler_table(
        cfg,
        evaluator,
        arms,
        [reference] * cfg["digit_seeds"],
        nfe_list=cfg["digit_nfe"],
        sweep_arms={"net": project_fn},
    )
    results["alpha_sweep_first_seed"] = alpha_sweep(cfg, evaluator, reference, cfg["alpha_nfe"])
    floor = summarize(floors)
    result = {
        "classifier": clf_info,
        "n_eval": n,
        "metric": "FD-digits (Frechet distance of DigitsClassifier features; not FID)",
        "fd_digits_floor_real_subset": floor,
        "net": f"UNet(base_channels={cfg['digit_unet']}) x2" if cfg["digit_unet"] else "MLP x2",
        "training": {
            "steps_done": int(history[-1]["step"]),
            "steps_max": cfg["digit_steps"],
            "cpu_budget_s": cfg["digit_budget_cpu_s"],
            "final_loss": float(history[-1]["loss"]),
            "stopped": history[-1].get("stopped"),
            "lr": "1e-3 peak, cosine to 5% over steps_max; EMA 0.999",
            "cpu_s": train_cpu,
            "fd_digits_checkpoints": checkpoints,
        },
        "quality_em": {
            "n_steps": quality_steps,
            "fd_digits": quality,
            "fd_digits_per_seed": summarize(quality_seeds),
            "note": f"mean over {len(quality_seeds)} sampling keys of {n} samples (the first is "
            "the last training checkpoint's); the floor: as many real subsets of the same size",
            "ratio_to_floor": quality / floor["mean"],
            "ratio_per_seed": [q / floor["mean"] for q in quality_seeds],
            "target_ratio": 1.5,
            "target_met": bool(quality / floor["mean"] <= 1.5),
        },
        "delta_mu_auto": auto,
        **results,
        "cpu_s": cpu_seconds() - start_cpu,
        "wall_s": time.perf_counter() - start,
    }
    grids = {k: images_of(v)[:16] for k, v in keep.items() if k.startswith(("em", "pp_auto"))}
    return result, grids


# ----------------------------------------------------------------------------- report


def _parts(result) -> dict:
    parts = {}
    if "mixture" in result:
        parts["mixture_exact_score"] = result["mixture"]["exact_score"]
        parts["mixture_learned"] = result["mixture"]["learned"]
    if "digits" in result:
        parts["digits"] = result["digits"]
    return parts


def headline(result) -> dict:
    """Per data set and NFE: every sampler's mean +- SE, each PP arm's verdicts."""
    out = {}
    for name, part in _parts(result).items():
        out[name] = {}
        floor = part.get("floor_sliced_w2", part.get("fd_digits_floor_real_subset"))
        for nfe, row in part["table"].items():
            v = part["verdicts"][nfe]
            out[name][nfe] = {
                "errors": {k: [s["mean"], s["se"]] for k, s in row.items()},
                "floor": [floor["mean"], floor["se"]],
                # how far the best sampler sits above the two-sample floor
                "min_error_over_floor": min(s["mean"] for s in row.values()) / floor["mean"],
                "best_other_solver": v["best_other_solver"],
                "pp": {
                    arm: {
                        "vs_em": v[arm]["vs_em"]["verdict"],
                        "vs_best_other": v[arm]["vs_best_other"]["verdict"],
                        "minus_em": [
                            v[arm]["vs_em"]["mean"],
                            v[arm]["vs_em"]["ci95_half_width"],
                        ],
                        "minus_best_other": [
                            v[arm]["vs_best_other"]["mean"],
                            v[arm]["vs_best_other"]["ci95_half_width"],
                        ],
                    }
                    for arm in v
                    if arm.startswith("pp_")
                },
            }
    return out


def oracle_statement(result) -> str:
    """The sentence the issue asks for, computed from the exact-score verdicts."""
    part = result["mixture"]["exact_score"]
    rows = []
    helped = False
    for nfe, v in part["verdicts"].items():
        if "pp_oracle" not in v:
            continue
        cmp = v["pp_oracle"]["vs_em"]
        rows.append(
            f"NFE {nfe}: oracle - EM = {cmp['mean']:+.4f} +- {cmp['ci95_half_width']:.4f}"
            f" ({cmp['verdict']})"
        )
        helped |= cmp["verdict"] == "better"
    lead = (
        "Even the exact optimal projection (oracle, delta_mu = 1) does not beat Euler-Maruyama at "
        "equal NFE on the mixture with its exact score: the algorithm as printed does not deliver "
        "Table 1's gain here. "
        if not helped
        else "The oracle projection (delta_mu = 1) beats Euler-Maruyama at equal NFE somewhere: "
    )
    sweep = [
        f"NFE {nfe} delta_mu {dm}: {cell['vs_em']['mean']:+.4f} +- "
        f"{cell['vs_em']['ci95_half_width']:.4f} ({cell['vs_em']['verdict']})"
        for nfe, arms in part.get("sweep", {}).items()
        for dm, cell in arms.get("oracle", {}).items()
    ]
    tail = f". Oracle delta_mu sweep, oracle - EM at equal NFE: {'; '.join(sweep)}" if sweep else ""
    return lead + "; ".join(rows) + tail


def markdown(result) -> str:
    lines = []
    for name, parts in headline(result).items():
        nfes = list(parts)
        samplers = list(dict.fromkeys(s for row in parts.values() for s in row["errors"]))
        lines.append(f"\n**{name}** (mean +- SE over seeds; lower is better)\n")
        lines.append("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        for s in samplers:
            cells = []
            for n in nfes:
                e = parts[n]["errors"].get(s)
                cells.append("-" if e is None else f"{e[0]:.3f} +- {e[1]:.3f}")
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        floor = parts[nfes[0]]["floor"]
        lines.append(
            "| two-sample floor | "
            + " | ".join(f"{floor[0]:.3f} +- {floor[1]:.3f}" for _ in nfes)
            + " |"
        )
        for n in nfes:
            best = parts[n]["best_other_solver"]
            verdict = "; ".join(
                f"{arm}: {d['vs_em']} vs EM ({d['minus_em'][0]:+.4f} +- {d['minus_em'][1]:.4f}), "
                f"{d['vs_best_other']} vs {best} ({d['minus_best_other'][0]:+.4f} +- "
                f"{d['minus_best_other'][1]:.4f})"
                for arm, d in parts[n]["pp"].items()
            )
            lines.append(
                f"\nNFE {n} (best sampler / floor = {parts[n]['min_error_over_floor']:.2f}; "
                f"differences: mean +- 95% half-width over paired seeds): {verdict}"
            )
    for name, part in _parts(result).items():
        for nfe, arms in part.get("sweep", {}).items():
            cells = [
                f"{arm} {dm}: {c['mean']:.3f} +- {c['se']:.3f} ({c['vs_em']['verdict']} vs EM)"
                for arm, row in arms.items()
                for dm, c in row.items()
            ]
            lines.append(f"\n{name} delta_mu sweep at NFE {nfe}: " + "; ".join(cells))
    return "\n".join(lines)


def plot(out_dir, suffix, toy_samples, reference, digit_grids):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if toy_samples:
        names = [k for k in toy_samples if "NFE=20" in k or "NFE=10" in k][:8]
        fig, axes = plt.subplots(1, len(names) + 1, figsize=(2.6 * (len(names) + 1), 2.8))
        for ax, name in zip(axes, ["data"] + names, strict=True):
            pts = reference if name == "data" else toy_samples[name]
            ax.scatter(pts[:, 0], pts[:, 1], s=0.5)
            ax.set_title(name, fontsize=7)
            ax.set_xlim(-5, 5)
            ax.set_ylim(-5, 5)
            ax.set_aspect("equal")
        fig.tight_layout()
        fig.savefig(out_dir / f"predict_project{suffix}_mixture.png", dpi=100)
        plt.close(fig)
    if digit_grids:
        fig, axes = plt.subplots(1, len(digit_grids), figsize=(2.2 * len(digit_grids), 2.4))
        for ax, (name, imgs) in zip(np.atleast_1d(axes), digit_grids.items(), strict=True):
            tiles = np.clip(np.asarray(imgs)[:16, :, :, 0], -1, 1).reshape(4, 4, 8, 8)
            ax.imshow(tiles.transpose(0, 2, 1, 3).reshape(32, 32), cmap="gray_r")
            ax.set_title(name, fontsize=8)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(out_dir / f"predict_project{suffix}_digits.png", dpi=100)
        plt.close(fig)


def _save_part(out_dir, suffix, name, result, arrays):
    (out_dir / f"predict_project{suffix}_part_{name}.json").write_text(
        json.dumps(result, indent=2, default=float)
    )
    np.savez(out_dir / f"predict_project{suffix}_part_{name}.npz", **arrays)


def _load_part(out_dir, suffix, name):
    result = json.loads((out_dir / f"predict_project{suffix}_part_{name}.json").read_text())
    with np.load(out_dir / f"predict_project{suffix}_part_{name}.npz") as arrays:
        return result, dict(arrays)


def _git_state() -> dict:
    """The commit this script runs from and whether its tree has uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        return {"commit": head, "modified_tracked_files": [f for f in dirty if f.strip()]}
    except (OSError, subprocess.CalledProcessError) as err:
        return {"commit": f"unknown ({err})"}


def run_parts_side_by_side(args) -> dict:
    """``--part all``: the digits part and the mixture part as two processes at once (one
    XLA thread each, so two cores are both used), then the merge in this process.

    Returns the run's record: wall and CPU seconds (children included), load averages.
    """
    script = [sys.executable, str(Path(__file__).resolve())]
    extra = ["--out", str(args.out)] + (["--quick"] if args.quick else [])
    env = {
        **os.environ,
        "XLA_FLAGS": (
            os.environ.get("XLA_FLAGS", "")
            + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        ).strip(),
    }
    git = _git_state()
    start_cpu, start = cpu_seconds(), time.perf_counter()
    load_start, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    procs = {
        part: subprocess.Popen([*script, "--part", part, *extra], env=env)
        for part in ("digits", "mixture")
    }
    codes = {part: proc.wait() for part, proc in procs.items()}
    if any(codes.values()):
        raise RuntimeError(f"a part failed: exit codes {codes}")
    return {
        "command": "python experiments/predict_project.py" + (" --quick" if args.quick else ""),
        "layout": "two processes side by side (--part digits, --part mixture), one XLA "
        "thread each, then the merge",
        "wall_s_parts": time.perf_counter() - start,
        "cpu_s": cpu_seconds() - start_cpu,
        "load_average_start": load_start,
        "load_average_end_parts": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "started_utc": started,
        "code": {**git, "repo": str(Path(__file__).resolve().parents[1])},
        "_start": start,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for the tests")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--part",
        choices=("all", "mixture", "mixture_exact", "mixture_learned", "digits", "merge"),
        default="all",
        help="run one part and save it (parts can run side by side), or merge the saved parts",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    suffix = "_quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    sde = VPSDE()
    start_cpu, start = cpu_seconds(), time.perf_counter()
    machine = {"load_average_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    full_run = None
    if args.part == "all":
        full_run = run_parts_side_by_side(args)
    if args.part in MIXTURE_PARTS:
        mix, toy_samples, reference = run_mixture(cfg, sde, MIXTURE_PARTS[args.part])
        mix["machine"] = {
            **machine,
            "load_average_end": os.getloadavg(),
            "cpu_s": cpu_seconds() - start_cpu,
            "wall_s": time.perf_counter() - start,
        }
        _save_part(args.out, suffix, args.part, mix, {**toy_samples, "reference": reference})
    if args.part == "digits":
        start_d_cpu, start_d = cpu_seconds(), time.perf_counter()
        digits, grids = run_digits(cfg, sde, args.out)
        digits["machine"] = {
            **machine,
            "load_average_end": os.getloadavg(),
            "cpu_s": cpu_seconds() - start_d_cpu,
            "wall_s": time.perf_counter() - start_d,
        }
        _save_part(args.out, suffix, "digits", digits, grids)
    if args.part not in ("all", "merge"):
        return None
    mix, toy_samples = _load_mixture(args.out, suffix)
    reference = toy_samples.pop("reference")
    digits, grids = _load_part(args.out, suffix, "digits")
    result = {
        "experiment": "predict_project",
        "paper": "Ghimire et al., Geometry of Score Based Generative Models: Table 1, Alg. 1, "
        "sec 8.2, eq. 35, app. B.1, sec 6.2",
        "quick": args.quick,
        "config": cfg,
        "sde": "VPSDE(beta_min=0.1, beta_max=20, linear), eps = 1e-3",
        "nfe_accounting": "every network call counts; Predict-Project = score + projection net "
        "per step, so NFE / 2 steps; Heun (Karras grid) and PC take 2 NFE per step",
        "scaled_down": (
            "CPU scale on a 2-core machine shared by 4 helpers and the lead (load average in "
            "the machine records). Mixture: sliced W2 with "
            f"{cfg['sliced_projections']} directions on n = {cfg['mix_eval']['exact_score']['n']} "
            f"(exact score, {cfg['mix_eval']['exact_score']['seeds']} seeds) and "
            f"{cfg['mix_eval']['learned']['n']} (learned, {cfg['mix_eval']['learned']['seeds']} "
            "seeds) samples: every sampler run at that n costs its network calls (at n = 1e5 on "
            "one thread, 2026-12-01 at load 5: a 50-step PP run 10.7 CPU-s with the oracle, 11.5 "
            "with the projection net, EM at 100 steps 1.1 s, one sliced W2 0.46 s), so 1e6 "
            "samples per sampler did not fit the 40-minute run; the oracle's delta_mu sweep "
            "runs on the exact score, the net's on the learned mixture; exact W2 only on "
            f"w2_subset (n = {cfg['w2_subset']['n']}). Learned-mixture nets: "
            f"{cfg['mix_joint_steps']} joint steps at batch {cfg['mix_batch']} (10x the "
            "2500 x 512 of the issue's run); projection net on the exact score "
            f"{cfg['mix_proj_steps']} steps (10x 1200). Digits: {cfg['digit_eval']} samples, "
            f"{cfg['digit_seeds']} sampling seeds of one trained pair (the EM quality number: "
            f"{cfg['digit_quality_seeds']} keys), {cfg['digit_steps']} joint "
            f"steps at batch {cfg['digit_batch']} (CPU cap {cfg['digit_budget_cpu_s']} s), NFE "
            f"{cfg['digit_nfe']}; the alpha sweep uses the first seed only. The paper trains 64x64 "
            "UNets for 50k-450k steps and reports FID; FD-digits is not FID."
        ),
        "paper_table1_fid": PAPER_TABLE1,
        "delta_mu_rules": {
            "paper": "app. B.1 (N = 20: 1, 40: 0.4, 100: 0.1), log-linear in N between, 1 below "
            "N = 20 (our extension)",
            "auto": "wgdiff.samplers.auto_delta_mu on the trained nets",
            "oracle/literal": "delta_mu = 1; oracle arms only where the predict map is a "
            "bijection on every step (OracleProjection.bijective), i.e. not at NFE 10 (N = 5)",
        },
        "mixture": mix,
        "digits": digits,
        "headline": None,
        "statement": None,
        "machine": {
            "load_average_end": os.getloadavg(),
            "note": "shared machine; CPU seconds are this process and its children",
            "merge_cpu_s": cpu_seconds() - start_cpu,
        },
    }
    # Parts saved by an earlier revision of this script (they lack the all-seed "sweep").
    notes = {}
    if "sweep_first_seed" in digits:
        notes["digits"] = (
            "run by revision 59d0d15 of this script, whose delta_mu sweep used the first seed "
            "only (digits.sweep_first_seed); the rest of the digits path is the final script's"
        )
    for part in ("exact_score", "learned"):
        if "sweep_first_seed" in mix[part]:
            notes[f"mixture_{part}"] = (
                "not rerun (no machine time left): the session-18 part of revision c311ebc, "
                "n = 8000 x 3 seeds, sliced W2 with 256 directions, "
                f"{mix[part]['training']} (not this config's steps), sweep on the first seed"
            )
    if notes:
        result["part_notes"] = notes
    if full_run is not None:
        full_run["merge_cpu_s"] = cpu_seconds() - start_cpu - full_run["cpu_s"]
        result["full_run"] = full_run
    result["headline"] = headline(result)
    result["statement"] = oracle_statement(result)
    result["table_markdown"] = markdown(result)
    plot(args.out, suffix, toy_samples, reference, grids)
    if full_run is not None:  # the whole command, merge and plots included
        full_run["wall_s"] = time.perf_counter() - full_run.pop("_start")
        full_run["cpu_s_total"] = cpu_seconds() - start_cpu
        full_run["load_average_end"] = os.getloadavg()
    path = args.out / f"predict_project{suffix}.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print(result["statement"])
    print(result["table_markdown"])
    return result


if __name__ == "__main__":
    main()
