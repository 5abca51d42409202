"""Score networks: shapes, time handling, conservativity of PotentialMLP."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wgdiff.nets import PotentialMLP, ScoreMLP


def init(model, d=3):
    return model.init(jax.random.key(0), jnp.zeros((1, d)), jnp.zeros((1,)))


def test_score_mlp_configurations_of_the_papers():
    kwon = ScoreMLP(features=(64,) * 4, activation=nn.softplus)
    zhang = ScoreMLP(features=(64,) * 5, activation=nn.gelu)
    for model, n_dense in ((kwon, 5), (zhang, 6)):
        params = init(model, 2)
        dense = [
            k for k in jax.tree_util.tree_flatten_with_path(params)[0] if "kernel" in str(k[0][-1])
        ]
        assert len(dense) == n_dense
        assert model.apply(params, jnp.ones((7, 2)), 0.3).shape == (7, 2)


def test_scalar_and_vector_time_agree():
    model = ScoreMLP(features=(16, 16))
    params = init(model)
    x = jax.random.normal(jax.random.key(1), (4, 3))
    np.testing.assert_allclose(
        model.apply(params, x, 0.4), model.apply(params, x, jnp.full((4,), 0.4)), rtol=1e-6
    )
    assert not np.allclose(model.apply(params, x, 0.1), model.apply(params, x, 0.9))


def test_potential_mlp_is_the_gradient_of_its_potential():
    model = PotentialMLP(features=(32, 32))
    params = init(model)
    x = jax.random.normal(jax.random.key(2), (5, 3))
    score = model.apply(params, x, 0.5)
    pot = lambda y: model.apply(params, y[None], 0.5, method="potential")[0]
    np.testing.assert_allclose(score, jax.vmap(jax.grad(pot))(x), rtol=1e-5, atol=1e-6)
    jac = jax.vmap(jax.jacfwd(lambda y: model.apply(params, y[None], 0.5)[0]))(x)
    assert float(jnp.max(jnp.abs(jac - jnp.swapaxes(jac, 1, 2)))) < 1e-5


def test_score_mlp_jacobian_is_not_symmetric():
    model = ScoreMLP(features=(32, 32))
    params = init(model)
    fn = functools.partial(model.apply, params)
    jac = jax.jacfwd(lambda y: fn(y[None], 0.5)[0])(jnp.ones(3))
    assert float(jnp.max(jnp.abs(jac - jac.T))) > 1e-3
