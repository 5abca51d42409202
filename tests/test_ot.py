"""Exact OT (certified) and debiased Sinkhorn against POT and float64 NumPy references."""

import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from wgdiff import metrics

sinkhorn_module = importlib.import_module("wgdiff.metrics.sinkhorn")
exact_module = importlib.import_module("wgdiff.metrics.exact")


def pot_cost(x, y):
    """POT's network simplex, float64: the test oracle for W2^2."""
    a, b = np.full(len(x), 1.0 / len(x)), np.full(len(y), 1.0 / len(y))
    return float(ot.emd2(a, b, cdist(x, y, "sqeuclidean"), numItermax=10**7))


def _cases():
    rng = np.random.default_rng(0)
    random = (rng.normal(size=(200, 2)), 0.5 * rng.normal(size=(200, 2)) + [1.0, -0.5])
    centres = rng.normal(scale=4.0, size=(3, 3))
    clustered = (
        centres[rng.integers(0, 3, 150)] + 0.05 * rng.normal(size=(150, 3)),
        centres[rng.integers(0, 3, 150)] + 0.05 * rng.normal(size=(150, 3)) + 0.3,
    )
    base = rng.normal(size=(40, 2))
    duplicated = (base[rng.integers(0, 40, 120)], base[rng.integers(0, 40, 120)] + 0.1)
    high_dim = (rng.normal(size=(100, 16)), rng.normal(size=(100, 16)) + 0.2)
    unequal = (rng.normal(size=(130, 2)), rng.uniform(-1.0, 2.0, size=(70, 2)))
    return {
        "random": random,
        "clustered": clustered,
        "duplicated": duplicated,
        "d16": high_dim,
        "n!=m": unequal,
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_exact_equals_pot_and_certificate_holds(name):
    x, y = CASES[name]
    out = metrics.exact_ot(x, y)
    reference = pot_cost(x, y)
    # both are LP optima in float64: only round-off separates them
    assert out.cost == pytest.approx(reference, rel=1e-9)
    cert = out.certificate
    assert cert["certified"] and cert["max_violation"] <= cert["tol"]
    assert cert["pairs_checked"] >= len(x) * len(y)
    # Independent check of the certificate: dual feasibility over all pairs by cdist,
    # and the dual value equals the primal cost (so the plan is optimal).
    reduced = cdist(x, y, "sqeuclidean") - out.u[:, None] - out.v[None, :]
    assert reduced.min() >= -cert["tol"]
    assert np.mean(out.u) + np.mean(out.v) == pytest.approx(out.cost, rel=1e-9)
    # the plan: marginals 1/n and 1/m, cost <P, C>
    assert np.allclose(np.bincount(out.rows, out.mass, len(x)), 1.0 / len(x))
    assert np.allclose(np.bincount(out.cols, out.mass, len(y)), 1.0 / len(y))
    plan_cost = np.sum(out.mass * np.sum((x[out.rows] - y[out.cols]) ** 2, axis=1))
    assert plan_cost == pytest.approx(out.cost, rel=1e-12)
    if len(x) == len(y):
        assert sorted(out.assignment.tolist()) == list(range(len(y)))


def _sparse_instance(rng, n, density):
    """A random sparse n x n cost graph with a perfect matching (a hidden permutation)."""
    cost = rng.random((n, n)) * 10.0
    mask = rng.random((n, n)) < density
    mask[np.arange(n), rng.permutation(n)] = True
    return cost, mask


def _csr(cost, mask):
    rows, cols = np.nonzero(mask)
    return np.searchsorted(rows, np.arange(len(cost) + 1)), cols, cost[rows, cols], rows


def test_sparse_assignment_optimal_cold_and_warm():
    # the numba auction + shortest-augmenting-path solver against SciPy's dense
    # Hungarian (absent edges at a prohibitive cost), from cold and from a warm start
    # after adding edges; its potentials must be feasible duals with tight matched edges
    assignment = importlib.import_module("wgdiff.metrics._assignment")
    from scipy.optimize import linear_sum_assignment

    def solve_and_check(cost, mask, u, v, match_row, match_col, fresh):
        indptr, cols, c, rows = _csr(cost, mask)
        if fresh:  # epsilon-scaled auction phases first, as exact_ot starts
            for eps in (1.0, 1e-2, 1e-4):
                assert assignment.auction(indptr, cols, c, v, match_row, match_col, eps) >= len(
                    cost
                )
        assignment.restore_feasibility(indptr, cols, c, u, v, match_row, match_col, False, 1e-13)
        _, failed = assignment.augment_free_rows(indptr, cols, c, u, v, match_row, match_col)
        assert failed == 0
        r, col = linear_sum_assignment(np.where(mask, cost, 1e6))
        assert c[match_row].sum() == pytest.approx(cost[r, col].sum(), rel=1e-12)
        assert sorted(cols[match_row].tolist()) == list(range(len(cost)))
        reduced = c - u[rows] - v[cols]
        assert reduced.min() >= -1e-12 and np.abs(reduced[match_row]).max() <= 1e-12
        return cols[match_row]

    rng = np.random.default_rng(3)
    for trial in range(12):
        n = int(rng.integers(2, 50))
        cost, mask = _sparse_instance(rng, n, 0.2)
        u, v = np.zeros(n), rng.normal(size=n) * (trial % 2)
        match_row, match_col = np.full(n, -1), np.full(n, -1)
        matched = solve_and_check(cost, mask, u, v, match_row, match_col, True)
        # warm: more edges, the previous matching in the new edge numbering
        mask = mask | (rng.random((n, n)) < 0.2)
        rows, cols = np.nonzero(mask)
        match_row = np.searchsorted(rows * n + cols, np.arange(n) * n + matched)
        solve_and_check(cost, mask, u, v, match_row, match_col, False)


def test_power_query_certificate_bounds_the_brute_force_minimum():
    # the k-d tree certificate (low dimension) is a lower bound on the all-pairs
    # min_j C_ij - u_i - v_j within 3 eta of it, for near-quadratic and rough duals
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 2)), 0.5 * rng.normal(size=(250, 2)) + 0.3
    for v in (np.sum(y**2, axis=1) * 0.6 + 0.1 * rng.normal(size=250), rng.normal(size=250)):
        u = rng.normal(size=300)
        brute = (cdist(x, y, "sqeuclidean") - v[None, :]).min(axis=1) - u
        tree_min, index = exact_module._reduced_row_min(x, y, u, v, 1e-8)
        _, _, eta = exact_module._power_query(x, y, v)
        assert 0 < eta < 0.25 * 1e-8  # so the tree branch (not brute force) was taken
        assert np.all(tree_min <= brute + 1e-15) and np.all(tree_min >= brute - 3 * eta - 1e-15)
        exact_at_index = np.sum((x - y[index]) ** 2, axis=1) - v[index] - u
        assert np.allclose(exact_at_index, brute, rtol=0, atol=4 * eta)


