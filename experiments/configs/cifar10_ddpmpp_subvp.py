"""CIFAR-10 with score_sde's DDPM++ (cont., sub-VP) hyperparameters, from the local binary batches.

    jaxscore train --config experiments/configs/cifar10_ddpmpp_subvp.py --workdir runs/cifar10_subvp \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

score_sde (configs/subvp/cifar10_ddpmpp_continuous.py): the VP DDPM++ config (``cifar10_ddpmpp.py``)
with the sub-VP SDE (beta 0.1..20), continuous DSM with reduce_mean=True and sigma^2 weighting,
training times t ~ U(1e-5, 1) (inherited ``loss.t_min``), sampled by Euler-Maruyama on the reverse
SDE with N = 1000 steps from t = 1 to 1e-3 and no corrector, the last step's noise dropped (their
``noise_removal``), set in ``sampling.options``.
"""

import os

from jaxscore.config import load_config_file


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_ddpmpp.py"))
    c.sde.name = "subvp"
    c.sampling.sampler = "euler_maruyama"
    c.sampling.steps = 1000
    c.sampling.options.t_min = 1e-3  # score_sde's sampling eps for VP / sub-VP
    c.sampling.options.final_noise = False
    return c
