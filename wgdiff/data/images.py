"""Image data: offline 8x8 digits and TFDS pipelines (CelebA, LSUN church, SVHN, CIFAR-10, MNIST).

Every loader returns float images of shape ``(n, H, W, C)`` scaled to
``[-1, 1]``, the range the VP SDE's ``N(0, I)`` prior is matched to.

- ``load_digits()`` reads scikit-learn's bundled 8x8 digits (1797 images,
  shipped inside scikit-learn, no network): the offline default.
- ``TFDSImages(name, ...)`` reads a prepared TFDS dataset through
  ``tfds.data_source`` (random access over ArrayRecord files, no TensorFlow
  needed). Nothing is ever downloaded here: an unprepared dataset raises a
  ``FileNotFoundError`` that says how to prepare it (see ``prepare_command``).

Example:
    >>> x = load_digits()
    >>> x.shape, float(x.min()), float(x.max())
    ((1797, 8, 8, 1), -1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from wgdiff._checks import check_positive_int
from wgdiff._types import Array

# name -> (default image size used by Ghimire et al. or the usual benchmark, centre crop size)
# CelebA is centre-cropped to 140x140 before resizing to 64x64 (Song et al.'s pipeline);
# LSUN church is centre-cropped to a square.
TFDS_DATASETS: dict[str, dict] = {
    "celeb_a": {"image_size": 64, "crop": 140},
    "lsun/church_outdoor": {"image_size": 64, "crop": "square"},
    "svhn_cropped": {"image_size": 32, "crop": None},
    "cifar10": {"image_size": 32, "crop": None},
    "mnist": {"image_size": 28, "crop": None},
}


def load_digits(
    *, dtype: np.dtype | type = np.float32, return_labels: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits, scaled from ``[0, 16]`` to ``[-1, 1]``.

    Args:
        dtype: float dtype of the images.
        return_labels: also return the ``(n,)`` integer class labels.

    Returns:
        ``(1797, 8, 8, 1)`` images (and labels).
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = (bunch.images / 8.0 - 1.0).astype(dtype)[..., None]
    if return_labels:
        return images, bunch.target.astype(np.int32)
    return images


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 ``[0, 255]`` -> float32 ``[-1, 1]``."""
    return np.asarray(images, dtype=np.float32) / 127.5 - 1.0


def center_crop(image: np.ndarray, crop: int | str) -> np.ndarray:
    """Centre crop ``(H, W, C)`` to ``crop x crop`` (int) or the largest square (``"square"``)."""
    height, width = image.shape[:2]
    size = min(height, width) if crop == "square" else int(crop)
    if size > min(height, width):
        raise ValueError(f"crop {size} is larger than the image {image.shape[:2]}")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def resize(images: np.ndarray, image_size: int) -> np.ndarray:
    """Antialiased bilinear resize of ``(n, H, W, C)`` to ``(n, image_size, image_size, C)``."""
    images = np.asarray(images, dtype=np.float32)
    if images.shape[1:3] == (image_size, image_size):
        return images
    shape = (images.shape[0], image_size, image_size, images.shape[-1])
    return np.asarray(jax.image.resize(images, shape, "linear", antialias=True))


def prepare_command(name: str, data_dir: str | None = None) -> str:
    """The shell command that downloads and prepares ``name`` in the random-access format."""
    extra = f" --data_dir={data_dir}" if data_dir else ""
    return f"tfds build {name} --file_format=array_record{extra}"


