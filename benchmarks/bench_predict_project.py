"""Predict-Project vs Euler-Maruyama time per step; UNet training throughput.

Side by side in one run:

- time per sampler step of ``predict_project`` and ``euler_maruyama`` with equal
  score and projection nets (an MLP on 2-D points and a UNet on 8x8 images); one
  Predict-Project step calls two nets, so the ratio should be near 2;
- UNet training images per second (DSM step, Adam) at 8x8x1 (the digits
  default) and 32x32x3 on whatever device JAX uses (CPU here).

Run: ``python -m benchmarks.bench_predict_project`` (writes
``benchmarks/results/predict_project.json``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from benchmarks._common import time_call, write_result
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
    em = time_call(lambda: euler_maruyama(key, sde, score_fn, shape, n_steps), repeats=repeats)
    pp = time_call(
        lambda: predict_project(key, sde, score_fn, project_fn, shape, n_steps, delta_mu=0.5),
        repeats=repeats,
    )
    return {
        "n_samples": shape[0],
        "n_steps": n_steps,
        "em_seconds_per_step": em / n_steps,
        "pp_seconds_per_step": pp / n_steps,
        "pp_over_em": pp / em,
    }


def _unet_training(image_shape, batch, base_channels, channel_mult, attention, n_steps):
    sde = VPSDE()
    net = UNet(
        base_channels=base_channels, channel_mult=channel_mult, attention_resolutions=attention
    )
    x = jax.random.normal(jax.random.key(0), (batch,) + image_shape)
    params = net.init(jax.random.key(1), x[:1], jnp.ones(1))
    opt = optax.adam(1e-4)
    opt_state = opt.init(params)

    @jax.jit
    def train_steps(params, opt_state, key):
        def body(carry, k):
            params, opt_state = carry
            grads = jax.grad(
                lambda p: dsm_loss(k, sde, functools.partial(net.apply, p), x, weighting="sigma2")
            )(params)
            updates, opt_state = opt.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(
            body, (params, opt_state), jax.random.split(key, n_steps)
        )
        return params

    seconds = time_call(train_steps, params, opt_state, jax.random.key(2), repeats=3)
    return {
        "image_shape": list(image_shape),
        "batch": batch,
        "base_channels": base_channels,
        "channel_mult": list(channel_mult),
        "parameters": int(sum(p.size for p in jax.tree.leaves(params))),
        "steps_timed": n_steps,
        "images_per_second": batch * n_steps / seconds,
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
        (32 if quick else 256, 8, 8, 1),
        5 if quick else 20,
        repeats,
    )
    training = [
        _unet_training(
            (8, 8, 1), 16 if quick else 128, 8 if quick else 32, (1, 2), (4,), 2 if quick else 10
        )
    ]
    if not quick:
        training.append(_unet_training((32, 32, 3), 32, 32, (1, 2, 2), (8,), 3))
    record = {
        "quick": quick,
        "sampler_step": {"mlp_2d": mlp, "unet_8x8": unet},
        "unet_training": training,
        "note": "PP calls the score net and the projection net (same architecture, one "
        "extra input channel) per step; EM calls the score net once.",
    }
    write_result("predict_project" + ("_quick" if quick else ""), record)
    return record


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
