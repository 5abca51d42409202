"""Kernel directions of wgdiff.sdflow against brute-force float64 NumPy (Weber eq. 15, 47, 51)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wgdiff import sdflow

# Float64 runs agree with the NumPy reference to round-off; 1e-5 relative (the
# issue's bar) leaves orders of magnitude of margin while still failing on any
# wrong weight, missing normaliser or chunk bookkeeping error.
RTOL = 1e-5


def np_weighted_mean(z, x, sigma):
    """Brute force: log kernel mass and kernel-weighted mean, float64, stabilised by the row max."""
    sq = ((z[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    logits = -sq / (2 * sigma**2)
    top = logits.max(1, keepdims=True)
    w = np.exp(logits - top)
    lse = top[:, 0] + np.log(w.sum(1))
    return lse, (w @ x) / w.sum(1, keepdims=True)


def np_score_difference(z, target, source, sigma):
    return np_weighted_mean(z, target, sigma)[1] - np_weighted_mean(z, source, sigma)[1]


def np_mmd_direction(z, target, source, sigma):
    def term(x):
        sq = ((z[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        k = np.exp(-sq / (2 * sigma**2))
        return (k[:, :, None] * (x[None, :, :] - z[:, None, :])).sum(1) / (len(x) * sigma**2)

    return term(target) - term(source)


def np_svgd(x, score, h):
    """Liu & Wang's reference update (svgd.py, svgd_kernel + update), float64."""
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    kxy = np.exp(-sq / h**2 / 2)
    dxkxy = -kxy @ x
    sumkxy = kxy.sum(1)
    dxkxy += x * sumkxy[:, None]
    dxkxy /= h**2
    return (kxy @ score(x) + dxkxy) / x.shape[0]


def rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)))


def random_sets(seed, n, m_t, m_s, d, scale=1.0, offset=0.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) * scale
    target = rng.normal(size=(m_t, d)) * scale + offset
    source = rng.normal(size=(m_s, d)) * scale
    return z, target, source


# Small chunks force several query chunks, several point chunks and padding in both.
CHUNKS = dict(z_chunk=7, point_chunk=11)


# d = 2: explicit-difference distances, chunked and padded; d = 50: the Gram form
# (above geometry.DIRECT_DISTANCE_MAX_DIM) in the default single block.
@pytest.mark.parametrize("d, chunks", [(2, CHUNKS), (50, {})])
def test_score_difference_matches_numpy(d, chunks):
    z, target, source = random_sets(0, 37, 53, 41, d)
    sigma = 1.3 * np.sqrt(d)
    ref = np_score_difference(z, target, source, sigma)
    with jax.enable_x64(True):
        got = sdflow.score_difference(jnp.asarray(z), target, source, sigma, **chunks)
        assert got.dtype == jnp.float64
    assert rel_err(got, ref) < RTOL


def test_score_difference_tiny_sigma_far_apart_sets():
    # sigma = 1e-3 and the target 10^3 sigma away from the source: raw kernel values
    # exp(-5e5) underflow even in float64, only the log-sum-exp form survives.
    sigma = 1e-3
    z, target, source = random_sets(1, 29, 31, 23, 2, scale=1e-2 * sigma * 100, offset=1e3 * sigma)
    ref = np_score_difference(z, target, source, sigma)
    with jax.enable_x64(True):
        got = np.asarray(sdflow.score_difference(z, target, source, sigma, **CHUNKS))
    assert np.all(np.isfinite(got))
    assert rel_err(got, ref) < RTOL
    # float32: still finite, and right to float32 round-off of the coordinates.
    got32 = np.asarray(sdflow.score_difference(*map(jnp.float32, (z, target, source)), sigma))
    assert np.all(np.isfinite(got32))
    assert rel_err(got32, ref) < 1e-4


def test_mmd_direction_matches_numpy_and_stays_finite():
    z, target, source = random_sets(2, 37, 53, 41, 3)
    ref = np_mmd_direction(z, target, source, 0.8)
    with jax.enable_x64(True):
        got = sdflow.mmd_direction(z, target, source, 0.8, **CHUNKS)
    assert rel_err(got, ref) < RTOL
    # Far-apart sets at a tiny bandwidth: the target term underflows to exactly 0 and
    # the direction is the source term alone (Weber's Remark 1), finite everywhere.
    sigma = 1e-2
    z, target, source = random_sets(3, 19, 23, 17, 2, scale=sigma, offset=1e3 * sigma)
    ref = np_mmd_direction(z, target, source, sigma)
    with jax.enable_x64(True):
        got = np.asarray(sdflow.mmd_direction(z, target, source, sigma, **CHUNKS))
    assert np.all(np.isfinite(got))
    assert rel_err(got, ref) < RTOL


