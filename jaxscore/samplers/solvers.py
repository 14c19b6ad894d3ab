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

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxscore._checks import check_choice, check_nonnegative
from jaxscore.samplers import _core
from jaxscore.samplers._core import Start, call_score, fixed_step
from jaxscore.samplers.base import Sampler, always
from jaxscore.samplers.sde_samplers import _noise_scale, ddim_loop

HISTORY = 3  # number of stored x0-predictions (enough for third order + UniC)
# The deterministic solvers' default grid, end and final step: grid="auto", sigma_min="auto", denoise="auto", all
# set by the step count in jaxscore.samplers.grids.default_range (the one place, with the measurements behind it).
AUTO = {"grid": "auto", "sigma_min": "auto", "denoise": "auto"}
UNIPC_ORDER3_MIN_STEPS = 19  # unipc's order="auto": 3 from this many steps on, else 2


def default_unipc_order(steps: int) -> int:
    """UniPC's default predictor order at ``steps`` steps: 2 below :data:`UNIPC_ORDER3_MIN_STEPS` (19), 3 from there on
    (so 20 NFE, 19 steps plus the extrapolated final step, runs order 3).

    Measured with the default grid (``experiments/benchmarks/sampler_defaults_sweep.py``: ring2d / mix16d, VP,
    exact scores, 8,000 samples, paired error against a 300-step solve): order 3 vs 2 at 10 / 15 / 20 / 30 steps
    (larger of the two mixtures) 0.106 vs 0.036, 0.034 vs 0.030, 0.016 vs 0.021, 0.005 vs 0.009. With the final step
    (``--final-step``, six mixtures, 20,000 samples, largest error): 0.023 vs 0.025 at 19 + 1 NFE, 0.043 vs 0.032 at
    14 + 1."""
    return 3 if steps >= UNIPC_ORDER3_MIN_STEPS else 2


@fixed_step(steps=50, **AUTO)
def ddim(score_fn, sde, start: Start, *, eta: float = 0.0, final_noise: bool = False):
    r"""DDIM (see :func:`jaxscore.samplers.sde_samplers.ddim_step`): ``eta = 0`` is deterministic and
    equals first-order DPM-Solver(++) on the probability-flow ODE; ``eta = 1`` is ancestral (DDPM).
    ``eta`` must be >= 0 (it scales a standard deviation).
    """
    check_nonnegative("eta", eta, why=" (0 = deterministic DDIM, 1 = DDPM ancestral)")
    return ddim_loop(score_fn, sde, start, eta, final_noise)


# --- coefficient algebra: a "combo" is a coefficient vector over the stored x0's [m0, m1, m2] -----
# Each order's update is one function below returning its coefficients; the scan body evaluates
# every order a run can use and keeps the one its static schedule assigns to the step.
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


def _multistep(score_fn, sde, start: Start, *, order, lower_order_final, update, stochastic=False,
               final_noise=False):
    """Shared loop: at step n evaluate m_n = x0(x_n, t_n), push it, then ``x_{n+1} = update(...)``."""
    ts, steps, x0 = start.ts, start.steps, start.x
    g = _Grid(sde, ts)
    orders = jnp.asarray(_core.order_schedule(steps, order, lower_order_final))
    hist0 = jnp.zeros((HISTORY,) + start.shape, x0.dtype)

    def body(carry, n):
        x, hist = carry
        t = ts[n]
        m = sde.denoise(x, call_score(score_fn, x, t), _core.tvec(t, x))
        hist = _push(hist, m)
        if stochastic:
            z = _core.step_normal(start.keys, n, start.shape[1:]) * _noise_scale(n, steps, final_noise)
        else:
            z = None
        x = update(g, n, orders[n], x, hist, z)
        return x, hist

    (x, hist), traj = _core.scan_steps(body, (x0, hist0), steps, start.trajectory)
    return _core.LoopResult(x, traj, steps, hist[0])


