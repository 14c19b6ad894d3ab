r"""Time grids fitted to a model: the few-step grid whose samples best reproduce the flow map to the data.

For a deterministic fixed-step sampler :math:`S` (a map from the start noise :math:`x_T` to a sample,
given a grid :math:`\tau = (t_0 > t_1 > \dots > t_N)`), :func:`fit_grid` chooses the grid of ``steps = N``
steps minimising the *discretisation error on a calibration batch*

.. math:: L(\tau) = \frac{1}{B d}\sum_{b=1}^{B}\big\|S_\tau(x_T^{(b)}) - S_{ref}(x_T^{(b)})\big\|_2^2,
          \qquad x_T^{(b)} \sim p_T,

where :math:`S_{ref}` is a stand-in for the exact probability-flow map from :math:`x_T` to the data
(:func:`reference_solution`: ``unipc`` with ``reference_steps`` steps on ``reference_grid`` down to the SDE's
``t_min``, then the extrapolated step to :math:`\tilde\sigma = 0`) and :math:`d` the data dimension. Because
both sides share :math:`x_T`, :math:`L` is a coupling cost, so :math:`\sqrt{L d}` bounds the 2-Wasserstein
distance between the few-step and the reference sample distributions (Align Your Steps, Sabour et al. 2024,
minimises a KL upper bound instead; the direct distance needs no extra machinery and is what a user sees).

**The reference ends at the data, not where the few-step run ends.** A run that stops at its grid's end
:math:`\tilde\sigma_N` (the default below 14 steps) leaves each mode of std :math:`s` wider by
:math:`(1 + \tilde\sigma_N^2/s^2)^{1/2}`, 7.7% for :math:`s = 0.1` at the default end 0.04. An earlier version
fitted against the same sampler's many-step run *with the same end*, which carries that bias, so no fitted grid
could remove it: on nine mixtures at 10 NFE the fits stalled at 0.050 (5-ring, stds 0.1), 0.044 (6-ring) and
0.039 (4 x 4 grid) in the benchmark's error. Fitted against the data: 0.011, 0.014 and 0.019.

**The default objective** is ``objective="log_mse"``: the batch mean of the per-sample errors
:math:`e_b = \|S_\tau(x_T^{(b)}) - S_{ref}(x_T^{(b)})\|^2/d` is replaced by their geometric mean
:math:`\exp\frac1B\sum_b\log(e_b + 10^{-10})`. The plain mean (``"mse"``, :math:`L` above) is dominated by the
few samples that the coarse grid sends to another mode (errors of the order of the modes' separation); the
geometric mean weighs the typical sample's precision, which is what sets each mode's shape. Measured on nine
Gaussian mixtures (``experiments/benchmarks/sampler_defaults_check.py --fit``: ``dpmpp_2m`` and ``unipc`` at 10
and 20 NFE, fitted from their default grids, 60 iterations, error against the mixture on 40,000 held-out
samples): the ``"mse"`` fit was worse than the default grid it started from in 11 of 36 cases (32-D, ``dpmpp_2m``,
10 NFE: 0.028 to 0.188), ``"log_mse"`` in none. Best of the two samplers, ``"log_mse"`` fits reach 0.011-0.019 at
10 NFE and 0.006-0.014 at 20 NFE on all nine (defaults 0.023-0.055 and 0.011-0.028; exact-draw floors
0.004-0.011).

Parameterisation (strictly decreasing, exact endpoints, unconstrained): in
:math:`u = \log\tilde\sigma_t = \log(\sigma_t/\alpha_t)` (``sde.sigma_ratio``), with
:math:`\theta\in\mathbb R^N`,

.. math:: u_n = u_{max} + (u_{min} - u_{max})\sum_{i<n}\mathrm{softmax}(\theta)_i,\qquad t_n = t(e^{u_n}),

so every increment is positive and :math:`t_0 = t_{max}`, :math:`t_N = t_{min}` are set exactly.
:math:`\theta` starts at the log-increments of the ``init`` grid (so the first iterate *is* that grid).
Optionally the start moves: with ``t_max_range = (lo, hi)``,
:math:`u_{max} = u(lo) + (u(hi) - u(lo))\,\mathrm{sigmoid}(s)` is fitted too (the reference then starts
at ``hi``; the few-step sampler starts from the same :math:`x_T` at :math:`t_0`, as the samplers do
with a grid starting below T, which is right for SDEs whose marginals near T are the prior, VP and
sub-VP; variance-exploding SDEs are refused). ``t_min`` stays fixed: it defines the target.

Optimisation: Adam (optax) on :math:`\log L` with exact gradients through the compiled sampler
(every fixed-step sampler is a ``lax.scan``), full batch, ``iters`` steps in one ``lax.scan``; the
iterate with the lowest loss is returned. Non-finite gradients skip the update
(``optax.apply_if_finite``).

Cost in score evaluations: ``B * reference_nfe`` for the reference plus ``iters * B * nfe`` forward
evaluations and as many vector-Jacobian products (``info["score_evals"]``, ``info["score_vjps"]``).

**Below 8 steps the fit is not to be trusted** (``RELIABLE_MIN_STEPS``; :func:`fit_grid` warns). The per-sample
distance then stops tracking the distribution: at 5 NFE the fitted grid was worse than the default in 11 of 18
sampler x mixture cases (4 x 4 grid, ``unipc``: 0.41 to 0.51), at 8 NFE in 1 of 18, at 10 and 20 NFE in none
(``sampler_defaults_check.py --fit``). At 5 steps, a few-step run's errors are mode assignments and mode shapes
at once, and moving a grid point trades one for the other.

Stochastic samplers (``euler_maruyama``, ``ancestral``, ``dpmpp_2m_sde``, ``edm_stochastic``, ``ddim``
with ``eta > 0``...) are refused: their few-step output is not a function of :math:`x_T`, so the
coupling cost above mixes discretisation error with noise. Fit on the deterministic counterpart
(``ddim`` with ``eta=0``, ``dpmpp_2m``, ``heun``) and pass that grid.

Grids are saved as ``.npz`` (:func:`save_grid` / :func:`load_grid`, no pickles) with the sampler's name
and the step count, and are used as ``grid=ts`` by every fixed-step sampler, or
``jaxscore sample --grid FILE``.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscore._checks import check_choice, check_key, check_shape, check_steps
from jaxscore.samplers.base import Sampler
from jaxscore.samplers.grids import check_explicit_grid, default_sigma_min, resolve_denoise, resolve_range, time_grid

GRID_FILE_VERSION = 1
OBJECTIVES = ("mse", "log_mse")
DEFAULT_OBJECTIVE = "log_mse"  # measured: module docstring
LOG_MSE_FLOOR = 1e-10
RELIABLE_MIN_STEPS = 8  # measured: module docstring


def _resolve_sampler(sampler) -> Sampler:
    if isinstance(sampler, Sampler):
        return sampler
    if isinstance(sampler, str):
        from jaxscore.samplers.api import get_sampler

        return get_sampler(sampler)
    raise TypeError(f"sampler: expected a registered name (e.g. 'dpmpp_2m') or a jaxscore.samplers.Sampler, "
                    f"got {type(sampler).__name__} {sampler!r}.")


def _check_fittable(s: Sampler, options: dict) -> None:
    params = inspect.signature(s.fn).parameters
    missing = [p for p in ("grid", "x_init") if p not in params]
    if missing:
        raise ValueError(f"fit_grid: sampler {s.name!r} takes no {missing} argument(s); expected a fixed-step "
                         f"sampler taking an explicit grid.")
    bad = sorted(set(options) & {"grid", "steps", "x_init", "return_info", "return_trajectory", "example_offset"})
    if bad:
        raise TypeError(f"fit_grid: options {bad} are set by fit_grid itself; pass only the sampler's own options.")
    if not s.deterministic(**options):
        raise ValueError(
            f"fit_grid: sampler {s.name!r} with options {options} is stochastic (it draws noise after x_T), so its "
            f"few-step output is no function of x_T and the fitted objective would mix noise with discretisation "
            f"error. Fit the grid on its deterministic counterpart (ddim with eta=0, dpmpp_2m, heun, unipc) and "
            f"pass that grid to {s.name!r}.")


def _endpoint(s: Sampler, name: str, given):
    """``t_min`` / ``t_max``: the given value, else the sampler's default option (if it has one)."""
    if given is not None:
        return given
    return s.defaults.get(name)


