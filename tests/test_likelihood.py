"""Exact likelihoods through the probability-flow ODE, against closed forms.

What the ODE computes. With the exact score of p_t, the flow maps x ~ p_{t_min} to
z ~ p_T and log p_{t_min}(x) = log p_T(z) + delta(T) exactly. By default ``log_likelihood``
uses the SDE's prior N(0, sigma_T^2 I) for log p_T(z), as score_sde does; for VP with
beta_max = 20, alpha_T = 6.6e-3 and p_T differs from the prior by up to ~0.02 nats/dim for
the 8-D mixture (means of norm ~11). So the tests check
  * with ``prior_log_prob`` = the exact log p_T (8-D mixture): the full estimate against the
    analytic log p_{t_min}(x) within 1e-3 nats per dimension (10x tighter than the 0.01 the
    issue asks; observed ~1e-4 at rtol = atol = 1e-5), and the Hutchinson estimate's mean
    within its Monte-Carlo error of it;
  * with the default prior: the ODE/divergence part delta + log p_T(z) within 1e-3 nats/dim,
    and the full estimate within 0.01 nats per dimension where the prior mismatch allows it
    (ring mixture, 64-D Gaussian).
"""

import math

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from jaxscore.data.toy import gaussian, random_mixture, ring_mixture
from jaxscore.likelihood import bits_per_dim, decode, encode, log_likelihood, mean_and_standard_error
from jaxscore.sde import SubVPSDE, VESDE, VPSDE

KEY = jax.random.key(0)
RING_SETTINGS = {"t_min": None, "divergence": "exact", "solver": "tsit5"}  # None: the SDE's t_min


@pytest.fixture(scope="module")
def ring():
    sde = VPSDE()
    mix = ring_mixture()
    sf = mix.score_fn(sde)
    x = mix.sample(jax.random.key(1), 64)
    logp, info = log_likelihood(KEY, sf, sde, x, return_info=True)
    return sde, mix, sf, x, logp, info


@jax.jit  # one compile instead of dozens of eager op dispatches
def ode_consistency_error(mix, sde, x, info):
    """Per-dimension |delta + log p_T(z) - log p_{t_min}(x)| with the exact p_T."""
    t_min = jnp.full(x.shape[:1], sde.t_min)
    lhs = info["delta_logp"] + mix.log_prob_t(info["z"], jnp.full(x.shape[:1], sde.T), sde)
    return jnp.abs(lhs - mix.log_prob_t(x, t_min, sde)) / mix.dim


def test_exact_likelihood_ring_2d(ring):
    sde, mix, _, x, logp, info = ring
    ref = mix.log_prob_t(x, jnp.full(x.shape[:1], sde.t_min), sde)
    assert logp.shape == (64,)
    assert float(jnp.max(jnp.abs(logp - ref))) / 2 < 0.01
    assert float(jnp.max(ode_consistency_error(mix, sde, x, info))) < 1e-3
    np.testing.assert_allclose(logp, info["prior_logp"] + info["delta_logp"], rtol=1e-6)
    np.testing.assert_allclose(info["prior_logp"], sde.prior_log_prob(info["z"]), rtol=1e-6)
    np.testing.assert_array_equal(info["nfe_per_example"], 6 * info["num_steps"] + 1)


def test_exact_likelihood_random_mixture_8d_under_jit():
    """8-D mixture, data shaped [B, 2, 4] (multi-axis D), solved inside jax.jit with a score_fn
    that closes over the mixture's arrays as traced values."""
    sde = VPSDE()
    mix = random_mixture(jax.random.key(2), 8, 3)
    x = mix.sample(jax.random.key(3), 32)

    def exact_p_T(mix, z):  # the exact terminal marginal, in place of the N(0, I) prior
        return mix.log_prob_t(z.reshape(z.shape[0], 8), jnp.full(z.shape[:1], sde.T), sde)

    @jax.jit
    def run(mix, x_img):
        def sf(y, t):
            return mix.score_t(y.reshape(y.shape[0], 8), t, sde).reshape(y.shape)

        return log_likelihood(KEY, sf, sde, x_img, prior_log_prob=lambda z: exact_p_T(mix, z), return_info=True)

    logp, info = run(mix, x.reshape(32, 2, 4))
    assert logp.shape == (32,) and info["z"].shape == (32, 2, 4)
    np.testing.assert_allclose(info["prior_logp"], exact_p_T(mix, info["z"]), rtol=1e-6)
    info = {**info, "z": info["z"].reshape(32, 8)}
    assert float(jnp.max(ode_consistency_error(mix, sde, x, info))) < 1e-3
    # with the exact p_T the full estimate is log p_{t_min}(x) up to solver error: 1e-3 nats/dim
    ref = mix.log_prob_t(x, jnp.full((32,), sde.t_min), sde)
    np.testing.assert_array_less(np.abs(np.asarray(logp - ref)) / 8, 1e-3)


