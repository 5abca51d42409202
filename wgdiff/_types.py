"""Type aliases shared by the whole library (one definition per concept).

Import them from here, never redefine them locally::

    from wgdiff._types import ScoreFn

The aliases document shapes; they are plain ``typing`` aliases and add no runtime checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import jax
import jax.typing

Array: TypeAlias = jax.Array
"""A JAX array (what the library's functions return)."""

ArrayLike: TypeAlias = jax.typing.ArrayLike
"""Anything ``jnp.asarray`` accepts: a JAX or NumPy array, or a Python scalar (inputs)."""

PRNGKey: TypeAlias = jax.Array
"""A PRNG key from ``jax.random.key`` or ``jax.random.PRNGKey``."""

PyTree: TypeAlias = Any
"""A nested structure of arrays (parameters, optimizer states)."""

Shape: TypeAlias = tuple[int, ...]
"""An array shape; sample shapes are ``(n, *event)``."""

ScoreFn: TypeAlias = Callable[[jax.Array, jax.Array], jax.Array]
"""A score model ``score_fn(x, t) -> array like x``.

``x`` has shape ``(n, *event)``; ``t`` is a scalar or has shape ``(n,)``. The result
approximates ``grad_x log p_t(x)`` (DESIGN.md, "Conventions").
"""

ProjectFn: TypeAlias = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
"""A projection net ``project_fn(y (n, *event), t' (n,), h (n,)) -> (n, *event)`` (Ghimire's T)."""

VelocityFn: TypeAlias = Callable[[jax.Array, jax.Array], jax.Array]
"""A velocity field ``velocity_fn(x, t) -> array like x`` (flow matching, probability flow)."""

__all__ = ["Array", "ArrayLike", "PRNGKey", "ProjectFn", "PyTree", "ScoreFn", "Shape", "VelocityFn"]
