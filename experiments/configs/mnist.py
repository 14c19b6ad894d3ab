"""MNIST from local IDX files (no download): 28x28, DDPM++ "unet_small", VP SDE.

    jaxscore train --config experiments/configs/mnist.py --workdir runs/mnist --config.data.path=/data/mnist

``data.path`` is a folder holding train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz].
"""

from jaxscore.config import base_config


def get_config():
    c = base_config()
    c.data.name = "mnist"
    c.data.path = "data/mnist"
    c.data.image_size = 28
    c.model.name = "unet_small"
    c.training.n_iters = 100000
    c.training.eval_every = 5000
    c.training.checkpoint_every = 5000
    c.optim.warmup = 1000
    c.eval.features = "mnist"  # the project's classifier, trained on data.path's train split on first use (cached)
    c.eval.fid_every = 5000
    c.eval.fid_num = 10000
    return c
