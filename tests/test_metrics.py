"""wgdiff.metrics against independent references: POT's exact OT, closed forms,
brute-force float64 NumPy, scipy.linalg.sqrtm."""

import jax
import numpy as np
import ot
import pytest
import scipy.linalg
from scipy.spatial.distance import cdist
from scipy.special import ndtri

from wgdiff import metrics


def pot_w2(x, y):
    """Exact W2 by POT's network simplex, the test oracle."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    a = np.full(len(x), 1.0 / len(x))
    b = np.full(len(y), 1.0 / len(y))
    return float(np.sqrt(ot.emd2(a, b, cdist(x, y, "sqeuclidean"), numItermax=10**7)))


@pytest.fixture(
    scope="module", params=[500, pytest.param(2000, marks=pytest.mark.slow)], ids=lambda n: f"n{n}"
)
def clouds(request):
    """Two n-point sets in 2-D from different laws, and POT's exact W2 between them."""
    n = request.param
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    y = 0.5 * rng.normal(size=(n, 2)) + np.array([1.0, -0.5])
    return x, y, pot_w2(x, y)


def test_w2_exact_matches_pot_equal_sizes(clouds):
    x, y, reference = clouds
    info = metrics.w2_with_info(x, y, method="exact")
    # both solvers are exact LP optima in float64: only round-off separates them
    assert info["value"] == pytest.approx(reference, rel=1e-9)
    assert info["method"] == "exact" and info["converged"] is True
    # within the documented auto threshold, so auto is exact too
    assert metrics.w2_with_info(x[:100], y[:100])["method"] == "exact"


def test_w2_exact_matches_pot_unequal_sizes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(150, 3))
    y = rng.uniform(-1.0, 2.0, size=(90, 3))
    info = metrics.w2_with_info(x, y)  # auto -> exact LP for n != m this small
    assert info["method"] == "exact" and info["solver"] == "pot-network-simplex"
    assert info["converged"] and info["certificate"]["certified"]
    # the same network simplex as the oracle, in float64
    assert info["value"] == pytest.approx(pot_w2(x, y), rel=1e-9)


def test_w2_sinkhorn_within_one_percent_of_exact(clouds):
    x, y, reference = clouds
    info = metrics.w2_with_info(x, y, method="sinkhorn")
    assert info["method"] == "sinkhorn" and info["converged"] is True
    assert info["epsilon"] > 0 and info["iterations"] > 0
    assert abs(info["value"] - reference) / reference < 1e-2


def test_w2_sinkhorn_refines_epsilon_for_close_measures():
    # Two samples of one law: W2^2 is ~1% of the mean pairwise cost, so the coarse
    # epsilon (1% of the mean cost) alone would underestimate W2 by >10%; the second
    # target must shrink epsilon relative to W2^2.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 2)), rng.normal(size=(300, 2))
    reference = pot_w2(x, y)
    info = metrics.w2_with_info(x, y, method="sinkhorn")
    mean_cost = np.mean(cdist(x, y, "sqeuclidean"))
    assert info["epsilon"] < 0.5 * 1e-2 * mean_cost
    assert info["converged"] is True
    # relative_epsilon = 0.01 left a bias of 0.07% here; 1% is the documented target
    assert abs(info["value"] - reference) / reference < 1e-2


def test_w2_1d_gaussians_approach_closed_form():
    # Quantile points of N(m, s^2): W2^2 -> (m1 - m2)^2 + (s1 - s2)^2 as n grows.
    n = 1000
    z = ndtri((np.arange(n) + 0.5) / n)
    x = (0.3 + 1.0 * z)[:, None]
    y = (-1.2 + 2.5 * np.random.default_rng(3).permutation(z))[:, None]
    value = metrics.w2(x, y, method="exact")
    sorted_value = np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    assert value == pytest.approx(sorted_value, rel=1e-10)  # 1-D optimum pairs sorted
    closed_form = np.sqrt(1.5**2 + 1.5**2)
    # the quantile points' second moment is 1 - O(log n / n), ~0.5% low at n = 1000
    assert value == pytest.approx(closed_form, rel=5e-3)


def test_sliced_w2_in_1d_is_exact_w2():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 1))
    key = jax.random.key(0)
    for y in (rng.exponential(size=(400, 1)), rng.exponential(size=(250, 1))):
        value = float(metrics.sliced_w2(key, x, y, n_projections=8))
        # float32 sorting and sums: 1e-5 relative
        assert value == pytest.approx(pot_w2(x, y), rel=1e-5)


