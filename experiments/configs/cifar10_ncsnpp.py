"""CIFAR-10 with score_sde's NCSN++ (cont., VE) hyperparameters, from the local binary batches.

    jaxscore train --config experiments/configs/cifar10_ncsnpp.py --workdir runs/cifar10_ncsnpp \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

score_sde (configs/ve/cifar10_ncsnpp_continuous.py): VE sigma 0.01..50, Fourier embedding,
reduce_mean=False, EMA 0.999, batch 128, lr 2e-4, PC sampler (reverse diffusion + Langevin, snr 0.16).
The rest is the shared CIFAR-10 settings (``_cifar10.py``).
"""

import os

from jaxscore.config import load_config_file


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cifar10.py"))
    c.model.name = "ncsnpp_cifar10"
    c.model.parameterization = "eps"  # score = -eps/sigma_t: score_sde's scale_by_sigma
    c.sde.name = "ve"  # sigma 0.01..50: the defaults
    c.loss.reduce_mean = False
    c.optim.ema_rate = 0.999
    c.sampling.sampler = "pc"
    c.sampling.steps = 1000
    return c
