"""Particle flow (Weber Alg. 1), generator step (Alg. 2), denoiser and density-ratio forms."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sdflow_directions import (
    np_mmd_direction,
    np_score_difference,
    np_svgd,
    np_weighted_mean,
)

from wgdiff import sdflow
from wgdiff.sde import VESDE, VPSDE


def np_adagrad(grads, eta):
    """Liu & Wang's svgd.py update loop, float64: returns the displacements per step."""
    hist, out = 0.0, []
    for it, g in enumerate(grads):
        hist = g**2 if it == 0 else 0.9 * hist + 0.1 * g**2
        out.append(eta * g / (1e-6 + np.sqrt(hist)))
    return out


def test_cosine_schedule_ends_and_formula():
    n_steps, s_max, s_min = 11, 10.0, 0.5
    t_max = 2 / np.pi * np.arccos(s_min / s_max)
    for step in (0, 4, 10):
        want = s_max * np.cos(np.pi * (t_max * step / (n_steps - 1)) / 2)
        got = float(sdflow.cosine_sigma2(step, n_steps, s_max, s_min))
        assert abs(got - want) < 1e-5 * s_max  # float32 cos
    assert abs(float(sdflow.cosine_sigma2(10, n_steps, s_max, s_min)) - s_min) < 1e-5 * s_max


def test_adagrad_matches_liu_wang_loop():
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(5, 2)) for _ in range(3)]
    with jax.enable_x64(True):
        hist = jnp.zeros((5, 2), jnp.float64)
        for g, want in zip(grads, np_adagrad(grads, 0.1), strict=True):
            disp, hist = sdflow.adagrad_step(jnp.asarray(g), hist, 0.1)
            np.testing.assert_allclose(disp, want, rtol=1e-12)


def _sets(seed, m=24, n=30, d=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, d)), rng.normal(size=(n, d)) + 2.0


# AdaGrad itself is checked against Liu & Wang's loop above; each method once with it,
# SD without it too.
@pytest.mark.parametrize(
    "method, adagrad", [("sd", False), ("sd", True), ("mmd", True), ("svgd", False)]
)
def test_one_update_matches_reference(method, adagrad):
    particles, target = _sets(1)
    score = lambda x: -(x - 2.0)
    extra = dict(target_score=score) if method == "svgd" else {}
    with jax.enable_x64(True):
        flow = sdflow.particle_flow(method, 10, z_chunk=7, point_chunk=9, **extra)
        cond = sdflow.FlowConditions.create(adagrad=adagrad, sigma2_const=0.7, step_size=0.1)
        state = flow.init(jax.random.key(0), particles, cond)
        new, info = flow.update(state, jnp.asarray(target))
    sigma = math.sqrt(float(np.float32(0.7)))  # conditions store float32
    if method == "sd":  # eq. 15: Delta z = (eta / 2) (D_p - D_q)
        g = 0.5 * np_score_difference(particles, target, particles, sigma)
    elif method == "mmd":
        g = np_mmd_direction(particles, target, particles, sigma)
    else:
        g = np_svgd(particles, score, sigma)
    disp = np_adagrad([g], 0.1)[0] if adagrad else np.float32(0.1) * g
    np.testing.assert_allclose(new.particles, particles + disp, rtol=1e-5, atol=1e-9)
    assert int(new.step) == 1
    np.testing.assert_allclose(info["sigma2"], np.float32(0.7))
    np.testing.assert_allclose(info["displacement"], np.linalg.norm(disp, axis=1).mean(), rtol=1e-6)


def test_sd_step_scale_is_eq15_half():
    assert sdflow.SD_STEP_SCALE == 0.5


def test_anneal_uses_noisy_particles_and_cosine_sigma():
    particles, target = _sets(2)
    with jax.enable_x64(True):
        flow = sdflow.particle_flow("sd", 5)
        cond = sdflow.FlowConditions.create(
            anneal=True, constant_noise=False, sigma2_max=4.0, sigma2_min=0.5, step_size=0.1
        )
        state = flow.init(jax.random.key(3), particles, cond)
        new, _ = flow.update(state, jnp.asarray(target))
        _, k_noise, _, _ = jax.random.split(jax.random.key(3), 4)
        noise = np.asarray(jax.random.normal(k_noise, particles.shape, jnp.float64))
    sigma = 2.0  # step 0 of the cosine schedule: sigma_max
    z = particles + sigma * noise
    want = particles + np.float32(0.1) * 0.5 * np_score_difference(z, target, particles, sigma)
    np.testing.assert_allclose(new.particles, want, rtol=1e-5)


