r"""Methods for linear inverse problems :math:`y = A x_0 + n`, :math:`n \sim N(0, \sigma_y^2 I)`, with a
diffusion prior given by any ``score_fn(x, t)`` and :class:`~jaxscore.sde.LinearSDE`.

Notation: marginals :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`, Tweedie's
:math:`\hat x_0(x_t) = (x_t + \sigma_t^2 s(x_t, t))/\alpha_t`, and the operator's SVD
:math:`A = U\Sigma V^\top` with singular values :math:`s_i` (:mod:`jaxscore.inverse.operators`);
spectral observation :math:`\bar y_i = (U^\top y)_i / s_i` for :math:`s_i > 0`.

Guided scores (plug into any sampler: ``sample(key, pigdm(...), sde, shape, "dpmpp_2m")``):

* :func:`pigdm` (Song et al. 2023, ΠGDM):
  :math:`\nabla\log p_t(y\mid x_t) \approx (\partial\hat x_0/\partial x_t)^\top A^\top
  (\sigma_y^2 I + r_t^2 AA^\top)^{-1}(y - A\hat x_0)`, :math:`r_t^2 = v\sigma_t^2/(\alpha_t^2 v + \sigma_t^2)`.
  Exact for a prior :math:`N(\mu, vI)`. The solve is elementwise when :math:`AA^\top` is diagonal, in
  the SVD basis for SVD operators, and conjugate gradients (lineax) otherwise.
* :func:`dps` (Chung et al. 2023, Gaussian-likelihood form):
  :math:`-\tfrac{\gamma}{2\sigma_y^2}\nabla_{x_t}\|y - A\hat x_0(x_t)\|^2` (no :math:`r_t^2` term).

Samplers (a method that changes the state, not the score):

* :func:`dps_sample`: the DPS paper's Algorithm 1 with its step :math:`\zeta_i = \zeta/\|y - A\hat x_0\|`:
  an ancestral (DDPM) step with the unconditional score, then
  :math:`x_{i-1} \leftarrow x_{i-1} - \zeta_i\nabla_{x_i}\|y - A\hat x_0(x_i)\|^2`.
* :func:`replacement_sample`: score_sde's inpainting / colorization (Song et al. 2021, appendix I):
  after each predictor (and corrector) step to time t, the observed spectral coordinates are
  replaced by a forward-diffused observation :math:`\alpha_t\bar y_i + \sigma_t z_i`; for a mask
  (:math:`V = I`) that is the observed pixels, for colorization the channel-mean coordinate of
  score_sde's decoupled colour space. Treats y as noiseless.
* :func:`ddrm_sample` (Kawar et al. 2022, DDRM): per spectral coordinate in the VE-scaled variable
  :math:`\tilde x = x/\alpha_t`, :math:`\tilde\sigma_t = \sigma_t/\alpha_t`, with
  :math:`c_0 = V^\top\hat x_0`, :math:`c_\varepsilon = V^\top(\tilde x - \hat x_0)/\tilde\sigma_t`,
  step from :math:`\tilde\sigma` to :math:`\tilde\sigma'` (0 at the last step):

  .. math::
      c'_i = \begin{cases}
        c_{0,i} + \sqrt{1-\eta^2}\,\tilde\sigma' c_{\varepsilon,i} + \eta\tilde\sigma' z_i & s_i = 0\\
        c_{0,i} + \sqrt{1-\eta^2}\,\tilde\sigma'\,\frac{\bar y_i - c_{0,i}}{\sigma_y/s_i} + \eta\tilde\sigma' z_i
          & s_i\tilde\sigma' < \sigma_y\\
        (1-\eta_b)\,c_{0,i} + \eta_b\bar y_i + \sqrt{\tilde\sigma'^2 - \eta_b^2\sigma_y^2/s_i^2}\; z_i
          & s_i\tilde\sigma' > \sigma_y
      \end{cases}

  (equality counts as the first case, as in the reference code), started from DDRM's
  :math:`q(x_T\mid y)`: :math:`\bar y_i + \sqrt{\tilde\sigma_T^2 - \sigma_y^2/s_i^2}\,z_i` where
  :math:`s_i\tilde\sigma_T > \sigma_y`, else :math:`\tilde\sigma_T z_i`.

Per-example noise follows the samplers' rule (example i's noise depends only on (key, i)).
Costs: the guided scores and :func:`dps_sample` take one score call plus one vector-Jacobian
product through it per step (about 2-3x a plain step); :func:`replacement_sample` and
:func:`ddrm_sample` one score call per step. NFE counts score calls.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxscore._checks import (
    broadcast_to_data,
    check_batch,
    check_broadcasts_to,
    check_finite_number,
    check_nonnegative,
    check_positive,
    check_steps,
)
from jaxscore.inverse.operators import LinearOperator, SVDOperator
from jaxscore.samplers import _core
from jaxscore.samplers._core import call_score

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
LinearOp = Callable[[jax.Array], jax.Array]

__all__ = ["ddrm_sample", "dps", "dps_sample", "pigdm", "replacement_sample"]


# --- guided scores ------------------------------------------------------------------------------

def _denoiser(score_fn: ScoreFn, sde, t: jax.Array) -> Callable:
    """``x -> (x0_hat, score)``: Tweedie's mean with the score as auxiliary output (for ``jax.vjp``)."""

    def f(x):
        s = score_fn(x, t)
        return sde.denoise(x, s, t), s

    return f


