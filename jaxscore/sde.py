r"""Forward SDEs as immutable pytrees (equinox modules): VE, VP and sub-VP (Song et al., 2021).

All three are *linear* SDEs with state-independent diffusion,

.. math::  dx = f(t)\,x\,dt + g(t)\,dW_t ,

so the perturbation kernel is Gaussian, :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`,
and every sampler, loss and likelihood in jaxscore is written against the few
methods of :class:`LinearSDE`: ``marginal_coefs`` (alpha_t, sigma_t), ``drift``,
``diffusion``, ``transition_coefs`` (the exact one-step discretisation),
``log_snr`` / ``t_from_log_snr`` (for solver time grids) and the prior.
Samplers never branch on the SDE class: they ask the SDE.

The classes follow equinox's abstract/final pattern: :class:`LinearSDE` is abstract (abstract
methods and attributes, the derived methods written once on top of them); :class:`VESDE`,
:class:`VPSDE` and :class:`SubVPSDE` are final and hold all their fields. The schedule parameters
(``sigma_min``/``sigma_max``, ``beta_min``/``beta_max``) are the pytree leaves, so an SDE passes
through ``jax.jit`` and ``jax.vmap`` (a batch of SDEs is one SDE with batched parameters);
``T`` and ``t_min`` are static. Parameters are validated once, when an SDE is constructed
(``__check_init__``; values that are traced at that moment are not checked).

Shapes: ``x`` is ``[B, *D]``; ``t`` is ``[B]`` (a scalar is broadcast).
Time runs in ``[0, T]``; ``t_min`` is the default smallest time used by samplers
and losses (score_sde: 1e-5 for VE, 1e-3 for VP / sub-VP).

Convention for VE: the perturbation kernel has std ``sigma(t) = sigma_min (sigma_max /
sigma_min)^t`` exactly as in score_sde, i.e. ``p_0`` is the data smoothed by
``sigma_min``. Transitions between two times (``transition_coefs``) are exact for the SDE.
"""

import abc
import dataclasses
import math
from typing import Callable, final

