"""Type aliases shared by the whole library (one definition per concept).

Import them from here, never redefine them locally::

    from wgdiff._types import ScoreFn

The aliases document shapes; they are plain ``typing`` aliases and add no runtime checks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import jax

Array: TypeAlias = jax.Array
"""A JAX array (or anything ``jnp.asarray`` accepts where a function says so)."""

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

VelocityFn: TypeAlias = Callable[[jax.Array, jax.Array], jax.Array]
"""A velocity field ``velocity_fn(x, t) -> array like x`` (flow matching, probability flow)."""

__all__ = ["Array", "PRNGKey", "PyTree", "ScoreFn", "Shape", "VelocityFn"]