def _forward_of(operator) -> LinearOp:
    if isinstance(operator, LinearOperator):
        return operator.forward
    if callable(operator):
        return operator
    raise TypeError(f"operator: expected a LinearOperator or a linear callable x [B, *D] -> A x [B, *M], "
                    f"got {type(operator).__name__}.")


def _check_observation(forward: LinearOp, x: jax.Array, y) -> jax.Array:
    y = jnp.asarray(y, x.dtype)
    expected = jax.eval_shape(forward, x).shape
    if y.shape != expected:
        raise ValueError(f"y: expected shape {expected} (forward(x) for x of shape {x.shape}), got {y.shape}.")
    return y


def _guided_score(score_fn: ScoreFn, sde, operator, y, scale: float, x0_direction) -> ScoreFn:
    r""":math:`s + \gamma (\partial\hat x_0/\partial x_t)^\top g_0` with
    :math:`g_0` = ``x0_direction(residual, ax0, vjp_forward, alpha, sigma)`` in x-space."""
    forward = _forward_of(operator)

    def guided(x, t):
        x, t = check_batch(x, t)
        yy = _check_observation(forward, x, y)
        alpha, sigma = sde.marginal_coefs(t)
        x0, vjp_denoiser, score = jax.vjp(_denoiser(score_fn, sde, t), x, has_aux=True)
        ax0, vjp_forward = jax.vjp(forward, x0)
        g0 = x0_direction(yy - ax0, ax0, lambda v: vjp_forward(v)[0], alpha, sigma)
        (g,) = vjp_denoiser(g0)
        return score + scale * g

    return guided


def pigdm(score_fn: ScoreFn, sde, operator, y, *, noise_std: float, aat=None, data_var: float = 1.0,
          scale: float = 1.0, solver: str = "auto") -> ScoreFn:
    r"""ΠGDM posterior score for :math:`y = A x_0 + N(0, \sigma_y^2 I)` (module docstring).

    ``operator``: a :class:`~jaxscore.inverse.operators.LinearOperator` (any: the solve
    :math:`A^\top(\sigma_y^2 I + r_t^2AA^\top)^{-1}` is its ``adjoint_solve(..., method=solver)``:
    ``"auto"`` = diagonal / SVD closed form where the operator has one, else CG; ``"cg"`` forces
    conjugate gradients), or a linear callable ``forward`` with ``aat`` the diagonal of
    :math:`AA^\top` broadcastable to ``y`` (default 1; :func:`~jaxscore.inverse.operators.mask_operator`
    and :func:`~jaxscore.inverse.operators.grayscale_operator` return it).
    ``y``: [B, *M]; ``noise_std``: :math:`\sigma_y \ge 0` (0: the noiseless limit, defined for t > 0);
    ``data_var``: :math:`v` in :math:`r_t^2` (1 for unit-variance data, ~0.25 for images in [-1, 1]);
    ``scale``: multiplier of the likelihood term (1 = ΠGDM). Returns ``score_fn(x, t)``.
    """
    check_nonnegative("noise_std", noise_std, why=" (sigma_y, the observation noise's standard deviation)")
    check_positive("data_var", data_var, why=" (the prior variance per dimension in r_t^2)")
    check_finite_number("scale", scale)
    noise_var = noise_std**2

    def r2_of(alpha, sigma):
        return data_var * sigma**2 / (alpha**2 * data_var + sigma**2)

    if isinstance(operator, LinearOperator):
        if aat is not None:
            raise TypeError("pigdm: aat is for a plain forward callable; a LinearOperator knows its own A A^T.")

        def direction(resid, ax0, vjp_forward, alpha, sigma):
            return operator.adjoint_solve(resid, noise_var, r2_of(alpha, sigma), method=solver)
    else:
        _forward_of(operator)
        aat_ = 1.0 if aat is None else aat

        def direction(resid, ax0, vjp_forward, alpha, sigma):
            check_broadcasts_to("aat", jnp.shape(aat_), ax0.shape,
                                hint=" (A x's shape; aat is the diagonal of A A^T, e.g. the mask_operator's for this data)")
            cov = noise_var + broadcast_to_data(r2_of(alpha, sigma), ax0) * jnp.asarray(aat_, ax0.dtype)
            # an entry with cov = 0 is a zero row of A (unobserved pixel, noise 0): A^T maps it to 0 anyway
            return vjp_forward(jnp.where(cov > 0, resid / jnp.where(cov > 0, cov, 1.0), 0.0))

    return _guided_score(score_fn, sde, operator, y, scale, direction)


