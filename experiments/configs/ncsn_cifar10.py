"""NCSN (Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the Data Distribution") on CIFAR-10.

    jaxscore train --config experiments/configs/ncsn_cifar10.py --workdir runs/ncsn_cifar10 \
        --config.data.path=/data/cifar-10-batches-bin

From the paper (§5, App. B.1): images in [0, 1] (``data.value_range = (0, 1)``); L = 10 noise levels,
geometric from sigma_1 = 1 to sigma_10 = 0.01; lambda(sigma) = sigma^2 (``anneal_power`` 2, the
multi-scale DSM of eq. 6, summed over pixels); Adam, lr 1e-3, batch 128, 200k iterations; annealed
Langevin (Alg. 1) with T = 100 steps per level and eps = 2e-5 (``sampling.options``: ``n_steps_each``,
``step_lr``; the report, FID and ``jaxscore sample --sampler annealed_langevin`` use them), keeping
the last step's noise (``final_noise``; NCSNv2's final denoising is off). No EMA in the paper (NCSNv2
added it): ``ema_rate`` 0.999 here only affects the EMA copy the reports sample from.

Differences, stated: the network is score_sde's NCSN++ (``ncsnpp_cifar10``) predicting eps
(score = -eps / sigma: NCSNv2's 1/sigma output scaling) instead of the RefineNet with conditional
instance norm; the ladder levels are fed to it as the VE SDE's times
(:func:`jaxscore.experiment.ncsn_ladder`). Shared CIFAR-10 settings: ``_cifar10.py`` (random flips
included). Bits/dim are on [0, 1] (+8 bits/dim offset).
"""

import os

from jaxscore.config import load_config_file
from jaxscore.experiment import ve_sigmas_for_ladder

NUM_SCALES = 10  # L
SIGMA_FIRST, SIGMA_LAST = 1.0, 0.01  # NCSN's ladder on [0, 1] images


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cifar10.py"))
    c.data.value_range = (0.0, 1.0)  # NCSN's images
    c.model.name = "ncsnpp_cifar10"
    c.model.parameterization = "eps"
    c.sde.name = "ve"
    c.sde.sigma_min, c.sde.sigma_max = ve_sigmas_for_ladder(SIGMA_FIRST, SIGMA_LAST, NUM_SCALES)
    c.loss.name = "ncsn"
    c.loss.num_scales = NUM_SCALES
    c.loss.anneal_power = 2.0
    c.loss.reduce_mean = False  # NCSN sums over pixels
    c.optim.lr = 1e-3
    c.optim.warmup = 0
    c.optim.grad_clip = 0.0
    c.optim.ema_rate = 0.999
    c.training.n_iters = 200001
    c.sampling.sampler = "annealed_langevin"
    c.sampling.steps = NUM_SCALES  # one step per level: the levels of ncsn_ladder
    c.sampling.options.n_steps_each = 100  # T
    c.sampling.options.step_lr = 2e-5  # eps: alpha_i = eps sigma_i^2 / sigma_L^2
    c.sampling.options.final_noise = True
    c.sampling.options.denoise = False
    return c
