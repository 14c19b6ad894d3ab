r"""Guided and conditional scores, and SDEdit.

Every guide returns a new ``score_fn(x: [B, *D], t: [B]) -> [B, *D]``, so every sampler and the
likelihood run on it unchanged (the one contract of the package). Notation: the forward SDE has marginals
:math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon`; :math:`s(x, t)` is the unconditional score and
:math:`\hat x_0(x_t) = (x_t + \sigma_t^2 s(x_t, t))/\alpha_t` Tweedie's posterior mean.

Conditional generation

* :func:`drop_labels`: label dropout while training, so one network is both conditional and
  unconditional (the null label).
* :func:`with_labels` binds class labels: :math:`s(x, t \mid y)`.
* :func:`classifier_free` (Ho & Salimans 2022):
  :math:`\tilde s = s(x,t\mid\varnothing) + \gamma\,[s(x,t\mid y) - s(x,t\mid\varnothing)]`,
  one network call on the doubled batch; :math:`\gamma = 1` is the conditional model,
  :math:`\gamma = 1 + w` is Ho & Salimans' weight :math:`w`.
* :func:`classifier_guidance` (Dhariwal & Nichol 2021; score_sde):
  :math:`\tilde s = s(x, t) + \gamma\,\nabla_x \log p_t(y \mid x)`; with an exact classifier and
  :math:`\gamma = 1` this is the exact conditional score :math:`\nabla_x \log p_t(x \mid y)`.

Linear inverse problems :math:`y = A x_0 + n`, :math:`n \sim N(0, \sigma_y^2 I)`
(inpainting: :func:`mask_operator`; colorization: :func:`grayscale_operator`; any linear
``forward``). The posterior score is :math:`s(x_t, t) + \nabla_{x_t} \log p_t(y \mid x_t)`; the
likelihood term is approximated from :math:`\hat x_0`:

* :func:`pigdm` (Song et al. 2023, ΠGDM):
  :math:`p_t(y\mid x_t) \approx N(y;\, A\hat x_0,\; \sigma_y^2 I + r_t^2 A A^\top)` with
  :math:`r_t^2 = v\sigma_t^2/(\alpha_t^2 v + \sigma_t^2)` (:math:`v` = ``data_var``), so
  :math:`\nabla_{x_t}\log p_t(y\mid x_t) = (\partial \hat x_0/\partial x_t)^\top A^\top
  (\sigma_y^2 I + r_t^2 A A^\top)^{-1}(y - A\hat x_0)`. Exact when the prior is
  :math:`N(\mu, vI)` (then :math:`p(x_0 \mid x_t)` is Gaussian with covariance :math:`r_t^2 I`);
  needs :math:`A A^\top` diagonal (``aat``: masks, channel averaging, subsampling).
* :func:`dps` (Chung et al. 2023, DPS, Gaussian-likelihood form):
  :math:`\nabla_{x_t}\log p_t(y\mid x_t) \approx -\tfrac{\gamma}{2\sigma_y^2}\nabla_{x_t}
  \|y - A\hat x_0(x_t)\|^2`: any differentiable ``forward``; it drops the :math:`r_t^2`
  covariance, so it over-weights the data early (large t); exact as :math:`t \to 0`.

Both differentiate through ``score_fn`` (one ``jax.vjp`` per evaluation: about 2-3x the cost
of the score call alone).

Editing: :func:`sdedit` (Meng et al. 2022) diffuses a guide image to :math:`t_0` and runs a
sampler from there.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxscore._checks import (
    broadcast_to_data,
    check_batch,
    check_broadcasts_to,
    check_finite_number,
    check_key,
    check_nonnegative,
    check_positive,
)
from jaxscore._keys import example_keys

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
LabeledScoreFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
LinearOp = Callable[[jax.Array], jax.Array]

__all__ = [
    "classifier_free",
    "classifier_guidance",
    "dps",
    "drop_labels",
    "grayscale_operator",
    "mask_operator",
    "pigdm",
    "sdedit",
    "with_labels",
]


def _labels_for(labels, x: jax.Array) -> jax.Array:
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels: expected integer class indices, got dtype {labels.dtype}.")
    if labels.ndim == 0:
        labels = jnp.broadcast_to(labels, x.shape[:1])
    if labels.shape != x.shape[:1]:
        raise ValueError(f"labels: expected a scalar or shape [B] = {tuple(x.shape[:1])}, got {tuple(labels.shape)}.")
    return labels


def drop_labels(key, labels, *, rate: float, null_label: int) -> jax.Array:
    r"""Label dropout for classifier-free guidance training: each label independently becomes
    ``null_label`` with probability ``rate`` (Ho & Salimans use 0.1-0.2), so one network learns
    both :math:`s(x, t \mid y)` and :math:`s(x, t \mid \varnothing)`. labels: [B] ints -> [B]."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate: expected 0 <= rate < 1, got {rate}.")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels: expected integer class indices, got dtype {labels.dtype}.")
    drop = jax.random.bernoulli(key, rate, labels.shape)
    return jnp.where(drop, jnp.asarray(null_label, labels.dtype), labels)