class _Step(NamedTuple):
    """The step ``n -> n + 1`` in half log-SNR: ``h = lam[n+1] - lam[n] > 0`` and the λ's of the two
    earlier grid points (whose x0's are ``hist[1]``, ``hist[2]``)."""

    n: jax.Array
    h: jax.Array
    alpha_t: jax.Array
    sigma_t: jax.Array
    sigma_s0: jax.Array
    lam_s0: jax.Array
    lam_s1: jax.Array
    lam_s2: jax.Array


def _step(g, n) -> _Step:
    return _Step(n, g.lam[n + 1] - g.lam[n], g.alpha[n + 1], g.sigma[n + 1], g.sigma[n], g.lam[n], g.lam_at(n - 1),
                 g.lam_at(n - 2))


def _dpmpp_order1(s: _Step):
    r"""DDIM / DPM-Solver++(1): :math:`x_t = \tfrac{\sigma_t}{\sigma_s}x + \alpha_t(1 - e^{-h})\,m_0`."""
    phi1 = -jnp.expm1(-s.h)  # 1 - e^{-h}
    return s.alpha_t * phi1 * _e(0)


def _dpmpp_order2(s: _Step):
    r"""2M: :math:`D = (1 + \tfrac{1}{2r})m_0 - \tfrac{1}{2r}m_1`, :math:`r = h_{prev}/h`, in place of :math:`m_0`."""
    phi1 = -jnp.expm1(-s.h)
    r = jnp.where(s.n >= 1, (s.lam_s0 - s.lam_s1) / s.h, 1.0)
    return s.alpha_t * phi1 * ((1.0 + 0.5 / r) * _e(0) - (0.5 / r) * _e(1))


D2_COEFFICIENTS = {"reference": 1.0, "taylor": 2.0}  # factor on the D_2 term of 3M (see dpmpp_3m)


def _dpmpp_order3(s: _Step, d2_factor: float = 1.0):
    r"""3M (Lu et al. 2022 / diffusers ``multistep_dpm_solver_third_order_update``; ``d2_factor`` 1 as there,
    2 for the Taylor-consistent coefficient, see :func:`dpmpp_3m`)."""
    m0, m1, m2 = _e(0), _e(1), _e(2)
    h = s.h
    r0 = jnp.where(s.n >= 1, (s.lam_s0 - s.lam_s1) / h, 1.0)
    r1 = jnp.where(s.n >= 2, (s.lam_s1 - s.lam_s2) / h, 1.0)
    d1_0 = (m0 - m1) / r0
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    em1 = jnp.expm1(-h)  # e^{-h} - 1
    return (-s.alpha_t * em1 * m0 + s.alpha_t * (em1 / h + 1.0) * d1
            - d2_factor * s.alpha_t * ((em1 + h) / h**2 - 0.5) * d2)


_DPMPP_ORDERS = (_dpmpp_order1, _dpmpp_order2, _dpmpp_order3)


def _dpmpp_update(g, n, order, x, hist, z, max_order: int, d2_factor: float = 1.0):
    """DPM-Solver++ multistep: ``x_t = (sigma_t / sigma_s) x + coefs . hist`` with the step's order."""
    s = _step(g, n)
    variants = [_dpmpp_order1(s), _dpmpp_order2(s), _dpmpp_order3(s, d2_factor)][:max_order]
    coefs = _select(order, *variants)
    return _combine(s.sigma_t / s.sigma_s0, x, coefs, hist)


@fixed_step(steps=20, **AUTO)
def dpmpp_2m(score_fn, sde, start: Start, *, lower_order_final: bool = True):
    r"""DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data prediction, one score evaluation per step:

    .. math:: x_{t_{n+1}} = \frac{\sigma_{n+1}}{\sigma_n} x_n + \alpha_{n+1}(1 - e^{-h_n})
              \Big[\big(1 + \tfrac{1}{2r_n}\big)\hat x_0^{(n)} - \tfrac{1}{2r_n}\hat x_0^{(n-1)}\Big],
              \quad r_n = h_{n-1}/h_n,

    first order (DDIM) on the first step and, with ``lower_order_final``, on the last.
    """
    return _multistep(score_fn, sde, start, order=2, lower_order_final=lower_order_final,
                      update=functools.partial(_dpmpp_update, max_order=2))


