r"""Consistency sampling (Song et al. 2023, Algorithm 1), written against ``score_fn`` and the SDE only.

A consistency model :math:`f(x_t, t)` maps any point of a probability-flow trajectory to its end
point. Seen through the x0 view every ``score_fn`` has, :math:`\hat x_0(x, t) = (x + \sigma_t^2
s(x, t))/\alpha_t` (``sde.denoise``), a consistency student exposed as
``score = (alpha_t f - x) / sigma_t^2`` (:func:`jaxscore.distill.consistency_score_fn`) gives back
:math:`\hat x_0 = f` (to round-off), so this sampler is

.. math::
   x \sim p_T,\qquad \hat x_0 = \hat x_0(x, t_0);\qquad
   \text{for } n = 1..N-1:\; x = a_{t_n|t_N}\,\hat x_0 + \sqrt{v_{t_n|t_N}}\,z_n,\;
   \hat x_0 = \hat x_0(x, t_n)

on a grid :math:`T = t_0 > t_1 > \dots > t_N = t_{min}` (``steps = N``; the samples are the last
:math:`\hat x_0`). The re-noising is the SDE's exact transition from :math:`t_N` (where the model's
output lives: :math:`f(x, t_{min}) = x`) to :math:`t_n` (``sde.transition_coefs``): for VE it is
Algorithm 1's :math:`x = \hat x_0 + \sqrt{\tau_n^2 - \epsilon^2}\,z`. One step is the one-step
generator :math:`\hat x_0(x_T, T)`; every step costs one score evaluation (NFE = ``steps``) and
noise is drawn after the prior draw unless ``steps == 1``.

It works with any ``score_fn``: for an ordinary diffusion model it is a "denoise, re-noise" sampler
whose one-step output is the posterior mean :math:`E[x_0 | x_T]` (blurry); for a consistency
student it is the consistency model's sampler.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxscore.samplers import _core
from jaxscore.samplers._core import Start, call_score, fixed_step
from jaxscore.samplers.base import Sampler


@fixed_step(steps=2, grid="logsnr")
def consistency(score_fn, sde, start: Start):
    r"""Consistency sampling (Song et al. 2023, Alg. 1): ``steps`` evaluations of :math:`\hat x_0` at
    ``ts[0..steps-1]``, re-noised in between to ``ts[n]`` by the exact transition from ``ts[-1]``.
    Defaults: 2 steps (1 is the one-step generator) on the grid ``"logsnr"`` (for 2 steps on the VP SDE the middle time has
    :math:`\sigma_t/\alpha_t \approx 1.2`, near the 0.82 Song et al. chose for CIFAR-10).
    Returns ``[B, *D]`` (``(samples, info)`` with ``return_info``).
    """
    ts, steps = start.ts, start.steps
    t_end = ts[-1]

    def body(carry, n):
        (x,) = carry
        t = ts[n]
        x0 = sde.denoise(x, call_score(score_fn, x, t), _core.tvec(t, x))
        a, var = sde.transition_coefs(t_end, ts[n + 1])  # ts[n + 1] = t_end on the last step: a = 1, var = 0
        z = _core.step_normal(start.keys, n, start.shape[1:])
        renoised = a * x0 + jnp.sqrt(var) * z
        return (jnp.where(n == steps - 1, x0, renoised),)

    (x,), traj = _core.scan_steps(body, (start.x,), steps, start.trajectory)
    return x, traj, steps


CONSISTENCY = Sampler("consistency", consistency, noise_free=lambda steps, **_: steps == 1)

__all__ = ["CONSISTENCY", "consistency"]
