"""CIFAR-10 with score_sde's DDPM++ (cont., sub-VP) hyperparameters, from the local binary batches.

    jaxscore train --config experiments/configs/cifar10_ddpmpp_subvp.py --workdir runs/cifar10_subvp \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

score_sde (configs/subvp/cifar10_ddpmpp_continuous.py): the VP DDPM++ config (``cifar10_ddpmpp.py``)
with the sub-VP SDE (beta 0.1..20), continuous DSM with reduce_mean=True and sigma^2 weighting,
sampled by Euler-Maruyama on the reverse SDE with N = 1000 steps and no corrector.
"""

import os

from jaxscore.config import load_config_file


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_ddpmpp.py"))
    c.sde.name = "subvp"
    c.sampling.sampler = "euler_maruyama"
    c.sampling.steps = 1000
    return c
