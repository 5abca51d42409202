"""diffrax inside the solver engine (``Diffrax``), adaptive ODE / SDE sampling, likelihoods.

``Diffrax(solver, rtol, atol)`` wraps any diffrax ODE solver as a
:class:`~wgdiff.samplers.base.Solver`: each grid interval is one ``diffeqsolve``
of the probability-flow ODE, adaptive (PID controller) when ``rtol``/``atol`` are
given, else one solver step per interval. ``diffrax_solve`` is a wrapper over it
for ``kind="ode"``.

The reverse process runs in ``s = T - t`` so diffrax integrates forward in
``s`` from 0 to ``T - eps``: for ``y(s) = x(T - s)``,

- probability-flow ODE: ``dy/ds = -v(y, T - s)``, ``v = f - g^2 s_theta / 2``;
- reverse SDE: ``dy = -[f - g^2 s_theta](y, T - s) ds + g(T - s) dW_s``
  (additive noise, so additive-noise stochastic Runge-Kutta solvers apply).

Each example is solved on its own (``jax.vmap`` over the batch), so adaptive
steps follow each trajectory. NFE is the number of score evaluations per
example: stages per step times steps (accepted and rejected), plus the
first-same-as-last initial evaluation for Tsit5 / Dopri5.

Example:
    >>> import jax
    >>> from wgdiff.sde import VPSDE
    >>> x, stats = diffrax_solve(jax.random.key(0), VPSDE(), lambda x, t: -x, (256, 2))
    >>> x.shape, stats["nfe"] > 0
    ((256, 2), True)
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.tree_util import Partial

from wgdiff._checks import check_finite, check_positive_int
from wgdiff._types import Array, ArrayLike, PRNGKey, PyTree, ScoreFn, Shape
from wgdiff.losses.score_matching import DIVERGENCES
from wgdiff.nets.parameterization import ScoreModel, as_score_model
from wgdiff.samplers._common import as_pytree_callable, check_sampler_args
from wgdiff.samplers.base import Solver, Step, initial_state, sample, static_signature
from wgdiff.samplers.grids import ArrayGrid, UniformGrid
from wgdiff.sde import SDE

KINDS = ("ode", "sde")


def _dx():
    """diffrax, imported on first use (it and lineax cost ~1 s of ``import wgdiff.samplers``)."""
    return importlib.import_module("diffrax")


def _tsit5():
    return _dx().Tsit5()


_DEFAULT_TOL = {"ode": 1e-5, "sde": 1e-2}
# name -> (diffrax solver class name, score evaluations per step, extra initial evaluations)
ODE_SOLVERS = {
    "tsit5": ("Tsit5", 6, 1),
    "dopri5": ("Dopri5", 6, 1),
    "heun": ("Heun", 2, 0),
    "euler": ("Euler", 1, 0),
}
SDE_SOLVERS = {
    "spark": ("SPaRK", 3, 0),  # embedded error estimate: adaptive steps
    "shark": ("ShARK", 2, 0),  # no error estimate: fixed steps
    "sea": ("SEA", 1, 0),
    "euler": ("Euler", 1, 0),
}


def _evaluations(solver) -> tuple[int, int]:
    """(vector-field evaluations per diffrax step, extra initial evaluations per solve)."""
    tableau = getattr(solver, "tableau", None)
    if tableau is None:
        return 1, 0  # Euler-type single-stage solvers
    stages = len(tableau.c) + 1
    return (stages - 1, 1) if tableau.fsal else (stages, 0)


@struct.dataclass
class Diffrax(Solver):
    """Any diffrax ODE solver on the probability-flow ODE, one ``diffeqsolve`` per grid interval.

    Each example is integrated on its own (``jax.vmap``), so adaptive steps follow each
    trajectory. With ``rtol``/``atol`` the step size is controlled by a PID controller
    (first trial step: the interval / 64); without, each interval is one step of
    ``solver`` (e.g. ``diffrax.Heun()`` on a ``KarrasGrid``). NFE: stages per step
    times steps (accepted and rejected) plus the first-same-as-last evaluation of
    each solve, averaged over examples; ``stats`` also has ``nfe_max``, ``num_steps``
    and ``success``.

    Attributes:
        solver: a diffrax ODE solver instance (default ``diffrax.Tsit5()``).
        rtol, atol: tolerances (both or neither).
        max_steps: diffrax step budget per interval and example.
    """

    solver: object = struct.field(pytree_node=False, default_factory=_tsit5)
    rtol: float | None = struct.field(pytree_node=False, default=None)
    atol: float | None = struct.field(pytree_node=False, default=None)
    max_steps: int = struct.field(pytree_node=False, default=16_384)

    def __post_init__(self) -> None:
        diffrax = _dx()
        if not isinstance(self.solver, diffrax.AbstractSolver):
            raise TypeError(f"solver must be a diffrax solver, got {type(self.solver).__name__}")
        if (self.rtol is None) != (self.atol is None):
            raise ValueError("rtol and atol must be given together (adaptive) or not at all")
        check_positive_int(self.max_steps, "max_steps")
        if self.adaptive and _evaluations(self.solver) == (1, 0):
            raise ValueError(
                f"solver {type(self.solver).__name__} has no error estimate; drop rtol/atol"
            )

    @property
    def adaptive(self) -> bool:
        return self.rtol is not None

    @property
    def order(self) -> int:
        return self.solver.order(_dx().ODETerm(lambda t, y, args: y))

    @property
    def nfe_per_step(self) -> int:
        return _evaluations(self.solver)[0]

    def init(self, model: ScoreModel, x: Array, t0: Array) -> PyTree:
        n = x.shape[0]
        return jnp.zeros((n,), jnp.int32), jnp.ones((n,), bool)

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        diffrax = _dx()
        sde, event = model.sde, x.shape[1:]
        T = jnp.asarray(sde.T, x.dtype)

        def field(s, y, args):
            v = model.velocity(y.reshape((1,) + event), jnp.reshape(T - s, (1,)))
            return -v.reshape(-1)

        s0, s1 = T - step.t, T - step.t_next
        if self.adaptive:
            controller = diffrax.PIDController(rtol=self.rtol, atol=self.atol)
            dt0 = (s1 - s0) / 64
        else:
            controller, dt0 = diffrax.ConstantStepSize(), s1 - s0

        def solve_one(y0):
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(field),
                self.solver,
                s0,
                s1,
                dt0,
                y0,
                stepsize_controller=controller,
                max_steps=self.max_steps,
                saveat=diffrax.SaveAt(t1=True),
            )
            return sol.ys[0], sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful

        ys, n_steps, ok = jax.vmap(solve_one)(x.reshape(x.shape[0], -1))
        steps, success = state
        return ys.reshape(x.shape), (steps + n_steps, success & ok)

    def nfe(self, n_steps: int) -> int:
        raise TypeError("Diffrax's NFE is only known after the solve: read SampleResult.nfe")

    def summarize(self, state: PyTree, n_steps: int) -> dict:
        steps, ok = (np.asarray(v) for v in state)
        per_step, extra = _evaluations(self.solver)
        nfe = per_step * steps.astype(np.int64) + extra * n_steps
        return {
            "nfe": float(nfe.mean()),
            "nfe_max": int(nfe.max()),
            "num_steps": float(steps.mean()),
            "success": bool(ok.all()),
        }


@eqx.filter_jit
def _solve_sde(
    key, sde, score_fn, shape, solver_name, rtol, atol, n_steps, eps, x_init, max_steps, signature
):
    """The reverse SDE with a diffrax SDE solver, each example on its own Brownian path."""
    diffrax = _dx()
    lineax = importlib.import_module("lineax")
    init_key, bm_key = jax.random.split(key)
    x = initial_state(init_key, sde, shape, x_init)
    span = sde.T - eps
    if n_steps is None:
        controller, dt0 = diffrax.PIDController(rtol=rtol, atol=atol), span / 64
    else:
        controller, dt0 = diffrax.ConstantStepSize(), span / n_steps

    def sde_drift(s, y, args):
        return -sde.reverse_drift(score_fn, y[None], jnp.reshape(sde.T - s, (1,)), 1.0)[0]

    def sde_diffusion(s, y, args):
        return sde.diffusion(sde.T - s) * jnp.ones_like(y)

    def solve_one(y0, k):
        levy = (
            diffrax.SpaceTimeLevyArea
            if solver_name in ("spark", "shark", "sea")
            else diffrax.BrownianIncrement
        )
        bm = diffrax.VirtualBrownianTree(
            0.0, span, tol=span / 4096, shape=y0.shape, key=k, levy_area=levy
        )
        # Diagonal (elementwise) noise: lineax operator, the form diffrax >= 0.7 expects.
        diffusion = diffrax.ControlTerm(
            lambda s, y, a: lineax.DiagonalLinearOperator(sde_diffusion(s, y, a)), bm
        )
        terms = diffrax.MultiTerm(diffrax.ODETerm(sde_drift), diffusion)
        sol = diffrax.diffeqsolve(
            terms,
            getattr(diffrax, SDE_SOLVERS[solver_name][0])(),
            0.0,
            span,
            dt0,
            y0,
            stepsize_controller=controller,
            max_steps=max_steps,
            saveat=diffrax.SaveAt(t1=True),
        )
        return sol.ys[0], sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful

    flat = x.reshape(x.shape[0], -1)
    keys = jax.random.split(bm_key, x.shape[0])
    ys, steps, ok = jax.vmap(solve_one)(flat, keys)
    return ys.reshape(x.shape), steps, ok


def _apply_flat(score_fn, event, y, t):
    """Score on flattened examples so diffrax's state is a vector."""
    n = y.shape[0]
    return score_fn(y.reshape((n,) + event), t).reshape(n, -1)


