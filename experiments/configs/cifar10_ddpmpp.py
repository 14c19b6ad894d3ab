"""CIFAR-10 with score_sde's DDPM++ (cont., VP) hyperparameters, from the local binary batches.

    jaxscore train --config experiments/configs/cifar10_ddpmpp.py --workdir runs/cifar10_ddpmpp \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

score_sde (configs/vp/cifar10_ddpmpp_continuous.py): batch 128, lr 2e-4, warmup 5000, grad clip 1,
EMA 0.9999, 1.3M iterations, random flips, reduce_mean=True, continuous VP (beta 0.1..20).
"""

from jaxscore.config import base_config


def get_config():
    c = base_config()
    c.data.name = "cifar10"
    c.data.path = "data/cifar-10-batches-bin"
    c.data.image_size = 32
    c.data.random_flip = True
    c.model.name = "ddpmpp_cifar10"
    c.model.parameterization = "eps"
    c.model.dropout = 0.1
    c.sde.name = "vp"
    c.loss.name = "continuous_dsm"
    c.loss.reduce_mean = True
    c.training.batch_size = 128
    c.training.n_iters = 1300001
    c.training.mode = "pmap"
    c.training.log_every = 50
    c.training.eval_every = 10000
    c.training.checkpoint_every = 10000
    c.training.keep_every = 50000
    c.optim.lr = 2e-4
    c.optim.warmup = 5000
    c.optim.grad_clip = 1.0
    c.optim.ema_rate = 0.9999
    c.sampling.sampler = "dpmpp_2m"
    c.sampling.steps = 20
    c.sampling.num_samples = 64
    return c
