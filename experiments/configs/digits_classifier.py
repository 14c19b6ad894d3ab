"""Noise-conditional classifier p_t(y | x_t) on 8x8 digits, for classifier guidance of the digits model.

    jaxscore train-classifier --config experiments/configs/digits_classifier.py --workdir runs/digits_clf
    jaxscore sample --workdir runs/digits --classifier runs/digits_clf --label 3 --guidance-scale 2 --out threes.npz

The SDE must be the guided model's (experiments/configs/digits.py: VP, beta 0.1..20): the classifier
is trained on x_t ~ p_t(x_t | x_0) of that SDE at t ~ U(t_min, T). Writes accuracy.json (held-out
accuracy per noise level), metrics.jsonl and orbax checkpoints.
"""

import ml_collections

from jaxscore.config import base_config


def get_config(variant: str = "vp"):
    """``vp`` (default; for runs/digits) or ``ve`` (for the VE digits run, sigma_max 20)."""
    c = base_config()
    c.data.name = "digits"
    c.data.image_size = 8
    if variant == "ve":
        c.sde.name = "ve"
        c.sde.sigma_max = 20.0
    elif variant != "vp":
        raise ValueError(f"digits_classifier config: expected 'vp' or 've', got {variant!r}.")
    k = ml_collections.ConfigDict()
    k.num_classes = 10
    k.ch = 32
    k.ch_mult = (1, 2)  # 8x8 -> 4x4
    k.num_res_blocks = 1
    k.dropout = 0.0
    k.embedding = "positional"
    k.batch_size = 128
    k.n_iters = 2000
    k.lr = 1e-3
    k.t_min = 1e-3
    k.log_every = 100
    k.checkpoint_every = 500
    k.eval_times = (1e-3, 0.1, 0.25, 0.5, 0.75, 1.0)
    c.classifier = k
    return c
