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
``"auto"``        the default of the deterministic solvers, by step count N (:func:`default_range`): for
                  N < ``AUTO_JUMP_MIN_STEPS`` the ``"power"`` grid (exponent ``rho``, default 2) from
                  ``t_max``; from N = ``AUTO_JUMP_MIN_STEPS`` on, one first step from ``t_max`` down to
                  :math:`\tilde\sigma_1 = \min(\tilde\sigma_{jump}, \tilde\sigma_{max}^{1-1/N}\tilde\sigma_{min}^{1/N})`
                  (``AUTO_JUMP_SIGMA`` = 20) and the other N - 1 uniform in log-SNR from there to ``t_min``.
                  See :func:`default_range` for the measurements behind it.
================  ========================================================================

Only the SDE's ``log_snr`` / ``t_from_log_snr`` / ``sigma_ratio`` / ``t_from_sigma_ratio`` are
used, so every grid works for VE, VP and sub-VP alike. The endpoints are set exactly (no
round-trip error through the inverse maps). Everything here is jit-able: ``steps`` and the
grid name are static; the SDE's parameters and ``t_min`` may be traced.

``sigma_min="auto"`` (the deterministic solvers' default end, for every grid name) is
:func:`default_sigma_min` of the step count (and of how the run ends: ``denoise``). The final step from the
grid's end to :math:`\tilde\sigma = 0` lives here too: :func:`extrapolate_x0` (``denoise="extrapolate"``) and
``denoise="auto"`` (:func:`default_denoise`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import check_choice, check_steps, check_time_interval, is_concrete

GRIDS = ("uniform", "logsnr", "edm", "power", "logsnr_power", "auto")
DEFAULT_RHO = {"edm": 7.0, "power": 2.0, "logsnr_power": 2.0, "auto": 2.0}
_FINITE_LOG_SNR = ("logsnr", "edm", "logsnr_power", "auto")


# The deterministic solvers' default range and grid by step count: the one place these facts live
# (measurements in default_range's docstring).
AUTO_JUMP_SIGMA = 20.0  # sigma~ = sigma_t/alpha_t of the grid's second point (the first step's end), N >= 9
AUTO_JUMP_MIN_STEPS = 9  # below: no jump, the power grid from t_max
DEFAULT_SIGMA_MIN = {10: 0.04, 20: 0.02}  # end noise level at N steps: log-linear in log N between, constant outside
AUTO_EXTRAPOLATE_MIN_STEPS = 14  # denoise="auto": from this many steps on, the extrapolated final step to sigma = 0
EXTRAPOLATE_SIGMA_MIN = 0.03  # the grid's end (sigma~) when the run ends with the extrapolated step
DENOISE_CHOICES = (False, True, "extrapolate", "auto")


def default_denoise(steps: int):
    r"""``denoise="auto"`` of the deterministic solvers at ``steps`` = N steps: ``"extrapolate"`` (a final step from
    the grid's end to :math:`\tilde\sigma = 0`, :func:`extrapolate_x0`, one more evaluation) from
    ``AUTO_EXTRAPOLATE_MIN_STEPS`` steps on, else ``False`` (the run ends at the grid's end). See
    :func:`default_range`."""
    return "extrapolate" if steps >= AUTO_EXTRAPOLATE_MIN_STEPS else False


def resolve_denoise(denoise, steps: int):
    """``denoise`` checked (one of :data:`DENOISE_CHOICES`), with ``"auto"`` made :func:`default_denoise` of
    ``steps``."""
    if not isinstance(denoise, (bool, np.bool_)) and denoise not in DENOISE_CHOICES:
        raise ValueError(f"denoise: expected one of {DENOISE_CHOICES}, got {type(denoise).__name__} {denoise!r}.")
    if isinstance(denoise, str):
        return default_denoise(steps) if denoise == "auto" else denoise
    return bool(denoise)


def default_sigma_min(steps: int, denoise="auto") -> float:
    r"""The default end of the deterministic solvers' grids, a noise level :math:`\tilde\sigma = \sigma_t/\alpha_t`
    (clipped to the SDE's ``t_min``). A run that ends with the extrapolated step (``denoise`` resolving to
    ``"extrapolate"``, :func:`resolve_denoise` of ``steps``) ends its grid at ``EXTRAPOLATE_SIGMA_MIN`` = 0.03;
    otherwise 0.04 up to 10 steps, 0.02 from 20 on, log-linear in :math:`\log N` between
    (:data:`DEFAULT_SIGMA_MIN`; see :func:`default_range`)."""
    if resolve_denoise(denoise, steps) == "extrapolate":
        return EXTRAPOLATE_SIGMA_MIN
    (n_lo, s_lo), (n_hi, s_hi) = sorted(DEFAULT_SIGMA_MIN.items())
    frac = min(1.0, max(0.0, (np.log(steps) - np.log(n_lo)) / (np.log(n_hi) - np.log(n_lo))))
    return float(np.exp(np.log(s_lo) + frac * (np.log(s_hi) - np.log(s_lo))))


def extrapolate_x0(sde, x0_prev, x0_last, t_prev, t_last):
    r"""The sample at :math:`\tilde\sigma = 0` from the last two data predictions of a run, extrapolated linearly in
    :math:`\tilde\sigma^2` (a second-order final step):

    .. math:: x_0 \approx \hat x_0^{(N)} + \big(\hat x_0^{(N)} - \hat x_0^{(N-1)}\big)
              \frac{\tilde\sigma_N^2}{\tilde\sigma_{N-1}^2 - \tilde\sigma_N^2},

    with :math:`\hat x_0^{(n)}` the data prediction at grid time ``t_n`` and :math:`\tilde\sigma = \sigma_t/\alpha_t`.

    Why: along the probability-flow ODE the exact step to :math:`\tilde\sigma = 0` is
    :math:`x_0 = \lim_{\tilde\sigma\to 0}\hat x_0(x(\tilde\sigma), \tilde\sigma)` (the exponential-integrator form,
    Lu et al. 2022 eq. 9), and for a smooth data density :math:`\hat x_0(x(\tilde\sigma), \tilde\sigma) = x_0 +
    \tfrac12\tilde\sigma^2\nabla\log p(x_0) + O(\tilde\sigma^4)` (Tweedie plus the ODE's own expansion), so the
    line through the last two predictions in :math:`\tilde\sigma^2` is exact to :math:`O(\tilde\sigma_N^2
    \tilde\sigma_{N-1}^2)`. The plain Tweedie step (``denoise=True``, :math:`x_0 \approx \hat x_0^{(N)}`) is first
    order: on a Gaussian mode of std :math:`s` it shrinks the spread by :math:`(1 + \tilde\sigma_N^2/s^2)^{-1/2}`,
    while returning :math:`x_N` (``denoise=False``) widens it by the inverse. For data on a low-dimensional set
    (images) :math:`\hat x_0` is nearly constant near the set and the extrapolation is the projection, as Tweedie's.
    The lever :math:`c = \tilde\sigma_N^2/(\tilde\sigma_{N-1}^2 - \tilde\sigma_N^2) \approx 1/(2h)` grows on fine grids
    (log-step :math:`h`); it multiplies a difference of two nearby predictions, which a network smooth in
    :math:`\sigma` keeps small: on the digits U-Net, DDIM at 199 steps (:math:`c \approx 15`) gives digits-FID 2.09 /
    1.99 (two seeds, 2,000 samples) against 2.11 / 2.01 stopping at the grid's end.
    ``x0_prev``, ``x0_last``: ``[B, *D]``; ``t_prev > t_last`` scalars.
    """
    s_prev, s_last = sde.sigma_ratio(t_prev), sde.sigma_ratio(t_last)
    c = (s_last**2 / (s_prev**2 - s_last**2)).astype(x0_last.dtype)
    return x0_last + c * (x0_last - x0_prev)


def default_range(steps: int) -> dict:
    r"""The deterministic solvers' defaults at ``steps`` = N steps: ``{"sigma_min": default_sigma_min(N),
    "denoise": default_denoise(N), "sigma_jump": AUTO_JUMP_SIGMA or None}`` (``None``: no jump, below
    ``AUTO_JUMP_MIN_STEPS`` steps). Every deterministic fixed-step solver (``ddim``, ``dpmpp_2m``, ``dpmpp_3m``,
    ``unipc``) defaults to ``grid="auto"``, ``sigma_min="auto"``, ``denoise="auto"``, which read this.

    **The final step** (from 14 steps on, ``AUTO_EXTRAPOLATE_MIN_STEPS``): the grid ends at
    :math:`\tilde\sigma_N` = 0.03 and one more evaluation there feeds :func:`extrapolate_x0`, the second-order step
    to :math:`\tilde\sigma = 0` (NFE = N + 1). Below 14 steps the run stops at the grid's end (0.04 at <= 10 steps).
    Chosen on the benchmark's six mixtures (``sampler_defaults_sweep.py --final-step``: 20,000 samples, exact
    scores, best of unipc / dpmpp_2m, larger error over the six, exact-draw floors 0.007-0.010 at that size):

    ====  =====================  ==================================================================
    NFE   stop at the end        N - 1 steps + extrapolated step, grid end 0.03 / 0.04 / 0.05 / 0.07
    ====  =====================  ==================================================================
    10    0.049                  0.069 / 0.053 / 0.061 / 0.072
    12    0.061                  0.040 / 0.046 / 0.049 / 0.063
    15    0.042                  0.032 / 0.035 / 0.039 / 0.054
    20    0.029                  0.023 / 0.025 / 0.029 / 0.045
    ====  =====================  ==================================================================

    The narrow modes (ring5w's std 0.1) want the low end; a higher end (0.07) is better on the broad ones. The
    switch sits at 14 steps, not 11, because the closed-form Gaussian of the tests (stds 0.1 / 0.3 / 1, means off the
    origin; error of the affine flow map, best of dpmpp_2m / dpmpp_3m / unipc) prefers stopping below that: 0.020 vs
    0.047 at 11 steps, 0.017 vs 0.034 at 12; 0.018 vs 0.016 at 15, 0.018 vs 0.010 at 20, 0.019 vs 0.008 at 30.
    Stopping at :math:`\tilde\sigma_N` leaves the spread too wide by :math:`(1 + \tilde\sigma_N^2/s^2)^{1/2}`,
    which at few steps happens to cancel part of the solvers' contraction (they under-disperse); that error does not
    fall with more steps, the extrapolated step's does (0.0059 at 50 steps against 0.019).

    The ``"auto"`` grid of N >= 9 steps starts at ``t_max`` (default T: :math:`\tilde\sigma \approx 152` for VP,
    50 for VE), takes ONE step to :math:`\tilde\sigma_1 = 20` (a first-order step: the denoiser is nearly the data
    mean there, so this step is nearly exact and puts the start's mean right), then N - 1 steps uniform in log-SNR
    down to :math:`\tilde\sigma_{min}`. Below 9 steps it is the power grid (uniform in :math:`t^{1/2}`) from T:
    there a step spent on the jump costs more than it saves (larger of the two mixtures' errors: power 0.090 vs
    jump 0.32 for dpmpp_2m at 7 steps, 0.097 vs 0.109 for unipc at 8; for unipc jump 0.055 / 0.036 / 0.033 / 0.021 vs
    power 0.086 / 0.075 / 0.046 / 0.025 at 9 / 10 / 14 / 20 steps). The ring alone prefers the power grid at every N (its narrow modes want steps at low
    noise), the 16-D mixture the jump (its modes separate at sigma~ ~ 5-20): the rule minimises the larger error.

    Assumption: data of scale up to a few units (modes within ~4-16 of the origin, as the benchmark's mixtures).
    Starting the solve *at* a low noise level instead (x~ ~ N(0, sigma_max^2 I) for p_data * N(0, sigma_max^2 I)) leaves
    a mean offset of about |m|/sigma_max data stds per axis for data of mean m: measured after a 300-step solve
    (``sampler_defaults_sweep.py --mismatch``, 8,000 samples, paired against the same solve from T) on the 2-D
    ring (radius 4) it is 0.186 / 0.055 / 0.020 / 0.008 / 0.006 at sigma_max = 5 / 10 / 20 / 40 / 80, on the 16-D
    mixture (means ~N(0, 16 I)) 0.51 / 0.20 / 0.079 / 0.033 / 0.012, above the 40,000-sample floors (0.005-0.008): so the default starts at T and *jumps*, which costs one evaluation and
    removes that offset. For data far larger than a few units, pass ``t_max`` / an explicit grid (EDM's
    sigma_max = 80 assumes data in [-1, 1]).

    The grid (measured before the final step existed, ``experiments/benchmarks/sampler_defaults_sweep.py``; VP,
    exact scores, tuned only on the ring2d and mix16d mixtures, 8,000 samples, paired error against a 300-step solve
    from the same noise; larger of the two mixtures; previous default: power/log-SNR blend from T to 0.02):

    ====  ======================================  ======================================  ===============
    N     chosen (best default solver)            previous default                        best in sweep
    ====  ======================================  ======================================  ===============
    5     dpmpp_2m, power from T, 0.04: 0.135     dpmpp_2m (end 0.02): 0.134              0.123
    10    unipc, jump 20 + log-SNR, 0.04: 0.036   unipc: 0.055                            0.035
    20    unipc (order 3), jump 20 + log-SNR,     unipc: 0.021 (order 3: 0.016)           0.013
          0.02: 0.016
    ====  ======================================  ======================================  ===============

    Checked at 40,000 samples (``sampler_defaults_check.py``; best of dpmpp_2m / unipc at defaults, 5 / 10 / 15 / 20
    NFE; exact-draw floors 0.004-0.010), with the final step: ring2d 0.119 / 0.033 / 0.030 / 0.016, mix16d 0.085 /
    0.033 / 0.013 / 0.012, grid3x3 0.243 / 0.034 / 0.032 / 0.021, ring5w 0.140 / 0.057 / 0.034 / 0.019, mix4d_iso
    0.043 / 0.026 / 0.013 / 0.012, mix32d 0.080 / 0.029 / 0.032 / 0.024 (its 200-step prior floor is 0.015). Before
    the final step, at 20 NFE: 0.020, 0.014, 0.028, 0.036, 0.013, 0.026. On three mixtures made after the choice
    (``samplers.CHECK``: a 6-mode ring of radius 2.5 with stds 0.12-0.4, an 8-D 5-mode anisotropic mixture with stds
    0.15-0.6, a 4 x 4 grid of std 0.15) at 15 / 20 NFE: ring6n 0.026 / 0.015, mix8d 0.016 / 0.010, grid4x4 0.031 /
    0.024, against 0.048 / 0.029, 0.021 / 0.012, 0.050 / 0.040 for stopping at the grid's end (the rule before).
    The targets (0.10 / 0.03 / 0.015) are met in 10 of 27 cells; at 5 NFE they are missed on exactly the six mixtures
    whose narrowest mode has std 0.1-0.2 (0.12-0.41), met on the three with 0.3-0.6.

    Other shapes swept: EDM rho-grids (rho 3, 5, 7, 12), log-SNR and the blend, starts 5-80 without the jump
    (ruled out above), jumps to 5-70, ends 0.005-0.15, a final denoise step at 5-10 NFE (no better).
    Later, on all nine mixtures at 40,000 samples (best of unipc / dpmpp_2m; cells meeting 0.03 / 0.015, worst
    error): at 10 / 20 NFE the defaults meet 3 / 4 of 9 (worst 0.057 / 0.024). N - 1 steps ending higher, then the
    extrapolated step, meet more but lose the worst case: end 0.05, 6 / 6 of 9 (worst 0.073 / 0.026); end 0.08,
    6 / 5 (0.085 / 0.052). So does a final Euler step in :math:`\tilde\sigma^2` (:math:`x_0 \approx (\tilde x +
    \hat x_0)/2`, second order for a smooth density, but it leaves :math:`\tilde\sigma_N/2` of noise on data
    concentrated below :math:`\tilde\sigma_N`, as images): end 0.05, 5 / 5 (0.060 / 0.023); end 0.08, 6 / 6
    (0.086 / 0.022). Mixtures with 0.1-0.15-std modes want the low end, broad ones the high end: one end cannot
    serve both, which is what :func:`jaxscore.samplers.fit_grid` adapts per model.
    """
    return {"sigma_min": default_sigma_min(steps), "denoise": default_denoise(steps),
            "sigma_jump": AUTO_JUMP_SIGMA if steps >= AUTO_JUMP_MIN_STEPS else None}


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
    if isinstance(sigma_min, str):
        check_choice("sigma_min", sigma_min, ("auto",))
        sigma_min = default_sigma_min(steps)
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
    elif grid == "logsnr_power":
        ts = sde.t_from_log_snr(0.5 * log_snr_spaced() + 0.5 * sde.log_snr(rho_spaced(hi, lo)))
    elif grid == "auto" and default_range(steps)["sigma_jump"] is None:
        ts = rho_spaced(hi, lo)
    elif grid == "auto":  # t_max, then sigma_1, then N - 1 steps uniform in log sigma~ (= log-SNR) to t_min
        u_hi, u_lo = jnp.log(sde.sigma_ratio(hi)), jnp.log(sde.sigma_ratio(lo))
        # below the start by at least one log-SNR step, above the end by at least one
        u_1 = jnp.minimum(jnp.log(default_range(steps)["sigma_jump"]), u_hi + (u_lo - u_hi) / steps)
        u_1 = jnp.maximum(u_1, u_hi + (u_lo - u_hi) * (steps - 1) / steps)
        rest = jnp.linspace(0.0, 1.0, steps)
        ts = jnp.concatenate([hi[None], sde.t_from_sigma_ratio(jnp.exp(u_1 + rest * (u_lo - u_1)))])
    else:  # edm
        ts = sde.t_from_sigma_ratio(rho_spaced(sde.sigma_ratio(hi), sde.sigma_ratio(lo)))
    # exact endpoints; interior clipped into the range (guards round-off of the inverse maps)
    ts = jnp.clip(ts, lo, hi).at[0].set(hi).at[-1].set(lo)
    return ts