def _resolve_final_step(s: Sampler, steps: int, options: dict) -> dict:
    """``options`` with ``denoise`` resolved at the fitted step count (``"auto"`` depends on it, and so does the
    default grid end, :func:`_default_t_min`)."""
    return {**options, "denoise": resolve_denoise(options.get("denoise", s.defaults["denoise"]), steps)}


def _default_t_min(s: Sampler, sde, steps: int, options: dict, sigma_min=None):
    """Where the grid ends: ``sigma_min`` (a noise level, or ``"auto"``: the step count's for the run's
    ``denoise``), by default the sampler's own ``sigma_min`` default, as a time; or ``None`` (the SDE's ``t_min``)
    for samplers without one."""
    sigma_min = s.defaults.get("sigma_min") if sigma_min is None else sigma_min
    if sigma_min is None:
        return None
    if isinstance(sigma_min, str):
        sigma_min = default_sigma_min(steps, options["denoise"])
    return float(resolve_range(sde, sigma_min=sigma_min)[0])


def _log_sigma_ratio(sde, t):
    return jnp.log(sde.sigma_ratio(jnp.asarray(t, jnp.result_type(float))))


def grid_from_params(sde, theta, u_max, u_min, t_max, t_min) -> jax.Array:
    r"""The grid ``[N + 1]`` of the parameters: :math:`u_n = u_{max} + (u_{min} - u_{max})\,\mathrm{cumsum}
    (\mathrm{softmax}(\theta))_{n-1}` in :math:`u = \log\tilde\sigma`, mapped to times, endpoints set to
    ``t_max`` / ``t_min`` exactly. ``theta``: ``[N]``; the rest scalars (may be traced)."""
    frac = jnp.concatenate([jnp.zeros((1,), theta.dtype), jnp.cumsum(jax.nn.softmax(theta))])
    u = u_max + frac * (u_min - u_max)
    ts = sde.t_from_sigma_ratio(jnp.exp(u))
    return ts.at[0].set(t_max).at[-1].set(t_min)