def diffrax_solve(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    shape: Shape,
    *,
    kind: str = "ode",
    solver: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    n_steps: int | None = None,
    eps: float = 1e-3,
    x_init: ArrayLike | None = None,
    max_steps: int = 16_384,
) -> tuple[Array, dict]:
    """Sample by solving the probability-flow ODE or the reverse SDE with diffrax.

    Args:
        key: PRNG key (prior draw and, for SDEs, the Brownian paths).
        sde: forward SDE.
        score_fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        shape: ``(n, *event)``.
        kind: ``"ode"`` (default solver ``"tsit5"``; also ``"dopri5"``, ``"heun"``,
            ``"euler"``) or ``"sde"`` (default ``"spark"`` adaptive, or ``"shark"``
            when ``n_steps`` is given; also ``"sea"``, ``"euler"``).
        rtol, atol: PID controller tolerances for adaptive solves; default ``1e-5``
            for ODEs and ``1e-2`` for SDEs (strong error of a Brownian path:
            tighter tolerances cost thousands of steps per example).
        n_steps: fixed number of uniform steps instead of adaptive stepping.
        eps: final time.
        x_init: optional ``(n, *event)`` start at ``t = T``.
        max_steps: diffrax step budget per example.

    Returns:
        ``(x, stats)``: samples ``(n, *event)`` and a dict with ``nfe`` (mean score
        evaluations per example), ``nfe_max``, ``num_steps`` (mean), ``solver`` and
        ``success`` (all examples solved within ``max_steps``).
    """
    shape, n_steps = check_sampler_args(sde, shape, n_steps, eps, x_init)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    table = ODE_SOLVERS if kind == "ode" else SDE_SOLVERS
    if solver is None:
        solver = "tsit5" if kind == "ode" else ("spark" if n_steps is None else "shark")
    if solver not in table:
        raise ValueError(f"solver for kind={kind!r} must be one of {tuple(table)}, got {solver!r}")
    if n_steps is None and table[solver][0] in ("Euler", "ShARK", "SEA"):
        raise ValueError(f"solver {solver!r} has no error estimate; pass n_steps for fixed steps")
    max_steps = check_positive_int(max_steps, "max_steps")
    default_tol = _DEFAULT_TOL[kind]
    rtol = default_tol if rtol is None else rtol
    atol = default_tol if atol is None else atol
    if kind == "ode":
        adaptive = n_steps is None
        adapter = Diffrax(
            getattr(_dx(), table[solver][0])(),
            float(rtol) if adaptive else None,
            float(atol) if adaptive else None,
            max_steps,
        )
        grid = ArrayGrid((sde.T, float(eps))) if adaptive else UniformGrid(n_steps, float(eps))
        res = sample(key, sde, as_pytree_callable(score_fn), shape, adapter, grid, x_init=x_init)
        stats = {k: res.stats[k] for k in ("nfe", "nfe_max", "num_steps", "success")}
        return res.x, {**stats, "solver": solver}
    # A Partial (a pytree) rather than a closure, so a second call hits the jit cache.
    flat_score = Partial(_apply_flat, as_pytree_callable(score_fn), shape[1:])
    flat_shape = (shape[0], math.prod(shape[1:]))
    flat_init = None if x_init is None else jnp.reshape(jnp.asarray(x_init), flat_shape)
    ys, steps, ok = _solve_sde(
        key,
        sde,
        flat_score,
        flat_shape,
        solver,
        float(rtol),
        float(atol),
        n_steps,
        float(eps),
        flat_init,
        max_steps,
        static_signature(sde),
    )
    _, per_step, extra = table[solver]
    steps = np.asarray(steps, dtype=np.int64)
    nfe = per_step * steps + extra
    stats = {
        "nfe": float(nfe.mean()),
        "nfe_max": int(nfe.max()),
        "num_steps": float(steps.mean()),
        "solver": solver,
        "success": bool(jnp.all(ok)),
    }
    return ys.reshape(shape), stats