def dps(score_fn: ScoreFn, sde, operator, y, *, noise_std: float, scale: float = 1.0) -> ScoreFn:
    r"""DPS posterior score, Gaussian-likelihood form:
    :math:`s - \tfrac{\gamma}{2\sigma_y^2}\nabla_{x_t}\|y - A\hat x_0(x_t)\|^2`. ``operator``: a
    :class:`~jaxscore.inverse.operators.LinearOperator` or any differentiable per-example map.
    ``noise_std`` must be > 0 and ``scale`` finite. The paper's normalised step is :func:`dps_sample`."""
    check_positive("noise_std", noise_std, why=" (DPS divides by sigma_y^2)")
    check_finite_number("scale", scale)
    noise_var = noise_std**2
    return _guided_score(score_fn, sde, operator, y, scale,
                         lambda resid, ax0, vjp_forward, alpha, sigma: vjp_forward(resid / noise_var))


# --- samplers ------------------------------------------------------------------------------------

def _start(key, score_fn, sde, operator, y, steps, grid, t_min, rho):
    """Checks, the batch shape from ``y`` and the operator, and the common sampler start."""
    if not isinstance(operator, LinearOperator):
        raise TypeError(f"operator: expected a jaxscore.inverse LinearOperator, got {type(operator).__name__}.")
    y = jnp.asarray(y, jnp.result_type(float))
    if y.ndim != len(operator.out_shape) + 1 or tuple(y.shape[1:]) != tuple(operator.out_shape):
        raise ValueError(f"y: expected shape [B, *{operator.out_shape}] ({type(operator).__name__}'s out_shape), "
                         f"got {tuple(y.shape)}.")
    shape = (y.shape[0],) + tuple(operator.in_shape)
    start = _core.setup(key, score_fn, sde, shape, check_steps(steps), grid, t_min, rho, 0)
    return start, y


def _finish(x, start, nfe, return_info):
    if not return_info:
        return x
    return x, {"nfe": int(nfe), "ts": start.ts, "nonfinite": _core.count_nonfinite_rows(x)}


def _spectral_observation(operator: SVDOperator, y):
    """``(s [d], observed [d] bool, y_bar [B, d])`` with :math:`\\bar y = U^\\top y / s` where observed."""
    s = operator.singulars()
    observed = s > 0
    y_bar = jnp.where(observed, operator.ut(y) / jnp.where(observed, s, 1.0), 0.0)
    return s, observed, y_bar


