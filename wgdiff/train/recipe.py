"""``fit_score_model``: the one recipe that trains a score model on data.

It wires the library's parts in the usual order -- init the net, optimizer with a
learning-rate schedule, the denoising score matching objective (or another
``objective(sde, apply)``), the jitted (or data-parallel) train step with EMA and an
optional post-update transform, and :func:`wgdiff.train.fit` with its budget,
evaluation callbacks and checkpoints -- and returns the trained score function.
The command line (``wgdiff train``, ``wgdiff demo``) and the experiments use it;
use :func:`wgdiff.train.fit` directly for objectives that are not a score model's.

Example:
    >>> import jax
    >>> from wgdiff.nets import ScoreMLP
    >>> from wgdiff.sde import VPSDE
    >>> data = jax.random.normal(jax.random.key(0), (256, 2))
    >>> result = fit_score_model(VPSDE(), ScoreMLP(features=(16,)), data,
    ...                          key=jax.random.key(1), n_steps=20, batch_size=32)
    >>> result.score_fn(data[:4], 0.5).shape, int(result.state.step)
    ((4, 2), 20)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from wgdiff._checks import check_positive_int
from wgdiff._types import Array, PyTree, ScoreFn
from wgdiff.sde import SDE
from wgdiff.train.loop import dataset_sampler, fit
from wgdiff.train.parallel import data_mesh, make_parallel_train_step
from wgdiff.train.state import (
    DEFAULT_LEARNING_RATE,
    TrainState,
    create_train_state,
    default_optimizer,
    make_train_step,
)

OUTPUTS = ("score", "noise")
LR_SCHEDULES = ("cosine", "constant")

ApplyFn = Callable[[PyTree, Array, Array], Array]
Objective = Callable[[SDE, ApplyFn], Callable[[PyTree, Array, Array], Array]]


@dataclasses.dataclass(frozen=True)
class ScoreModelFit:
    """What :func:`fit_score_model` returns.

    Attributes:
        apply: ``apply(params, x, t) -> score`` (the net's output converted to a score).
        state: the final ``TrainState`` (``state.step`` steps done).
        history: the logged rows of :func:`wgdiff.train.fit`.
    """

    apply: ApplyFn
    state: TrainState
    history: list[dict]

    @property
    def params(self) -> PyTree:
        """The EMA parameters (what sampling uses)."""
        return self.state.ema_params

    @property
    def score_fn(self) -> ScoreFn:
        """``score_fn(x, t)`` with the EMA parameters."""
        return functools.partial(self.apply, self.state.ema_params)


def _score_apply(model_apply: ApplyFn, sde: SDE, output: str) -> ApplyFn:
    if output == "score":
        return model_apply
    from wgdiff.nets import std_scaled_apply

    return std_scaled_apply(model_apply, sde)


def _optimizer(learning_rate: float, lr_schedule: str, n_steps: int, warmup_steps: int):
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
    return default_optimizer(
        learning_rate,
        decay_steps=n_steps if lr_schedule == "cosine" else None,
        warmup_steps=warmup_steps,
    )


def fit_score_model(
    sde: SDE,
    model: Any,
    data: Array | Callable[[Array], Array],
    *,
    key: Array,
    n_steps: int,
    batch_size: int = 256,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    lr_schedule: str = "cosine",
    warmup_steps: int = 0,
    optimizer: optax.GradientTransformation | None = None,
    output: str = "score",
    weighting: str = "likelihood",
    t_eps: float = 1e-5,
    objective: Objective | None = None,
    ema_decay: float = 0.999,
    post_update: Callable[[PyTree], PyTree] | None = None,
    params: PyTree | None = None,
    budget_s: float | None = None,
    clock: str = "wall",
    evaluate: Callable[[ScoreFn, TrainState], dict | None] | None = None,
    evaluate_every: int | None = None,
    evaluate_at_s: Sequence[float] | None = None,
    run_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    config: dict | None = None,
    log_every: int = 100,
    progress: bool = False,
    mesh: Mesh | str | None = "auto",
) -> ScoreModelFit:
    """Train ``model`` as a score model of ``data`` for the forward ``sde``.

    Args:
        sde: forward SDE (``wgdiff.sde``).
        model: a Flax module called as ``model.apply(params, x, t)``.
        data: ``(n, *event)`` training set (batches drawn with replacement), or a
            ``sample_batch(key) -> (batch, *event)`` function.
        key: PRNG key; split into init, step and batch keys.
        n_steps: number of train steps (the upper limit when ``budget_s`` is given).
        batch_size: rows per step (ignored when ``data`` is a function).
        learning_rate: peak learning rate of AdamW (gradient norm clipped at 1).
        lr_schedule: ``"cosine"`` (decay to 5% over ``n_steps``) or ``"constant"``.
        warmup_steps: linear warm-up from 0 over this many steps.
        optimizer: an optax transformation replacing the three options above.
        output: what the net predicts: ``"score"`` (used as is) or ``"noise"`` (the
            net's output divided by the marginal std ``s(t)``, ``std_scaled_apply``:
            the target stays O(1) near ``t = 0``).
        weighting: DSM weighting ``lambda(t)`` (``wgdiff.losses.WEIGHTINGS``).
        t_eps: smallest training time; ``t ~ U(t_eps, T)``.
        objective: ``objective(sde, apply) -> loss_fn(params, key, batch)`` replacing
            DSM (e.g. ``wgdiff.losses.wgf_flow_matching_objective``); ``weighting``
            and ``t_eps`` are then unused.
        ema_decay: EMA factor in ``[0, 1)``; ``0`` keeps the EMA equal to the parameters.
        post_update: ``params -> params`` after every update (``clip_params``,
            ``spectral_normalize``, ``chain_post_updates``).
        params: initial parameters (default ``model.init`` on two data rows).
        budget_s, clock: stop when the training clock reaches ``budget_s``
            (:func:`wgdiff.train.fit`).
        evaluate: ``evaluate(score_fn, state) -> dict`` with ``score_fn`` on the current
            EMA parameters; see ``fit`` for when it runs.
        evaluate_every, evaluate_at_s: when ``evaluate`` runs (``fit``).
        run_dir, checkpoint_every, config, log_every, progress: as in ``fit``.
        mesh: ``"auto"``: data-parallel over all devices when there are several;
            a ``("data",)`` mesh; or ``None`` for a single-device step.

    Returns:
        :class:`ScoreModelFit` (``apply``, ``state``, ``history``, ``score_fn``, ``params``).

    Raises:
        ValueError / TypeError: bad arguments, named.
    """
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a wgdiff.sde.SDE, got {type(sde).__name__}")
    if not hasattr(model, "apply"):
        raise TypeError(f"model must be a Flax module with .apply, got {type(model).__name__}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    n_steps = check_positive_int(n_steps, "n_steps")
    sample_batch = data if callable(data) else dataset_sampler(data, batch_size)
    k_init, k_state, k_data = jax.random.split(key, 3)
    if params is None:
        example = sample_batch(k_init) if callable(data) else jnp.asarray(data)
        rows = example[:2]
        params = model.init(k_init, rows, jnp.full((rows.shape[0],), 0.5 * sde.T, rows.dtype))
    if optimizer is None:
        optimizer = _optimizer(learning_rate, lr_schedule, n_steps, warmup_steps)
    apply = _score_apply(model.apply, sde, output)
    if objective is None:
        from wgdiff.losses import dsm_objective

        loss_fn = dsm_objective(sde, apply, weighting=weighting, eps=t_eps)
    else:
        loss_fn = objective(sde, apply)
    if isinstance(mesh, str):
        if mesh != "auto":
            raise ValueError(f"mesh must be 'auto', a Mesh or None, got {mesh!r}")
        mesh = data_mesh() if jax.device_count() > 1 else None
    if mesh is None:
        step = make_train_step(loss_fn, optimizer, ema_decay=ema_decay, post_update=post_update)
    else:
        step = make_parallel_train_step(
            loss_fn, optimizer, mesh=mesh, ema_decay=ema_decay, post_update=post_update
        )
    if post_update is not None:
        params = post_update(params)
    state = create_train_state(k_state, params, optimizer)
    state_evaluate = None
    if evaluate is not None:
        state_evaluate = lambda s: evaluate(functools.partial(apply, s.ema_params), s)
    state, history = fit(
        state,
        step,
        sample_batch,
        n_steps,
        data_key=k_data,
        run_dir=run_dir,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        progress=progress,
        config=config,
        mesh=mesh,
        budget_s=budget_s,
        clock=clock,
        evaluate=state_evaluate,
        evaluate_every=evaluate_every,
        evaluate_at_s=evaluate_at_s,
    )
    return ScoreModelFit(apply=apply, state=state, history=history)


__all__ = ["LR_SCHEDULES", "OUTPUTS", "ScoreModelFit", "fit_score_model"]
