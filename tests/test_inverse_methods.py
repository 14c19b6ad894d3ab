"""Inverse-problem methods against exact posteriors (jaxscore.data.toy.linear_gaussian_posterior).

Gaussian prior N(mu, v I): ΠGDM's score is the exact posterior score at every t, for any operator
(diagonal, SVD and CG solves); DDRM with eta = 0 and noiseless y is exact in the observed spectral
coordinates and, there being no coupling for an isotropic prior, converges to the exact posterior
in the missing ones (score_sde's replacement likewise).

Gaussian mixtures (2-D ring, 8-D random mixture; mask, circular blur, random dense operator): each
method's samples against the exact posterior mixture, with jaxscore.metrics.mixture_sample_error:
``error`` (per-mode std / mean error in posterior stds) and ``tv`` (mode-weight total variation). All
these methods but ΠGDM-on-a-Gaussian are approximations: each test states the method's measured error
(benchmark: experiments/benchmarks/inverse.py) and bounds it loosely, and checks that the bound
rejects samples that ignore y (the prior's).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore.data.toy import gaussian, random_mixture, ring_mixture
from jaxscore.inverse import (
    Blur,
    DenseOperator,
    FunctionOperator,
    Inpainting,
    SuperResolution,
    ddrm_sample,
    dps,
    dps_sample,
    pigdm,
    replacement_sample,
)
from jaxscore.metrics import mixture_sample_error
from jaxscore.samplers import sample
from jaxscore.sde import VESDE, VPSDE

NOISE_STD = 0.3
ZETA = 0.05  # the DPS paper sampler's zeta for these 2-D / 8-D problems at 100 steps (see the benchmark)
DATA_VAR: dict = {}


def _flat_score(score_fn, shape):
    """A flat [B, d] score seen on [B, *shape] examples (for image-shaped operators)."""
    return lambda x, t: score_fn(x.reshape(x.shape[0], -1), t).reshape(x.shape)


def _kernel8():
    k = np.zeros((1, 8))
    k[0, [0, 1, 7]] = [0.5, 0.25, 0.25]  # even on the 8-torus
    return k


# --- Gaussian prior: exact ----------------------------------------------------------------------

@pytest.mark.parametrize("sde", [VPSDE(), pytest.param(VESDE(), marks=pytest.mark.slow)], ids=["vp", "ve"])
def test_pigdm_is_the_exact_posterior_score_for_a_gaussian_prior_with_any_operator(sde):
    """grad log p_t(x_t | y) of the diffused exact posterior, for non-diagonal A A^T (blur, dense,
    a generic function) through the SVD and through CG: relative error < 1e-4 at t in [0.02, 1]."""
    d, v, shape = 8, 1.7, (1, 8, 1)
    prior = gaussian(np.linspace(-1, 1, d), v * np.eye(d))
    ops = {"blur": Blur(_kernel8(), shape),
           "dense": DenseOperator(np.random.default_rng(0).standard_normal((3, d)), shape),
           "function": FunctionOperator(lambda x: x[:, :, ::2] + 0.5 * x[:, :, 1::2], shape),
           "superres": SuperResolution((2, 4, 1), 2)}
    x = 2.0 * jax.random.normal(jax.random.key(0), (16, d))
    t = jnp.linspace(0.02, 1.0, 16)
    score = prior.score_fn(sde)

    def all_scores(x, t):
        out = {}
        for name, op in ops.items():
            a = op.matrix()
            y1 = jnp.asarray(np.random.default_rng(1).standard_normal(a.shape[0]), jnp.float32)
            want = prior.posterior(a, y1, NOISE_STD).score_t(x, t, sde)
            y = jnp.broadcast_to(y1.reshape(op.out_shape), (16,) + op.out_shape)
            for solver in ("auto", "cg"):
                guided = pigdm(_flat_score(score, op.in_shape), sde, op, y, noise_std=NOISE_STD, data_var=v,
                               solver=solver)
                out[name, solver] = (guided(x.reshape((16,) + op.in_shape), t).reshape(16, d), want)
        return out

    for (name, solver), (got, want) in jax.jit(all_scores)(x, t).items():
        rel = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
        assert rel < 1e-4, (name, solver, rel)


@pytest.mark.slow
def test_ddrm_and_replacement_on_a_gaussian_prior_with_noiseless_observations():
    """Isotropic Gaussian prior, noiseless y, dense A (2 x 4), 100 uniform steps: DDRM (eta = 0) and the
    replacement method return samples with A x = y (DDRM: up to its last step's noise, which its final
    x0_hat keeps) and the exact posterior mean and covariance; samples that ignore y do not.
    Measured (4000 samples): DDRM mean / covariance error 0.019 / 0.039 (0.004 / 0.018 at 300 steps; with
    eta = 0.85 the covariance error stays ~0.2: DDRM is not exact there), replacement 0.020 / 0.036."""
    d, m, v, n, sde = 4, 2, 1.0, 4000, VPSDE()
    mu = np.array([0.5, -1.0, 0.3, 0.0])
    prior = gaussian(mu, v * np.eye(d))
    a = np.random.default_rng(0).standard_normal((m, d))
    op = DenseOperator(a)
    y1 = np.array([1.0, -0.5], np.float32)
    post = prior.posterior(a, y1, 0.0)
    pm, pc = np.asarray(post.means[0], np.float64), np.asarray(post.covariances[0], np.float64)
    y = jnp.broadcast_to(jnp.asarray(y1), (n, m))
    sf = prior.score_fn(sde)
    run = jax.jit(lambda k: {"ddrm": ddrm_sample(k, sf, sde, op, y, noise_std=0.0, eta=0.0, steps=100, return_info=True),
                             "replacement": replacement_sample(k, sf, sde, op, y, steps=100, return_info=True),
                             "prior": (prior.sample(k, n), None)})
    mc = 4 * np.sqrt(np.diag(pc).max() / n)
    for name, (x, info) in run(jax.random.key(0)).items():
        x = np.asarray(x, np.float64)
        consistency = np.abs(x @ a.T - y1).max()
        mean_err, cov_err = np.abs(x.mean(0) - pm).max(), np.abs(np.cov(x.T) - pc).max()
        if name == "prior":
            assert consistency > 1.0 and max(mean_err, cov_err) > 0.3
            continue
        assert info["nfe"] == 100
        alpha, sigma = sde.marginal_coefs(info["ts"][-2])
        last_noise = 5 * float(sigma / alpha) * np.linalg.norm(a, 2)  # DDRM's final x0_hat keeps this much
        assert consistency < (last_noise if name == "ddrm" else 1e-3), (name, consistency, last_noise)
        assert mean_err < mc and cov_err < 0.06, (name, mean_err, cov_err, mc)


# --- Gaussian mixtures: each method's error vs the exact posterior ------------------------------

def _case(name):
    """(prior, operator, y [1, *M], exact posterior) of a named case (as in the benchmark)."""
    rng = np.random.default_rng(0)
    if name.startswith("ring"):
        prior = ring_mixture()
        op, x_true = {"ring_mask": (Inpainting(jnp.array([1.0, 0.0])), np.array([2.0, 2.0])),
                      "ring_blur": (Blur(np.array([[0.7, 0.3]]), (1, 2, 1)), np.array([3.0, 1.0])),
                      "ring_dense": (DenseOperator(rng.standard_normal((1, 2))), np.array([-2.0, 3.0]))}[name]
    else:
        prior = random_mixture(jax.random.key(3), 8, 4)
        pair = {"mix8_mask": (0, 2), "mix8_blur": (1, 3), "mix8_dense": (0, 2)}[name]
        x_true = 0.5 * np.asarray(prior.means)[list(pair)].sum(0)  # between two modes: a bimodal posterior
        op = {"mix8_mask": Inpainting(jnp.array([1.0, 0, 1, 0, 1, 0, 0, 1])),
              "mix8_blur": Blur(_kernel8(), (1, 8, 1)),
              "mix8_dense": DenseOperator(rng.standard_normal((3, 8)) / np.sqrt(8))}[name]
    a = np.asarray(op.matrix(), np.float64)
    y1 = a @ x_true + NOISE_STD * np.random.default_rng(1).standard_normal(a.shape[0])
    return prior, op, jnp.asarray(y1, jnp.float32).reshape((1,) + op.out_shape), prior.posterior(a, y1, NOISE_STD)


def _method_samples(method, prior, op, y, n, nfe, key):
    """``n`` samples [n, d] of ``method`` (exact prior score, VP SDE, ``nfe`` steps). Call outside jit:
    it jits the sampler itself."""
    DATA_VAR[id(prior)] = float(np.mean(np.diag(np.asarray(prior.covariance))))  # ΠGDM's v: the prior's variance
    return np.asarray(jax.jit(lambda k: _traced_samples(method, prior, op, y, n, nfe, k))(key)).reshape(n, -1)


def _traced_samples(method, prior, op, y, n, nfe, key):
    sde = VPSDE()
    v = DATA_VAR[id(prior)]
    sf = _flat_score(prior.score_fn(sde), op.in_shape)
    y = jnp.broadcast_to(y, (n,) + op.out_shape)
    shape = (n,) + op.in_shape
    if method == "pigdm":
        x = sample(key, pigdm(sf, sde, op, y, noise_std=NOISE_STD, data_var=v), sde, shape, "euler_maruyama", steps=nfe)
    elif method == "dps":
        x = sample(key, dps(sf, sde, op, y, noise_std=NOISE_STD), sde, shape, "euler_maruyama", steps=nfe)
    elif method == "dps_paper":
        x = dps_sample(key, sf, sde, op, y, zeta=ZETA, steps=nfe)
    elif method == "replacement":
        x = replacement_sample(key, sf, sde, op, y, steps=nfe)
    else:
        x = ddrm_sample(key, sf, sde, op, y, noise_std=NOISE_STD, steps=nfe)
    return x


def _check(case, method, bound_error, bound_tv, *, n=2000, nfe=100):
    """The method's error and mode TV are within its stated bounds, and the prior's (y ignored) are not."""
    prior, op, y, post = _case(case)
    x = _method_samples(method, prior, op, y, n, nfe, jax.random.key(0))
    got = mixture_sample_error(x, post)
    ignored = mixture_sample_error(np.asarray(prior.sample(jax.random.key(1), n)), post)
    assert not (ignored["error"] < bound_error and ignored["tv"] < bound_tv), (case, "bounds do not reject the prior")
    assert got["nonfinite"] == 0
    assert got["error"] < bound_error and got["tv"] < bound_tv, (case, method, got)


# Bounds per (case, method) at 100 steps, 2000 samples: (error, tv). Measured values (benchmark and this
# test's seed) in the comments; the exact-draw floor at 2000 samples is error ~0.05, tv ~0.02.
BOUNDS = {
    ("ring_mask", "pigdm"): (0.4, 0.35),  # measured 0.20 / 0.22 (ΠGDM keeps too much of the far mode)
    ("ring_mask", "ddrm"): (0.5, 0.3),  # 0.29 / 0.14
    ("ring_mask", "dps"): (0.6, 0.3),  # 0.34 / 0.16
    ("ring_mask", "dps_paper"): (0.7, 0.35),  # 0.42 / 0.20
    ("ring_mask", "replacement"): (1.1, 0.3),  # 0.75 / 0.17 (y taken as noiseless: stds too small)
    ("ring_blur", "pigdm"): (0.4, 0.5),  # 0.14 / 0.37
    ("ring_blur", "dps"): (0.5, 0.2),  # 0.29 / 0.06
    ("ring_blur", "ddrm"): (1.0, 0.5),  # 0.75 / 0.34
    ("ring_dense", "pigdm"): (0.2, 0.15),  # 0.06 / 0.06
    ("ring_dense", "dps"): (0.25, 0.2),  # 0.09 / 0.10
    ("ring_dense", "ddrm"): (0.5, 0.2),  # 0.32 / 0.09
    # 8-D mixture, y from a point between two modes (bimodal posteriors); prior: error 2.7-5.0, tv 0.52-0.54
    ("mix8_mask", "pigdm"): (1.0, 0.4),  # 0.63 / 0.23
    ("mix8_mask", "dps"): (1.2, 0.15),  # 0.81 / 0.04
    ("mix8_mask", "ddrm"): (0.6, 0.35),  # 0.30 / 0.21
    ("mix8_mask", "replacement"): (2.2, 0.5),  # 1.53 / 0.37
    ("mix8_blur", "pigdm"): (1.1, 0.65),  # 0.71 / 0.50
    ("mix8_blur", "dps"): (1.3, 0.55),  # 0.89 / 0.42
    ("mix8_blur", "ddrm"): (1.3, 0.7),  # 0.88 / 0.58 (mode weights no better than the prior's)
    ("mix8_dense", "pigdm"): (0.7, 0.35),  # 0.42 / 0.21
    ("mix8_dense", "dps"): (0.9, 0.15),  # 0.58 / 0.05
    ("mix8_dense", "ddrm"): (0.5, 0.45),  # 0.27 / 0.32
}
FAST: set = set()  # every sampling test compiles a 100-step sampler: all slow (default suite: the exact-score test)


@pytest.mark.parametrize("case, method", [pytest.param(*k, marks=() if k in FAST else pytest.mark.slow,
                                                       id=f"{k[0]}-{k[1]}") for k in BOUNDS])
def test_method_against_the_exact_mixture_posterior(case, method):
    _check(case, method, *BOUNDS[case, method])


@pytest.mark.slow
def test_samplers_reduce_to_the_unconditional_ones_when_y_says_nothing():
    """dps_sample with zeta = 0 is the ancestral sampler; replacement with an empty mask is the
    reverse-diffusion sampler (same keys, same noise: equal to float round-off)."""
    prior, sde, n, steps = ring_mixture(), VPSDE(), 512, 50
    sf = prior.score_fn(sde)
    op = Inpainting(jnp.zeros(2))
    y = jnp.zeros((n, 2))
    key = jax.random.key(4)
    got = jax.jit(lambda k: (dps_sample(k, sf, sde, op, y, zeta=0.0, steps=steps),
                             sample(k, sf, sde, (n, 2), "ancestral", steps=steps),
                             replacement_sample(k, sf, sde, op, y, steps=steps),
                             sample(k, sf, sde, (n, 2), "reverse_diffusion", steps=steps)))(key)
    np.testing.assert_allclose(got[0], got[1], atol=1e-4)
    np.testing.assert_allclose(got[2], got[3], atol=1e-4)
    assert float(jnp.std(got[0])) > 2.0  # not collapsed: the ring's spread


def test_method_input_errors():
    prior, sde = ring_mixture(), VPSDE()
    sf = prior.score_fn(sde)
    op = Inpainting(jnp.array([1.0, 0.0]))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"y: expected shape \[B, \*\(2,\)\]"):
        ddrm_sample(key, sf, sde, op, jnp.zeros((4, 3)), noise_std=0.1)
    with pytest.raises(TypeError, match="SVDOperator"):
        ddrm_sample(key, sf, sde, FunctionOperator(lambda x: x, (2,)), jnp.zeros((4, 2)), noise_std=0.1)
    with pytest.raises(ValueError, match="eta"):
        ddrm_sample(key, sf, sde, op, jnp.zeros((4, 2)), noise_std=0.1, eta=1.5)
    with pytest.raises(ValueError, match="predictor"):
        replacement_sample(key, sf, sde, op, jnp.zeros((4, 2)), predictor="heun")
    with pytest.raises(TypeError, match="aat is for a plain forward"):
        pigdm(sf, sde, op, jnp.zeros((4, 2)), noise_std=0.1, aat=1.0)
    with pytest.raises(ValueError, match="noise_std"):
        dps(sf, sde, op, jnp.zeros((4, 2)), noise_std=0.0)
