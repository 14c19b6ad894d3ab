r"""Reverse-SDE samplers on a fixed grid: Euler-Maruyama, reverse diffusion, ancestral.

All take ``(key, score_fn, sde, shape, *, steps, grid, t_min, denoise, return_info, ...)`` (the
front of :func:`jaxscore.samplers._core.fixed_step`), start from the prior at ``T`` and step down
the grid ``ts`` (see :mod:`jaxscore.samplers.grids`) in one ``lax.scan``; one score evaluation per
step (NFE = steps, + 1 with ``denoise``).
As in score_sde the last step returns the noiseless mean (``final_noise=False``).
Noise is batch-size invariant (see :mod:`jaxscore.samplers._core`).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxscore.samplers import _core
from jaxscore.samplers._core import Start, call_score, fixed_step
from jaxscore.samplers.base import Sampler


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


def _step_rule_loop(score_fn, sde, start: Start, step_rule, final_noise: bool):
    """``x_{n+1} = step_rule(sde, x_n, s(x_n, t_n), t_n, t_{n+1}, z_n)`` on the grid, one score call a step."""
    ts, steps = start.ts, start.steps

    def body(carry, n):
        (x,) = carry
        t, t_next = ts[n], ts[n + 1]
        z = _core.step_normal(start.keys, n, start.shape[1:]) * _noise_scale(n, steps, final_noise)
        return (step_rule(sde, x, call_score(score_fn, x, t), t, t_next, z),)

    (x,), traj = _core.scan_steps(body, (start.x,), steps, start.trajectory)
    return x, traj, steps


@fixed_step(steps=1000, grid="uniform")
def euler_maruyama(score_fn, sde, start: Start, *, final_noise: bool = False):
    r"""Euler-Maruyama on the reverse SDE :math:`dx = [f(t)x - g(t)^2 s(x,t)]dt + g(t)d\bar W`:

    .. math:: x_{n+1} = x_n + [f(t_n)x_n - g(t_n)^2 s(x_n, t_n)]\,\Delta_n + g(t_n)\sqrt{|\Delta_n|}\,z_n,
              \quad \Delta_n = t_{n+1} - t_n < 0.

    Returns samples ``[B, *D]`` (``(samples, info)`` with ``return_info``).
    """
    return _step_rule_loop(score_fn, sde, start, em_step, final_noise)


@fixed_step(steps=1000, grid="uniform")
def reverse_diffusion(score_fn, sde, start: Start, *, final_noise: bool = False):
    r"""score_sde's reverse-diffusion predictor: with the forward discretisation
    :math:`x_{t} = x_{t'} + f_n + G_n z` (``sde.discretize``, exact transition from :math:`t' = t_{n+1}`),

    .. math:: x_{n+1} = x_n - f_n + G_n^2\, s(x_n, t_n) + G_n z_n .
    """
    return _step_rule_loop(score_fn, sde, start, reverse_diffusion_step, final_noise)


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


def ddim_loop(score_fn, sde, start: Start, eta, final_noise: bool):
    """DDIM steps (:func:`ddim_step`) down the grid; noise drawn only when ``eta`` is not a literal 0. With
    ``denoise="extrapolate"`` it also keeps the last data prediction (computed only then)."""
    ts, steps = start.ts, start.steps
    stochastic = not (isinstance(eta, (int, float)) and eta == 0)
    eta = jnp.asarray(eta, start.x.dtype)
    keep_x0 = start.denoise == "extrapolate"

    def body(carry, n):
        x, last_x0 = carry
        t, s = ts[n], ts[n + 1]
        score = call_score(score_fn, x, t)
        if stochastic:
            z = _core.step_normal(start.keys, n, start.shape[1:]) * _noise_scale(n, steps, final_noise)
        else:
            z = jnp.zeros_like(x)
        if keep_x0:
            last_x0 = sde.denoise(x, score, _core.tvec(t, x))
        return ddim_step(sde, x, score, t, s, eta, z), last_x0

    (x, last_x0), traj = _core.scan_steps(body, (start.x, start.x), steps, start.trajectory)
    return _core.LoopResult(x, traj, steps, last_x0 if keep_x0 else None)


@fixed_step(steps=1000, grid="uniform")
def ancestral(score_fn, sde, start: Start, *, final_noise: bool = False):
    r"""Ancestral sampling: draw :math:`x_{t_{n+1}} \sim q(x_{t_{n+1}} | x_{t_n}, \hat x_0)`, the exact Gaussian
    posterior of the forward process with Tweedie's :math:`\hat x_0` (DDPM for VP, score_sde's
    ancestral predictor for VE). Identical to :func:`ddim_step` with ``eta = 1``:

    .. math:: x_s = \frac{a_{t|s}\sigma_s^2}{\sigma_t^2} x_t + \frac{\alpha_s v_{t|s}}{\sigma_t^2}\hat x_0
              + \sqrt{\frac{\sigma_s^2 v_{t|s}}{\sigma_t^2}}\, z .
    """
    return ddim_loop(score_fn, sde, start, 1.0, final_noise)


EULER_MARUYAMA = Sampler("euler_maruyama", euler_maruyama)
REVERSE_DIFFUSION = Sampler("reverse_diffusion", reverse_diffusion)
ANCESTRAL = Sampler("ancestral", ancestral)
