r"""Fast diffusion ODE/SDE solvers in data prediction: DDIM, DPM-Solver++ (2M, 3M, 2M-SDE), UniPC.

All are written with the SDE's :math:`\alpha_t`, :math:`\sigma_t` and half log-SNR
:math:`\lambda_t = \log(\alpha_t/\sigma_t) = \tfrac12` ``sde.log_snr(t)`` on the grid, and the data prediction
:math:`\hat x_0(x, t) = (x + \sigma_t^2 s(x,t))/\alpha_t` (``sde.denoise``), so the same code serves
VE, VP and sub-VP. With :math:`h = \lambda_{t'} - \lambda_t > 0` for a step :math:`t \to t' < t`,
the exact solution of the probability-flow ODE is

.. math:: x_{t'} = \frac{\sigma_{t'}}{\sigma_t} x_t + \sigma_{t'}\int_{\lambda_t}^{\lambda_{t'}} e^{\lambda}
          \hat x_0(x_\lambda, \lambda)\,d\lambda \quad\text{(Lu et al. 2022, eq. 9)},

and the solvers differ in how they extrapolate :math:`\hat x_0` from the history of previous
evaluations (multistep, one score evaluation per step). Per-step orders are static (warm-up
1, 2, ...; ``lower_order_final`` lowers the last steps), so every step is one fixed linear
combination of the current state and the stored :math:`\hat x_0`'s with scalar coefficients
computed in the loop. NFE = steps (+1 with ``denoise``).

References: DDIM (Song, Meng & Ermon 2021), DPM-Solver++ (Lu et al. 2022, multistep 2M/3M and
2M-SDE as in diffusers), UniPC (Zhao et al. 2023, B(h) = e^h - 1 "bh2", UniC corrector).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxscore.samplers import _core
from jaxscore.samplers._core import call_score
from jaxscore.samplers.sde_samplers import _ddim_loop, _noise_scale

HISTORY = 3  # number of stored x0-predictions (enough for third order + UniC)


def ddim(key, score_fn, sde, shape, *, steps: int = 50, eta: float = 0.0, grid="uniform", t_min=None,
         rho: float | None = None, denoise: bool = False, final_noise: bool = False, return_info: bool = False,
         return_trajectory: bool = False, example_offset=0, x_init=None):
    r"""DDIM (see :func:`jaxscore.samplers.sde_samplers.ddim_step`): ``eta = 0`` is deterministic and
    equals first-order DPM-Solver(++) on the probability-flow ODE; ``eta = 1`` is ancestral (DDPM).
    """
    return _ddim_loop(key, score_fn, sde, shape, steps=steps, grid=grid, t_min=t_min, rho=rho, denoise=denoise,
                      eta=eta, final_noise=final_noise, return_info=return_info,
                      return_trajectory=return_trajectory, example_offset=example_offset, x_init=x_init)


# --- coefficient algebra: a "combo" is a coefficient vector over the stored x0's [m0, m1, m2] -----

def _e(i):
    return jnp.zeros(HISTORY).at[i].set(1.0)


def _select(order, *variants):
    """Pick ``variants[order - 1]`` (each a pytree of scalars / small arrays) by the traced order."""
    return jax.tree.map(lambda *vs: jnp.select([order == k + 1 for k in range(len(vs))], list(vs)), *variants)


def _combine(cx, x, coefs, hist):
    """``cx * x + sum_k coefs[k] * hist[k]``; ``hist`` is [HISTORY, B, *D]."""
    return cx * x + jnp.tensordot(coefs.astype(x.dtype), hist, axes=1)


def _push(hist, m):
    return jnp.concatenate([m[None], hist[:-1]], axis=0)


class _Grid:
    """alpha, sigma and the half log-SNR lambda = log(alpha/sigma) (the λ of DPM-Solver / UniPC) on the
    grid, with safe look-ups of past indices."""

    def __init__(self, sde, ts):
        self.alpha, self.sigma = sde.marginal_coefs(ts)
        self.lam = 0.5 * sde.log_snr(ts)

    def lam_at(self, i):
        return self.lam[jnp.maximum(i, 0)]


def _multistep(key, score_fn, sde, shape, *, steps, grid, t_min, rho, denoise, order, lower_order_final,
               return_info, return_trajectory, example_offset, update, x_init=None, stochastic=False, final_noise=False):
    """Shared loop: at step n evaluate m_n = x0(x_n, t_n), push it, then ``x_{n+1} = update(...)``."""
    shape, steps, ts, keys, x0 = _core.setup(key, score_fn, sde, shape, steps, grid, t_min, rho, example_offset, x_init)
    g = _Grid(sde, ts)
    orders = jnp.asarray(_core.order_schedule(steps, order, lower_order_final))
    hist0 = jnp.zeros((HISTORY,) + shape, x0.dtype)

    def body(carry, n):
        x, hist = carry
        t = ts[n]
        m = sde.denoise(x, call_score(score_fn, x, t), _core.tvec(t, x))
        hist = _push(hist, m)
        if stochastic:
            z = _core.step_normal(keys, n, shape[1:]) * _noise_scale(n, steps, final_noise)
        else:
            z = None
        x = update(g, n, orders[n], x, hist, z)
        return x, hist

    (x, _), traj = _core.scan_steps(body, (x0, hist0), steps, return_trajectory)
    return _core.finish(x, x0, traj, ts, steps, score_fn, sde, denoise, return_info, return_trajectory)


def _dpmpp_coefs(g, n, order):
    r"""DPM-Solver++ multistep (orders 1-3) for the step n -> n+1: returns ``(cx, coefs)``."""
    lam_t, lam_s0, lam_s1, lam_s2 = g.lam[n + 1], g.lam[n], g.lam_at(n - 1), g.lam_at(n - 2)
    alpha_t, sigma_t, sigma_s0 = g.alpha[n + 1], g.sigma[n + 1], g.sigma[n]
    h = lam_t - lam_s0
    phi1 = -jnp.expm1(-h)  # 1 - e^{-h}
    cx = sigma_t / sigma_s0
    m0, m1, m2 = _e(0), _e(1), _e(2)
    # order 1 (= DDIM): x_t = cx x + alpha_t (1 - e^{-h}) m0
    c1 = alpha_t * phi1 * m0
    # order 2 (2M): D = (1 + 1/(2r)) m0 - 1/(2r) m1,  r = h_prev / h
    r = jnp.where(n >= 1, (lam_s0 - lam_s1) / h, 1.0)
    c2 = alpha_t * phi1 * ((1.0 + 0.5 / r) * m0 - (0.5 / r) * m1)
    # order 3 (3M), Lu et al. 2022 / diffusers multistep_dpm_solver_third_order_update
    r0 = jnp.where(n >= 1, (lam_s0 - lam_s1) / h, 1.0)
    r1 = jnp.where(n >= 2, (lam_s1 - lam_s2) / h, 1.0)
    d1_0 = (m0 - m1) / r0
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    em1 = jnp.expm1(-h)  # e^{-h} - 1
    c3 = -alpha_t * em1 * m0 + alpha_t * (em1 / h + 1.0) * d1 - 2.0 * alpha_t * ((em1 + h) / h**2 - 0.5) * d2
    return cx, _select(order, c1, c2, c3)


def _dpmpp_update(g, n, order, x, hist, z):
    cx, coefs = _dpmpp_coefs(g, n, order)
    return _combine(cx, x, coefs, hist)


def dpmpp_2m(key, score_fn, sde, shape, *, steps: int = 20, grid="logsnr", t_min=None, rho: float | None = None,
             denoise: bool = False, lower_order_final: bool = True, return_info: bool = False,
             return_trajectory: bool = False, example_offset=0, x_init=None):
    r"""DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data prediction, one score evaluation per step:

    .. math:: x_{t_{n+1}} = \frac{\sigma_{n+1}}{\sigma_n} x_n + \alpha_{n+1}(1 - e^{-h_n})
              \Big[\big(1 + \tfrac{1}{2r_n}\big)\hat x_0^{(n)} - \tfrac{1}{2r_n}\hat x_0^{(n-1)}\Big],
              \quad r_n = h_{n-1}/h_n,

    first order (DDIM) on the first step and, with ``lower_order_final``, on the last.
    """
    return _multistep(key, score_fn, sde, shape, steps=steps, grid=grid, t_min=t_min, rho=rho, denoise=denoise,
                      order=2, lower_order_final=lower_order_final, return_info=return_info,
                      return_trajectory=return_trajectory, example_offset=example_offset, x_init=x_init, update=_dpmpp_update)


def dpmpp_3m(key, score_fn, sde, shape, *, steps: int = 20, grid="logsnr", t_min=None, rho: float | None = None,
             denoise: bool = False, lower_order_final: bool = True, return_info: bool = False,
             return_trajectory: bool = False, example_offset=0, x_init=None):
    r"""DPM-Solver++(3M): third-order multistep in data prediction (warm-up orders 1, 2; with
    ``lower_order_final`` the last two steps use orders 2, 1):

    .. math:: x_{t} = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t(e^{-h}-1)D_0 + \alpha_t\Big(\frac{e^{-h}-1}{h}+1\Big)D_1
              - \alpha_t\Big(\frac{e^{-h}-1+h}{h^2} - \frac12\Big)D_2,

    with :math:`D_1 \approx h\,\hat x_0'` and :math:`D_2 \approx \tfrac12 h^2\hat x_0''` the divided differences of
    the stored :math:`\hat x_0`'s in λ. Note the factor 2 on the :math:`D_2` term: it is what the exact
    integral of the quadratic Taylor term gives (:math:`\int_0^h e^{u-h}u^2/2\,du = h^2/2 - h + 1 - e^{-h}`,
    times :math:`2D_2/h^2`). The reference implementations (dpm-solver, diffusers
    ``multistep_dpm_solver_third_order_update``) use half this coefficient, which leaves the method
    second order; with the factor the empirical order is >= 3 (tested against the closed-form
    probability-flow of a Gaussian in ``tests/test_samplers.py``).
    """
    return _multistep(key, score_fn, sde, shape, steps=steps, grid=grid, t_min=t_min, rho=rho, denoise=denoise,
                      order=3, lower_order_final=lower_order_final, return_info=return_info,
                      return_trajectory=return_trajectory, example_offset=example_offset, x_init=x_init, update=_dpmpp_update)


def _dpmpp_2m_sde_update(g, n, order, x, hist, z):
    lam_t, lam_s0, lam_s1 = g.lam[n + 1], g.lam[n], g.lam_at(n - 1)
    alpha_t, sigma_t, sigma_s0 = g.alpha[n + 1], g.sigma[n + 1], g.sigma[n]
    h = lam_t - lam_s0
    cx = sigma_t / sigma_s0 * jnp.exp(-h)
    phi = -jnp.expm1(-2.0 * h)  # 1 - e^{-2h}
    m0, m1 = _e(0), _e(1)
    c1 = alpha_t * phi * m0
    r0 = jnp.where(n >= 1, (lam_s0 - lam_s1) / h, 1.0)
    c2 = alpha_t * phi * m0 + 0.5 * alpha_t * phi * (m0 - m1) / r0
    coefs = _select(order, c1, c2)
    return _combine(cx, x, coefs, hist) + sigma_t * jnp.sqrt(phi) * z


def dpmpp_2m_sde(key, score_fn, sde, shape, *, steps: int = 50, grid="logsnr", t_min=None, rho: float | None = None,
                 denoise: bool = False, lower_order_final: bool = True, final_noise: bool = False,
                 return_info: bool = False, return_trajectory: bool = False, example_offset=0, x_init=None):
    r"""DPM-Solver++(2M) SDE variant (Lu et al. 2022; diffusers "midpoint"), for the reverse SDE:

    .. math:: x_t = \frac{\sigma_t}{\sigma_s}e^{-h}x_s + \alpha_t(1-e^{-2h})\Big[D_0 + \tfrac12 D_1\Big]
              + \sigma_t\sqrt{1-e^{-2h}}\,z ,

    with :math:`h = \log(\alpha_t/\sigma_t) - \log(\alpha_s/\sigma_s)`,
    :math:`D_0 = \hat x_0^{(n)}`, :math:`D_1 = (\hat x_0^{(n)} - \hat x_0^{(n-1)})/r`.
    The last step is noiseless unless ``final_noise``.
    """
    return _multistep(key, score_fn, sde, shape, steps=steps, grid=grid, t_min=t_min, rho=rho, denoise=denoise,
                      order=2, lower_order_final=lower_order_final, return_info=return_info,
                      return_trajectory=return_trajectory, example_offset=example_offset, x_init=x_init,
                      update=_dpmpp_2m_sde_update, stochastic=True, final_noise=final_noise)


# --- UniPC -----------------------------------------------------------------------------------

def _unipc_rb(hh, rks, p: int):
    """UniPC's R (p x p, rows rks^(i-1)) and b for B(h) = e^{hh} - 1 (bh2), hh = -h (data prediction)."""
    h_phi_1 = jnp.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    B_h = jnp.expm1(hh)
    fact = 1.0
    R, b = [], []
    for i in range(1, p + 1):
        R.append(rks ** (i - 1))
        b.append(h_phi_k * fact / B_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return jnp.stack(R), jnp.stack(b), h_phi_1, B_h


def _unipc_coefs(g, i_s0, i_t, order, corrector: bool):
    r"""Coefficients of UniP (``corrector=False``) / UniC for the step ``i_s0 -> i_t`` with the
    stored x0's ``[m0 (at i_s0), m1 (at i_s0-1), m2 (at i_s0-2)]``.

    Returns ``(cx, coefs [3], c_t)``: ``x_t = cx x_s0 + coefs . hist + c_t m_t`` (``c_t = 0`` for UniP).
    """
    lam_t, lam_s0 = g.lam[i_t], g.lam[i_s0]
    alpha_t, sigma_t, sigma_s0 = g.alpha[i_t], g.sigma[i_t], g.sigma[i_s0]
    h = lam_t - lam_s0
    hh = -h
    cx = sigma_t / sigma_s0
    # r_k = (lambda_{s_k} - lambda_{s0}) / h < 0; dummy -k where the history does not exist yet
    r1 = jnp.where(i_s0 >= 1, (g.lam_at(i_s0 - 1) - lam_s0) / h, -1.0)
    r2 = jnp.where(i_s0 >= 2, (g.lam_at(i_s0 - 2) - lam_s0) / h, -2.0)
    m = [_e(0), _e(1), _e(2)]
    d1s = [(m[1] - m[0]) / r1, (m[2] - m[0]) / r2]  # D1_k = (m_k - m0)/r_k as combos
    variants = []
    for p in (1, 2, 3):
        rks = jnp.stack([r1, r2][: p - 1] + [jnp.ones_like(r1)])
        R, b, h_phi_1, B_h = _unipc_rb(hh, rks, p)
        base = -alpha_t * h_phi_1 * m[0]
        if not corrector:
            if p == 1:
                res = jnp.zeros(HISTORY)
            elif p == 2:
                res = 0.5 * d1s[0]
            else:
                rhos = jnp.linalg.solve(R[:-1, :-1], b[:-1])
                res = rhos[0] * d1s[0] + rhos[1] * d1s[1]
            variants.append((base - alpha_t * B_h * res, jnp.zeros(())))
        else:
            rhos = jnp.array([0.5]) if p == 1 else jnp.linalg.solve(R, b)
            res = sum((rhos[k] * d1s[k] for k in range(p - 1)), jnp.zeros(HISTORY))
            # D1_t = m_t - m0
            coefs = base - alpha_t * B_h * (res - rhos[-1] * m[0])
            variants.append((coefs, -alpha_t * B_h * rhos[-1]))
    coefs, c_t = _select(order, *variants)
    return cx, coefs, c_t


def unipc(key, score_fn, sde, shape, *, steps: int = 20, order: int = 2, grid="logsnr", t_min=None,
          rho: float | None = None, denoise: bool = False, lower_order_final: bool = True, corrector: bool = True,
          final_corrector: bool = False, return_info: bool = False, return_trajectory: bool = False,
          example_offset=0, x_init=None):
    r"""UniPC (Zhao et al. 2023), data prediction with :math:`B(h) = e^{h} - 1` ("bh2").

    At step n: evaluate :math:`m_n = \hat x_0(\tilde x_n, t_n)` at the predicted :math:`\tilde x_n`; the
    UniC corrector (order of the previous predictor step, raised by one through :math:`m_n`) refines
    :math:`x_n` from :math:`x_{n-1}` with no extra evaluation; then the UniP predictor of ``order``
    (2 or 3; warm-up and ``lower_order_final`` lower it) gives :math:`\tilde x_{n+1}`. The last
    prediction is returned uncorrected (no further evaluation), unless ``final_corrector``: then one
    more evaluation at ``t_min`` feeds a last UniC step. NFE = steps (+1 with ``final_corrector``,
    +1 with ``denoise``). ``corrector=False`` gives UniP alone.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc: order must be 1, 2 or 3, got {order!r}.")
    shape, steps, ts, keys, x0 = _core.setup(key, score_fn, sde, shape, steps, grid, t_min, rho, example_offset, x_init)
    g = _Grid(sde, ts)
    orders = jnp.asarray(_core.order_schedule(steps, order, lower_order_final))
    hist0 = jnp.zeros((HISTORY,) + shape, x0.dtype)

    def body(carry, n):
        x_pred, x_last, hist = carry
        t = ts[n]
        m_t = sde.denoise(x_pred, call_score(score_fn, x_pred, t), _core.tvec(t, x_pred))
        if corrector:
            prev_order = orders[jnp.maximum(n - 1, 0)]
            cx, coefs, c_t = _unipc_coefs(g, n - 1, n, prev_order, corrector=True)
            x_corr = _combine(cx, x_last, coefs, hist) + c_t * m_t
            x = jnp.where(n >= 1, x_corr, x_pred)
        else:
            x = x_pred
        hist = _push(hist, m_t)
        cx, coefs, _ = _unipc_coefs(g, n, n + 1, orders[n], corrector=False)
        x_next = _combine(cx, x, coefs, hist)
        return x_next, x, hist

    (x, x_last, hist), traj = _core.scan_steps(body, (x0, x0, hist0), steps, return_trajectory)
    nfe = steps
    if final_corrector:
        t = ts[steps]
        m_t = sde.denoise(x, call_score(score_fn, x, t), _core.tvec(t, x))
        cx, coefs, c_t = _unipc_coefs(g, steps - 1, steps, orders[steps - 1], corrector=True)
        x = _combine(cx, x_last, coefs, hist) + c_t * m_t
        if return_trajectory:
            traj = traj.at[-1].set(x)
        nfe += 1
    return _core.finish(x, x0, traj, ts, nfe, score_fn, sde, denoise, return_info, return_trajectory)