def with_labels(score_fn_labels: LabeledScoreFn, labels) -> ScoreFn:
    r"""``score_fn(x, t) = score_fn_labels(x, t, labels)``: the class-conditional score
    :math:`s(x, t \mid y)`. ``labels``: scalar int (every example) or [B] ints."""

    def score_fn(x, t):
        x, t = check_batch(x, t)
        return score_fn_labels(x, t, _labels_for(labels, x))

    return score_fn


def classifier_free(score_fn_labels: LabeledScoreFn, labels, *, null_label: int, scale: float) -> ScoreFn:
    r"""Classifier-free guidance: :math:`s_\varnothing + \gamma (s_y - s_\varnothing)`,
    :math:`\gamma` = ``scale``.

    ``score_fn_labels(x, t, labels)`` is one network trained with label dropout (the bundled
    models take ``labels=`` and use ``num_classes`` as the null label). Both terms come from one
    call on the doubled batch ``[x; x]`` with labels ``[y; null]`` (one network launch, as in
    Ho & Salimans). ``labels``: scalar or [B] ints. ``scale`` must be finite.
    """
    check_finite_number("scale", scale)

    def score_fn(x, t):
        x, t = check_batch(x, t)
        y = _labels_for(labels, x)
        both = score_fn_labels(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                               jnp.concatenate([y, jnp.full_like(y, null_label)]))
        cond, uncond = both[: x.shape[0]], both[x.shape[0]:]
        return uncond + scale * (cond - uncond)

    return score_fn


