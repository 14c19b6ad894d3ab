"""Shared settings of the short training runs the CLI and experiment tests make."""

import os

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs")
TOY2D = os.path.join(CONFIGS, "toy2d.py")
DIGITS = os.path.join(CONFIGS, "digits.py")

N_ITERS = 1000
# A short version of toy2d: 1000 steps instead of 4000 (~6 s of training on 2 cores), one eval
# and one checkpoint at the end. EMA 0.99 instead of 0.999: an average over the last ~100 steps
# rather than ~1000 (the EMA warm-up already keeps the random initialisation out of it).
SHORT_TOY2D = [
    f"--config.training.n_iters={N_ITERS}",
    f"--config.training.eval_every={N_ITERS}",
    f"--config.training.checkpoint_every={N_ITERS}",
    "--config.training.progress=false",
    "--config.optim.ema_rate=0.99",
]

# digits.py:cond cut to two steps with a 10-sample, 2-step report grid and a 25-sample FID (image path)
SHORT_DIGITS_COND = [
    "--config.training.n_iters=2",
    "--config.training.eval_every=2",
    "--config.training.progress=false",
    "--config.sampling.num_samples=10",
    "--config.sampling.steps=2",
    "--config.eval.fid_every=2",  # the class-conditional sample-quality evaluator, 25 samples
    "--config.eval.fid_num=25",
]