def test_power_tree_queries_and_auction_against_brute_force():
    # the weighted k-d tree: k least |p - q_j|^2 + w_j against a dense NumPy search
    # (duplicated points, weights spread over six decades, one point); its
    # dense auction: a permutation in eps-complementary slackness with its final
    # weights, row i's column within eps of its least cost (Bertsekas's invariant)
    tree_module = importlib.import_module("wgdiff.metrics._powertree")
    rng = np.random.default_rng(5)
    for m, k in ((1, 1), (5, 3), (300, 4)):
        q = rng.normal(size=(m, 2))
        q[m // 2 :] = q[: m - m // 2]
        # weights spread over six decades, plus a steep affine part
        w = 10.0 ** rng.uniform(-6, 0, size=m) + 5.0 * (q[:, 0] - q[:, 0].min())
        tree = tree_module.build_tree(q, w, tree_module.LEAF_SIZE)
        p = rng.normal(size=(120, 2))
        values, index = tree_module.query_tree(*tree, p, k, 0.0)
        brute = cdist(p, q, "sqeuclidean") + w[None, :]
        np.testing.assert_allclose(values, np.sort(brute, axis=1)[:, :k], rtol=0, atol=1e-14)
        np.testing.assert_allclose(np.take_along_axis(brute, index, 1), values, rtol=0, atol=1e-14)
    n, eps = 200, 1e-3
    p, q = rng.normal(size=(n, 2)), 0.5 * rng.normal(size=(n, 2))
    q[n // 2 :] = q[: n // 2]  # ties
    tree = tree_module.build_tree(q, np.zeros(n), tree_module.LEAF_SIZE)
    match = np.empty(n, np.int64)
    assert tree_module.tree_auction(*tree, p, match, eps) >= n
    assert sorted(match.tolist()) == list(range(n))
    weight = np.empty(n)
    weight[tree[8]] = tree[7]  # the raised weights, back in input order
    reduced = cdist(p, q, "sqeuclidean") + weight[None, :]
    assert np.all(reduced[np.arange(n), match] <= reduced.min(axis=1) + eps + 1e-12)
    assert np.max(weight) > eps  # prices rose


def test_exact_repair_rounds_from_coarse_prices_equal_pot(monkeypatch):
    # one coarse auction phase and one neighbour per row: the first graph misses
    # optimal edges, so the certificate finds violations and the warm repair rounds
    # (new edges, violating rows freed and re-augmented) must still end at POT's optimum
    monkeypatch.setattr(exact_module, "TREE_AUCTION_START", 0.3)
    monkeypatch.setattr(exact_module, "TREE_AUCTION_END", 1e9)
    for name in ("random", "duplicated"):
        x, y = CASES[name]
        out = metrics.exact_ot(x, y, neighbors=1)
        assert out.certificate["rounds"] > 2 and out.certificate["certified"]
        assert out.cost == pytest.approx(pot_cost(x, y), rel=1e-9)
        reduced = cdist(x, y, "sqeuclidean") - out.u[:, None] - out.v[None, :]
        assert reduced.min() >= -out.certificate["tol"]


def test_exact_with_subsampled_candidate_potentials_equals_pot(monkeypatch):
    # above CANDIDATE_SUBSAMPLE points the candidate Sinkhorn runs on subsamples and is
    # extended by c-transforms (lowered to 64 here so a small case takes that branch)
    monkeypatch.setattr(exact_module, "CANDIDATE_SUBSAMPLE", 64)
    x, y = CASES["random"]
    out = metrics.exact_ot(x, y)
    assert out.cost == pytest.approx(pot_cost(x, y), rel=1e-9)
    assert out.certificate["certified"]
    reduced = cdist(x, y, "sqeuclidean") - out.u[:, None] - out.v[None, :]
    assert reduced.min() >= -out.certificate["tol"]


def test_exact_is_scale_free():
    # W2^2 is 2-homogeneous; 1e20-scaled data (squares ~1e40, beyond float32) must
    # give 1e40 times the cost, certified (the solver works in mean-cost units)
    x, y = CASES["random"]
    unit = metrics.exact_ot(x, y)
    big = metrics.exact_ot(1e20 * x, 1e20 * y)
    assert big.cost == pytest.approx(1e40 * unit.cost, rel=1e-9)
    assert big.certificate["certified"]
    assert np.array_equal(big.assignment, unit.assignment)
    with pytest.raises(ValueError, match="rescale"):
        metrics.sinkhorn(1e20 * x, 1e20 * y)
    # w2's Sinkhorn path runs in units of the data and scales back in float64
    value = metrics.w2(x, y, method="sinkhorn")
    for c in (1e20, 1e-20):
        assert metrics.w2(c * x, c * y, method="sinkhorn") == pytest.approx(c * value, rel=1e-6)


def test_w2_exact_reports_certificate_and_is_a_distance():
    x, y = CASES["random"]
    info = metrics.w2_with_info(x, y, method="exact")
    assert info["method"] == "exact" and info["converged"] is True
    assert info["certificate"]["rounds"] >= 1
    assert info["value"] == pytest.approx(np.sqrt(pot_cost(x, y)), rel=1e-9)


def test_sinkhorn_close_to_exact_and_measures_its_convergence():
    x, y = CASES["random"]
    reference = np.sqrt(pot_cost(x, y))
    out = metrics.sinkhorn(x, y)
    assert bool(out.converged)
    assert np.all(np.asarray(out.marginal_errors) < 1e-3)
    # eps = 1e-2 * W2^2: the debiased divergence is within 0.5% of W2 here
    assert np.sqrt(float(out.divergence)) == pytest.approx(reference, rel=5e-3)
    # gap of the (nearly feasible) plan is second order in the marginal error
    assert abs(float(out.gap)) < 1e-2 * float(out.divergence)
    info = metrics.w2_with_info(x, y, method="sinkhorn")
    assert info["converged"] and info["value"] == pytest.approx(reference, rel=5e-3)


@pytest.mark.parametrize(("d", "scaling"), [(2, 0.25), (16, 0.5)])
def test_sinkhorn_default_epsilon_obeys_its_rule(d, scaling):
    # epsilon=None promises final epsilon <= relative_epsilon * the converged estimate;
    # estimates read while annealing are of unconverged potentials (before the fix
    # these two stopped at 40x and 4.4x that: the annealing trusted them)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, d)), 0.5 * rng.normal(size=(200, d)) + 0.3
    out = metrics.sinkhorn(x, y, scaling=scaling)
    assert bool(out.converged)
    assert float(out.epsilon) <= 1.01 * 1e-2 * float(out.divergence)


def numpy_sinkhorn(x, y, eps, iterations=3000):
    """float64 log-domain Sinkhorn (plain alternating), an independent transcription."""
    c = cdist(x, y, "sqeuclidean")
    n, m = c.shape
    f, g = np.zeros(n), np.zeros(m)
    for _ in range(iterations):
        f = -eps * logsumexp((g[None, :] - c) / eps - np.log(m), axis=1)
        g = -eps * logsumexp((f[:, None] - c) / eps - np.log(n), axis=0)
    return f, g, c


def test_sinkhorn_streamed_equals_dense_and_numpy(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(90, 2)), rng.normal(size=(70, 2)) + 0.5
    eps = 0.1
    with jax.enable_x64(True):
        dense = metrics.sinkhorn(x, y, epsilon=eps, threshold=1e-9, dense=True)
        # plain Sinkhorn steps (no Anderson history) reach the same fixed point
        plain = metrics.sinkhorn(x, y, epsilon=eps, threshold=1e-9, dense=True, anderson_memory=0)
        # chunks that do not divide 90 or 70 exercise the padding masks
        streamed = metrics.sinkhorn(
            x, y, epsilon=eps, threshold=1e-9, dense=False, row_chunk=32, col_chunk=25
        )
        # the multiscale start (annealing on subsamples, potentials extended by a
        # soft c-transform) of streamed problems, here from 30-point subsamples
        monkeypatch.setattr(sinkhorn_module, "COARSE_POINTS", 30)
        multiscale = metrics.sinkhorn(x, y, epsilon=eps, threshold=1e-9, dense=False)
    assert int(multiscale.coarse_iterations) > 0 and int(streamed.coarse_iterations) == 0
    f, g, c = numpy_sinkhorn(x, y, eps)
    ot_xy = f.mean() + g.mean()
    fx, gx, _ = numpy_sinkhorn(x, x, eps)
    fy, gy, _ = numpy_sinkhorn(y, y, eps)
    divergence = ot_xy - 0.5 * (fx.mean() + gx.mean() + fy.mean() + gy.mean())
    for out in (dense, plain, streamed, multiscale):
        assert bool(out.converged)
        assert float(out.ot_xy) == pytest.approx(ot_xy, rel=1e-7)
        assert float(out.divergence) == pytest.approx(divergence, rel=1e-6)


def test_sinkhorn_iteration_cap_gives_not_converged():
    x, y = CASES["random"]
    out = metrics.sinkhorn(x, y, max_iterations=5)
    assert not bool(out.converged) and int(out.iterations) == 5
    info = metrics.w2_with_info(x, y, method="sinkhorn", max_iterations=5)
    assert info["converged"] is False


def test_sample_sinkhorn_plan_matches_plan_conditionals():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(4, 2)), rng.normal(size=(5, 2))
    eps = 0.5
    # 400 copies of each row: the same uniform measure (so the same plan conditionals)
    # and 400 independent draws per original row from one call
    tiled = np.tile(x, (400, 1))
    with jax.enable_x64(True):
        result = metrics.sinkhorn(tiled, y, epsilon=eps, threshold=1e-10, debias=False)
        draws = np.asarray(
            metrics.sample_sinkhorn_plan(jax.random.key(0), tiled, y, result=result)
        ).reshape(400, 4)
    f, g, c = numpy_sinkhorn(x, y, eps)
    plan = np.exp((f[:, None] + g[None, :] - c) / eps) / (4 * 5)
    conditional = plan / plan.sum(axis=1, keepdims=True)
    for i in range(4):
        freq = np.bincount(draws[:, i], minlength=5) / len(draws)
        # 400 draws: binomial standard deviation <= 0.025; 4 sigma
        assert np.allclose(freq, conditional[i], atol=0.1)


def test_sample_sinkhorn_plan_small_eps_is_the_exact_assignment():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 2))
    y = x[rng.permutation(64)] + 0.01 * rng.normal(size=(64, 2))
    exact = metrics.exact_ot(x, y).assignment
    sampled = metrics.sample_sinkhorn_plan(jax.random.key(1), x, y, epsilon=1e-4)
    assert np.array_equal(np.asarray(sampled), exact)