def test_hutchinson_is_unbiased():
    """Probes are fixed per solve, so delta is linear in the estimator: E[delta_hutch] = delta.
    4 points x 128 copies (each copy gets its own probes via fold_in(key, i)); the mean must
    match the exact value within 4 standard errors (+ the ODE's 1e-3/dim)."""
    sde = VPSDE()
    mix = random_mixture(jax.random.key(2), 8, 3)
    points, copies = 4, 128
    x = jnp.repeat(mix.sample(jax.random.key(4), points), copies, axis=0)
    p_T = lambda z: mix.log_prob_t(z, jnp.full(z.shape[:1], sde.T), sde)  # noqa: E731  exact terminal marginal
    est = log_likelihood(KEY, mix.score_fn(sde), sde, x, divergence="hutchinson", prior_log_prob=p_T)
    est = np.asarray(est).reshape(points, copies)
    ref = np.asarray(mix.log_prob_t(x[::copies], jnp.full((points,), sde.t_min), sde))
    se = est.std(axis=1, ddof=1) / math.sqrt(copies)
    assert np.all(se > 1e-3)  # the probes really are random
    np.testing.assert_array_less(np.abs(est.mean(axis=1) - ref), 4 * se + 8e-3)


@pytest.mark.slow
def test_gaussian_64d_closed_form_under_jit():
    """d = 64 Gaussian with a full covariance, data shaped [B, 8, 8]; the score closes over the
    distribution's arrays, traced by an outer jit. Reference: log N(x; a mu, a^2 S + s^2 I)
    by Cholesky, independent of the mixture code. (Slow: 64 JVPs per evaluation.)"""
    d = 64
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    cov = q @ np.diag(rng.uniform(0.3, 1.5, d)) @ q.T
    mean = 0.3 * rng.standard_normal(d)
    dist = gaussian(mean, cov)
    sde = VPSDE()
    x = dist.sample(jax.random.key(5), 8).reshape(8, 8, 8)

    @jax.jit
    def run(dist, x):
        def sf(y, t):
            return dist.score_t(y.reshape(y.shape[0], d), t, sde).reshape(y.shape)

        return log_likelihood(KEY, sf, sde, x)

    logp = run(dist, x)
    alpha, sigma = (float(v) for v in sde.marginal_coefs(jnp.asarray(sde.t_min)))
    cov_t = alpha**2 * cov + sigma**2 * np.eye(d)
    chol = np.linalg.cholesky(cov_t)
    r = np.linalg.solve(chol, (np.asarray(x).reshape(8, d) - alpha * mean).T)
    ref = -0.5 * (r**2).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * d * math.log(2 * math.pi)
    np.testing.assert_array_less(np.abs(np.asarray(logp) - ref) / d, 0.01)


def test_encode_decode_roundtrip(ring):
    sde, _, sf, x, _, info = ring
    z = encode(sf, sde, x)
    np.testing.assert_allclose(z, info["z"], atol=1e-3)  # the same flow as the likelihood's
    x_back = decode(sf, sde, z)
    np.testing.assert_allclose(x_back, x, atol=1e-3)
    np.testing.assert_array_equal(encode(sf, sde, x), z)  # deterministic


def _ring_pixels(mix, num, lo=-8.0, hi=8.0):
    x = np.asarray(mix.sample(jax.random.key(1), num))
    return np.clip(np.floor((x - lo) / (hi - lo) * 256), 0, 255).astype(np.uint8)


