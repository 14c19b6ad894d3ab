r"""Progressive distillation (Salimans & Ho 2022): a student learns two DDIM steps of its teacher in one.

Notation: :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`; a model's data prediction
:math:`\hat x_0(x, t)` (for any ``score_fn``: Tweedie, ``sde.denoise``). A deterministic DDIM step from
:math:`t` to :math:`s < t` is

.. math:: \mathrm{DDIM}_{t\to s}(x; \hat x_0) = \alpha_s \hat x_0 + \sigma_s\,\frac{x - \alpha_t \hat x_0}{\sigma_t}.

The teacher samples on a grid :math:`t_0 = T > t_1 > \dots > t_{2N} = t_{min}` (``2N`` steps); the
student on every other point, :math:`u_i = t_{2i}` (``N`` steps). For a training point
:math:`x_{u_i} = \alpha x_0 + \sigma\varepsilon` the teacher takes two DDIM steps
:math:`u_i \to t_{2i+1} \to u_{i+1}`, landing at :math:`x''`; the student's target
:math:`\tilde x` is the data prediction for which *one* DDIM step lands there too
(Salimans & Ho, Algorithm 2):

.. math:: \tilde x = \frac{x'' - (\sigma_{u_{i+1}}/\sigma_{u_i})\, x_{u_i}}
                         {\alpha_{u_{i+1}} - (\sigma_{u_{i+1}}/\sigma_{u_i})\,\alpha_{u_i}},
          \qquad L = w(\lambda_{u_i})\,\|\tilde x - \hat x_0^{\,student}(x_{u_i}, u_i)\|^2,

with the paper's "truncated SNR" weighting :math:`w = \max(\mathrm{SNR}, 1)` (or "SNR+1", which is
the v-prediction loss). Repeating with the student as the next teacher halves the steps each stage:
:math:`N_0 \to N_0/2 \to \dots \to 1` (:func:`halving_grids`: every student grid is the base grid
subsampled, so the stage-:math:`k` student samples with
``js.sample(key, score_fn, sde, shape, "ddim", steps=N_k, grid=grids[k])``).

The student is any network ``apply(params, x, t, **kw)`` with a parameterization of
:mod:`jaxscore.parameterization` (the paper recommends ``"v"`` or ``"x0"``; ``"edm"`` is an
x0-prediction with preconditioning); the teacher is any ``score_fn(x, t)`` (a network, a previous
student, an exact mixture score).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import broadcast_to_data, check_batch, check_choice
from jaxscore.parameterization import PARAMETERIZATIONS, edm_denoise
from jaxscore.samplers.grids import time_grid

PD_WEIGHTINGS = ("truncated_snr", "snr_plus_one")
"""Loss weightings of :func:`progressive_distillation_loss`: ``max(SNR, 1)`` and ``SNR + 1``."""

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def denoiser(apply: Callable, params: Any, sde, parameterization: str = "v", *, sigma_data: float = 0.5,
             **apply_kwargs) -> Callable[[jax.Array, jax.Array], jax.Array]:
    r"""A network's data prediction ``x0_fn(x [B, *D], t [B]) -> [B, *D]``, computed directly from its output:

    ``"x0"``: :math:`F`; ``"v"``: :math:`(\alpha x - \sigma F)/(\alpha^2+\sigma^2)`; ``"eps"``:
    :math:`(x - \sigma F)/\alpha`; ``"score"``: :math:`(x + \sigma^2 F)/\alpha`; ``"edm"``: EDM's
    preconditioned :math:`D(x/\alpha; \sigma/\alpha)`. The same model's ``make_score_fn`` score is
    :math:`(\alpha \hat x_0 - x)/\sigma^2` of this.
    """
    check_choice("parameterization", parameterization, PARAMETERIZATIONS)

    def x0_fn(x, t):
        x, t = check_batch(x, t)
        alpha, sigma = sde.marginal_coefs(t)
        a, s = broadcast_to_data(alpha, x), broadcast_to_data(sigma, x)
        if parameterization == "edm":
            return edm_denoise(apply, params, x / a, sigma / alpha, sigma_data, **apply_kwargs)
        out = apply(params, x, t, **apply_kwargs)
        if parameterization == "x0":
            return out
        if parameterization == "v":
            return (a * x - s * out) / (a**2 + s**2)
        if parameterization == "eps":
            return (x - s * out) / a
        return (x + s**2 * out) / a  # score

    return x0_fn


def score_denoiser(score_fn: ScoreFn, sde) -> Callable[[jax.Array, jax.Array], jax.Array]:
    r"""Any ``score_fn``'s data prediction :math:`\hat x_0 = (x + \sigma_t^2 s(x, t))/\alpha_t` (Tweedie)."""
    return lambda x, t: sde.denoise(x, score_fn(x, t), t)