def _grad_per_example(fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> jax.Array:
    """:math:`\\nabla_x \\sum_i f_i(x)` for ``f: [B, *D] -> [B]`` whose rows depend only on their own
    example (then the gradient of the sum is every row's own gradient)."""
    return jax.grad(lambda z: jnp.sum(fn(z)))(x)


def classifier_guidance(score_fn: ScoreFn, log_likelihood_fn: Callable[[jax.Array, jax.Array], jax.Array], *,
                        scale: float = 1.0) -> ScoreFn:
    r""":math:`s(x, t) + \gamma\,\nabla_x \log p_t(y \mid x)`.

    ``log_likelihood_fn(x, t) -> [B]`` is :math:`\log p_t(y \mid x)` of each example for the
    wanted class (e.g. a noise-conditional classifier's log-softmax at ``y``); its gradient is
    taken per example. ``scale`` must be finite.
    """
    check_finite_number("scale", scale)

    def guided(x, t):
        x, t = check_batch(x, t)

        def log_lik(z):
            out = log_likelihood_fn(z, t)
            if out.shape != x.shape[:1]:
                raise ValueError(f"log_likelihood_fn: expected shape [B] = {tuple(x.shape[:1])}, got {tuple(out.shape)}.")
            return out

        return score_fn(x, t) + scale * _grad_per_example(log_lik, x)

    return guided


# --- linear inverse problems ----------------------------------------------------------------

def mask_operator(mask) -> tuple[LinearOp, jax.Array]:
    """Inpainting: ``A x = mask * x`` (``mask`` broadcastable to one example, e.g. ``[H, W, 1]`` for
    ``[B, H, W, C]`` images, or to the batch ``[B, *D]``; 1 = observed). Returns ``(forward, aat)``
    with ``aat = mask**2`` (:math:`AA^\\top` is diagonal). ``forward(x)`` raises ``ValueError`` at trace
    time when ``mask`` does not broadcast to ``x``'s shape (a mask made for other data)."""
    mask = jnp.asarray(mask, jnp.float32)

    def forward(x):
        check_broadcasts_to("mask", mask.shape, x.shape,
                            hint=" (the data's shape [B, *D]; a mask of one example's shape, e.g. [H, W, 1] for "
                                 "[B, H, W, C] images, broadcasts)")
        return x * mask.astype(x.dtype)

    return forward, mask**2


def grayscale_operator(channels: int = 3) -> tuple[LinearOp, float]:
    """Colorization: ``A x`` = the channel mean of NHWC images, ``[B, H, W, C] -> [B, H, W, 1]``.
    Returns ``(forward, aat)`` with :math:`AA^\\top = I / C`."""

    def forward(x):
        if x.shape[-1] != channels:
            raise ValueError(f"grayscale_operator: expected {channels} channels on the last axis, got shape {x.shape}.")
        return jnp.mean(x, axis=-1, keepdims=True)

    return forward, 1.0 / channels


def _denoiser(score_fn: ScoreFn, sde, t: jax.Array) -> Callable:
    """``x -> (x0_hat, score)``: Tweedie's mean with the score as auxiliary output (for ``jax.vjp``)."""

    def f(x):
        s = score_fn(x, t)
        return sde.denoise(x, s, t), s

    return f


def _check_observation(forward: LinearOp, x: jax.Array, y: jax.Array) -> jax.Array:
    y = jnp.asarray(y, x.dtype)
    expected = jax.eval_shape(forward, x).shape
    if y.shape != expected:
        raise ValueError(f"y: expected shape {expected} (forward(x) for x of shape {x.shape}), got {y.shape}.")
    return y


def _linear_posterior_score(score_fn: ScoreFn, sde, forward: LinearOp, y, scale: float, likelihood_cov) -> ScoreFn:
    r""":math:`s + \gamma\,(\partial \hat x_0/\partial x_t)^\top A^\top C_t^{-1}(y - A\hat x_0)` with the
    diagonal :math:`C_t` = ``likelihood_cov(alpha, sigma, A x0_hat)`` (broadcastable to ``y``).

    An entry with :math:`(C_t)_{ii} = 0` contributes 0: with ΠGDM's ``noise_std = 0`` that is an
    entry with :math:`(AA^\top)_{ii} = 0`, a zero row of :math:`A` (an unobserved pixel of a mask),
    which :math:`A^\top` maps to 0 anyway (dividing would give 0/0 = NaN there)."""

    def guided(x, t):
        x, t = check_batch(x, t)
        yy = _check_observation(forward, x, y)
        alpha, sigma = sde.marginal_coefs(t)
        x0, vjp_denoiser, score = jax.vjp(_denoiser(score_fn, sde, t), x, has_aux=True)
        ax0, vjp_forward = jax.vjp(forward, x0)
        cov = likelihood_cov(alpha, sigma, ax0)
        (g0,) = vjp_forward(jnp.where(cov > 0, (yy - ax0) / jnp.where(cov > 0, cov, 1.0), 0.0))
        (g,) = vjp_denoiser(g0)
        return score + scale * g

    return guided


def pigdm(score_fn: ScoreFn, sde, forward: LinearOp, y, *, noise_std: float, aat=1.0, data_var: float = 1.0,
          scale: float = 1.0) -> ScoreFn:
    r"""ΠGDM posterior score for :math:`y = A x_0 + N(0, \sigma_y^2 I)` (see the module docstring).

    ``forward``: ``x [B, *D] -> A x [B, *M]`` (linear, per example); ``y``: [B, *M];
    ``noise_std``: :math:`\sigma_y` (>= 0; 0 is the noiseless limit, defined for ``t > 0`` where
    :math:`r_t^2 > 0`, masks included);
    ``aat``: the diagonal of :math:`AA^\top`, broadcastable to ``y`` (``mask_operator`` and
    ``grayscale_operator`` return it); ``data_var``: :math:`v`, the prior variance per
    dimension in :math:`r_t^2` (1 for data scaled to unit variance, ~0.25 for images in [-1, 1]);
    ``scale``: a multiplier on the likelihood term (1 = the ΠGDM posterior).
    Refused: ``noise_std < 0``, ``data_var <= 0``, a non-finite ``scale``, and (at trace time) an
    ``aat`` that does not broadcast to ``A x``'s shape.
    """
    check_nonnegative("noise_std", noise_std, why=" (sigma_y, the observation noise's standard deviation)")
    check_positive("data_var", data_var, why=" (the prior variance per dimension in r_t^2)")
    check_finite_number("scale", scale)

    def likelihood_cov(alpha, sigma, ax0):  # sigma_y^2 + r_t^2 diag(A A^T)
        check_broadcasts_to("aat", jnp.shape(aat), ax0.shape,
                            hint=" (A x's shape; aat is the diagonal of A A^T, e.g. the mask_operator's for this data)")
        r2 = data_var * sigma**2 / (alpha**2 * data_var + sigma**2)
        return noise_std**2 + broadcast_to_data(r2, ax0) * jnp.asarray(aat, ax0.dtype)

    return _linear_posterior_score(score_fn, sde, forward, y, scale, likelihood_cov)


def dps(score_fn: ScoreFn, sde, forward: LinearOp, y, *, noise_std: float, scale: float = 1.0) -> ScoreFn:
    r"""DPS posterior score :math:`s - \tfrac{\gamma}{2\sigma_y^2}\nabla_{x_t}\|y - A\hat x_0(x_t)\|^2`
    (see the module docstring). ``forward`` may be any differentiable per-example map.
    ``noise_std`` must be > 0 and ``scale`` finite."""
    check_positive("noise_std", noise_std, why=" (DPS divides by sigma_y^2)")
    check_finite_number("scale", scale)
    return _linear_posterior_score(score_fn, sde, forward, y, scale, lambda alpha, sigma, ax0: noise_std**2)


# --- editing --------------------------------------------------------------------------------

def sdedit(key, score_fn: ScoreFn, sde, x_guide, t_start: float, *, sampler: str = "euler_maruyama",
           steps: int = 50, grid: str = "uniform", return_info: bool = False, **options: Any):
    r"""SDEdit: :math:`x_{t_0} = \alpha_{t_0} x_{guide} + \sigma_{t_0}\varepsilon`, then the named
    sampler from :math:`t_0` (= ``t_start``) down to ``t_min`` on ``steps`` steps of ``grid``.

    Small :math:`t_0` keeps the guide's layout (a nearby sample of the model), :math:`t_0 = T`
    ignores it. Example ``i``'s noise comes from ``fold_in(key, i)`` (the diffusion) and the
    sampler's own per-example keys from ``fold_in(key, 2**31)``-derived keys.
    x_guide: [B, *D] -> samples [B, *D] (and the sampler's info with ``return_info=True``).
    """
    from jaxscore.samplers import get_sampler
    from jaxscore.samplers.grids import time_grid

    check_key(key)
    x_guide = jnp.asarray(x_guide)
    if x_guide.ndim < 2 or not jnp.issubdtype(x_guide.dtype, jnp.floating):
        raise ValueError(f"x_guide: expected a float array [B, *D], got {x_guide.dtype} {x_guide.shape}.")
    if not 0.0 < float(t_start) <= float(sde.T):
        raise ValueError(f"t_start: expected 0 < t_start <= T = {sde.T}, got {t_start}.")
    if "x_init" in options:
        raise TypeError("sdedit: x_init is not an option here (the sampler starts from the diffused guide).")
    ts = time_grid(sde, steps, grid, t_min=options.pop("t_min", None), t_max=float(t_start), rho=options.pop("rho", None))
    t0 = jnp.full(x_guide.shape[:1], ts[0], x_guide.dtype)
    noise_keys = example_keys(key, x_guide.shape[0])
    eps = jax.vmap(lambda k, x: jax.random.normal(k, x.shape, x.dtype))(noise_keys, x_guide)
    alpha, sigma = sde.marginal_coefs(t0)
    x_start = broadcast_to_data(alpha, x_guide) * x_guide + broadcast_to_data(sigma, x_guide) * eps
    return get_sampler(sampler)(jax.random.fold_in(key, 2**31), score_fn, sde, x_guide.shape, steps=steps, grid=ts,
                                x_init=x_start, return_info=return_info, **options)