def params_from_grid(sde, ts) -> jax.Array:
    r""":math:`\theta = \log\Delta u` of a strictly decreasing grid (the inverse of :func:`grid_from_params` up
    to a constant shift of :math:`\theta`)."""
    u = _log_sigma_ratio(sde, ts)
    return jnp.log(u[:-1] - u[1:])


def _prior(key, sde, shape):
    return sde.prior_sample(key, shape, jnp.result_type(float))


REFERENCE_SAMPLER = "unipc"  # the many-step stand-in for the probability-flow map x_T -> x_0 (module docstring)


def reference_solution(key, score_fn, sde, x_T, t_max, reference_steps: int, reference_grid="logsnr") -> jax.Array:
    r"""The probability-flow map of ``x_T [B, *D]`` from ``t_max`` to the data, as the fit's target: ``unipc``
    (order 3 from 19 steps) with ``reference_steps`` steps on ``reference_grid`` down to the SDE's ``t_min``, then
    the extrapolated step to :math:`\tilde\sigma = 0` (:func:`jaxscore.samplers.grids.extrapolate_x0`).
    ``key``: unused by the deterministic solve (its prior draw is replaced by ``x_T``)."""
    from jaxscore.samplers.api import get_sampler

    ts = time_grid(sde, reference_steps, reference_grid, t_min=sde.t_min, t_max=t_max)
    return get_sampler(REFERENCE_SAMPLER).fn(key, score_fn, sde, x_T.shape, steps=reference_steps, grid=ts,
                                             x_init=x_T, denoise="extrapolate")


def reference_nfe(reference_steps: int) -> int:
    """Score evaluations per sample of :func:`reference_solution`."""
    from jaxscore.samplers.api import nfe_for_steps

    return nfe_for_steps(REFERENCE_SAMPLER, reference_steps, denoise="extrapolate")


