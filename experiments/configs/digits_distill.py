"""Progressive distillation (Salimans & Ho 2022) of the digits teacher: 32 DDIM steps -> 16 -> 8 -> 4 -> 2 -> 1.

    jaxscore train --config experiments/configs/digits.py --workdir runs/digits          # the teacher
    jaxscore distill --config experiments/configs/digits_distill.py --teacher runs/digits --workdir runs/digits_pd
    jaxscore sample --workdir runs/digits_pd/stage5_1steps --sampler ddim --steps 1 --num 64 --out one_step.npz
    jaxscore distill --config experiments/configs/digits_distill.py:toy --teacher exact --workdir runs/ring_pd

Stage k (N_k = 32 / 2^k steps) is the run directory WORKDIR/stage<k>_<N_k>steps with its own
checkpoints, metrics.jsonl, samples.png (DDIM on the student's grid, saved as grid.npz) and, for
digits, the digits-FID of 1000 samples at the end of the stage. ``training.n_iters`` counts the
optimizer steps of *each* stage. The student is the teacher's network (data, sde and model sections
come from the teacher's run), initialised from its EMA parameters; the digits teacher is an EDM-
preconditioned x0 predictor, the parameterization the paper recommends for students.
``:toy`` distils the exact score of the 2-D ring (64 -> 32 -> ... -> 1 steps) into a v-prediction MLP that
starts as the exact score (``distill.student_init = "teacher"``: exact output + a zero-gain correction;
``"fresh"`` for a freshly initialised MLP). On the benchmark's ring a teacher-initialised student is 1.4-3x
closer to the truth at 1-8 steps than a fresh one trained as long (experiments/benchmarks/students.py).
"""

from jaxscore.config import base_config
from jaxscore.distill.run import distill_section


def get_config(variant: str = "digits"):
    c = base_config()
    c.distill = distill_section()
    c.distill.method = "progressive"
    c.distill.weighting = "truncated_snr"
    c.optim.warmup = 0  # the student starts at its teacher: no warm-up needed (Salimans & Ho use none)
    c.optim.ema_rate = 0.99
    c.training.log_every = 50
    if variant == "digits":
        c.data.name = "digits"  # replaced by the teacher's sections at run time
        c.distill.base_steps = 32
        c.training.batch_size = 64
        c.training.n_iters = 400  # per stage
        c.training.steps_per_call = 1  # XLA:CPU runs convolutions several times slower inside lax.scan
        c.training.checkpoint_every = 200
        c.training.eval_every = 400
        c.optim.lr = 2e-4
        c.eval.features = "digits"
        c.eval.fid_every = 400
        c.eval.fid_num = 1000
        c.eval.heldout_batches = 1
        c.sampling.num_samples = 100
    elif variant == "toy":
        c.data.name = "ring"
        c.model.name = "mlp_toy"
        c.model.parameterization = "v"
        c.distill.teacher = "exact"
        c.distill.base_steps = 64  # the teacher's own error: DDIM 8 uniform steps 0.33 on the ring, 32: 0.08
        c.training.batch_size = 256
        c.training.n_iters = 1000
        c.training.steps_per_call = 50
        c.training.checkpoint_every = 500
        c.training.eval_every = 1000
        c.optim.lr = 1e-3
        c.eval.num_samples = 4000
    else:
        raise ValueError(f"digits_distill config: expected 'digits' or 'toy', got {variant!r}.")
    return c
