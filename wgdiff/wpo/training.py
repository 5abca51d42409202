"""Training the WPO kernel model: implicit score matching at the terminal time (Zhang Alg. 1).

The only trained object is the Cholesky-factor network ``psi_theta`` of
``wgdiff.nets.cholesky.CholeskyMLP``; the loss is the closed-form ISM of
``wgdiff.wpo.kernel.ism_loss`` at ``t = 0`` (the HJB terminal condition). No
other time needs score matching: Prop. 4.1 gives the score at every time.

Defaults are the authors' settings (papers/README.md): 1000 centres, Adam with
learning rate 2e-3, batch 64, 50 000 steps, ``Gamma = L L^T + 0.01 I``.

Long runs in 6-D (Zhang Fig. 4) need two training-time changes, measured in
``experiments/results/wpo_kernel.json`` (``fig4.scaled_run``):

* ``max_std``: the jitter becomes ``1 / max_std^2``, so ``Gamma = L L^T + I / max_std^2``
  and every kernel's std stays ``<= max_std`` *during* training (the ISM then
  optimizes the other axes given the cap; ``WPOKernelModel.cap_std`` applied only
  after training cannot). Without it the widest kernels reach the jitter floor
  ``1 / sqrt(0.01) = 10`` within 300 steps (median widest std 1.3-4.4 over 2e4 steps).
* ``wpo_optimizer``: gradient clipping, warm-up and cosine decay of Adam's rate,
  and a guard that skips non-finite updates. At the authors' constant 2e-3 the
  2e4-step 6-D run starved a growing share of kernels (0.2% -> 28% by step 15 000)
  and its loss went NaN at step 15 500.

How they were chosen (short runs, 6-D roll, 2000 centres, 6 x 64, 2400 steps, same data
and keys as ``experiments/wpo_kernel.py`` Fig. 4; validation log-likelihood uncapped /
after ``tune_max_std``; also in the README's Zhang Fig. 4 row): max_std 1 +
``wpo_optimizer`` -1.248 / -1.180 (kept); max_std 0.5 + ``wpo_optimizer`` -1.198 /
-1.193 (rejected: a tighter training cap pins every kernel at it and the validated cap
can no longer choose); ``wpo_optimizer`` alone -1.977 / -1.192 (rejected: kernels still
reach std 10 by step 600); max_std 1 with constant-rate Adam -1.268 / -1.200. At this
length the routes differ by <= 0.02 nats after the validated cap; what the training-time
changes buy is a bounded, finite run: in the 2e4-step Fig. 4 run (3000 centres) no
update was skipped, every parameter stayed finite and no kernel exceeded ``max_std``.
Not tried for lack of budget: re-initializing starved kernels, a log-Cholesky net in
training (as a post-hoc ablation it widened more).

The late collapse and its trigger: with the ISM batches drawn from a 47 000-point pool
(64 x 2e4 = 1.28e6 draws, each point ~27 times) the kernels collapsed narrow from step
~1.2e4 (starved share 0.4% -> 94%, median narrowest std 0.07 -> 1e-4, validation
log-likelihood -1.20 -> -7.9). With the same centres, initialization, batch key, optimizer schedule
but a 997 000-point pool (the paper's 1e6 training points; each point
drawn ~1.3 times) nothing collapsed in 2e4 steps (starved 0.3-0.4%, narrowest std
0.069-0.072, validation log-likelihood -1.18 at the end; pool ISM -332 vs validation ISM
-339). A 10 000-point pool (same setting, 6000 steps, ~38 draws per point) shows the
finite-pool overfitting gradually rather than as a jump: ISM on pool points -361 vs
validation points -280 (gap 6 at 1000 steps), narrowest std 0.072 -> 0.055, validation
log-likelihood -1.20 -> -1.23. So the ISM pool must be large against the number of
draws; ``BestValidationCheckpoint`` (``fit_wpo(validation=...)``) keeps whatever
happens late from deciding the model.

As in the authors' code the centres are drawn *independently* of the ISM
batches; ``split_centers`` makes that a disjoint split of one training set. A
centre that is also a batch point would reward ``Gamma_i -> infinity`` there
(the ISM integrand contains ``-tr Gamma_i`` at ``x = Z_i``), a memorizing
direction the disjoint split removes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from wgdiff._checks import check_finite, check_ndim, check_positive, check_positive_int
from wgdiff._types import Array, ArrayLike, PRNGKey, PyTree
from wgdiff.nets.cholesky import CholeskyMLP
from wgdiff.train import (
    TrainState,
    create_train_state,
    dataset_sampler,
    default_optimizer,
    fit,
    make_train_step,
)
from wgdiff.wpo.kernel import DEFAULT_CHUNK_SIZE, ism_loss
from wgdiff.wpo.model import WPOKernelModel

AUTHORS_SETTINGS = {
    "n_centers": 1000,
    "learning_rate": 2e-3,
    "batch_size": 64,
    "n_steps": 50_000,
    "jitter": 0.01,
    "hidden": (64,) * 5,
}


def wpo_optimizer(
    n_steps: int,
    *,
    learning_rate: float = AUTHORS_SETTINGS["learning_rate"],
    warmup_steps: int = 200,
    final_fraction: float = 0.01,
    clip_norm: float = 1.0,
    max_consecutive_nonfinite: int = 10,
) -> optax.GradientTransformation:
    """Adam for long WPO runs: clipped, warmed up, cosine-decayed, skipping non-finite steps.

    The rate rises linearly from 0 to ``learning_rate`` over ``warmup_steps`` and
    decays by a cosine to ``final_fraction * learning_rate`` at ``n_steps``;
    gradients are clipped to global norm ``clip_norm``; an update whose gradient
    is not finite is skipped (``optax.apply_if_finite``, whose state counts the
    skips: ``nonfinite_updates``); after ``max_consecutive_nonfinite`` skips in a
    row the update is applied anyway (optax's rule), so a persistent failure still
    shows as non-finite parameters.

    Args:
        n_steps: length of the run the schedule decays over.
        learning_rate: peak rate (authors' constant rate: 2e-3).
        warmup_steps: linear warm-up length (< ``n_steps``).
        final_fraction: final rate as a fraction of the peak, in (0, 1].
        clip_norm: global gradient-norm clip (positive).
        max_consecutive_nonfinite: skips tolerated in a row.
    """
    # the train package's optimizer with Adam (no weight decay), wrapped in the guard
    n_steps = check_positive_int(n_steps, "n_steps")
    check_positive_int(max_consecutive_nonfinite, "max_consecutive_nonfinite")
    inner = default_optimizer(
        learning_rate,
        decay_steps=n_steps,
        warmup_steps=warmup_steps,
        final_fraction=final_fraction,
        clip_norm=clip_norm,
        weight_decay=0.0,
    )
    return optax.apply_if_finite(inner, max_consecutive_nonfinite)


def nonfinite_updates(state: TrainState) -> int:
    """Updates skipped so far for a non-finite gradient by a ``wpo_optimizer`` state (else 0)."""
    opt_state = state.opt_state
    if isinstance(opt_state, optax.ApplyIfFiniteState):
        return int(opt_state.total_notfinite)
    return 0


def split_centers(
    key: PRNGKey, data: ArrayLike, n_centers: int = AUTHORS_SETTINGS["n_centers"]
) -> tuple[Array, Array]:
    """Random disjoint split of ``data (M, d)`` into centres ``(n_centers, d)`` and ISM data.

    Returns:
        ``(centers, ism_data)`` with ``ism_data: (M - n_centers, d)``.
    """
    data = jnp.asarray(data)
    check_ndim(data, 2, "data", "(M, d)")
    n_centers = check_positive_int(n_centers, "n_centers")
    if n_centers >= data.shape[0]:
        raise ValueError(
            f"n_centers must be < the number of data points {data.shape[0]}, got {n_centers}"
        )
    perm = jax.random.permutation(key, data.shape[0])
    return data[perm[:n_centers]], data[perm[n_centers:]]


def ism_objective(
    net: CholeskyMLP, centers: ArrayLike, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> Callable[[PyTree, PRNGKey, Array], Array]:
    """``loss_fn(params, key, batch) -> scalar`` for ``wgdiff.train``: closed-form ISM (eq. 30-31).

    Args:
        net: the Cholesky-factor network.
        centers: ``(N, d)`` fixed kernel centres.
        chunk_size: centres per streamed chunk.
    """
    centers = jnp.asarray(centers)

    def loss_fn(params, key, batch):
        del key  # the objective is deterministic given the batch
        precisions = net.apply(params, centers, method=net.precision)
        return ism_loss(batch, centers, precisions, chunk_size=chunk_size)

    return loss_fn


def model_from_params(
    net: CholeskyMLP, params: PyTree, centers: ArrayLike, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> WPOKernelModel:
    """The ``WPOKernelModel`` given by the network's precisions at the centres."""
    precisions = net.apply(params, jnp.asarray(centers), method=net.precision)
    return WPOKernelModel.from_precisions(centers, precisions, chunk_size=chunk_size)


class BestValidationCheckpoint:
    """``wgdiff.train.fit`` evaluate callback keeping the parameters of best validation likelihood.

    Each call builds the model of the current parameters, scores the mean exact
    log-likelihood (eq. 25) of ``validation`` and keeps the parameters if the score is
    the best so far (a non-finite score, or non-finite parameters, never is); ``model()``
    is the kept model. So a late collapse of the kernels cannot decide the reported
    model (6-D roll: validation log-likelihood -1.20 -> -7.9 from step ~1e4 of a run on
    a 47 000-point ISM pool, ``experiments/results/wpo_kernel.json``). ``validation`` must
    be disjoint from the centres, the ISM pool and any test set the model is reported on.

    Args:
        net: the Cholesky-factor network (with the jitter used in training).
        centers: ``(N, d)`` kernel centres.
        validation: ``(n, d)`` validation points.
        chunk_size: centres per streamed chunk.
        extra: optional ``extra(model, state) -> dict`` whose entries join each row
            (called with the current, not the kept, model).

    Attributes:
        best_step: step of the kept parameters (None before a finite score).
        best_validation_ll: their mean validation log-likelihood (``-inf`` before).
    """

    def __init__(
        self,
        net: CholeskyMLP,
        centers: ArrayLike,
        validation: ArrayLike,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        extra: Callable[[WPOKernelModel, TrainState], dict] | None = None,
    ) -> None:
        self.centers, self.validation = jnp.asarray(centers), jnp.asarray(validation)
        check_ndim(self.centers, 2, "centers", "(N, d)")
        check_ndim(self.validation, 2, "validation", "(n, d)")
        if self.validation.shape[1] != self.centers.shape[1]:
            raise ValueError(
                f"validation must have shape (n, {self.centers.shape[1]}), "
                f"got {self.validation.shape}"
            )
        check_finite(self.validation, "validation")
        if extra is not None and not callable(extra):
            raise TypeError(f"extra must be a callable (model, state) -> dict, got {extra!r}")
        self.net, self.extra = net, extra
        self.chunk_size = check_positive_int(chunk_size, "chunk_size")
        self.best_step: int | None = None
        self.best_validation_ll = -math.inf
        self._best_params: PyTree | None = None

    def __call__(self, state: TrainState) -> dict:
        """Score ``state.params`` on the validation points; returns the row entries."""
        row: dict = {"validation_ll": math.nan}
        if all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(state.params)):
            model = self._model(state.params)
            score = float(jnp.mean(model.log_prob(self.validation)))
            row["validation_ll"] = score
            if math.isfinite(score) and score > self.best_validation_ll:
                self.best_step, self.best_validation_ll = int(state.step), score
                # a copy: the train step donates the state's buffers
                self._best_params = jax.tree.map(jnp.copy, state.params)
            if self.extra is not None:
                row.update(self.extra(model, state))
        best = None if self.best_step is None else self.best_validation_ll
        return {**row, "best_step": self.best_step, "best_validation_ll": best}

    def model(self) -> WPOKernelModel:
        """The model of the kept parameters."""
        if self._best_params is None:
            raise ValueError("no finite validation log-likelihood was scored yet")
        return self._model(self._best_params)

    def _model(self, params: PyTree) -> WPOKernelModel:
        return model_from_params(self.net, params, self.centers, chunk_size=self.chunk_size)


def init_wpo(
    key: PRNGKey,
    centers: ArrayLike,
    ism_data: ArrayLike,
    *,
    net: CholeskyMLP | None = None,
    init_bandwidth: float | None = None,
    learning_rate: float = AUTHORS_SETTINGS["learning_rate"],
    optimizer: optax.GradientTransformation | None = None,
    max_std: float | None = None,
    batch_size: int = AUTHORS_SETTINGS["batch_size"],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[CholeskyMLP, TrainState, Callable, Callable[[PRNGKey], Array]]:
    """State, jitted step and batch sampler for training with ``wgdiff.train.fit``.

    Args:
        key: PRNG key for the network initialization.
        centers: ``(N, d)`` kernel centres.
        ism_data: ``(M, d)`` points the ISM batches are drawn from.
        net: Cholesky network (default ``CholeskyMLP()``: 5x64 GeLU, jitter 0.01).
        init_bandwidth: if given (and ``net`` is None), start every kernel near
            ``N(Z_i, init_bandwidth^2 I)`` via ``CholeskyMLP(diag_offset=1/init_bandwidth)``.
            With the plain net (None, the authors' code) ``L`` starts near 0, every
            kernel starts with covariance ~ ``I / jitter``, and a few kernels that
            lose the softmax competition early get almost no ISM gradient and stay
            wide for a while (on thin moons we saw ~1% of 1000 centres with std > 0.3
            after 1500 steps, none after ~7000: experiments/results/wpo_kernel.json,
            fig2.ablation_authors_plain_init of the earlier record); their samples are
            far outliers that spoil W2 but barely move the log-likelihood. In 6-D a
            different widening dominates whatever the start: kernels grow along
            directions where the data are locally uniform, which the ISM rewards;
            ``wgdiff.wpo.tune_max_std`` caps it (see ``wgdiff.wpo.tuning``).
        learning_rate: Adam learning rate (authors: 2e-3), used when ``optimizer`` is None.
        optimizer: e.g. ``wpo_optimizer(n_steps)`` (default: the authors' constant-rate Adam).
        max_std: if given, the net's jitter becomes ``1 / max_std^2``: every kernel's
            std is ``<= max_std`` during training (see the module docstring).
        batch_size: ISM batch size (authors: 64).
        chunk_size: centres per streamed chunk.

    Returns:
        ``(net, state, train_step, sample_batch)``; ``net`` carries the jitter used.
    """
    centers, ism_data = jnp.asarray(centers), jnp.asarray(ism_data)
    check_ndim(centers, 2, "centers", "(N, d)")
    check_ndim(ism_data, 2, "ism_data", "(M, d)")
    if ism_data.shape[1] != centers.shape[1]:
        raise ValueError(f"ism_data must have shape (M, {centers.shape[1]}), got {ism_data.shape}")
    check_finite(centers, "centers")
    if net is None:
        offset = 0.0 if init_bandwidth is None else 1.0 / float(init_bandwidth)
        net = CholeskyMLP(diag_offset=offset)
    if max_std is not None:
        check_positive(max_std, "max_std")
        net = net.clone(jitter=1.0 / float(max_std) ** 2)
    params = net.init(key, centers[:1])
    if optimizer is None:
        optimizer = optax.adam(learning_rate)
    state = create_train_state(key, params, optimizer)
    # No EMA in the authors' code: ema_decay 0 makes the EMA copy the parameters.
    train_step = make_train_step(
        ism_objective(net, centers, chunk_size=chunk_size), optimizer, ema_decay=0.0
    )
    return net, state, train_step, dataset_sampler(ism_data, batch_size)


def fit_wpo(
    key: PRNGKey,
    data: ArrayLike,
    *,
    n_centers: int = AUTHORS_SETTINGS["n_centers"],
    n_steps: int = AUTHORS_SETTINGS["n_steps"],
    batch_size: int = AUTHORS_SETTINGS["batch_size"],
    learning_rate: float = AUTHORS_SETTINGS["learning_rate"],
    optimizer: optax.GradientTransformation | None = None,
    max_std: float | None = None,
    net: CholeskyMLP | None = None,
    init_bandwidth: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    validation: ArrayLike | None = None,
    evaluate_every: int | None = None,
    log_every: int = 1000,
    progress: bool = False,
    run_dir: str | Path | None = None,
) -> tuple[WPOKernelModel, TrainState, list[dict]]:
    """Train the WPO-informed kernel model on ``data`` (Zhang Alg. 1, authors' defaults).

    Args:
        key: PRNG key (split, init, batches).
        data: ``(M, d)`` training set; ``n_centers`` of it become centres, the rest feeds ISM.
        n_centers, n_steps, batch_size, learning_rate: see ``AUTHORS_SETTINGS``.
        optimizer, max_std: see ``init_wpo`` (6-D: ``wpo_optimizer(n_steps)`` and a cap).
        net: Cholesky network (default ``CholeskyMLP()``).
        init_bandwidth: initial kernel bandwidth (see ``init_wpo``; None = authors' net).
        chunk_size: centres per streamed chunk.
        validation: ``(n, d)`` points disjoint from ``data`` (and from any test set): if
            given, the model returned is the checkpoint of best mean validation
            log-likelihood (``BestValidationCheckpoint``), scored every ``evaluate_every``
            steps (default ``log_every``) and at the end.
        evaluate_every: see ``validation``.
        log_every, progress, run_dir: passed to ``wgdiff.train.fit`` (checkpoints if run_dir).

    Returns:
        ``(model, state, history)``: the trained ``WPOKernelModel`` (the best-validation
        checkpoint if ``validation`` is given, else the final parameters), the final
        ``TrainState`` and the logged losses (with ``validation_ll``, ``best_step`` and
        ``best_validation_ll`` on the scored rows).
    """
    if evaluate_every is not None and validation is None:
        raise ValueError("evaluate_every needs validation points to score")
    key_split, key_init, key_data = jax.random.split(key, 3)
    centers, ism_data = split_centers(key_split, data, n_centers)
    net, state, train_step, sample_batch = init_wpo(
        key_init,
        centers,
        ism_data,
        net=net,
        init_bandwidth=init_bandwidth,
        learning_rate=learning_rate,
        optimizer=optimizer,
        max_std=max_std,
        batch_size=batch_size,
        chunk_size=chunk_size,
    )
    checkpoint = None
    if validation is not None:
        checkpoint = BestValidationCheckpoint(net, centers, validation, chunk_size=chunk_size)
        evaluate_every = log_every if evaluate_every is None else evaluate_every
    state, history = fit(
        state,
        train_step,
        sample_batch,
        n_steps,
        data_key=key_data,
        log_every=log_every,
        progress=progress,
        run_dir=run_dir,
        evaluate=checkpoint,
        evaluate_every=evaluate_every,
    )
    if checkpoint is not None:
        return checkpoint.model(), state, history
    return model_from_params(net, state.params, centers, chunk_size=chunk_size), state, history


__all__ = [
    "AUTHORS_SETTINGS",
    "BestValidationCheckpoint",
    "fit_wpo",
    "init_wpo",
    "ism_objective",
    "model_from_params",
    "nonfinite_updates",
    "split_centers",
    "wpo_optimizer",
]