def ddim_step(sde, x: jax.Array, x0: jax.Array, t: jax.Array, s: jax.Array) -> jax.Array:
    r"""Deterministic DDIM from ``t`` [B] to ``s`` [B] given the data prediction ``x0`` at ``(x, t)``:
    :math:`\alpha_s \hat x_0 + \sigma_s (x - \alpha_t \hat x_0)/\sigma_t`. Shapes ``[B, *D]``."""
    alpha_t, sigma_t = sde.marginal_coefs(t)
    alpha_s, sigma_s = sde.marginal_coefs(s)
    eps = (x - broadcast_to_data(alpha_t, x) * x0) / broadcast_to_data(sigma_t, x)
    return broadcast_to_data(alpha_s, x) * x0 + broadcast_to_data(sigma_s, x) * eps


def one_step_target(sde, x_t: jax.Array, x_s: jax.Array, t: jax.Array, s: jax.Array) -> jax.Array:
    r"""The data prediction :math:`\tilde x` whose DDIM step :math:`t\to s` maps ``x_t`` to ``x_s``:
    :math:`(x_s - r x_t)/(\alpha_s - r\alpha_t)`, :math:`r = \sigma_s/\sigma_t`. Shapes ``[B, *D]``, t, s [B]."""
    alpha_t, sigma_t = sde.marginal_coefs(t)
    alpha_s, sigma_s = sde.marginal_coefs(s)
    r = sigma_s / sigma_t
    return (x_s - broadcast_to_data(r, x_t) * x_t) / broadcast_to_data(alpha_s - r * alpha_t, x_t)


def loss_weight(sde, t: jax.Array, weighting: str = "truncated_snr") -> jax.Array:
    r"""Salimans & Ho's weights on the x0 error: ``"truncated_snr"`` :math:`\max(\alpha^2/\sigma^2, 1)`,
    ``"snr_plus_one"`` :math:`\alpha^2/\sigma^2 + 1`. ``t`` [B] -> [B]."""
    check_choice("weighting", weighting, PD_WEIGHTINGS)
    snr = jnp.exp(sde.log_snr(t))
    return jnp.maximum(snr, 1.0) if weighting == "truncated_snr" else snr + 1.0


def student_grid(teacher_grid: jax.Array) -> jax.Array:
    """Every other point of a teacher grid of ``2N`` steps: the student's grid of ``N`` steps."""
    ts = jnp.asarray(teacher_grid)
    steps = ts.shape[0] - 1
    if ts.ndim != 1 or steps < 2 or steps % 2:
        raise ValueError(f"teacher_grid: expected a 1-D grid of an even number >= 2 of steps, got shape {ts.shape}.")
    return ts[::2]


