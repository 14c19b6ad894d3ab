"""The benchmark's error measure (jaxscore.metrics.mixture_sample_error) and the samplers' defaults."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore.data.toy import gaussian_mixture, ring_mixture
from jaxscore.metrics import exact_draw_floor, mixture_sample_error


def test_error_measure_removes_monte_carlo_mean_sees_shifts_and_nonfinite():
    mix = ring_mixture()
    x, labels = mix.sample_with_labels(jax.random.PRNGKey(0), 20000)
    exact = mixture_sample_error(x, mix)
    assert exact["mean_corrected"] < exact["mean"] and exact["mean_corrected"] < 0.01
    assert exact["error"] == max(exact["std"], exact["mean_corrected"]) < 0.02
    # a shift of 0.2 true stds along every axis of every mode: corrected mean error ~0.2
    stds = np.sqrt(np.asarray(mix.eigvals))
    shifted = np.asarray(x) + 0.2 * stds[np.asarray(labels)].mean(-1, keepdims=True)
    assert 0.15 < mixture_sample_error(shifted, mix)["mean_corrected"] < 0.25
    # stds inflated by 10%: std error ~0.1
    one = gaussian_mixture(jnp.ones(1), jnp.zeros((1, 3)), stds=jnp.ones((1, 3)))
    floor = exact_draw_floor(jax.random.PRNGKey(1), one, 20000)  # the same measure on exact draws
    assert floor["error"] < 0.02
    y = 1.1 * np.asarray(one.sample(jax.random.PRNGKey(1), 20000))
    assert abs(mixture_sample_error(y, one)["std"] - 0.1) < 0.02
    x = np.array(x)
    x[3] = np.nan
    err = mixture_sample_error(x, mix)
    assert err["error"] == np.inf and err["nonfinite"] == pytest.approx(1 / 20000)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        mixture_sample_error(np.zeros((10, 3)), mix)


# --- k-diffusion cross-check fixes ---------------------------------------------------------------

from jaxscore.samplers import edm_stochastic, get_sampler, heun, sample, time_grid  # noqa: E402
from jaxscore.sde import VESDE, VPSDE  # noqa: E402

RING = ring_mixture()


@pytest.mark.slow
def test_edm_stochastic_without_churn_is_heun_and_counts_the_final_step():
    for sde in (VPSDE(), VESDE()):
        sf = RING.score_fn(sde)
        a = heun(jax.random.PRNGKey(0), sf, sde, (32, 2), steps=6)
        b = edm_stochastic(jax.random.PRNGKey(0), sf, sde, (32, 2), steps=6, S_churn=0.0)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # no round-off noise where gamma = 0
    # gamma = S_churn / N with N = steps + denoise (EDM / k-diffusion count the step to sigma = 0): the
    # denoised run's last state before the denoise is the undenoised run with S_churn scaled by steps / N
    sde = VESDE()
    sf = RING.score_fn(sde)
    _, info = edm_stochastic(jax.random.PRNGKey(1), sf, sde, (32, 2), steps=6, S_churn=0.7, denoise=True,
                             return_info=True, return_trajectory=True)
    x = edm_stochastic(jax.random.PRNGKey(1), sf, sde, (32, 2), steps=6, S_churn=0.6, denoise=False)
    np.testing.assert_allclose(np.asarray(info["trajectory"][-1]), np.asarray(x), rtol=1e-5, atol=1e-5)


def test_heun_default_is_edm_algorithm_1():
    """heun's defaults: EDM's 18-step sampler (17 Heun steps on the rho = 7 grid from sigma 80 to 0.002,
    clipped to the SDE's range, then the step to sigma = 0, i.e. the Tweedie denoise): 35 NFE."""
    s = get_sampler("heun")
    assert s.options["denoise"] is True and s.nfe(s.defaults["steps"]) == 35
    sde = VESDE()  # sigma_ratio = sigma: the grid is EDM's eq. 5 between 50 (= T, below 80) and 0.01 (= t_min)
    _, info = heun(jax.random.PRNGKey(0), RING.score_fn(sde), sde, (8, 2), return_info=True)
    sig = np.asarray(sde.sigma_ratio(info["ts"]))
    ramp = np.linspace(0, 1, 18)
    edm = (50.0 ** (1 / 7) + ramp * (0.01 ** (1 / 7) - 50.0 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sig, edm, rtol=2e-4)
    assert info["nfe"] == 35


@pytest.mark.slow
def test_start_time_and_noise_range_options():
    sde = VESDE()
    for sampler in ("dpmpp_2m", "heun"):
        _, info = sample(jax.random.PRNGKey(0), RING.score_fn(sde), sde, (2000, 2), sampler, steps=4,
                         sigma_max=5.0, sigma_min=0.05, return_info=True, return_trajectory=True)
        np.testing.assert_allclose(float(sde.sigma_ratio(info["ts"][0])), 5.0, rtol=1e-4)
        np.testing.assert_allclose(float(sde.sigma_ratio(info["ts"][-1])), 0.05, rtol=1e-4)
        # the start is drawn at the start's noise level (not the VE prior's sigma_max = 50)
        assert abs(float(np.std(np.asarray(info["trajectory"][0]))) - 5.0) < 0.25
    # a time given wins over a noise level; levels beyond the SDE's range are clipped to it
    ts = time_grid(sde, 4, "logsnr", t_max=0.5, sigma_max=5.0, sigma_min=1e-9)
    assert float(ts[0]) == 0.5 and float(ts[-1]) == pytest.approx(sde.t_min)
    assert float(time_grid(VPSDE(), 4, "auto", sigma_max=1e3)[0]) == 1.0
    with pytest.raises(ValueError, match="sigma_max"):
        time_grid(sde, 4, "logsnr", sigma_max=-1.0)


def _kdiffusion_3m(denoiser, x, sigmas, warmup_2m=False):
    """k-diffusion 0.1.1 ``sample_dpmpp_3m_sde`` with ``eta = 0``, transcribed in numpy (sigmas end with 0).
    ``warmup_2m``: the second (order-2 warm-up) step as DPM-Solver++(2M) (dpm-solver / diffusers' 3M) instead
    of k-diffusion's :math:`\varphi_2` form; the two agree to O(h^3)."""
    d1_, d2_, h1, h2 = None, None, None, None
    for i in range(len(sigmas) - 1):
        den = denoiser(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = den
        else:
            h = np.log(sigmas[i]) - np.log(sigmas[i + 1])
            x = np.exp(-h) * x - np.expm1(-h) * den
            if h2 is not None:
                r0, r1 = h1 / h, h2 / h
                d1_0, d1_1 = (den - d1_) / r0, (d1_ - d2_) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = np.expm1(-h) / h + 1
                x = x + phi_2 * d1 - (phi_2 / h - 0.5) * d2
            elif h1 is not None and warmup_2m:
                x = x - np.expm1(-h) * 0.5 * (den - d1_) / (h1 / h)
            elif h1 is not None:
                x = x + (np.expm1(-h) / h + 1) * (den - d1_) / (h1 / h)
        d1_, d2_, h1, h2 = den, d1_, h if sigmas[i + 1] != 0 else None, h1
    return x


@pytest.mark.slow
def test_dpmpp_3m_reference_coefficient_matches_k_diffusion():
    sde = VESDE()
    sf = RING.score_fn(sde)
    ts = time_grid(sde, 7, "edm", sigma_max=20.0, sigma_min=0.02)
    x_T = 20.0 * np.asarray(jax.random.normal(jax.random.PRNGKey(3), (16, 2)))

    def denoiser(x, sigma):
        t = sde.t_from_sigma_ratio(jnp.asarray(sigma, jnp.float32))
        s = np.asarray(sf(jnp.asarray(x, jnp.float32), jnp.full((x.shape[0],), t)), np.float64)
        return x + sigma**2 * s

    sigmas = np.append(np.asarray(sde.sigma_ratio(ts), np.float64), 0.0)  # k-diffusion's grid ends at 0 (= denoise)
    run = jax.jit(lambda c: sample(jax.random.PRNGKey(0), sf, sde, (16, 2), "dpmpp_3m", steps=7, grid=ts,
                                   x_init=x_T, lower_order_final=False, denoise=True, d2_coefficient=c),
                  static_argnums=0)
    ours, taylor = np.asarray(run("reference")), np.asarray(run("taylor"))
    # to round-off with the 2M warm-up step of dpm-solver / diffusers' 3M ...
    np.testing.assert_allclose(ours, _kdiffusion_3m(denoiser, x_T, sigmas, warmup_2m=True), atol=1e-4)
    # ... and close to k-diffusion's own warm-up (phi_2 form, equal to O(h^3)); the Taylor coefficient is far
    ref = _kdiffusion_3m(denoiser, x_T, sigmas)
    assert np.abs(ours - ref).max() < 1e-2 < np.abs(taylor - ref).max()


# --- the deterministic solvers' default grid and range (jaxscore.samplers.grids.default_range) ----------------

def _affine_map_error(name, sde, steps, **opts):
    r"""On a Gaussian N(m, diag(s^2)) (never used to choose the defaults) every deterministic solver is an affine
    map per axis, x_0 = a x_T + b; the exact probability flow from T is :math:`a^* = s/\sqrt{\alpha_T^2 s^2 +
    \sigma_T^2}`, :math:`b^* = m - a^*\alpha_T m`. Returns max over axes of :math:`|a/a^* - 1|` and
    :math:`|b - b^*|/s` (std and mean error in data stds, free of Monte-Carlo and prior-mismatch error)."""
    from jaxscore.data.toy import gaussian_mixture

    m, s = np.array([3.0, -2.0, 0.5]), np.array([0.1, 0.3, 1.0])
    mix = gaussian_mixture(jnp.ones(1), jnp.asarray(m)[None], stds=jnp.asarray(s)[None])
    a_T, s_T = (float(v) for v in sde.marginal_coefs(jnp.asarray(sde.T)))
    a_star = s / np.sqrt(a_T**2 * s**2 + s_T**2)
    b_star = m - a_star * a_T * m
    x_T = jnp.concatenate([jnp.zeros((1, 3)), jnp.eye(3)])
    out = np.asarray(sample(jax.random.PRNGKey(0), mix.score_fn(sde), sde, x_T.shape, name, steps=steps,
                            x_init=x_T, **opts), np.float64)
    a, b = np.diag(out[1:] - out[0]), out[0]
    return float(max(np.abs(a / a_star - 1.0).max(), (np.abs(b - b_star) / s).max()))


def test_default_grid_rule_is_one_table_and_jumps_from_T():
    from jaxscore.samplers.grids import (AUTO_EXTRAPOLATE_MIN_STEPS, AUTO_JUMP_MIN_STEPS, AUTO_JUMP_SIGMA,
                                         EXTRAPOLATE_SIGMA_MIN, default_denoise, default_range, default_sigma_min)

    for name in ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc"):
        o = get_sampler(name).options
        assert o["grid"] == "auto" and o["sigma_min"] == "auto" and o["sigma_max"] is None, name
        assert o["denoise"] == "auto", name
    n_x = AUTO_EXTRAPOLATE_MIN_STEPS
    assert default_denoise(n_x - 1) is False and default_denoise(n_x) == "extrapolate"
    assert default_sigma_min(5) == default_sigma_min(10) == pytest.approx(0.04)
    assert default_sigma_min(n_x) == default_sigma_min(50) == EXTRAPOLATE_SIGMA_MIN  # the end with the final step
    # without the final step: 0.04 up to 10 steps, 0.02 from 20, between in log N
    assert default_sigma_min(20, False) == default_sigma_min(50, False) == pytest.approx(0.02)
    assert 0.02 < default_sigma_min(14, False) < 0.04 and default_sigma_min(10, "auto") == default_sigma_min(10, False)
    assert default_range(AUTO_JUMP_MIN_STEPS - 1)["sigma_jump"] is None
    assert default_range(n_x)["denoise"] == "extrapolate" and default_range(5)["denoise"] is False
    from jaxscore.samplers.solvers import UNIPC_ORDER3_MIN_STEPS, default_unipc_order

    assert get_sampler("unipc").options["order"] == "auto"
    assert default_unipc_order(UNIPC_ORDER3_MIN_STEPS - 1) == 2 and default_unipc_order(UNIPC_ORDER3_MIN_STEPS) == 3
    assert get_sampler("unipc").steps_for_nfe(20) == UNIPC_ORDER3_MIN_STEPS  # 20 NFE: order 3 and the final step
    for sde in (VPSDE(), VESDE()):
        for steps in (AUTO_JUMP_MIN_STEPS, 10, 20):
            sig = np.asarray(sde.sigma_ratio(time_grid(sde, steps, "auto", sigma_min="auto")), np.float64)
            assert float(time_grid(sde, steps, "auto")[0]) == sde.T  # starts at T ...
            np.testing.assert_allclose(sig[1], AUTO_JUMP_SIGMA, rtol=1e-3)  # ... one step to sigma~ = 20 ...
            np.testing.assert_allclose(sig[-1], default_sigma_min(steps), rtol=1e-3)
            np.testing.assert_allclose(np.diff(np.log(sig[1:])), np.log(sig[-1] / sig[1]) / (steps - 1), rtol=1e-3)
        # a start at or below the jump level: the jump is one log-SNR step, the grid stays strictly decreasing
        ts = np.asarray(time_grid(sde, 10, "auto", sigma_max=5.0, sigma_min=1.0))
        assert np.all(np.diff(ts) < 0)


def test_extrapolated_final_step_is_second_order_on_a_gaussian():
    """Closed form (the Gaussian of ``_affine_map_error``, stds 0.1 / 0.3 / 1): with a fine 60-step solve to a grid
    end sigma~_N, the final step to sigma~ = 0 dominates the error. Stopping at sigma~_N and the Tweedie step are
    off by O((sigma~_N / s)^2) (halving sigma~_N divides their error by about 4), the extrapolated step by
    O(sigma~_N^2 sigma~_{N-1}^2 / s^4) (divided by 4.9 (VE) to 6.3 (VP) here; 4.4-4.5x smaller than either at
    sigma~_N = 0.05, 6-8x at 0.025)."""
    for sde in (VPSDE(), VESDE()):
        errs = {end: {d: _affine_map_error("unipc", sde, 60, sigma_min=end, denoise=d)
                      for d in (False, True, "extrapolate")} for end in (0.05, 0.025)}
        coarse, fine = errs[0.05], errs[0.025]
        assert coarse["extrapolate"] < min(coarse[False], coarse[True]) / 4, errs
        assert fine["extrapolate"] < min(fine[False], fine[True]) / 5, errs
        for d in (False, True):
            assert 2.5 < coarse[d] / fine[d] < 4.5, (d, errs)
        assert coarse["extrapolate"] / fine["extrapolate"] > 4.5, errs


def test_extrapolate_needs_a_loop_that_keeps_its_last_prediction():
    mix = gaussian_mixture(jnp.ones(1), jnp.zeros((1, 2)), stds=jnp.ones((1,)))
    with pytest.raises(ValueError, match="denoise='extrapolate' needs the data prediction"):
        sample(jax.random.PRNGKey(0), mix.score_fn(VPSDE()), VPSDE(), (2, 2), "heun", steps=3, denoise="extrapolate")
    with pytest.raises(ValueError, match="denoise: expected one of"):
        sample(jax.random.PRNGKey(0), mix.score_fn(VPSDE()), VPSDE(), (2, 2), "unipc", steps=3, denoise="tweedie")


def test_default_grid_beats_the_previous_default_on_a_gaussian_not_tuned_on():
    """Closed form: on a Gaussian (means off the origin, stds 0.1 / 0.3 / 1) the default unipc at 10 steps is
    within 3% of the exact flow map on VP and VE; the previous default (grid 'logsnr_power' from T to sigma~ = 0.02)
    was 7% off on VP."""
    for sde in (VPSDE(), VESDE()):
        assert _affine_map_error("unipc", sde, 10) < 0.03, sde
    old = _affine_map_error("unipc", VPSDE(), 10, grid="logsnr_power", sigma_min=0.02)
    assert old > 0.06 > 2 * _affine_map_error("unipc", VPSDE(), 10), old


@pytest.mark.slow
def test_default_grid_on_a_gaussian_other_solvers_and_budgets():
    """As above for dpmpp_2m (10 steps: 2.4% vs the previous 9.3% on VP) and at 5 steps (coarse either way:
    28% vs 40% on the 0.1-std axis)."""
    for sde in (VPSDE(), VESDE()):
        assert _affine_map_error("dpmpp_2m", sde, 10) < 0.03, sde
    assert _affine_map_error("dpmpp_2m", VPSDE(), 10, grid="logsnr_power", sigma_min=0.02) > 0.06
    for name in ("dpmpp_2m", "unipc"):
        assert _affine_map_error(name, VPSDE(), 5) < 0.8 * _affine_map_error(name, VPSDE(), 5, grid="power",
                                                                              sigma_min=0.02)