class TFDSImages:
    """Random-access images from a prepared TFDS dataset, preprocessed to ``[-1, 1]``.

    Args:
        name: one of ``TFDS_DATASETS`` (other TFDS image datasets with an
            ``"image"`` feature also work).
        split: TFDS split, e.g. ``"train"`` or ``"train[:10%]"``.
        data_dir: TFDS data directory (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
        image_size: output side length; default from ``TFDS_DATASETS``.
        crop: centre crop before resizing: an int, ``"square"`` or ``None``.

    Raises:
        FileNotFoundError: the dataset is not prepared; the message gives the
            command that prepares it. Nothing is downloaded.

    ``images[i]`` / ``images.get(indices)`` -> ``(len(indices), S, S, C)`` float32;
    ``images.batch_sampler(batch_size)`` -> ``sample_batch(key)`` for ``wgdiff.train.fit``.
    """

    def __init__(
        self,
        name: str,
        split: str = "train",
        *,
        data_dir: str | None = None,
        image_size: int | None = None,
        crop="default",
    ):
        import tensorflow_datasets as tfds

        defaults = TFDS_DATASETS.get(name, {"image_size": None, "crop": None})
        self.name = name
        self.image_size = image_size if image_size is not None else defaults["image_size"]
        self.crop = defaults["crop"] if crop == "default" else crop
        if self.image_size is not None:
            check_positive_int(self.image_size, "image_size")
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
        except Exception as err:  # TFDS raises several types for "not there / wrong format"
            raise FileNotFoundError(
                f"TFDS dataset {name!r} (split {split!r}) is not prepared for random access "
                f"in {data_dir or 'the default TFDS data_dir'}. Prepare it once with\n"
                f"    {prepare_command(name, data_dir)}\n"
                f"(or in Python: tfds.builder({name!r}, data_dir=...).download_and_prepare("
                f"file_format='array_record')). Some datasets need a manual download first; "
                f"see the TFDS catalog page for {name!r}. Underlying error: {err}"
            ) from err
        if len(self._source) == 0:
            raise FileNotFoundError(f"TFDS dataset {name!r} split {split!r} is empty")

    def __len__(self) -> int:
        return len(self._source)

    def _preprocess(self, image: np.ndarray) -> np.ndarray:
        """One ``(H, W, C)`` uint8 image -> centre-cropped, resized, float32 in ``[-1, 1]``."""
        if self.crop is not None:
            image = center_crop(image, self.crop)
        image = to_unit_range(image)
        if self.image_size is not None:
            image = resize(image[None], self.image_size)[0]
        return image

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Images at ``indices`` (ints) -> ``(len(indices), S, S, C)`` float32 in ``[-1, 1]``.

        Each image is cropped and resized on its own, so sources with varying
        image sizes (LSUN, CelebA in the wild) stack into one array.
        """
        return np.stack(
            [
                self._preprocess(np.asarray(self._source[int(i)]["image"]))
                for i in np.asarray(indices).reshape(-1)
            ]
        )

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get([index])[0]

    def load(self, max_examples: int | None = None) -> np.ndarray:
        """The first ``max_examples`` (default all) images as one array."""
        n = len(self) if max_examples is None else min(len(self), max_examples)
        return self.get(np.arange(n))

    def batch_sampler(self, batch_size: int) -> Callable[[jax.Array], np.ndarray]:
        """``sample_batch(key) -> (batch_size, S, S, C)``, uniform indices with replacement."""
        check_positive_int(batch_size, "batch_size")

        def sample_batch(key):
            indices = jax.random.randint(key, (batch_size,), 0, len(self))
            return self.get(np.asarray(indices))

        return sample_batch


def array_batch_sampler(images: Array, batch_size: int) -> Callable[[jax.Array], jax.Array]:
    """``sample_batch(key) -> (batch_size, ...)``, uniform with replacement from ``images``.

    Pure JAX, so it can be traced inside a jitted training step.
    """
    check_positive_int(batch_size, "batch_size")
    images = jax.numpy.asarray(images)

    def sample_batch(key):
        return images[jax.random.randint(key, (batch_size,), 0, images.shape[0])]

    return sample_batch


__all__ = [
    "TFDSImages",
    "TFDS_DATASETS",
    "array_batch_sampler",
    "center_crop",
    "load_digits",
    "prepare_command",
    "resize",
    "to_unit_range",
]