def halving_grids(sde, base_steps: int, grid: str = "uniform", *, t_min=None, stages: int | None = None) -> list:
    r"""``[ts_0, ts_1, ..., ts_K]``: the base grid of ``base_steps`` = :math:`N_0` steps (a name of
    :func:`jaxscore.samplers.grids.time_grid`, from ``T`` to ``t_min``) and its subsamplings
    ``ts_k = ts_0[::2**k]`` of :math:`N_0/2^k` steps. ``base_steps`` must be a power of two times
    :math:`2^K` (``stages = K``, default :math:`\log_2 N_0`: down to one step). Stage ``k`` trains the
    student of ``ts_k`` with the teacher of ``ts_{k-1}``. Returns numpy arrays (the default float dtype)."""
    if not isinstance(base_steps, (int, np.integer)) or base_steps < 2:
        raise ValueError(f"base_steps: expected an integer >= 2, got {base_steps!r}.")
    max_stages = int(np.log2(base_steps & -base_steps))  # halvings that keep an integer step count
    stages = max_stages if stages is None else int(stages)
    if not 1 <= stages <= max_stages:
        raise ValueError(f"stages: {base_steps} steps can be halved 1..{max_stages} times, got stages={stages}.")
    ts0 = np.asarray(time_grid(sde, int(base_steps), grid, t_min=t_min))
    return [ts0[:: 2**k] for k in range(stages + 1)]


def progressive_distillation_loss(apply: Callable, params: Any, key: jax.Array, x0: jax.Array, sde,
                                  teacher_score_fn: ScoreFn, teacher_grid, *, parameterization: str = "v",
                                  weighting: str = "truncated_snr", sigma_data: float = 0.5, reduce_mean: bool = True,
                                  return_aux: bool = False, **apply_kwargs):
    r"""One progressive-distillation objective (module docstring) on data ``x0`` [B, *D].

    ``teacher_grid``: the teacher's ``2N + 1`` decreasing times (its DDIM grid of ``2N`` steps); each
    example draws a student step :math:`i \sim U\{0..N-1\}`, the point
    :math:`x_{t_{2i}} = \alpha x_0 + \sigma\varepsilon`, the teacher's two DDIM steps to
    :math:`t_{2i+2}` (2 teacher evaluations, no gradient) and the target :math:`\tilde x`;
    the loss is :math:`w(t_{2i})\,\|\tilde x - \hat x_0^{student}\|^2` averaged over data dimensions
    (``reduce_mean``; else summed) and over the batch. ``apply(params, x, t, **apply_kwargs)`` is the
    student with ``parameterization``; its data prediction is :func:`denoiser`'s.
    Returns a scalar, or ``(loss, aux)`` with ``aux = {"target_norm": mean |x~|^2}`` when ``return_aux``.
    """
    x0 = jnp.asarray(x0)
    ts = jnp.asarray(teacher_grid)
    n_student = ts.shape[0] // 2  # 2N + 1 points -> N student steps
    if ts.ndim != 1 or ts.shape[0] < 3 or (ts.shape[0] - 1) % 2:
        raise ValueError(f"teacher_grid: expected 2N + 1 decreasing times (N >= 1), got shape {ts.shape}.")
    b = x0.shape[0]
    k_i, k_x = jax.random.split(key)
    i = jax.random.randint(k_i, (b,), 0, n_student)
    t, mid, s = ts[2 * i], ts[2 * i + 1], ts[2 * i + 2]
    x_t, _ = sde.marginal_sample(k_x, x0, t)
    teacher = score_denoiser(teacher_score_fn, sde)
    x_mid = ddim_step(sde, x_t, teacher(x_t, t), t, mid)
    x_s = ddim_step(sde, x_mid, teacher(x_mid, mid), mid, s)
    target = jax.lax.stop_gradient(one_step_target(sde, x_t, x_s, t, s))
    pred = denoiser(apply, params, sde, parameterization, sigma_data=sigma_data, **apply_kwargs)(x_t, t)
    err = jnp.square(pred - target).reshape(b, -1)
    per_example = (jnp.mean(err, axis=-1) if reduce_mean else jnp.sum(err, axis=-1)) * loss_weight(sde, t, weighting)
    loss = jnp.mean(per_example)
    if return_aux:
        return loss, {"target_norm": jnp.mean(jnp.square(target))}
    return loss


__all__ = ["PD_WEIGHTINGS", "ddim_step", "denoiser", "halving_grids", "loss_weight", "one_step_target",
           "progressive_distillation_loss", "score_denoiser", "student_grid"]