def gaussian_score(x):
    return -(x - 1.5) / 0.7


@pytest.mark.parametrize("bandwidth", [None, 0.9, 1e-3])
def test_svgd_direction_matches_liu_wang_reference(bandwidth):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(45, 2))
    if bandwidth is None:
        sq = ((x[:, None] - x[None]) ** 2).sum(-1)
        h = np.sqrt(0.5 * np.median(sq) / np.log(x.shape[0] + 1))
    else:
        h = bandwidth
    ref = np_svgd(x, gaussian_score, h)
    with jax.enable_x64(True):
        got = np.asarray(sdflow.svgd_direction(x, gaussian_score, bandwidth, **CHUNKS))
        h_got = float(sdflow.median_heuristic_bandwidth(x))
    assert np.all(np.isfinite(got))
    assert rel_err(got, ref) < RTOL
    if bandwidth is None:
        assert abs(h_got - h) < 1e-12 * h


@pytest.mark.parametrize("n", [33, 40])  # odd and even counts of matrix entries
def test_median_heuristic_sigma2_is_webers_footnote(n):
    x = np.random.default_rng(5).normal(size=(n, 3))
    sq = ((x[:, None] - x[None]) ** 2).sum(-1)
    with jax.enable_x64(True):
        got = float(sdflow.median_heuristic_sigma2(x))
    assert abs(got - 2 * np.median(sq) / np.log(n + 1)) < 1e-12 * got
    # float32: the bit-pattern bisection returns exactly np.median of the float32 matrix
    x32 = x.astype(np.float32)
    sq32 = sum((x32[:, None, k] - x32[None, :, k]) ** 2 for k in range(3))
    got32 = float(sdflow.median_heuristic_sigma2(x32))
    assert abs(got32 - 2 * float(np.median(sq32)) / np.log(n + 1)) < 1e-6 * got32


def test_score_difference_is_sigma2_times_smoothed_score_difference():
    # Weber eq. 14: D_p - D_q = sigma^2 (grad log p_sigma - grad log q_sigma), with the
    # smoothed densities' scores taken by autodiff of their log-sum-exp log densities.
    z, target, source = random_sets(6, 9, 21, 17, 2)
    sigma = 0.6

    def log_smoothed(points):
        def f(zz):
            sq = jnp.sum((zz[None, :] - points) ** 2, -1)
            return jax.nn.logsumexp(-sq / (2 * sigma**2))

        return jax.jit(jax.vmap(jax.grad(f)))  # one compiled program, not op by op

    with jax.enable_x64(True):
        autodiff = log_smoothed(jnp.asarray(target))(z) - log_smoothed(jnp.asarray(source))(z)
        got = sdflow.score_difference(z, target, source, sigma)
    assert rel_err(got, sigma**2 * np.asarray(autodiff)) < 1e-10


def test_float32_default_and_jit_vmap():
    z, target, source = random_sets(7, 16, 20, 20, 2)
    f = jax.jit(lambda zz, t, s, sig: sdflow.score_difference(zz, t, s, sig, **CHUNKS))
    out = f(jnp.float32(z), jnp.float32(target), jnp.float32(source), 0.5)
    assert out.dtype == jnp.float32
    ref = np_score_difference(z, target, source, 0.5)
    # float32 round-off on O(1) coordinates, accumulated over ~20 weights.
    assert rel_err(out, ref) < 1e-5 * 20
    sigmas = jnp.array([0.5, 1.0])
    batched = jax.vmap(f, in_axes=(None, None, None, 0))(z, target, source, sigmas)
    assert rel_err(batched[1], np_score_difference(z, target, source, 1.0)) < 1e-4


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((3,)), np.zeros((4, 2)), np.zeros((4, 2)), 1.0), "z must have shape"),
        ((np.zeros((3, 2)), np.zeros((4, 3)), np.zeros((4, 2)), 1.0), "target must have shape"),
        ((np.zeros((3, 2)), np.zeros((4, 2)), np.zeros((0, 2)), 1.0), "source must hold"),
        ((np.zeros((3, 2)), np.zeros((4, 2)), np.zeros((4, 2)), -1.0), "sigma must be positive"),
        ((np.full((3, 2), np.nan), np.zeros((4, 2)), np.zeros((4, 2)), 1.0), "NaN"),
    ],
)
def test_bad_input_raises(args, match):
    with pytest.raises(ValueError, match=match):
        sdflow.score_difference(*args)
    with pytest.raises(ValueError, match=match):
        sdflow.mmd_direction(*args)


