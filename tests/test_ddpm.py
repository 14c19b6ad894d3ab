"""Discrete DDPM chains (:class:`jaxscore.sde.DiscreteVPSDE`) against closed forms.

* linear betas: alpha_bar_i = prod_{j<=i} (1 - beta_j) at t = i/N (float64 reference);
* cosine betas: alpha_bar_i = f(i/N)/f(0) with beta clipped at 0.999 (only the last step is);
* the VP SDE (beta 0.1..20) is the T -> infinity limit of DDPM's linear chain: alpha_bar agrees at
  t = i/N to first order in 1/N;
* one-step transitions are (sqrt(1 - beta_i), beta_i); ancestral sampling on the integer grid is
  Ho et al.'s Alg. 2 with the posterior variance beta-tilde (checked step by step on a trajectory);
* with the exact score of a Gaussian mixture, the chain's ancestral sampler and the likelihood
  reproduce the mixture / the closed-form density.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore.data.toy import gaussian, gaussian_mixture
from jaxscore.likelihood import log_likelihood
from jaxscore.samplers import sample
from jaxscore.sde import DiscreteVPSDE, VPSDE, cosine_alpha_bar, cosine_betas, linear_betas


def test_linear_alpha_bar_is_the_product_of_one_minus_beta():
    sde = DiscreteVPSDE.linear()  # Ho et al.: 1e-4 .. 0.02 over N = 1000
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_array_equal(linear_betas(), betas)
    alpha, sigma = sde.marginal_coefs(sde.step_times())
    ab = np.concatenate([[1.0], np.cumprod(1.0 - betas)])  # float64 closed form
    # float32 sum of 1000 logs: relative error <= ~1000 * 2^-24 * |log alpha_bar| ~ 1e-5
    np.testing.assert_allclose(np.asarray(alpha, np.float64) ** 2, ab, rtol=2e-5, atol=0)
    np.testing.assert_allclose(np.asarray(sigma, np.float64) ** 2, 1.0 - ab, rtol=2e-5, atol=1e-7)
    assert sde.t_min == pytest.approx(1e-3) and sde.num_steps == 1000


def test_cosine_alpha_bar_is_f_over_f0_with_clipping():
    n, s = 1000, 0.008
    betas = cosine_betas(n, s)
    assert betas.max() <= 0.999 and betas[-1] == 0.999  # f(1) = 0: the last beta is the clipped one
    assert np.all(betas[:-1] < 0.999)  # ... and only it
    f = cosine_alpha_bar(np.arange(n + 1) / n, s)
    ab = np.cumprod(1.0 - betas)
    np.testing.assert_allclose(ab[:-1], f[1:-1] / f[0], rtol=1e-10)  # exact in float64 before the clip
    assert ab[-1] == pytest.approx(ab[-2] * (1 - 0.999), rel=1e-12)
    sde = DiscreteVPSDE.cosine(n, s)
    alpha, _ = sde.marginal_coefs(sde.step_times()[1:n])
    np.testing.assert_allclose(np.asarray(alpha, np.float64) ** 2, f[1:n] / f[0], rtol=5e-5, atol=1e-9)


def test_vp_sde_is_the_continuous_limit_of_the_linear_chain():
    """beta_i = (0.1 + 19.9 (i-1)/(N-1)) / N is DDPM's 1e-4..0.02 at N = 1000. The chain's alpha_bar at
    t = i/N differs from the VP SDE's exp(-B(t)) by the Riemann-sum error (0.5 beta_max / N in the log)
    plus 0.5 sum beta_j^2 (also O(1/N)): below 1e-3 at N = 1000 (measured 8.1e-4) and falling like 1/N."""
    vp = VPSDE(beta_min=0.1, beta_max=20.0)

    @jax.jit
    def max_err(chain):
        t = chain.step_times()
        return jnp.max(jnp.abs(chain.marginal_coefs(t)[0] ** 2 - vp.marginal_coefs(t)[0] ** 2))

    errs = {n: float(max_err(DiscreteVPSDE(jnp.asarray(linear_betas(n, 0.1 / n, 20.0 / n), jnp.float32), t_min=1.0 / n)))
            for n in (1000, 4000)}
    assert errs[1000] < 1e-3, errs
    assert errs[4000] < 0.3 * errs[1000], errs  # first order: 1/4 of the N = 1000 error (+ round-off)
    # the same chain built from Ho et al.'s numbers
    np.testing.assert_allclose(linear_betas(1000, 0.1 / 1000, 20.0 / 1000), linear_betas(), rtol=1e-12)


@jax.jit
def _chain_facts(sde):
    """One compiled call (not op-by-op dispatch): transitions, beta(t), d log alpha/dt, inverse maps."""
    t = sde.step_times()
    mid = 0.5 * (t[:-1] + t[1:])
    h = 0.2 * sde.T / sde.num_steps  # log alpha is linear inside a step: the central difference is exact
    a, var = sde.transition_coefs(t[:-1], t[1:])
    dlog = (jnp.log(sde.marginal_coefs(mid + h)[0]) - jnp.log(sde.marginal_coefs(mid - h)[0])) / (2 * h)
    ts = jnp.linspace(sde.t_min, 1.0, 301)
    return dict(a=a, var=var, beta_mid=sde.beta(mid), beta_end=sde.beta(t[1:]), dlog=dlog,
                drift=sde.drift_coef(mid), ts=ts, ts_back=sde.t_from_log_snr(sde.log_snr(ts)))


def test_transitions_betas_and_inverse_maps():
    sde = DiscreteVPSDE.linear(50, 1e-3, 0.2)
    betas = np.asarray(sde.betas, np.float64)
    f = {k: np.asarray(v, np.float64) for k, v in _chain_facts(sde).items()}
    np.testing.assert_allclose(f["a"], np.sqrt(1 - betas), rtol=1e-6)  # one step: (sqrt(1 - beta_i), beta_i)
    np.testing.assert_allclose(f["var"], betas, rtol=2e-4)
    # beta(t) = -N log(1 - beta_i) on (t_{i-1}, t_i], and d log alpha / dt = f(t) = -beta(t) / 2
    np.testing.assert_allclose(f["beta_mid"], -50 * np.log1p(-betas), rtol=1e-5)
    np.testing.assert_allclose(f["beta_end"], -50 * np.log1p(-betas), rtol=1e-5)
    np.testing.assert_allclose(f["dlog"], f["drift"], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(f["ts_back"], f["ts"], atol=2e-6)
    assert not sde.is_variance_exploding()
    with pytest.raises(ValueError, match="every beta in"):
        DiscreteVPSDE(jnp.asarray([0.1, 1.0]))


@pytest.mark.slow  # default-suite budget: 15-180 s of compile and training on 2 cores
def test_ancestral_on_the_integer_grid_is_ddpm_algorithm_2():
    """Ancestral sampling of the chain (``steps = N``, ``t_min = 0``: the integer grid N..0) is Ho et al.'s
    Alg. 2 with sigma_i^2 = beta_tilde_i:
    x_{i-1} = (x_i - beta_i / sqrt(1 - abar_i) eps_hat) / sqrt(1 - beta_i) + sqrt(beta_tilde_i) z,
    eps_hat = -sigma_i s(x_i, t_i), and x_0 the mean. Checked on a trajectory with the exact scores of
    a two-mode mixture: each step's residual has std sqrt(beta_tilde_i) (within 8%: the MC error of
    a std over 2000 draws is 1.6%), the last residual is 0; and the samples are the mixture's
    (weight 0.7 within 0.035: MC std 0.010; mode std 0.5 within 0.035)."""
    n = 250  # DDPM's schedule at N = 250 (beta_i = (0.1 .. 20) / N: the same continuous limit); at this N
    sde = DiscreteVPSDE.linear(n, 0.1 / n, 20.0 / n)  # the mode stds come out 0.487 (0.498 at N = 1000; 2e4 draws)
    mix = gaussian_mixture(jnp.array([0.3, 0.7]), jnp.array([[-2.0], [2.0]]), stds=jnp.array([0.5, 0.5]))
    score = mix.score_fn(sde)
    x0, info = sample(jax.random.key(0), score, sde, (2000, 1), sampler="ancestral", steps=n, t_min=0.0,
                      return_info=True, return_trajectory=True)
    ts, traj = info["ts"], info["trajectory"]
    np.testing.assert_allclose(np.asarray(ts), np.arange(n, -1, -1) / n, atol=1e-6)  # the integer grid

    betas = np.asarray(sde.betas, np.float64)
    ab = np.cumprod(1 - betas)
    i = np.arange(n, 0, -1)  # step k takes x_i to x_{i-1}
    b, abar = betas[i - 1], ab[i - 1]
    scores = jax.jit(jax.vmap(lambda x, t: score(x, jnp.full((x.shape[0],), t))))(traj[:-1], ts[:-1])
    eps_hat = -np.sqrt(1 - abar)[:, None, None] * np.asarray(scores, np.float64)
    x = np.asarray(traj[:-1], np.float64)
    mean = (x - (b / np.sqrt(1 - abar))[:, None, None] * eps_hat) / np.sqrt(1 - b)[:, None, None]
    resid = np.asarray(traj[1:], np.float64) - mean
    np.testing.assert_allclose(resid[-1], 0.0, atol=1e-4)  # x_0 is the mean
    beta_tilde = (1 - ab[i[:-1] - 2]) / (1 - abar[:-1]) * b[:-1]
    ratio = resid[:-1].std(axis=(1, 2)) / np.sqrt(beta_tilde)
    assert np.all(np.abs(ratio - 1) < 0.08), (ratio.min(), ratio.max())

    x = np.asarray(x0)[:, 0]
    assert abs((x > 0).mean() - 0.7) < 0.035
    assert abs(x[x > 0].std() - 0.5) < 0.035 and abs(x[x < 0].std() - 0.5) < 0.035


@pytest.mark.slow
def test_likelihood_accepts_the_chain():
    """The likelihood (probability-flow ODE of the chain, piecewise-constant beta(t)) of a Gaussian with
    its exact score equals the closed form log N(x; 0, (alpha^2 s^2 + sigma^2) I) at t_min."""
    sde = DiscreteVPSDE.linear()
    s2 = 0.36
    g = gaussian(jnp.zeros(2), jnp.eye(2) * s2)
    pts = jnp.array([[0.3, -0.5], [1.0, 0.2], [-0.1, 0.0]])
    logp = log_likelihood(jax.random.key(2), g.score_fn(sde), sde, pts, divergence="exact")
    alpha, sigma = sde.marginal_coefs(jnp.asarray(sde.t_min))
    var = alpha**2 * s2 + sigma**2
    exact = -0.5 * jnp.sum(pts**2, axis=-1) / var - jnp.log(2 * jnp.pi * var)
    np.testing.assert_allclose(np.asarray(logp), np.asarray(exact), atol=2e-2)
