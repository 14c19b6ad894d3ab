"""Hyvärinen's identities for explicit / implicit / sliced score matching, against closed forms.

Monte-Carlo comparisons use fixed seeds and assert agreement within 5 standard errors
(estimated from the same draws), so they fail for a biased estimator, not by chance.

Runtime notes: data and parameters come from numpy, every loss runs under one ``jit``, and
the probe keys are "rbg" keys. The losses take any key; on XLA:CPU a jitted function that
hashes with the default (partitionable) threefry compiles for seconds, rbg in ~0.3 s.
tests/test_losses.py exercises the default threefry keys.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from jaxscore import losses as L
from jaxscore.data import toy

Z_BOUND = 5.0  # standard errors allowed for Monte-Carlo agreement


def _keys(seed, num):
    """``num`` independent rbg keys, seeded directly (splitting would compile a threefry hash)."""
    return jax.vmap(lambda s: jax.random.key(s, impl="rbg"))(seed * 100_003 + jnp.arange(num))


def _mlp_init(seed, d, hidden=16, scale=2.0):
    rng = np.random.default_rng(seed)
    f32 = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)  # noqa: E731
    return {
        "w1": scale * f32(d, hidden) / np.sqrt(d),
        "b1": 0.5 * f32(hidden),
        "w2": scale * f32(hidden, hidden) / np.sqrt(hidden),
        "w3": scale * f32(hidden, d) / np.sqrt(hidden),
    }


def _mlp(p, x):
    """A nonlinear score model s(x): [B, d] -> [B, d] with a full, non-symmetric Jacobian."""
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = jnp.tanh(h @ p["w2"])
    return h @ p["w3"] - x


def _linear(p, x):
    return x @ p["A"].T + p["b"]


# two-component mixture in 2-D (smooth enough that Monte-Carlo errors stay small)
MIX_W, MIX_MU, MIX_STD = np.array([0.3, 0.7]), np.array([[-1.0, 0.5], [1.0, -0.5]]), np.array([0.8, 0.6])


def _mixture():
    return toy.gaussian_mixture(MIX_W, MIX_MU, stds=MIX_STD)


def _mixture_sample(seed, n, d=2):
    """n draws from the mixture (numpy); d = 4 appends a scaled copy (a 4-D point cloud)."""
    rng = np.random.default_rng(seed)
    comp = rng.choice(2, size=n, p=MIX_W)
    x = MIX_MU[comp] + MIX_STD[comp, None] * rng.standard_normal((n, 2))
    if d == 4:
        x = np.concatenate([x, 0.5 * x[:, ::-1] + 0.3 * rng.standard_normal((n, 2))], axis=1)
    return jnp.asarray(x, jnp.float32)


def _within(estimates, reference):
    estimates = np.asarray(estimates, np.float64)
    mean = estimates.mean()
    se = np.sqrt(estimates.var(ddof=1) / estimates.size)
    assert abs(mean - reference) < Z_BOUND * se, f"MC mean {mean:.5f} vs {reference:.5f} (se {se:.2g})"
    return se


MEAN = np.array([0.5, -1.0, 2.0])
COV = np.array([[1.0, 0.3, 0.1], [0.3, 0.6, -0.2], [0.1, -0.2, 0.9]])


def _moment_matched_gaussian(seed, n, mean, cov):
    """n points whose empirical mean and (1/n) covariance equal ``mean`` and ``cov`` exactly."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / n)).T
    return jnp.asarray(mean + z @ np.linalg.cholesky(cov).T, jnp.float32)


def test_esm_minus_ism_is_the_same_constant_for_any_linear_model():
    # For s(x) = A x + b and Gaussian data, E[s^T grad log p] = -tr A = -E[div s] depends only on
    # the first two moments, so on a moment-matched sample the identity is exact:
    # ESM - ISM = 1/2 E||grad log p||^2 = 1/2 tr(Sigma^-1).
    x = _moment_matched_gaussian(0, 4000, MEAN, COV)
    prec = np.linalg.inv(COV)
    true_score = lambda y: -(y - MEAN) @ prec  # noqa: E731

    @jax.jit
    def esm_and_ism(p):
        return L.explicit_score_matching(_linear, p, x, true_score), L.implicit_score_matching(_linear, p, x)

    const = 0.5 * np.trace(prec)
    diffs = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        p = {"A": jnp.asarray(2.0 * rng.standard_normal((3, 3)), jnp.float32),
             "b": jnp.asarray(rng.standard_normal(3), jnp.float32)}
        esm, ism = esm_and_ism(p)
        diffs.append(float(esm - ism))
        assert esm > 1.0  # the two settings are far from the optimum: a real test of the identity
    np.testing.assert_allclose(diffs, [const, const], rtol=2e-3)