def dps_sample(key, score_fn: ScoreFn, sde, operator: LinearOperator, y, *, zeta: float = 1.0, steps: int = 1000,
               grid="uniform", t_min=None, rho=None, return_info: bool = False):
    r"""DPS (Chung et al. 2023, Algorithm 1) with the paper's step :math:`\zeta_i = \zeta/\|y - A\hat x_0(x_i)\|`.

    Each step: ancestral step :math:`x'` from :math:`x_i` with the unconditional score, then
    :math:`x_{i+1} = x' - \zeta_i\nabla_{x_i}\|y - A\hat x_0(x_i)\|^2 = x' - 2\zeta\,\nabla_{x_i}\|y - A\hat x_0(x_i)\|`
    (per example; the paper uses :math:`\zeta \in [0.1, 1]` at 1000 DDPM steps). The step does not
    depend on :math:`\sigma_y`. ``y``: [B, *M]; returns ``[B, *operator.in_shape]`` (and info with
    ``return_info``: ``nfe`` = steps).
    """
    from jaxscore.samplers.sde_samplers import _noise_scale, ancestral_step

    check_nonnegative("zeta", zeta, why=" (the DPS step size)")
    start, y = _start(key, score_fn, sde, operator, y, steps, grid, t_min, rho)
    ts, n_steps = start.ts, start.steps

    def residual_norm(x, t):
        score = call_score(score_fn, x, t)
        x0 = sde.denoise(x, score, _core.tvec(t, x))
        r = (y - operator.forward(x0)).reshape(x.shape[0], -1)
        norms = jnp.sqrt(jnp.sum(r**2, axis=-1) + 1e-30)
        return jnp.sum(norms), score

    def body(carry, n):
        (x,) = carry
        t, t_next = ts[n], ts[n + 1]
        grad_norm, score = jax.grad(residual_norm, has_aux=True)(x, t)
        z = _core.step_normal(start.keys, n, start.shape[1:]) * _noise_scale(n, n_steps, False)
        x_next = ancestral_step(sde, x, score, t, t_next, z)
        return (x_next - 2.0 * zeta * grad_norm,)

    (x,), _ = _core.scan_steps(body, (start.x,), n_steps, False)
    return _finish(x, start, n_steps, return_info)


def replacement_sample(key, score_fn: ScoreFn, sde, operator: SVDOperator, y, *, steps: int = 1000, grid="uniform",
                       t_min=None, rho=None, predictor: str = "reverse_diffusion", corrector_steps: int = 0,
                       snr: float = 0.16, return_info: bool = False):
    r"""score_sde's replacement method for inpainting and colorization (Song et al. 2021, appendix I;
    ``controllable_generation.py``): predictor-corrector sampling where, after every predictor and
    corrector update landing at time t, the observed spectral coordinates (:math:`s_i > 0`) are set to
    :math:`\alpha_t\bar y_i + \sigma_t z_i` (on the last step to the mean :math:`\alpha_t \bar y_i`), t being the
    time the update lands at (score_sde's loop uses the step's start time, one step noisier).

    ``operator``: an :class:`~jaxscore.inverse.operators.SVDOperator` (:class:`Inpainting`:
    pixels; :class:`Colorization`: the decoupled mean channel; others work the same way in their
    spectral basis); y is treated as noiseless. ``predictor``: a name of
    :data:`jaxscore.samplers.langevin.PREDICTORS` (not ``"none"``); ``corrector_steps`` Langevin
    steps with ``snr`` per step (score_sde uses 1 with snr 0.16 for its inpainting figures).
    NFE = ``steps * (1 + corrector_steps)``. Returns ``[B, *operator.in_shape]``.
    """
    from jaxscore.samplers.langevin import PREDICTORS, langevin_corrector_step
    from jaxscore.samplers.sde_samplers import _noise_scale

    if not isinstance(operator, SVDOperator):
        raise TypeError(f"replacement_sample: expected an SVDOperator (Inpainting, Colorization, ...), "
                        f"got {type(operator).__name__}.")
    if predictor not in PREDICTORS or PREDICTORS[predictor] is None:
        raise ValueError(f"predictor: expected one of {sorted(k for k, v in PREDICTORS.items() if v)}, got {predictor!r}.")
    corrector_steps = check_steps(corrector_steps, name="corrector_steps", minimum=0)
    check_nonnegative("snr", snr)
    step_rule = PREDICTORS[predictor]
    start, y = _start(key, score_fn, sde, operator, y, steps, grid, t_min, rho)
    ts, n_steps = start.ts, start.steps
    _, observed, y_bar = _spectral_observation(operator, y)
    d = observed.shape[0]

    def replace(x, t, n, sub, noise_scale):
        alpha, sigma = sde.marginal_coefs(t)
        z = _core.step_normal(start.keys, n, (d,), sub=sub) * noise_scale
        c = operator.vt(x)
        return operator.v(jnp.where(observed, alpha * y_bar + sigma * z, c))

    def body(carry, n):
        (x,) = carry
        t, t_next = ts[n], ts[n + 1]
        last = _noise_scale(n, n_steps, False)
        z = _core.step_normal(start.keys, n, start.shape[1:]) * last
        x = step_rule(sde, x, call_score(score_fn, x, t), t, t_next, z)
        x = replace(x, t_next, n, 1, last)
        a_step, _ = sde.transition_coefs(t_next, t)
        for j in range(corrector_steps):
            zc = _core.step_normal(start.keys, n, start.shape[1:], sub=2 * j + 2)
            x, x_mean = langevin_corrector_step(x, call_score(score_fn, x, t_next), zc, snr, a_step**-2)
            x = jnp.where(last > 0, x, x_mean)
            x = replace(x, t_next, n, 2 * j + 3, last)
        return (x,)

    (x,), _ = _core.scan_steps(body, (start.x,), n_steps, False)
    return _finish(x, start, n_steps * (1 + corrector_steps), return_info)


