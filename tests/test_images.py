"""Image pipelines: offline digits against scikit-learn, TFDS readers on mock data, FD-digits."""

import warnings

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn.datasets import load_digits as sk_load_digits

from wgdiff.data.images import (
    TFDS_DATASETS,
    TFDSImages,
    array_batch_sampler,
    center_crop,
    load_digits,
    prepare_command,
    resize,
)


def test_digits_are_sklearn_digits_rescaled():
    images, labels = load_digits(return_labels=True)
    bunch = sk_load_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.float32
    # Independent reference: the flat 64-pixel rows in [0, 16].
    np.testing.assert_allclose((images.reshape(1797, 64) + 1.0) * 8.0, bunch.data, atol=1e-5)
    np.testing.assert_array_equal(labels, bunch.target)
    assert images.min() == -1.0 and images.max() == 1.0


@pytest.mark.parametrize("name", sorted(TFDS_DATASETS))
def test_tfds_pipeline_on_mock_data(name):
    with tfds.testing.mock_data(num_examples=4):
        images = TFDSImages(name, split="train")
        assert len(images) == 4
        batch = images.get([0, 3])
        size = TFDS_DATASETS[name]["image_size"]
        assert batch.shape[:3] == (2, size, size) and batch.dtype == np.float32
        assert batch.min() >= -1.0 - 1e-5 and batch.max() <= 1.0 + 1e-5
        sample = images.batch_sampler(3)(jax.random.key(0))
        assert sample.shape == (3,) + batch.shape[1:]


def test_tfds_raw_pixels_are_mapped_to_unit_range():
    with tfds.testing.mock_data(num_examples=2):
        images = TFDSImages("mnist", split="train", image_size=None)
        raw = np.asarray(tfds.data_source("mnist", split="train")[1]["image"], np.float32)
        np.testing.assert_allclose(images[1], raw / 127.5 - 1.0, atol=1e-6)


def test_unprepared_dataset_explains_how_to_prepare(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build cifar10 --file_format=array_record"):
        TFDSImages("cifar10", data_dir=str(tmp_path))
    assert "--data_dir=/d" in prepare_command("mnist", "/d")


def test_center_crop_and_resize():
    image = np.arange(6 * 4 * 1, dtype=np.float32).reshape(6, 4, 1)
    np.testing.assert_array_equal(center_crop(image, "square"), image[1:5])
    np.testing.assert_array_equal(center_crop(image, 2), image[2:4, 1:3])
    with pytest.raises(ValueError, match="larger"):
        center_crop(image, 5)
    # Resizing preserves constants and averages blocks of a 2x checkerboard (antialiasing).
    const = np.full((1, 8, 8, 3), 0.25, np.float32)
    np.testing.assert_allclose(resize(const, 4), 0.25 * np.ones((1, 4, 4, 3)), atol=1e-6)
    board = (np.indices((8, 8)).sum(0) % 2).astype(np.float32)[None, :, :, None]
    np.testing.assert_allclose(resize(board, 4).mean(), 0.5, atol=1e-6)


def test_array_batch_sampler_draws_rows():
    data = np.arange(10, dtype=np.float32).reshape(10, 1)
    batch = np.asarray(array_batch_sampler(data, 5)(jax.random.key(0)))
    assert batch.shape == (5, 1) and np.all(np.isin(batch, data))


def test_fd_digits_classifier_cache_and_distances(tmp_path):
    import scipy.linalg

    from wgdiff.image_features import digits_features, fd_digits, load_or_train_digits_classifier

    params, info = load_or_train_digits_classifier(tmp_path, n_steps=40)
    assert info["cached"] is False and (tmp_path / "digits_classifier.msgpack").exists()
    again, info2 = load_or_train_digits_classifier(tmp_path, n_steps=40)
    assert info2["cached"] is True
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    x = load_digits()
    real_a, real_b = x[:800], x[800:1600]
    noise = np.random.default_rng(0).uniform(-1, 1, real_a.shape).astype(np.float32)
    same = fd_digits(real_a, real_b, run_dir=tmp_path)
    assert same < fd_digits(noise, real_b, params=params)
    assert abs(fd_digits(real_a, real_a, params=params)) < 1e-3
    # Independent Frechet formula: |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2)), float64 SciPy.
    fa = digits_features(params, real_a).astype(np.float64)
    fb = digits_features(params, real_b).astype(np.float64)
    ca, cb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    # Dead ReLU units make the covariances singular; sqrtm still returns the PSD root.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(ca @ cb).real
    expected = np.sum((fa.mean(0) - fb.mean(0)) ** 2) + np.trace(ca + cb - 2 * root)
    np.testing.assert_allclose(same, expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match=r"\(n, 8, 8, 1\)"):
        fd_digits(np.zeros((4, 8, 8)), real_b, params=params)
    with pytest.raises(ValueError, match="run_dir"):
        fd_digits(real_a, real_b)


def test_exported_feature_fn_round_trip(tmp_path):
    pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")
    from wgdiff.image_features import (
        export_feature_fn,
        frechet_distance_features,
        load_feature_fn,
    )

    weights = jax.random.normal(jax.random.key(0), (3 * 4 * 4, 5))
    feature_fn = lambda images: jax.numpy.tanh(images.reshape(images.shape[0], -1) @ weights)
    example = np.zeros((2, 4, 4, 3), np.float32)
    path = export_feature_fn(feature_fn, example, tmp_path / "features.jax_exported")
    loaded = load_feature_fn(path)
    images = np.asarray(jax.random.normal(jax.random.key(1), (7, 4, 4, 3)))
    np.testing.assert_allclose(loaded(images), feature_fn(images), atol=1e-5)
    other = images + 0.5
    np.testing.assert_allclose(
        frechet_distance_features(images, other, loaded, batch_size=3),
        frechet_distance_features(images, other, feature_fn),
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="images must have shape"):
        loaded(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="does not download"):
        load_feature_fn(tmp_path / "missing")
