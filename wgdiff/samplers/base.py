r"""The solver interface and the one sampling loop, ``sample``.

Built like diffrax's ``diffeqsolve``: small immutable solver objects over a
single jit-compiled ``lax.scan``. A solver declares

- ``order``: its nominal order (for stochastic solvers: the weak order), and
  ``global_order``: the global order it reaches on the probability-flow ODE, counting
  multistep warm-up (a third-order multistep started with a first-order step is
  globally second order) and correctors (UniPC);
- ``nfe_per_step``: model evaluations per step (``nfe(n_steps)`` for the total);
- ``stochastic``: whether it draws noise (then ``sample`` needs a key);
- ``multistep``: whether it carries earlier evaluations between steps
  (``min_steps``: the fewest steps it accepts);

and implements ``init(model, x, t0) -> state`` and
``step(model, x, state, step) -> (x, state)``. ``step`` is a :class:`Step`: the
times ``t > t_next``, the step's index, whether it is the last, a PRNG key and the
number of steps. ``model`` is a :class:`~wgdiff.nets.parameterization.ScoreModel`
(``model.score``, ``.noise``, ``.data``, ``.velocity``, ``.sde``).

A user's own solver is one small class (see ``notebooks/06_samplers.ipynb``)::

    @struct.dataclass
    class Midpoint(Solver):
        order = 2
        nfe_per_step = 2

        def step(self, model, x, state, step):
            h = step.t_next - step.t
            mid = x + 0.5 * h * model.velocity(x, step.t)
            return x + h * model.velocity(mid, step.t + 0.5 * h), state
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from wgdiff._checks import check_finite, check_shape_tuple
from wgdiff._types import Array, ArrayLike, PRNGKey, PyTree, ScoreFn, Shape
from wgdiff.nets.parameterization import ScoreModel, as_score_model
from wgdiff.samplers.grids import TimeGrid
from wgdiff.sde import SDE


class Step(NamedTuple):
    """What a solver's ``step`` sees: ``t > t_next`` scalars, ``index`` (traced int),
    ``last`` (traced bool), ``key`` (PRNG key for this step), ``n_steps`` (static int)."""

    t: jax.Array
    t_next: jax.Array
    index: jax.Array
    last: jax.Array
    key: jax.Array
    n_steps: int


class SampleResult(NamedTuple):
    """``x``: ``(n, *event)`` samples at the grid's last time; ``nfe``: model evaluations
    per sample; ``stats``: solver, grid, number of steps and solver-specific numbers."""

    x: jax.Array
    nfe: float
    stats: dict


class Solver(abc.ABC):
    """Base class of the reverse-time solvers (concrete ones are ``flax.struct`` dataclasses)."""

    order: int
    nfe_per_step: int
    stochastic: bool = False
    multistep: bool = False
    min_steps: int = 1

    @property
    def global_order(self) -> int:
        """Global order of accuracy including warm-up steps (default: ``order``)."""
        return self.order

    def init(self, model: ScoreModel, x: Array, t0: Array) -> PyTree:
        """State carried between steps (default: none)."""
        return ()

    @abc.abstractmethod
    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        """One step from ``step.t`` to ``step.t_next``: returns ``(x_next, state)``."""

    def nfe(self, n_steps: int) -> int:
        """Model evaluations per sample for ``n_steps`` steps."""
        return self.nfe_per_step * n_steps

    def summarize(self, state: PyTree, n_steps: int) -> dict:
        """Host-side numbers from the final state; must contain ``"nfe"``."""
        return {"nfe": self.nfe(n_steps)}


def full_time(t: ArrayLike, x: Array) -> Array:
    """Scalar time -> ``(n,)`` for a batch ``x (n, *event)``."""
    return jnp.full((x.shape[0],), t, dtype=x.dtype)


def initial_state(key: PRNGKey, sde: SDE, shape: Shape, x_init: ArrayLike | None) -> Array:
    """Prior draw, or the user's starting points (e.g. forward-noised data)."""
    if x_init is None:
        return sde.prior_sample(key, shape)
    return jnp.asarray(x_init, dtype=jnp.result_type(float))


def static_signature(*trees: PyTree) -> str:
    """A hashable description of the pytree structures, class names included.

    ``flax.struct`` classes with the same field names have *equal* JAX treedefs
    (e.g. ``ProbabilityFlowEuler()`` and ``ProbabilityFlowHeun()``, or ``VPSDE`` and
    ``SubVPSDE``), so ``eqx.filter_jit`` would reuse one's compiled program for the
    other. Passed as an extra static argument, this string keeps them apart.
    """
    return str(jax.tree_util.tree_structure(trees))