def test_bits_per_dim_uint8(ring):
    """uint8 pixels of the ring on data_range (-8, 8); same shapes and options as the ring
    likelihood, so the compiled solve is reused."""
    sde, mix, sf, _, _, _ = ring
    k = _ring_pixels(mix, 64)
    bpd, info = bits_per_dim(KEY, sf, sde, k, data_range=(-8.0, 8.0), return_info=True,
                             **RING_SETTINGS)  # log_likelihood's defaults, as the ring fixture
    x = np.asarray(info["x"])
    assert bpd.shape == (64,) and bool(jnp.all(bpd > 0))
    # dequantised inside the right bins: x = lo + (hi - lo)(k + u)/256, u in [0, 1)
    np.testing.assert_array_equal(np.floor((x + 8.0) / 16.0 * 256).astype(np.uint8), k)
    assert np.all(np.abs((x + 8.0) / 16.0 * 256 - k - 0.5) > 0)  # noise added, not bin centres
    d, log_delta = 2, math.log(16.0 / 256)
    expected = -(np.asarray(info["log_likelihood"]) + d * log_delta) / (d * math.log(2))
    np.testing.assert_allclose(bpd, expected, rtol=1e-6)
    # against the analytic density at the dequantised points (0.01 nats/dim -> 0.0145 bits/dim)
    ref = mix.log_prob_t(jnp.asarray(x), jnp.full((64,), sde.t_min), sde)
    analytic = -(np.asarray(ref) + d * log_delta) / (d * math.log(2))
    np.testing.assert_array_less(np.abs(np.asarray(bpd) - analytic), 0.01 / math.log(2))


def test_bits_per_dim_input_checks(ring):
    sde, mix, sf, _, _, _ = ring
    k = _ring_pixels(mix, 4)
    x_float = (k.astype(np.float32) + 0.5) / 256 * 2 - 1
    with pytest.raises(ValueError, match="dequantize=False"):
        bits_per_dim(KEY, sf, sde, x_float)  # float without declared range
    with pytest.raises(ValueError, match="dequantize=False"):
        bits_per_dim(KEY, sf, sde, x_float, data_range=(-1.0, 1.0))  # dequantize left on
    with pytest.raises(ValueError, match="expected values in"):
        bits_per_dim(KEY, sf, sde, 3.0 * x_float, data_range=(-1.0, 1.0), dequantize=False)
    with pytest.raises(ValueError, match="expected values in"):
        bits_per_dim(KEY, sf, sde, np.full((4, 2), 300, np.int32))
    with pytest.raises(ValueError, match="dequantised"):
        bits_per_dim(KEY, sf, sde, k, dequantize=False)
    with pytest.raises(ValueError, match="data_range"):
        bits_per_dim(KEY, sf, sde, k, data_range=(1.0, -1.0))


def test_log_likelihood_argument_checks(ring):
    sde, _, sf, x, _, _ = ring
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(KEY, sf, sde, x, divergence="skilling")
    with pytest.raises(ValueError, match="probe"):
        log_likelihood(KEY, sf, sde, x, divergence="hutchinson", probe="uniform")
    with pytest.raises(ValueError, match="num_probes"):
        log_likelihood(KEY, sf, sde, x, divergence="hutchinson", num_probes=0)
    with pytest.raises(TypeError, match="floating"):
        log_likelihood(KEY, sf, sde, x.astype(jnp.int32))
    with pytest.raises(ValueError, match="adaptive"):
        log_likelihood(KEY, sf, sde, x, solver="euler")
    with pytest.raises(TypeError, match="prior_log_prob"):
        log_likelihood(KEY, sf, sde, x, prior_log_prob=0.0)
    with pytest.raises(ValueError, match=r"prior_log_prob: expected output of shape \[B\]"):
        log_likelihood(KEY, sf, sde, x, prior_log_prob=lambda z: z)  # [B, 2], not [B]


@pytest.mark.slow
@pytest.mark.parametrize("sde", [VESDE(), SubVPSDE()], ids=["VE", "subVP"])
def test_exact_likelihood_ring_other_sdes(sde):
    mix = ring_mixture()
    x = mix.sample(jax.random.key(1), 64)
    _, info = log_likelihood(KEY, mix.score_fn(sde), sde, x, return_info=True)
    assert float(jnp.max(ode_consistency_error(mix, sde, x, info))) < 1e-3


@pytest.mark.slow
def test_bits_per_dim_range_check_under_jit(ring):
    sde, mix, sf, _, _, _ = ring
    x = jnp.full((4, 2), 2.0)
    run = jax.jit(lambda x: bits_per_dim(KEY, sf, sde, x, data_range=(-1.0, 1.0), dequantize=False))
    with pytest.raises(Exception, match="outside"):
        jax.block_until_ready(run(x))


# --- non-finite input and keys (issue 11): refused before any solve, naming the rows ------------

def _counting_score(calls):
    def score(x, t):
        calls.append(1)  # runs when traced: no call means no solve was built
        return -x
    return score