@eqx.filter_jit
def _log_likelihood(key, model, x, trace, rtol, atol, eps, max_steps, prior_logp, signature):
    diffrax = _dx()
    sde = model.sde

    def velocity(y, t):
        return model.velocity(y[None], jnp.reshape(t, (1,)))[0]

    def field(t, state, probe):
        y, _ = state
        if trace == "exact":
            v, jac = velocity(y, t), jax.jacfwd(lambda z: velocity(z, t))(y)
            return v, jnp.trace(jac)
        v, jv = jax.jvp(lambda z: velocity(z, t), (y,), (probe,))
        return v, jnp.sum(jv * probe)

    def solve_one(y0, k):
        probe = jax.random.rademacher(k, y0.shape, dtype=y0.dtype)
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            eps,
            sde.T,
            (sde.T - eps) / 64,
            (y0, jnp.zeros((), y0.dtype)),
            args=probe,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
            saveat=diffrax.SaveAt(t1=True),
        )
        (yT,), (div_integral,) = sol.ys
        return yT, div_integral

    keys = jax.random.split(key, x.shape[0])
    yT, div_integral = jax.vmap(solve_one)(x, keys)
    base = sde.prior_logp(yT) if prior_logp is None else prior_logp(yT)
    return base + div_integral


def log_likelihood(
    key: PRNGKey,
    sde: SDE,
    model: ScoreModel | ScoreFn,
    x: ArrayLike,
    *,
    trace: str = "exact",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    max_steps: int = 16_384,
    prior_logp: Callable[[Array], Array] | None = None,
) -> Array:
    """Log-density of ``x`` under the probability-flow ODE model (Song et al. 2021, sec D.2).

    Integrates ``dx/dt = v(x, t)`` and ``d log p/dt = -div v`` from ``eps`` to
    ``T``: ``log p_eps(x) = log p_T(x_T) + int_eps^T div v(x_t, t) dt``, with the
    divergence exact (``trace="exact"``, ``d`` forward passes, small ``d``) or a
    Skilling-Hutchinson estimate with one Rademacher probe per example.

    Args:
        key: PRNG key (Hutchinson probes).
        sde: forward SDE.
        model: a score function ``(x, t) -> like x`` or a ``ScoreModel`` (``v`` is its
            ``velocity``): e.g. a flow-matching velocity,
            ``ScoreModel.from_velocity(v, RectifiedFlowSDE(), flow_time=True)``.
        x: ``(n, d)`` points (flattened event).
        eps: start time, in ``(0, T)`` (``[0, T)`` for SDEs with ``allows_zero_time``,
            e.g. ``RectifiedFlowSDE``).
        prior_logp: ``(n, d) -> (n,)`` log-density at ``T`` (default ``sde.prior_logp``).

    Returns:
        ``(n,)`` log-likelihoods in nats.
    """
    if trace not in DIVERGENCES:
        raise ValueError(f"trace must be one of {DIVERGENCES}, got {trace!r}")
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, d), got shape {x.shape}")
    check_finite(x, "x")
    lowest = 0.0 if sde.allows_zero_time else np.nextafter(0.0, 1.0)
    if not (lowest <= float(eps) < sde.T):
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps!r}")
    if prior_logp is not None and not callable(prior_logp):
        raise TypeError(f"prior_logp must be callable (n, d) -> (n,), got {prior_logp!r}")
    model = as_score_model(model, sde)
    return _log_likelihood(
        key,
        model,
        x,
        trace,
        float(rtol),
        float(atol),
        float(eps),
        check_positive_int(max_steps, "max_steps"),
        None if prior_logp is None else as_pytree_callable(prior_logp),
        static_signature(model),
    )


__all__ = ["KINDS", "ODE_SOLVERS", "SDE_SOLVERS", "Diffrax", "diffrax_solve", "log_likelihood"]