def _batch_indices(key, n_target, n_particles, b):
    _, k_noise, k_target, k_particles = jax.random.split(key, 4)
    t_idx = np.asarray(sdflow.draw_batch_indices(k_target, n_target, b))
    s_idx = np.asarray(sdflow.draw_batch_indices(k_particles, n_particles, b))
    return k_noise, t_idx, s_idx


def test_draw_batch_indices_are_distinct_and_uniform():
    # Alg. 1's batches are drawn without replacement, every subset equally likely: over
    # 4000 draws of 8 of 40, every index is drawn 4000 * 8/40 = 800 times up to binomial
    # noise (sd 25; 5 sd allowed, a miss rate below 1e-5 per index), and so is every
    # ordered pair of positions' joint inclusion (sd 11 around 4000 * 8 * 7 / (40 * 39)).
    keys = jax.random.split(jax.random.key(0), 4000)
    idx = np.asarray(jax.vmap(lambda k: sdflow.draw_batch_indices(k, 40, 8))(keys))
    assert idx.shape == (4000, 8) and idx.min() >= 0 and idx.max() < 40
    assert all(len(set(row)) == 8 for row in idx)
    counts = np.bincount(idx.ravel(), minlength=40)
    assert np.abs(counts - 800).max() < 5 * np.sqrt(4000 * 0.2 * 0.8)
    member = np.zeros((4000, 40))
    np.put_along_axis(member, idx, 1.0, axis=1)
    joint = (member.T @ member)[np.triu_indices(40, 1)]
    p = 8 * 7 / (40 * 39)
    assert np.abs(joint - 4000 * p).max() < 5 * np.sqrt(4000 * p * (1 - p))
    with pytest.raises(ValueError, match="size"):
        sdflow.draw_batch_indices(jax.random.key(0), 5, 6)


@pytest.mark.parametrize("method, adagrad", [("sd", True), ("mmd", False), ("svgd", True)])
def test_batch_drawn_moves_only_the_drawn_batch(method, adagrad):
    # Alg. 1 as printed: draw x ~ p and y ~ q_t, z = y + sigma eps for the drawn y only,
    # the direction from sums over the drawn sets, and only the drawn y move (their
    # AdaGrad histories alone are touched). Checked over two updates, so the second
    # one sees histories that are zero for some particles and set for others.
    particles, target = _sets(3, m=40, n=30)
    b, sigma = 8, 1.0
    with jax.enable_x64(True):
        flow = sdflow.particle_flow(method, 10, batch_size=b)
        cond = sdflow.FlowConditions.create(anneal=True, adagrad=adagrad, step_size=0.1)
        state = flow.init(jax.random.key(0), particles, cond)
        want, hist, key = particles.copy(), np.zeros_like(particles), jax.random.key(0)
        for _ in range(2):
            before = np.asarray(state.particles)
            state, _ = flow.update(state, jnp.asarray(target))
            k_noise, t_idx, s_idx = _batch_indices(key, 30, 40, b)
            key = jax.random.split(key, 4)[0]
            y = want[s_idx]
            z = y + sigma * np.asarray(jax.random.normal(k_noise, y.shape, jnp.float64))
            x = target[t_idx]
            if method == "sd":
                g = 0.5 * np_score_difference(z, x, y, sigma)
            elif method == "mmd":
                g = np_mmd_direction(z, x, y, sigma)
            else:
                kde_score = lambda q, x=x: np_weighted_mean(q, x, sigma)[1] - q  # sigma = 1
                g = np_svgd(z, kde_score, sigma)
            if adagrad:
                h = hist[s_idx]
                h = np.where(h == 0, g**2, 0.9 * h + 0.1 * g**2)
                hist[s_idx] = h
                disp = 0.1 * g / (1e-6 + np.sqrt(h))
            else:
                disp = np.float32(0.1) * g
            want[s_idx] += disp
            moved = np.zeros(40, bool)
            moved[s_idx] = True
            got = np.asarray(state.particles)
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)
            np.testing.assert_array_equal(got[~moved], before[~moved])
            assert np.all(np.any(got[moved] != before[moved], axis=1))
            np.testing.assert_allclose(state.grad_history, hist, rtol=1e-6, atol=1e-15)