def test_nonfinite_rows_rejected_up_front():
    """A NaN or inf row is a ValueError naming the rows before any solve (today: the adaptive solve
    of that row runs to max_steps, ~10 s, and reports "maximum number of solver steps")."""
    sde, calls = VPSDE(), []
    x = np.ones((5, 2), np.float32)
    x[1, 0], x[3, 1] = np.nan, -np.inf
    pattern = r"^x: expected finite values, got NaN or inf in 2 of 5 rows \(rows 1, 3\)\.$"
    with pytest.raises(ValueError, match=pattern):
        log_likelihood(KEY, _counting_score(calls), sde, jnp.asarray(x))
    with pytest.raises(ValueError, match=pattern):
        bits_per_dim(KEY, _counting_score(calls), sde, x * 0.5, data_range=(-1.0, 1.0), dequantize=False)
    with pytest.raises(ValueError, match=pattern):
        encode(_counting_score(calls), sde, x)
    with pytest.raises(ValueError, match=pattern.replace("x:", "z:")):
        decode(_counting_score(calls), sde, x)
    assert calls == []


def test_nonfinite_rows_rejected_under_jit():
    """Traced input: the same check as an equinox.error_if, raised when the compiled call runs."""
    sde = VPSDE()
    run = jax.jit(lambda x: log_likelihood(KEY, lambda x, t: -x, sde, x, solver="euler", steps=2))
    x = jnp.ones((3, 2)).at[2, 1].set(jnp.nan)
    with pytest.raises(Exception, match="x: expected finite values, got NaN or inf in some rows"):
        jax.block_until_ready(run(x))
    assert np.all(np.isfinite(np.asarray(run(jnp.ones((3, 2))))))  # finite input still runs


def test_likelihood_key_must_be_a_prng_key():
    sde = VPSDE()
    x = jnp.zeros((2, 2))
    with pytest.raises(TypeError, match=r"^key: expected a PRNG key.*pass jax\.random\.key\(0\)"):
        log_likelihood(0, lambda x, t: -x, sde, x)
    with pytest.raises(TypeError, match=r"^key: expected a PRNG key.*pass jax\.random\.key\(0\)"):
        bits_per_dim(0, lambda x, t: -x, sde, np.zeros((2, 2), np.uint8))


def test_likelihood_solve_that_cannot_finish_names_the_likely_cause():
    """Finite input, a score_fn returning NaN: the adaptive solve rejects every step; the error
    names log_likelihood, max_steps and the NaN cause instead of diffrax's bare "maximum number of
    solver steps was reached"."""
    sde = VPSDE()
    broken = lambda x, t: jnp.where(x[:, :1] > 0.5, jnp.nan, -x)  # noqa: E731
    x = jnp.asarray([[1.0, 0.0], [-1.0, 0.0]])
    with pytest.raises(Exception, match=r"log_likelihood: the adaptive solve of some rows did not reach its end "
                                         r"time within max_steps=16 steps\. A score_fn returning NaN or inf"):
        jax.block_until_ready(log_likelihood(KEY, broken, sde, x, max_steps=16))


# --- score_sde-comparable bits/dim against a Gaussian's closed form (issue 14) -----------------
#
# "Images" of D = 4 pixels ([B, 2, 2, 1], 256 levels on [-1, 1]) whose model is the exact score of
# N(mu, S) diffused by the VP SDE: p_t = N(a_t mu, C_t), C_t = a_t^2 S + s_t^2 I. S has eigenvalues
# 0.005..0.02 (pixel-like spread), so p_{1e-5} and p_{1e-3} differ measurably. For a pixel vector k
# dequantised as x = -1 + D(k + u), D = 2/256, u ~ U[0,1)^4, the expected bits/dim is closed form:
#   E_u[-log N(x; m, C)] = (D log 2 pi + log|C| + (c - m)^T P (c - m) + (D^2/12) tr P) / 2,
#   c = -1 + D(k + 1/2), P = C^{-1};   E_u[bpd] = (E_u[-log p] - D log D) / (D ln 2).
# The references below are numpy float64, independent of jaxscore.data.toy.

GAUSS_D = 4
GAUSS_DELTA = 2.0 / 256