def test_esm_minus_ism_constant_for_a_nonlinear_model_in_expectation():
    # Per example, ESM - ISM - 1/2||grad log p||^2 = -s^T grad log p - div s, which has mean 0
    # (integration by parts) for any smooth s; check for two random MLPs on a mixture.
    gm = _mixture()
    x = _mixture_sample(3, 20000)

    @jax.jit
    def terms(p):
        one = lambda xi: (  # noqa: E731  (a batch of one example -> that example's loss)
            L.explicit_score_matching(_mlp, p, xi[None], gm.score),
            L.implicit_score_matching(_mlp, p, xi[None]),
        )
        esm, ism = jax.vmap(one)(x)
        half_s2 = 0.5 * jnp.sum(_mlp(p, x) ** 2, -1)
        return esm - ism - 0.5 * jnp.sum(gm.score(x) ** 2, axis=-1), esm - ism, ism - half_s2

    diffs = []
    for seed in (4, 5):
        gap, diff, div = terms(_mlp_init(seed, 2))
        se = _within(gap, 0.0)
        # E[div s] is far from 0, so a sign error in the divergence would shift the gap by many se
        assert 2 * abs(float(jnp.mean(div))) > 4 * Z_BOUND * se
        diffs.append(np.asarray(diff))
    _within(diffs[0] - diffs[1], 0.0)


def test_ism_minimiser_of_a_gaussian_model_is_the_mle():
    # s(x) = -P (x - mu) = A x + c with A = -P, c = P mu: ISM is quadratic in (A, c), so one
    # Newton step from anywhere lands on its minimiser, which must be the Gaussian MLE:
    # mu = sample mean, P = inverse of the (1/n) sample covariance.
    xs = np.random.default_rng(6).multivariate_normal(MEAN, COV, 500)
    x = jnp.asarray(xs, jnp.float32)
    flat0, unravel = ravel_pytree({"A": -jnp.eye(3), "b": jnp.zeros(3)})
    loss = lambda f: L.implicit_score_matching(_linear, unravel(f), x)  # noqa: E731

    @jax.jit
    def newton(f):
        f = f - jnp.linalg.solve(jax.hessian(loss)(f), jax.grad(loss)(f))
        return f, jax.grad(loss)(f)

    flat, grad = newton(flat0)
    p = unravel(flat)
    precision = -np.asarray(p["A"], np.float64)
    mu = np.linalg.solve(precision, np.asarray(p["b"], np.float64))
    np.testing.assert_allclose(mu, xs.mean(0), atol=2e-4)
    np.testing.assert_allclose(precision, np.linalg.inv(np.cov(xs.T, bias=True)), atol=2e-3)
    assert float(jnp.max(jnp.abs(grad))) < 1e-3


def test_hutchinson_ism_is_unbiased_for_exact_ism():
    x = _mixture_sample(7, 32, d=4)
    p = _mlp_init(8, 4)
    variants = [("rademacher", 1), ("gaussian", 3)]

    @jax.jit
    def run(keys):
        exact = L.implicit_score_matching(_mlp, p, x, divergence="exact")
        hutch = [
            jax.vmap(
                lambda k: L.implicit_score_matching(
                    _mlp, p, x, divergence="hutchinson", key=k, probe=probe, num_probes=n
                )
            )(keys)
            for probe, n in variants
        ]
        return exact, hutch

    exact, hutch = run(_keys(9, 3000))
    for variant, est in zip(variants, hutch):
        assert float(jnp.std(est)) > 1e-3, variant  # a genuinely random estimator
        _within(est, float(exact))


def test_sliced_score_matching_equals_ism_in_expectation():
    x = _mixture_sample(10, 32, d=4)
    p = _mlp_init(11, 4)
    variants = [(vr, probe) for vr in (False, True) for probe in ("rademacher", "gaussian")]

    @jax.jit
    def run(keys):
        exact = L.implicit_score_matching(_mlp, p, x)
        ssm = [
            jax.vmap(
                lambda k: L.sliced_score_matching(
                    _mlp, p, k, x, num_projections=2, variance_reduced=vr, probe=probe
                )
            )(keys)
            for vr, probe in variants
        ]
        return exact, ssm

    exact, ssm = run(_keys(12, 3000))
    for variant, est in zip(variants, ssm):
        assert float(jnp.std(est)) > 1e-3, variant
        _within(est, float(exact))
    # SSM-VR replaces 1/2 (v^T s)^2 by its expectation 1/2 ||s||^2: lower variance
    assert float(jnp.var(ssm[3])) < float(jnp.var(ssm[1]))
    assert float(jnp.var(ssm[2])) < float(jnp.var(ssm[0]))


def test_score_model_with_time_input_and_reduce_mean():
    # t= passes a fixed time to apply(params, x, t); reduce_mean divides the d-sum by d.
    x = jnp.asarray(np.random.default_rng(16).standard_normal((8, 3)), jnp.float32)
    seen = {}

    def apply(p, y, t):
        seen["t"] = t.shape
        return -p * y * (1.0 + t[:, None])

    @jax.jit
    def run(p):
        return (
            L.implicit_score_matching(apply, p, x, t=0.25),
            L.implicit_score_matching(apply, p, x, t=0.25, reduce_mean=True),
            L.explicit_score_matching(apply, p, x, -x, t=0.25),
        )

    total, mean, esm = run(0.5)
    assert seen["t"] == (8,)
    expected = jnp.mean(0.5 * jnp.sum((0.625 * x) ** 2, -1) - 3 * 0.625)
    np.testing.assert_allclose(total, expected, rtol=1e-5)
    np.testing.assert_allclose(mean, expected / 3, rtol=1e-5)
    np.testing.assert_allclose(esm, jnp.mean(0.5 * jnp.sum((0.375 * x) ** 2, -1)), rtol=1e-5)