@pytest.mark.parametrize("method", ["sd", "svgd"])
def test_batch_all_moves_every_particle_with_sums_over_the_batch(method):
    # batch_update="all": every particle moves, the kernel sums run over 8 drawn
    # target points and 8 drawn particles (for SVGD, 8 drawn particles and their scores).
    particles, target = _sets(3, m=40, n=30)
    score = lambda x: -(x - 2.0)
    extra = dict(target_score=score) if method == "svgd" else {}
    with jax.enable_x64(True):
        flow = sdflow.particle_flow(method, 10, batch_size=8, batch_update="all", **extra)
        state = flow.init(jax.random.key(0), particles, sdflow.FlowConditions.create())
        new, _ = flow.update(state, jnp.asarray(target))
        _, t_idx, s_idx = _batch_indices(jax.random.key(0), 30, 40, 8)
    sigma = 1.0
    if method == "sd":
        g = 0.5 * np_score_difference(particles, target[t_idx], particles[s_idx], sigma)
    else:
        sub = particles[s_idx]
        k = np.exp(-((particles[:, None] - sub[None]) ** 2).sum(-1) / (2 * sigma**2))
        g = (k @ score(sub) + (k.sum(1)[:, None] * particles - k @ sub) / sigma**2) / 8
    np.testing.assert_allclose(new.particles, particles + np.float32(0.1) * g, rtol=1e-5)


# Each option value once: the default score bandwidth with the median kernel, a set
# score bandwidth with the sigma kernel.
@pytest.mark.parametrize("score_bandwidth, svgd_bandwidth", [(None, "median"), (0.3, "sigma")])
def test_svgd_kernel_score_and_bandwidth_options(score_bandwidth, svgd_bandwidth):
    # The target score is the kernel score of the target sample at its own bandwidth
    # (the condition's sigma unless score_bandwidth is set), the SVGD kernel the
    # condition's sigma or Liu & Wang's median heuristic of the current particles.
    particles, target = _sets(11)
    sigma = math.sqrt(float(np.float32(0.7)))
    tau = sigma if score_bandwidth is None else score_bandwidth
    with jax.enable_x64(True):
        flow = sdflow.particle_flow(
            "svgd", 10, z_chunk=7, point_chunk=9,
            score_bandwidth=score_bandwidth, svgd_bandwidth=svgd_bandwidth,
        )  # fmt: skip
        cond = sdflow.FlowConditions.create(sigma2_const=0.7, step_size=0.1)
        state = flow.init(jax.random.key(0), particles, cond)
        new, _ = flow.update(state, jnp.asarray(target))
        new2, _ = flow.update(new, jnp.asarray(target))

    def kernel_score(x):  # grad log of the Gaussian-smoothed target sample, eq. 13
        return (np_weighted_mean(x, target, tau)[1] - x) / tau**2

    def h_of(x):
        if svgd_bandwidth == "sigma":
            return sigma
        sq = ((x[:, None] - x[None]) ** 2).sum(-1)
        return np.sqrt(0.5 * np.median(sq) / np.log(x.shape[0] + 1))

    want = particles + np.float32(0.1) * np_svgd(particles, kernel_score, h_of(particles))
    np.testing.assert_allclose(new.particles, want, rtol=1e-5)
    # Per-iteration median: the second step's bandwidth is that of the moved particles.
    want2 = want + np.float32(0.1) * np_svgd(want, kernel_score, h_of(want))
    np.testing.assert_allclose(new2.particles, want2, rtol=1e-5)


def test_vmapped_conditions_equal_individual_runs():
    particles, target = _sets(4)
    flow = sdflow.particle_flow("sd", 6, batch_size=8)
    conds = [
        sdflow.FlowConditions.create(adagrad=a, anneal=b, constant_noise=c, sigma2_const=0.6)
        for a, b, c in [(0, 0, 0), (1, 1, 1), (0, 1, 0)]
    ]
    keys = jax.random.split(jax.random.key(5), 3)
    target = jnp.asarray(target, jnp.float32)

    def run(k, c):
        s = flow.init(k, jnp.asarray(particles, jnp.float32), c)
        return sdflow.run_flow(flow, s, target, 6, monitor=lambda st, info: st.particles.mean())

    batched, trace = jax.jit(jax.vmap(run))(keys, sdflow.stack_conditions(conds))
    assert trace.shape == (3, 6)
    single_run = jax.jit(run)  # one compiled program for the three single runs
    for i, c in enumerate(conds):
        single, _ = single_run(keys[i], c)
        np.testing.assert_allclose(batched.particles[i], single.particles, rtol=1e-5, atol=1e-5)


