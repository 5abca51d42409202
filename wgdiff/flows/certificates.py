"""Transport certificates: how far a flow is from optimal transport.

For a flow ``dx/dt = v(x, t)`` on ``[0, 1]`` pushing a source ``mu`` to ``nu = T_# mu``,
Benamou-Brenier gives

    E(v) = E_{x0 ~ mu} int_0^1 |v(x_t, t)|^2 dt  >=  E |T(x0) - x0|^2  >=  W2^2(mu, nu),

the first step by Cauchy-Schwarz along each trajectory (equality iff it is a straight
line at constant speed), the second because ``(x0, T(x0))`` is a coupling (equality iff
``T`` is the optimal map). So

- ``gap_ratio = E / W2^2 >= 1`` measures the distance from optimal transport;
- ``straightness = E |x1 - x0|^2 / E`` in ``(0, 1]`` is the first factor (1 for
  straight, constant-speed trajectories; Liu et al. 2023's straightness reads the same
  defect as ``E - E|x1 - x0|^2``);
- ``coupling_ratio = E |x1 - x0|^2 / W2^2 >= 1`` is the second (1 for the OT coupling),
  and ``gap_ratio = coupling_ratio / straightness``.

Discretization keeps both inequalities exact: the energy is the action
``sum_k |x_{k+1} - x_k|^2 / h_k`` of the piecewise-linear path through the solver's
states (for Euler steps it is the Riemann sum ``sum_k h_k |v(x_k, t_k)|^2``), and ``W2``
is the exact W2 between the source sample and its image (the identity pairing being a
coupling of those two samples). Every reported ratio is therefore ``>= 1`` (``<= 1``
for straightness) up to float rounding, for any step count.

Example:
    >>> import jax, jax.numpy as jnp
    >>> x0 = jax.random.normal(jax.random.key(0), (256, 2))
    >>> energy, x1 = kinetic_energy(lambda x, t: jnp.ones_like(x), x0, n_steps=8)
    >>> round(float(energy), 5)   # the shift by (1, 1) is optimal: E = W2^2 = 2
    2.0
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from wgdiff._types import Array, VelocityFn
from wgdiff.flows.sampling import integrate_flow
from wgdiff.metrics import w2_with_info


def path_energy(path: Array) -> Array:
    """Per-sample action ``sum_k |x_{k+1} - x_k|^2 / h`` of a uniform-grid path on ``[0, 1]``.

    Args:
        path: ``(n_steps + 1, n, *event)`` states at ``t_k = k / n_steps``.

    Returns:
        ``(n,)`` energies.
    """
    n_steps = path.shape[0] - 1
    steps = jnp.diff(path, axis=0).reshape(n_steps, path.shape[1], -1)
    return n_steps * jnp.sum(steps**2, axis=(0, 2))


def kinetic_energy(
    velocity_fn: VelocityFn, x0: Array, *, n_steps: int, method: str = "heun"
) -> tuple[Array, Array]:
    """Kinetic energy ``E int_0^1 |v(x_t, t)|^2 dt`` along the flow's own trajectories.

    Args:
        velocity_fn: ``(x (n, *event), t (n,)) -> (n, *event)``, flow time.
        x0: ``(n, *event)`` source sample.
        n_steps: integration steps on the uniform grid.
        method: ``"euler"`` or ``"heun"`` (:func:`~wgdiff.flows.integrate_flow`).

    Returns:
        ``(energy, x1)``: the mean action of the discrete trajectories (see the module
        docstring; ``>= mean |x1 - x0|^2`` exactly) and the endpoints ``(n, *event)``.
    """
    out = integrate_flow(velocity_fn, x0, n_steps=n_steps, method=method, return_path=True)
    return jnp.mean(path_energy(out.path)), out.x


def transport_certificate(
    velocity_fn: VelocityFn,
    x0: Array,
    *,
    n_steps: int,
    method: str = "heun",
    w2_method: str = "exact",
) -> dict:
    """Energy, W2, gap ratio, straightness and coupling ratio of a flow on a source sample.

    Args:
        velocity_fn: flow-time velocity.
        x0: ``(n, *event)`` source sample (``n <= 8000`` for the exact W2).
        n_steps: integration steps.
        method: ``"euler"``, ``"heun"`` or a fixed-step ``wgdiff.samplers`` solver.
        w2_method: passed to :func:`wgdiff.metrics.w2_with_info`; ``"exact"`` keeps the
            inequalities of the module docstring exact.

    Returns:
        dict with ``energy``, ``displacement`` (``mean |x1 - x0|^2``), ``w2_squared``
        (between ``x0`` and its image), ``gap_ratio``, ``straightness``,
        ``coupling_ratio``, ``nfe``, ``w2_method``, ``x1`` (the image) and ``path`` (the
        states on the grid, ``(n_steps + 1, n, *event)``).
    """
    out = integrate_flow(velocity_fn, x0, n_steps=n_steps, method=method, return_path=True)
    energy, x1 = jnp.mean(path_energy(out.path)), out.x
    n = x1.shape[0]
    a = np.asarray(x0, np.float64).reshape(n, -1)
    b = np.asarray(x1, np.float64).reshape(n, -1)
    displacement = float(np.mean(np.sum((b - a) ** 2, axis=1)))
    info = w2_with_info(a, b, method=w2_method)
    w2_sq = info["value"] ** 2
    energy = float(energy)
    return {
        "energy": energy,
        "displacement": displacement,
        "w2_squared": w2_sq,
        "gap_ratio": energy / w2_sq if w2_sq > 0 else float("inf"),
        "straightness": displacement / energy if energy > 0 else 1.0,
        "coupling_ratio": displacement / w2_sq if w2_sq > 0 else float("inf"),
        "nfe": out.nfe,
        "w2_method": info["method"],
        "x1": x1,
        "path": out.path,
    }


__all__ = ["kinetic_energy", "path_energy", "transport_certificate"]
