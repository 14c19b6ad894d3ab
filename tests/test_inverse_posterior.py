"""The exact posterior of a Gaussian mixture under y = A x + N(0, sigma_y^2 I): the ground truth of the
inverse-problem tests (jaxscore.data.toy.linear_gaussian_posterior)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore.data.toy import gaussian, linear_gaussian_posterior, random_mixture, ring_mixture


@pytest.mark.slow  # default-suite budget: 15-22 s of compile on 2 cores
def test_posterior_density_is_prior_times_likelihood_on_a_grid():
    """log p(x|y) = log p(x) + log N(y; Ax, s^2) - log Z on a dense 2-D grid (Z by quadrature)."""
    prior = ring_mixture()
    A = jnp.array([[1.0, 0.5]])
    y = jnp.array([2.0])
    s = 0.4
    post = prior.posterior(A, y, s)
    g = jnp.linspace(-7, 7, 561)
    xx = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    unnorm = prior.log_prob(xx) - 0.5 * ((xx @ A.T)[:, 0] - y[0]) ** 2 / s**2
    log_z = jax.nn.logsumexp(unnorm) + 2 * jnp.log(g[1] - g[0])
    ref = unnorm - log_z
    got = post.log_prob(xx)
    keep = ref > -8  # where the posterior has mass
    np.testing.assert_allclose(got[keep], ref[keep], atol=2e-3)
    assert float(jnp.sum(post.weights)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow  # default-suite budget: 15-22 s of compile on 2 cores
def test_gaussian_prior_gives_the_kalman_update():
    key = jax.random.key(0)
    d, m = 5, 3
    k1, k2, k3 = jax.random.split(key, 3)
    L = jax.random.normal(k1, (d, d))
    cov = L @ L.T / d + 0.2 * jnp.eye(d)
    mu = jax.random.normal(k2, (d,))
    A = jax.random.normal(k3, (m, d))
    y = jnp.arange(m, dtype=jnp.float32)
    s = 0.3
    post = linear_gaussian_posterior(gaussian(mu, cov), A, y, s)
    Sinv = np.linalg.inv(np.asarray(A @ cov @ A.T, np.float64) + s**2 * np.eye(m))
    K = np.asarray(cov @ A.T, np.float64) @ Sinv
    np.testing.assert_allclose(post.means[0], mu + K @ (y - A @ mu), atol=1e-4)
    np.testing.assert_allclose(post.covariances[0], cov - K @ np.asarray(A @ cov), atol=1e-4)


@pytest.mark.slow
def test_noiseless_posterior_samples_satisfy_the_constraint_and_vmap_over_y():
    prior = random_mixture(jax.random.key(1), 8, 4)
    A = jax.random.normal(jax.random.key(2), (3, 8))
    ys = prior.sample(jax.random.key(3), 2) @ A.T
    posts = jax.vmap(lambda y: linear_gaussian_posterior(prior, A, y, 0.0))(ys)
    assert posts.means.shape == (2, 4, 8)
    post0 = jax.tree_util.tree_map(lambda a: a[0], posts)
    x = post0.sample(jax.random.key(4), 100)
    np.testing.assert_allclose(x @ A.T, jnp.broadcast_to(ys[0], (100, 3)), atol=2e-3 * float(jnp.abs(ys).max() + 1))


def test_posterior_refuses_bad_shapes():
    prior = ring_mixture()
    with pytest.raises(ValueError, match="A: expected a matrix"):
        prior.posterior(jnp.ones((1, 3)), jnp.ones(1), 0.1)
    with pytest.raises(ValueError, match="y: expected shape"):
        prior.posterior(jnp.ones((1, 2)), jnp.ones(2), 0.1)
    with pytest.raises(ValueError, match="noise_std"):
        prior.posterior(jnp.ones((1, 2)), jnp.ones(1), -0.1)
