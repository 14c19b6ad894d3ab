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
from jaxscore.likelihood import bits_per_dim, decode, encode, log_likelihood
from jaxscore.sde import SubVPSDE, VESDE, VPSDE

KEY = jax.random.key(0)


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
    bpd, info = bits_per_dim(KEY, sf, sde, k, data_range=(-8.0, 8.0), return_info=True)
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
