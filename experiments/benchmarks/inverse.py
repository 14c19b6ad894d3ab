"""Benchmark: inverse-problem methods against exact posteriors (mixtures) and on digits.

Mixtures (exact prior score, VP SDE): for each (prior, operator) case the exact posterior of the
Gaussian-mixture prior under y = A x + N(0, sigma_y^2 I) is a mixture again
(jaxscore.data.toy.linear_gaussian_posterior); each method's samples are scored against it with
jaxscore.metrics.mixture_sample_error (``error`` = max(per-mode std error, mean error less its
Monte-Carlo part), in posterior stds; ``tv`` = mode-weight total variation) at several NFEs. The
exact-draw floor (the same figures for exact posterior draws of the same size) and the prior's
own error (what a method that ignores y scores) are printed beside.

Cases: 2-D ring (jaxscore.data.toy.ring_mixture) with a mask, a blur and a random dense operator;
8-D random mixture with a mask, a circular blur and a random dense operator.
Methods: ΠGDM (+ dpmpp_2m and + euler_maruyama), DPS Gaussian score (+ euler_maruyama), DPS paper
sampler (zeta = 5 / NFE), score_sde replacement (reverse diffusion predictor), DDRM (eta = 0.85, eta_b = 1).

Digits (``--digits``, a trained run, default runs/digits): PSNR of restorations of held-out digits per
task (random / box inpainting, x2 / x4 super-resolution, Gaussian deblur; digits are grayscale, so
no colorization) and method, with NFE and seconds.

Usage: python experiments/benchmarks/inverse.py [--quick] [--digits runs/digits [--digits-tasks ...]
[--digits-methods ...] [--digits-nfe ...]] (on CPU each U-Net sampler compiles for minutes: select a few)
Writes experiments/benchmarks/results/inverse.json and inverse_<case>.png (one plot per operator).
Timings on a shared CPU are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore.data.toy import random_mixture, ring_mixture
from jaxscore.inverse import (
    Blur,
    DenseOperator,
    Inpainting,
    SuperResolution,
    box_mask,
    ddrm_sample,
    dps,
    dps_sample,
    gaussian_blur,
    pigdm,
    random_mask,
    replacement_sample,
)
from jaxscore.metrics import exact_draw_floor, mixture_sample_error
from jaxscore.samplers import sample
from jaxscore.sde import VPSDE

RESULTS = os.path.join(os.path.dirname(__file__), "results")
NOISE_STD = 0.3
# DPS paper sampler: the step 2 zeta per iteration does not shrink as y is matched, so the total push
# 2 zeta N must stay fixed as N grows; zeta = 5 / NFE was best on the ring (sweep over 0.02..0.2 at 30..300).
ZETA_TOTAL = 5.0


def _image_score(score_fn, shape):
    """A flat mixture score [B, d] seen on [B, *shape] examples (for image-shaped operators)."""
    return lambda x, t: score_fn(x.reshape(x.shape[0], -1), t).reshape(x.shape)


def mixture_cases():
    """(name, prior, operator, example shape, x_true) for every benchmark case."""
    ring = ring_mixture()
    mix8 = random_mixture(jax.random.key(3), 8, 4)
    rng = np.random.default_rng(0)
    kernel8 = np.zeros((1, 8))
    kernel8[0, [0, 1, 7]] = [0.5, 0.25, 0.25]
    m8 = np.asarray(mix8.means)
    between = lambda i, j: 0.5 * (m8[i] + m8[j])  # noqa: E731  (an x between two modes: a bimodal posterior)
    return [
        ("ring_mask", ring, Inpainting(jnp.array([1.0, 0.0])), np.array([2.0, 2.0])),
        ("ring_blur", ring, Blur(np.array([[0.7, 0.3]]), (1, 2, 1)), np.array([3.0, 1.0])),
        ("ring_dense", ring, DenseOperator(rng.standard_normal((1, 2))), np.array([-2.0, 3.0])),
        ("mix8_mask", mix8, Inpainting(jnp.array([1.0, 0, 1, 0, 1, 0, 0, 1])), between(0, 2)),
        ("mix8_blur", mix8, Blur(kernel8, (1, 8, 1)), between(1, 3)),
        ("mix8_dense", mix8, DenseOperator(rng.standard_normal((3, 8)) / np.sqrt(8)), between(0, 2)),
    ]


def methods(prior):
    """name -> (nfe -> sampler(key, score_fn, sde, op, y) -> samples). data_var: the prior's mean variance."""
    v = float(jnp.mean(jnp.diag(prior.covariance)))
    out = {
        "pigdm_dpmpp2m": lambda nfe: lambda k, sf, sde, op, y: sample(
            k, pigdm(sf, sde, op, y, noise_std=NOISE_STD, data_var=v), sde, y.shape[:1] + op.in_shape, "dpmpp_2m",
            steps=nfe),
        "pigdm_em": lambda nfe: lambda k, sf, sde, op, y: sample(
            k, pigdm(sf, sde, op, y, noise_std=NOISE_STD, data_var=v), sde, y.shape[:1] + op.in_shape,
            "euler_maruyama", steps=nfe),
        "dps_gauss_em": lambda nfe: lambda k, sf, sde, op, y: sample(
            k, dps(sf, sde, op, y, noise_std=NOISE_STD), sde, y.shape[:1] + op.in_shape, "euler_maruyama", steps=nfe),
        "dps_paper": lambda nfe: lambda k, sf, sde, op, y: dps_sample(k, sf, sde, op, y, zeta=ZETA_TOTAL / nfe,
                                                                      steps=nfe),
        "replacement": lambda nfe: lambda k, sf, sde, op, y: replacement_sample(k, sf, sde, op, y, steps=nfe),
        "ddrm": lambda nfe: lambda k, sf, sde, op, y: ddrm_sample(k, sf, sde, op, y, noise_std=NOISE_STD, steps=nfe),
    }
    return out


