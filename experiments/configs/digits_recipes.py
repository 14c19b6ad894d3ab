"""The paper recipes at 8x8-digits size (CPU-sized, like ``digits.py``, whose settings they start from):
one variant per objective / schedule, each naming the config it shrinks.

    jaxscore train --config experiments/configs/digits_recipes.py:ddpm --workdir runs/digits_ddpm

=================  ===========================================================================
``ddpm``           DDPM (``ddpm_cifar10.py``): discrete chain, T = 1000, beta 1e-4..0.02, eps loss
                   at integer t, ancestral sampling on every 8th integer step down to t = 0 (125
                   steps, ``t_min = 0``; ``--config.sampling.steps=1000`` is Alg. 2 exactly)
``ddpm_cosine``    the same with Nichol & Dhariwal's cosine schedule
``ncsn``           NCSN (``ncsn_cifar10.py``): images in [0, 1], VE ladder of 10 levels from 10 (~ the
                   largest distance between two digits in [0, 1], Song & Ermon 2020 technique 1) to
                   0.01, multi-scale DSM, annealed Langevin (100 steps per level, eps = 2e-5)
``subvp``          score_sde continuous sub-VP (``cifar10_ddpmpp_subvp.py``: training t ~ U(1e-5, 1)),
                   Euler-Maruyama 200 steps
``ve``             score_sde continuous VE (``cifar10_ncsnpp.py``: sigma 0.01..sigma_max, summed loss,
                   PC sampler) with sigma_max 20 (``digits.py:ve``)
``edm``            EDM (``edm_cifar10.py``): sigma-form preconditioning and loss, Heun with N = 18
                   (17 Heun steps and the Euler step to 0: 35 evaluations)
``likelihood``     continuous DSM with likelihood weighting and importance-sampled t (Song et al.
                   2021, "Maximum likelihood training of score-based diffusion models")
``ism``            implicit score matching (Hyvärinen 2005) of the diffused marginals, exact divergence
                   (64 JVPs an example: small data only)
``ssm``            sliced score matching (Song et al. 2019, SSM-VR, one projection) of the diffused marginals
=================  ===========================================================================

Common: ``digits.py`` (unet_tiny with ch 16, batch 64, 3000 steps, lr 2e-3) with eps prediction
(``edm``: EDM preconditioning) instead of its EDM preconditioning on the VP SDE.
"""

import os

from jaxscore.config import load_config_file
from jaxscore.experiment import ve_sigmas_for_ladder

VARIANTS = ("ddpm", "ddpm_cosine", "ncsn", "subvp", "ve", "edm", "likelihood", "ism", "ssm")
HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(variant: str = "ddpm"):
    if variant not in VARIANTS:
        raise ValueError(f"digits_recipes: expected a variant in {VARIANTS}, got {variant!r}.")
    c = load_config_file(os.path.join(HERE, "digits.py") + (":ve" if variant == "ve" else ""))
    c.model.parameterization = "eps"
    c.loss.name = "continuous_dsm"
    if variant in ("ddpm", "ddpm_cosine"):
        c.sde.name = "ddpm"
        c.sde.schedule = "cosine" if variant == "ddpm_cosine" else "linear"
        c.sde.num_steps = 1000
        c.loss.name = "eps"
        c.sampling.sampler = "ancestral"
        c.sampling.steps = 125  # t = 1 .. 0 in strides of 8/1000: integer steps of the chain
        c.sampling.options.t_min = 0.0  # down to x_0, as Ho et al.'s Alg. 2
    elif variant == "ncsn":
        c.sde.name = "ve"
        c.data.value_range = (0.0, 1.0)  # NCSN's images
        c.sde.sigma_min, c.sde.sigma_max = ve_sigmas_for_ladder(10.0, 0.01, 10)
        c.loss.name = "ncsn"
        c.loss.num_scales = 10
        c.loss.anneal_power = 2.0
        c.loss.reduce_mean = False
        c.sampling.sampler = "annealed_langevin"
        c.sampling.steps = 10
        c.sampling.options.n_steps_each = 100
        c.sampling.options.step_lr = 2e-5
        c.sampling.options.final_noise = True
        c.sampling.options.denoise = False
    elif variant == "subvp":
        c.sde.name = "subvp"
        c.loss.t_min = 1e-5  # score_sde's training eps
        c.sampling.options.t_min = 1e-3  # score_sde's sampling eps for VP / sub-VP
        c.sampling.options.final_noise = False
        c.sampling.sampler = "euler_maruyama"
        c.sampling.steps = 200
    elif variant == "ve":
        c.loss.reduce_mean = False
        c.loss.t_min = 1e-5  # score_sde's training eps
        c.sampling.sampler = "pc"
        c.sampling.steps = 200
    elif variant == "edm":
        c.sde.name = "ve"
        c.sde.sigma_min, c.sde.sigma_max = 0.002, 80.0
        c.model.parameterization = "edm"
        c.loss.name = "edm"
        c.sampling.sampler = "heun"
        c.sampling.steps = 17
        c.sampling.options.grid = "edm"
        c.sampling.options.sigma_min = 0.002
        c.sampling.options.sigma_max = 80.0
        c.sampling.options.rho = 7.0
        c.sampling.options.denoise = True
        c.sampling.options.lower_order_final = False
    elif variant == "likelihood":
        c.loss.weighting = "likelihood"
        c.loss.t_sampling = "importance"
    else:  # ism / ssm
        c.loss.name = variant
        c.loss.divergence = "exact"
        c.loss.num_projections = 1
        c.loss.variance_reduced = True
        c.training.batch_size = 32
    return c
