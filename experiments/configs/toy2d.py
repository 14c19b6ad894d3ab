"""2-D ring of 8 Gaussians (exact scores known): trains in about a minute on 2 CPU cores.

    jaxscore train --config experiments/configs/toy2d.py --workdir runs/toy2d
    jaxscore sample --workdir runs/toy2d --sampler dpmpp_2m --steps 20 --num 4096 --out runs/toy2d/samples.npz

Writes samples-vs-data and learned-vs-exact score-field PNGs, a loss curve and metrics.jsonl.
"""

from jaxscore.config import base_config


def get_config():
    c = base_config()
    c.data.name = "ring"
    c.data.num_train = 20000
    c.sde.name = "vp"
    c.model.name = "mlp_toy"
    c.model.parameterization = "eps"
    c.loss.name = "continuous_dsm"
    c.loss.weighting = "sigma2"
    c.optim.lr = 2e-3
    c.optim.warmup = 100
    c.training.batch_size = 512
    c.training.n_iters = 4000
    c.training.steps_per_call = 50
    c.optim.ema_rate = 0.999
    c.training.log_every = 100
    c.training.eval_every = 2000
    c.training.checkpoint_every = 1000
    c.sampling.sampler = "dpmpp_2m"
    c.sampling.steps = 20
    c.eval.num_samples = 4000
    return c