def ddrm_sample(key, score_fn: ScoreFn, sde, operator: SVDOperator, y, *, noise_std: float, eta: float = 0.85,
                eta_b: float = 1.0, steps: int = 20, grid="uniform", t_min=None, rho=None,
                return_info: bool = False):
    r"""DDRM (Kawar et al. 2022) for an :class:`~jaxscore.inverse.operators.SVDOperator` (module docstring).

    ``noise_std``: :math:`\sigma_y \ge 0`; ``eta`` (:math:`\eta`, the paper's default 0.85) and
    ``eta_b`` (:math:`\eta_b`, default 1) in [0, 1]. The grid's last point is replaced by
    :math:`\tilde\sigma = 0` (the last step returns the spectral mix around :math:`\hat x_0`, as
    in the reference code). ``y``: [B, *M]; returns ``[B, *operator.in_shape]``; NFE = steps.
    """
    if not isinstance(operator, SVDOperator):
        raise TypeError(f"ddrm_sample: expected an SVDOperator, got {type(operator).__name__}.")
    check_nonnegative("noise_std", noise_std, why=" (sigma_y)")
    for name, value in (("eta", eta), ("eta_b", eta_b)):
        check_nonnegative(name, value)
        if isinstance(value, (int, float)) and value > 1:
            raise ValueError(f"{name}: expected a value in [0, 1], got {value}.")
    start, y = _start(key, score_fn, sde, operator, y, steps, grid, t_min, rho)
    ts, n_steps = start.ts, start.steps
    s, observed, y_bar = _spectral_observation(operator, y)
    d = s.shape[0]
    sy = jnp.asarray(noise_std, y.dtype)
    noise_ratio2 = jnp.where(observed, sy**2 / jnp.where(observed, s, 1.0) ** 2, 0.0)  # (sigma_y / s_i)^2

    alphas, sigmas = jax.vmap(sde.marginal_coefs)(ts)
    sig_tilde = sigmas / alphas
    sig_next = sig_tilde[1:].at[-1].set(0.0)  # target noise of each step, 0 at the end
    alpha_next = alphas[1:].at[-1].set(1.0)

    # q(x_T | y): observed coordinates that are noisier than y start around y_bar
    z0 = _core.step_normal(start.keys, n_steps, (d,))  # step index past the loop: unused elsewhere
    st = sig_tilde[0]
    noisier0 = observed & (s * st > sy)
    c_init = jnp.where(noisier0, y_bar + jnp.sqrt(jnp.maximum(st**2 - noise_ratio2, 0.0)) * z0, st * z0)
    x_init = alphas[0] * operator.v(c_init)

    def body(carry, n):
        (x,) = carry
        t = ts[n]
        score = call_score(score_fn, x, t)
        x0 = sde.denoise(x, score, _core.tvec(t, x))
        sig, sig_n = sig_tilde[n], sig_next[n]
        c0 = operator.vt(x0)
        ce = operator.vt((x / alphas[n] - x0) / sig)
        z = _core.step_normal(start.keys, n, (d,))
        missing = c0 + jnp.sqrt(1 - eta**2) * sig_n * ce + eta * sig_n * z
        less_noisy = c0 + jnp.sqrt(1 - eta**2) * sig_n * (y_bar - c0) * jnp.where(
            observed, s / jnp.where(sy > 0, sy, 1.0), 0.0) + eta * sig_n * z
        noisier = ((1 - eta_b) * c0 + eta_b * y_bar
                   + jnp.sqrt(jnp.maximum(sig_n**2 - eta_b**2 * noise_ratio2, 0.0)) * z)
        c = jnp.where(observed & (s * sig_n > sy), noisier, jnp.where(observed & (s * sig_n < sy), less_noisy, missing))
        return (alpha_next[n] * operator.v(c),)

    (x,), _ = _core.scan_steps(body, (x_init,), n_steps, False)
    return _finish(x, start, n_steps, return_info)
