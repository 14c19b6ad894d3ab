r"""Score-matching objectives, as pure functions of ``(apply, params, key, data)``.

Every loss takes the model as a plain function ``apply(params, x, t, **apply_kwargs) -> [B, *D]``
(a Linen ``model.apply``, an NNX module via ``nnx.split``/``nnx.merge``, an Equinox
module via ``eqx.partition``/``eqx.combine``, or any closure), its ``params`` (any
pytree), an explicit PRNG ``key`` where the loss is random, and data ``x0: [B, *D]``
(float, at least one data axis). It returns a scalar: the mean over the batch of a
per-example loss. All of them ``jit``, ``vmap`` (over keys, params or data) and ``grad``.

Two families, two conventions (each follows its reference paper / code):

* :func:`explicit_score_matching`: :math:`\tfrac12\|s(x) - \nabla\log p(x)\|^2` (sum over data axes);
* :func:`implicit_score_matching`: :math:`\tfrac12\|s(x)\|^2 + \nabla\cdot s(x)` (Hyvärinen 2005; sum);
* :func:`sliced_score_matching`: :math:`v^\top\nabla_x(v^\top s) + \tfrac12 (v^\top s)^2` (Song et al. 2019; sum);
* :func:`dsm_loss`: :math:`\tfrac12\|\sigma s(x_0+\sigma\varepsilon) + \varepsilon\|^2` (Vincent 2011; sum);
* :func:`multiscale_dsm_loss`: the same with :math:`\sigma` drawn from a ladder (NCSN; sum);
* :func:`continuous_dsm_loss`: :math:`w(t)\|\sigma_t s(x_t,t) + \varepsilon\|^2` (score_sde; mean);
* :func:`eps_loss`: :math:`\|\hat\varepsilon(x_t,t) - \varepsilon\|^2` (DDPM "simple"; mean);
* :func:`x0_loss`: :math:`\|\hat x_0(x_t,t) - x_0\|^2` (mean);
* :func:`v_loss`: :math:`\|\hat v(x_t,t) - v\|^2`, :math:`v=\alpha_t\varepsilon-\sigma_t x_0` (mean);
* :func:`edm_loss`: :math:`\lambda(\sigma)\|D(x_0+\sigma\varepsilon;\sigma) - x_0\|^2` (Karras et al. 2022; mean).

The classical family (first five) carries the :math:`\tfrac12` and sums over data axes,
so :math:`\mathrm{ESM} = \mathrm{ISM} + \text{const}` and :math:`\mathrm{DSM}_\sigma = \mathrm{ESM}_{p_\sigma}
\cdot\sigma^2 + \text{const}` hold with the textbook constants. The diffusion family has
no :math:`\tfrac12` and averages over data axes (score_sde's ``reduce_mean=True``; pass
``reduce_mean=False`` to sum as score_sde's default and EDM do). Every loss takes
``reduce_mean`` to switch.

Noise-free losses (ESM, ISM, SSM, single-sigma DSM) call ``apply(params, x, **kw)``
unless a time / noise input ``t`` is given, in which case ``apply(params, x, t, **kw)``.
Diffusion losses draw :math:`t\sim U(t_{min}, T)` and :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`
from a :mod:`jaxscore.sde` SDE (any object with ``marginal_coefs``, ``diffusion``,
``log_snr``, ``t_from_log_snr``, ``T``, ``t_min``).

Shapes and dtypes are checked when the loss is traced: integer data raise ``TypeError``;
a model output whose shape differs from its input raises ``ValueError`` naming both.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp

from jaxscore._checks import broadcast_to_data, check_batch, check_float_array
from jaxscore.divergence import sample_probes, value_and_exact_divergence, value_and_hutchinson_divergence
from jaxscore.parameterization import edm_denoise, make_score_fn, output_to_score

ApplyFn = Callable[..., jax.Array]
Weighting = Literal["sigma2", "likelihood", "uniform"]
WeightFn = Callable[[Any, jax.Array], jax.Array]  # lambda(sde, t: [B]) -> [B], a user weighting
TimeSampling = Literal["uniform", "importance"]

WEIGHTINGS = ("sigma2", "likelihood", "uniform")
T_SAMPLINGS = ("uniform", "importance")
LOSS_PARAMETERIZATIONS = ("score", "eps", "x0", "v", "edm")

__all__ = [
    "continuous_dsm_loss",
    "dsm_loss",
    "edm_loss",
    "eps_loss",
    "explicit_score_matching",
    "implicit_score_matching",
    "importance_sample_t",
    "multiscale_dsm_loss",
    "sliced_score_matching",
    "v_loss",
    "x0_loss",
]


# --------------------------------------------------------------------------------------
# helpers (trace-time checks, model call, reductions)
# --------------------------------------------------------------------------------------
def _check_data(name: str, x) -> jax.Array:
    x = check_float_array(name, x, min_ndim=1)
    if x.ndim < 2:
        raise ValueError(
            f"{name}: expected shape [B, *D] with at least one data axis (use [B, 1] for scalar data), "
            f"got shape {tuple(x.shape)}."
        )
    return x


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}.")


def _call(apply: ApplyFn, params: Any, x: jax.Array, t, kwargs: dict, *, has_t: bool = True) -> jax.Array:
    """``apply(params, x, t, **kw)`` (or ``apply(params, x, **kw)``), checking the output is float ``x.shape``."""
    out = apply(params, x, t, **kwargs) if has_t else apply(params, x, **kwargs)
    shape = tuple(jnp.shape(out))
    if shape != tuple(x.shape):
        call = "apply(params, x, t)" if has_t else "apply(params, x)"
        raise ValueError(
            f"model output: {call} returned shape {shape}, expected the shape of its input x, "
            f"{tuple(x.shape)} (a score / eps / x0 / v prediction is [B, *D] like x)."
        )
    if not jnp.issubdtype(jnp.result_type(out), jnp.floating):
        raise TypeError(f"model output: expected a floating-point array, got dtype {jnp.result_type(out)}.")
    return out


def _noise_free_model(apply: ApplyFn, params: Any, t, x: jax.Array, kwargs: dict) -> Callable[[jax.Array], jax.Array]:
    """``x -> s(x)``: the model at fixed ``t`` (scalar -> [B]), or without a time input when ``t is None``."""
    if t is None:
        return lambda y: _call(apply, params, y, None, kwargs, has_t=False)
    _, t = check_batch(x, t)  # a scalar t is broadcast to [B]
    return lambda y: _call(apply, params, y, t, kwargs)


def _reduce(values: jax.Array, reduce_mean: bool) -> jax.Array:
    """[B, *D] -> [B]: mean or sum over the data axes."""
    flat = values.reshape(values.shape[0], -1)
    return jnp.mean(flat, axis=-1) if reduce_mean else jnp.sum(flat, axis=-1)


def _per_example_sigma(name: str, sigma, x: jax.Array) -> jax.Array:
    sigma = jnp.asarray(sigma)
    if not jnp.issubdtype(sigma.dtype, jnp.floating):
        sigma = sigma.astype(x.dtype)
    if sigma.ndim == 0:
        sigma = jnp.broadcast_to(sigma, x.shape[:1])
    if sigma.shape != x.shape[:1]:
        raise ValueError(f"{name}: expected a scalar or shape [B] = {tuple(x.shape[:1])}, got shape {tuple(sigma.shape)}.")
    return sigma


def _time_range(sde, t_min) -> tuple[float, float]:
    lo = sde.t_min if t_min is None else t_min
    if not (isinstance(lo, jax.core.Tracer) or 0 <= float(lo) < float(sde.T)):
        raise ValueError(f"t_min: expected 0 <= t_min < T = {sde.T}, got {lo}.")
    return lo, sde.T


def _sample_xt(key: jax.Array, x0: jax.Array, sde, t_lo, t_hi, num_timesteps: int | None = None):
    """t ~ U(t_lo, t_hi) [B] and x_t = alpha_t x0 + sigma_t eps. Shared so equal keys give equal draws.

    With ``num_timesteps`` N: integer timesteps, t = i T / N with i ~ U{1..N} (DDPM's discrete chain,
    :class:`jaxscore.sde.DiscreteVPSDE`); ``t_lo`` / ``t_hi`` are then unused."""
    k_t, k_eps = jax.random.split(key)
    if num_timesteps is not None:
        n = int(num_timesteps)
        if n < 1:
            raise ValueError(f"num_timesteps: expected an integer >= 1 (the chain's N), got {num_timesteps}.")
        i = jax.random.randint(k_t, x0.shape[:1], 1, n + 1)
        t = (i.astype(x0.dtype) * (float(sde.T) / n)).astype(x0.dtype)
        x_t, eps = sde.marginal_sample(k_eps, x0, t)
        return t, x_t, eps
    t = jax.random.uniform(k_t, x0.shape[:1], x0.dtype, minval=t_lo, maxval=t_hi)
    x_t, eps = sde.marginal_sample(k_eps, x0, t)
    return t, x_t, eps


# --------------------------------------------------------------------------------------
# Classical score matching (no diffusion)
# --------------------------------------------------------------------------------------
def explicit_score_matching(
    apply: ApplyFn,
    params: Any,
    x: jax.Array,
    true_score: Callable[[jax.Array], jax.Array] | jax.Array,
    *,
    t=None,
    reduce_mean: bool = False,
    **apply_kwargs,
) -> jax.Array:
    r"""Explicit score matching :math:`\mathbb E_x\,\tfrac12\|s_\theta(x) - \nabla_x\log p(x)\|^2`.

    Args:
      apply: ``apply(params, x[, t], **kw) -> [B, *D]``, the score model.
      x: data ``[B, *D]`` drawn from p.
      true_score: ``true_score(x) -> [B, *D]`` or the array of scores at ``x``.
      t: optional time / noise input passed to the model (scalar or ``[B]``); ``None`` calls ``apply(params, x)``.
      reduce_mean: average over data axes instead of summing.
    Returns: scalar, the mean over the batch.
    """
    x = _check_data("x", x)
    s = _noise_free_model(apply, params, t, x, apply_kwargs)(x)
    target = true_score(x) if callable(true_score) else jnp.asarray(true_score)
    if tuple(jnp.shape(target)) != tuple(x.shape):
        raise ValueError(f"true_score: expected shape {tuple(x.shape)} (the shape of x), got {tuple(jnp.shape(target))}.")
    return jnp.mean(0.5 * _reduce((s - target) ** 2, reduce_mean))


def implicit_score_matching(
    apply: ApplyFn,
    params: Any,
    x: jax.Array,
    *,
    divergence: Literal["exact", "hutchinson"] = "exact",
    key: jax.Array | None = None,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    num_probes: int = 1,
    chunk_size: int | None = None,
    t=None,
    reduce_mean: bool = False,
    **apply_kwargs,
) -> jax.Array:
    r"""Implicit (Hyvärinen 2005) score matching :math:`\mathbb E_x[\tfrac12\|s_\theta(x)\|^2 + \nabla_x\cdot s_\theta(x)]`.

    Equals :func:`explicit_score_matching` minus :math:`\tfrac12\mathbb E\|\nabla\log p\|^2` (a constant
    in :math:`\theta`) by integration by parts, without knowing p.

    ``divergence="exact"`` takes the Jacobian trace with d forward-mode JVPs (``chunk_size`` at a time,
    :func:`jaxscore.divergence.value_and_exact_divergence`); ``"hutchinson"`` uses
    :math:`\mathbb E_v[v^\top J v]` with ``num_probes`` probes of kind ``probe`` drawn from ``key``
    (one JVP each; unbiased). x: ``[B, *D]``; returns a scalar (mean over the batch).
    """
    x = _check_data("x", x)
    _check_choice("divergence", divergence, ("exact", "hutchinson"))
    fn = _noise_free_model(apply, params, t, x, apply_kwargs)
    if divergence == "exact":
        s, div = value_and_exact_divergence(fn, x, chunk_size=chunk_size)
    else:
        if key is None:
            raise ValueError("implicit_score_matching: divergence='hutchinson' needs a PRNG key (key=...).")
        _check_choice("probe", probe, ("rademacher", "gaussian"))
        if int(num_probes) < 1:
            raise ValueError(f"num_probes: expected a positive integer, got {num_probes}.")
        probes = sample_probes(key, x.shape, kind=probe, num_probes=int(num_probes), dtype=x.dtype)
        s, div = value_and_hutchinson_divergence(fn, x, probes)
    d = math.prod(x.shape[1:])
    per = 0.5 * jnp.sum(s.reshape(x.shape[0], -1) ** 2, axis=-1) + div
    return jnp.mean(per / d if reduce_mean else per)


def sliced_score_matching(
    apply: ApplyFn,
    params: Any,
    key: jax.Array,
    x: jax.Array,
    *,
    num_projections: int = 1,
    variance_reduced: bool = False,
    probe: Literal["rademacher", "gaussian"] = "rademacher",
    t=None,
    reduce_mean: bool = False,
    **apply_kwargs,
) -> jax.Array:
    r"""Sliced score matching (Song et al. 2019) with random projections :math:`v`, :math:`\mathbb E[vv^\top]=I`:

    .. math:: \mathbb E_x \mathbb E_v\big[v^\top\nabla_x(v^\top s_\theta(x)) + \tfrac12 (v^\top s_\theta(x))^2\big]

    and, with ``variance_reduced=True`` (SSM-VR), :math:`\mathbb E_x\mathbb E_v[v^\top\nabla_x(v^\top s_\theta)]
    + \tfrac12\|s_\theta(x)\|^2`. Both equal :func:`implicit_score_matching` in expectation over v.
    :math:`v^\top\nabla_x(v^\top s) = v^\top J v` is one forward-mode JVP per projection;
    ``num_projections`` projections (``probe``: ``"rademacher"`` or ``"gaussian"``) are averaged.
    x: ``[B, *D]``; returns a scalar (mean over the batch).
    """
    x = _check_data("x", x)
    _check_choice("probe", probe, ("rademacher", "gaussian"))
    if int(num_projections) < 1:
        raise ValueError(f"num_projections: expected a positive integer, got {num_projections}.")
    fn = _noise_free_model(apply, params, t, x, apply_kwargs)
    probes = sample_probes(key, x.shape, kind=probe, num_probes=int(num_projections), dtype=x.dtype)
    batch = x.shape[0]

    def one(v):
        s, jv = jax.jvp(fn, (x,), (v,))
        vjv = jnp.sum((v * jv).reshape(batch, -1), axis=-1)
        vs = jnp.sum((v * s).reshape(batch, -1), axis=-1)
        return s, vjv, vs

    s, vjv, vs = jax.vmap(one)(probes)  # [P, B, *D], [P, B], [P, B]
    if variance_reduced:
        per = jnp.mean(vjv, axis=0) + 0.5 * jnp.sum(s[0].reshape(batch, -1) ** 2, axis=-1)
    else:
        per = jnp.mean(vjv + 0.5 * vs**2, axis=0)
    d = math.prod(x.shape[1:])
    return jnp.mean(per / d if reduce_mean else per)


# --------------------------------------------------------------------------------------
# Denoising score matching (fixed noise levels)
# --------------------------------------------------------------------------------------
def dsm_loss(
    apply: ApplyFn,
    params: Any,
    key: jax.Array,
    x0: jax.Array,
    sigma,
    *,
    t=None,
    reduce_mean: bool = False,
    **apply_kwargs,
) -> jax.Array:
    r"""Single-noise-level denoising score matching (Vincent 2011).

    With :math:`\tilde x = x_0 + \sigma\varepsilon`, :math:`\varepsilon\sim N(0, I)`:

    .. math:: \mathbb E\,\tfrac12\|\sigma s_\theta(\tilde x) + \varepsilon\|^2
              = \sigma^2\;\mathbb E\,\tfrac12\big\|s_\theta(\tilde x) + \varepsilon/\sigma\big\|^2 ,

    i.e. Vincent's :math:`\tfrac12\|s_\theta(\tilde x) - \nabla_{\tilde x}\log q_\sigma(\tilde x|x_0)\|^2`
    weighted by :math:`\sigma^2` (so the loss stays O(d) as :math:`\sigma\to0`). Its minimiser is the
    score of :math:`p_\sigma = p * N(0,\sigma^2 I)`.

    ``sigma``: scalar or ``[B]``. ``t``: optional noise input for the model (e.g. ``t=sigma``);
    ``None`` calls ``apply(params, x)``. x0: ``[B, *D]``; returns a scalar.
    """
    x0 = _check_data("x0", x0)
    sigma = _per_example_sigma("sigma", sigma, x0)
    eps = jax.random.normal(key, x0.shape, x0.dtype)
    sig = broadcast_to_data(sigma, x0)
    x_noisy = x0 + sig * eps
    s = _noise_free_model(apply, params, t, x0, apply_kwargs)(x_noisy)
    return jnp.mean(0.5 * _reduce((sig * s + eps) ** 2, reduce_mean))


def multiscale_dsm_loss(
    apply: ApplyFn,
    params: Any,
    key: jax.Array,
    x0: jax.Array,
    sigmas,
    *,
    noise_input: Literal["sigma", "index"] = "sigma",
    anneal_power: float = 2.0,
    reduce_mean: bool = False,
    **apply_kwargs,
) -> jax.Array:
    r"""Multi-scale DSM of NCSN (Song & Ermon 2019): one noise level per example, uniformly from a ladder.

    .. math:: \mathbb E_{i\sim U\{0..L-1\}}\,\mathbb E\;\tfrac12\,\sigma_i^{p}\,
              \big\|s_\theta(x_0+\sigma_i\varepsilon, \cdot) + \varepsilon/\sigma_i\big\|^2,

    with :math:`\lambda(\sigma)=\sigma^p`, ``anneal_power`` p = 2 by default (then the term is
    :math:`\tfrac12\|\sigma_i s_\theta + \varepsilon\|^2`).

    The model is called as ``apply(params, x_noisy, c)`` with ``c = sigmas[i]`` (float ``[B]``) for
    ``noise_input="sigma"`` or ``c = i`` (int32 ``[B]``, for an embedding table) for ``"index"``.
    ``sigmas``: ``[L]`` float. x0: ``[B, *D]``; returns a scalar.
    """
    x0 = _check_data("x0", x0)
    sigmas = check_float_array("sigmas", sigmas, min_ndim=1)
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas: expected a 1-D ladder [L], got shape {tuple(sigmas.shape)}.")
    _check_choice("noise_input", noise_input, ("sigma", "index"))
    k_idx, k_eps = jax.random.split(key)
    idx = jax.random.randint(k_idx, x0.shape[:1], 0, sigmas.shape[0])
    sigma = sigmas[idx].astype(x0.dtype)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    sig = broadcast_to_data(sigma, x0)
    x_noisy = x0 + sig * eps
    c = sigma if noise_input == "sigma" else idx.astype(jnp.int32)
    s = _call(apply, params, x_noisy, c, apply_kwargs)
    per = 0.5 * _reduce((sig * s + eps) ** 2, reduce_mean)
    if anneal_power != 2.0:
        per = per * sigma ** (anneal_power - 2.0)
    return jnp.mean(per)


# --------------------------------------------------------------------------------------
# Continuous-time (SDE) objectives
# --------------------------------------------------------------------------------------
def importance_sample_t(
    key: jax.Array, sde, num: int, *, t_min=None, dtype=jnp.float32
) -> tuple[jax.Array, jax.Array]:
    r"""Draw ``num`` times from :math:`q(t) \propto g(t)^2/\sigma_t^2` on :math:`[t_{min}, T]`; return ``(t, q(t))``.

    For a linear SDE :math:`g^2/\sigma_t^2 = -\tfrac{d}{dt}\lambda_t` with :math:`\lambda_t = \log(\alpha_t^2/\sigma_t^2)`,
    so :math:`q(t) = g^2/(\sigma_t^2 Z)` with :math:`Z = \lambda_{t_{min}} - \lambda_T` and the inverse CDF is
    ``t = sde.t_from_log_snr(lambda_{t_min} - u Z)``, :math:`u\sim U(0,1)` (Song et al. 2021,
    "Maximum likelihood training of score-based diffusion models"). The importance weight of a
    uniform-in-t expectation is :math:`1/((T-t_{min})\,q(t))`.
    """
    t_lo, t_hi = _time_range(sde, t_min)
    lam_hi = sde.log_snr(jnp.asarray(t_lo, dtype))
    lam_lo = sde.log_snr(jnp.asarray(t_hi, dtype))
    z = lam_hi - lam_lo
    u = jax.random.uniform(key, (num,), dtype)
    t = jnp.clip(sde.t_from_log_snr(lam_hi - u * z), t_lo, t_hi).astype(dtype)
    _, sigma = sde.marginal_coefs(t)
    return t, sde.diffusion(t) ** 2 / (sigma**2 * z)


def _model_score(apply, params, x_t, t, sde, parameterization, sigma_data, apply_kwargs):
    checked = lambda p, x, c, **kw: _call(apply, p, x, c, kw)  # noqa: E731
    if parameterization == "edm":
        return make_score_fn(checked, params, sde, "edm", sigma_data=sigma_data, **apply_kwargs)(x_t, t)
    return output_to_score(checked(params, x_t, t, **apply_kwargs), x_t, t, sde, parameterization)


def continuous_dsm_loss(
    apply: ApplyFn,
    params: Any,
    key: jax.Array,
    x0: jax.Array,
    sde,
    *,
    parameterization: Literal["score", "eps", "x0", "v", "edm"] = "score",
    weighting: Weighting | WeightFn = "sigma2",
    t_sampling: TimeSampling = "uniform",
    t_min=None,
    reduce_mean: bool = True,
    sigma_data: float = 0.5,
    **apply_kwargs,
) -> jax.Array:
    r"""Continuous-time denoising score matching (Song et al. 2021, score_sde's ``get_sde_loss_fn``).

    .. math:: \mathcal L = \mathbb E_{t\sim U(t_{min},T)}\;\lambda(t)\;\mathbb E_{x_0,\varepsilon}
              \big\|s_\theta(x_t, t) + \varepsilon/\sigma_t\big\|^2,\qquad x_t=\alpha_t x_0+\sigma_t\varepsilon ,

    computed as :math:`(\lambda(t)/\sigma_t^2)\,\|\sigma_t s_\theta + \varepsilon\|^2`. Weightings:

    * ``"sigma2"``: :math:`\lambda=\sigma_t^2`, the term :math:`\|\sigma_t s_\theta + \varepsilon\|^2`
      (with ``parameterization="eps"`` exactly DDPM's :math:`\|\hat\varepsilon - \varepsilon\|^2`);
    * ``"likelihood"``: :math:`\lambda=g(t)^2`; then :math:`\tfrac12(T-t_{min})\mathcal L` is, up to a
      constant in :math:`\theta`, the score-matching term of the KL / NLL bound (Song et al. 2021,
      "Maximum likelihood training");
    * ``"uniform"``: :math:`\lambda = 1`;
    * a function ``weighting(sde, t) -> [B]`` giving :math:`\lambda(t)` itself (e.g.
      ``lambda sde, t: 1 / sde.marginal_coefs(t)[1] ** 2`` for :math:`\lambda = 1/\sigma_t^2`); it must be
      positive where t is drawn. In the :math:`\varepsilon` form the term is
      :math:`(\lambda(t)/\sigma_t^2)\|\hat\varepsilon - \varepsilon\|^2`.

    ``t_sampling="importance"`` draws t from :math:`q \propto g^2/\sigma_t^2`
    (:func:`importance_sample_t`) and multiplies by :math:`1/((T-t_{min}) q(t))`, so the expectation
    is the *same* :math:`\mathcal L`; with likelihood weighting the per-example term becomes
    :math:`\tfrac{Z}{T-t_{min}}\|\sigma_t s_\theta+\varepsilon\|^2` (low variance).

    The network's output is turned into a score with
    :func:`jaxscore.parameterization.output_to_score` (``"score"``, ``"eps"``, ``"x0"``, ``"v"``) or,
    for ``"edm"``, EDM preconditioning on :math:`\tilde x = x/\alpha_t` at :math:`\sigma_t/\alpha_t`.
    ``reduce_mean=True`` averages the squared error over data axes; ``False`` sums (score_sde's default).
    ``t_min`` defaults to ``sde.t_min``. ``apply_kwargs`` (labels, ``rngs=``) pass through.
    x0: ``[B, *D]``; returns a scalar.
    """
    x0 = _check_data("x0", x0)
    _check_choice("parameterization", parameterization, LOSS_PARAMETERIZATIONS)
    if not callable(weighting):
        _check_choice("weighting", weighting, WEIGHTINGS)
    _check_choice("t_sampling", t_sampling, T_SAMPLINGS)
    t_lo, t_hi = _time_range(sde, t_min)
    if t_sampling == "uniform":
        t, x_t, eps = _sample_xt(key, x0, sde, t_lo, t_hi)
    else:
        k_t, k_eps = jax.random.split(key)
        t, _ = importance_sample_t(k_t, sde, x0.shape[0], t_min=t_lo, dtype=x0.dtype)
        x_t, eps = sde.marginal_sample(k_eps, x0, t)
    _, sigma = sde.marginal_coefs(t)
    score = _model_score(apply, params, x_t, t, sde, parameterization, sigma_data, apply_kwargs)
    base = _reduce((broadcast_to_data(sigma, x0) * score + eps) ** 2, reduce_mean)  # ||sigma s + eps||^2

    # factor = lambda(t) / sigma^2  (uniform t)   or   lambda(t) Z / (g^2 (T - t_min))  (importance)
    if callable(weighting):
        lam = jnp.asarray(weighting(sde, t), sigma.dtype)
        if lam.shape not in ((), sigma.shape):
            raise ValueError(f"weighting: a weighting function must return lambda(t) of shape [B] = {sigma.shape} "
                             f"(or a scalar), got shape {lam.shape}.")
        if t_sampling == "uniform":
            factor = lam / sigma**2
        else:
            z = sde.log_snr(jnp.asarray(t_lo, x0.dtype)) - sde.log_snr(jnp.asarray(t_hi, x0.dtype))
            factor = (z / (t_hi - t_lo)) * lam / sde.diffusion(t) ** 2
    elif t_sampling == "uniform":
        if weighting == "sigma2":
            factor = jnp.ones_like(sigma)
        elif weighting == "likelihood":
            factor = sde.diffusion(t) ** 2 / sigma**2
        else:
            factor = 1.0 / sigma**2
    else:
        z = sde.log_snr(jnp.asarray(t_lo, x0.dtype)) - sde.log_snr(jnp.asarray(t_hi, x0.dtype))
        scale = z / (t_hi - t_lo)
        if weighting == "likelihood":
            factor = jnp.full_like(sigma, scale)
        else:
            lam = sigma**2 if weighting == "sigma2" else jnp.ones_like(sigma)
            factor = scale * lam / sde.diffusion(t) ** 2
    return jnp.mean(factor * base)


def eps_loss(
    apply: ApplyFn, params: Any, key: jax.Array, x0: jax.Array, sde, *, t_min=None, reduce_mean: bool = True,
    num_timesteps: int | None = None, **apply_kwargs,
) -> jax.Array:
    r"""DDPM's "simple" objective :math:`\mathbb E_{t\sim U(t_{min},T)}\|\hat\varepsilon_\theta(x_t,t) - \varepsilon\|^2`.

    :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`. Equal (same key) to :func:`continuous_dsm_loss` with
    ``parameterization="eps", weighting="sigma2"``. x0: ``[B, *D]``; returns a scalar.

    ``num_timesteps`` N (also for :func:`x0_loss`, :func:`v_loss`): integer timesteps
    :math:`t = iT/N`, :math:`i\sim U\{1..N\}` instead of :math:`t\sim U(t_{min}, T)` — Ho et al.'s
    :math:`L_{simple}` on a discrete chain (:class:`jaxscore.sde.DiscreteVPSDE`).
    """
    x0 = _check_data("x0", x0)
    t, x_t, eps = _sample_xt(key, x0, sde, *_time_range(sde, t_min), num_timesteps)
    out = _call(apply, params, x_t, t, apply_kwargs)
    return jnp.mean(_reduce((out - eps) ** 2, reduce_mean))


def x0_loss(
    apply: ApplyFn, params: Any, key: jax.Array, x0: jax.Array, sde, *, t_min=None, reduce_mean: bool = True,
    num_timesteps: int | None = None, **apply_kwargs,
) -> jax.Array:
    r"""Data-prediction objective :math:`\mathbb E_{t\sim U(t_{min},T)}\|\hat x_{0,\theta}(x_t,t) - x_0\|^2`
    (equal to score matching with :math:`\lambda = \sigma_t^4/\alpha_t^2`). x0: ``[B, *D]``; returns a scalar."""
    x0 = _check_data("x0", x0)
    t, x_t, _ = _sample_xt(key, x0, sde, *_time_range(sde, t_min), num_timesteps)
    out = _call(apply, params, x_t, t, apply_kwargs)
    return jnp.mean(_reduce((out - x0) ** 2, reduce_mean))


def v_loss(
    apply: ApplyFn, params: Any, key: jax.Array, x0: jax.Array, sde, *, t_min=None, reduce_mean: bool = True,
    num_timesteps: int | None = None, **apply_kwargs,
) -> jax.Array:
    r"""v-prediction objective (Salimans & Ho 2022) :math:`\mathbb E_{t\sim U(t_{min},T)}\|\hat v_\theta(x_t,t) - v\|^2`,
    :math:`v = \alpha_t\varepsilon - \sigma_t x_0`. x0: ``[B, *D]``; returns a scalar."""
    x0 = _check_data("x0", x0)
    t, x_t, eps = _sample_xt(key, x0, sde, *_time_range(sde, t_min), num_timesteps)
    alpha, sigma = sde.marginal_coefs(t)
    v = broadcast_to_data(alpha, x0) * eps - broadcast_to_data(sigma, x0) * x0
    out = _call(apply, params, x_t, t, apply_kwargs)
    return jnp.mean(_reduce((out - v) ** 2, reduce_mean))


def edm_loss(
    apply: ApplyFn,
    params: Any,
    key: jax.Array,
    x0: jax.Array,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    reduce_mean: bool = True,
    **apply_kwargs,
) -> jax.Array:
    r"""EDM training loss (Karras et al. 2022, Table 1 / Eq. 8):

    .. math:: \mathbb E_{\ln\sigma\sim N(P_{mean},P_{std}^2)}\,\mathbb E_{x_0,\varepsilon}\;
              \lambda(\sigma)\,\|D_\theta(x_0+\sigma\varepsilon;\sigma) - x_0\|^2,\qquad
              \lambda(\sigma) = \frac{\sigma^2+\sigma_d^2}{(\sigma\sigma_d)^2},

    with :math:`D_\theta(x;\sigma) = c_{skip}x + c_{out}F_\theta(c_{in}x, c_{noise})`
    (:func:`jaxscore.parameterization.edm_denoise`); the network is called as
    ``apply(params, c_in * x, c_noise, **kw)`` with :math:`c_{noise} = \tfrac14\ln\sigma` as its ``t``.
    :math:`\lambda c_{out}^2 = 1`, so this is :math:`\|F_\theta - F_{target}\|^2` with unit-variance targets
    when the data have std :math:`\sigma_d`. ``reduce_mean=False`` sums over data axes as EDM's code does.
    x0: ``[B, *D]`` (data scaled so its std is about ``sigma_data``); returns a scalar.
    """
    x0 = _check_data("x0", x0)
    k_sigma, k_eps = jax.random.split(key)
    sigma = jnp.exp(p_mean + p_std * jax.random.normal(k_sigma, x0.shape[:1], x0.dtype))
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    x_noisy = x0 + broadcast_to_data(sigma, x0) * eps
    checked = lambda p, x, c, **kw: _call(apply, p, x, c, kw)  # noqa: E731
    denoised = edm_denoise(checked, params, x_noisy, sigma, sigma_data, **apply_kwargs)
    weight = (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
    return jnp.mean(weight * _reduce((denoised - x0) ** 2, reduce_mean))
