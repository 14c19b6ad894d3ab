r"""EDM samplers (Karras et al. 2022): deterministic Heun (Alg. 1) and stochastic churn + Heun (Alg. 2).

EDM integrates the probability-flow ODE in the unscaled variable :math:`\tilde x = x/\alpha_t` against
:math:`\tilde\sigma = \sigma_t/\alpha_t` (``sde.sigma_ratio``), where it reads

.. math:: \frac{d\tilde x}{d\tilde\sigma} = \frac{\tilde x - D(\tilde x; \tilde\sigma)}{\tilde\sigma},\qquad
          D = \hat x_0(\alpha_t\tilde x, t) = \texttt{sde.denoise},

so the same code serves VE (:math:`\alpha = 1`), VP and sub-VP. Times are mapped back with
``sde.t_from_sigma_ratio``. Default grid: ``"edm"`` (ρ = 7). EDM's final Euler step to
:math:`\tilde\sigma = 0` lands exactly on :math:`D(\tilde x; \tilde\sigma_{min})`, i.e. it is ``denoise=True``
here (the grid ends at ``t_min > 0``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxscore._checks import check_nonnegative
from jaxscore.samplers import _core
from jaxscore.samplers._core import Start, call_score, fixed_step, tvec
from jaxscore.samplers.base import Sampler, always


def _d(score_fn, sde, xt, t, alpha, sig):
    """EDM's derivative (x~ - D(x~; sigma~)) / sigma~ at scalar time t (x~ = x / alpha)."""
    x = alpha * xt
    x0 = sde.denoise(x, call_score(score_fn, x, t), tvec(t, x))
    return (xt - x0) / sig


@fixed_step(steps=17, grid="edm", sigma_min=0.002, sigma_max=80.0, denoise=True)
def heun(score_fn, sde, start: Start, *, lower_order_final: bool = False):
    r"""EDM Alg. 1 (deterministic 2nd-order Heun) on :math:`\tilde\sigma_n = \tilde\sigma(t_n)`:

    .. math:: \tilde x' = \tilde x_n + (\tilde\sigma_{n+1} - \tilde\sigma_n) d_n,\quad
              \tilde x_{n+1} = \tilde x_n + (\tilde\sigma_{n+1} - \tilde\sigma_n)\tfrac12(d_n + d'_{n+1}),

    with :math:`d = (\tilde x - D)/\tilde\sigma`. NFE = 2 steps (2 steps - 1 with ``lower_order_final``,
    which takes the last step with Euler alone) (+1 with ``denoise``).

    Defaults: EDM's own (17 steps on the rho = 7 grid from sigma~ 80 to 0.002, clipped to the SDE's range, then the
    denoise: 35 NFE). The multistep solvers' ``grid="auto"`` rule (:func:`jaxscore.samplers.grids.default_range`)
    does not transfer: measured on the ring2d / mix16d mixtures (VP, 8,000 samples, error vs a 300-step solve) it
    is worse at 35 NFE (0.12 / 0.17 vs EDM's 0.08 / 0.04), and at 10-20 NFE heun is no few-step sampler on either
    grid (0.25-3.6): use ``dpmpp_2m`` or ``unipc`` there.
    """
    ts, steps = start.ts, start.steps
    alpha, _ = sde.marginal_coefs(ts)
    sig = sde.sigma_ratio(ts)

    def body(carry, n):
        (x,) = carry
        t, t_next = ts[n], ts[n + 1]
        a, a_next, s, s_next = alpha[n], alpha[n + 1], sig[n], sig[n + 1]
        xt = x / a
        d = _d(score_fn, sde, xt, t, a, s)
        xt_euler = xt + (s_next - s) * d
        if lower_order_final:
            # the last step is Euler only: skip the second evaluation there
            xt_next = jax.lax.cond(
                n == steps - 1,
                lambda: xt_euler,
                lambda: xt + (s_next - s) * 0.5 * (d + _d(score_fn, sde, xt_euler, t_next, a_next, s_next)),
            )
        else:
            xt_next = xt + (s_next - s) * 0.5 * (d + _d(score_fn, sde, xt_euler, t_next, a_next, s_next))
        return (a_next * xt_next,)

    (x,), traj = _core.scan_steps(body, (start.x,), steps, start.trajectory)
    return x, traj, 2 * steps - int(bool(lower_order_final))