def fit_grid(key, score_fn, sde, shape, *, sampler, steps: int, init=None, t_min=None, t_max=None, rho=None,
             t_max_range: tuple[float, float] | None = None, reference_steps: int | None = None,
             reference_grid="logsnr", iters: int = 150, learning_rate: float = 0.05, objective: str = DEFAULT_OBJECTIVE,
             return_info: bool = False, **options):
    r"""Fit the ``steps``-step time grid of a deterministic fixed-step ``sampler`` to ``score_fn``.

    Minimises the distance between :math:`S_\tau(x_T^{(b)})` and :math:`S_{ref}(x_T^{(b)})` (``objective``: by
    default the geometric mean over the batch of the per-sample squared errors, module docstring) over grids
    :math:`\tau` on a calibration batch of ``B = shape[0]`` prior draws from ``key``.

    Args:
      key: PRNG key (the calibration batch's :math:`x_T`).
      score_fn: ``score_fn(x: [B, *D], t: [B]) -> [B, *D]`` (analytic or a network; closed over).
      sde: the SDE (``sigma_ratio`` / ``t_from_sigma_ratio`` give the parameterisation).
      shape: ``(B, *D)`` of the calibration batch.
      sampler: a registered name or :class:`~jaxscore.samplers.Sampler`; must be deterministic for ``options``.
      steps: number of steps of the fitted grid.
      init: the starting grid: a grid name (default: the sampler's default grid) or an explicit array
        ``[steps + 1]``; with ``t_min``, ``t_max`` (default: the options ``sigma_min`` / ``sigma_max`` as times,
        else where the sampler's default grid ends and starts, ``sigma_min="auto"`` resolved at ``steps``; else
        the SDE's) and ``rho``.
      t_max_range: ``(lo, hi)``: also fit the start time within ``[lo, hi]`` (VP / sub-VP only); None keeps it.
      reference_steps: steps of the reference solution (default ``max(10 * steps, 100)``), on ``reference_grid``.
      iters, learning_rate: Adam steps on :math:`\log L` and its step size.
      objective: ``"log_mse"`` (default): the geometric mean over the batch of the per-sample errors,
        :math:`\exp\frac1B\sum_b\log(\|\Delta_b\|^2/d + 10^{-10})`, which a few samples that change mode cannot
        dominate (it weighs the precision of the typical sample, i.e. the modes' shapes); or ``"mse"``
        (:math:`L` above, the arithmetic mean).
      return_info: also return ``info`` (losses, evaluation counts, the initial grid).
      **options: the sampler's own options (``denoise``, ``order``, ...), used by both runs.

    Returns:
      ``ts [steps + 1]`` strictly decreasing, ``ts[0] = t_max`` (or the fitted start), ``ts[-1] = t_min``
      exactly; with ``return_info``, ``(ts, info)``: ``loss_init`` / ``loss`` (:math:`L` of the initial and
      the returned grid on the calibration batch), ``loss_history [iters]``, ``init_grid``, ``nfe`` (per
      sample of the fitted sampler), ``reference_nfe``, ``score_evals`` and ``score_vjps`` (totals).

    jit-able with ``score_fn`` closed over and everything but ``key`` static; usually called eagerly
    (it jits its own optimisation loop).
    """
    check_key(key)
    shape = check_shape(shape)
    steps = check_steps(steps)
    s = _resolve_sampler(sampler)
    _check_fittable(s, options)
    options = _resolve_final_step(s, steps, options)
    # the grid's range given as noise levels: fitted grids are explicit, which the samplers take as they are
    sigma_min, sigma_max = options.pop("sigma_min", None), options.pop("sigma_max", None)
    iters = check_steps(iters, name="iters")
    t_min = _endpoint(s, "t_min", t_min)
    t_min = _default_t_min(s, sde, steps, options, sigma_min) if t_min is None else t_min
    t_max = _endpoint(s, "t_max", t_max)
    if t_max is None and sigma_max is not None:
        t_max = float(resolve_range(sde, sigma_max=sigma_max)[1])
    init = s.defaults.get("grid", "logsnr") if init is None else init
    init_array = None
    if not isinstance(init, str):
        init_array = np.asarray(check_explicit_grid(sde, steps, init))
        init, t_min, t_max = None, float(init_array[-1]), float(init_array[0])
    if t_max_range is not None:
        lo, hi = (float(v) for v in t_max_range)
        t_bottom = float(sde.t_min if t_min is None else t_min)
        if not t_bottom < lo <= hi <= float(sde.T):
            raise ValueError(f"t_max_range: expected t_min = {t_bottom} < lo <= hi <= T = {sde.T}, got {t_max_range}.")
        if sde.is_variance_exploding():
            raise ValueError("t_max_range: a start below T needs x_T drawn from p_{t_max}, which the variance-exploding "
                             "prior N(0, sigma_max^2 I) is not; fit with a fixed t_max on this SDE.")
        t_max_range = (lo, hi)
    reference_steps = max(10 * steps, 100) if reference_steps is None else check_steps(reference_steps,
                                                                                       name="reference_steps")
    check_choice("objective", objective, OBJECTIVES)
    if steps < RELIABLE_MIN_STEPS:
        warnings.warn(f"fit_grid: {steps} steps is below {RELIABLE_MIN_STEPS}, where fitted grids were often measured "
                      f"worse than the sampler's default grid (jaxscore.samplers.fit_grid docstring); compare both on "
                      f"your model before using it.", stacklevel=2)
    ts, best, hist, ts0 = _fit(
        key, sde, init_array, score_fn=score_fn, run=s.fn, shape=shape, steps=steps, init=init, t_min=t_min,
        t_max=t_max, rho=rho, t_max_range=t_max_range, reference_steps=reference_steps, reference_grid=reference_grid,
        iters=iters, learning_rate=float(learning_rate), objective=objective, options=tuple(sorted(options.items())))
    if not bool(np.all(np.diff(np.asarray(ts)) < 0)):
        raise FloatingPointError(f"fit_grid: the fitted grid is not strictly decreasing ({np.asarray(ts)}); lower "
                                 f"learning_rate or iters.")
    if not return_info:
        return ts
    nfe = s.nfe(steps, **options)
    ref_nfe = reference_nfe(reference_steps)
    hist = np.asarray(hist)
    info = {
        "loss_init": float(hist[0]), "loss": float(best), "loss_history": hist, "init_grid": ts0,
        "nfe": nfe, "reference_nfe": ref_nfe, "reference_steps": reference_steps, "iters": iters,
        "score_evals": int(shape[0] * (ref_nfe + iters * nfe)), "score_vjps": int(shape[0] * iters * nfe),
    }
    return ts, info


