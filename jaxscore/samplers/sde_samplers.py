r"""Reverse-SDE samplers on a fixed grid: Euler-Maruyama, reverse diffusion, ancestral.

All take ``(key, score_fn, sde, shape, *, steps, grid, t_min, denoise, return_info, ...)``,
start from the prior at ``T`` and step down the grid ``ts`` (see :mod:`jaxscore.samplers.grids`)
in one ``lax.scan``; one score evaluation per step (NFE = steps, + 1 with ``denoise``).
As in score_sde the last step returns the noiseless mean (``final_noise=False``).
Noise is batch-size invariant (see :mod:`jaxscore.samplers._core`).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxscore.samplers import _core
from jaxscore.samplers._core import call_score


def _noise_scale(n, steps: int, final_noise: bool):
    """1 on every step, except 0 on the last one unless ``final_noise``."""
    if final_noise:
        return jnp.asarray(1.0)
    return jnp.where(n == steps - 1, 0.0, 1.0)


def em_step(sde, x, score, t, t_next, z):
    r"""One Euler-Maruyama step of the reverse SDE from scalar ``t`` to ``t_next < t`` given the score at ``(x, t)``:
    :math:`x + [f(t)x - g(t)^2 s]\Delta + g(t)\sqrt{-\Delta}\,z`, :math:`\Delta = t_{next} - t`."""
    dt = t_next - t
    g = sde.diffusion(t)
    drift = sde.drift_coef(t) * x - g**2 * score
    return x + drift * dt + g * jnp.sqrt(-dt) * z


def reverse_diffusion_step(sde, x, score, t, t_next, z):
    r"""One reverse-diffusion step (score_sde): :math:`x - f + G^2 s + G z` with
    :math:`(f, G)` = ``sde.discretize`` (exact forward transition from ``t_next`` to ``t``)."""
    a, var = sde.transition_coefs(t_next, t)
    return x - (a - 1.0) * x + var * score + jnp.sqrt(var) * z


def ancestral_step(sde, x, score, t, t_next, z):
    """One ancestral (exact-posterior, DDPM) step; see :func:`ancestral`."""
    return ddim_step(sde, x, score, t, t_next, 1.0, z)


def euler_maruyama(key, score_fn, sde, shape, *, steps: int = 1000, grid="uniform", t_min=None, rho: float | None = None,
                   denoise: bool = False, final_noise: bool = False, return_info: bool = False,
                   return_trajectory: bool = False, example_offset=0, x_init=None):
    r"""Euler-Maruyama on the reverse SDE :math:`dx = [f(t)x - g(t)^2 s(x,t)]dt + g(t)d\bar W`:

    .. math:: x_{n+1} = x_n + [f(t_n)x_n - g(t_n)^2 s(x_n, t_n)]\,\Delta_n + g(t_n)\sqrt{|\Delta_n|}\,z_n,
              \quad \Delta_n = t_{n+1} - t_n < 0.

    Returns samples ``[B, *D]`` (``(samples, info)`` with ``return_info``).
    """
    shape, steps, ts, keys, x0 = _core.setup(key, score_fn, sde, shape, steps, grid, t_min, rho, example_offset, x_init)

    def body(carry, n):
        (x,) = carry
        t, t_next = ts[n], ts[n + 1]
        z = _core.step_normal(keys, n, shape[1:]) * _noise_scale(n, steps, final_noise)
        return (em_step(sde, x, call_score(score_fn, x, t), t, t_next, z),)

    (x,), traj = _core.scan_steps(body, (x0,), steps, return_trajectory)
    return _core.finish(x, x0, traj, ts, steps, score_fn, sde, denoise, return_info, return_trajectory)


def reverse_diffusion(key, score_fn, sde, shape, *, steps: int = 1000, grid="uniform", t_min=None, rho: float | None = None,
                      denoise: bool = False, final_noise: bool = False, return_info: bool = False,
                      return_trajectory: bool = False, example_offset=0, x_init=None):
    r"""score_sde's reverse-diffusion predictor: with the forward discretisation
    :math:`x_{t} = x_{t'} + f_n + G_n z` (``sde.discretize``, exact transition from :math:`t' = t_{n+1}`),

    .. math:: x_{n+1} = x_n - f_n + G_n^2\, s(x_n, t_n) + G_n z_n .
    """
    shape, steps, ts, keys, x0 = _core.setup(key, score_fn, sde, shape, steps, grid, t_min, rho, example_offset, x_init)

    def body(carry, n):
        (x,) = carry
        t, t_next = ts[n], ts[n + 1]
        z = _core.step_normal(keys, n, shape[1:]) * _noise_scale(n, steps, final_noise)
        return (reverse_diffusion_step(sde, x, call_score(score_fn, x, t), t, t_next, z),)

    (x,), traj = _core.scan_steps(body, (x0,), steps, return_trajectory)
    return _core.finish(x, x0, traj, ts, steps, score_fn, sde, denoise, return_info, return_trajectory)


def ddim_step(sde, x, score, t, s, eta, z):
    r"""One DDIM step from ``t`` down to ``s`` given the score at ``(x, t)`` (Song et al. 2021a, eq. 12):

    .. math:: \hat x_0 = (x + \sigma_t^2 s)/\alpha_t,\quad \hat\varepsilon = -\sigma_t s,\quad
              c^2 = \eta^2 \frac{\sigma_s^2}{\sigma_t^2} v_{t|s},\quad
              x_s = \alpha_s \hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\varepsilon + c\,z,

    with :math:`v_{t|s} = \sigma_t^2 - (\alpha_t/\alpha_s)^2\sigma_s^2`. ``eta = 1`` is the exact
    Gaussian posterior :math:`q(x_s | x_t, \hat x_0)` (DDPM ancestral sampling), ``eta = 0`` is
    deterministic DDIM. ``t``, ``s`` scalars.
    """
    alpha_t, sigma_t = sde.marginal_coefs(t)
    alpha_s, sigma_s = sde.marginal_coefs(s)
    _, v = sde.transition_coefs(s, t)
    x0 = (x + sigma_t**2 * score) / alpha_t
    eps = -sigma_t * score
    c2 = eta**2 * (sigma_s**2 / sigma_t**2) * v
    c2 = jnp.clip(c2, 0.0, sigma_s**2)
    return alpha_s * x0 + jnp.sqrt(sigma_s**2 - c2) * eps + jnp.sqrt(c2) * z


def _ddim_loop(key, score_fn, sde, shape, *, steps, grid, t_min, rho, denoise, eta, final_noise, return_info,
               return_trajectory, example_offset, x_init=None):
    shape, steps, ts, keys, x0 = _core.setup(key, score_fn, sde, shape, steps, grid, t_min, rho, example_offset, x_init)
    stochastic = not (isinstance(eta, (int, float)) and eta == 0)
    eta = jnp.asarray(eta, x0.dtype)

    def body(carry, n):
        (x,) = carry
        t, s = ts[n], ts[n + 1]
        score = call_score(score_fn, x, t)
        if stochastic:
            z = _core.step_normal(keys, n, shape[1:]) * _noise_scale(n, steps, final_noise)
        else:
            z = jnp.zeros_like(x)
        return (ddim_step(sde, x, score, t, s, eta, z),)

    (x,), traj = _core.scan_steps(body, (x0,), steps, return_trajectory)
    return _core.finish(x, x0, traj, ts, steps, score_fn, sde, denoise, return_info, return_trajectory)


def ancestral(key, score_fn, sde, shape, *, steps: int = 1000, grid="uniform", t_min=None, rho: float | None = None,
              denoise: bool = False, final_noise: bool = False, return_info: bool = False,
              return_trajectory: bool = False, example_offset=0, x_init=None):
    r"""Ancestral sampling: draw :math:`x_{t_{n+1}} \sim q(x_{t_{n+1}} | x_{t_n}, \hat x_0)`, the exact Gaussian
    posterior of the forward process with Tweedie's :math:`\hat x_0` (DDPM for VP, score_sde's
    ancestral predictor for VE). Identical to :func:`ddim_step` with ``eta = 1``:

    .. math:: x_s = \frac{a_{t|s}\sigma_s^2}{\sigma_t^2} x_t + \frac{\alpha_s v_{t|s}}{\sigma_t^2}\hat x_0
              + \sqrt{\frac{\sigma_s^2 v_{t|s}}{\sigma_t^2}}\, z .
    """
    return _ddim_loop(key, score_fn, sde, shape, steps=steps, grid=grid, t_min=t_min, rho=rho, denoise=denoise,
                      eta=1.0, final_noise=final_noise, return_info=return_info,
                      return_trajectory=return_trajectory, example_offset=example_offset, x_init=x_init)
