"""Benchmark: the twisted diffusion sampler's error vs the number of particles, against the Monte-Carlo floor.

Cases (exact diffused score of the mixture, so the only errors are Monte Carlo and the reverse chain's
discretisation):
  * ring: the 2-D ring mixture (jaxscore.data.toy.ring_mixture), inpainting y = x[0] + N(0, 0.5^2) at
    16 observed values spread over [-4.5, 4.5]; VP SDE, 100 steps (and 400 with --steps-check);
  * 8d: an 8-D random anisotropic mixture (4 components) seen through a random dense 3x8 operator,
    sigma_y = 0.3, 8 observations drawn from the prior; VP SDE, 200 steps.
For K in 16, 64, 256, 1024, 4096 particles: RMS over observations of the error of the weighted posterior
mean and of the posterior mode weights (the weighted mean of the exact posterior's responsibilities),
the mean |log p(y) estimate - exact log p(y)|, the mean final ESS / K, and the Monte-Carlo floor: the
RMS error of the same statistics from K i.i.d. exact posterior draws (sqrt(trace Cov / K) and
sqrt(sum_k Var r_k / K), variances from 100k exact draws). Times are wall-clock on the machine it runs
on (shared CPUs: upper bounds).

Usage: python experiments/benchmarks/smc.py [--quick] [--only ring|8d]
Writes experiments/benchmarks/results/smc.json and smc.png.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore.data.toy import gaussian_mixture, linear_gaussian_posterior, random_mixture, ring_mixture
from jaxscore.inverse.smc import linear_gaussian_likelihood, twisted_smc
from jaxscore.sde import VPSDE

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def exact(mix, a, y, noise_std):
    post = linear_gaussian_posterior(mix, a, y, noise_std)
    f64 = lambda v: np.asarray(v, np.float64)  # noqa: E731
    obs = gaussian_mixture(f64(mix.weights), f64(mix.means) @ a.T,
                           covariances=a @ f64(mix.covariances) @ a.T + noise_std**2 * np.eye(a.shape[0]))
    log_ev = float(obs.log_prob(jnp.asarray(y, jnp.float32)[None])[0])
    w = f64(post.weights)
    return w / w.sum(), f64(post.means), f64(post.covariances), log_ev


def responsibilities(x, w, m, c):
    d = x[:, None, :] - m[None]
    lp = np.log(w)[None] - 0.5 * np.einsum("nki,kij,nkj->nk", d, np.linalg.inv(c), d) - 0.5 * np.linalg.slogdet(c)[1][None]
    lp -= lp.max(1, keepdims=True)
    r = np.exp(lp)
    return r / r.sum(1, keepdims=True)


def run_case(name, mix, a, ys, noise_std, particles, steps, seed=1):
    sde = VPSDE()
    posts = [exact(mix, a, y, noise_std) for y in ys]
    rng = np.random.default_rng(0)
    var_mean, var_w = [], []
    for w, m, c, _ in posts:
        comp = rng.choice(len(w), 100_000, p=w)
        xs = m[comp] + np.einsum("nij,nj->ni", np.linalg.cholesky(c)[comp], rng.standard_normal((100_000, m.shape[1])))
        var_mean.append(np.trace(np.cov(xs.T)))
        var_w.append(responsibilities(xs, w, m, c).var(0).sum())
    a_j = jnp.asarray(a, jnp.float32)
    lik = linear_gaussian_likelihood(sde, lambda x: x @ a_j.T, noise_std)
    rows = []
    for k in particles:
        fn = jax.jit(lambda key, y: twisted_smc(key, mix.score_fn(sde), sde, lik, y, (mix.dim,),  # noqa: B023
                                                num_particles=k, steps=steps))
        y_j = jnp.asarray(ys, jnp.float32)
        t0 = time.perf_counter()
        jax.block_until_ready(fn(jax.random.key(seed + 100), y_j))
        t1 = time.perf_counter()
        x, wts, info = jax.block_until_ready(fn(jax.random.key(seed), y_j))
        t2 = time.perf_counter()
        x, wts = np.asarray(x, np.float64), np.asarray(wts, np.float64)
        e_mean = [np.sum((wts[i] @ x[i] - w @ m) ** 2) for i, (w, m, _, _) in enumerate(posts)]
        e_w = [np.sum((wts[i] @ responsibilities(x[i], w, m, c) - w) ** 2) for i, (w, m, c, _) in enumerate(posts)]
        row = dict(K=k, mean_err=float(np.sqrt(np.mean(e_mean))), mean_floor=float(np.sqrt(np.mean(var_mean) / k)),
                   weights_err=float(np.sqrt(np.mean(e_w))), weights_floor=float(np.sqrt(np.mean(var_w) / k)),
                   log_evidence_err=float(np.mean(np.abs(np.asarray(info["log_evidence"]) - [p[3] for p in posts]))),
                   final_ess_frac=float(np.mean(np.asarray(info["ess"])[:, -1]) / k),
                   resample_steps=float(np.mean(np.sum(np.asarray(info["resampled"]), 1))),
                   compile_plus_run_s=t1 - t0, run_s=t2 - t1)
        rows.append(row)
        print(f"{name} K={k:5d}: mean err {row['mean_err']:.4f} (floor {row['mean_floor']:.4f}, "
              f"x{row['mean_err'] / row['mean_floor']:.2f}); weights err {row['weights_err']:.4f} (floor "
              f"{row['weights_floor']:.4f}, x{row['weights_err'] / row['weights_floor']:.2f}); |log Z err| "
              f"{row['log_evidence_err']:.4f}; ESS/K {row['final_ess_frac']:.2f}; run {row['run_s']:.2f}s", flush=True)
    return dict(steps=steps, noise_std=noise_std, num_observations=len(ys), sde="vp", rows=rows)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        ks = [r["K"] for r in res["rows"]]
        for stat, color in (("mean", "C0"), ("weights", "C1")):
            ax.loglog(ks, [r[f"{stat}_err"] for r in res["rows"]], "o-", color=color, label=f"TDS: {stat} error")
            ax.loglog(ks, [r[f"{stat}_floor"] for r in res["rows"]], "--", color=color, label=f"MC floor ({stat})")
        ax.set_xlabel("particles K")
        ax.set_ylabel("RMS error over observations")
        ax.set_title(f"{name}: {res['steps']} VP steps, sigma_y={res['noise_std']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 16, 256 only")
    parser.add_argument("--only", choices=("ring", "8d"), default=None)
    args = parser.parse_args()
    particles = (16, 256) if args.quick else (16, 64, 256, 1024, 4096)
    results = {}
    if args.only in (None, "ring"):
        ys = np.linspace(-4.5, 4.5, 16)[:, None]
        results["ring"] = run_case("ring", ring_mixture(), np.array([[1.0, 0.0]]), ys, 0.5, particles, steps=100)
    if args.only in (None, "8d"):
        mix = random_mixture(jax.random.key(4), 8, num_components=4, separation=2.0)
        rng = np.random.default_rng(5)
        a = rng.standard_normal((3, 8)) / np.sqrt(8)
        ys = np.asarray(mix.sample(jax.random.key(6), 8), np.float64) @ a.T + 0.3 * rng.standard_normal((8, 3))
        results["8d"] = run_case("8d", mix, a, ys, 0.3, particles, steps=200)
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "smc.json")
    old = json.load(open(path)) if os.path.exists(path) else {}
    old.update(results)
    old["machine"] = "shared 2-core CPU (times are upper bounds)"
    with open(path, "w") as f:
        json.dump(old, f, indent=2)
    plot({k: v for k, v in old.items() if isinstance(v, dict) and "rows" in v}, os.path.join(RESULTS, "smc.png"))
    print(f"wrote {path} and smc.png")


if __name__ == "__main__":
    main()
