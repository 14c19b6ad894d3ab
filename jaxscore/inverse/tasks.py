r"""Named restoration tasks and methods: the one table the CLI (``jaxscore restore``) and notebooks use.

:func:`task_operator` turns a task name into its :class:`~jaxscore.inverse.operators.LinearOperator`
for images ``[H, W, C]``; :func:`restore` runs a named method on observations ``y = A x + n``,
:math:`n \sim N(0, \sigma_y^2 I)`, and returns one restoration per observation:

============  ==================================================================================
``pigdm``      DPM-Solver++ 2M on the ΠGDM posterior score (:func:`~jaxscore.inverse.methods.pigdm`)
``dps``        DPS, the paper's Algorithm 1 and step :math:`\zeta/\|y - A\hat x_0\|`
               (:func:`~jaxscore.inverse.methods.dps_sample`)
``ddrm``       DDRM in the operator's SVD basis (:func:`~jaxscore.inverse.methods.ddrm_sample`)
``replacement`` score_sde's replacement method, noiseless y (:func:`~jaxscore.inverse.methods.replacement_sample`)
``tds``        twisted SMC with ``particles`` particles per observation, one drawn by its weight
               (:func:`~jaxscore.inverse.smc.twisted_smc`): exact as ``particles`` grows
============  ==================================================================================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxscore._checks import check_choice
from jaxscore.inverse.methods import ddrm_sample, dps_sample, pigdm, replacement_sample
from jaxscore.inverse.operators import Colorization, Inpainting, SuperResolution, box_mask, gaussian_blur, random_mask
from jaxscore.inverse.smc import linear_gaussian_likelihood, twisted_smc

TASKS = ("inpaint", "inpaint_random", "colorize", "superres", "deblur")
METHODS = ("pigdm", "dps", "ddrm", "replacement", "tds")
# score evaluations per step of each method (the guided ones add a vector-Jacobian product per step)
DEFAULT_STEPS = {"pigdm": 50, "dps": 200, "ddrm": 20, "replacement": 200, "tds": 100}


def task_operator(task: str, shape, *, key=None, factor: int = 2, blur_std: float = 1.0, keep: float = 0.3):
    """The operator of ``task`` for one image of ``shape`` ``(H, W, C)``:

    * ``inpaint``: the centre box of half the height and width is missing;
    * ``inpaint_random``: each pixel kept with probability ``keep`` (mask drawn from ``key``, default key 0);
    * ``colorize``: the channel mean is observed (needs C = 3);
    * ``superres``: ``factor x factor`` average pooling;
    * ``deblur``: circular Gaussian blur of std ``blur_std`` pixels.
    """
    check_choice("task", task, TASKS)
    h, w, c = tuple(int(s) for s in shape)
    if task == "inpaint":
        return Inpainting(box_mask((h, w, c), h // 4, w // 4, max(h // 2, 1), max(w // 2, 1)))
    if task == "inpaint_random":
        key = jax.random.key(0) if key is None else key
        return Inpainting(random_mask(key, (h, w, c), keep))
    if task == "colorize":
        if c != 3:
            raise ValueError(f"task 'colorize': expected colour images (C = 3), got C = {c}.")
        return Colorization((h, w, c))
    if task == "superres":
        return SuperResolution((h, w, c), factor)
    return gaussian_blur((h, w, c), blur_std)


def restore(key, score_fn, sde, operator, y, *, method: str, noise_std: float, steps: int | None = None,
            particles: int = 16):
    """Restorations ``[N, *D]`` of observations ``y [N, *M]`` by ``method`` (module table), ``steps`` steps
    (default :data:`DEFAULT_STEPS`). ``noise_std`` is :math:`\\sigma_y` (``replacement`` treats y as noiseless;
    ``tds`` and ``pigdm`` need it > 0)."""
    check_choice("method", method, METHODS)
    steps = DEFAULT_STEPS[method] if steps is None else int(steps)
    y = jnp.asarray(y)
    shape = (y.shape[0], *operator.in_shape)
    if method == "pigdm":
        from jaxscore.samplers import sample

        return sample(key, pigdm(score_fn, sde, operator, y, noise_std=noise_std), sde, shape,
                      sampler="dpmpp_2m", steps=steps)
    if method == "dps":
        return dps_sample(key, score_fn, sde, operator, y, steps=steps)
    if method == "ddrm":
        return ddrm_sample(key, score_fn, sde, operator, y, noise_std=noise_std, steps=steps)
    if method == "replacement":
        return replacement_sample(key, score_fn, sde, operator, y, steps=steps)
    aat = operator.aat_diag()  # None when A A^T is not diagonal (blur): any twist keeps TDS exact as K grows
    likelihood = linear_gaussian_likelihood(sde, operator, noise_std, aat=1.0 if aat is None else aat)
    xs, weights, _ = twisted_smc(key, score_fn, sde, likelihood, y, operator.in_shape, num_particles=particles,
                                 steps=steps)
    keys = jax.random.split(jax.random.fold_in(key, 1), y.shape[0])
    pick = jax.vmap(lambda k, w: jax.random.choice(k, w.shape[0], p=w))(keys, weights)
    return xs[jnp.arange(y.shape[0]), pick]


def psnr(x, reference, *, peak_to_peak: float = 2.0) -> jax.Array:
    """Per-image PSNR in dB, ``[N]``, of ``x`` against ``reference`` (both ``[N, *D]``, values in a range of
    width ``peak_to_peak``: 2 for [-1, 1]); ``x`` is clipped to the reference's range [-1, 1] first."""
    x = jnp.clip(jnp.asarray(x, jnp.float32), -1.0, 1.0)
    mse = jnp.mean((x - jnp.asarray(reference, jnp.float32)) ** 2, axis=tuple(range(1, x.ndim)))
    return 10.0 * jnp.log10(peak_to_peak**2 / jnp.maximum(mse, 1e-12))