@pytest.fixture(scope="module")
def pixel_gaussian():
    rng = np.random.default_rng(14)
    q = np.linalg.qr(rng.standard_normal((GAUSS_D, GAUSS_D)))[0]
    lam = rng.uniform(0.005, 0.02, GAUSS_D)
    mean = 0.3 * rng.standard_normal(GAUSS_D)
    sde = VPSDE()
    qj, lamj, meanj = jnp.asarray(q, jnp.float32), jnp.asarray(lam, jnp.float32), jnp.asarray(mean, jnp.float32)

    def score_fn(x, t):  # exact score of p_t: -C_t^{-1}(x - a_t mu), [B, 2, 2, 1] -> [B, 2, 2, 1]
        a, s = sde.marginal_coefs(t)
        y = (x.reshape(x.shape[0], GAUSS_D) - a[:, None] * meanj) @ qj
        return (-(y / (a[:, None] ** 2 * lamj + s[:, None] ** 2)) @ qj.T).reshape(x.shape)

    def moments(t):
        a, s = (float(v) for v in sde.marginal_coefs(jnp.asarray(t, jnp.float32)))
        cov = q @ np.diag(a**2 * lam + s**2) @ q.T
        return a * mean, cov

    def log_density(x, t):  # log N(x; a_t mu, C_t), x: [N, D] float64
        m, cov = moments(t)
        r = np.asarray(x, np.float64).reshape(-1, GAUSS_D) - m
        _, logdet = np.linalg.slogdet(cov)
        return -0.5 * (np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov), r) + logdet + GAUSS_D * math.log(2 * math.pi))

    def expected_bpd(k, t):  # closed-form E_u[bpd] of pixel vectors k: [N, 2, 2, 1]
        m, cov = moments(t)
        prec = np.linalg.inv(cov)
        r = -1.0 + GAUSS_DELTA * (np.asarray(k, np.float64).reshape(-1, GAUSS_D) + 0.5) - m
        nll = 0.5 * (GAUSS_D * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1]
                     + np.einsum("ni,ij,nj->n", r, prec, r) + GAUSS_DELTA**2 / 12 * np.trace(prec))
        return (nll - GAUSS_D * math.log(GAUSS_DELTA)) / (GAUSS_D * math.log(2))

    def pixels(num, seed):
        x = mean + rng_normal(seed, num) @ (q * np.sqrt(lam)).T
        return np.clip(np.floor((x + 1) / 2 * 256), 0, 255).astype(np.uint8).reshape(num, 2, 2, 1)

    def rng_normal(seed, num):
        return np.random.default_rng(seed).standard_normal((num, GAUSS_D))

    m_T, cov_T = moments(sde.T)
    prec_T, logdet_T = jnp.asarray(np.linalg.inv(cov_T), jnp.float32), float(np.linalg.slogdet(cov_T)[1])

    def log_p_T(z):  # exact log p_T(z) in place of the N(0, I) prior: [B, 2, 2, 1] -> [B]
        r = z.reshape(z.shape[0], GAUSS_D) - jnp.asarray(m_T, jnp.float32)
        return -0.5 * (jnp.einsum("ni,ij,nj->n", r, prec_T, r) + logdet_T + GAUSS_D * math.log(2 * math.pi))

    return sde, score_fn, log_density, log_p_T, expected_bpd, pixels


def test_bits_per_dim_defaults_are_score_sde_and_unbiased(pixel_gaussian):
    """Default settings (score_sde's: t_min 1e-5, Hutchinson with one Rademacher probe, dopri5 at
    rtol = atol = 1e-5, N(0, I) prior, +7 offset) on 64 images x 4 dequantisation draws: the mean
    over images of (bpd - closed-form E_u[bpd]) is 0 within 4 standard errors (paired over images)
    plus the solver's 1e-3 nats/dim. (The N(0, I) prior's error, -a_T mu.z per row, averages to
    -a_T^2 |mu|^2 / 2 ~ 1e-5 nats over z ~ p_T.)"""
    sde, score_fn, _, _, expected_bpd, pixels = pixel_gaussian
    k = pixels(64, 0)
    bpd, info = bits_per_dim(KEY, score_fn, sde, k, dequant_draws=4, return_info=True)
    assert info["t_min"] == 1e-5 and bpd.shape == (64,) and info["bpd_draws"].shape == (4, 64)
    assert info["x"].shape == (256, 2, 2, 1) and info["log_likelihood"].shape == (256,)
    np.testing.assert_allclose(bpd, np.asarray(info["bpd_draws"]).mean(0), rtol=1e-6)
    # bits/dim = -log2 p(x)/D + log2(256/2) = ... + 7: score_sde's offset for data on [-1, 1]
    np.testing.assert_allclose(np.asarray(info["bpd_draws"]).reshape(-1),
                               -np.asarray(info["log_likelihood"]) / (GAUSS_D * math.log(2)) + 7.0, rtol=1e-6)
    # every draw dequantises inside its pixel's bin, and the draws differ
    x = np.asarray(info["x"]).reshape(4, 64, GAUSS_D)
    np.testing.assert_array_equal(np.floor((x + 1) / GAUSS_DELTA).astype(np.uint8),
                                  np.broadcast_to(k.reshape(64, GAUSS_D), x.shape))
    assert np.all(x[0] != x[1])
    dev = np.asarray(bpd) - expected_bpd(k, 1e-5)
    mean, sem = mean_and_standard_error(dev)
    assert 0 < sem < 0.05
    assert abs(mean) < 4 * sem + 1e-3 / math.log(2), (mean, sem)


