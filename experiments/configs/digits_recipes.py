"""The paper recipes at 8x8-digits size (CPU-sized, like ``digits.py``, whose settings they start from):
one variant per objective / schedule, each naming the config it shrinks.

    jaxscore train --config experiments/configs/digits_recipes.py:ddpm --workdir runs/digits_ddpm

=================  ===========================================================================
``ddpm``           DDPM (``ddpm_cifar10.py``): discrete chain, T = 1000, beta 1e-4..0.02, eps loss
                   at integer t, ancestral sampling on every 9th integer step (111 steps: 999 = 9 * 111)
``ddpm_cosine``    the same with Nichol & Dhariwal's cosine schedule
``ncsn``           NCSN (``ncsn_cifar10.py``): VE ladder of 10 levels from 20 (~ the largest distance
                   between two digits in [-1, 1], Song & Ermon 2020 technique 1) to 0.02, multi-scale
                   DSM, annealed Langevin (100 steps per level)
``subvp``          score_sde continuous sub-VP (``cifar10_ddpmpp_subvp.py``), Euler-Maruyama 200 steps
``ve``             score_sde continuous VE (``cifar10_ncsnpp.py``: sigma 0.01..sigma_max, summed loss,
                   PC sampler) with sigma_max 20 (``digits.py:ve``)
``edm``            EDM (``edm_cifar10.py``): sigma-form preconditioning and loss, Heun 18 steps
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
        c.sampling.steps = 111  # t = 1 .. 1/1000 in strides of 9/1000: integer steps of the chain
    elif variant == "ncsn":
        c.sde.name = "ve"
        c.sde.sigma_min, c.sde.sigma_max = ve_sigmas_for_ladder(20.0, 0.02, 10)
        c.loss.name = "ncsn"
        c.loss.num_scales = 10
        c.loss.anneal_power = 2.0
        c.loss.reduce_mean = False
        c.sampling.sampler = "annealed_langevin"
        c.sampling.steps = 10
    elif variant == "subvp":
        c.sde.name = "subvp"
        c.sampling.sampler = "euler_maruyama"
        c.sampling.steps = 200
    elif variant == "ve":
        c.loss.reduce_mean = False
        c.sampling.sampler = "pc"
        c.sampling.steps = 200
    elif variant == "edm":
        c.sde.name = "ve"
        c.sde.sigma_min, c.sde.sigma_max = 0.002, 80.0
        c.model.parameterization = "edm"
        c.loss.name = "edm"
        c.sampling.sampler = "heun"
        c.sampling.steps = 18
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
