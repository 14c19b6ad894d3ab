r"""Time grids for fixed-step samplers.

A grid is a decreasing array ``ts`` of ``steps + 1`` times with ``ts[0] = T`` (or ``t_max``) and
``ts[-1] = t_min``; a sampler takes step ``n`` from ``ts[n]`` to ``ts[n+1]``. Three spacings:

================  ========================================================================
``"uniform"``     uniform in t: :math:`t_n = T + \tfrac nN (t_{min} - T)`
``"logsnr"``      uniform in :math:`\lambda_t = \log(\alpha_t^2/\sigma_t^2)` (DPM-Solver):
                  :math:`t_n = t(\lambda_T + \tfrac nN(\lambda_{t_{min}} - \lambda_T))`
``"edm"``         Karras et al. (2022) eq. 5 in :math:`\tilde\sigma = \sigma_t/\alpha_t`:
                  :math:`\tilde\sigma_n = (\tilde\sigma_{max}^{1/\rho} + \tfrac nN(\tilde\sigma_{min}^{1/\rho}
                  - \tilde\sigma_{max}^{1/\rho}))^\rho`, default :math:`\rho = 7`
``"power"``       uniform in :math:`t^{1/\rho}`: :math:`t_n = (T^{1/\rho} + \tfrac nN(t_{min}^{1/\rho} - T^{1/\rho}))^\rho`
                  (:math:`\rho = 1` is ``"uniform"``, :math:`\rho = 2` DDIM's "quadratic"); default
                  :math:`\rho = 2`. With VP's linear beta this sits between the uniform-t and the
                  log-SNR grid.
``"logsnr_power"`` halfway, in log-SNR, between ``"logsnr"`` and ``"power"`` (exponent ``rho``,
                  default 2): :math:`\lambda_n = \tfrac12(\lambda^{logsnr}_n + \lambda(t^{power}_n))`, i.e. the
                  geometric mean of the two grids' :math:`\sigma_t/\alpha_t`. Keeps log-SNR's steps at
                  high noise (where well-separated modes are chosen) and the power grid's steps at
                  :math:`\sigma_t/\alpha_t \sim 0.1 - 3` (where narrow modes get their shape); the sampler
                  benchmark found it best at 10-20 NFE (``unipc`` with ``t_min = 3e-3``).
``"auto"``        the default of the deterministic solvers: ``"power"`` (exponent ``rho``, default 2) moved
                  towards ``"logsnr"`` by a weight that grows with the step count N, in log-SNR:
                  :math:`\lambda_n = w_N\lambda^{logsnr}_n + (1 - w_N)\lambda(t^{power}_n)`,
                  :math:`w_N = \min(\tfrac12, \max(0, (N - 5)/10))`: the power grid at N <= 5 (few steps at
                  low noise, a last step that is nearly a denoise: best measured at 5 NFE),
                  ``"logsnr_power"`` from N = 10 on (best measured at 10-20 NFE).
================  ========================================================================

Only the SDE's ``log_snr`` / ``t_from_log_snr`` / ``sigma_ratio`` / ``t_from_sigma_ratio`` are
used, so every grid works for VE, VP and sub-VP alike. The endpoints are set exactly (no
round-trip error through the inverse maps). Everything here is jit-able: ``steps`` and the
grid name are static; the SDE's parameters and ``t_min`` may be traced.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import check_choice, check_steps, check_time_interval, is_concrete

GRIDS = ("uniform", "logsnr", "edm", "power", "logsnr_power", "auto")
DEFAULT_RHO = {"edm": 7.0, "power": 2.0, "logsnr_power": 2.0, "auto": 2.0}
_FINITE_LOG_SNR = ("logsnr", "edm", "logsnr_power", "auto")


def auto_weight(steps: int) -> float:
    """Weight of the log-SNR grid in the ``"auto"`` grid of ``steps`` steps: ``min(1/2, max(0, (steps - 5)/10))``."""
    return float(min(0.5, max(0.0, (steps - 5) / 10.0)))  # spaced in log-SNR / sigma ratio: need t_min > 0


def _time_at_noise(sde, sigma, name: str, clip_to, above: bool):
    """The time where ``sde.sigma_ratio`` is ``sigma`` (a noise level sigma_t/alpha_t), clipped into the SDE's
    range: ``clip_to`` (``T`` or ``sde.t_min``) when the level lies beyond it."""
    if is_concrete(sigma) and not float(np.asarray(sigma)) > 0.0:
        raise ValueError(f"{name}: expected a noise level sigma_t/alpha_t > 0, got {sigma}.")
    sigma = jnp.asarray(sigma, jnp.result_type(float))
    edge = jnp.asarray(clip_to, sigma.dtype)
    beyond = sigma >= sde.sigma_ratio(edge) if above else sigma <= sde.sigma_ratio(edge)
    return jnp.where(beyond, edge, sde.t_from_sigma_ratio(sigma))


def resolve_range(sde, t_min=None, t_max=None, sigma_min=None, sigma_max=None):
    r"""The grid's end and start times ``(t_min, t_max)``: a time given wins; else a noise level
    :math:`\tilde\sigma = \sigma_t/\alpha_t` (``sigma_min`` / ``sigma_max``, as EDM and k-diffusion give them)
    mapped to its time and clipped into ``[sde.t_min, T]``; else ``sde.t_min`` / ``T``."""
    if t_min is None:
        t_min = sde.t_min if sigma_min is None else _time_at_noise(sde, sigma_min, "sigma_min", sde.t_min, False)
    if t_max is None:
        t_max = sde.T if sigma_max is None else _time_at_noise(sde, sigma_max, "sigma_max", sde.T, True)
    return t_min, t_max


def _resolve_range(sde, grid: str, t_min, t_max):
    t_min = sde.t_min if t_min is None else t_min
    t_max = sde.T if t_max is None else t_max
    check_time_interval(t_min, t_max, sde.T)
    if grid in _FINITE_LOG_SNR and is_concrete(t_min) and not float(np.asarray(t_min)) > 0.0:
        raise ValueError(f"t_min: grid {grid!r} is spaced in log-SNR, which is infinite at t = 0: expected "
                         f"t_min > 0, got {t_min}.")
    dtype = jnp.result_type(float)
    return jnp.asarray(t_min, dtype), jnp.asarray(t_max, dtype)


def check_explicit_grid(sde, steps: int, grid) -> jax.Array:
    """An explicit grid: a 1-D float array of ``steps + 1`` strictly decreasing times in ``[0, T]``
    (values checked when concrete). Returned as an array of the default float dtype."""
    ts = jnp.asarray(grid)
    if ts.shape != (steps + 1,) or not jnp.issubdtype(ts.dtype, jnp.number) or jnp.iscomplexobj(ts):
        raise ValueError(f"grid: an explicit grid must be a real 1-D array of shape [steps + 1] = ({steps + 1},), "
                         f"got {ts.dtype} {ts.shape}.")
    ts = ts.astype(jnp.result_type(float))
    if is_concrete(ts):
        if not np.all(np.diff(np.asarray(ts)) < 0):
            raise ValueError("grid: an explicit grid must be strictly decreasing (from T down to t_min).")
        check_time_interval(ts[-1], ts[0], sde.T, name="grid")
    return ts


def time_grid(sde, steps: int, grid="uniform", *, t_min=None, t_max=None, rho: float | None = None,
              sigma_min=None, sigma_max=None) -> jax.Array:
    r"""Decreasing times ``[steps + 1]`` from ``t_max`` (default ``sde.T``) to ``t_min`` (default ``sde.t_min``).

    ``grid`` is ``"uniform"``, ``"logsnr"``, ``"edm"``, ``"power"``, ``"logsnr_power"`` (see module
    docstring; ``rho`` is the exponent of ``"edm"`` (default 7), ``"power"`` and ``"logsnr_power"``
    (default 2)), or an explicit 1-D array of ``steps + 1`` strictly decreasing times in ``[0, T]``
    (returned as is, after :func:`check_explicit_grid`). Times: ``0 <= t_min < t_max <= T``, and
    ``t_min > 0`` for the grids spaced in log-SNR (``"logsnr"``, ``"edm"``, ``"logsnr_power"``).
    Without ``t_min`` / ``t_max``, the noise levels ``sigma_min`` / ``sigma_max`` (of
    :math:`\sigma_t/\alpha_t`, ``sde.sigma_ratio``) set them, clipped into ``[sde.t_min, T]``
    (:func:`resolve_range`). This is the one place a grid name, the range and ``rho`` become times.
    """
    steps = check_steps(steps)
    if not isinstance(grid, str):
        return check_explicit_grid(sde, steps, grid)
    check_choice("grid", grid, GRIDS)
    t_min, t_max = resolve_range(sde, t_min, t_max, sigma_min, sigma_max)
    lo, hi = _resolve_range(sde, grid, t_min, t_max)
    frac = jnp.linspace(0.0, 1.0, steps + 1)
    if rho is None:
        rho = DEFAULT_RHO.get(grid, 1.0)
    if isinstance(rho, (int, float)) and rho <= 0:
        raise ValueError(f"rho: expected > 0, got {rho}.")

    def rho_spaced(a, b):  # uniform in u**(1/rho) from a to b
        inv = 1.0 / rho
        return (a**inv + frac * (b**inv - a**inv)) ** rho

    def log_snr_spaced():  # uniform in log-SNR from hi to lo (increasing lambda)
        lam_hi, lam_lo = sde.log_snr(hi), sde.log_snr(lo)
        return lam_hi + frac * (lam_lo - lam_hi)

    if grid == "uniform":
        ts = hi + frac * (lo - hi)
    elif grid == "logsnr":
        ts = sde.t_from_log_snr(log_snr_spaced())
    elif grid == "power":
        ts = rho_spaced(hi, lo)
    elif grid in ("logsnr_power", "auto"):
        w = 0.5 if grid == "logsnr_power" else auto_weight(steps)
        ts = sde.t_from_log_snr(w * log_snr_spaced() + (1.0 - w) * sde.log_snr(rho_spaced(hi, lo)))
    else:  # edm
        ts = sde.t_from_sigma_ratio(rho_spaced(sde.sigma_ratio(hi), sde.sigma_ratio(lo)))
    # exact endpoints; interior clipped into the range (guards round-off of the inverse maps)
    ts = jnp.clip(ts, lo, hi).at[0].set(hi).at[-1].set(lo)
    return ts