def test_exact_assignment_inside_jit_is_optimal(monkeypatch):
    rng = np.random.default_rng(7)
    # brute force over all 7! permutations, float64 costs of the float32 points
    x7 = rng.normal(size=(7, 2)).astype(np.float32)
    y7 = (rng.normal(size=(7, 2)) * [2.0, 0.5]).astype(np.float32)
    c7 = cdist(x7.astype(np.float64), y7.astype(np.float64), "sqeuclidean")
    best = min(itertools.permutations(range(7)), key=lambda p: c7[range(7), p].sum())
    assign = jax.jit(metrics.exact_assignment)
    assert np.asarray(assign(x7, y7)).tolist() == list(best)
    # POT's network simplex on a batch with duplicated points (ties), vmapped
    base = rng.normal(size=(40, 2))
    xs = np.stack([base[rng.integers(0, 40, 150)] for _ in range(2)]).astype(np.float32)
    ys = np.stack([rng.normal(size=(150, 2)) + 0.3 for _ in range(2)]).astype(np.float32)
    dense = np.asarray(jax.jit(jax.vmap(metrics.exact_assignment))(xs, ys))
    # the same batch through the sparse pipeline (Sinkhorn candidates in the trace,
    # sparse assignment and the certificate on the host), used above 256 points
    monkeypatch.setattr(exact_module, "DENSE_ASSIGNMENT_MAX_POINTS", 0)
    sparse = np.asarray(jax.jit(jax.vmap(metrics.exact_assignment))(xs, ys))
    for perms in (dense, sparse):
        for x, y, perm in zip(xs, ys, perms, strict=True):
            x, y = x.astype(np.float64), y.astype(np.float64)
            assert sorted(perm.tolist()) == list(range(150))
            cost = np.mean(np.sum((x - y[perm]) ** 2, axis=1))
            assert cost == pytest.approx(pot_cost(x, y), rel=1e-9)


