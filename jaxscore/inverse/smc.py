r"""Asymptotically exact posterior sampling: the Twisted Diffusion Sampler (TDS).

Wu, Trippe, Naesseth, Blei & Cunningham (2023), *Practical and asymptotically exact conditional
sampling in diffusion models* (NeurIPS): sequential Monte Carlo over the reverse diffusion, with a
proposal *twisted* by an approximate likelihood and importance weights that correct the twist.

Problem. A diffusion model (any ``score_fn(x, t)`` with any :class:`~jaxscore.sde.LinearSDE`) and an
observation :math:`y` with likelihood :math:`p(y \mid x_0)`, e.g. :math:`y = A x_0 + n`,
:math:`n \sim N(0, \sigma_y^2 I)`. Target: the posterior
:math:`p_\theta(x_0 \mid y) \propto p_\theta(x_0)\,p(y \mid x_0)`, where :math:`p_\theta` is the
distribution of the model's reverse chain below.

Reverse chain (the model). On a decreasing grid :math:`T = t_0 > t_1 > \dots > t_N = t_{min}` the
unconditional transition is the ancestral (DDPM-posterior) step, written for any linear SDE through
its marginals :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`: with :math:`t = t_n, s = t_{n+1}`,
:math:`a = \alpha_t/\alpha_s`, :math:`v = \sigma_t^2 - a^2\sigma_s^2` (``sde.transition_coefs``),

.. math:: p_\theta(x_s \mid x_t) = N\big(\mu(\hat x_0, x_t),\; \Sigma I\big),\quad
          \mu(x_0, x_t) = \frac{v\,\alpha_s x_0 + a\,\sigma_s^2 x_t}{\sigma_t^2},\quad
          \Sigma = \frac{\sigma_s^2 v}{\sigma_t^2},

with Tweedie's :math:`\hat x_0(x_t) = (x_t + \sigma_t^2 s(x_t, t))/\alpha_t` (``sde.denoise``), and
:math:`x_{t_0} \sim` the SDE's prior.

Twists. :math:`\tilde p_t(y \mid x_t)` approximates :math:`p_t(y \mid x_t)` through the denoiser
(a :class:`TwistedLikelihood`): for the linear-Gaussian model
:math:`\tilde p_t = N(y;\, A\hat x_0(x_t),\; \sigma_y^2 I + r_t^2 AA^\top)` with
:math:`r_t^2 = \sigma_t^2/\alpha_t^2` (TDS) or :math:`v\sigma_t^2/(\alpha_t^2 v + \sigma_t^2)`
(ΠGDM, prior variance :math:`v`); for any other likelihood :math:`\tilde p_t = p(y \mid \hat x_0(x_t))`
(TDS's general twist). At the last time the twist is replaced by the exact likelihood.

Algorithm (K particles per observation, all in one ``lax.scan``):

1. :math:`x^k_{t_0} \sim p(x_T)`, :math:`\log w^k = \log \tilde p_{t_0}(y \mid x^k_{t_0})`.
2. For :math:`n = 0..N-1`: if :math:`\mathrm{ESS} = 1/\sum_k \bar w_k^2 < \kappa K`, resample
   (systematic or multinomial) and reset the weights; propose from the twisted transition

   .. math:: q(x_s \mid x_t, y) = N\big(\mu(\hat x_0 + \tfrac{\sigma_t^2}{\alpha_t}\nabla_{x_t}\log\tilde p_t(y\mid x_t),\, x_t),\;\Sigma I\big)

   (the ancestral step taken with the twisted score :math:`s + \nabla\log\tilde p_t`), and multiply by

   .. math:: w_n = \frac{p_\theta(x_s \mid x_t)\,\tilde p_s(y \mid x_s)}{q(x_s \mid x_t, y)\,\tilde p_t(y \mid x_t)},
             \qquad \tilde p_{t_N} := p(y \mid x_{t_N}).

The product of the weights telescopes to :math:`p(y \mid x_{t_N})\prod_n p_\theta/q`, so the
particles target the extended path posterior :math:`p_\theta(x_{t_0:t_N})\,p(y \mid x_{t_N})/p_\theta(y)`.

**Guarantee** (Wu et al. 2023, Theorem 1, the standard SMC consistency of Chopin 2004 / Del Moral
2004): for any twist whose weights are bounded, the weighted particles
:math:`\sum_k \bar w_k\,\delta_{x^k}` converge to the exact posterior
:math:`p_\theta(x_{t_{min}} \mid y)` of the model's discretised reverse chain as :math:`K \to \infty`
(the error of :math:`\sum_k \bar w_k\,\phi(x^k)` is :math:`O(1/\sqrt{K})` for bounded test functions
:math:`\phi`), whatever the quality of the twist; a better twist only lowers the constant. The
weighted mean of the weights (``info["log_evidence"]``) is an unbiased estimate of
:math:`p_\theta(y)`. The error that does not vanish with K is that of the model itself:
:math:`p_\theta` vs. the data distribution (the score's error and the grid's discretisation).

Cost: one score evaluation and one vector-Jacobian product through the score per particle and step
(the twist's gradient), NFE = ``steps`` per particle.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxscore._checks import (
    check_choice,
    check_float_array,
    check_key,
    check_nonnegative,
    check_positive,
    check_steps,
)
from jaxscore._keys import example_keys

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

__all__ = [
    "RESAMPLING",
    "TwistedLikelihood",
    "effective_sample_size",
    "linear_gaussian_likelihood",
    "multinomial_resample",
    "resample_particles",
    "systematic_resample",
    "tweedie_likelihood",
    "twisted_smc",
]


class TwistedLikelihood(NamedTuple):
    r"""A likelihood :math:`p(y \mid x_0)` and its twist :math:`\tilde p_t(y \mid x_t)`, for one observation.

    ``log_likelihood(x0, y) -> [K]``: the exact :math:`\log p(y \mid x_0)` of each particle
    (``x0: [K, *D]``, ``y``: one observation, e.g. ``[*M]``).
    ``log_twist(x_t, x0_hat, t, y) -> [K]``: :math:`\log\tilde p_t(y \mid x_t)`, where
    ``x0_hat = sde.denoise(x_t, score, t)`` is Tweedie's mean (``t: [K]``). It is differentiated
    with respect to ``x_t`` (also through ``x0_hat``). Each row must depend only on its own particle.
    """

    log_likelihood: Callable[[jax.Array, jax.Array], jax.Array]
    log_twist: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def _gaussian_log_density(y, mean, var) -> jax.Array:
    """Sum over the non-batch axes of :math:`\\log N(y; mean, var)`: [K]."""
    r = (y - mean) ** 2 / var + jnp.log(2.0 * math.pi * var)
    return -0.5 * jnp.sum(r.reshape(r.shape[0], -1), axis=-1)


def linear_gaussian_likelihood(sde, forward: Callable[[jax.Array], jax.Array], noise_std: float, *, aat=1.0,
                               data_var: float | None = None) -> TwistedLikelihood:
    r"""The model :math:`y = A x_0 + n`, :math:`n \sim N(0, \sigma_y^2 I)`, with the twist
    :math:`\tilde p_t(y \mid x_t) = N(y;\, A\hat x_0(x_t),\; \sigma_y^2 I + r_t^2\,\mathrm{diag}(AA^\top))`.

    ``forward``: ``x [K, *D] -> A x [K, *M]`` (linear, per row); ``noise_std``: :math:`\sigma_y > 0`
    (the exact likelihood must be a density); ``aat``: the diagonal of :math:`AA^\top`, broadcastable
    to ``[K, *M]`` (1 for a coordinate selection, ``mask**2`` for a mask);
    ``data_var``: ``None`` for TDS's :math:`r_t^2 = \sigma_t^2/\alpha_t^2` (the variance of
    :math:`x_0 \mid x_t` under a flat prior), or the prior's per-dimension variance :math:`v` for
    ΠGDM's :math:`r_t^2 = v\sigma_t^2/(\alpha_t^2 v + \sigma_t^2)` (exact for a Gaussian prior
    :math:`N(\mu, vI)`, then TDS is exact with any K). Both vanish as :math:`t \to 0`.
    """
    check_positive("noise_std", noise_std, why=" (sigma_y: the exact likelihood N(y; A x0, sigma_y^2 I) needs it)")
    if data_var is not None:
        check_positive("data_var", data_var, why=" (the prior variance per dimension in r_t^2)")
    if not callable(forward):
        raise TypeError(f"forward: expected a callable x [K, *D] -> A x [K, *M], got {type(forward).__name__}.")
    noise_var = float(noise_std) ** 2

    def log_likelihood(x0, y):
        return _gaussian_log_density(y, forward(x0), noise_var)

    def log_twist(x_t, x0_hat, t, y):
        alpha, sigma = sde.marginal_coefs(t)
        if data_var is None:
            r2 = (sigma / alpha) ** 2
        else:
            r2 = data_var * sigma**2 / (alpha**2 * data_var + sigma**2)
        ax0 = forward(x0_hat)
        r2 = r2.reshape(r2.shape + (1,) * (ax0.ndim - 1))
        return _gaussian_log_density(y, ax0, noise_var + r2 * jnp.asarray(aat, ax0.dtype))

    return TwistedLikelihood(log_likelihood, log_twist)


def tweedie_likelihood(log_likelihood: Callable[[jax.Array, jax.Array], jax.Array]) -> TwistedLikelihood:
    r"""Any likelihood ``log_likelihood(x0 [K, *D], y) -> [K]`` with TDS's general twist
    :math:`\tilde p_t(y \mid x_t) = p(y \mid \hat x_0(x_t))` (e.g. a clean classifier's log-softmax)."""
    if not callable(log_likelihood):
        raise TypeError(f"log_likelihood: expected a callable (x0 [K, *D], y) -> [K], got {type(log_likelihood).__name__}.")
    return TwistedLikelihood(log_likelihood, lambda x_t, x0_hat, t, y: log_likelihood(x0_hat, y))


# --- weights and resampling -------------------------------------------------------------------------

def effective_sample_size(log_weights: jax.Array) -> jax.Array:
    r""":math:`1/\sum_k \bar w_k^2` of unnormalised log-weights ``[..., K]`` -> ``[...]`` (in [1, K])."""
    w = jax.nn.softmax(log_weights, axis=-1)
    return 1.0 / jnp.sum(w**2, axis=-1)


def systematic_resample(key: jax.Array, log_weights: jax.Array, num: int | None = None) -> jax.Array:
    r"""Systematic resampling: ancestor indices ``[num]`` (default K) with
    :math:`u_j = (U + j)/num`, :math:`U \sim U[0, 1)`, index :math:`= \min\{k: \sum_{i\le k}\bar w_i > u_j\}`.
    Unbiased (each k is drawn :math:`num\,\bar w_k` times in expectation) with less variance than multinomial."""
    k = log_weights.shape[-1]
    num = k if num is None else num
    cdf = jnp.cumsum(jax.nn.softmax(log_weights))
    u = (jax.random.uniform(key, (), cdf.dtype) + jnp.arange(num, dtype=cdf.dtype)) / num
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), k - 1)


