"""Writes notebooks/quickstart.ipynb from the cells below (run, then execute the notebook):

    python notebooks/build_quickstart.py && jupyter nbconvert --execute --inplace notebooks/quickstart.ipynb

Keeping the cells here means the notebook is reviewed as code and tested by
``tests/test_notebooks.py``, which runs these same cells.
"""

import json
import os

CELLS = [
    ("md", """# jaxscore quickstart

Everything in jaxscore meets one contract, `score_fn(x: [B, *D], t: [B]) -> [B, *D]`, an
estimate of ∇ₓ log pₜ(x). This notebook uses a 2-D Gaussian mixture, whose diffused score
and log-density are known exactly at every t, to

1. sample with the exact score and measure the samplers against the truth,
2. compute an exact log-likelihood through the probability-flow ODE,
3. train a small network with denoising score matching and compare it with the exact score."""),
    ("code", """import jax, jax.numpy as jnp, numpy as np, optax
import matplotlib.pyplot as plt
import jaxscore as js
from jaxscore.data import ring_mixture
from jaxscore.metrics import mixture_metrics, relative_score_error

sde = js.VPSDE()                 # beta 0.1 -> 20 (score_sde defaults); VESDE(), SubVPSDE() work the same
mix = ring_mixture()             # 8 Gaussians on a circle of radius 4, stds 0.15-0.6
exact_score = mix.score_fn(sde)  # grad_x log p_t(x), exact at every t
NUM = 4000"""),
    ("md", "## 1. Sampling with the exact score\n\nEach sampler is one compiled function; `steps` counts solver steps, `info['nfe']` score evaluations."),
    ("code", """key = jax.random.key(0)
results = {}
for sampler, steps in [("euler_maruyama", 200), ("ddim", 20), ("dpmpp_2m", 20), ("heun", 10)]:
    x, info = js.sample(key, exact_score, sde, (NUM, 2), sampler=sampler, steps=steps, return_info=True)
    m = mixture_metrics(np.asarray(x), mix)
    results[sampler] = x
    print(f"{sampler:15s} NFE {info['nfe']:4d}  " + "  ".join(f"{k} {v:.3f}" for k, v in m.items()))"""),
    ("code", """data = np.asarray(mix.sample(jax.random.key(1), NUM))
fig, axes = plt.subplots(1, len(results) + 1, figsize=(3 * (len(results) + 1), 3), sharex=True, sharey=True)
axes[0].scatter(*data.T, s=1); axes[0].set_title("data")
for ax, (name, x) in zip(axes[1:], results.items()):
    ax.scatter(*np.asarray(x).T, s=1); ax.set_title(name)
for ax in axes: ax.set_aspect("equal")
plt.tight_layout()"""),
    ("md", "## 2. Exact log-likelihood\n\nlog p₀(x) = log p_T(z) + ∫ div f̃(x_t, t) dt along the probability-flow ODE (diffrax, exact divergence in 2-D)."),
    ("code", """x = data[:256]
logp, info = js.log_likelihood(jax.random.key(2), exact_score, sde, x, return_info=True)
true = mix.log_prob(x)
print("ODE log p  mean", float(logp.mean()), " analytic", float(true.mean()),
      " max |diff|", float(jnp.abs(logp - true).max()), " NFE", info["nfe"])"""),
    ("md", """## 3. Training a score network

A loss is a pure function of `(apply, params, key, x0)`; here the continuous-time denoising
loss with ε-prediction, λ(t) = σ_t², t ~ U(t_min, T). Any optax optimizer, any `jit`."""),
    ("code", """model = js.models.build_model("mlp_toy")
params = model.init(jax.random.key(3), jnp.zeros((1, 2)), jnp.ones(1))["params"]
apply = lambda p, x, t: model.apply({"params": p}, x, t)
STEPS = 6000
tx = optax.adam(optax.cosine_decay_schedule(3e-3, STEPS))
opt_state = tx.init(params)
train_data = mix.sample(jax.random.key(4), 50_000)

@jax.jit
def step(params, opt_state, key):
    k_batch, k_loss = jax.random.split(key)
    x0 = train_data[jax.random.randint(k_batch, (512,), 0, len(train_data))]
    loss, g = jax.value_and_grad(js.losses.continuous_dsm_loss, argnums=1)(
        apply, params, k_loss, x0, sde, parameterization="eps")
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

losses = []
for i in range(STEPS):
    params, opt_state, loss = step(params, opt_state, jax.random.fold_in(jax.random.key(5), i))
    losses.append(float(loss))
print("final loss (mean of last 100 steps)", np.mean(losses[-100:]))"""),
    ("code", """learned = js.make_score_fn(apply, params, sde, "eps")
for t in (0.05, 0.2, 0.5):
    tt = jnp.full((2048,), t)
    xt, _ = sde.marginal_sample(jax.random.key(6), jnp.asarray(data[:2048]), tt)
    print(f"t={t}: relative score error {relative_score_error(learned, exact_score, xt, tt):.3f}")
x = js.sample(jax.random.key(7), learned, sde, (NUM, 2), sampler="dpmpp_2m", steps=20)
print({k: round(v, 3) for k, v in mixture_metrics(np.asarray(x), mix).items()})
plt.figure(figsize=(3, 3)); plt.scatter(*np.asarray(x).T, s=1); plt.gca().set_aspect("equal"); plt.title("learned, DPM-Solver++ 2M, 20 steps");"""),
]


def write_notebook(cells_src, path: str) -> None:
    """Write ``[(kind, source)]`` cells (kind ``"md"`` or ``"code"``) as an unexecuted notebook."""
    cells = []
    for kind, src in cells_src:
        cell = {"cell_type": "markdown" if kind == "md" else "code", "metadata": {}, "source": src}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    nb = {
        "cells": cells,
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    with open(path, "w") as f:
        json.dump(nb, f, indent=1)


def build(path: str) -> None:
    write_notebook(CELLS, path)


if __name__ == "__main__":
    build(os.path.join(os.path.dirname(os.path.abspath(__file__)), "quickstart.ipynb"))