def test_run_flow_monitor_sees_state_and_info_every_period():
    particles, target = _sets(5)
    flow = sdflow.particle_flow("sd", 6)
    cond = sdflow.FlowConditions.create(constant_noise=False, sigma2_max=4.0, sigma2_min=0.5)
    state = flow.init(jax.random.key(0), jnp.asarray(particles, jnp.float32), cond)
    final, (steps, sigma2) = sdflow.run_flow(
        flow, state, jnp.asarray(target, jnp.float32), 6,
        monitor=lambda st, info: (st.step, info["sigma2"]), monitor_every=2,
    )  # fmt: skip
    np.testing.assert_array_equal(steps, [2, 4, 6])
    # info is that of the last update of each period: steps 1, 3, 5 of the schedule.
    want = [float(sdflow.cosine_sigma2(k, 6, 4.0, 0.5)) for k in (1, 3, 5)]
    np.testing.assert_allclose(sigma2, want, rtol=1e-6)
    assert int(final.step) == 6


def test_sd_flow_fits_two_clusters():
    # 64 particles from N(0, 0.25 I) onto a two-cluster target: the fitted mean and
    # spread match the target's to a tenth of the cluster separation after 300 steps.
    key_t, key_b = jax.random.split(jax.random.key(6))
    centres = jnp.array([[-2.0, 0.0], [2.0, 1.0]])
    target = centres[jnp.arange(64) % 2] + 0.1 * jax.random.normal(key_t, (64, 2))
    flow = sdflow.particle_flow("sd", 300)
    cond = sdflow.FlowConditions.create(anneal=True, constant_noise=False, sigma2_max=4.0,
                                        sigma2_min=0.1, step_size=0.2)  # fmt: skip
    state = flow.init(jax.random.key(7), 0.5 * jax.random.normal(key_b, (64, 2)), cond)
    state, _ = jax.jit(functools.partial(sdflow.run_flow, flow, n_steps=300))(state, target)
    p = np.asarray(state.particles)
    assert np.abs(p.mean(0) - np.asarray(target.mean(0))).max() < 0.4
    assert np.abs(p.std(0) - np.asarray(target.std(0))).max() < 0.4
    # Both clusters hold about half the particles.
    assert 24 <= int((p[:, 0] < 0).sum()) <= 40


def test_flow_bad_input():
    with pytest.raises(ValueError, match="method"):
        sdflow.particle_flow("langevin", 10)
    with pytest.raises(ValueError, match="target_score"):
        sdflow.particle_flow("svgd", 10, target_score="exact")
    with pytest.raises(ValueError, match="SVGD only"):
        sdflow.particle_flow("sd", 10, svgd_bandwidth="median")
    with pytest.raises(ValueError, match="batch_update"):
        sdflow.particle_flow("sd", 10, batch_update="some")
    with pytest.raises(ValueError, match="svgd_bandwidth"):
        sdflow.particle_flow("svgd", 10, svgd_bandwidth="silverman")
    with pytest.raises(ValueError, match="score_bandwidth"):
        sdflow.particle_flow("svgd", 10, score_bandwidth=-1.0)
    with pytest.raises(ValueError, match="sigma2_min"):
        sdflow.FlowConditions.create(sigma2_max=1.0, sigma2_min=2.0)
    flow = sdflow.particle_flow("sd", 10, batch_size=50)
    with pytest.raises(ValueError, match="batch_size"):
        flow.init(jax.random.key(0), np.zeros((10, 2)), sdflow.FlowConditions.create())
    state = sdflow.particle_flow("sd", 10).init(
        jax.random.key(0), np.zeros((10, 2)), sdflow.FlowConditions.create()
    )
    with pytest.raises(ValueError, match="multiple"):
        sdflow.run_flow(flow, state, np.zeros((5, 2)), 10, monitor_every=3)
    with pytest.raises(TypeError, match="monitor"):
        sdflow.run_flow(flow, state, np.zeros((5, 2)), 10, monitor="cfd")


