"""Eager argument validation shared by the library (runs before tracing)."""

from __future__ import annotations

import numbers

import jax
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` holds values we can inspect now (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> None:
    if is_concrete(value) and not np.all(np.asarray(value) > 0):
        raise ValueError(f"{name} must be positive, got {value!r}")


def check_finite(x, name: str) -> None:
    """Refuse NaN or Inf in concrete data instead of propagating it."""
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains NaN or Inf")


def check_ndim(x, ndim: int | tuple[int, ...], name: str, shape_doc: str) -> None:
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if np.ndim(x) not in allowed:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {np.shape(x)}")


def check_time(t, T: float, name: str = "t") -> None:
    """Forward time must lie in [0, T]."""
    if not is_concrete(t):
        return
    arr = np.asarray(t)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    if np.any(arr < 0) or np.any(arr > T * (1 + 1e-6)):
        raise ValueError(
            f"{name} must lie in [0, T] = [0, {T}], got values in [{arr.min()}, {arr.max()}]"
        )


def check_shape_tuple(shape, name: str = "shape") -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise ValueError(
            f"{name} must be a tuple of positive ints (n, *event), got {shape!r}"
        ) from err
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(
            f"{name} must be a tuple of positive ints (n, *event) with at "
            f"least two entries, got {shape!r}"
        )
    return shape