@eqx.filter_jit
def _run(key, model, shape, solver, ts, x_init, return_path, signature):
    # Same key use as the former euler_maruyama / predict_project / probability_flow loops.
    init_key, noise_key = jax.random.split(key)
    x = initial_state(init_key, model.sde, shape, x_init)
    n = ts.shape[0] - 1
    ts = ts.astype(x.dtype)
    keys = jax.random.split(noise_key, n)
    state = solver.init(model, x, ts[0])

    def body(carry, inputs):
        x, state = carry
        t, t_next, k, i = inputs
        x, state = solver.step(model, x, state, Step(t, t_next, i, i == n - 1, k, n))
        return (x, state), (x if return_path else None)

    x0 = x
    (x, state), path = jax.lax.scan(body, (x, state), (ts[:-1], ts[1:], keys, jnp.arange(n)))
    if return_path:
        path = jnp.concatenate([x0[None], path])
    return x, state, path


def sample(
    key: PRNGKey | None,
    sde: SDE,
    model: ScoreModel | ScoreFn,
    shape: Shape,
    solver: Solver,
    grid: TimeGrid,
    *,
    x_init: ArrayLike | None = None,
    return_path: bool = False,
) -> SampleResult:
    """Integrate the reverse process with ``solver`` on ``grid``'s times (one jit-compiled scan).

    Args:
        key: PRNG key (prior draw and the solver's noise); may be ``None`` for a
            deterministic solver given ``x_init``.
        sde: forward SDE (prior at ``T``).
        model: a :class:`~wgdiff.nets.parameterization.ScoreModel` or a score function
            ``(x (n, *event), t (n,)) -> (n, *event)``.
        shape: ``(n, *event)``.
        solver: a :class:`Solver`.
        grid: a :class:`~wgdiff.samplers.grids.TimeGrid`; starts at ``T`` unless
            ``x_init`` is given.
        x_init: optional ``(n, *event)`` start at the grid's first time.
        return_path: also keep the states at the ``N + 1`` grid times in
            ``stats["path"]``, ``(N + 1, n, *event)``, and the times in ``stats["times"]``.

    Returns:
        :class:`SampleResult` ``(x, nfe, stats)``.

    Parameters inside ``model`` (a ``Partial`` or a ``ScoreModel``) are traced, so a
    second call with new parameters of the same shapes reuses the compiled program.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a wgdiff.sde.SDE, got {type(sde).__name__}")
    if not isinstance(solver, Solver):
        raise TypeError(f"solver must be a wgdiff.samplers.Solver, got {type(solver).__name__}")
    if not isinstance(grid, TimeGrid):
        raise TypeError(f"grid must be a wgdiff.samplers.TimeGrid, got {type(grid).__name__}")
    model = as_score_model(model, sde)
    shape = check_shape_tuple(shape)
    if x_init is not None:
        if tuple(np.shape(x_init)) != shape:
            raise ValueError(f"x_init must have shape {shape}, got {np.shape(x_init)}")
        check_finite(x_init, "x_init")
    ts = grid.times(sde)
    n_steps = int(ts.shape[0]) - 1
    if n_steps < solver.min_steps:
        raise ValueError(
            f"grid has {n_steps} steps; {type(solver).__name__} needs at least {solver.min_steps}"
        )
    if x_init is None and float(ts[0]) < sde.T * (1 - 1e-6):
        raise ValueError(
            f"grid starts at t = {float(ts[0])} < T = {sde.T}: pass x_init "
            "(the prior is the law at T)"
        )
    if key is None:
        if solver.stochastic:
            raise ValueError(f"key is None, but {type(solver).__name__} is stochastic")
        if x_init is None:
            raise ValueError("key is None: a key is needed to draw the prior (or pass x_init)")
        key = jax.random.key(0)  # never used for noise: the solver is deterministic
    x, state, path = _run(
        key, model, shape, solver, ts, x_init, bool(return_path), static_signature(model, solver)
    )
    stats = solver.summarize(state, n_steps)
    stats.update(solver=type(solver).__name__, grid=type(grid).__name__, n_steps=n_steps)
    if return_path:
        stats.update(path=path, times=ts)
    return SampleResult(x, stats["nfe"], stats)


__all__ = [
    "SampleResult",
    "Solver",
    "Step",
    "full_time",
    "initial_state",
    "sample",
    "static_signature",
]
