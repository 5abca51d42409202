"""Kernel-collapse diagnostics and the choices made on a validation split (WPO cap, KDE variance).

The 6-D swiss roll (Zhang Fig. 4) showed W2 seven times the data floor with the
authors' parametrization. The diagnosis (``kernel_diagnostics``; numbers in
``experiments/results/wpo_kernel.json``, ``fig4_diagnosis``): kernels are *not*
starved (0.1-0.2% of them get below 1% of a fair softmax share), but most grow
one axis far beyond the data, up to the jitter floor ``1 / sqrt(0.01) = 10``; that axis is
the roll's straight height coordinate, where the data are locally uniform.
There the true score is ~0 and a wide kernel matches it better than narrow
ones, so the ISM objective (a Fisher divergence, evaluated only where data
are) rewards the growth and never sees the mass it spills past the ends of the
support. A positive-diagonal (log-Cholesky) net made it worse (lower ISM, more
spill), so it is not a conditioning problem of the Cholesky parametrization.

The fix is a cap on every kernel's std (``WPOKernelModel.cap_std``), chosen by
held-out log-likelihood (``tune_max_std``): the mixture's exact likelihood sees
spilled mass, unlike the ISM. ``tune_kde_variance`` makes the same choice for
the isotropic KDE / early-stopped empirical kernel (Zhang eq. 23 at ``eps``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wgdiff._checks import check_finite, check_ndim, check_positive
from wgdiff._types import ArrayLike
from wgdiff.wpo.kernel import DEFAULT_CHUNK_SIZE, empirical_log_density
from wgdiff.wpo.model import WPOKernelModel

STARVED_SHARE = 0.01


@struct.dataclass
class KernelDiagnostics:
    """Per-kernel width spectrum and softmax share of a ``WPOKernelModel`` on points ``x``.

    Attributes:
        stds: ``(N, d)`` std along each eigenvector, widest first.
        widest_axis: ``(N, d)`` unit eigenvector of each kernel's widest direction.
        shares: ``(N,)`` ``N`` times the kernel's mean softmax weight on ``x``
            (1 = an equal split; below ``STARVED_SHARE`` = starved of ISM gradient).
    """

    stds: jax.Array
    widest_axis: jax.Array
    shares: jax.Array

    def summary(self, wide_std: float) -> dict:
        """Floats for a results file: width quantiles, starved share, widest-axis alignment.

        Args:
            wide_std: a kernel whose widest std exceeds this counts as wide.
        """
        widest = np.asarray(self.stds[:, 0], np.float64)
        shares = np.asarray(self.shares, np.float64)
        q = np.quantile(widest, [0.5, 0.9, 0.99])
        return {
            "widest_std_median": float(q[0]),
            "widest_std_q90": float(q[1]),
            "widest_std_q99": float(q[2]),
            "widest_std_max": float(widest.max()),
            "narrowest_std_median": float(np.median(np.asarray(self.stds[:, -1]))),
            "std_median_per_rank": np.median(np.asarray(self.stds), axis=0).tolist(),
            f"share_kernels_widest_std_above_{wide_std:g}": float(np.mean(widest > wide_std)),
            "share_kernels_starved": float(np.mean(shares < STARVED_SHARE)),
            "softmax_share_min": float(shares.min()),
            "softmax_share_q01": float(np.quantile(shares, 0.01)),
            "widest_share_of_starved_kernels_above_wide_std": (
                float(np.mean(widest[shares < STARVED_SHARE] > wide_std))
                if np.any(shares < STARVED_SHARE)
                else None
            ),
            "widest_axis_mean_abs_component": np.mean(
                np.abs(np.asarray(self.widest_axis)), axis=0
            ).tolist(),
        }


def kernel_diagnostics(model: WPOKernelModel, x: ArrayLike) -> KernelDiagnostics:
    """Width spectrum and softmax shares of the kernels of ``model`` on ``x (n, d)``."""
    x = jnp.asarray(x)
    check_ndim(x, 2, "x", "(n, d)")
    check_finite(x, "x")
    # eigh sorts eigenvalues ascending: the smallest precision is the widest axis.
    return KernelDiagnostics(
        stds=model.kernel_stds(),
        widest_axis=model.eigvecs[:, :, 0],
        shares=model.n_centers * model.responsibilities(x),
    )


@struct.dataclass
class ValidationChoice:
    """Candidates scored by mean validation log-likelihood, and the best one.

    Attributes:
        candidates: ``(k,)`` values tried (``inf`` = no cap).
        scores: ``(k,)`` mean log-likelihood of the validation points for each.
        best: the candidate with the highest score.
    """

    candidates: np.ndarray
    scores: np.ndarray
    best: float

    def to_dict(self) -> dict:
        return {
            "candidates": [float(c) for c in self.candidates],
            "validation_ll": [float(s) for s in self.scores],
            "best": float(self.best),
        }


def _choose(candidates, scores) -> ValidationChoice:
    candidates, scores = np.asarray(candidates, np.float64), np.asarray(scores, np.float64)
    if not np.any(np.isfinite(scores)):
        raise ValueError("no candidate gave a finite validation log-likelihood")
    best = float(candidates[int(np.nanargmax(np.where(np.isfinite(scores), scores, np.nan)))])
    return ValidationChoice(candidates=candidates, scores=scores, best=best)


def tune_max_std(
    model: WPOKernelModel, validation: ArrayLike, candidates: Sequence[float] | None = None
) -> tuple[WPOKernelModel, ValidationChoice]:
    """Cap the kernels' std at the value with the best validation log-likelihood.

    Args:
        model: trained ``WPOKernelModel``.
        validation: ``(n, d)`` points used neither as centres nor in ISM batches.
        candidates: caps to try; default 16 geometric values from the median
            narrowest kernel std to the widest one, plus ``inf`` (no cap).

    Returns:
        ``(model.cap_std(best), choice)``; with ``best = inf`` the model is unchanged.
    """
    validation = jnp.asarray(validation)
    check_ndim(validation, 2, "validation", "(n, d)")
    check_finite(validation, "validation")
    if candidates is None:
        stds = np.asarray(model.kernel_stds(), np.float64)
        lo, hi = float(np.median(stds[:, -1])), float(stds.max())
        candidates = [*np.geomspace(lo, max(hi, lo * (1 + 1e-6)), 16), np.inf]
    candidates = np.asarray(candidates, np.float64)
    check_ndim(candidates, 1, "candidates", "(k,)")
    check_positive(candidates, "candidates")
    scores = [float(jnp.mean(model.cap_std(float(c)).log_prob(validation))) for c in candidates]
    choice = _choose(candidates, scores)
    return model.cap_std(choice.best), choice


def tune_kde_variance(
    data: ArrayLike,
    validation: ArrayLike,
    candidates: Sequence[float],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ValidationChoice:
    """Isotropic KDE variance (= early-stopping ``eps``, eq. 23) by validation likelihood.

    Args:
        data: ``(M, d)`` kernel centres (the training set).
        validation: ``(n, d)`` held-out points, disjoint from ``data``.
        candidates: ``(k,)`` positive variances.
        chunk_size: data points per streamed chunk.

    Returns:
        ``ValidationChoice`` over the variances.
    """
    candidates = np.asarray(candidates, np.float64)
    check_ndim(candidates, 1, "candidates", "(k,)")
    check_positive(candidates, "candidates")
    scores = [
        float(jnp.mean(empirical_log_density(validation, data, float(v), chunk_size=chunk_size)))
        for v in candidates
    ]
    return _choose(candidates, scores)


__all__ = [
    "STARVED_SHARE",
    "KernelDiagnostics",
    "ValidationChoice",
    "kernel_diagnostics",
    "tune_kde_variance",
    "tune_max_std",
]
