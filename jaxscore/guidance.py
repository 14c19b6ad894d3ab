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
of the score call alone). They live in :mod:`jaxscore.inverse` (with the operator classes:
inpainting, colorization, super-resolution, deblurring, dense SVD operators, and the DPS-paper,
score_sde-replacement and DDRM samplers) and are re-exported here.

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
    check_finite_number,
    check_key,
)
from jaxscore._keys import example_keys
from jaxscore.inverse.methods import dps as dps  # linear inverse problems live in jaxscore.inverse
from jaxscore.inverse.methods import pigdm as pigdm
from jaxscore.inverse.operators import grayscale_operator as grayscale_operator
from jaxscore.inverse.operators import mask_operator as mask_operator

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
LabeledScoreFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

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
