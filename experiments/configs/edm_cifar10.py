"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models"), CIFAR-10
unconditional, their DDPM++ ("VP architecture") network with their preconditioning.

    jaxscore train --config experiments/configs/edm_cifar10.py --workdir runs/edm_cifar10 \
        --config.data.path=/data/cifar-10-batches-bin --config.training.mode=pmap

From the paper (Table 1, App. F.1 / Table 7) and its code: sigma-form preconditioning
(c_skip, c_out, c_in, c_noise = ln(sigma)/4, sigma_data = 0.5; ``model.parameterization = "edm"``),
training ln sigma ~ N(-1.2, 1.2^2) with lambda = (sigma^2 + sigma_data^2)/(sigma sigma_data)^2
(``loss.name = "edm"``, summed over pixels), Adam lr 1e-3 with a 10 Mimg ramp-up (19531 steps at
batch 512), batch 512, 200 Mimg (390625 steps), EMA half-life 0.5 Mimg (rate 0.5^(512/5e5) = 0.99929
per step), dropout 0.13, Heun (Alg. 1) with 18 steps on the rho = 7 grid from sigma_max = 80 to
sigma_min = 0.002. Their noise labels enter the positional embedding unscaled (``embedding_scale=1``).

Sampling is their Alg. 1 with N = 18 (35 evaluations): ``heun`` on the 18 levels of the rho = 7 grid
(``steps = 17`` Heun steps, 2 evaluations each) and a last Euler step from sigma_min to 0
(``denoise``), set in ``sampling.options`` (``grid``, ``sigma_min``, ``sigma_max``, ``rho``, ``denoise``,
``lower_order_final``) so that they hold whatever the sampler's defaults.

Differences, stated: no non-leaking augmentation (their 12% augment pipe); grad clip 1 as the
other configs (EDM has none). Noise levels are times of a VE SDE with sigma 0.002 .. 80.
"""

import os

from jaxscore.config import load_config_file


def get_config():
    c = load_config_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cifar10.py"))
    c.model.name = "ddpmpp_cifar10"
    c.model.dropout = 0.13
    c.model.embedding_scale = 1.0
    c.model.parameterization = "edm"
    c.sde.name = "ve"
    c.sde.sigma_min = 0.002
    c.sde.sigma_max = 80.0
    c.loss.name = "edm"
    c.loss.reduce_mean = False
    c.training.batch_size = 512
    c.training.n_iters = 390625
    c.optim.lr = 1e-3
    c.optim.warmup = 19531
    c.optim.ema_rate = 0.99929
    c.sampling.sampler = "heun"
    c.sampling.steps = 17  # N - 1 = 17 Heun steps on N = 18 levels, then the Euler step to sigma = 0
    c.sampling.options.grid = "edm"
    c.sampling.options.sigma_min = 0.002
    c.sampling.options.sigma_max = 80.0
    c.sampling.options.rho = 7.0
    c.sampling.options.denoise = True  # EDM's last step: Euler from sigma_min to 0 (= the denoiser D)
    c.sampling.options.lower_order_final = False
    return c