def test_sliced_w2_host_sort_matches_jnp_sort_values_and_derivatives():
    # the CPU path sorts on the host (pure_callback); it must equal jnp.sort exactly,
    # under jit and vmap, and its JVP must be the tangent under the sorting permutation
    from wgdiff.metrics.wasserstein import _host_sort, _sort_last

    rng = np.random.default_rng(8)
    a = jax.numpy.asarray(rng.normal(size=(3, 5, 40)).astype(np.float32))
    a = a.at[0, 0, :10].set(a[0, 0, 0])  # ties
    reference = np.sort(np.asarray(a), axis=-1)
    np.testing.assert_array_equal(np.asarray(jax.jit(_sort_last)(a)), reference)
    np.testing.assert_array_equal(np.asarray(jax.vmap(_host_sort)(a)), reference)
    tangent = jax.numpy.asarray(rng.normal(size=a.shape).astype(np.float32))
    b = a[1]  # no ties: the derivative of sorting is unique there
    _, jvp = jax.jvp(_host_sort, (b,), (tangent[1],))
    _, jvp_ref = jax.jvp(lambda v: jax.numpy.sort(v, axis=-1), (b,), (tangent[1],))
    np.testing.assert_array_equal(np.asarray(jvp), np.asarray(jvp_ref))
    weights = jax.numpy.arange(40.0)
    grad = jax.grad(lambda v: jax.numpy.sum(_sort_last(v) * weights))(b)
    order = np.argsort(np.asarray(b), axis=-1)
    expected = np.zeros((5, 40))
    np.put_along_axis(expected, order, np.arange(40.0)[None], axis=-1)
    np.testing.assert_array_equal(np.asarray(grad), expected)


def test_sliced_w2_at_most_w2():
    # each projection is 1-Lipschitz, so every sliced term is <= W2^2
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(200, 3)), rng.normal(size=(150, 3)) + 1.0
    sliced = float(metrics.sliced_w2(jax.random.key(1), x, y, n_projections=64))
    assert 0.0 < sliced <= pot_w2(x, y) * (1 + 1e-6)


def numpy_mmd_squared(x, y, bandwidth, unbiased):
    kernel = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * bandwidth**2))
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    if unbiased:
        xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return xx + yy - 2 * kxy.mean()


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_numpy(unbiased):
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 3)), rng.normal(size=(170, 3)) + 0.5
    reference = np.sqrt(numpy_mmd_squared(x, y, 0.8, unbiased))
    # chunk_size 64 does not divide 300 or 170: exercises the padding mask
    value = float(metrics.mmd(x, y, 0.8, unbiased=unbiased, chunk_size=64))
    # float32 kernel sums: relative error ~1e-6 on MMD^2 ~ 0.1
    assert value == pytest.approx(reference, rel=1e-4)
    with jax.enable_x64(True):
        value64 = float(metrics.mmd(x, y, 0.8, unbiased=unbiased, chunk_size=64))
    assert value64 == pytest.approx(reference, rel=1e-9)


def test_cfd_matches_numpy_and_vanishes_on_identical_sets():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(250, 2)), rng.normal(size=(120, 2)) * 1.5
    key = jax.random.key(3)
    value = float(metrics.cfd(x, y, key=key, num_frequencies=256, scale=0.7, chunk_size=100))
    omega = np.asarray(metrics.sample_cfd_frequencies(key, 2, 256, 0.7), np.float64)
    phi_x = np.exp(1j * x @ omega.T).mean(axis=0)
    phi_y = np.exp(1j * y @ omega.T).mean(axis=0)
    # float32 phases |omega.x| ~ 3: cos/sin absolute error ~1e-6
    assert value == pytest.approx(np.mean(np.abs(phi_x - phi_y)), abs=1e-5)
    assert float(metrics.cfd(x, x, key=key)) == pytest.approx(0.0, abs=1e-6)
    # frequencies ~ N(0, scale^2 I): sample std of 512 numbers within 10%
    assert np.std(omega) == pytest.approx(0.7, rel=0.1)


def test_cfd_threshold_separates_same_law_from_shifted_law():
    sample = lambda key, n: jax.random.normal(key, (n, 2))
    threshold = metrics.cfd_threshold(jax.random.key(4), sample, 256, n_trials=10)
    x = sample(jax.random.key(5), 256)
    shifted = float(metrics.cfd(x, x + 2.0, key=jax.random.key(6)))
    assert 0.0 < threshold < shifted


def test_frechet_distance_closed_form_with_exact_moments():
    rng = np.random.default_rng(8)

    def features_with_moments(mean, cov, n=500):
        # whiten a sample so its mean and ddof=1 covariance are exactly (0, I)
        z = rng.normal(size=(n, len(mean)))
        z -= z.mean(axis=0)
        z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
        return mean + z @ np.linalg.cholesky(cov).T

    mean_1, cov_1 = np.array([1.0, 0.0, -2.0]), np.diag([1.0, 4.0, 0.25])
    mean_2, cov_2 = np.array([0.0, 1.0, -2.0]), np.diag([9.0, 1.0, 0.25])
    fx, fy = features_with_moments(mean_1, cov_1), features_with_moments(mean_2, cov_2)
    # commuting covariances: FD = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2 = 2 + 4 + 1 + 0
    assert metrics.frechet_distance(fx, fy) == pytest.approx(7.0, rel=1e-9)

    # non-commuting covariances: compare with the scipy.linalg.sqrtm formula
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    cov_1, cov_2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    fx = features_with_moments(np.zeros(4), cov_1)
    fy = features_with_moments(np.ones(4), cov_2)
    reference = 4.0 + np.trace(cov_1 + cov_2 - 2 * scipy.linalg.sqrtm(cov_1 @ cov_2).real)
    assert metrics.frechet_distance(fx, fy) == pytest.approx(reference, rel=1e-8)
    assert metrics.frechet_distance(fx, fx) == pytest.approx(0.0, abs=1e-9)