@functools.partial(jax.jit, static_argnames=(
    "score_fn", "run", "shape", "steps", "init", "t_min", "t_max", "rho", "t_max_range", "reference_steps",
    "reference_grid", "iters", "learning_rate", "objective", "options"))
def _fit(key, sde, init_array, *, score_fn, run, shape, steps, init, t_min, t_max, rho, t_max_range,
         reference_steps, reference_grid, iters, learning_rate, objective, options):
    """The whole fit in one compiled function (cached per score_fn / sampler / shape / steps / options):
    initial grid, reference solve, Adam on log L in a ``lax.scan``, best iterate. Returns
    ``(ts, best loss, loss history [iters], initial grid)``."""
    options = dict(options)
    ts0 = init_array if init is None else time_grid(sde, steps, init, t_min=t_min, t_max=t_max, rho=rho)
    ts0 = jnp.asarray(ts0, jnp.result_type(float))
    t_lo, t_hi = ts0[-1], ts0[0]
    moving = t_max_range is not None
    if moving:
        lo, hi = t_max_range
        top0 = jnp.clip(t_hi, lo, hi)
        # the initial grid squeezed (in log sigma ratio) between its clipped start and t_min
        ts0 = _rescale(sde, ts0, top0)
        ref_top = hi
    else:
        ref_top = t_hi
    x_T = _prior(jax.random.fold_in(key, 0), sde, shape)
    k_run = jax.random.fold_in(key, 1)  # deterministic samplers use it only for the (replaced) prior draw

    def solve(ts, n):
        return run(k_run, score_fn, sde, shape, steps=n, grid=ts, x_init=x_T, **options)

    x_ref = jax.lax.stop_gradient(reference_solution(k_run, score_fn, sde, x_T, ref_top, reference_steps,
                                                     reference_grid))
    u_min = _log_sigma_ratio(sde, t_lo)
    if moving:
        u_lo, u_hi = _log_sigma_ratio(sde, lo), _log_sigma_ratio(sde, hi)
        frac0 = jnp.clip((_log_sigma_ratio(sde, ts0[0]) - u_lo) / jnp.maximum(u_hi - u_lo, 1e-12), 1e-3, 1 - 1e-3)
        s0 = jnp.log(frac0) - jnp.log1p(-frac0)
    else:
        s0 = jnp.zeros((), ts0.dtype)
    params0 = {"theta": params_from_grid(sde, ts0), "s": s0}

    def grid_of(p):
        if moving:
            u_max = u_lo + (u_hi - u_lo) * jax.nn.sigmoid(p["s"])
            top = sde.t_from_sigma_ratio(jnp.exp(u_max))
        else:
            u_max, top = _log_sigma_ratio(sde, t_hi), t_hi
        return grid_from_params(sde, p["theta"], u_max, u_min, top, t_lo)

    def loss_fn(p):
        return _objective(solve(grid_of(p), steps), x_ref, objective)

    def log_loss(p):
        val = loss_fn(p)
        return jnp.log(val), val

    opt = optax.apply_if_finite(optax.adam(learning_rate), max_consecutive_errors=iters + 1)

    def body(carry, _):
        p, state, best_p, best = carry
        (_, val), g = jax.value_and_grad(log_loss, has_aux=True)(p)
        better = jnp.isfinite(val) & (val < best)
        best_p = jax.tree.map(lambda a, b: jnp.where(better, a, b), p, best_p)
        best = jnp.where(better, val, best)
        upd, state = opt.update(g, state, p)
        return (optax.apply_updates(p, upd), state, best_p, best), val

    inf = jnp.asarray(jnp.inf, ts0.dtype)
    (p, _, best_p, best), hist = jax.lax.scan(body, (params0, opt.init(params0), params0, inf), None, length=iters)
    last = loss_fn(p)
    use_last = jnp.isfinite(last) & (last < best)
    best_p = jax.tree.map(lambda a, b: jnp.where(use_last, a, b), p, best_p)
    return grid_of(best_p), jnp.where(use_last, last, best), hist, ts0