def test_svgd_bad_score_shape():
    with pytest.raises(ValueError, match="target_score"):
        sdflow.svgd_direction(np.zeros((4, 2)), lambda x: x[:, :1], 1.0)
    with pytest.raises(TypeError, match="callable"):
        sdflow.svgd_direction(np.zeros((4, 2)), "not a function", 1.0)


@pytest.mark.parametrize("d", [2, 3])
def test_kernel_score_is_the_gradient_of_the_log_kde(d):
    # The sample-based SVGD target score: grad_x log sum_i K_sigma(x, x_i) by autodiff
    # of the log-sum-exp (float64), at points far enough out that naive kernel values
    # underflow (logits ~ -200) and at points inside the sample.
    rng = np.random.default_rng(12)
    points = rng.normal(size=(40, d)) * 0.3
    x = np.concatenate([rng.normal(size=(9, d)), rng.normal(size=(4, d)) + 6.0])
    sigma = 0.4
    with jax.enable_x64(True):
        got = np.asarray(sdflow.kernel_score(x, points, sigma, **CHUNKS))

        def log_kde(q):
            return jax.nn.logsumexp(-jnp.sum((q - points) ** 2, -1) / (2 * sigma**2))

        want = np.asarray(jax.jit(jax.vmap(jax.grad(log_kde)))(jnp.asarray(x)))
    assert np.all(np.isfinite(got))
    assert rel_err(got, want) < RTOL
    with pytest.raises(ValueError, match="points"):
        sdflow.kernel_score(x, points[:, :1], sigma)


# -- CFD monitor (Weber sec. 7.2) -----------------------------------------------------------


def test_sincos_matches_float64_numpy():
    # float32 phases over the range the tables meet (|w.x| up to ~100 for the grid's
    # base at (-10, 10)) and beyond: the polynomial is within 1e-6 of float64 cos/sin of
    # the same float32 phase (measured 4e-7: a few ulp of 1), in float64 within 2e-7
    # (its series truncation, measured 1.1e-7).
    phase = np.linspace(-300.0, 300.0, 60001).astype(np.float32)
    cos, sin = sdflow.sincos(jnp.asarray(phase))
    assert cos.dtype == jnp.float32
    exact = phase.astype(np.float64)
    assert np.abs(np.asarray(cos, np.float64) - np.cos(exact)).max() < 1e-6
    assert np.abs(np.asarray(sin, np.float64) - np.sin(exact)).max() < 1e-6
    with jax.enable_x64(True):
        cos64, sin64 = sdflow.sincos(jnp.asarray(exact))
    assert np.abs(np.asarray(cos64) - np.cos(exact)).max() < 2e-7
    assert np.abs(np.asarray(sin64) - np.sin(exact)).max() < 2e-7


def test_cfd_monitor_is_metrics_cfd():
    # Same frequencies and formula as wgdiff.metrics.cfd: equal to float32 round-off of
    # the cosines/sines (1e-6 per term, averaged), far from the origin as well.
    from wgdiff import metrics

    rng = np.random.default_rng(13)
    target = rng.normal(size=(300, 3)).astype(np.float32) * 3 + 10
    particles = rng.normal(size=(200, 3)).astype(np.float32) * 3 + 9
    key = jax.random.key(2)
    got = float(jax.jit(sdflow.cfd_monitor(target, key))(jnp.asarray(particles)))
    want = float(metrics.cfd(particles, target, key=key))
    assert 0.01 < want and abs(got - want) < 2e-6
    assert abs(float(sdflow.cfd_monitor(target, key)(target))) < 1e-6


def test_cfd_pair_values_reproduce_metrics_cfd_threshold():
    # The maximum of the pair CFDs is wgdiff.metrics.cfd_threshold of the same key
    # (same draws and frequencies per pair), to float32 round-off.
    from wgdiff import metrics

    def sample(key, n):
        return jax.random.normal(key, (n, 2)) * jnp.array([1.0, 0.3])

    values = sdflow.cfd_pair_values(jax.random.key(5), sample, 64, 6)
    assert values.shape == (6,) and bool(jnp.all(values > 0))
    want = metrics.cfd_threshold(jax.random.key(5), sample, 64, n_trials=6)
    assert abs(float(values.max()) - want) < 2e-6
    with pytest.raises(TypeError, match="sample_fn"):
        sdflow.cfd_pair_values(jax.random.key(0), "normal", 64, 6)