def test_dequant_draws_shrink_the_error_as_one_over_sqrt_k(pixel_gaussian):
    """16 images x 16 draws (default settings; 256 rows, the solve compiled by the test above): the
    draws are independent, so the spread of an image's 16-draw mean around its closed-form
    E_u[bpd] (dequantisation + probe noise) is ~1/4 of a single draw's (0.16..0.4 allowed: the
    sampling error of two standard deviations from 16 and 256 values); correlated draws would
    give ~1. The per-image means are unbiased."""
    sde, score_fn, _, _, expected_bpd, pixels = pixel_gaussian
    k = pixels(16, 1)
    bpd16, info = bits_per_dim(KEY, score_fn, sde, k, dequant_draws=16, return_info=True)
    expected = expected_bpd(k, 1e-5)
    dev16 = np.asarray(bpd16) - expected
    dev1 = np.asarray(info["bpd_draws"]) - expected  # [16 draws, 16 images]: single-draw deviations
    mean, sem = mean_and_standard_error(dev16)
    assert abs(mean) < 4 * sem + 1e-3 / math.log(2), (mean, sem)
    ratio = np.std(dev16, ddof=1) / np.std(dev1, ddof=1)
    assert 0.16 < ratio < 0.4, ratio


def test_exact_likelihood_equals_gaussian_closed_form_at_t_min(pixel_gaussian):
    """Exact divergence and the exact p_T = N(a_T mu, C_T) as prior: each solved row's
    log-likelihood equals log N(x; a mu, C) at t = 1e-5 within 1e-3 nats/dim, hence also log N(x; mu, S)
    of the data distribution itself (t = 0; the truncation costs ~ s_t^2 tr(S^-1)/2 ~ 2e-4 nats),
    while log p_{1e-3} (this SDE's sampling t_min) is off by several times more: the default t_min is 1e-5."""
    sde, score_fn, log_density, log_p_T, _, pixels = pixel_gaussian
    k = pixels(64, 3)
    _, info = bits_per_dim(KEY, score_fn, sde, k, dequant_draws=4, divergence="exact", prior_log_prob=log_p_T,
                           return_info=True)
    x, logp = np.asarray(info["x"]), np.asarray(info["log_likelihood"])
    err = np.abs(logp - log_density(x, 1e-5)) / GAUSS_D
    assert err.max() < 1e-3, err.max()
    assert np.abs(logp - log_density(x, 0.0)).max() / GAUSS_D < 1e-3
    assert np.mean(np.abs(logp - log_density(x, sde.t_min))) / GAUSS_D > 5 * err.mean()


def test_mean_and_standard_error():
    mean, sem = mean_and_standard_error([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and sem == pytest.approx(np.std([1, 2, 3, 6], ddof=1) / 2)
    assert math.isnan(mean_and_standard_error([2.5])[1])
    with pytest.raises(ValueError, match="at least one"):
        mean_and_standard_error([])


def test_dequant_draws_checks(pixel_gaussian):
    sde, score_fn, _, _, _, pixels = pixel_gaussian
    k = pixels(2, 2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="dequant_draws: expected an int >= 1"):
            bits_per_dim(KEY, score_fn, sde, k, dequant_draws=bad)
    x = (k.astype(np.float32) + 0.5) * GAUSS_DELTA - 1
    with pytest.raises(ValueError, match="already dequantised"):
        bits_per_dim(KEY, score_fn, sde, x, data_range=(-1.0, 1.0), dequantize=False, dequant_draws=2)
    with pytest.raises(ValueError, match="rtol: expected a finite number > 0"):
        bits_per_dim(KEY, score_fn, sde, k, rtol=0.0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        bits_per_dim(KEY, score_fn, sde, k, tolerance=1e-3)