def save(update: dict, path: str) -> dict:
    """Merge ``update`` into the JSON at ``path`` (mixture cases one by one; digits separately)."""
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            out = json.load(f)
    mixtures = {**out.get("mixtures", {}), **update.get("mixtures", {})}
    out.update(update)
    if mixtures:
        out["mixtures"] = mixtures
    with open(path, "w") as f:
        json.dump(out, f, indent=1, default=float)
    return out


def run_mixtures(nfes, num, only=None, path=None):
    sde = VPSDE()
    results = {}
    for name, prior, op, x_true in mixture_cases():
        if only and name not in only:
            continue
        a = np.asarray(op.matrix(), np.float64)
        y1 = a @ x_true + NOISE_STD * np.random.default_rng(1).standard_normal(a.shape[0])
        post = prior.posterior(a, y1, NOISE_STD)
        y = jnp.broadcast_to(jnp.asarray(y1, jnp.float32).reshape(op.out_shape), (num,) + op.out_shape)
        sf = _image_score(prior.score_fn(sde), op.in_shape)
        floor = exact_draw_floor(jax.random.key(9), post, num)
        prior_err = mixture_sample_error(prior.sample(jax.random.key(8), num), post)
        case = {"posterior_weights": np.round(np.asarray(post.weights), 4).tolist(), "floor": floor,
                "prior": prior_err, "methods": {}}
        print(f"\n== {name}: posterior weights {case['posterior_weights']}; floor error {floor['error']:.3f} "
              f"tv {floor['tv']:.3f}; prior error {prior_err['error']:.2f} tv {prior_err['tv']:.2f}", flush=True)
        for mname, make in methods(prior).items():
            rows = []
            for nfe in nfes:
                run = make(nfe)
                fn = jax.jit(lambda k: run(k, sf, sde, op, y))
                t0 = time.perf_counter()
                x = jax.block_until_ready(fn(jax.random.key(0)))
                first = time.perf_counter() - t0
                t0 = time.perf_counter()
                x = jax.block_until_ready(fn(jax.random.key(1)))
                wall = time.perf_counter() - t0
                err = mixture_sample_error(np.asarray(x).reshape(num, -1), post)
                rows.append({"nfe": nfe, "error": err["error"], "std": err["std"], "mean": err["mean_corrected"],
                             "tv": err["tv"], "nonfinite": err["nonfinite"], "seconds": wall,
                             "compile_seconds": first - wall})
                print(f"  {mname:14s} NFE {nfe:4d}: error {err['error']:.3f} (std {err['std']:.3f}, mean "
                      f"{err['mean_corrected']:.3f}) tv {err['tv']:.3f}  {wall:.2f}s", flush=True)
            case["methods"][mname] = rows
        results[name] = case
        if path:
            save({"mixtures": {name: case}}, path)
            plot_mixtures({name: case}, os.path.join(os.path.dirname(path), "inverse"))
    return results


def plot_mixtures(results, prefix):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, case in results.items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for mname, rows in case["methods"].items():
            nfe = [r["nfe"] for r in rows]
            axes[0].loglog(nfe, [max(r["error"], 1e-3) for r in rows], "o-", label=mname)
            axes[1].semilogx(nfe, [r["tv"] for r in rows], "o-", label=mname)
        for ax, key, title in ((axes[0], "error", "error vs exact posterior (posterior stds)"),
                               (axes[1], "tv", "mode-weight TV")):
            ax.axhline(case["floor"][key], color="k", ls=":", label="exact draws (MC floor)")
            ax.axhline(case["prior"][key], color="gray", ls="--", label="prior (ignores y)")
            ax.set_xlabel("NFE")
            ax.set_title(f"{name}: {title}", fontsize=9)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        path = f"{prefix}_{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# --- digits -------------------------------------------------------------------------------------