@fixed_step(steps=20, **AUTO)
def dpmpp_3m(score_fn, sde, start: Start, *, lower_order_final: bool = True, d2_coefficient: str = "reference"):
    r"""DPM-Solver++(3M): third-order multistep in data prediction (warm-up orders 1, 2; with
    ``lower_order_final`` the last two steps use orders 2, 1):

    .. math:: x_{t} = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t(e^{-h}-1)D_0 + \alpha_t\Big(\frac{e^{-h}-1}{h}+1\Big)D_1
              - c\,\alpha_t\Big(\frac{e^{-h}-1+h}{h^2} - \frac12\Big)D_2,

    with :math:`D_1 \approx h\,\hat x_0'` and :math:`D_2 \approx \tfrac12 h^2\hat x_0''` the divided differences of
    the stored :math:`\hat x_0`'s in λ. ``d2_coefficient`` picks :math:`c`:

    * ``"reference"`` (default), :math:`c = 1`: dpm-solver, diffusers ``multistep_dpm_solver_third_order_update``
      and k-diffusion ``sample_dpmpp_3m_sde`` (``eta = 0``);
    * ``"taylor"``, :math:`c = 2`: what the exact integral of the quadratic Taylor term gives
      (:math:`\int_0^h e^{u-h}u^2/2\,du = h^2/2 - h + 1 - e^{-h}`, times :math:`2D_2/h^2`); its empirical
      order on a Gaussian's closed-form probability flow is >= 3 (``tests/test_samplers.py``), the
      reference's 2 in the step-size limit.

    Warm-up and final orders as DPM-Solver++(2M) / DDIM (as dpm-solver and diffusers; k-diffusion's
    ``sample_dpmpp_3m_sde`` takes its order-2 warm-up step in the :math:`\varphi_2` form, equal to O(h^3):
    with that step aligned, ``"reference"`` matches its ``eta = 0`` solve to round-off, tested in
    ``tests/test_sampler_defaults.py``).

    The default is the one that measures better per NFE at the budgets users run: with exact mixture scores
    (``experiments/benchmarks/samplers.py``, and the k-diffusion cross-check of 72 schedule x budget x
    dimension cases at 10-40 steps) the reference coefficient has the lower error; the Taylor one wins only
    in the asymptotic regime (hundreds of steps on smooth problems).
    """
    check_choice("d2_coefficient", d2_coefficient, tuple(D2_COEFFICIENTS))
    return _multistep(score_fn, sde, start, order=3, lower_order_final=lower_order_final,
                      update=functools.partial(_dpmpp_update, max_order=3,
                                               d2_factor=D2_COEFFICIENTS[d2_coefficient]))


def _dpmpp_2m_sde_order1(s: _Step, phi):
    return s.alpha_t * phi * _e(0)


def _dpmpp_2m_sde_order2(s: _Step, phi):
    m0, m1 = _e(0), _e(1)
    r0 = jnp.where(s.n >= 1, (s.lam_s0 - s.lam_s1) / s.h, 1.0)
    return s.alpha_t * phi * m0 + 0.5 * s.alpha_t * phi * (m0 - m1) / r0


def _dpmpp_2m_sde_update(g, n, order, x, hist, z):
    s = _step(g, n)
    cx = s.sigma_t / s.sigma_s0 * jnp.exp(-s.h)
    phi = -jnp.expm1(-2.0 * s.h)  # 1 - e^{-2h}
    coefs = _select(order, _dpmpp_2m_sde_order1(s, phi), _dpmpp_2m_sde_order2(s, phi))
    return _combine(cx, x, coefs, hist) + s.sigma_t * jnp.sqrt(phi) * z