def test_sinkhorn_log_plan_inside_jit_matches_numpy():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(30, 2)), rng.normal(size=(20, 2)) + 0.5
    eps = 0.1
    with jax.enable_x64(True):
        # epsilon traced: one compilation serves every epsilon
        plan = jax.jit(lambda a, b, e: metrics.sinkhorn_log_plan(a, b, epsilon=e, threshold=1e-9))
        log_plan = np.asarray(plan(x, y, eps))
        grad = jax.grad(lambda a: jnp.sum(plan(a, y, eps) * rng.normal(size=(30, 20))))(x)
    f, g, c = numpy_sinkhorn(x, y, eps)
    reference = (f[:, None] + g[None, :] - c) / eps - np.log(30 * 20)
    assert np.allclose(log_plan, reference, atol=1e-6)
    # a coupling is data: no gradient flows through it
    assert np.all(np.asarray(grad) == 0.0)


def test_bures_and_sliced_references():
    # N(0, I) vs N(0, diag(4, 1/4)): W2^2 = (2 - 1)^2 + (1/2 - 1)^2 = 1.25
    value = metrics.bures_w2(np.zeros(2), np.eye(2), np.zeros(2), np.diag([4.0, 0.25]))
    assert value == pytest.approx(np.sqrt(1.25), rel=1e-12)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(200, 3)), rng.normal(size=(200, 3)) * [2.0, 1.0, 0.5]
    exact = np.sqrt(pot_cost(x, y))
    key = jax.random.key(2)
    sliced = float(metrics.sliced_w2(key, x, y, n_projections=64))
    max_sliced, direction = metrics.max_sliced_w2(key, x, y, n_projections=64)
    # each projection is 1-Lipschitz: sliced <= max-sliced <= W2 (float32 slack)
    assert sliced < float(max_sliced) <= exact * (1 + 1e-5)
    assert float(np.linalg.norm(direction)) == pytest.approx(1.0, abs=1e-5)
    # a pure translation: the best direction is the shift and max-sliced = W2 = |t|
    shift = np.array([0.0, 3.0, 4.0])
    value, _ = metrics.max_sliced_w2(key, x, x + shift, n_projections=16)
    assert float(value) == pytest.approx(5.0, rel=1e-4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: metrics.exact_ot(np.full((3, 2), np.nan), np.ones((3, 2))), "x contains NaN"),
        (lambda: metrics.exact_ot(np.ones((3, 2)), np.full((3, 2), np.inf)), "y contains NaN"),
        (lambda: metrics.exact_ot(np.ones((3, 2)), np.ones((3, 3))), "same d"),
        (lambda: metrics.exact_ot(np.ones((0, 2)), np.ones((3, 2))), "x must have shape"),
        (lambda: metrics.sinkhorn(np.ones((3, 2)), np.ones((0, 2))), "y must have shape"),
        (lambda: metrics.sinkhorn(np.ones((3, 2)), np.ones((3, 2)), epsilon=0.0), "epsilon"),
        (lambda: metrics.sinkhorn(np.ones((3, 2)), np.ones((3, 2)), epsilon=-1.0), "epsilon"),
        (
            lambda: metrics.sinkhorn(np.ones((3, 2)), np.ones((3, 2)), epsilon=float("nan")),
            "epsilon",
        ),
        (lambda: metrics.sinkhorn(np.ones((3, 2)), np.ones((3, 2)), scaling=1.0), "scaling"),
        (
            lambda: metrics.sinkhorn(np.ones((3, 2)), np.ones((3, 2)), max_iterations=0),
            "max_iterations",
        ),
        (
            lambda: metrics.sinkhorn(np.ones((3, 2)), np.ones((3, 2)), anderson_memory=-1),
            "anderson_memory",
        ),
        (lambda: metrics.w2(np.ones((3, 2)), np.ones((3, 2)), epsilon=0.0), "epsilon"),
        (
            lambda: metrics.w2(np.zeros((6001, 1)), np.ones((6002, 1)), method="exact"),
            "LP_MAX_PAIRS",
        ),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
