"""CIFAR-10 with score_sde's NCSN++ (cont., VE) hyperparameters, from the local binary batches.

    jaxscore train --config experiments/configs/cifar10_ncsnpp.py --workdir runs/cifar10_ncsnpp \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

score_sde (configs/ve/cifar10_ncsnpp_continuous.py): VE sigma 0.01..50, Fourier embedding,
reduce_mean=False, EMA 0.999, batch 128, lr 2e-4, PC sampler (reverse diffusion + Langevin, snr 0.16).
"""

from jaxscore.config import base_config


def get_config():
    c = base_config()
    c.data.name = "cifar10"
    c.data.path = "data/cifar-10-batches-bin"
    c.data.image_size = 32
    c.data.random_flip = True
    c.model.name = "ncsnpp_cifar10"
    c.model.parameterization = "eps"  # score = -eps/sigma_t: score_sde's scale_by_sigma
    c.model.dropout = 0.1
    c.sde.name = "ve"
    c.sde.sigma_min = 0.01
    c.sde.sigma_max = 50.0
    c.loss.name = "continuous_dsm"
    c.loss.reduce_mean = False
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
    c.optim.ema_rate = 0.999
    c.sampling.sampler = "pc"
    c.sampling.steps = 1000
    c.sampling.num_samples = 64
    return c
