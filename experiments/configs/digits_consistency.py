"""Consistency models of the digits teacher (Song et al. 2023; the improved recipe of Song & Dhariwal 2023).

    jaxscore distill --config experiments/configs/digits_consistency.py --teacher runs/digits --workdir runs/digits_cd
    jaxscore distill --config experiments/configs/digits_consistency.py:ct --workdir runs/digits_ct   # training, no teacher
    jaxscore distill --config experiments/configs/digits_consistency.py:toy --teacher exact --workdir runs/ring_cd

Consistency distillation: one Heun step of the teacher's probability-flow ODE between adjacent noise
levels (Karras spacing, rho = 7; iCT's curriculum from s0 + 1 to s1 + 1 levels, lognormal level
sampling), pseudo-Huber distance, target = the student's own parameters under stop-gradient. The
student is the teacher's network with the consistency parameterization f(x, t) = c_skip x + c_out F
(f(x, t_min) = x exactly), initialised from the teacher's EMA parameters. It writes samples.png
(``consistency`` sampler, ``distill.sample_steps`` steps) and the digits-FID at the end.
``:ct`` trains from scratch without a teacher (the digits U-Net of experiments/configs/digits.py).
``:toy`` distils the exact ring score into an MLP that starts as it (``distill.student_init = "teacher"``).
"""

from jaxscore.config import base_config
from jaxscore.distill.run import distill_section


def get_config(variant: str = "cd"):
    c = base_config()
    c.distill = distill_section()
    c.distill.method = "consistency_training" if variant == "ct" else "consistency_distillation"
    c.distill.solver = "heun"
    c.distill.sample_steps = 2
    c.optim.warmup = 0
    c.optim.grad_clip = 0.0  # iCT: Adam without clipping (the 1/(sigma_{i+1} - sigma_i) weights make norms large)
    c.optim.ema_rate = 0.99
    c.training.log_every = 50
    if variant in ("cd", "ct"):
        c.data.name = "digits"
        c.data.image_size = 8
        c.model.name = "unet_tiny"
        c.model.ch = 16
        c.model.parameterization = "edm"  # with a teacher: replaced by the teacher's model section
        c.distill.s0, c.distill.s1 = (10, 160) if variant == "ct" else (20, 80)
        c.training.batch_size = 64
        c.training.n_iters = 1000 if variant == "cd" else 3000
        c.training.steps_per_call = 1
        c.training.checkpoint_every = 500
        c.training.eval_every = c.training.n_iters
        c.optim.lr = 2e-4 if variant == "cd" else 1e-3
        c.eval.features = "digits"
        c.eval.fid_every = c.training.n_iters
        c.eval.fid_num = 1000
        c.eval.heldout_batches = 1
        c.sampling.num_samples = 100
    elif variant in ("toy", "toy_ct"):
        c.data.name = "ring"
        c.model.name = "mlp_toy"
        if variant == "toy":
            c.distill.teacher = "exact"
        else:
            c.distill.method = "consistency_training"
        c.distill.s0, c.distill.s1 = (10, 320)
        c.training.batch_size = 256
        c.training.n_iters = 3000
        c.training.steps_per_call = 50
        c.training.checkpoint_every = 1000
        c.training.eval_every = 3000
        c.optim.lr = 1e-3
        c.eval.num_samples = 4000
    else:
        raise ValueError(f"digits_consistency config: expected 'cd', 'ct', 'toy' or 'toy_ct', got {variant!r}.")
    return c