@fixed_step(steps=17, grid="edm", sigma_min=0.002, sigma_max=80.0, denoise=True)
def edm_stochastic(score_fn, sde, start: Start, *, S_churn: float = 40.0, S_min: float = 0.05, S_max: float = 50.0,
                   S_noise: float = 1.0, lower_order_final: bool = False):
    r"""EDM Alg. 2: at step n, "churn" the noise up to :math:`\hat\sigma = \tilde\sigma_n(1+\gamma_n)`,

    .. math:: \gamma_n = \min(S_{churn}/N, \sqrt2 - 1)\ \text{if}\ \tilde\sigma_n\in[S_{min}, S_{max}]\ \text{else}\ 0,
              \qquad \hat x = \tilde x_n + \sqrt{\hat\sigma^2 - \tilde\sigma_n^2}\, S_{noise}\, z,

    then one Heun step from :math:`\hat\sigma` to :math:`\tilde\sigma_{n+1}` (Euler alone on the last step with
    ``lower_order_final``). :math:`\hat\sigma` is capped at :math:`\tilde\sigma(T)` so every score call stays in
    [t_min, T]. ``S_min``, ``S_max`` are in :math:`\tilde\sigma` units. :math:`N` = ``steps`` + ``denoise``
    counts the final step to :math:`\tilde\sigma = 0` as EDM and k-diffusion do (``sample_heun``:
    ``len(sigmas) - 1``). Where :math:`\gamma_n = 0` the state is left exactly as it is (no
    :math:`\sqrt{\hat\sigma^2 - \tilde\sigma^2}` round-off noise), so ``S_churn=0`` is :func:`heun` to round-off.
    NFE = 2 steps (-1 with ``lower_order_final``) (+1 with ``denoise``).
    """
    check_nonnegative("S_churn", S_churn, why=" (0 = no churn, EDM Alg. 2)")
    check_nonnegative("S_noise", S_noise, why=" (the scale of the churn noise)")
    ts, steps = start.ts, start.steps
    alpha, _ = sde.marginal_coefs(ts)
    sig = sde.sigma_ratio(ts)
    sig_top = sig[0]
    n_edm = steps + int(bool(start.denoise))  # EDM's N counts the final step to sigma = 0 (our denoise)
    gamma_max = jnp.minimum(jnp.asarray(S_churn, sig.dtype) / n_edm, 2.0**0.5 - 1.0)

    def body(carry, n):
        (x,) = carry
        t_next = ts[n + 1]
        a, a_next, s, s_next = alpha[n], alpha[n + 1], sig[n], sig[n + 1]
        xt = x / a
        gamma = jnp.where((s >= S_min) & (s <= S_max), gamma_max, 0.0)
        s_hat = jnp.minimum(s * (1.0 + gamma), sig_top)
        churn = s_hat > s  # gamma > 0 (and room below the top): only then is there noise, and only then new t, alpha
        t_hat = jnp.where(churn, sde.t_from_sigma_ratio(s_hat), ts[n])
        a_hat = jnp.where(churn, sde.marginal_coefs(t_hat)[0], a)
        s_hat = jnp.where(churn, s_hat, s)
        z = _core.step_normal(start.keys, n, start.shape[1:])
        # exactly x~ when there is no churn: sqrt(s_hat^2 - s^2) is not exactly 0 under XLA's arithmetic
        xt_hat = jnp.where(churn, xt + jnp.sqrt(jnp.maximum(s_hat**2 - s**2, 0.0)) * S_noise * z, xt)
        d = _d(score_fn, sde, xt_hat, t_hat, a_hat, s_hat)
        xt_euler = xt_hat + (s_next - s_hat) * d

        def heun_step():
            return xt_hat + (s_next - s_hat) * 0.5 * (d + _d(score_fn, sde, xt_euler, t_next, a_next, s_next))

        if lower_order_final:
            xt_next = jax.lax.cond(n == steps - 1, lambda: xt_euler, heun_step)
        else:
            xt_next = heun_step()
        return (a_next * xt_next,)

    (x,), traj = _core.scan_steps(body, (start.x,), steps, start.trajectory)
    return x, traj, 2 * steps - int(bool(lower_order_final))


def _heun_evals(**_) -> int:
    return 2


def _skipped_final_eval(lower_order_final, **_) -> int:
    return -int(bool(lower_order_final))  # the last step is Euler alone


HEUN = Sampler("heun", heun, per_step=_heun_evals, extra=_skipped_final_eval, noise_free=always)
EDM_STOCHASTIC = Sampler("edm_stochastic", edm_stochastic, per_step=_heun_evals, extra=_skipped_final_eval)
