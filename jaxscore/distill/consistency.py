r"""Consistency models (Song et al. 2023) with the improved recipe of Song & Dhariwal 2023 (iCT).

Work in the scaled state :math:`\tilde x = x/\alpha_t` and noise level :math:`\tilde\sigma_t = \sigma_t/\alpha_t`
(EDM's sigma): for every linear SDE the probability-flow ODE is then the VE one,
:math:`d\tilde x/d\tilde\sigma = (\tilde x - \hat x_0)/\tilde\sigma`. The consistency function maps a
point of a trajectory at ``t`` to the trajectory's point at ``t_min``,

.. math:: f_\theta(x, t) = c_{skip}(t)\,\frac{\alpha_{min}}{\alpha_t}\,x + c_{out}(t)\,\alpha_{min}\,
          F_\theta(c_{in}\tilde x,\; c_{noise}),

.. math:: c_{skip} = \frac{\sigma_d^2}{(\tilde\sigma-\tilde\sigma_{min})^2 + \sigma_d^2},\quad
          c_{out} = \frac{(\tilde\sigma-\tilde\sigma_{min})\,\sigma_d}{\sqrt{\tilde\sigma^2+\sigma_d^2}},\quad
          c_{in} = \frac{1}{\sqrt{\tilde\sigma^2+\sigma_d^2}},\quad c_{noise} = \tfrac14\ln\tilde\sigma

(Song et al. 2023, App. C; :math:`F` is called as EDM's preconditioned network is, so a student can
start from an EDM teacher's parameters). At :math:`t = t_{min}` the coefficients are computed from the
same numbers, so :math:`c_{skip} = 1`, :math:`c_{out} = 0`, :math:`\alpha_{min}/\alpha_t = 1` exactly and
:math:`f(x, t_{min}) = x` bit for bit: the boundary condition holds by construction.

The student meets the one contract through the x0 view (:func:`consistency_score_fn`):
:math:`s(x, t) = (\alpha_t f(x, t) - x)/\sigma_t^2`, so ``sde.denoise`` gives back :math:`f` and the
``"consistency"`` sampler (:mod:`jaxscore.samplers.consistency`) samples it.

Training (:func:`consistency_loss`), with levels :math:`t_0 = t_{min} < t_1 < \dots < t_{n-1} = T`
spaced as Karras et al. in :math:`\tilde\sigma` (:func:`karras_level`, :math:`\rho = 7`): draw a level
:math:`i` (iCT's lognormal weights :math:`\propto \mathrm{erf}\frac{\ln\tilde\sigma_{i+1}-P_{mean}}{\sqrt2 P_{std}}
- \mathrm{erf}\frac{\ln\tilde\sigma_{i}-P_{mean}}{\sqrt2 P_{std}}`, or uniform), :math:`z \sim N(0, I)`,
:math:`x_{i+1} = \alpha_{t_{i+1}} x_0 + \sigma_{t_{i+1}} z`, and

* consistency **training** (no teacher): :math:`\hat x_i = \alpha_{t_i} x_0 + \sigma_{t_i} z` (same z);
* consistency **distillation**: :math:`\hat x_i` = one Heun (or Euler = DDIM) step of the teacher's
  probability-flow ODE from :math:`t_{i+1}` to :math:`t_i` (:func:`teacher_ode_step`);

.. math:: L = \lambda_i\, d\big(f_\theta(x_{i+1}, t_{i+1}),\; \mathrm{sg}[f_\theta(\hat x_i, t_i)]\big),\qquad
          \lambda_i = \frac{1}{\tilde\sigma_{i+1} - \tilde\sigma_i},\qquad d(a, b) = \sqrt{\|a-b\|^2 + c^2} - c

(pseudo-Huber, :math:`c = 0.00054\sqrt{\dim}`; the target uses the online parameters under stop-gradient,
not an EMA, as iCT). The number of levels grows during training (:func:`ict_levels`, iCT's
curriculum :math:`n(k) = \min(s_0 2^{\lfloor k/K'\rfloor}, s_1) + 1`); the loss reads it per example
from the batch, so the training step stays one compiled function.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxscore._checks import broadcast_to_data, check_batch, check_choice
from jaxscore.distill.progressive import score_denoiser

ODE_SOLVERS = ("heun", "euler")
LEVEL_SAMPLING = ("lognormal", "uniform")
ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def consistency_coefs(sigma: jax.Array, sigma_min: jax.Array, sigma_data: float = 0.5):
    r"""``(c_skip, c_out, c_in, c_noise)`` at noise level ``sigma`` = :math:`\tilde\sigma` (module docstring)."""
    d = sigma - sigma_min
    c_skip = sigma_data**2 / (d**2 + sigma_data**2)
    c_out = d * sigma_data / jnp.sqrt(sigma**2 + sigma_data**2)
    c_in = 1.0 / jnp.sqrt(sigma**2 + sigma_data**2)
    return c_skip, c_out, c_in, 0.25 * jnp.log(sigma)


def consistency_fn(apply: Callable, params: Any, sde, *, sigma_data: float = 0.5, t_min: float | None = None,
                   **apply_kwargs) -> Callable[[jax.Array, jax.Array], jax.Array]:
    r"""The consistency function ``f(x [B, *D], t [B]) -> [B, *D]`` of a network ``apply(params, x, t, **kw)``
    (module docstring); ``f(x, t_min) == x`` exactly. ``t_min`` defaults to ``sde.t_min``."""
    t_min = sde.t_min if t_min is None else t_min

    def f(x, t):
        x, t = check_batch(x, t)
        both = jnp.stack([t, jnp.full_like(t, t_min)])  # one computation for t and t_min: equal inputs, equal bits
        alpha, sigma = sde.marginal_coefs(both)
        sig = sigma / alpha
        c_skip, c_out, c_in, c_noise = consistency_coefs(sig[0], sig[1], sigma_data)
        ratio = alpha[1] / alpha[0]
        out = apply(params, broadcast_to_data(c_in / alpha[0], x) * x, c_noise, **apply_kwargs)
        return broadcast_to_data(c_skip * ratio, x) * x + broadcast_to_data(c_out * alpha[1], x) * out

    return f


def consistency_score_fn(apply: Callable, params: Any, sde, *, sigma_data: float = 0.5, t_min: float | None = None,
                         **apply_kwargs) -> ScoreFn:
    r"""A consistency student as ``score_fn(x, t)``: :math:`(\alpha_t f(x, t) - x)/\sigma_t^2` (its x0 view)."""
    f = consistency_fn(apply, params, sde, sigma_data=sigma_data, t_min=t_min, **apply_kwargs)

    def score_fn(x, t):
        x, t = check_batch(x, t)
        alpha, sigma = sde.marginal_coefs(t)
        return (broadcast_to_data(alpha, x) * f(x, t) - x) / broadcast_to_data(sigma**2, x)

    return score_fn


def karras_level(sde, i: jax.Array, n: jax.Array, *, rho: float = 7.0, t_min: float | None = None) -> jax.Array:
    r"""Time of level ``i`` of ``n`` (both may be traced int arrays): :math:`\tilde\sigma_i =
    (\tilde\sigma_{min}^{1/\rho} + \tfrac{i}{n-1}(\tilde\sigma_{max}^{1/\rho} - \tilde\sigma_{min}^{1/\rho}))^\rho`
    between ``t_min`` (``i = 0``, exactly) and ``sde.T`` (``i = n - 1``, exactly)."""
    t_min = sde.t_min if t_min is None else t_min
    lo, hi = sde.sigma_ratio(jnp.asarray(t_min, jnp.result_type(float))), sde.sigma_ratio(jnp.asarray(sde.T))
    frac = jnp.asarray(i, lo.dtype) / jnp.asarray(n - 1, lo.dtype)
    sig = (lo ** (1 / rho) + frac * (hi ** (1 / rho) - lo ** (1 / rho))) ** rho
    t = jnp.clip(sde.t_from_sigma_ratio(sig), t_min, sde.T)
    return jnp.where(i == 0, t_min, jnp.where(i == n - 1, sde.T, t))


def ict_levels(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    r"""iCT's discretisation curriculum: ``n = min(s0 * 2**(step // K'), s1) + 1`` levels at training step
    ``step`` of ``total_steps``, :math:`K' = \lfloor K / (\log_2\lfloor s_1/s_0\rfloor + 1)\rfloor`
    (``s0 == s1``: a fixed ``s0 + 1`` levels, as the original consistency distillation). Plain Python."""
    if not (isinstance(s0, int) and isinstance(s1, int) and 1 <= s0 <= s1):
        raise ValueError(f"ict_levels: expected integers 1 <= s0 <= s1, got s0={s0!r}, s1={s1!r}.")
    k_prime = max(1, math.floor(total_steps / (math.log2(s1 // s0) + 1)))
    return min(s0 * 2 ** (int(step) // k_prime), s1) + 1


def pseudo_huber(a: jax.Array, b: jax.Array, c: float) -> jax.Array:
    r""":math:`\sqrt{\|a-b\|^2 + c^2} - c` per example (``[B, *D]`` -> ``[B]``)."""
    sq = jnp.sum(jnp.square(a - b).reshape(a.shape[0], -1), axis=-1)
    return jnp.sqrt(sq + c**2) - c


def teacher_ode_step(score_fn: ScoreFn, sde, x: jax.Array, t: jax.Array, s: jax.Array,
                     solver: str = "heun") -> jax.Array:
    r"""One step of the teacher's probability-flow ODE from ``t`` [B] to ``s`` [B] in
    :math:`(\tilde x, \tilde\sigma)`: Euler :math:`\tilde x' = \tilde x + (\tilde\sigma_s-\tilde\sigma_t) d(\tilde x, t)`,
    :math:`d = (\tilde x - \hat x_0)/\tilde\sigma` (= DDIM), or Heun (its trapezoidal correction,
    2 evaluations). Returns :math:`x_s` [B, *D]."""
    check_choice("solver", solver, ODE_SOLVERS)
    x0_fn = score_denoiser(score_fn, sde)
    a_t, sig_t = sde.marginal_coefs(t)
    a_s, sig_s = sde.marginal_coefs(s)
    st, ss = sig_t / a_t, sig_s / a_s
    xt = x / broadcast_to_data(a_t, x)
    h = broadcast_to_data(ss - st, x)
    d1 = (xt - x0_fn(x, t)) / broadcast_to_data(st, x)
    xe = xt + h * d1
    if solver == "euler":
        return broadcast_to_data(a_s, x) * xe
    xs = broadcast_to_data(a_s, x) * xe
    d2 = (xe - x0_fn(xs, s)) / broadcast_to_data(ss, x)
    return broadcast_to_data(a_s, x) * (xt + 0.5 * h * (d1 + d2))


def _level_logits(sde, n, max_levels: int, sampling: str, p_mean: float, p_std: float, rho: float, t_min):
    """Log-probabilities [max_levels - 1] of the lower level ``i`` of a pair (masked to ``i < n - 1``)."""
    idx = jnp.arange(max_levels - 1)
    valid = idx < n - 1
    if sampling == "uniform":
        return jnp.where(valid, 0.0, -jnp.inf)
    lo = sde.sigma_ratio(karras_level(sde, idx, n, rho=rho, t_min=t_min))
    hi = sde.sigma_ratio(karras_level(sde, jnp.minimum(idx + 1, n - 1), n, rho=rho, t_min=t_min))
    cdf = lambda s: jax.scipy.special.erf((jnp.log(s) - p_mean) / (math.sqrt(2.0) * p_std))  # noqa: E731
    w = jnp.maximum(cdf(hi) - cdf(lo), 1e-20)
    return jnp.where(valid, jnp.log(w), -jnp.inf)


def consistency_loss(apply: Callable, params: Any, key: jax.Array, x0: jax.Array, sde, n_levels, *,
                     teacher_score_fn: ScoreFn | None = None, solver: str = "heun", sigma_data: float = 0.5,
                     huber_c: float | None = None, level_sampling: str = "lognormal", p_mean: float = -1.1,
                     p_std: float = 2.0, rho: float = 7.0, max_levels: int | None = None, t_min: float | None = None,
                     return_aux: bool = False, **apply_kwargs):
    r"""Consistency distillation (``teacher_score_fn`` given) or consistency training (``None``) on data
    ``x0`` [B, *D] (module docstring). ``n_levels``: an int or ``[B]`` ints (levels per example, >= 2);
    ``max_levels`` (static, default ``n_levels`` when it is a Python int) bounds them. Returns the batch
    mean of :math:`\lambda_i d(\cdot,\cdot)` (``(loss, aux)`` with ``aux = {"levels": mean n}`` when
    ``return_aux``). Gradients flow only through :math:`f_\theta(x_{i+1}, t_{i+1})`.
    """
    check_choice("solver", solver, ODE_SOLVERS)
    check_choice("level_sampling", level_sampling, LEVEL_SAMPLING)
    x0 = jnp.asarray(x0)
    b = x0.shape[0]
    if max_levels is None:
        if not isinstance(n_levels, int):
            raise ValueError("consistency_loss: max_levels (a Python int) is needed when n_levels is an array.")
        max_levels = n_levels
    if max_levels < 2:
        raise ValueError(f"consistency_loss: expected at least 2 levels, got max_levels={max_levels}.")
    n = jnp.broadcast_to(jnp.asarray(n_levels, jnp.int32), (b,))
    t_min = sde.t_min if t_min is None else t_min
    c = 0.00054 * math.sqrt(math.prod(x0.shape[1:])) if huber_c is None else float(huber_c)
    k_level, k_z = jax.random.split(key)
    logits = jax.vmap(lambda m: _level_logits(sde, m, max_levels, level_sampling, p_mean, p_std, rho, t_min))(n)
    i = jax.random.categorical(k_level, logits, axis=-1)
    t_lo = karras_level(sde, i, n, rho=rho, t_min=t_min)
    t_hi = karras_level(sde, i + 1, n, rho=rho, t_min=t_min)
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    a_hi, s_hi = sde.marginal_coefs(t_hi)
    a_lo, s_lo = sde.marginal_coefs(t_lo)
    x_hi = broadcast_to_data(a_hi, x0) * x0 + broadcast_to_data(s_hi, x0) * z
    if teacher_score_fn is None:
        x_lo = broadcast_to_data(a_lo, x0) * x0 + broadcast_to_data(s_lo, x0) * z
    else:
        x_lo = jax.lax.stop_gradient(teacher_ode_step(teacher_score_fn, sde, x_hi, t_hi, t_lo, solver))
    kw = dict(apply_kwargs)
    f = consistency_fn(apply, params, sde, sigma_data=sigma_data, t_min=t_min, **kw)
    f_target = consistency_fn(apply, jax.lax.stop_gradient(params), sde, sigma_data=sigma_data, t_min=t_min, **kw)
    pred = f(x_hi, t_hi)
    target = jax.lax.stop_gradient(f_target(x_lo, t_lo))
    weight = 1.0 / (s_hi / a_hi - s_lo / a_lo)
    loss = jnp.mean(weight * pseudo_huber(pred, target, c))
    if return_aux:
        return loss, {"levels": jnp.mean(n.astype(jnp.float32))}
    return loss


__all__ = ["LEVEL_SAMPLING", "ODE_SOLVERS", "consistency_coefs", "consistency_fn", "consistency_loss",
           "consistency_score_fn", "ict_levels", "karras_level", "pseudo_huber", "teacher_ode_step"]
