"""CIFAR-10 with score_sde's NCSN++ (cont., VE) hyperparameters, from the local binary batches.

    jaxscore train --config experiments/configs/cifar10_ncsnpp.py --workdir runs/cifar10_ncsnpp \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

score_sde (configs/ve/cifar10_ncsnpp_continuous.py): VE sigma 0.01..50, Fourier embedding,
reduce_mean=False, EMA 0.999, batch 128, lr 2e-4, training times t ~ U(1e-5, 1) (their loss's
``eps``: ``loss.t_min``), PC sampler with 1000 steps from t = 1 to 1e-5 (reverse diffusion + one Langevin
correction at snr 0.16, the last update's noise dropped: their ``noise_removal``), set in
``sampling.options``. Their corrector's step uses batch-mean norms; ``step_size="snr"`` takes them per
example (the same in high dimension, and a sample does not depend on its batch).
The rest is the shared CIFAR-10 settings (``_cifar10.py``).
"""

import os

from jaxscore.config import load_config_file


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cifar10.py"))
    c.model.name = "ncsnpp_cifar10"
    c.model.parameterization = "eps"  # score = -eps/sigma_t: score_sde's scale_by_sigma
    c.sde.name = "ve"  # sigma 0.01..50: the defaults
    c.loss.reduce_mean = False
    c.optim.ema_rate = 0.999
    c.loss.t_min = 1e-5  # score_sde's eps: training times t ~ U(1e-5, 1) (losses.get_sde_loss_fn)
    c.sampling.sampler = "pc"
    c.sampling.steps = 1000
    c.sampling.options.predictor = "reverse_diffusion"
    c.sampling.options.corrector_steps = 1
    c.sampling.options.snr = 0.16
    c.sampling.options.step_size = "snr"
    c.sampling.options.t_min = 1e-5  # score_sde's sampling eps for VE
    c.sampling.options.final_noise = False  # noise_removal: return the last update's mean
    return c
