"""Predict-Project vs Euler-Maruyama time per step; UNet training throughput.

Side by side in one run:

- time per sampler step of ``predict_project`` and ``euler_maruyama`` with equal
  score and projection nets (an MLP on 2-D points and a UNet on 8x8 images); one
  Predict-Project step calls two nets, so the ratio should be near 2;
- UNet training images per second (DSM step, Adam) at 8x8x1 (the digits
  default) and 32x32x3 on whatever device JAX uses, measured as the library
  trains: one jitted step per call from Python (``wgdiff.train``). The same
  steps inside one ``lax.scan`` are timed beside it, because XLA on CPU runs
  convolution gradients in a scan body far slower (an earlier record timed only
  the scan and reported 4.75 images/s);
- the minimal reproduction of that slowness: the gradient of one 3x3
  convolution, ``n`` steps in a Python loop of a jitted step vs in one
  ``lax.scan``, same arithmetic (``scan_convolution_repro``).

Run: ``python -m benchmarks.bench_predict_project`` (writes
``benchmarks/results/predict_project.json``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from benchmarks._common import measure, write_result
from wgdiff.losses import dsm_loss
from wgdiff.losses.projection import StepConditioned
from wgdiff.nets import ScoreMLP
from wgdiff.nets.unet import UNet
from wgdiff.samplers.predict_project import predict_project
from wgdiff.samplers.scan import euler_maruyama
from wgdiff.sde import VPSDE


def _sampler_case(net, x_example, shape, n_steps, repeats):
    sde = VPSDE()
    proj_net = StepConditioned(net)
    ones = jnp.ones(x_example.shape[0])
    score_params = net.init(jax.random.key(0), x_example, ones)
    # The projection net is the same architecture with one extra input channel.
    proj_params = proj_net.init(jax.random.key(1), x_example, ones, ones)
    score_fn = functools.partial(net.apply, score_params)
    project_fn = functools.partial(proj_net.apply, proj_params)
    key = jax.random.key(2)
    run_em = lambda: euler_maruyama(key, sde, score_fn, shape, n_steps)
    run_pp = lambda: predict_project(key, sde, score_fn, project_fn, shape, n_steps, delta_mu=0.5)
    # Interleaved single runs, so load from other processes hits both alike; medians.
    m_em, m_pp = [], []
    for _ in range(repeats):
        m_em.append(measure(run_em, repeats=1))
        m_pp.append(measure(run_pp, repeats=1))
    em, pp = (sorted(m["wall_s"] for m in ms)[len(ms) // 2] for ms in (m_em, m_pp))
    em_cpu, pp_cpu = (sorted(m["cpu_s"] for m in ms)[len(ms) // 2] for ms in (m_em, m_pp))
    return {
        "n_samples": shape[0],
        "n_steps": n_steps,
        "repeats": repeats,
        "em_seconds_per_step": em / n_steps,
        "pp_seconds_per_step": pp / n_steps,
        "em_cpu_seconds_per_step": em_cpu / n_steps,
        "pp_cpu_seconds_per_step": pp_cpu / n_steps,
        "pp_over_em": pp / em,
        "pp_over_em_cpu": pp_cpu / em_cpu,
        "pp_over_em_per_repeat": [
            p["wall_s"] / e["wall_s"] for e, p in zip(m_em, m_pp, strict=True)
        ],
        "load_average_1m_per_repeat": [m["load_average_1m"] for m in m_em],
    }


def _unet_training(
    image_shape, batch, base_channels, channel_mult, attention, n_steps, scan_steps=None
):
    """Images/s of DSM + Adam steps: jitted step per call (as trained) and inside lax.scan.

    ``scan_steps`` steps (None: skip) run inside one ``lax.scan`` for comparison.
    """
    sde = VPSDE()
    net = UNet(
        base_channels=base_channels, channel_mult=channel_mult, attention_resolutions=attention
    )
    x = jax.random.normal(jax.random.key(0), (batch,) + image_shape)
    params = net.init(jax.random.key(1), x[:1], jnp.ones(1))
    opt = optax.adam(1e-4)
    opt_state = opt.init(params)

    def one_step(params, opt_state, k):
        grads = jax.grad(
            lambda p: dsm_loss(k, sde, functools.partial(net.apply, p), x, weighting="sigma2")
        )(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    step = jax.jit(one_step)
    keys = jax.random.split(jax.random.key(2), n_steps)

    def python_loop(params, opt_state):
        for k in keys:
            params, opt_state = step(params, opt_state, k)
        return params

    @jax.jit
    def in_scan(params, opt_state):
        def body(carry, k):
            return one_step(*carry, k), None

        (params, _), _ = jax.lax.scan(body, (params, opt_state), keys[:scan_steps])
        return params

    loop = measure(python_loop, params, opt_state, repeats=3)
    timing = {"jitted_step_loop": loop}
    row = {
        "image_shape": list(image_shape),
        "batch": batch,
        "base_channels": base_channels,
        "channel_mult": list(channel_mult),
        "parameters": int(sum(p.size for p in jax.tree.leaves(params))),
        "steps_timed": n_steps,
        "images_per_second": batch * n_steps / loop["wall_s"],
        "images_per_cpu_second": batch * n_steps / loop["cpu_s"],
    }
    if scan_steps:
        timing["lax_scan"] = scan = measure(in_scan, params, opt_state, repeats=2)
        row["scan_steps_timed"] = scan_steps
        row["images_per_second_in_lax_scan"] = batch * scan_steps / scan["wall_s"]
    return {**row, "timing": timing}


def scan_convolution_repro(batch: int, size: int, channels: int, n_steps: int) -> dict:
    """Minimal reproduction: one 3x3 conv's gradient step, Python loop vs ``lax.scan``.

    ``x: (batch, size, size, channels)``; the step is ``w -= 1e-3 * grad(sum(conv(x, w)^2))``,
    identical in both forms, and the results are compared.
    """
    x = jax.random.normal(jax.random.key(0), (batch, size, size, channels))
    w0 = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, channels, channels))

    def loss(w):
        y = jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.sum(y**2) / y.size

    def update(w, _):
        return w - 1e-3 * jax.grad(loss)(w), None

    step = jax.jit(lambda w: update(w, None)[0])

    def python_loop(w):
        for _ in range(n_steps):
            w = step(w)
        return w

    in_scan = jax.jit(lambda w: jax.lax.scan(update, w, None, length=n_steps)[0])
    loop = measure(python_loop, w0, repeats=3)
    scan = measure(in_scan, w0, repeats=3)
    return {
        "what": "n gradient steps of one 3x3 convolution: jitted step in a Python loop vs "
        "one jitted lax.scan over the same step",
        "x_shape": [batch, size, size, channels],
        "n_steps": n_steps,
        "loop_seconds": loop["wall_s"],
        "scan_seconds": scan["wall_s"],
        "scan_over_loop": scan["wall_s"] / loop["wall_s"],
        "scan_over_loop_cpu": scan["cpu_s"] / loop["cpu_s"],
        "max_abs_difference": float(jnp.max(jnp.abs(python_loop(w0) - in_scan(w0)))),
        "timing": {"loop": loop, "scan": scan},
    }


def run(quick: bool = False) -> dict:
    repeats = 2 if quick else 5
    mlp = _sampler_case(
        ScoreMLP(features=(64, 64, 64, 64)),
        jnp.zeros((1, 2)),
        (512 if quick else 4096, 2),
        20 if quick else 100,
        repeats,
    )
    unet = _sampler_case(
        UNet(base_channels=8 if quick else 32),
        jnp.zeros((1, 8, 8, 1)),
        (32 if quick else 64, 8, 8, 1),
        5 if quick else 10,
        2 if quick else 3,  # a UNet step inside the sampler's scan is slow on CPU (see repro)
    )
    training = [
        _unet_training(
            (8, 8, 1),
            16 if quick else 128,
            8 if quick else 32,
            (1, 2),
            (4,),
            2 if quick else 10,
            scan_steps=1 if quick else 2,
        )
    ]
    if not quick:
        training.append(_unet_training((32, 32, 3), 32, 32, (1, 2, 2), (8,), 3))
    repro = scan_convolution_repro(16 if quick else 64, 8, 16 if quick else 32, 5 if quick else 20)
    record = {
        "quick": quick,
        "sampler_step": {"mlp_2d": mlp, "unet_8x8": unet},
        "unet_training": training,
        "scan_convolution_repro": repro,
        "note": "PP calls the score net and the projection net (same architecture, one "
        "extra input channel) per step; EM calls the score net once, so pp_over_em should be "
        "near 2; a ratio below 1 is load noise (see pp_over_em_per_repeat and the CPU ratio).",
    }
    write_result("predict_project", record)
    return record


def headline(r: dict) -> dict:
    """Step-time ratios (wall and CPU), UNet images/s outside and inside lax.scan.

    Records written before CPU times and the scan comparison existed give what they have.
    """
    out = {}
    for case, row in r["sampler_step"].items():
        cpu = row.get("pp_over_em_cpu")
        label = f"Predict-Project / Euler-Maruyama time per step ({case}), wall / CPU"
        out[label] = f"{row['pp_over_em']:.3g} / " + ("n/a" if cpu is None else f"{cpu:.3g}")
    for row in r["unet_training"]:
        shape = "x".join(str(s) for s in row["image_shape"])
        how = "jitted step" if "timing" in row else "all steps inside lax.scan (old record)"
        out[f"UNet DSM training images/s ({shape}, batch {row['batch']}), {how}"] = row[
            "images_per_second"
        ]
        if "images_per_second_in_lax_scan" in row:
            out[f"same, steps inside one lax.scan ({shape})"] = row["images_per_second_in_lax_scan"]
    repro = r.get("scan_convolution_repro")
    if repro:
        out["3x3 conv gradient steps: lax.scan / Python-loop time"] = repro["scan_over_loop"]
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