def run_digits(workdir, num, nfe_list, task_names=None, method_names=None):
    from jaxscore.experiment import load_data, load_for_inference

    config, score_fn, sde, shape, step = load_for_inference(workdir)
    data = load_data(config)
    imgs = data["test"]["images"][:num].astype(np.float32) / 127.5 - 1.0
    x_true = jnp.asarray(imgs)
    h, w, c = shape
    noise = 0.05
    tasks = {
        "inpaint_random": Inpainting(random_mask(jax.random.key(1), shape, 0.3)),
        "inpaint_box": Inpainting(box_mask(shape, h // 4, w // 4, h // 2, w // 2)),
        "superres_x2": SuperResolution(shape, 2),
        "superres_x4": SuperResolution(shape, 4),
        "deblur_gauss": gaussian_blur(shape, 1.0),
    }
    tasks = {k: t for k, t in tasks.items() if not task_names or k in task_names}
    v = float(np.var(imgs))

    def psnr(x):
        mse = np.mean((np.clip(np.asarray(x), -1, 1) - imgs) ** 2, axis=(1, 2, 3))
        return float(np.mean(10 * np.log10(4.0 / mse)))

    out = {"workdir": workdir, "step": int(step), "num": num, "noise_std": noise, "tasks": {}}
    for tname, op in tasks.items():
        y = op.forward(x_true) + noise * jax.random.normal(jax.random.key(2), (num,) + op.out_shape)
        row = {"pinv": psnr(op.pinv(y))}
        print(f"\n== digits {tname}: pseudo-inverse PSNR {row['pinv']:.2f} dB", flush=True)
        for nfe in nfe_list:
            runs = {
                "pigdm": lambda k: sample(k, pigdm(score_fn, sde, op, y, noise_std=noise, data_var=v), sde,
                                          (num,) + shape, "dpmpp_2m", steps=nfe),
                "dps_gauss": lambda k: sample(k, dps(score_fn, sde, op, y, noise_std=noise), sde, (num,) + shape,
                                              "euler_maruyama", steps=nfe),
                "dps_paper": lambda k: dps_sample(k, score_fn, sde, op, y, zeta=ZETA_TOTAL / nfe, steps=nfe),
                "replacement": lambda k: replacement_sample(k, score_fn, sde, op, y, steps=nfe),
                "ddrm": lambda k: ddrm_sample(k, score_fn, sde, op, y, noise_std=noise, steps=nfe),
            }
            for mname, fn in runs.items():
                if method_names and mname not in method_names:
                    continue
                fn = jax.jit(fn)
                t0 = time.perf_counter()
                x = jax.block_until_ready(fn(jax.random.key(0)))
                wall = time.perf_counter() - t0
                row.setdefault(mname, []).append({"nfe": nfe, "psnr": psnr(x), "seconds_incl_compile": wall})
                print(f"  {mname:12s} NFE {nfe:4d}: PSNR {psnr(x):.2f} dB  ({wall:.1f}s incl. compile)", flush=True)
        out["tasks"][tname] = row
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer NFEs and samples")
    parser.add_argument("--cases", nargs="*", default=None, help="only these mixture cases")
    parser.add_argument("--digits", default=None, help="a trained digits run directory (e.g. runs/digits)")
    parser.add_argument("--digits-tasks", nargs="*", default=None, help="only these digits tasks")
    parser.add_argument("--digits-methods", nargs="*", default=None, help="only these methods on digits")
    parser.add_argument("--digits-nfe", nargs="*", type=int, default=None, help="NFEs on digits (default 20 100 [300])")
    parser.add_argument("--skip-mixtures", action="store_true")
    args = parser.parse_args()
    nfes = [10, 30, 100] if args.quick else [10, 30, 100, 300]
    num = 1000 if args.quick else 4000
    os.makedirs(RESULTS, exist_ok=True)
    out = {"platform": platform.platform(), "device": str(jax.devices()[0]), "noise_std": NOISE_STD, "num": num}
    path = os.path.join(RESULTS, "inverse.json")
    save(out, path)
    if not args.skip_mixtures:
        res = run_mixtures(nfes, num, args.cases, path)
        print("plots:", [f"inverse_{name}.png" for name in res])
    if args.digits:
        nfe_digits = args.digits_nfe or ([20, 100] if args.quick else [20, 100, 300])
        save({"digits": run_digits(args.digits, 64 if args.quick else 256, nfe_digits, args.digits_tasks,
                                   args.digits_methods)}, path)
    print("wrote", path)


if __name__ == "__main__":
    main()
