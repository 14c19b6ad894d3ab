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

from jaxscore._checks import is_concrete

GRIDS = ("uniform", "logsnr", "edm", "power", "logsnr_power")
DEFAULT_RHO = {"edm": 7.0, "power": 2.0, "logsnr_power": 2.0}


def check_steps(steps, *, minimum: int = 1, name: str = "steps") -> int:
    """``steps`` must be a Python int >= ``minimum`` (it fixes the compiled loop length)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"{name}: expected a Python int (static loop length), got {type(steps).__name__} {steps!r}.")
    if steps < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {steps}.")
    return int(steps)


def _resolve_range(sde, t_min, t_max):
    t_min = sde.t_min if t_min is None else t_min
    t_max = sde.T if t_max is None else t_max
    if is_concrete(t_min) and is_concrete(t_max):
        lo, hi = float(np.asarray(t_min)), float(np.asarray(t_max))
        if not (0.0 < lo < hi <= float(sde.T) + 1e-12):
            raise ValueError(
                f"time grid: expected 0 < t_min < t_max <= T = {sde.T}, got t_min={lo}, t_max={hi}."
            )
    dtype = jnp.result_type(float)
    return jnp.asarray(t_min, dtype), jnp.asarray(t_max, dtype)


def time_grid(sde, steps: int, grid="uniform", *, t_min=None, t_max=None, rho: float | None = None) -> jax.Array:
    r"""Decreasing times ``[steps + 1]`` from ``t_max`` (default ``sde.T``) to ``t_min`` (default ``sde.t_min``).

    ``grid`` is ``"uniform"``, ``"logsnr"``, ``"edm"``, ``"power"``, ``"logsnr_power"`` (see module
    docstring; ``rho`` is the exponent of ``"edm"`` (default 7), ``"power"`` and ``"logsnr_power"``
    (default 2)), or an explicit 1-D array
    of ``steps + 1`` decreasing times (returned as is, after a shape check).
    """
    steps = check_steps(steps)
    if not isinstance(grid, str):
        ts = jnp.asarray(grid, jnp.result_type(float))
        if ts.shape != (steps + 1,):
            raise ValueError(f"grid: an explicit grid must have shape [steps + 1] = ({steps + 1},), got {ts.shape}.")
        if is_concrete(ts) and not np.all(np.diff(np.asarray(ts)) < 0):
            raise ValueError("grid: an explicit grid must be strictly decreasing (from T down to t_min).")
        return ts
    if grid not in GRIDS:
        raise ValueError(f"grid: expected one of {GRIDS} or an array of times, got {grid!r}.")
    lo, hi = _resolve_range(sde, t_min, t_max)
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
    elif grid == "logsnr_power":
        ts = sde.t_from_log_snr(0.5 * (log_snr_spaced() + sde.log_snr(rho_spaced(hi, lo))))
    else:  # edm
        ts = sde.t_from_sigma_ratio(rho_spaced(sde.sigma_ratio(hi), sde.sigma_ratio(lo)))
    # exact endpoints; interior clipped into the range (guards round-off of the inverse maps)
    ts = jnp.clip(ts, lo, hi).at[0].set(hi).at[-1].set(lo)
    return ts

