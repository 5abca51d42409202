"""Cost of the certificates: Jacobian asymmetry exact (jacfwd) vs random projections, and L_s.

Side by side on the same points of a ScoreMLP in growing dimension ``d``:
``jacobian_asymmetry(method="exact")`` builds ``d x d`` Jacobians (``d`` JVPs per
point), ``method="projection"`` uses 2 JVPs per probe on the whole batch, so its
cost does not grow with ``d`` beyond the network's own. Also times the pairwise
one-sided Lipschitz estimate on Kwon's 100-point grid with and without the
gradient-ascent refinement.

Run: ``python -m benchmarks.bench_bounds``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from benchmarks._common import time_call, write_result
from wgdiff import bounds, conservativity
from wgdiff.nets import ScoreMLP


def _score_fn(d: int, width: int):
    model = ScoreMLP(features=(width, width))
    params = model.init(jax.random.key(0), jnp.zeros((1, d)), jnp.zeros((1,)))
    return functools.partial(model.apply, params)


def run(quick: bool = False) -> dict:
    dims = (8, 32) if quick else (8, 32, 128, 512)
    n_points, n_proj = (8, 16) if quick else (32, 64)
    rows = []
    for d in dims:
        score_fn = _score_fn(d, 128)
        x = jax.random.normal(jax.random.key(1), (n_points, d))
        exact = jax.jit(functools.partial(conservativity.jacobian_asymmetry, score_fn, t=0.5))
        proj = jax.jit(
            functools.partial(
                conservativity.jacobian_asymmetry,
                score_fn,
                t=0.5,
                method="projection",
                n_projections=n_proj,
                chunk_size=16,
            )
        )
        key = jax.random.key(2)
        a_exact, a_proj = exact(x), proj(x, key=key)
        rows.append(
            {
                "d": d,
                "n_points": n_points,
                "n_projections": n_proj,
                "exact_seconds": time_call(exact, x, repeats=3),
                "projection_seconds": time_call(functools.partial(proj, key=key), x, repeats=3),
                "mean_asymmetry_exact": float(jnp.mean(a_exact)),
                "mean_asymmetry_projection": float(jnp.mean(a_proj)),
            }
        )
    score_2d = _score_fn(2, 64)
    ticks = jnp.linspace(0.0, 0.9, 10)
    grid = jnp.stack(jnp.meshgrid(ticks, ticks), -1).reshape(-1, 2)
    lip = {}
    for steps in (0, 100):
        fn = jax.jit(
            functools.partial(bounds.one_sided_lipschitz, score_2d, t=0.5, refine_steps=steps)
        )
        lip[f"refine_{steps}"] = {
            "seconds": time_call(fn, grid, repeats=3),
            "estimate": float(fn(grid)),
        }
    record = {"quick": quick, "jacobian_asymmetry": rows, "one_sided_lipschitz_grid100": lip}
    write_result("bounds_quick" if quick else "bounds", record)
    return record


def headline(record: dict) -> dict:
    """The summary line items: seconds per estimate (exact / projection asymmetry, L_s)."""
    out = {}
    for row in record["jacobian_asymmetry"]:
        out[f"Jacobian asymmetry s, exact / projection (d={row['d']})"] = (
            f"{row['exact_seconds']:.3g} / {row['projection_seconds']:.3g}"
        )
    for name, row in record["one_sided_lipschitz_grid100"].items():
        out[f"one-sided Lipschitz on 10x10 grid, s ({name})"] = row["seconds"]
    return out


if __name__ == "__main__":
    run()