@fixed_step(steps=50, grid="logsnr")
def dpmpp_2m_sde(score_fn, sde, start: Start, *, lower_order_final: bool = True, final_noise: bool = False):
    r"""DPM-Solver++(2M) SDE variant (Lu et al. 2022; diffusers "midpoint"), for the reverse SDE:

    .. math:: x_t = \frac{\sigma_t}{\sigma_s}e^{-h}x_s + \alpha_t(1-e^{-2h})\Big[D_0 + \tfrac12 D_1\Big]
              + \sigma_t\sqrt{1-e^{-2h}}\,z ,

    with :math:`h = \log(\alpha_t/\sigma_t) - \log(\alpha_s/\sigma_s)`,
    :math:`D_0 = \hat x_0^{(n)}`, :math:`D_1 = (\hat x_0^{(n)} - \hat x_0^{(n-1)})/r`.
    The last step is noiseless unless ``final_noise``.
    """
    return _multistep(score_fn, sde, start, order=2, lower_order_final=lower_order_final,
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


class _UniStep(NamedTuple):
    """The UniPC step ``i_s0 -> i_t``: ``hh = -h``, ``cx = sigma_t / sigma_s0`` and the divided
    differences ``D1_k = (m_k - m0) / r_k`` as combos over ``[m0, m1, m2]``, with
    ``r_k = (lambda_{s_k} - lambda_{s0}) / h < 0`` (a dummy ``-k`` where the history does not exist yet)."""

    alpha_t: jax.Array
    hh: jax.Array
    cx: jax.Array
    r1: jax.Array
    r2: jax.Array
    d1s: list


def _uni_step(g, i_s0, i_t) -> _UniStep:
    lam_t, lam_s0 = g.lam[i_t], g.lam[i_s0]
    h = lam_t - lam_s0
    r1 = jnp.where(i_s0 >= 1, (g.lam_at(i_s0 - 1) - lam_s0) / h, -1.0)
    r2 = jnp.where(i_s0 >= 2, (g.lam_at(i_s0 - 2) - lam_s0) / h, -2.0)
    m0, m1, m2 = _e(0), _e(1), _e(2)
    return _UniStep(g.alpha[i_t], -h, g.sigma[i_t] / g.sigma[i_s0], r1, r2, [(m1 - m0) / r1, (m2 - m0) / r2])


def _uni_rb(u: _UniStep, p: int):
    rks = jnp.stack([u.r1, u.r2][: p - 1] + [jnp.ones_like(u.r1)])
    return _unipc_rb(u.hh, rks, p)


def _unip_order(u: _UniStep, p: int):
    r"""UniP of order ``p``: ``coefs`` with :math:`x_t = c_x x_{s_0} + \text{coefs}\cdot\text{hist}`:
    :math:`-\alpha_t(e^{-h}-1)m_0 - \alpha_t B(h)\sum_k \rho_k D1_k`, :math:`\rho` from the
    :math:`(p-1)\times(p-1)` system (:math:`\rho = 1/2` at order 2)."""
    R, b, h_phi_1, B_h = _uni_rb(u, p)
    if p == 1:
        res = jnp.zeros(HISTORY)
    elif p == 2:
        res = 0.5 * u.d1s[0]
    else:
        rhos = jnp.linalg.solve(R[:-1, :-1], b[:-1])
        res = rhos[0] * u.d1s[0] + rhos[1] * u.d1s[1]
    return -u.alpha_t * h_phi_1 * _e(0) - u.alpha_t * B_h * res


def _unic_order(u: _UniStep, p: int):
    r"""UniC of order ``p`` (raised by one through :math:`m_t`, with :math:`D1_t = m_t - m_0`):
    ``(coefs, c_t)`` with :math:`x_t = c_x x_{s_0} + \text{coefs}\cdot\text{hist} + c_t m_t`."""
    R, b, h_phi_1, B_h = _uni_rb(u, p)
    rhos = jnp.array([0.5]) if p == 1 else jnp.linalg.solve(R, b)
    res = sum((rhos[k] * u.d1s[k] for k in range(p - 1)), jnp.zeros(HISTORY))
    coefs = -u.alpha_t * h_phi_1 * _e(0) - u.alpha_t * B_h * (res - rhos[-1] * _e(0))
    return coefs, -u.alpha_t * B_h * rhos[-1]


def _unip(g, i_s0, i_t, order, max_order: int):
    """UniP for the step ``i_s0 -> i_t`` at the (traced) ``order``: ``x_t = cx x_s0 + coefs . hist``."""
    u = _uni_step(g, i_s0, i_t)
    return u.cx, _select(order, *(_unip_order(u, p) for p in range(1, max_order + 1)))


def _unic(g, i_s0, i_t, order, max_order: int):
    """UniC for the step ``i_s0 -> i_t``: ``x_t = cx x_s0 + coefs . hist + c_t m_t``."""
    u = _uni_step(g, i_s0, i_t)
    coefs, c_t = _select(order, *(_unic_order(u, p) for p in range(1, max_order + 1)))
    return u.cx, coefs, c_t


@fixed_step(steps=20, **AUTO)
def unipc(score_fn, sde, start: Start, *, order="auto", lower_order_final: bool = True, corrector: bool = True,
          final_corrector: bool = False):
    r"""UniPC (Zhao et al. 2023), data prediction with :math:`B(h) = e^{h} - 1` ("bh2").

    At step n: evaluate :math:`m_n = \hat x_0(\tilde x_n, t_n)` at the predicted :math:`\tilde x_n`; the
    UniC corrector (order of the previous predictor step, raised by one through :math:`m_n`) refines
    :math:`x_n` from :math:`x_{n-1}` with no extra evaluation; then the UniP predictor of ``order``
    (1, 2 or 3; ``"auto"``: :func:`default_unipc_order` of the step count, 2 below 20 steps and 3 from there on;
    warm-up and ``lower_order_final`` lower it) gives :math:`\tilde x_{n+1}`. The last
    prediction is returned uncorrected (no further evaluation), unless ``final_corrector``: then one
    more evaluation at ``t_min`` feeds a last UniC step. NFE = steps (+1 with ``final_corrector``,
    +1 with ``denoise``). ``corrector=False`` gives UniP alone.
    """
    ts, steps, x0 = start.ts, start.steps, start.x
    if isinstance(order, str):
        check_choice("order", order, ("auto",))
        order = default_unipc_order(steps)
    check_choice("order", order, (1, 2, 3))
    g = _Grid(sde, ts)
    orders = jnp.asarray(_core.order_schedule(steps, order, lower_order_final))
    hist0 = jnp.zeros((HISTORY,) + start.shape, x0.dtype)

    def body(carry, n):
        x_pred, x_last, hist = carry
        t = ts[n]
        m_t = sde.denoise(x_pred, call_score(score_fn, x_pred, t), _core.tvec(t, x_pred))
        if corrector:
            prev_order = orders[jnp.maximum(n - 1, 0)]
            cx, coefs, c_t = _unic(g, n - 1, n, prev_order, order)
            x_corr = _combine(cx, x_last, coefs, hist) + c_t * m_t
            x = jnp.where(n >= 1, x_corr, x_pred)
        else:
            x = x_pred
        hist = _push(hist, m_t)
        cx, coefs = _unip(g, n, n + 1, orders[n], order)
        x_next = _combine(cx, x, coefs, hist)
        return x_next, x, hist

    (x, x_last, hist), traj = _core.scan_steps(body, (x0, x0, hist0), steps, start.trajectory)
    nfe = steps
    if final_corrector:
        t = ts[steps]
        m_t = sde.denoise(x, call_score(score_fn, x, t), _core.tvec(t, x))
        cx, coefs, c_t = _unic(g, steps - 1, steps, orders[steps - 1], order)
        x = _combine(cx, x_last, coefs, hist) + c_t * m_t
        if start.trajectory:
            traj = traj.at[-1].set(x)
        nfe += 1
    return _core.LoopResult(x, traj, nfe, hist[0])


DDIM = Sampler("ddim", ddim, noise_free=lambda eta, **_: isinstance(eta, (int, float)) and eta == 0)
DPMPP_2M = Sampler("dpmpp_2m", dpmpp_2m, noise_free=always)
DPMPP_3M = Sampler("dpmpp_3m", dpmpp_3m, noise_free=always)
DPMPP_2M_SDE = Sampler("dpmpp_2m_sde", dpmpp_2m_sde)
UNIPC = Sampler("unipc", unipc, extra=lambda final_corrector, **_: int(bool(final_corrector)), noise_free=always)
