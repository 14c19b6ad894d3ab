"""CIFAR-10 with score_sde's DDPM++ (cont., VP) hyperparameters, from the local binary batches.

    jaxscore train --config experiments/configs/cifar10_ddpmpp.py --workdir runs/cifar10_ddpmpp \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

score_sde (configs/vp/cifar10_ddpmpp_continuous.py): batch 128, lr 2e-4, warmup 5000, grad clip 1,
EMA 0.9999, 1.3M iterations, random flips, reduce_mean=True, continuous VP (beta 0.1..20): the
shared CIFAR-10 settings (``_cifar10.py``) and the defaults of ``jaxscore.config.base_config``;
training times t ~ U(1e-5, 1) (``loss.t_min``: the ``eps=1e-5`` of score_sde's
``losses.get_sde_loss_fn``, which its training step never overrides, for VP, sub-VP and VE alike;
the VP SDE's own ``t_min`` 1e-3 is its sampling ``eps``).
"""

import os

from jaxscore.config import load_config_file


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cifar10.py"))
    c.model.name = "ddpmpp_cifar10"
    c.loss.t_min = 1e-5  # score_sde's eps: training times t ~ U(1e-5, 1) (losses.get_sde_loss_fn)
    return c
