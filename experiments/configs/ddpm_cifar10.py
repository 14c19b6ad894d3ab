"""DDPM (Ho et al. 2020, "Denoising Diffusion Probabilistic Models") on CIFAR-10: the discrete chain.

    jaxscore train --config experiments/configs/ddpm_cifar10.py --workdir runs/ddpm_cifar10 \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap
    jaxscore train --config experiments/configs/ddpm_cifar10.py:cosine ...   # Nichol & Dhariwal's schedule
    # exact DDPM ancestral sampling (Alg. 2, posterior variance beta-tilde), all 1000 integer steps:
    jaxscore sample --workdir runs/ddpm_cifar10 --sampler ancestral --steps 1000

From the paper (§4, App. B) and its code (diffusion_tf): T = 1000, beta linear from 1e-4 to 0.02,
L_simple = ||eps - eps_theta(x_t, t)||^2 at integer t ~ U{1..T} (``loss.name = "eps"``, mean over
pixels), images in [-1, 1] with random flips, U-Net of 35.7M parameters (ch 128, multipliers
(1, 2, 2, 2), 2 residual blocks per resolution, self-attention at 16x16, dropout 0.1), Adam lr 2e-4
with 5000 warm-up steps, grad clip 1, batch 128, 800k steps, EMA 0.9999 (the last four are
``jaxscore.config.base_config``'s defaults and ``_cifar10.py``'s batch / flips / dropout).
``:cosine``: Nichol & Dhariwal (2021) cosine schedule, s = 0.008, beta <= 0.999 (their other changes,
learned variances and the hybrid loss, are not here).

The chain is :class:`jaxscore.sde.DiscreteVPSDE` (``sde.name = "ddpm"``): step i at t = i/1000, where
its marginals are exactly DDPM's. The network is score_sde's DDPM++ class with DDPM's widths and
DDPM-style residual blocks (``resblock="ddpm"``, no skip rescaling); the time embedding is the
sinusoidal one of 1000 t = the integer timestep. Sampling is Ho et al.'s Alg. 2 exactly: ``ancestral``
on 1000 steps from t = 1 to ``t_min = 0`` (``sampling.options``), i.e. the integer steps 1000 -> 0,
each the exact posterior q(x_{t-1} | x_t, x0_hat) (variance beta-tilde; none at the last step); the report,
FID and ``jaxscore sample --sampler ancestral`` use these options.
"""

import os

from jaxscore.config import load_config_file


def get_config(variant: str = "linear"):
    if variant not in ("linear", "cosine"):
        raise ValueError(f"ddpm_cifar10: expected variant 'linear' or 'cosine', got {variant!r}.")
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cifar10.py"))
    c.model.name = "ddpmpp_cifar10"
    c.model.num_res_blocks = 2
    c.model.resblock = "ddpm"
    c.model.skip_rescale = False
    c.model.parameterization = "eps"
    c.sde.name = "ddpm"
    c.sde.schedule = variant
    c.sde.num_steps = 1000
    c.sde.beta_start = 1e-4
    c.sde.beta_end = 0.02
    c.sde.cosine_s = 0.008
    c.loss.name = "eps"
    c.training.n_iters = 800001
    c.sampling.sampler = "ancestral"
    c.sampling.steps = 1000  # the integer steps 1000 -> 0
    c.sampling.options.t_min = 0.0  # end at x_0: Alg. 2's last step (the posterior mean at t = 1)
    return c
