"""Toy mixtures: exact scores/log-densities at every t are what the rest of the suite trusts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxscore.data.toy import (
    TOY_SAMPLERS,
    gaussian,
    gaussian_mixture,
    grid_mixture,
    random_mixture,
    ring_mixture,
)
from jaxscore.sde import SubVPSDE, VESDE, VPSDE


def test_log_prob_matches_scipy_full_covariance():
    mix = random_mixture(jax.random.key(0), 3, 2)
    x = mix.sample(jax.random.key(1), 7)
    ref = np.log(sum(
        float(w) * stats.multivariate_normal(np.asarray(m, np.float64), np.asarray(c, np.float64)).pdf(np.asarray(x, np.float64))
        for w, m, c in zip(mix.weights, mix.means, mix.covariances)
    ))
    np.testing.assert_allclose(mix.log_prob(x), ref, rtol=1e-4)


@pytest.mark.parametrize("sde", [VESDE(), VPSDE(), SubVPSDE()], ids=["ve", "vp", "subvp"])
def test_score_t_is_gradient_of_log_prob_t(sde):
    mix = random_mixture(jax.random.key(2), 4, 3)
    x = mix.sample(jax.random.key(3), 6)
    t = jnp.linspace(0.01, 1.0, 6)
    grad = jax.jit(jax.vmap(jax.grad(lambda xi, ti: mix.log_prob_t(xi[None], ti[None], sde)[0])))(x, t)
    np.testing.assert_allclose(mix.score_t(x, t, sde), grad, rtol=1e-4, atol=1e-5)


def test_diffused_mixture_is_a_mixture_of_diffused_components():
    """p_t of the mixture equals the density of alpha x0 + sigma eps estimated by Monte Carlo (component moments)."""
    sde = VPSDE()
    mix = ring_mixture()
    t = jnp.asarray(0.3)
    alpha, sigma = sde.marginal_coefs(t)
    m_t = mix.marginal(alpha, sigma)
    x0, labels = mix.sample_with_labels(jax.random.key(4), 40000)
    xt = alpha * x0 + sigma * jax.random.normal(jax.random.key(5), x0.shape)
    for k in range(mix.num_components):
        sel = np.asarray(labels == k)
        np.testing.assert_allclose(np.mean(np.asarray(xt)[sel], 0), m_t.means[k], atol=0.05)
        np.testing.assert_allclose(np.std(np.asarray(xt)[sel], 0), jnp.sqrt(m_t.eigvals[k]), rtol=0.05)


def test_sampling_weights_and_moments():
    mix = ring_mixture()
    x, labels = mix.sample_with_labels(jax.random.key(6), 50000)
    freq = np.bincount(np.asarray(labels), minlength=8) / 50000
    se = np.sqrt(np.asarray(mix.weights) * (1 - np.asarray(mix.weights)) / 50000)
    assert np.all(np.abs(freq - np.asarray(mix.weights)) < 5 * se)
    np.testing.assert_allclose(jnp.mean(x, 0), mix.mean, atol=0.06)
    np.testing.assert_allclose(jnp.cov(x.T), mix.covariance, atol=0.25)


def test_log_prob_normalises_in_2d():
    mix = grid_mixture(side=3, spacing=2.0, std=0.4)
    g = np.linspace(-6, 6, 401)
    xx, yy = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    dens = np.exp(np.asarray(mix.log_prob(pts), np.float64)).reshape(xx.shape)
    total = np.trapezoid(np.trapezoid(dens, g, axis=1), g)
    assert abs(total - 1.0) < 1e-3


def test_builders_validate():
    with pytest.raises(ValueError, match="weights"):
        gaussian_mixture([0.5, 0.6], [[0.0], [1.0]], stds=[1.0, 1.0])
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_mixture([1.0], [[0.0]])
    with pytest.raises(ValueError, match="positive definite"):
        gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match=r"expected shape \[B, 2\]"):
        ring_mixture().score(jnp.zeros((3, 3)))


@pytest.mark.parametrize("name", sorted(TOY_SAMPLERS))
def test_picture_toys_are_finite_and_bounded(name):
    x = TOY_SAMPLERS[name](jax.random.key(0), 2000)
    assert x.shape == (2000, 2) and bool(jnp.all(jnp.isfinite(x)))
    assert float(jnp.max(jnp.abs(x))) < 3.0
