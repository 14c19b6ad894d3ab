r"""Langevin samplers: predictor-corrector (Song et al. 2021) and annealed Langevin dynamics (NCSN,
Song & Ermon 2019).

Langevin corrector at time t (score_sde's signal-to-noise step-size rule), per example i:

.. math:: \epsilon_i = 2\,a\,\Big(r\,\frac{\lVert z_i\rVert}{\lVert s(x_i, t)\rVert}\Big)^2,\qquad
          x_i \leftarrow x_i + \epsilon_i\, s(x_i, t) + \sqrt{2\epsilon_i}\, z_i ,

with ``snr`` r and :math:`a = (\alpha_t/\alpha_{t'})^2` the squared one-step signal decay
(score_sde's ``alphas[i]`` for VP, 1 for VE). score_sde averages the norms over the batch; here
they are per example, so that sample i depends on (key, i) only (batch-size invariance).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxscore._checks import check_choice, check_nonnegative, check_positive, check_steps
from jaxscore.samplers import _core
from jaxscore.samplers._core import Start, bcast, call_score, fixed_step
from jaxscore.samplers.base import Sampler
from jaxscore.samplers.sde_samplers import _noise_scale, ancestral_step, ddim_step, em_step, reverse_diffusion_step


def probability_flow_step(sde, x, score, t, t_next, z):
    r"""One probability-flow (ODE) step in score_sde's reverse-diffusion form
    (``ReverseDiffusionPredictor(probability_flow=True)``): with the exact forward transition
    :math:`(a, v)` = ``sde.transition_coefs(t_next, t)``,

    .. math:: x_{n+1} = x_n - (a - 1)\,x_n + \tfrac12 v\, s(x_n, t_n),

    the reverse-diffusion step with half the score term and no noise (``z`` is ignored).
    """
    del z
    a, var = sde.transition_coefs(t_next, t)
    return x - (a - 1.0) * x + 0.5 * var * score


def ddim_predictor_step(sde, x, score, t, t_next, z):
    r"""One deterministic DDIM step (:func:`~jaxscore.samplers.sde_samplers.ddim_step` with
    :math:`\eta = 0`): :math:`x_s = \alpha_s\hat x_0 + \sigma_s\hat\varepsilon`, the first-order exponential
    integrator of the probability-flow ODE (``z`` is ignored)."""
    return ddim_step(sde, x, score, t, t_next, 0.0, jnp.zeros_like(x))


PREDICTORS = {
    "euler_maruyama": em_step,
    "reverse_diffusion": reverse_diffusion_step,
    "ancestral": ancestral_step,
    "probability_flow": probability_flow_step,
    "ddim": ddim_predictor_step,
    "none": None,
}
DETERMINISTIC_PREDICTORS = ("probability_flow", "ddim")  # ODE predictors: draw no noise


def _per_example_norm(v):
    return jnp.sqrt(jnp.sum(v.reshape(v.shape[0], -1) ** 2, axis=-1))


STEP_SIZE_RULES = ("snr", "snr_batch", "sigma")


def langevin_corrector_step(x, score, z, snr, a, sigma=None, rule: str = "snr"):
    r"""One Langevin corrector step :math:`x + \epsilon s + \sqrt{2\epsilon} z`. Returns ``(x_new, x_mean)``.

    ``rule`` sets :math:`\epsilon = 2a(r\,\lVert z\rVert/\lVert s\rVert)^2`:
    ``"snr"`` with per-example norms (batch-size invariant), ``"snr_batch"`` with batch-mean norms
    (score_sde exactly; sample i then depends on the whole batch), ``"sigma"`` with the norms
    replaced by their Gaussian-scale expectations :math:`\lVert z\rVert^2 \approx d`,
    :math:`\lVert s\rVert^2 \approx d/\sigma_t^2`, i.e. :math:`\epsilon = 2 a r^2 \sigma_t^2`
    (batch invariant and stable in any dimension; needs ``sigma``).
    """
    if rule == "snr":
        ratio = snr * _per_example_norm(z) / jnp.maximum(_per_example_norm(score), 1e-20)
        eps = bcast(2.0 * a * ratio**2, x)
    elif rule == "snr_batch":
        ratio = snr * jnp.mean(_per_example_norm(z)) / jnp.maximum(jnp.mean(_per_example_norm(score)), 1e-20)
        eps = 2.0 * a * ratio**2
    elif rule == "sigma":
        eps = 2.0 * a * (snr * sigma) ** 2
    else:
        check_choice("step_size", rule, STEP_SIZE_RULES)
    x_mean = x + eps * score
    return x_mean + jnp.sqrt(2.0 * eps) * z, x_mean


@fixed_step(steps=1000, grid="uniform")
def pc(score_fn, sde, start: Start, *, predictor: str = "reverse_diffusion", snr: float = 0.16,
       corrector_steps: int = 1, step_size: str = "sigma", final_noise: bool = False):
    r"""Predictor-corrector sampler (score_sde Alg. 2/3).

    For each step n: ``corrector_steps`` Langevin corrections at :math:`t_n`, then the predictor from
    :math:`t_n` to :math:`t_{n+1}` (``"euler_maruyama"``, ``"reverse_diffusion"``, ``"ancestral"``, or a
    probability-flow ODE predictor: ``"probability_flow"`` (score_sde's reverse-diffusion discretisation
    of the ODE, :func:`probability_flow_step`) or ``"ddim"`` (deterministic DDIM,
    :func:`ddim_predictor_step`); with these the only noise is the corrector's).
    With ``predictor="none"`` the corrections at step n run at :math:`t_{n+1}` instead, so the
    levels visited are ``ts[1:]`` ending at ``t_min`` (pure annealed Langevin with the snr rule).
    As in score_sde the noise of the very last update is dropped (``final_noise=False``).
    NFE = steps * (corrector_steps + [predictor != "none"]) (+1 with ``denoise``).

    ``step_size`` picks the corrector's step-size rule (:func:`langevin_corrector_step`). The default
    ``"sigma"`` is score_sde's snr rule with the two norms replaced by their expectations
    (:math:`\epsilon = 2 a r^2\sigma_t^2`): batch-size invariant and stable in any dimension.
    ``"snr"`` is score_sde's rule with per-example norms (fine for high-dimensional data, where the
    norms concentrate, but unstable in a few dimensions: a sample with :math:`\lVert s\rVert \approx 0`
    gets a huge step); ``"snr_batch"`` is score_sde's batch-mean rule exactly (gives up batch-size
    invariance).
    """
    check_choice("step_size", step_size, STEP_SIZE_RULES)
    check_choice("predictor", predictor, tuple(PREDICTORS))
    check_nonnegative("snr", snr, why=" (the Langevin corrector's signal-to-noise ratio; 0 = no correction)")
    corrector_steps = check_steps(corrector_steps, minimum=0, name="corrector_steps")
    if predictor == "none" and corrector_steps == 0:
        raise ValueError("pc: predictor='none' with corrector_steps=0 would not move the samples.")
    ts, steps, keys = start.ts, start.steps, start.keys
    pred = PREDICTORS[predictor]
    data_shape = start.shape[1:]

    def body(carry, n):
        (x,) = carry
        t, t_next = ts[n], ts[n + 1]
        a, _ = sde.transition_coefs(t_next, t)
        a2 = a**2
        t_corr = t if pred is not None else t_next
        sigma_corr = sde.marginal_coefs(t_corr)[1]
        last = n == steps - 1

        def correct(c, j):
            x, _ = c
            z = _core.step_normal(keys, n, data_shape, sub=1 + j)
            return langevin_corrector_step(x, call_score(score_fn, x, t_corr), z, snr, a2, sigma_corr, step_size), None

        if corrector_steps:
            (x_new, x_mean), _ = jax.lax.scan(correct, (x, x), jnp.arange(corrector_steps))
            x = jnp.where(last, x_mean, x_new) if (pred is None and not final_noise) else x_new
        if pred is not None:
            if predictor in DETERMINISTIC_PREDICTORS:
                z = None
            else:
                z = _core.step_normal(keys, n, data_shape) * _noise_scale(n, steps, final_noise)
            x = pred(sde, x, call_score(score_fn, x, t), t, t_next, z)
        return (x,)

    (x,), traj = _core.scan_steps(body, (start.x,), steps, start.trajectory)
    return x, traj, steps * (corrector_steps + (pred is not None))


@fixed_step(steps=10, grid="uniform")
def annealed_langevin(score_fn, sde, start: Start, *, n_steps_each: int = 100, step_lr: float = 2e-5,
                      final_noise: bool = True):
    r"""Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Alg. 1) on the noise ladder
    :math:`\sigma_1 > \dots > \sigma_L` given by the grid's ``ts[1:]`` (``steps`` = L levels, the last at
    ``t_min``): at level i, ``n_steps_each`` updates

    .. math:: x \leftarrow x + \tfrac{\epsilon_i}{2} s(x, t_i) + \sqrt{\epsilon_i}\, z,\qquad
              \epsilon_i = \texttt{step\_lr}\cdot\sigma_i^2/\sigma_L^2 .

    Needs a variance-exploding SDE (:math:`\alpha_t = 1`, ``sde.is_variance_exploding()``): the
    ladder is of pure noise levels. For VP / sub-VP use ``pc(predictor="none")``.
    NCSN keeps the noise of the last update (``final_noise=True``); NCSNv2's final denoising is
    ``denoise=True``. NFE = steps * n_steps_each (+1 with ``denoise``).
    """
    if not sde.is_variance_exploding():
        raise ValueError(
            f"annealed_langevin needs a variance-exploding SDE (alpha_t = 1, a pure noise ladder: "
            f"sde.is_variance_exploding() must be True), got {type(sde).__name__} whose drift is not zero "
            f"(or depends on traced parameters). Use pc(..., predictor='none') for VP / sub-VP SDEs."
        )
    n_steps_each = check_steps(n_steps_each, name="n_steps_each")
    check_positive("step_lr", step_lr, why=" (the Langevin step size at the last noise level)")
    ts, steps, keys = start.ts, start.steps, start.keys
    _, sigma_last = sde.marginal_coefs(ts[-1])
    data_shape = start.shape[1:]

    def body(carry, n):
        (x,) = carry
        t = ts[n + 1]
        _, sigma = sde.marginal_coefs(t)
        eps = step_lr * (sigma / sigma_last) ** 2
        last_level = n == steps - 1
        drop_last_noise = jnp.logical_and(last_level, not final_noise)

        def update(j, x):
            z = _core.step_normal(keys, n, data_shape, sub=j)
            z = z * jnp.where(jnp.logical_and(drop_last_noise, j == n_steps_each - 1), 0.0, 1.0)
            return x + 0.5 * eps * call_score(score_fn, x, t) + jnp.sqrt(eps) * z

        x = jax.lax.fori_loop(0, n_steps_each, update, x)
        return (x,)

    (x,), traj = _core.scan_steps(body, (start.x,), steps, start.trajectory)
    return x, traj, steps * n_steps_each


def _pc_evals(corrector_steps, predictor, **_) -> int:
    return int(corrector_steps) + (predictor != "none")


def _langevin_evals(n_steps_each, **_) -> int:
    return int(n_steps_each)


def _pc_noise_free(predictor, corrector_steps, snr, **_) -> bool:
    """An ODE predictor with no Langevin correction (0 steps or snr 0) draws no noise."""
    return predictor in DETERMINISTIC_PREDICTORS and (int(corrector_steps) == 0 or float(snr) == 0.0)


PC = Sampler("pc", pc, per_step=_pc_evals, noise_free=_pc_noise_free)
ANNEALED_LANGEVIN = Sampler("annealed_langevin", annealed_langevin, per_step=_langevin_evals)
