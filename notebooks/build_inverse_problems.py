"""Writes notebooks/inverse_problems.ipynb from the cells below (run, then execute the notebook):

    python notebooks/build_inverse_problems.py && jupyter nbconvert --execute --inplace notebooks/inverse_problems.ipynb

The cells are tested by ``tests/test_notebooks.py``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_quickstart import write_notebook  # noqa: E402

CELLS = [
    ("md", """# Inverse problems on digits: each degradation, each method

A linear inverse problem observes `y = A x + n`, `n ~ N(0, σ_y² I)`, and asks for samples of
`p(x | y)` under a diffusion prior. `jaxscore.inverse` holds the degradations as operators (forward,
adjoint and, where it exists, an SVD) and the methods:

| method | what it is | cost per step |
| --- | --- | --- |
| ΠGDM | a posterior *score* (`inverse.pigdm`): any sampler runs on it | 1 score call + 1 VJP |
| DPS | Chung et al. 2023, Algorithm 1 with the paper's step ζ/‖y − A x̂₀‖ (`inverse.dps_sample`) | 1 score call + 1 VJP |
| replacement | score_sde's inpainting: the observed part replaced by a diffused y (`inverse.replacement_sample`) | 1 score call |
| DDRM | Kawar et al. 2022, in the operator's SVD basis (`inverse.ddrm_sample`) | 1 score call |
| TDS | twisted sequential Monte Carlo (`inverse.smc.twisted_smc`): exact as particles → ∞ | K score calls + K VJPs |

On the 2-D and 8-D Gaussian mixtures, where the posterior is known in closed form, the tests measure
each method's error (`tests/test_inverse_methods.py`, `tests/test_smc.py`). Here the prior is a small
U-Net trained on scikit-learn's 8×8 digits, so the figures are the restorations' PSNR and the
digits classifier's accuracy on them."""),
    ("code", """import os, time
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
import jaxscore as js
from jaxscore import inverse
from jaxscore.inverse.tasks import METHODS, psnr, restore, task_operator
from jaxscore.config import load_config
from jaxscore.evaluation.extractors import build_extractor
from jaxscore.experiment import load_data, load_for_inference, train_and_evaluate

ROOT = next(p for p in (".", "..") if os.path.isdir(os.path.join(p, "experiments", "configs")))
WORKDIR = os.path.join(ROOT, "runs", "notebook_digits")
STEPS = 1500

# the README's digits run, shortened (a finished run in WORKDIR is reused)
config = load_config(os.path.join(ROOT, "experiments", "configs", "digits.py"))
config.training.n_iters = STEPS
config.eval.fid_every = 0
train_and_evaluate(config, WORKDIR)
config, score_fn, sde, shape, step = load_for_inference(WORKDIR)
print("prior: digits U-Net after", step, "steps; data shape", shape)"""),
    ("md", """## The degradations

Eight held-out digits (values in [−1, 1]), four operators, observation noise σ_y = 0.05. The second
column is the least-squares guess `A⁺ y` (the SVD pseudo-inverse): what the observation alone says."""),
    ("code", """test = load_data(config)["test"]
x_true = jnp.asarray(test["images"][:8], jnp.float32) / 127.5 - 1.0
labels = np.asarray(test["labels"][:8])
NOISE = 0.05
tasks = {name: task_operator(name, shape) for name in ("inpaint", "inpaint_random", "superres", "deblur")}
observations = {name: op(x_true) + NOISE * jax.random.normal(jax.random.key(1), op(x_true).shape)
                for name, op in tasks.items()}"""),
    ("md", """## The methods

`inverse.tasks.restore` runs each method by name with its default steps (ΠGDM: DPM-Solver++ 2M on its
posterior score, 50 steps; DPS 200; DDRM 20; replacement 200; TDS 100 steps with 16 particles per
observation, one drawn by its weight) — the same table `jaxscore restore` uses."""),
    ("code", """classify = build_extractor("digits")
restored, table = {}, {}
for task, op in tasks.items():
    for method in METHODS:
        if method == "replacement" and not task.startswith("inpaint"):
            continue  # score_sde's method is for inpainting and colorization
        start = time.perf_counter()
        x = jax.block_until_ready(restore(jax.random.key(2), score_fn, sde, op, observations[task],
                                          method=method, noise_std=NOISE))
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(np.argmax(np.asarray(classify(x)[1]), -1) == labels))
        restored[task, method] = x
        table[task, method] = (float(psnr(x, x_true).mean()), accuracy, seconds)
        print(f"{task:15s} {method:12s} PSNR {table[task, method][0]:5.1f} dB  digit accuracy {accuracy:4.2f}  "
              f"{seconds:5.1f} s (incl. compile)")"""),
    ("code", """cols = ["truth", "A⁺y"] + list(METHODS)
fig, axes = plt.subplots(len(tasks), len(cols), figsize=(1.9 * len(cols), 2.0 * len(tasks)))
def grid(x):  # 8 digits side by side, [-1, 1] -> [0, 1]
    return np.concatenate(list(np.clip((np.asarray(x)[..., 0] + 1) / 2, 0, 1)), axis=1)
for row, (task, op) in enumerate(tasks.items()):
    pinv = op.pinv(observations[task])
    panels = {"truth": x_true, "A⁺y": pinv, **{m: restored.get((task, m)) for m in METHODS}}
    for col, name in enumerate(cols):
        ax = axes[row, col]; ax.axis("off")
        if panels[name] is not None:
            ax.imshow(grid(panels[name])[:, :32], cmap="gray", vmin=0, vmax=1)
        if row == 0: ax.set_title(name, fontsize=9)
    axes[row, 0].text(-2, 4, task, ha="right", va="center", fontsize=9)
plt.tight_layout()"""),
]


def build(path: str) -> None:
    write_notebook(CELLS, path)


if __name__ == "__main__":
    build(os.path.join(os.path.dirname(os.path.abspath(__file__)), "inverse_problems.ipynb"))
