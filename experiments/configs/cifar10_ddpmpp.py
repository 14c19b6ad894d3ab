"""CIFAR-10 with score_sde's DDPM++ (cont., VP) hyperparameters, from the local binary batches.

    jaxscore train --config experiments/configs/cifar10_ddpmpp.py --workdir runs/cifar10_ddpmpp \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

score_sde (configs/vp/cifar10_ddpmpp_continuous.py): batch 128, lr 2e-4, warmup 5000, grad clip 1,
EMA 0.9999, 1.3M iterations, random flips, reduce_mean=True, continuous VP (beta 0.1..20): the
shared CIFAR-10 settings (``_cifar10.py``) and the defaults of ``jaxscore.config.base_config``.
"""

import os

from jaxscore.config import load_config_file


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cifar10.py"))
    c.model.name = "ddpmpp_cifar10"
    return c