def test_nearest_neighbor_distances_match_numpy():
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(130, 3)), rng.normal(size=(70, 3))
    reference = cdist(x, y).min(axis=1)
    got = np.asarray(metrics.nearest_neighbor_distances(x, y, chunk_size=32))
    assert np.allclose(got, reference, rtol=1e-5, atol=1e-6)
    pairwise = cdist(y, y)
    np.fill_diagonal(pairwise, np.inf)
    got_self = metrics.nearest_neighbor_distances(y, y, exclude_self=True, chunk_size=32)
    assert np.allclose(got_self, pairwise.min(axis=1), rtol=1e-5, atol=1e-6)


def test_nearest_neighbor_ratio_memorization_and_fresh_data():
    key_train, key_ref, key_fresh = jax.random.split(jax.random.key(10), 3)
    train = jax.random.normal(key_train, (1000, 2))
    reference = jax.random.normal(key_ref, (1000, 2))
    copies = float(metrics.nearest_neighbor_ratio(train[:300], train, reference))
    fresh = float(
        metrics.nearest_neighbor_ratio(jax.random.normal(key_fresh, (1000, 2)), train, reference)
    )
    assert copies == 0.0  # exact recomputation of the winning distance: copies give 0
    # two independent means of 1000 NN distances (each with CV ~0.5): ratio within ~5%
    assert fresh == pytest.approx(1.0, abs=0.1)


def test_jax_metrics_trace_under_jit():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(40, 2)), rng.normal(size=(30, 2)) + 1.0
    key = jax.random.key(12)

    def all_metrics(x, y, bandwidth):
        return (
            metrics.sliced_w2(key, x, y, 16),
            metrics.mmd(x, y, bandwidth),
            metrics.cfd(x, y, key=key),
            metrics.nearest_neighbor_distances(x, y),
        )

    jitted_values = jax.jit(all_metrics)(x, y, 0.5)
    for jitted, eager in zip(jitted_values, all_metrics(x, y, 0.5), strict=True):
        assert np.allclose(jitted, eager, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: metrics.w2(np.ones(5), np.ones((5, 1))), "x must have shape"),
        (lambda: metrics.w2(np.ones((5, 2)), np.ones((5, 3))), "same d"),
        (lambda: metrics.w2(np.full((3, 2), np.nan), np.ones((3, 2))), "NaN or Inf"),
        (lambda: metrics.w2(np.ones((3, 2)), np.full((3, 2), np.inf)), "y contains NaN"),
        (lambda: metrics.w2(np.ones((3, 2)), np.ones((3, 2)), method="emd"), "method"),
        (lambda: metrics.w2(np.zeros((6001, 1)), np.ones((6002, 1)), method="exact"), "LP"),
        (lambda: metrics.w2(np.ones((3, 2)), np.ones((3, 2)), epsilon=-1.0), "epsilon"),
        (
            lambda: metrics.sliced_w2(jax.random.key(0), np.ones((3, 2)), np.ones((3, 2)), 0),
            "n_projections",
        ),
        (lambda: metrics.mmd(np.ones((3, 2)), np.ones((3, 2)), 0.0), "bandwidth"),
        (lambda: metrics.mmd(np.ones((3, 2), bool), np.ones((3, 2)), 1.0), "real numbers"),
        (lambda: metrics.mmd(np.ones((1, 2)), np.ones((3, 2)), 1.0, unbiased=True), "n >= 2"),
        (
            lambda: metrics.cfd(
                np.ones((3, 2)), np.ones((3, 2)), key=jax.random.key(0), scale=-1.0
            ),
            "scale",
        ),
        (lambda: metrics.frechet_distance(np.ones((1, 2)), np.ones((3, 2))), "fx"),
        (
            lambda: metrics.gaussian_frechet_distance(
                np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)
            ),
            "cov_1",
        ),
        (
            lambda: metrics.nearest_neighbor_distances(
                np.ones((3, 2)), np.ones((4, 2)), exclude_self=True
            ),
            "exclude_self",
        ),
        (
            lambda: metrics.nearest_neighbor_ratio(
                np.ones((3, 2)), np.zeros((3, 2)), np.zeros((2, 2))
            ),
            "reference",
        ),
        (
            lambda: metrics.nearest_neighbor_ratio(
                np.ones((3, 2)), np.zeros((3, 2)), np.ones((2, 3))
            ),
            "reference",
        ),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
