"""2-D ring of 8 Gaussians (exact scores known): trains in about a minute on 2 CPU cores.

    jaxscore train --config experiments/configs/toy2d.py --workdir runs/toy2d
    jaxscore sample --workdir runs/toy2d --sampler dpmpp_2m --steps 20 --num 4096 --out runs/toy2d/samples.npz
    jaxscore sample --workdir runs/toy2d --sampler pc --steps 200 --option snr=0.16 --out runs/toy2d/pc.npz
    jaxscore likelihood --workdir runs/toy2d --data test --num 1024   # mean NLL (nats); exact: see data/toy.py

Writes samples-vs-data and learned-vs-exact score-field PNGs, a loss curve and metrics.jsonl
(with the relative score error vs the exact mixture score at t = 0.05, 0.2, 0.5 and the
samples' mode metrics). Any key can be overridden, e.g. ``--config.training.n_iters=1000``.
"""

from jaxscore.config import base_config


def get_config():
    c = base_config()
    c.data.name = "ring"
    c.model.name = "mlp_toy"
    c.training.batch_size = 512
    c.training.n_iters = 4000
    c.training.steps_per_call = 50
    c.training.eval_every = 2000
    c.optim.lr = 2e-3
    c.optim.warmup = 100
    c.optim.ema_rate = 0.999
    return c
