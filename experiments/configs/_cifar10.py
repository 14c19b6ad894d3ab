"""What score_sde's CIFAR-10 runs share (``cifar10_ddpmpp.py``, ``cifar10_ncsnpp.py`` start from it).

The local binary batches with random flips; batch 128 (the default), 1.3M iterations in pmap
mode; log every 50 steps, checkpoint and evaluate every 10k, keep every 50k; dropout 0.1; FID of 50k samples
against the training set (pytorch-fid's Inception), off until ``eval.fid_every`` is set.
Not a run by itself: the leading underscore keeps it out of the shipped configs.
"""

from jaxscore.config import base_config


def get_config():
    c = base_config()
    c.data.name = "cifar10"
    c.data.path = "data/cifar-10-batches-bin"
    c.data.image_size = 32
    c.data.random_flip = True
    c.model.dropout = 0.1
    c.training.n_iters = 1300001
    c.training.mode = "pmap"
    c.training.log_every = 50
    c.training.eval_every = 10000
    c.training.checkpoint_every = 10000
    c.training.keep_every = 50000
    # FID as score_sde reports it: pytorch-fid's Inception on 50k samples vs the 50k training images
    # (set eval.inception_weights or $JAXSCORE_INCEPTION_WEIGHTS; eval.fid_every turns the hook on)
    c.eval.features = "inception"
    c.eval.fid_ref = "train"
    c.eval.fid_num = 50000
    return c
