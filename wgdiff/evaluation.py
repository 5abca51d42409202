"""One report for any trained score model: sample quality, Kwon's certificate, Vuong's diagnostics.

:func:`evaluate_score_model` generates samples with any solver of
``wgdiff.samplers`` on any time grid (default: Euler-Maruyama on the reverse SDE, uniform
grid), measures
their W2 distance to held-out data (``wgdiff.metrics.w2``), evaluates the Kwon et
al. upper bound with its parts (``wgdiff.bounds.wasserstein_bound``) and the
conservativity of the score (``wgdiff.conservativity``: Jacobian asymmetry and the
three loop constructions of Vuong et al.) at a few diffusion times. It is what
``wgdiff evaluate`` prints for a checkpoint.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sde import VPSDE
    >>> heldout = jax.random.normal(jax.random.key(0), (64, 2))
    >>> report = evaluate_score_model(jax.random.key(1), VPSDE(), lambda x, t: -x,
    ...                               heldout=heldout, n_steps=50, n_times=16)
    >>> report["bound"]["bound"] >= report["bound"]["start_offset"]
    True
    >>> report["conservativity"]["max_jacobian_asymmetry"] < 1e-5
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wgdiff import bounds, conservativity
from wgdiff._checks import check_finite, check_ndim, check_positive_int
from wgdiff._types import ArrayLike, PRNGKey, ScoreFn
from wgdiff.metrics import w2
from wgdiff.samplers import EulerMaruyama, Solver, TimeGrid, UniformGrid, sample
from wgdiff.sde import SDE

STARTS = ("prior", "forward_noised")
EXACT_JACOBIAN_MAX_DIM = 256


def _conservativity_report(key, sde, score_fn, heldout, time_fractions, n_points, n_loops):
    """DC and IC violations at ``t = fraction * T`` on forward-noised held-out points."""
    d = math.prod(heldout.shape[1:])
    method = "exact" if d <= EXACT_JACOBIAN_MAX_DIM else "projection"
    # 256 vertices per loop: the trapezoid rule's O(h^2) error then stays near 1e-3 of
    # oint |s||dx| for the exact score of a smooth mixture (the diagnostic's floor).
    builders = {
        "corrupted_circle": functools.partial(conservativity.corrupted_circle_loops, n_points=256),
        "interpolated": functools.partial(conservativity.interpolated_loops, points_per_edge=64),
        "projected_interpolated": functools.partial(
            conservativity.projected_interpolated_loops, points_per_edge=64
        ),
    }
    x0, x_loops = heldout[:n_points], heldout[:n_loops]

    # One compiled program for every time: t is traced, so the four times share it.
    @jax.jit
    def measure(k_noise, k_asym, k_loops, t):
        xt, _ = sde.marginal_sample(k_noise, x0, t)
        asym = conservativity.jacobian_asymmetry(score_fn, xt, t, method=method, key=k_asym)
        violations = {
            name: jnp.mean(conservativity.loop_violation(score_fn, build(k, sde, x_loops, t), t))
            for (name, build), k in zip(builders.items(), k_loops, strict=True)
        }
        return asym, violations

    rows = []
    for frac in time_fractions:
        t = float(frac) * sde.T
        key, k_noise, k_asym, *k_loops = jax.random.split(key, 3 + len(builders))
        asym, violations = measure(k_noise, k_asym, k_loops, jnp.asarray(t, heldout.dtype))
        row = {
            "t": t,
            "jacobian_asymmetry_mean": float(jnp.mean(asym)),
            "jacobian_asymmetry_max": float(jnp.max(asym)),
        }
        row.update({f"loop_violation_{name}": float(v) for name, v in violations.items()})
        rows.append(row)
    return {
        "jacobian_method": method,
        "per_time": rows,
        "max_jacobian_asymmetry": max(r["jacobian_asymmetry_max"] for r in rows),
        "max_loop_violation": max(
            v for r in rows for k, v in r.items() if k.startswith("loop_violation")
        ),
    }


def evaluate_score_model(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    *,
    heldout: ArrayLike,
    n_samples: int | None = None,
    n_steps: int = 200,
    eps: float = 1e-3,
    solver: Solver | None = None,
    grid: TimeGrid | None = None,
    start: str = "prior",
    n_times: int = 48,
    lipschitz_points: ArrayLike | None = None,
    refine_steps: int = 0,
    true_score_fn: ScoreFn | None = None,
    time_fractions: Sequence[float] = (0.01, 0.1, 0.5, 1.0),
    n_conservativity_points: int = 64,
    n_loops: int = 16,
) -> dict:
    """W2 to held-out data, the Kwon bound with its parts and the conservativity numbers.

    Args:
        key: PRNG key.
        sde: forward SDE the model was trained for.
        score_fn: ``(x (n, *event), t) -> (n, *event)``.
        heldout: ``(n, *event)`` held-out data.
        n_samples: generated samples (default ``len(heldout)``).
        n_steps: steps of the default grid ``UniformGrid(n_steps, eps)`` (unused when
            ``grid`` is given).
        eps: final time of the default grid and first time of the bound's grid.
        solver: a ``wgdiff.samplers`` solver (default ``EulerMaruyama()``).
        grid: a ``wgdiff.samplers`` time grid (default ``UniformGrid(n_steps, eps)``).
        start: ``"prior"`` (the bound's offset is ``I(T)`` times the synchronous-coupling
            bound on ``W2(p_T, prior)``) or ``"forward_noised"`` (start from the
            held-out data noised to ``T``, so ``p_T = q_T`` and the offset is 0, as in
            Kwon sec. 4).
        n_times: time-grid size of the bound.
        lipschitz_points: ``(p, *event)`` where ``L_s`` is estimated (default: held-out
            points noised to each time).
        refine_steps: gradient-ascent refinement of ``L_s``.
        true_score_fn: exact perturbed score if known (the bound then uses ``J_SM``).
        time_fractions: times ``fraction * T`` of the conservativity diagnostics.
        n_conservativity_points: points for the Jacobian asymmetry per time.
        n_loops: loops per construction and time.

    Returns:
        JSON-ready dict: ``"solver"``, ``"grid"``, ``"n_steps"``, ``"nfe"``, ``"w2"`` (generated
        vs held-out), ``"w2_heldout_halves"`` (W2
        between two halves of the held-out set: the sampling-noise scale of empirical
        W2, which the bound on the population W2 does not cover), ``"bound"`` (bound,
        loss, loss kind, intercept, offsets, ``"bound_holds"``, the ``L_s(t)`` profile), and
        ``"conservativity"`` (per-time Jacobian asymmetry and loop violations).
    """
    heldout = jnp.asarray(heldout)
    check_ndim(heldout, tuple(range(2, 6)), "heldout", "(n, *event)")
    check_finite(heldout, "heldout")
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    n = heldout.shape[0] if n_samples is None else check_positive_int(n_samples, "n_samples")
    if start == "forward_noised" and n != heldout.shape[0]:
        raise ValueError(
            "start='forward_noised' generates one sample per held-out point; "
            f"n_samples must be None or {heldout.shape[0]}, got {n}"
        )
    k_fwd, k_gen, k_bound, k_cons = jax.random.split(key, 4)
    shape = (n,) + heldout.shape[1:]
    if start == "forward_noised":
        x_T, _ = sde.marginal_sample(k_fwd, heldout, jnp.full((n,), sde.T, heldout.dtype))
        terminal = 0.0
    else:
        x_T = None
        terminal = bounds.prior_w2_upper_bound(sde, heldout)
    solver = EulerMaruyama() if solver is None else solver
    if grid is None:
        grid = UniformGrid(check_positive_int(n_steps, "n_steps"), eps)
    run = sample(k_gen, sde, score_fn, shape, solver, grid, x_init=x_T)
    generated = run.x
    flat = lambda x: x.reshape(x.shape[0], -1)
    distance = float(w2(flat(heldout), flat(generated)))
    half = heldout.shape[0] // 2
    floor = float(w2(flat(heldout[:half]), flat(heldout[half : 2 * half]))) if half else None
    res = bounds.wasserstein_bound(
        k_bound,
        sde,
        score_fn,
        heldout,
        n_times=n_times,
        eps=eps,
        lipschitz_points=lipschitz_points,
        terminal_w2=terminal,
        true_score_fn=true_score_fn,
        refine_steps=refine_steps,
    )
    bound = {
        "bound": float(res.bound),
        "loss": float(res.loss),
        "loss_kind": "J_SM" if true_score_fn is not None else "J_DSM",
        "weight_integral": float(res.weight_integral),
        "intercept": float(res.intercept),
        "offset": float(res.offset),
        "start_offset": float(res.start_offset),
        "integrating_factor_T": float(res.integrating_factor[-1]),
        "times": np.asarray(res.times).tolist(),
        "lipschitz": np.asarray(res.lipschitz).tolist(),
        "bound_holds": bool(distance <= float(res.bound)),
    }
    cons = _conservativity_report(
        k_cons,
        sde,
        score_fn,
        heldout,
        time_fractions,
        check_positive_int(n_conservativity_points, "n_conservativity_points"),
        check_positive_int(n_loops, "n_loops"),
    )
    return {
        "n_generated": n,
        "start": start,
        "solver": run.stats["solver"],
        "grid": run.stats["grid"],
        "n_steps": run.stats["n_steps"],
        "nfe": run.nfe,
        "w2": distance,
        "w2_heldout_halves": floor,
        "bound": bound,
        "conservativity": cons,
    }


__all__ = ["STARTS", "evaluate_score_model"]