def multinomial_resample(key: jax.Array, log_weights: jax.Array, num: int | None = None) -> jax.Array:
    """Multinomial resampling: ``num`` (default K) i.i.d. ancestor indices drawn with the normalised weights."""
    k = log_weights.shape[-1]
    return jax.random.categorical(key, log_weights, shape=(k if num is None else num,))


RESAMPLING = {"systematic": systematic_resample, "multinomial": multinomial_resample}


def resample_particles(key: jax.Array, particles: jax.Array, weights: jax.Array, num: int | None = None, *,
                       method: str = "systematic") -> jax.Array:
    """Equally weighted draws from weighted particles: ``particles [K, *D]``, normalised ``weights [K]`` ->
    ``[num, *D]`` (for a batch of observations, ``jax.vmap`` it)."""
    check_choice("method", method, tuple(RESAMPLING))
    idx = RESAMPLING[method](key, jnp.log(weights), num)
    return particles[idx]


# --- the sampler ------------------------------------------------------------------------------------

def _posterior_coefs(sde, t, s):
    r"""Ancestral step from t down to s: :math:`\mu = c_0 x_0 + c_t x_t`, variance :math:`\Sigma`."""
    alpha_s, sigma_s = sde.marginal_coefs(s)
    _, sigma_t = sde.marginal_coefs(t)
    a, v = sde.transition_coefs(s, t)
    c0 = v * alpha_s / sigma_t**2
    ct = a * sigma_s**2 / sigma_t**2
    return c0, ct, sigma_s**2 * v / sigma_t**2


