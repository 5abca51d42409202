"""Image features for Frechet distances: the offline FD-digits and user-supplied extractors.

FD-digits. FID needs Inception-v3 weights, which wgdiff never downloads. The
offline default is the Frechet distance (``wgdiff.metrics.frechet_distance``) between
the penultimate-layer features of a small convolutional classifier trained on
scikit-learn's 8x8 digits (``DigitsClassifier``). It is trained once (about 10 s
on a CPU) and cached as ``digits_classifier.msgpack`` in a run directory, so
every evaluation in that directory uses the same features. It is called
**FD-digits**, never FID: its values are not comparable with FID numbers.

User-supplied extractors (e.g. Inception for real FID). ``load_feature_fn(path)``
loads a feature function serialized with ``jax.export`` (a file written by
``export_feature_fn``): any JAX function ``images (n, H, W, C) -> features (n, k)``
with the input shape and dtype fixed at export time (batch size may be
symbolic). wgdiff ships no Inception architecture and does not check that the
file holds one; to report FID, export an Inception-v3 pool-3 function (for
example a JAX port of ``pytorch-fid``'s weights) with the preprocessing it
expects, and use ``frechet_distance_features(samples, reference, feature_fn)``.

Example:
    >>> import jax.numpy as jnp
    >>> net = DigitsClassifier()
    >>> params = net.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    >>> digits_features(params, jnp.zeros((3, 8, 8, 1))).shape
    (3, 64)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from wgdiff._types import Array, ArrayLike, PRNGKey, PyTree
from wgdiff.data.images import load_digits
from wgdiff.metrics import frechet_distance

CLASSIFIER_FILE = "digits_classifier.msgpack"
FEATURE_DIM = 64


class DigitsClassifier(nn.Module):
    """Conv(32)-Conv(64, stride 2)-Dense(64) features, Dense(10) logits, for ``(n, 8, 8, 1)``.

    ``__call__`` returns logits ``(n, 10)``; ``features=True`` returns the
    penultimate activations ``(n, 64)`` used by FD-digits.
    """

    @nn.compact
    def __call__(self, x: Array, features: bool = False) -> Array:
        h = nn.relu(nn.Conv(32, (3, 3))(x))
        h = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2))(h))
        h = nn.relu(nn.Dense(FEATURE_DIM)(h.reshape(h.shape[0], -1)))
        if features:
            return h
        return nn.Dense(10)(h)


def _check_digit_images(images: ArrayLike, name: str) -> Array:
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (8, 8, 1):
        raise ValueError(f"{name} must have shape (n, 8, 8, 1) in [-1, 1], got {images.shape}")
    if not bool(jnp.all(jnp.isfinite(images))):
        raise ValueError(f"{name} contains NaN or Inf")
    return images


def train_digits_classifier(
    key: PRNGKey,
    *,
    n_steps: int = 1500,
    batch_size: int = 128,
    holdout: int = 297,
    learning_rate: float = 2e-3,
) -> tuple[PyTree, dict]:
    """Train ``DigitsClassifier`` on the first ``1797 - holdout`` digits.

    Augmentation: random 1-pixel shifts, so features are not tied to exact
    positions. Returns ``(params, {"test_accuracy": ..., "train_accuracy": ...})``
    with accuracy on the ``holdout`` last digits.
    """
    images, labels = load_digits(return_labels=True)
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    x_train, y_train = images[:-holdout], labels[:-holdout]
    x_test, y_test = images[-holdout:], labels[-holdout:]
    net = DigitsClassifier()
    init_key, key = jax.random.split(key)
    params = net.init(init_key, x_train[:1])
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, n_steps))
    opt_state = opt.init(params)

    def shift(key, x):
        # Pad by one with the background value -1 and crop a random 8x8 window.
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-1.0)
        dy, dx = jax.random.randint(key, (2,), 0, 3)
        return jax.lax.dynamic_slice(padded, (0, dy, dx, 0), x.shape)

    @jax.jit
    def step(params, opt_state, key):
        idx_key, aug_key = jax.random.split(key)
        idx = jax.random.randint(idx_key, (batch_size,), 0, x_train.shape[0])
        x, y = shift(aug_key, x_train[idx]), y_train[idx]

        def loss(p):
            logits = net.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state

    for k in jax.random.split(key, n_steps):
        params, opt_state = step(params, opt_state, k)

    def accuracy(x, y):
        return float(jnp.mean(jnp.argmax(net.apply(params, x), -1) == y))

    return params, {
        "test_accuracy": accuracy(x_test, y_test),
        "train_accuracy": accuracy(x_train, y_train),
    }


def load_or_train_digits_classifier(
    run_dir: str | Path, *, seed: int = 0, n_steps: int = 1500
) -> tuple[PyTree, dict]:
    """The cached classifier in ``run_dir`` (trained and saved on first use).

    Returns ``(params, info)``; ``info`` holds the held-out accuracy and whether the
    classifier was loaded from the cache.
    """
    run_dir = Path(run_dir)
    path, meta_path = run_dir / CLASSIFIER_FILE, run_dir / (CLASSIFIER_FILE + ".json")
    template = DigitsClassifier().init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    if path.exists() and meta_path.exists():
        params = flax.serialization.from_bytes(template, path.read_bytes())
        return params, {**json.loads(meta_path.read_text()), "cached": True}
    params, info = train_digits_classifier(jax.random.key(seed), n_steps=n_steps)
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flax.serialization.to_bytes(params))
    meta = {**info, "seed": seed, "n_steps": n_steps}
    meta_path.write_text(json.dumps(meta))
    return params, {**meta, "cached": False}


@jax.jit
def _features(params, images):
    return DigitsClassifier().apply(params, images, features=True)


def digits_features(params: PyTree, images: ArrayLike, *, batch_size: int = 1024) -> np.ndarray:
    """Penultimate ``(n, 64)`` features of ``images (n, 8, 8, 1)`` in ``[-1, 1]``, in batches."""
    images = _check_digit_images(images, "images")
    chunks = [
        _features(params, images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)
    ]
    return np.asarray(jnp.concatenate(chunks, axis=0))


def fd_digits(
    samples: ArrayLike,
    reference: ArrayLike,
    *,
    params: PyTree | None = None,
    run_dir: str | Path | None = None,
) -> float:
    """FD-digits: Frechet distance of ``DigitsClassifier`` features (not FID).

    Args:
        samples: ``(n, 8, 8, 1)`` generated digits in ``[-1, 1]`` (clipped to it first,
            as generated images are before display).
        reference: ``(m, 8, 8, 1)`` real digits.
        params: classifier parameters; if None, loaded from (or trained into) ``run_dir``.
        run_dir: cache directory for the classifier (required when ``params`` is None).

    Returns:
        The Frechet distance between the two feature sets' Gaussian fits.
    """
    samples = jnp.clip(_check_digit_images(samples, "samples"), -1.0, 1.0)
    reference = _check_digit_images(reference, "reference")
    if params is None:
        if run_dir is None:
            raise ValueError("fd_digits needs params or a run_dir to cache the classifier in")
        params, _ = load_or_train_digits_classifier(run_dir)
    return frechet_distance(digits_features(params, samples), digits_features(params, reference))


def export_feature_fn(feature_fn: Callable, example_images: ArrayLike, path: str | Path) -> Path:
    """Serialize ``feature_fn(images) -> (n, k)`` with ``jax.export`` (batch dimension symbolic).

    ``example_images`` fixes the per-image shape and dtype.
    """
    example_images = jnp.asarray(example_images)
    (batch,) = jax.export.symbolic_shape("b")
    spec = jax.ShapeDtypeStruct((batch,) + example_images.shape[1:], example_images.dtype)
    exported = jax.export.export(jax.jit(feature_fn))(spec)
    path = Path(path)
    path.write_bytes(exported.serialize())
    return path


def load_feature_fn(path: str | Path) -> Callable:
    """Load a ``jax.export``-serialized feature function (e.g. a user-exported Inception pool-3).

    Raises:
        FileNotFoundError: no such file (wgdiff never downloads weights).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"feature extractor {path} not found; wgdiff does not download Inception "
            f"weights. Export your own with wgdiff.image_features.export_feature_fn."
        )
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    in_shape = exported.in_avals[0].shape

    def feature_fn(images: ArrayLike) -> Array:
        images = jnp.asarray(images, exported.in_avals[0].dtype)
        if images.shape[1:] != tuple(in_shape[1:]):
            raise ValueError(
                f"images must have shape (n, *{tuple(in_shape[1:])}) for this "
                f"extractor, got {images.shape}"
            )
        return exported.call(images)

    return feature_fn


def frechet_distance_features(
    samples: ArrayLike, reference: ArrayLike, feature_fn: Callable, *, batch_size: int = 256
) -> float:
    """Frechet distance of ``feature_fn`` features (FID when ``feature_fn`` is Inception pool-3)."""

    def features(images):
        images = jnp.asarray(images)
        return np.concatenate(
            [
                np.asarray(feature_fn(images[i : i + batch_size]))
                for i in range(0, images.shape[0], batch_size)
            ],
            axis=0,
        )

    return frechet_distance(features(samples), features(reference))


__all__ = [
    "CLASSIFIER_FILE",
    "DigitsClassifier",
    "digits_features",
    "export_feature_fn",
    "fd_digits",
    "frechet_distance_features",
    "load_feature_fn",
    "load_or_train_digits_classifier",
    "train_digits_classifier",
]
