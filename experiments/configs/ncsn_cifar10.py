"""NCSN (Song & Ermon 2019, "Generative Modeling by Estimating Gradients of the Data Distribution") on CIFAR-10.

    jaxscore train --config experiments/configs/ncsn_cifar10.py --workdir runs/ncsn_cifar10 \
        --config.data.path=/data/cifar-10-batches-bin
    jaxscore sample --workdir runs/ncsn_cifar10 --sampler annealed_langevin --steps 10 --option step_lr=8e-5

From the paper (§5, App. B.1): L = 10 noise levels, geometric from sigma_1 = 1 to sigma_10 = 0.01 for
images in [0, 1]; lambda(sigma) = sigma^2 (``anneal_power`` 2, the multi-scale DSM of eq. 6, summed
over pixels); Adam, lr 1e-3, batch 128, 200k iterations; annealed Langevin (Alg. 1) with T = 100
steps per level and eps = 2e-5. No EMA in the paper (NCSNv2 added it): ``ema_rate`` 0.999 here
only affects the EMA copy the reports sample from.

Differences, stated: jaxscore's images are in [-1, 1] (x = 2y - 1), which maps NCSN's VE
perturbation y + sigma z to x + 2 sigma z, so the ladder here is sigma 2 .. 0.02 (the same levels in
[0, 1] units) and the Langevin step that equals NCSN's eps = 2e-5 is 4 * 2e-5 = 8e-5 (pass
``--option step_lr=8e-5`` to ``jaxscore sample``; the training report uses the sampler's default
2e-5, a 4x smaller step). The network is score_sde's NCSN++ (``ncsnpp_cifar10``) predicting
eps (score = -eps / sigma: NCSNv2's 1/sigma output scaling) instead of the RefineNet with
conditional instance norm; the ladder levels are fed to it as the VE SDE's times
(:func:`jaxscore.experiment.ncsn_ladder`). Shared CIFAR-10 settings: ``_cifar10.py``.
"""

import os

from jaxscore.config import load_config_file
from jaxscore.experiment import ve_sigmas_for_ladder

NUM_SCALES = 10  # L
SIGMA_FIRST, SIGMA_LAST = 2.0, 0.02  # NCSN's 1 .. 0.01 on [0, 1] images, in [-1, 1] units


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cifar10.py"))
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
    c.sampling.sampler = "annealed_langevin"  # 100 Langevin steps per level (the sampler's default)
    c.sampling.steps = NUM_SCALES  # one step per level: the levels of ncsn_ladder
    return c
