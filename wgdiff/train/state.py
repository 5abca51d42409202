"""Training state and the jit-compiled train step.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> params = {"w": jnp.zeros(3)}
    >>> state = create_train_state(jax.random.key(0), params, optax.sgd(0.1))
    >>> step = make_train_step(lambda p, key, batch: jnp.sum((p["w"] - batch) ** 2),
    ...                        optax.sgd(0.1))
    >>> state, metrics = step(state, jnp.ones(3))
    >>> int(state.step), float(metrics["loss"])
    (1, 3.0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from wgdiff._checks import check_positive_int

DEFAULT_LEARNING_RATE = 1e-3


@struct.dataclass
class TrainState:
    """Everything a run needs to continue: a pytree of arrays, checkpointable as is.

    Attributes:
        params: model parameters.
        opt_state: optimizer state.
        ema_params: exponential moving average of ``params`` (used for sampling).
        step: number of updates done, int32 scalar.
        key: raw ``uint32`` PRNG key data (``jax.random.key_data``) so checkpoints
            stay plain arrays; use ``state.rng()`` for a typed key.
    """

    params: Any
    opt_state: Any
    ema_params: Any
    step: jax.Array
    key: jax.Array

    def rng(self) -> jax.Array:
        return jax.random.wrap_key_data(self.key)


def default_optimizer(
    learning_rate: float = DEFAULT_LEARNING_RATE,
    decay_steps: int | None = None,
    warmup_steps: int = 0,
    *,
    final_fraction: float = 0.05,
    clip_norm: float = 1.0,
    weight_decay: float = 1e-4,
) -> optax.GradientTransformation:
    """AdamW with gradient-norm clipping; optional warm-up and cosine decay.

    Args:
        learning_rate: peak learning rate.
        decay_steps: cosine decay to ``final_fraction`` of the peak over this many
            steps (counted from step 0, warm-up included); ``None`` keeps it constant.
        warmup_steps: linear warm-up from 0 to the peak over this many steps.
        final_fraction: final rate of the cosine decay as a fraction of the peak, in (0, 1].
        clip_norm: global gradient-norm clip (positive).
        weight_decay: AdamW's decoupled weight decay (optax's default 1e-4; 0 is Adam).
    """
    if not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if not 0 < float(final_fraction) <= 1:
        raise ValueError(f"final_fraction must be in (0, 1], got {final_fraction!r}")
    if not float(clip_norm) > 0:
        raise ValueError(f"clip_norm must be positive, got {clip_norm!r}")
    if not float(weight_decay) >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if decay_steps is not None:
        decay_steps = check_positive_int(decay_steps, "decay_steps")
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be an int >= 0, got {warmup_steps!r}")
    if decay_steps is not None and warmup_steps >= decay_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be below decay_steps={decay_steps}")
    if decay_steps is not None:
        schedule = optax.warmup_cosine_decay_schedule(
            0.0 if warmup_steps else learning_rate,
            learning_rate,
            warmup_steps,
            decay_steps,
            end_value=final_fraction * learning_rate,
        )
    elif warmup_steps:
        schedule = optax.join_schedules(
            [
                optax.linear_schedule(0.0, learning_rate, warmup_steps),
                optax.constant_schedule(learning_rate),
            ],
            [warmup_steps],
        )
    else:
        schedule = learning_rate
    return optax.chain(
        optax.clip_by_global_norm(clip_norm), optax.adamw(schedule, weight_decay=weight_decay)
    )


def create_train_state(
    key: jax.Array, params: Any, optimizer: optax.GradientTransformation | None = None
) -> TrainState:
    """Fresh state: optimizer initialised, EMA equal to ``params``, step 0."""
    optimizer = default_optimizer() if optimizer is None else optimizer
    if not isinstance(key, jax.Array) or not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        raise TypeError("key must be a typed PRNG key from jax.random.key(seed)")
    # Copies: the train step donates the state, which must not delete the caller's arrays.
    return TrainState(
        params=jax.tree.map(jnp.copy, params),
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
        step=jnp.zeros((), jnp.int32),
        key=jax.random.key_data(key),
    )


def _check_decay(ema_decay):
    if not 0.0 <= float(ema_decay) < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay!r}")


def apply_update(
    state: TrainState,
    grads: Any,
    optimizer: optax.GradientTransformation,
    ema_decay: float,
    new_key: jax.Array,
    post_update: Callable[[Any], Any] | None = None,
) -> TrainState:
    """One optimizer update, the post-update transform, then the EMA.

    Shared by the single- and multi-device steps. ``post_update`` (``params -> params``,
    ``wgdiff.train.transforms``) acts on the updated parameters before the EMA.
    """
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if post_update is not None:
        params = post_update(params)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
    return TrainState(
        params=params,
        opt_state=opt_state,
        ema_params=ema,
        step=state.step + 1,
        key=jax.random.key_data(new_key),
    )


def train_step_fn(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    ema_decay: float = 0.999,
    has_aux: bool = False,
    post_update: Callable[[Any], Any] | None = None,
) -> Callable:
    """The un-compiled ``step(state, batch) -> (state, metrics)``.

    ``make_train_step`` jits it as is; ``make_parallel_train_step`` jits it with
    data-parallel shardings, so both run exactly the same computation.
    """
    if post_update is not None and not callable(post_update):
        raise TypeError(f"post_update must be a callable params -> params, got {post_update!r}")
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def step(state: TrainState, batch):
        key, sub = jax.random.split(state.rng())
        out, grads = grad_fn(state.params, sub, batch)
        loss, aux = out if has_aux else (out, {})
        metrics = {"loss": loss, **aux}
        return apply_update(state, grads, optimizer, ema_decay, key, post_update), metrics

    return step


def make_train_step(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation | None = None,
    *,
    ema_decay: float = 0.999,
    has_aux: bool = False,
    donate: bool = True,
    post_update: Callable[[Any], Any] | None = None,
) -> Callable:
    """Build ``step(state, batch) -> (state, metrics)``, jit-compiled with the state donated.

    Args:
        loss_fn: ``loss_fn(params, key, batch) -> scalar`` (or ``(scalar, aux dict)``
            with ``has_aux=True``); ``key`` is fresh every step.
        optimizer: optax transformation (default AdamW 1e-3 with clipping).
        ema_decay: EMA factor in ``[0, 1)``.
        has_aux: whether ``loss_fn`` returns auxiliary metrics.
        donate: donate the input state's buffers (the caller must not reuse it).
        post_update: ``params -> params`` applied after every update, before the EMA
            (``clip_params``, ``spectral_normalize``; ``wgdiff.train.transforms``).

    Returns:
        The jitted step; ``metrics`` holds ``loss`` and any aux entries.
    """
    optimizer = default_optimizer() if optimizer is None else optimizer
    _check_decay(ema_decay)
    step = train_step_fn(
        loss_fn, optimizer, ema_decay=ema_decay, has_aux=has_aux, post_update=post_update
    )
    return jax.jit(step, donate_argnums=(0,) if donate else ())


__all__ = [
    "DEFAULT_LEARNING_RATE",
    "TrainState",
    "apply_update",
    "create_train_state",
    "default_optimizer",
    "make_train_step",
    "train_step_fn",
]
