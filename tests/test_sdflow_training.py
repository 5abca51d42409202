"""SD-flow forms that train a network alongside: denoiser (eq. 17-19) from a DSM-trained
score net, density ratio (eq. 35-38) with a discriminator, generator regression (Alg. 2)."""

import functools
import math

import jax
import jax.numpy as jnp
import optax
import pytest

from wgdiff import sdflow
from wgdiff.nets.generator import DiscriminatorMLP, LinearGenerator
from wgdiff.sde import VESDE


def test_denoiser_update_with_the_exact_gaussian_denoiser_reaches_the_target():
    # Eq. 19 with the exact denoiser of N(mu, std^2 I) smoothed at sigma (the posterior
    # mean E[x | z] = mu + (z - mu) std^2 / (std^2 + sigma^2), what Tweedie's formula
    # gives for the exact score): the particle mean's gap to mu shrinks by
    # 1 - rho sigma^2 / (std^2 + sigma^2) = 0.84 per step, so 40 steps leave 0.003 of
    # the initial 3.2, plus noise of sd ~0.007 per coordinate (rho std^2/(std^2 + sigma^2)
    # sigma / sqrt(128) per step, damped); 0.05 allows ~7 sd.
    mu, std, sigma, rho = jnp.array([3.0, -1.0]), 0.5, 1.0, 0.2

    def exact(z):
        return mu + (z - mu) * std**2 / (std**2 + sigma**2)

    def body(y, key):
        z = y + sigma * jax.random.normal(key, y.shape)
        return sdflow.denoiser_update(y, exact(z), rho), None

    keys = jax.random.split(jax.random.key(4), 40)
    y, _ = jax.lax.scan(body, jnp.zeros((128, 2)), keys)
    assert float(jnp.linalg.norm(y.mean(0) - mu)) < 0.05


@pytest.mark.slow
def test_trained_score_net_denoiser_flow_reaches_target():
    # A ScoreMLP trained by DSM (wgdiff.losses / wgdiff.train) on N((3, -1), 0.5^2 I);
    # its Tweedie denoiser matches the Gaussian posterior mean E[x | z] and eq. 19
    # particle updates carry a far-off cloud onto the target mean.
    from wgdiff import train
    from wgdiff.losses import dsm_loss
    from wgdiff.nets import ScoreMLP

    mu, std = jnp.array([3.0, -1.0]), 0.5
    data = mu + std * jax.random.normal(jax.random.key(0), (2048, 2))
    sde = VESDE(sigma_min=0.01, sigma_max=5.0)
    model = ScoreMLP(features=(64, 64))
    params = model.init(jax.random.key(1), data[:2], jnp.zeros((2,)))
    optimizer = optax.adam(3e-3)
    state = train.create_train_state(jax.random.key(2), params, optimizer)

    def loss_fn(p, key, batch):
        return dsm_loss(key, sde, functools.partial(model.apply, p), batch, weighting="sigma2")

    step = train.make_train_step(loss_fn, optimizer)
    state, _ = train.fit(state, step, train.dataset_sampler(data, 256), 1500, progress=False,
                         log_every=1500)  # fmt: skip
    score_fn = functools.partial(model.apply, state.params)
    sigma = 1.0
    denoise = sdflow.tweedie_denoiser(score_fn, sde, sigma)
    z = mu + 1.5 * jax.random.normal(jax.random.key(3), (256, 2))
    exact = mu + (z - mu) * std**2 / (std**2 + sigma**2)
    # Learned-score error: a few hundredths in the bulk after 1500 Adam steps.
    assert float(jnp.mean(jnp.linalg.norm(denoise(z) - exact, axis=-1))) < 0.15

    y = jnp.zeros((128, 2))
    for k in jax.random.split(jax.random.key(4), 40):
        zz = y + sigma * jax.random.normal(k, y.shape)
        y = sdflow.denoiser_update(y, denoise(zz), 0.2)
    assert float(jnp.linalg.norm(y.mean(0) - mu)) < 0.3


def test_discriminator_flow_moves_particles_to_target():
    target = jax.random.normal(jax.random.key(0), (256, 2)) + jnp.array([2.5, 0.0])
    particles = jax.random.normal(jax.random.key(1), (256, 2))
    disc = DiscriminatorMLP(features=(32, 32))
    params = disc.init(jax.random.key(2), particles[:1])
    flow = sdflow.discriminator_flow(disc.apply, optax.adam(1e-2), step_size=0.1,
                                     discriminator_steps=5)  # fmt: skip
    state = flow.init(jax.random.key(3), particles, params)
    # The shared scan driver runs it like every other flow; the monitor sees its info.
    monitor = lambda st, info: info["loss"]
    run = functools.partial(sdflow.run_flow, flow, n_steps=60, monitor=monitor, monitor_every=20)
    state, losses = jax.jit(run)(state, target)
    # The optimal h has grad h = a = (2.5, 0); the flow closes most of the 2.5 gap.
    assert float(state.particles[:, 0].mean()) > 1.8
    assert abs(float(state.particles[:, 1].mean())) < 0.4
    # Once the particles sit on the target the discriminator is at chance: the
    # logistic loss of h = 0 is 2 log 2 (measured 1.355, 1.383, 1.388 at steps 20-60).
    assert losses.shape == (3,)
    assert abs(float(losses[-1]) - 2 * math.log(2.0)) < 0.05


def test_linear_generator_learns_mean_and_covariance():
    # Small version of Weber App. C.4: d = 6, latent 3, exact-capacity linear generator.
    kb, km, kd = jax.random.split(jax.random.key(10), 3)
    b_true = 0.5 * jax.random.normal(kb, (6, 3))
    mu = 3.0 + jax.random.normal(km, (6,))
    data = jax.random.normal(kd, (2048, 3)) @ b_true.T + mu
    model = LinearGenerator(out_dim=6)
    params = model.init(jax.random.key(11), jnp.zeros((1, 3)))
    flow = sdflow.generator_flow(model.apply, optax.sgd(1e-3), latent_dim=3, batch_size=512,
                                 sigma=2.0, step_size=1.0)  # fmt: skip
    state = flow.init(jax.random.key(12), params)

    def body(s, k):  # one Alg. 2 step on a fresh minibatch of 512 of the 2048 data
        return flow.update(s, data[sdflow.draw_batch_indices(k, 2048, 512)])[0], None

    state, _ = jax.jit(lambda s, ks: jax.lax.scan(body, s, ks))(
        state, jax.random.split(jax.random.key(13), 400)
    )
    b_hat, mu_hat = state.params["params"]["B"], state.params["params"]["mu"]
    assert float(jnp.max(jnp.abs(mu_hat - mu))) < 0.1
    cov, cov_hat = b_true @ b_true.T, b_hat @ b_hat.T
    assert float(jnp.linalg.norm(cov_hat - cov) / jnp.linalg.norm(cov)) < 0.25