def _objective(x, x_ref, objective: str) -> jax.Array:
    r"""The fitted distance between a few-step batch ``x`` and its reference ``x_ref`` (both ``[B, *D]``): per
    sample :math:`e_b = \|x_b - x_{ref,b}\|^2/d`, then their mean (``"mse"``) or geometric mean (``"log_mse"``)."""
    per_sample = jnp.sum(((x - x_ref) ** 2).reshape(x.shape[0], -1), axis=-1) / math.prod(x.shape[1:])
    if objective == "log_mse":
        return jnp.exp(jnp.mean(jnp.log(per_sample + LOG_MSE_FLOOR)))
    return jnp.mean(per_sample)


def _rescale(sde, ts, top):
    """``ts`` with its start moved to ``top``, the interior rescaled linearly in log sigma ratio."""
    u = _log_sigma_ratio(sde, ts)
    frac = (u - u[0]) / (u[-1] - u[0])
    u_top = _log_sigma_ratio(sde, top)
    out = sde.t_from_sigma_ratio(jnp.exp(u_top + frac * (u[-1] - u_top)))
    return out.at[0].set(top).at[-1].set(ts[-1])


def grid_error(key, score_fn, sde, shape, ts, *, sampler, reference_steps: int = 200, reference_grid="logsnr",
               reference_t_max=None, objective: str = DEFAULT_OBJECTIVE, **options) -> float:
    r"""The objective of :func:`fit_grid` (``objective``, default the same as the fit's) on a fresh batch: the
    distance between :math:`S_{ts}(x_T^{(b)})` and :math:`S_{ref}(x_T^{(b)})` with ``x_T`` from ``key`` (use a key
    other than the calibration one for a held-out figure). The reference is :func:`reference_solution` with
    ``reference_steps`` on ``reference_grid`` from ``reference_t_max`` (default ``ts[0]``)."""
    check_choice("objective", objective, OBJECTIVES)
    check_key(key)
    shape = check_shape(shape)
    s = _resolve_sampler(sampler)
    _check_fittable(s, options)
    ts = jnp.asarray(ts)
    ts = check_explicit_grid(sde, ts.shape[0] - 1, ts)
    return float(_grid_error(key, sde, ts, reference_t_max, score_fn=score_fn, run=s.fn, shape=shape,
                             reference_steps=check_steps(reference_steps, name="reference_steps"),
                             reference_grid=reference_grid, objective=objective,
                             options=tuple(sorted(options.items()))))


