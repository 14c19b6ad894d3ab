"""Divergence: exact trace against the Hessian of a closed-form log-density; Hutchinson unbiasedness."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore.data.toy import random_mixture
from jaxscore.divergence import (
    exact_divergence,
    hutchinson_divergence,
    sample_probes,
    value_and_exact_divergence,
    value_and_hutchinson_divergence,
)


@pytest.fixture(scope="module")
def mixture():
    return random_mixture(jax.random.key(0), 6, 3)


def _laplacian(mix, x):
    hess = jax.vmap(jax.hessian(lambda xi: mix.log_prob(xi[None])[0]))(x)
    return jnp.trace(hess, axis1=1, axis2=2)


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 6])
def test_exact_divergence_is_the_laplacian(mixture, chunk_size):
    x = mixture.sample(jax.random.key(1), 5)
    value, div = value_and_exact_divergence(mixture.score, x, chunk_size=chunk_size)
    np.testing.assert_allclose(value, mixture.score(x), rtol=1e-6)
    np.testing.assert_allclose(div, _laplacian(mixture, x), rtol=1e-4, atol=1e-4)


def test_exact_divergence_on_image_shaped_input():
    """A linear field A x on [B, H, W, C] has divergence tr A, with chunks that do not divide d."""
    key = jax.random.key(2)
    d = 4 * 4 * 3
    a = jax.random.normal(key, (d, d))
    fn = lambda x: (x.reshape(x.shape[0], -1) @ a.T).reshape(x.shape)  # noqa: E731
    x = jax.random.normal(key, (2, 4, 4, 3))
    div = jax.jit(lambda x: exact_divergence(fn, x, chunk_size=7))(x)
    np.testing.assert_allclose(div, jnp.full((2,), jnp.trace(a)), rtol=1e-5)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(mixture, kind):
    x = mixture.sample(jax.random.key(3), 4)
    probes = sample_probes(jax.random.key(4), x.shape, kind=kind, num_probes=20000)
    _, est = value_and_hutchinson_divergence(mixture.score, x, probes)
    exact = _laplacian(mixture, x)
    # MC standard error of the mean of the per-probe estimates
    per_probe = jax.vmap(lambda p: value_and_hutchinson_divergence(mixture.score, x, p[None])[1])(probes[:2000])
    se = jnp.std(per_probe, axis=0) / np.sqrt(20000)
    assert jnp.all(jnp.abs(est - exact) < 5 * se + 1e-4), (est, exact, se)


def test_rademacher_has_lower_variance_than_gaussian_for_diagonal_fields():
    """For a diagonal Jacobian the Rademacher estimator is exact; the Gaussian one is not."""
    fn = lambda x: x * jnp.arange(1.0, 4.0)  # noqa: E731
    x = jnp.ones((2, 3))
    est = hutchinson_divergence(fn, x, jax.random.key(0), kind="rademacher", num_probes=1)
    np.testing.assert_allclose(est, 6.0, rtol=1e-6)


def test_bad_inputs_raise():
    fn = lambda x: x  # noqa: E731
    with pytest.raises(TypeError, match="floating-point"):
        exact_divergence(fn, jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="probes"):
        value_and_hutchinson_divergence(fn, jnp.ones((2, 3)), jnp.ones((1, 2, 4)))
    with pytest.raises(ValueError, match="probe kind"):
        sample_probes(jax.random.key(0), (2, 3), kind="uniform")
    with pytest.raises(ValueError, match="chunk_size"):
        exact_divergence(fn, jnp.ones((2, 3)), chunk_size=0)


def test_divergence_is_differentiable():
    """grad through the exact divergence (used by implicit score matching) matches finite differences."""
    x = jnp.array([[0.3, -0.2], [1.0, 0.5]])

    def div_of(w):
        fn = lambda z: jnp.tanh(z * w)  # noqa: E731
        return jnp.sum(exact_divergence(fn, x))

    g = jax.grad(div_of)(1.3)
    fd = (div_of(1.3 + 1e-3) - div_of(1.3 - 1e-3)) / 2e-3
    np.testing.assert_allclose(g, fd, rtol=1e-2)