import equinox as eqx
from equinox import AbstractVar
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import broadcast_to_data, check_batch, check_time_range, is_concrete

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def _require(cond, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _concrete_values(*values) -> list[np.ndarray] | None:
    """The values as numpy arrays, or None if any is a tracer (an SDE constructed inside
    ``jit``/``vmap`` from traced parameters: its values are unknown, so not checked)."""
    if not all(is_concrete(v) for v in values):
        return None
    return [np.asarray(v) for v in values]


class LinearSDE(eqx.Module):
    r"""A linear SDE :math:`dx = f(t) x\,dt + g(t)\,dW` on :math:`t\in[0, T]` (abstract).

    A concrete SDE defines the attributes ``T``, ``t_min`` (static) and ``prior_std``, and the
    methods ``drift_coef`` (f(t)), ``diffusion`` (g(t)), ``marginal_coefs`` (alpha_t, sigma_t),
    ``log_snr`` and its inverse ``t_from_log_snr``. Everything else (drift, transitions, prior,
    reverse and probability-flow drifts, Tweedie denoising) is derived here, once.

    A new SDE is a final subclass holding all its fields, e.g.::

        class MySDE(LinearSDE):
            c: float = 2.0                                   # a parameter: a pytree leaf
            T: float = eqx.field(static=True, default=1.0)
            t_min: float = eqx.field(static=True, default=1e-3)
            ...                                              # prior_std and the abstract methods

    Validation lives in ``__check_init__`` (equinox runs every class's one after construction,
    never on unflattening); this class checks ``T`` and ``t_min``.
    """

    T: AbstractVar[float]
    t_min: AbstractVar[float]
    prior_std: AbstractVar[float]  # std of the prior p_T = N(0, prior_std^2 I)

    def __check_init__(self):
        name = type(self).__name__
        _require(math.isfinite(self.T) and self.T > 0, f"{name}: T must be finite and > 0, got {self.T}.")
        _require(0 <= self.t_min < self.T, f"{name}: expected 0 <= t_min < T, got t_min={self.t_min}.")

    # --- per-SDE pieces -----------------------------------------------------------------
    @abc.abstractmethod
    def drift_coef(self, t: jax.Array) -> jax.Array:
        """f(t): same shape as ``t``."""

    @abc.abstractmethod
    def diffusion(self, t: jax.Array) -> jax.Array:
        """g(t): same shape as ``t``."""

    @abc.abstractmethod
    def marginal_coefs(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        r"""(:math:`\alpha_t`, :math:`\sigma_t`) of the kernel :math:`x_t|x_0 \sim N(\alpha_t x_0, \sigma_t^2 I)`."""

    @abc.abstractmethod
    def log_snr(self, t: jax.Array) -> jax.Array:
        r""":math:`\lambda_t = \log(\alpha_t^2 / \sigma_t^2)`, decreasing in t."""

    @abc.abstractmethod
    def t_from_log_snr(self, log_snr: jax.Array) -> jax.Array:
        """Inverse of :meth:`log_snr`."""

    # --- derived ------------------------------------------------------------------------
    def replace(self, **changes) -> "LinearSDE":
        """A copy with some fields changed (validated like a new SDE), e.g. ``sde.replace(beta_max=10.0)``."""
        return dataclasses.replace(self, **changes)

    def check_time(self, t) -> None:
        """Raise ``ValueError`` if concrete ``t`` is outside ``[0, T]``."""
        check_time_range(t, 0.0, self.T)

    def is_variance_exploding(self) -> bool:
        r"""True when :math:`\alpha_t = 1` on [0, T] (zero drift, :math:`x_t = x_0 + \sigma_t\varepsilon`):
        the marginals form a pure noise ladder, as NCSN's annealed Langevin dynamics needs.

        Decided at trace time by evaluating ``drift_coef`` on a grid (under
        ``jax.ensure_compile_time_eval``); returns False when that cannot be decided, i.e.
        the drift depends on traced parameters. A Python bool, usable for static dispatch.
        """
        with jax.ensure_compile_time_eval():
            f = self.drift_coef(jnp.linspace(0.0, self.T, 17))
        return is_concrete(f) and bool(np.all(np.asarray(f) == 0))

    def drift(self, x: jax.Array, t: jax.Array) -> jax.Array:
        r"""Forward drift :math:`f(x, t) = f(t)\,x`. x: [B, *D], t: [B] -> [B, *D]."""
        x, t = check_batch(x, t)
        self.check_time(t)
        return broadcast_to_data(self.drift_coef(t), x) * x

    def sigma_ratio(self, t: jax.Array) -> jax.Array:
        r"""Noise-to-signal ratio :math:`\tilde\sigma_t = \sigma_t/\alpha_t` (EDM's sigma)."""
        alpha, sigma = self.marginal_coefs(t)
        return sigma / alpha

    def t_from_sigma_ratio(self, sigma_ratio: jax.Array) -> jax.Array:
        """Inverse of :meth:`sigma_ratio` (EDM time grids are built in sigma)."""
        return self.t_from_log_snr(-2.0 * jnp.log(sigma_ratio))

    def marginal_sample(self, key: jax.Array, x0: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        r"""Draw :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`. Returns ``(x_t, eps)``, both [B, *D]."""
        x0, t = check_batch(x0, t, name_x="x0")
        self.check_time(t)
        eps = jax.random.normal(key, x0.shape, x0.dtype)
        alpha, sigma = self.marginal_coefs(t)
        return broadcast_to_data(alpha, x0) * x0 + broadcast_to_data(sigma, x0) * eps, eps

    def marginal_score(self, x_t: jax.Array, x0: jax.Array, t: jax.Array) -> jax.Array:
        r"""Score of the kernel: :math:`\nabla_{x_t}\log p(x_t|x_0) = -(x_t - \alpha_t x_0)/\sigma_t^2`."""
        x_t, t = check_batch(x_t, t, name_x="x_t")
        alpha, sigma = self.marginal_coefs(t)
        return -(x_t - broadcast_to_data(alpha, x_t) * x0) / broadcast_to_data(sigma**2, x_t)

    def transition_coefs(self, s: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        r"""Exact transition :math:`x_t | x_s \sim N(a_{t|s} x_s, v_{t|s} I)` for :math:`s < t`.

        :math:`a_{t|s} = \alpha_t/\alpha_s`, :math:`v_{t|s} = \sigma_t^2 - a_{t|s}^2 \sigma_s^2`.
        This is the one-step discretisation that reverse-diffusion and ancestral
        samplers need (for VP on a uniform grid it is DDPM's beta_i).
        """
        alpha_s, sigma_s = self.marginal_coefs(s)
        alpha_t, sigma_t = self.marginal_coefs(t)
        a = alpha_t / alpha_s
        var = jnp.maximum(sigma_t**2 - (a * sigma_s) ** 2, 0.0)
        return a, var

    def discretize(self, x: jax.Array, t: jax.Array, t_next: jax.Array) -> tuple[jax.Array, jax.Array]:
        r"""score_sde's ``discretize`` for a step from ``t`` down to ``t_next``:
        forward increments ``(f_i, G_i)`` with :math:`x_t = x_{t_{next}} + f_i + G_i z`.

        :math:`f_i = (a_{t|t_{next}} - 1)\,x`, :math:`G_i = \sqrt{v_{t|t_{next}}}`. Shapes: f [B,*D], G [B].
        """
        a, var = self.transition_coefs(t_next, t)
        return (broadcast_to_data(a, x) - 1.0) * x, jnp.sqrt(var)

    def prior_sample(self, key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        r"""Draw from the prior :math:`p_T = N(0, \sigma_{prior}^2 I)`; ``shape`` is [B, *D]."""
        return self.prior_std * jax.random.normal(key, shape, dtype)

    def prior_log_prob(self, z: jax.Array) -> jax.Array:
        r"""Log-density of the prior, summed over data axes: [B, *D] -> [B] (nats)."""
        z = jnp.asarray(z)
        d = math.prod(z.shape[1:])
        s2 = self.prior_std**2
        sq = jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)
        return -0.5 * d * jnp.log(2.0 * jnp.pi * s2) - 0.5 * sq / s2

    def reverse_drift(self, score_fn: ScoreFn, x: jax.Array, t: jax.Array) -> jax.Array:
        r"""Reverse-time SDE drift :math:`f(x,t) - g(t)^2 s(x,t)` (Anderson 1982); t runs backwards."""
        x, t = check_batch(x, t)
        g = broadcast_to_data(self.diffusion(t), x)
        return self.drift(x, t) - g**2 * score_fn(x, t)

    def probability_flow_drift(self, score_fn: ScoreFn, x: jax.Array, t: jax.Array) -> jax.Array:
        r"""Probability-flow ODE :math:`dx/dt = f(x,t) - \tfrac12 g(t)^2 s(x,t)`."""
        x, t = check_batch(x, t)
        g = broadcast_to_data(self.diffusion(t), x)
        return self.drift(x, t) - 0.5 * g**2 * score_fn(x, t)

    def denoise(self, x: jax.Array, score: jax.Array, t: jax.Array) -> jax.Array:
        r"""Tweedie: :math:`E[x_0|x_t] = (x_t + \sigma_t^2 s(x_t,t))/\alpha_t`."""
        alpha, sigma = self.marginal_coefs(t)
        return (x + broadcast_to_data(sigma**2, x) * score) / broadcast_to_data(alpha, x)


@final
class VESDE(LinearSDE):
    r"""Variance-exploding SDE: :math:`dx = \sqrt{d[\sigma^2(t)]/dt}\,dW`,
    :math:`\sigma(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^t`.

    :math:`\alpha_t = 1`, :math:`\sigma_t = \sigma(t)`, :math:`\lambda_t = -2\log\sigma(t)`,
    :math:`g(t) = \sigma(t)\sqrt{2\log(\sigma_{max}/\sigma_{min})}`, prior :math:`N(0,\sigma_{max}^2 I)`.
    Defaults as score_sde (sigma_min 0.01, sigma_max 50, t_min 1e-5).
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=1e-5)

    def __check_init__(self):
        values = _concrete_values(self.sigma_min, self.sigma_max)
        if values is None:
            return
        smin, smax = values
        _require(np.all(np.isfinite(smin)) and np.all(np.isfinite(smax)),
                 f"VESDE: expected finite sigma_min and sigma_max, got sigma_min={smin}, sigma_max={smax}.")
        _require(np.all(smin > 0), f"VESDE: sigma_min must be > 0, got {smin}.")
        _require(np.all(smin < smax), f"VESDE: expected sigma_min < sigma_max, got sigma_min={smin}, sigma_max={smax}.")

    @property
    def prior_std(self):
        return self.sigma_max

    def _log_ratio(self):
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    def sigma(self, t: jax.Array) -> jax.Array:
        r""":math:`\sigma(t) = \sigma_{min}\exp(\log(\sigma_{max}/\sigma_{min})\,t/T)`."""
        return self.sigma_min * jnp.exp(self._log_ratio() * t / self.T)

    def drift_coef(self, t):
        return jnp.zeros_like(jnp.asarray(t, jnp.result_type(float)))

    def diffusion(self, t):
        return self.sigma(t) * jnp.sqrt(2.0 * self._log_ratio() / self.T)

    def marginal_coefs(self, t):
        sigma = self.sigma(t)
        return jnp.ones_like(sigma), sigma

    def log_snr(self, t):
        return -2.0 * jnp.log(self.sigma(t))

    def t_from_log_snr(self, log_snr):
        sigma = jnp.exp(-0.5 * log_snr)
        return self.T * (jnp.log(sigma) - jnp.log(self.sigma_min)) / self._log_ratio()


class _AbstractBetaSDE(LinearSDE):
    r"""Linear :math:`\beta(t) = \beta_{min} + (t/T)(\beta_{max}-\beta_{min})`, drift :math:`f(t) = -\tfrac12\beta(t)`,
    :math:`\alpha_t = e^{-B(t)/2}` with :math:`B(t) = \int_0^t \beta`, prior :math:`N(0, I)` (abstract:
    VP and sub-VP differ in :math:`\sigma_t` and g(t))."""

    beta_min: AbstractVar[float]
    beta_max: AbstractVar[float]

    def __check_init__(self):
        values = _concrete_values(self.beta_min, self.beta_max)
        if values is None:
            return
        name, (bmin, bmax) = type(self).__name__, values
        _require(np.all(np.isfinite(bmin)) and np.all(np.isfinite(bmax)),
                 f"{name}: expected finite beta_min and beta_max, got beta_min={bmin}, beta_max={bmax}.")
        _require(np.all(bmin >= 0), f"{name}: beta_min must be >= 0, got {bmin}.")
        _require(np.all(bmax > 0), f"{name}: beta_max must be > 0, got {bmax}.")
        _require(np.all(bmin <= bmax), f"{name}: expected beta_min <= beta_max, got beta_min={bmin}, beta_max={bmax}.")

    @property
    def prior_std(self):
        return 1.0

    def beta(self, t):
        return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t):
        r""":math:`B(t) = \int_0^t \beta(s) ds`."""
        u = t / self.T
        return self.T * (self.beta_min * u + 0.5 * (self.beta_max - self.beta_min) * u**2)

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def _t_from_integrated_beta(self, b):
        """Solve B(t) = b for t (positive root of the quadratic)."""
        a = 0.5 * (self.beta_max - self.beta_min) / self.T
        c0 = self.beta_min
        safe_a = jnp.where(a > 0, a, 1.0)
        quad = (-c0 + jnp.sqrt(c0**2 + 4.0 * safe_a * b)) / (2.0 * safe_a)
        return jnp.where(a > 0, quad, b / jnp.maximum(c0, 1e-20))


@final
class VPSDE(_AbstractBetaSDE):
    r"""Variance-preserving SDE (continuous DDPM): :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dW`.

    :math:`\alpha_t = e^{-B(t)/2}`, :math:`\sigma_t^2 = 1 - e^{-B(t)}`, prior :math:`N(0, I)`.
    Defaults as score_sde (beta 0.1 to 20, t_min 1e-3).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=1e-3)

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t))

    def marginal_coefs(self, t):
        b = self.integrated_beta(t)
        return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))

    def log_snr(self, t):
        # log(alpha^2/sigma^2) = -B - log(1 - e^{-B}), written stably.
        b = self.integrated_beta(t)
        return -b - jnp.log(-jnp.expm1(-b))

    def t_from_log_snr(self, log_snr):
        # e^{-B} = sigmoid(lambda)  =>  B = softplus(-lambda)
        return self._t_from_integrated_beta(jax.nn.softplus(-log_snr))


@final
class SubVPSDE(_AbstractBetaSDE):
    r"""Sub-VP SDE: :math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)(1-e^{-2B(t)})}\,dW`.

    :math:`\alpha_t = e^{-B(t)/2}`, :math:`\sigma_t = 1 - e^{-B(t)}`, prior :math:`N(0, I)`.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=1e-3)

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t) * -jnp.expm1(-2.0 * self.integrated_beta(t)))

    def marginal_coefs(self, t):
        b = self.integrated_beta(t)
        return jnp.exp(-0.5 * b), -jnp.expm1(-b)

    def log_snr(self, t):
        alpha, sigma = self.marginal_coefs(t)
        return 2.0 * (jnp.log(alpha) - jnp.log(sigma))

    def t_from_log_snr(self, log_snr):
        # alpha^2/sigma^2 = u/(1-u)^2 with u = e^{-B}; solve u^2 - (2 + r) u + 1 = 0 (root < 1), r = 1/snr.
        r = jnp.exp(-log_snr)
        # the small root is 1 / (large root): avoids cancellation when r is large.
        log_u = jnp.log(2.0) - jnp.log((2.0 + r) + jnp.sqrt(r * (4.0 + r)))
        return self._t_from_integrated_beta(-log_u)


# --- discrete DDPM chains ------------------------------------------------------------------

def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    r"""DDPM's linear schedule (Ho et al. 2020, §4): :math:`\beta_i` from ``beta_start`` to ``beta_end``
    evenly over :math:`i = 1..N` (``np.linspace``, float64) — [N]."""
    num_steps = _check_num_steps(num_steps)
    _require(0 < beta_start <= beta_end < 1,
             f"linear_betas: expected 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}.")
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def cosine_alpha_bar(u, s: float = 0.008):
    r"""Nichol & Dhariwal (2021) eq. 17 before normalisation: :math:`f(u) = \cos^2\big(\tfrac{u + s}{1 + s}\tfrac\pi2\big)`,
    :math:`u = t/T \in [0, 1]`; :math:`\bar\alpha(u) = f(u)/f(0)`."""
    return np.cos((np.asarray(u, np.float64) + s) / (1.0 + s) * np.pi / 2.0) ** 2


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    r"""Nichol & Dhariwal's cosine schedule (2021, §3.2):
    :math:`\beta_i = \min(1 - f(i/N)/f((i-1)/N),\ \texttt{max\_beta})`, so that
    :math:`\prod_{j\le i}(1-\beta_j) = f(i/N)/f(0)` wherever no clipping happened (with the defaults
    only :math:`\beta_N` is clipped: :math:`f(1) = 0`). float64 [N]."""
    num_steps = _check_num_steps(num_steps)
    _require(s >= 0 and 0 < max_beta < 1, f"cosine_betas: expected s >= 0 and 0 < max_beta < 1, got s={s}, max_beta={max_beta}.")
    f = cosine_alpha_bar(np.arange(num_steps + 1) / num_steps, s)
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def _check_num_steps(num_steps) -> int:
    _require(isinstance(num_steps, (int, np.integer)) and not isinstance(num_steps, bool) and num_steps >= 1,
             f"num_steps: expected an integer >= 1, got {num_steps!r}.")
    return int(num_steps)


@final
class DiscreteVPSDE(LinearSDE):
    r"""A discrete DDPM chain (Ho et al. 2020) :math:`q(x_i|x_{i-1}) = N(\sqrt{1-\beta_i}\,x_{i-1}, \beta_i I)`,
    :math:`i = 1..N`, embedded in continuous time as a VP-type linear SDE on :math:`t\in[0, T]`.

    Step :math:`i` sits at :math:`t_i = iT/N`, where the kernel is exactly the chain's:
    :math:`\alpha_{t_i}^2 = \bar\alpha_i = \prod_{j\le i}(1-\beta_j)`, :math:`\sigma_{t_i}^2 = 1-\bar\alpha_i`.
    Between steps :math:`\log\bar\alpha` is linear in t (piecewise log-linear :math:`\bar\alpha`), so

    .. math:: \beta(t) = -\frac{d\log\bar\alpha}{dt} = -\frac NT\log(1-\beta_i)\quad (t\in(t_{i-1}, t_i]),

    :math:`f(t) = -\tfrac12\beta(t)`, :math:`g(t) = \sqrt{\beta(t)}` — the VP SDE with this piecewise-constant
    :math:`\beta(t)` (:math:`-N\log(1-\beta_i) \approx N\beta_i`: DDPM's linear 1e-4..0.02 over N = 1000 is
    the VP SDE with :math:`\beta_{min} = 0.1`, :math:`\beta_{max} = 20` in the limit :math:`N\to\infty`).
    Everything of :class:`LinearSDE` (transitions, grids, samplers, likelihood) then works unchanged;
    ``transition_coefs(t_{i-1}, t_i)`` gives :math:`(\sqrt{1-\beta_i}, \beta_i)`, so ``ancestral`` on the
    integer grid (``steps = N``, ``grid="uniform"``, ``t_min=0``: :math:`t_n = (N-n)T/N`) is DDPM's Alg. 2
    with the posterior variance :math:`\tilde\beta_i`, its last step returning the mean.

    ``betas``: [N] float in (0, 1) (a pytree leaf; build one with :meth:`linear` or :meth:`cosine`).
    ``t_min`` (static) defaults to 1e-3, the first step of N = 1000; the constructors set it to T/N.
    """

    betas: jax.Array
    T: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        betas = jnp.asarray(self.betas)
        _require(betas.ndim == 1 and betas.shape[0] >= 1,
                 f"DiscreteVPSDE: expected betas of shape [N] with N >= 1, got shape {tuple(betas.shape)}.")
        values = _concrete_values(self.betas)
        if values is None:
            return
        (b,) = values
        _require(np.all(np.isfinite(b)) and np.all(b > 0) and np.all(b < 1),
                 f"DiscreteVPSDE: expected every beta in (0, 1), got min {b.min()}, max {b.max()}.")

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02, *, T: float = 1.0,
               dtype=jnp.float32) -> "DiscreteVPSDE":
        """Ho et al. (2020): linear betas (:func:`linear_betas`); ``t_min = T / num_steps``."""
        return cls(jnp.asarray(linear_betas(num_steps, beta_start, beta_end), dtype), T=T, t_min=T / num_steps)

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999, *, T: float = 1.0,
               dtype=jnp.float32) -> "DiscreteVPSDE":
        """Nichol & Dhariwal (2021): cosine betas (:func:`cosine_betas`); ``t_min = T / num_steps``."""
        return cls(jnp.asarray(cosine_betas(num_steps, s, max_beta), dtype), T=T, t_min=T / num_steps)

    @property
    def prior_std(self):
        return 1.0

    @property
    def num_steps(self) -> int:
        """N, the number of steps of the chain (static)."""
        return int(jnp.shape(self.betas)[0])

    def log_alpha_bars(self) -> jax.Array:
        r""":math:`\log\bar\alpha_i = \sum_{j\le i}\log(1-\beta_j)` for :math:`i = 0..N` — [N + 1], the first 0."""
        b = jnp.asarray(self.betas)
        return jnp.concatenate([jnp.zeros((1,), b.dtype), jnp.cumsum(jnp.log1p(-b))])

    def step_times(self) -> jax.Array:
        """:math:`t_i = iT/N`, i = 0..N — [N + 1]: the times of the chain's steps."""
        return jnp.linspace(0.0, self.T, self.num_steps + 1, dtype=jnp.asarray(self.betas).dtype)

    def log_alpha_bar(self, t: jax.Array) -> jax.Array:
        r""":math:`\log\bar\alpha(t)`: linear interpolation of :meth:`log_alpha_bars` in :math:`u = tN/T`."""
        n = self.num_steps
        u = jnp.asarray(t) * (n / self.T)
        return jnp.interp(u, jnp.arange(n + 1, dtype=u.dtype), self.log_alpha_bars().astype(u.dtype))

    def beta(self, t: jax.Array) -> jax.Array:
        r""":math:`\beta(t) = -(N/T)\log(1-\beta_i)` on :math:`(t_{i-1}, t_i]` (:math:`\beta_1` at t = 0)."""
        n = self.num_steps
        t = jnp.asarray(t, jnp.result_type(t, float))
        i = jnp.clip(jnp.ceil(t * (n / self.T)).astype(jnp.int32) - 1, 0, n - 1)
        return -(n / self.T) * jnp.log1p(-jnp.asarray(self.betas, t.dtype)[i])

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t))

    def marginal_coefs(self, t):
        la = self.log_alpha_bar(t)
        return jnp.exp(0.5 * la), jnp.sqrt(-jnp.expm1(la))

    def log_snr(self, t):
        la = self.log_alpha_bar(t)
        return la - jnp.log(-jnp.expm1(la))

    def t_from_log_snr(self, log_snr):
        # alpha_bar = sigmoid(lambda)  =>  log alpha_bar = -softplus(-lambda); invert the piecewise-linear map
        log_snr = jnp.asarray(log_snr, jnp.result_type(log_snr, float))
        n = self.num_steps
        minus_la = -self.log_alpha_bars().astype(log_snr.dtype)  # increasing in i
        u = jnp.interp(jax.nn.softplus(-log_snr), minus_la, jnp.arange(n + 1, dtype=log_snr.dtype))
        return u * (self.T / n)