def twisted_smc(key: jax.Array, score_fn: ScoreFn, sde, likelihood: TwistedLikelihood, y: jax.Array,
                data_shape: tuple[int, ...], *, num_particles: int, steps: int = 200, grid="uniform",
                t_min=None, ess_threshold: float = 0.5, resampling: str = "systematic"):
    r"""TDS posterior sampling for a batch of observations (see the module docstring for the algorithm
    and its guarantee).

    Args:
      key: one PRNG key; observation ``i`` uses ``fold_in(key, i)`` (its result does not depend on
        the batch), step ``n`` of it ``fold_in(fold_in(key, i), n)``.
      score_fn: ``score_fn(x [K, *D], t [K]) -> [K, *D]`` (called on each observation's particles; the
        batch of observations is a ``jax.vmap``).
      sde: any :class:`~jaxscore.sde.LinearSDE` (only its marginals and transitions are used).
      likelihood: a :class:`TwistedLikelihood` (:func:`linear_gaussian_likelihood`, :func:`tweedie_likelihood`).
      y: ``[N, *M]`` observations (leading axis: one per posterior; ``N = 1`` for one).
      data_shape: ``D``, one example's shape (e.g. ``(2,)`` or ``(28, 28, 1)``).
      num_particles: K >= 1. steps: grid steps N >= 1 (NFE per particle). grid, t_min: as
        :func:`jaxscore.samplers.time_grid` (a name or an explicit decreasing array).
      ess_threshold: :math:`\kappa \in [0, 1]`; resample when ESS < :math:`\kappa K` (0: never,
        1: every step).
      resampling: ``"systematic"`` or ``"multinomial"``.

    Returns:
      ``(particles, weights, info)``: particles ``[N, K, *D]`` at ``t_min``, normalised weights
      ``[N, K]`` (rows sum to 1); ``info``: ``ess [N, steps + 1]`` (the ESS before each step's
      resampling decision, then that of the returned weights), ``resampled [N, steps]`` (bool),
      ``log_evidence [N]`` (the estimate of :math:`\log p_\theta(y)`), ``log_weights [N, K]``
      (unnormalised), ``nfe`` (score evaluations per particle).
    """
    from jaxscore.samplers.grids import time_grid

    check_key(key)
    if not callable(score_fn):
        raise TypeError(f"score_fn: expected a callable score_fn(x: [K, *D], t: [K]) -> [K, *D], got {type(score_fn).__name__}.")
    if not isinstance(likelihood, TwistedLikelihood):
        raise TypeError("likelihood: expected a TwistedLikelihood (linear_gaussian_likelihood(...) or "
                        f"tweedie_likelihood(...)), got {type(likelihood).__name__}.")
    num_particles = check_steps(num_particles, name="num_particles")
    steps = check_steps(steps)
    check_nonnegative("ess_threshold", ess_threshold)
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold: expected a number in [0, 1], got {ess_threshold}.")
    check_choice("resampling", resampling, tuple(RESAMPLING))
    data_shape = tuple(int(d) for d in data_shape)
    y = check_float_array("y", y, min_ndim=1)
    ts = time_grid(sde, steps, grid, t_min=t_min)
    resample_fn = RESAMPLING[resampling]
    k_part = num_particles
    dtype = jnp.result_type(float)
    log_k = math.log(k_part)

    def twist(x, t, yi):
        """log p~_t(y | x) [K], its gradient in x, Tweedie's x0_hat (one score call + one vjp)."""
        tb = jnp.full((k_part,), t, dtype)

        def f(z):
            score = score_fn(z, tb)
            if score.shape != z.shape:
                raise ValueError(f"score_fn: expected output shape {z.shape} (the input's), got {score.shape}.")
            x0 = sde.denoise(z, score, tb)
            lp = likelihood.log_twist(z, x0, tb, yi)
            if lp.shape != (k_part,):
                raise ValueError(f"log_twist: expected shape [K] = ({k_part},), got {lp.shape}.")
            return lp, x0

        lp, vjp, x0 = jax.vjp(f, x, has_aux=True)
        (grad,) = vjp(jnp.ones_like(lp))
        return lp, grad, x0

    def propose(key_n, x, grad, x0, t, s):
        """Twisted ancestral step; returns (x_s, log p_theta(x_s|x_t) - log q(x_s|x_t, y))."""
        c0, ct, var = _posterior_coefs(sde, t, s)
        alpha_t, sigma_t = sde.marginal_coefs(t)
        shift = c0 * (sigma_t**2 / alpha_t) * grad  # twisted mean - untwisted mean
        z = jax.random.normal(key_n, x.shape, dtype)
        sd = jnp.sqrt(var)
        x_new = c0 * x0 + ct * x + shift + sd * z
        # log N(x_new; mu, var) - log N(x_new; mu + shift, var), with x_new - mu - shift = sd z
        d = shift.reshape(k_part, -1)
        log_ratio = -jnp.sum(z.reshape(k_part, -1) * d, axis=-1) / sd - 0.5 * jnp.sum(d**2, axis=-1) / var
        return x_new, log_ratio

    def one(key_i, yi):
        x = sde.prior_sample(jax.random.fold_in(key_i, 0), (k_part,) + data_shape, dtype)
        zero = jnp.zeros((k_part,), dtype)

        def body(carry, n):
            # carry: particles at t_n, log-weights up to the proposal into t_n, log p~_{t_{n-1}} (0 at n = 0)
            x, logw, lp_prev, log_z = carry
            t, s = ts[n], ts[n + 1]
            lp, grad, x0 = twist(x, t, yi)
            logw = logw + lp - lp_prev  # completes the incremental weight into t_n (the initial one at n = 0)
            k_res, k_prop = jax.random.split(jax.random.fold_in(key_i, n + 1))
            ess = effective_sample_size(logw)
            do = ess < ess_threshold * k_part
            idx = jnp.where(do, resample_fn(k_res, logw), jnp.arange(k_part))
            log_z = log_z + jnp.where(do, jax.nn.logsumexp(logw) - log_k, 0.0)
            logw = jnp.where(do, zero, logw)
            x, lp, grad, x0 = x[idx], lp[idx], grad[idx], x0[idx]
            x_new, log_ratio = propose(k_prop, x, grad, x0, t, s)
            return (x_new, logw + log_ratio, lp, log_z), (ess, do)

        carry = (x, zero, zero, jnp.zeros((), dtype))
        (x, logw, lp_prev, log_z), (ess, did) = jax.lax.scan(body, carry, jnp.arange(steps))
        # at t_min the twist is replaced by the exact likelihood (no score call there)
        ll = likelihood.log_likelihood(x, yi)
        if ll.shape != (k_part,):
            raise ValueError(f"log_likelihood: expected shape [K] = ({k_part},), got {ll.shape}.")
        logw = logw + ll - lp_prev
        log_evidence = log_z + jax.nn.logsumexp(logw) - log_k
        ess = jnp.concatenate([ess, effective_sample_size(logw)[None]])
        return x, logw, ess, did, log_evidence

    x, logw, ess, did, log_evidence = jax.vmap(one)(example_keys(key, y.shape[0]), y)
    info = {"ess": ess, "resampled": did, "log_evidence": log_evidence, "log_weights": logw, "nfe": steps}
    return x, jax.nn.softmax(logw, axis=-1), info