@functools.partial(jax.jit, static_argnames=("score_fn", "run", "shape", "reference_steps", "reference_grid",
                                             "objective", "options"))
def _grid_error(key, sde, ts, reference_t_max, *, score_fn, run, shape, reference_steps, reference_grid, objective,
                options):
    options = dict(options)
    top = ts[0] if reference_t_max is None else reference_t_max
    x_T = _prior(jax.random.fold_in(key, 0), sde, shape)
    k_run = jax.random.fold_in(key, 1)
    a = run(k_run, score_fn, sde, shape, steps=ts.shape[0] - 1, grid=ts, x_init=x_T, **options)
    b = reference_solution(k_run, score_fn, sde, x_T, top, reference_steps, reference_grid)
    return _objective(a, b, objective)


# --- files ------------------------------------------------------------------------------------

def save_grid(path: str, ts, meta: dict[str, Any]) -> str:
    """Write ``ts [steps + 1]`` and ``meta`` (must hold ``"sampler"``: the name the grid was fitted for; any
    other JSON-serialisable entries, e.g. the sampler options, the SDE, losses) to ``path`` (``.npz``,
    no pickles). The step count is recorded from ``ts``. Returns the path written."""
    ts = np.asarray(ts, np.float64)
    if ts.ndim != 1 or ts.shape[0] < 2 or not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) < 0):
        raise ValueError(f"ts: expected a finite, strictly decreasing 1-D grid of >= 2 times, got {ts}.")
    if not isinstance(meta, dict) or not isinstance(meta.get("sampler"), str):
        raise ValueError(f"meta: expected a dict with the sampler's name under 'sampler', got {meta!r}.")
    meta = {**meta, "steps": int(ts.shape[0] - 1), "version": GRID_FILE_VERSION}
    try:
        text = json.dumps(meta, sort_keys=True, default=_jsonable)
    except TypeError as e:
        raise TypeError(f"meta: expected JSON-serialisable values: {e}") from None
    path = path if path.endswith(".npz") else path + ".npz"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez(path, ts=ts, sampler=np.asarray(meta["sampler"]), steps=np.asarray(meta["steps"]),
             meta=np.asarray(text))
    return path


def _jsonable(v):
    if isinstance(v, (np.generic, np.ndarray, jax.Array)):
        return np.asarray(v).tolist()
    raise TypeError(f"{type(v).__name__} is not JSON serialisable")


def load_grid(path: str, *, sampler: str | None = None, steps: int | None = None) -> tuple[np.ndarray, dict]:
    """Read a grid written by :func:`save_grid`: ``(ts [steps + 1] float64, meta)``. With ``sampler`` /
    ``steps`` given, a grid fitted for another sampler or step count is a ``ValueError`` naming both."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"grid file: expected an .npz written by save_grid / `jaxscore fit-grid`, "
                                f"got {path!r} (no such file).")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = sorted({"ts", "sampler", "steps", "meta"} - set(f.files))
            if missing:
                raise ValueError(f"grid file {path!r}: expected keys ts, sampler, steps, meta; missing {missing}.")
            ts = np.asarray(f["ts"], np.float64)
            meta = json.loads(str(f["meta"]))
            name, n = str(f["sampler"]), int(f["steps"])
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"grid file {path!r}: not a grid .npz written by save_grid ({e}).") from None
    if ts.shape != (n + 1,) or not np.all(np.diff(ts) < 0):
        raise ValueError(f"grid file {path!r}: expected a strictly decreasing grid of {n + 1} times, got {ts}.")
    if steps is not None and int(steps) != n:
        raise ValueError(f"grid file {path!r} holds a {n}-step grid (fitted for {name!r}); expected steps={steps}. "
                         f"Fit a grid for {steps} steps or drop the steps argument.")
    if sampler is not None and sampler != name:
        raise ValueError(f"grid file {path!r} was fitted for sampler {name!r}; expected {sampler!r}. "
                         f"Fit one for {sampler!r} or sample with {name!r}.")
    meta.update(sampler=name, steps=n)
    return ts, meta


__all__ = ["fit_grid", "grid_error", "grid_from_params", "load_grid", "params_from_grid", "save_grid"]