# -- denoiser form ---------------------------------------------------------------------------


def _empirical_score(points, sde):
    """Exact score of the empirical distribution pushed through ``sde``, by autodiff."""

    def log_p(x, t):
        m, s = sde.marginal_coeffs(t)
        sq = jnp.sum((x[None, :] - m * points) ** 2, -1)
        return jax.nn.logsumexp(-sq / (2 * s**2))

    return jax.jit(jax.vmap(jax.grad(log_p), in_axes=(0, None)))  # compiled once


@pytest.mark.parametrize("sde", [VESDE(sigma_min=0.01, sigma_max=20.0), VPSDE()])
def test_tweedie_denoiser_of_exact_score_is_the_kernel_denoiser(sde):
    # Weber eq. 18 + footnote 9: Tweedie's formula on the exact score of the
    # smoothed empirical target is eq. 41's kernel-weighted mean.
    rng = np.random.default_rng(8)
    points, z = rng.normal(size=(25, 2)), rng.normal(size=(9, 2)) * 2
    sigma = 0.8
    with jax.enable_x64(True):
        denoise = sdflow.tweedie_denoiser(_empirical_score(jnp.asarray(points), sde), sde, sigma)
        got = denoise(jnp.asarray(z))
        t = sdflow.noise_level_time(sde, sigma)
        m, s = sde.marginal_coeffs(t)
        assert abs(float(s / m) - sigma) < 1e-6
        want = sdflow.kernel_denoiser(z, points, sigma)
        sd_got = sdflow.denoiser_score_difference(z, denoise, points[:7], sigma)
        sd_want = sdflow.score_difference(z, points, points[:7], sigma)
    # bisection on t (60 halvings) leaves ~1e-7 relative error in sigma
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sd_got, sd_want, rtol=1e-5, atol=1e-6)


def test_denoiser_update_and_checks():
    y, d = np.ones((3, 2)), np.zeros((3, 2))
    np.testing.assert_allclose(sdflow.denoiser_update(y, d, 0.25), 0.75 * y)
    with pytest.raises(ValueError, match="rho"):
        sdflow.denoiser_update(y, d, 1.5)
    with pytest.raises(ValueError, match="noise range"):
        sdflow.noise_level_time(VESDE(sigma_min=0.01, sigma_max=1.0), 5.0)


# -- density-ratio form ----------------------------------------------------------------------


def test_exact_log_ratio_direction_is_the_score_difference():
    # p = N(a, I), q = N(0, 2 I): h = log p - log q, grad h = -(y - a) + y / 2.
    a = jnp.array([1.0, -2.0])

    def logit_fn(params, y):
        return -0.5 * jnp.sum((y - params) ** 2, -1) + 0.25 * jnp.sum(y**2, -1)

    y = jax.random.normal(jax.random.key(0), (6, 2))
    got = sdflow.density_ratio_direction(logit_fn, a, y)
    np.testing.assert_allclose(got, -(y - a) + y / 2, rtol=1e-6)
    f = jax.nn.sigmoid(logit_fn(a, y))
    np.testing.assert_allclose(
        sdflow.nonsaturating_direction(logit_fn, a, y), (1 - f)[:, None] * got, rtol=1e-6
    )
    x = jnp.array([[0.0, 0.0]])
    want = np.log1p(np.exp(-float(logit_fn(a, x)[0]))) + np.log1p(np.exp(float(logit_fn(a, y)[0])))
    np.testing.assert_allclose(sdflow.discriminator_loss(logit_fn, a, x, y[:1]), want, rtol=1e-6)


# -- generator (Alg. 2) ------------------------------------------------------------------------


def test_sd_flow_targets_formula():
    gen, target = _sets(9)
    with jax.enable_x64(True):
        got = sdflow.sd_flow_targets(jax.random.key(0), gen, target, 0.9, 0.5)
        noise = np.asarray(jax.random.normal(jax.random.key(0), gen.shape, jnp.float64))
    # eq. 15: the targets move by (eta / 2) (D_p - D_q), eta = 0.5
    want = gen + 0.5 * 0.5 * np_score_difference(gen + 0.9 * noise, target, gen, 0.9)
    np.testing.assert_allclose(got, want, rtol=1e-10)
