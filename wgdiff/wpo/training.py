"""Training the WPO kernel model: implicit score matching at the terminal time (Zhang Alg. 1).

The only trained object is the Cholesky-factor network ``psi_theta`` of
``wgdiff.nets.cholesky.CholeskyMLP``; the loss is the closed-form ISM of
``wgdiff.wpo.kernel.ism_loss`` at ``t = 0`` (the HJB terminal condition). No
other time needs score matching: Prop. 4.1 gives the score at every time.

Defaults are the authors' settings (papers/README.md): 1000 centres, Adam with
learning rate 2e-3, batch 64, 50 000 steps, ``Gamma = L L^T + 0.01 I``.
As in the authors' code the centres are drawn *independently* of the ISM
batches; ``split_centers`` makes that a disjoint split of one training set. A
centre that is also a batch point would reward ``Gamma_i -> infinity`` there
(the ISM integrand contains ``-tr Gamma_i`` at ``x = Z_i``), a memorizing
direction the disjoint split removes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from wgdiff._checks import check_finite, check_ndim, check_positive_int
from wgdiff._types import Array, ArrayLike, PRNGKey, PyTree
from wgdiff.nets.cholesky import CholeskyMLP
from wgdiff.train import TrainState, create_train_state, dataset_sampler, fit, make_train_step
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


def init_wpo(
    key: PRNGKey,
    centers: ArrayLike,
    ism_data: ArrayLike,
    *,
    net: CholeskyMLP | None = None,
    init_bandwidth: float | None = None,
    learning_rate: float = AUTHORS_SETTINGS["learning_rate"],
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
        learning_rate: Adam learning rate (authors: 2e-3).
        batch_size: ISM batch size (authors: 64).
        chunk_size: centres per streamed chunk.

    Returns:
        ``(net, state, train_step, sample_batch)``.
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
    params = net.init(key, centers[:1])
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
    net: CholeskyMLP | None = None,
    init_bandwidth: float | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    log_every: int = 1000,
    progress: bool = False,
    run_dir: str | Path | None = None,
) -> tuple[WPOKernelModel, TrainState, list[dict]]:
    """Train the WPO-informed kernel model on ``data`` (Zhang Alg. 1, authors' defaults).

    Args:
        key: PRNG key (split, init, batches).
        data: ``(M, d)`` training set; ``n_centers`` of it become centres, the rest feeds ISM.
        n_centers, n_steps, batch_size, learning_rate: see ``AUTHORS_SETTINGS``.
        net: Cholesky network (default ``CholeskyMLP()``).
        init_bandwidth: initial kernel bandwidth (see ``init_wpo``; None = authors' net).
        chunk_size: centres per streamed chunk.
        log_every, progress, run_dir: passed to ``wgdiff.train.fit`` (checkpoints if run_dir).

    Returns:
        ``(model, state, history)``: the trained ``WPOKernelModel``, the final
        ``TrainState`` and the logged losses.
    """
    key_split, key_init, key_data = jax.random.split(key, 3)
    centers, ism_data = split_centers(key_split, data, n_centers)
    net, state, train_step, sample_batch = init_wpo(
        key_init,
        centers,
        ism_data,
        net=net,
        init_bandwidth=init_bandwidth,
        learning_rate=learning_rate,
        batch_size=batch_size,
        chunk_size=chunk_size,
    )
    state, history = fit(
        state,
        train_step,
        sample_batch,
        n_steps,
        data_key=key_data,
        log_every=log_every,
        progress=progress,
        run_dir=run_dir,
    )
    return model_from_params(net, state.params, centers, chunk_size=chunk_size), state, history


__all__ = [
    "AUTHORS_SETTINGS",
    "fit_wpo",
    "init_wpo",
    "ism_objective",
    "model_from_params",
    "split_centers",
]
