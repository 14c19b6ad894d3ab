r"""Students that start as their teacher: the teacher's output plus a learned correction that is zero at init.

Salimans & Ho (2022) initialise each progressive student with its teacher's weights, and Song et al. (2023)
initialise a consistency student from the diffusion model; training then only has to learn the
discretisation correction. When the teacher is not a network of the student's architecture (an exact
mixture score, a different or larger model) there are no weights to copy. These wrappers give the same
start: with the student network :math:`N_\theta` and a scalar gain :math:`g` (0 at init, ReZero-style),

.. math:: F_{student}(x, t) = F_{teacher}(x, t) + g\,N_\theta(x, t),

where :math:`F_{teacher}` is the output a network of the student's parameterization would give to have the
teacher's score. At :math:`g = 0` the student *is* its teacher; the gradient reaches :math:`\theta` once
:math:`g` moves. Each student step evaluates the teacher once: the NFE count is that of the student's sampler,
and the cost of one evaluation is teacher + network.

* :func:`residual_apply` (progressive distillation, any ``"score" | "eps" | "x0" | "v"`` student):
  :math:`F_{teacher}` = :func:`jaxscore.parameterization.score_to_output` of the teacher's score.
* :func:`residual_consistency_apply` (consistency distillation): :math:`F_{teacher}` is the output for which
  the consistency function :math:`f = c_{skip}\frac{\alpha_{min}}{\alpha_t}x + c_{out}\alpha_{min}F`
  (:mod:`jaxscore.distill.consistency`) equals the teacher's one DDIM step to :math:`t_{min}`,
  :math:`\alpha_{min}\hat x_0 + \frac{\sigma_{min}}{\sigma_t}(x - \alpha_t\hat x_0)`; at :math:`t_{min}`
  (:math:`c_{out} = 0`) it is 0, so the boundary condition :math:`f(x, t_{min}) = x` still holds exactly.

Parameters are ``{"net": <the network's params>, "gain": 0-d array}`` (:func:`residual_params`).

Measured in ``experiments/benchmarks/students.py`` (exact mixture scores as teachers, ``mlp_toy`` students,
``--fresh`` for the comparison with freshly initialised students trained as long).
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from jaxscore._checks import broadcast_to_data, check_choice
from jaxscore.distill.consistency import consistency_coefs
from jaxscore.distill.progressive import ddim_step, score_denoiser
from jaxscore.parameterization import score_to_output

RESIDUAL_PARAMETERIZATIONS = ("score", "eps", "x0", "v")
ScoreFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def residual_params(net_params: Any) -> dict:
    """``{"net": net_params, "gain": 0.0}``: a residual student that starts exactly at its teacher."""
    return {"net": net_params, "gain": jnp.zeros((), jnp.float32)}


def residual_apply(apply: Callable, teacher_score_fn: ScoreFn, sde, parameterization: str = "v") -> Callable:
    r"""``apply'(params, x [B, *D], t [B], **kw)`` = the teacher's output in ``parameterization`` +
    ``params["gain"] * apply(params["net"], x, t, **kw)`` (module docstring). Use it wherever a network of that
    parameterization goes (``make_score_fn``, ``progressive_distillation_loss``), with :func:`residual_params`."""
    check_choice("parameterization", parameterization, RESIDUAL_PARAMETERIZATIONS)

    def student(params, x, t, **apply_kwargs):
        base = score_to_output(teacher_score_fn(x, t), x, t, sde, parameterization)
        return base + params["gain"] * apply(params["net"], x, t, **apply_kwargs)

    return student


def residual_consistency_apply(apply: Callable, teacher_score_fn: ScoreFn, sde, *, sigma_data: float = 0.5,
                               t_min: float | None = None) -> Callable:
    r"""``apply'(params, u [B, *D], c_noise [B], **kw)`` for :func:`jaxscore.distill.consistency_fn` (which calls
    its network as :math:`F(c_{in}\tilde x, \tfrac14\ln\tilde\sigma)`): the output that makes the consistency
    function the teacher's DDIM jump to ``t_min`` (module docstring) + ``params["gain"] * apply(params["net"], u,
    c_noise)``. ``sigma_data`` and ``t_min`` must be those given to ``consistency_fn`` / ``consistency_loss``."""
    t_min = sde.t_min if t_min is None else t_min
    x0_fn = score_denoiser(teacher_score_fn, sde)

    def student(params, u, c_noise, **apply_kwargs):
        sig = jnp.exp(4.0 * c_noise)  # sigma~ of the call; x~ = u / c_in
        t = sde.t_from_sigma_ratio(sig)
        t_lo = jnp.full_like(t, t_min)
        alpha, _ = sde.marginal_coefs(t)
        alpha_min, sigma_min = sde.marginal_coefs(t_lo)
        x = broadcast_to_data(alpha * jnp.sqrt(sig**2 + sigma_data**2), u) * u
        target = ddim_step(sde, x, x0_fn(x, t), t, t_lo)
        c_skip, c_out, _, _ = consistency_coefs(sig, sigma_min / alpha_min, sigma_data)
        live = c_out > 0
        scale = jnp.where(live, c_out * alpha_min, 1.0)
        base = (target - broadcast_to_data(c_skip * alpha_min / alpha, x) * x) / broadcast_to_data(scale, x)
        base = jnp.where(broadcast_to_data(live, x), base, 0.0)
        return base + params["gain"] * apply(params["net"], u, c_noise, **apply_kwargs)

    return student


__all__ = ["RESIDUAL_PARAMETERIZATIONS", "residual_apply", "residual_consistency_apply", "residual_params"]
