r"""Predict-Project sampling (Ghimire et al. Alg. 1) and an automatic ``delta_mu``.

In forward time with ``h = (T - eps)/N`` and ``b(t) = g(t)^2 / 2`` (Ghimire's
``beta``; VP: half of Song's ``beta``), each step from ``t`` to ``t' = t - h`` is

    x_pred = x - h [f(x, t) - g(t)^2 s(x, t)]                    (Alg. 1 line 4, eq. 29)
    x_proj = x_pred + sqrt(b(t)) T(x_pred, t', h) delta_mu h       (line 5, eq. 36)
    x      = x_proj + g(t) sqrt(h) z                               (line 7)

Alg. 1 line 7 prints the noise as ``sqrt(2 beta) z``; the Euler-Maruyama step
it discretizes (eq. 8-9) has ``sqrt(2 beta delta-tau) z``, which is what we use.
As in ``euler_maruyama`` no noise is added on the last step. With
``delta_mu = 0`` the sampler is exactly ``euler_maruyama(..., alpha=1)``.

``delta_mu``: the paper tunes it by hand (app. B.1: ``N = 20 -> 1``, ``40 -> 0.4``,
``100 -> 0.1``, ``PAPER_DELTA_MU``) and leaves its estimation "from the training
loss ``||T||^2``" to future work. ``auto_delta_mu`` is our rule for it:

    delta_mu(N) = min(1, | 1 - E||T(x_pred, t', h_N)||^2 / E||T(x_pred, t', h_ref)||^2 |)

the relative change of the projection's squared norm, the ``||T||^2`` term of the
training loss, between step ``h_N`` and a fine reference step ``h_ref`` (``N = 1000``),
evaluated on training data with the trained nets. It vanishes as ``N -> inf``
(fine steps need no projection) and grows with the discretization error of
the predict step. For a Gaussian target with the exact score and the optimal
``T*`` (closed form in ``wgdiff.losses.projection``) it gives about 0.57, 0.31 and
0.12 at ``N = 20, 40, 100`` for the default VP SDE, almost independently of the
Gaussian's mean and variance; the paper's hand-tuned values are 1, 0.4, 0.1.

Example (exact score of N(0, I); with delta_mu = 0 this is Euler-Maruyama):
    >>> import jax, jax.numpy as jnp
    >>> from wgdiff.sde import VPSDE
    >>> proj = lambda y, t, h: -0.1 * y
    >>> x = predict_project(jax.random.key(0), VPSDE(), lambda x, t: -x, proj, (1000, 2), 20,
    ...                     delta_mu=1.0)
    >>> x.shape
    (1000, 2)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from wgdiff._checks import check_positive_int
from wgdiff._types import Array, ArrayLike, PRNGKey, ProjectFn, PyTree, ScoreFn, Shape
from wgdiff.losses.projection import ghimire_beta, predict_step, projection_terms
from wgdiff.nets.parameterization import ScoreModel
from wgdiff.samplers._common import as_pytree_callable, check_sampler_args, sample_uniform
from wgdiff.samplers.base import Solver, Step, full_time
from wgdiff.sde import SDE

#: Ghimire et al. app. B.1, hand-tuned on CelebA/LSUN/SVHN.
PAPER_DELTA_MU = {20: 1.0, 40: 0.4, 100: 0.1}


@struct.dataclass
class PredictProject(Solver):
    """Ghimire et al. Alg. 1 as a solver: predict (eq. 29), project (eq. 36), add noise (line 7).

    See the module docstring for the step. On a non-uniform grid ``h = t - t_next``
    is the step's own length (the projection net receives it). Weak order 1,
    one score and one projection evaluation per step.

    Attributes:
        project_fn: ``(y (n, *event), t' (n,), h (n,)) -> (n, *event)``.
        delta_mu: projection step factor ``>= 0`` (a traced leaf: sweeping it
            reuses one compiled program when given as an array).
    """

    project_fn: ProjectFn
    delta_mu: float | jnp.ndarray = 0.0
    order = 1
    nfe_per_step = 1
    stochastic = True

    def __post_init__(self) -> None:
        if not callable(self.project_fn):
            raise TypeError("project_fn must be callable (y, t, h) -> like y")
        if isinstance(self.delta_mu, (int, float)) and not float(self.delta_mu) >= 0.0:
            raise ValueError(f"delta_mu must be >= 0, got {self.delta_mu!r}")

    def step(self, model: ScoreModel, x: Array, state: PyTree, step: Step) -> tuple[Array, PyTree]:
        sde = model.sde
        h = step.t - step.t_next
        x_pred = predict_step(sde, model.score, x, full_time(step.t, x), h)
        push = self.project_fn(x_pred, full_time(step.t_next, x), full_time(h, x))
        mean = x_pred + jnp.sqrt(ghimire_beta(sde, step.t)) * self.delta_mu * h * push
        noise = sde.diffusion(step.t) * jnp.sqrt(h) * jax.random.normal(step.key, x.shape, x.dtype)
        return jnp.where(step.last, mean, mean + noise), state

    def summarize(self, state: PyTree, n_steps: int) -> dict:
        return {"nfe": n_steps, "projection_evals": n_steps}


def predict_project(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    project_fn: ProjectFn,
    shape: Shape,
    n_steps: int,
    *,
    delta_mu: float,
    eps: float = 1e-3,
    x_init: ArrayLike | None = None,
    return_info: bool = False,
) -> Array | tuple[Array, dict]:
    """Predict-Project sampler (Ghimire Alg. 1) on a uniform grid from ``T`` to ``eps``.

    A wrapper: ``sample(key, sde, score_fn, shape, PredictProject(project_fn,
    delta_mu), UniformGrid(n_steps, eps), x_init=x_init)``.

    Args:
        key: PRNG key.
        sde: forward SDE.
        score_fn: ``(x (n, *event), t (n,)) -> (n, *event)``.
        project_fn: ``(y (n, *event), t' (n,), h (n,)) -> (n, *event)``, the trained
            projection net (see ``wgdiff.losses.projection``).
        shape: ``(n, *event)``.
        n_steps: ``N``.
        delta_mu: projection step factor ``>= 0`` (``PAPER_DELTA_MU`` or ``auto_delta_mu``).
        eps: final time.
        x_init: optional ``(n, *event)`` start at ``t = T``.
        return_info: also return ``{"nfe": N, "projection_evals": N}``; ``nfe``
            counts score evaluations as in the other samplers, each step also
            calls the projection net once.

    Returns:
        ``(n, *event)`` samples (and the info dict).
    """
    shape, n_steps = check_sampler_args(sde, shape, n_steps, eps, x_init)
    if not callable(project_fn):
        raise TypeError("project_fn must be callable (y, t, h) -> like y")
    if not float(delta_mu) >= 0.0:
        raise ValueError(f"delta_mu must be >= 0, got {delta_mu!r}")
    # delta_mu goes in as an array so that sweeping it reuses one compiled program.
    solver = PredictProject(
        as_pytree_callable(project_fn), jnp.asarray(delta_mu, jnp.result_type(float))
    )
    res = sample_uniform(key, sde, score_fn, shape, solver, n_steps, eps, x_init)
    if return_info:
        return res.x, {"nfe": int(n_steps), "projection_evals": int(n_steps)}
    return res.x


def projection_norms(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    project_fn: ProjectFn,
    x0: ArrayLike,
    n_steps: Sequence[int],
    *,
    eps: float = 1e-3,
    n_repeats: int = 4,
) -> dict[int, float]:
    """``E ||T(x_pred, t', h_N)||^2`` for each ``N`` in ``n_steps`` (common random numbers).

    Args:
        x0: ``(n, *event)`` data; every ``N`` uses the same keys, so differences
            between ``N`` are not blurred by sampling noise.
        n_repeats: independent time/noise draws per data point.

    Returns:
        dict ``N -> float``.
    """
    out = {}
    keys = jax.random.split(key, n_repeats)
    for n in n_steps:
        check_positive_int(int(n), "n_steps")
        values = [
            jnp.mean(
                projection_terms(k, sde, score_fn, project_fn, x0, n_steps=int(n), eps=eps)["norm"]
            )
            for k in keys
        ]
        out[int(n)] = float(jnp.mean(jnp.stack(values)))
    return out


def auto_delta_mu(
    key: PRNGKey,
    sde: SDE,
    score_fn: ScoreFn,
    project_fn: ProjectFn,
    x0: ArrayLike,
    n_steps: Sequence[int],
    *,
    reference_steps: int = 1000,
    eps: float = 1e-3,
    n_repeats: int = 4,
) -> dict[int, float]:
    """``delta_mu(N) = min(1, |1 - E||T_N||^2 / E||T_ref||^2|)`` from the trained nets.

    See the module docstring; ``x0`` is a batch of training data.

    Returns:
        dict ``N -> delta_mu`` for each ``N`` in ``n_steps``.
    """
    check_positive_int(reference_steps, "reference_steps")
    norms = projection_norms(
        key,
        sde,
        score_fn,
        project_fn,
        x0,
        list(n_steps) + [reference_steps],
        eps=eps,
        n_repeats=n_repeats,
    )
    ref = norms[reference_steps]
    if not ref > 0:
        raise ValueError(
            "the projection net is identically zero at the reference step; "
            "train it before estimating delta_mu"
        )
    return {int(n): float(min(1.0, abs(1.0 - norms[int(n)] / ref))) for n in n_steps}


__all__ = [
    "PAPER_DELTA_MU",
    "PredictProject",
    "auto_delta_mu",
    "predict_project",
    "projection_norms",
]
