"""Gaussian closed forms shared by the flow tests (float64 NumPy references)."""

import jax
import jax.numpy as jnp
import numpy as np

THETA = np.pi / 6
ROT = np.array([[np.cos(THETA), -np.sin(THETA)], [np.sin(THETA), np.cos(THETA)]])
M0, S0 = np.zeros(2), np.eye(2)
M1, S1 = np.array([1.0, 0.0]), ROT @ np.diag([4.0, 0.25]) @ ROT.T


def sqrtm(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(w)) @ v.T


def bures_map_matrix(s0, s1):
    """A with T(x) = m1 + A (x - m0), the OT map between N(m0, s0) and N(m1, s1)."""
    r = sqrtm(s0)
    ri = np.linalg.inv(r)
    return ri @ sqrtm(r @ s1 @ r) @ ri


def w2_squared_gaussians(m0, s0, m1, s1):
    r = sqrtm(s0)
    return float(np.sum((m0 - m1) ** 2) + np.trace(s0 + s1 - 2 * sqrtm(r @ s1 @ r)))


A_OT = bures_map_matrix(S0, S1)
W2SQ = w2_squared_gaussians(M0, S0, M1, S1)


def gaussian_draws(key, n, m, s):
    z = np.asarray(jax.random.normal(key, (n, len(m))))
    return jnp.asarray(m + z @ np.linalg.cholesky(s).T)


def moment_matched_draws(key, n, m, s):
    """Gaussian draws whitened so that their sample mean is ``m`` and their sample
    covariance (``ddof=0``) is ``s`` exactly (float64, then float32 rounding).

    Any quadratic functional of an affine image of the sample (the kinetic energy of
    an affine flow, the displacement cost of a linear map, the image's covariance) then
    takes its population value at any ``n``: no Monte Carlo error to budget for.
    """
    z = np.asarray(jax.random.normal(key, (n, len(m))), np.float64)
    z = z - z.mean(0)
    z = np.linalg.solve(np.linalg.cholesky(z.T @ z / n), z.T).T
    return jnp.asarray(m + z @ np.linalg.cholesky(s).T, jnp.float32)


def gaussian_logpdf(x, m, s):
    """float64 log N(x; m, s) for ``x`` of shape ``(n, d)``."""
    x = np.asarray(x, np.float64) - m
    sol = np.linalg.solve(s, x.T).T
    return -0.5 * (np.sum(x * sol, 1) + np.log(np.linalg.det(2 * np.pi * s)))


def ot_interpolation_velocity(x, t):
    """Velocity of McCann's interpolation x_t = (1 - t) x0 + t T(x0)."""
    t = jnp.reshape(t, (-1, 1, 1))
    eye = jnp.eye(2)
    mt = (1 - t) * eye + t * jnp.asarray(A_OT, x.dtype)
    mean_t = (1 - t[:, 0]) * M0 + t[:, 0] * M1
    y = jnp.linalg.solve(mt, (x - mean_t)[..., None])[..., 0]
    return (M1 - M0) + y @ jnp.asarray(A_OT - np.eye(2), x.dtype).T


def independent_marginal_velocity(x, t):
    """E[x1 - x0 | x_t = x] for the straight path between independent Gaussians."""
    t = jnp.reshape(t, (-1, 1, 1))
    cov_t = (1 - t) ** 2 * S0 + t**2 * S1
    cross = t * S1 - (1 - t) * S0
    mean_t = (1 - t[:, 0]) * M0 + t[:, 0] * M1
    y = jnp.linalg.solve(cov_t, (x - mean_t)[..., None])
    return (M1 - M0) + (cross @ y)[..., 0]
