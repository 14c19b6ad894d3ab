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
sampler (zeta = 5 / NFE), score_sde replacement (reverse diffusion predictor), DDRM (eta = 0.85, eta_b = 1),
TDS with 16 particles per observation and one particle drawn by its weight (its NFE per returned sample
is 16 x steps; tests/test_smc.py and benchmarks/smc.py show its error falling to the floor as K grows).

Digits (``--digits runs/digits``, a trained run): restorations of held-out digits per task (random / box
inpainting, x2 super-resolution (x4 with --digits-tasks), Gaussian deblur; digits are grayscale, so no colorization) and
method (ΠGDM, DPS both forms, replacement on the inpainting tasks, DDRM, TDS with 8 particles), with PSNR,
the digits classifier's accuracy (jaxscore.evaluation, "digits" features), NFE per digit, seconds of a
compiled call and its compile time (DIGITS_STEPS lists the steps of each method).

Usage: python experiments/benchmarks/inverse.py [--quick] [--cases ...] [--skip-mixtures]
[--digits runs/digits [--digits-num N] [--digits-tasks ...] [--digits-methods ...]]
Writes experiments/benchmarks/results/inverse.json, inverse_<case>.png (one plot per operator, the
exact-draw floor drawn beside) and inverse_digits.png (PSNR vs NFE per task).
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
from jaxscore.inverse.tasks import restore
from jaxscore.metrics import exact_draw_floor, mixture_sample_error
from jaxscore.samplers import sample
from jaxscore.sde import VPSDE

RESULTS = os.path.join(os.path.dirname(__file__), "results")
NOISE_STD = 0.3
# DPS paper sampler: the step 2 zeta per iteration does not shrink as y is matched, so the total push
# 2 zeta N must stay fixed as N grows; zeta = 5 / NFE was best on the ring (sweep over 0.02..0.2 at 30..300).
ZETA_TOTAL = 5.0
TDS_PARTICLES = 16
# score evaluations per sampler step and returned sample (the x axis of the plots is NFE per sample)
NFE_PER_STEP = {f"tds_K{TDS_PARTICLES}": TDS_PARTICLES}


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
        # TDS: TDS_PARTICLES particles per observation, ``nfe`` steps, one particle drawn by its weight; its
        # cost per returned sample is TDS_PARTICLES x nfe score calls (+ as many VJPs): see NFE_PER_STEP
        f"tds_K{TDS_PARTICLES}": lambda nfe: lambda k, sf, sde, op, y: restore(
            k, sf, sde, op, y, method="tds", noise_std=NOISE_STD, steps=nfe, particles=TDS_PARTICLES),
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


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        return "unknown"


def run_mixtures(nfes, num, only=None, path=None, method_names=None):
    """Every (case, method, NFE) of the mixtures; with ``method_names`` only those methods run, and their
    rows are merged into the case already saved at ``path`` (so one method can be added or re-measured)."""
    sde = VPSDE()
    results = {}
    saved = {}
    if path and method_names and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f).get("mixtures", {})
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
                "prior": prior_err, "num": num, "methods": {}, "commit": {}}
        if name in saved:
            case["methods"] = dict(saved[name]["methods"])
            case["commit"] = dict(saved[name].get("commit", {}))
        print(f"\n== {name}: posterior weights {case['posterior_weights']}; floor error {floor['error']:.3f} "
              f"tv {floor['tv']:.3f}; prior error {prior_err['error']:.2f} tv {prior_err['tv']:.2f}", flush=True)
        for mname, make in methods(prior).items():
            if method_names and mname not in method_names:
                continue
            case["commit"][mname] = _commit()
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
                rows.append({"nfe": nfe * NFE_PER_STEP.get(mname, 1), "steps": nfe, "error": err["error"],
                             "std": err["std"], "mean": err["mean_corrected"], "tv": err["tv"], "nonfinite": err["nonfinite"], "seconds": wall,
                             "compile_seconds": first - wall})
                print(f"  {mname:14s} NFE {rows[-1]['nfe']:5d}: error {err['error']:.3f} (std {err['std']:.3f}, mean "
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

def digits_methods(score_fn, sde, op, y, noise, data_var):
    """name -> (steps -> (fn(key) -> restorations, NFE per restoration)) on digits. DPS's paper sampler runs
    with ``jaxscore restore``'s zeta = 1 (the paper's range is 0.1..1 at 1000 steps); TDS with
    DIGITS_TDS_PARTICLES particles per digit, one drawn by its weight."""
    shape = y.shape[:1] + op.in_shape
    out = {
        "pigdm": lambda n: (lambda k: sample(k, pigdm(score_fn, sde, op, y, noise_std=noise, data_var=data_var), sde,
                                             shape, "dpmpp_2m", steps=n), n),
        "dps_gauss": lambda n: (lambda k: sample(k, dps(score_fn, sde, op, y, noise_std=noise), sde, shape,
                                                 "euler_maruyama", steps=n), n),
        "dps_paper": lambda n: (lambda k: dps_sample(k, score_fn, sde, op, y, zeta=1.0, steps=n), n),
        "replacement": lambda n: (lambda k: replacement_sample(k, score_fn, sde, op, y, steps=n), n),
        "ddrm": lambda n: (lambda k: ddrm_sample(k, score_fn, sde, op, y, noise_std=noise, steps=n), n),
        "tds": lambda n: (lambda k: restore(k, score_fn, sde, op, y, method="tds", noise_std=noise, steps=n,
                                            particles=DIGITS_TDS_PARTICLES), n * DIGITS_TDS_PARTICLES),
    }
    return out


DIGITS_TDS_PARTICLES = 8
# steps per method on digits (NFE = steps, x particles for TDS): ΠGDM and DDRM at a low and a high budget, the
# others at one (sized for a shared 2-core CPU: each U-Net restoration compiles and runs for tens of seconds)
DIGITS_STEPS = {"pigdm": [20, 100], "ddrm": [20, 100], "dps_paper": [100], "dps_gauss": [100],
                "replacement": [100], "tds": [20]}


def run_digits(workdir, num, steps_of=None, task_names=None, method_names=None):
    """PSNR and digits-classifier accuracy of restorations of ``num`` held-out digits per task and method.

    ``seconds``: one call of the compiled restoration on this machine; ``compile_seconds``: its compilation. score_sde's replacement method runs on the inpainting tasks only."""
    from jaxscore.evaluation.extractors import build_extractor
    from jaxscore.experiment import load_data, load_for_inference

    steps_of = steps_of or DIGITS_STEPS
    config, score_fn, sde, shape, step = load_for_inference(workdir)
    data = load_data(config)
    imgs = data["test"]["images"][:num].astype(np.float32) / 127.5 - 1.0
    labels = np.asarray(data["test"]["labels"][:num])
    x_true = jnp.asarray(imgs)
    h, w, c = shape
    noise = 0.05
    tasks = {
        "inpaint_random": Inpainting(random_mask(jax.random.key(1), shape, 0.3)),
        "inpaint_box": Inpainting(box_mask(shape, h // 4, w // 4, h // 2, w // 2)),
        "superres_x2": SuperResolution(shape, 2),
        "deblur_gauss": gaussian_blur(shape, 1.0),
    }
    if task_names and "superres_x4" in task_names:
        tasks["superres_x4"] = SuperResolution(shape, 4)
    tasks = {k: t for k, t in tasks.items() if not task_names or k in task_names}
    v = float(np.var(imgs))
    classify = jax.jit(lambda x: build_extractor("digits")(x)[1])

    def psnr(x):
        mse = np.mean((np.clip(np.asarray(x), -1, 1) - imgs) ** 2, axis=(1, 2, 3))
        return float(np.mean(10 * np.log10(4.0 / mse)))

    def accuracy(x):
        return float(np.mean(np.argmax(np.asarray(classify(jnp.clip(jnp.asarray(x), -1, 1))), -1) == labels))

    out = {"workdir": workdir, "step": int(step), "num": num, "noise_std": noise, "tds_particles": DIGITS_TDS_PARTICLES,
           "clean_accuracy": accuracy(x_true), "tasks": {}}
    print(f"\n== digits ({workdir}, step {step}, {num} held-out digits): classifier accuracy on clean digits "
          f"{out['clean_accuracy']:.3f}", flush=True)
    for tname, op in tasks.items():
        y = op.forward(x_true) + noise * jax.random.normal(jax.random.key(2), (num,) + op.out_shape)
        pinv = op.pinv(y)
        row = {"pinv": {"psnr": psnr(pinv), "accuracy": accuracy(pinv)}}
        print(f"\n== digits {tname}: pseudo-inverse PSNR {row['pinv']['psnr']:.2f} dB, accuracy "
              f"{row['pinv']['accuracy']:.3f}", flush=True)
        for mname, make in digits_methods(score_fn, sde, op, y, noise, v).items():
            if method_names and mname not in method_names:
                continue
            if mname == "replacement" and not tname.startswith("inpaint"):
                continue
            for n in steps_of.get(mname, []):
                fn, nfe = make(n)
                key = jax.random.key(0)
                t0 = time.perf_counter()
                compiled = jax.jit(fn).lower(key).compile()
                compile_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                x = jax.block_until_ready(compiled(key))
                wall = time.perf_counter() - t0
                rec = {"steps": n, "nfe": nfe, "psnr": psnr(x), "accuracy": accuracy(x), "seconds": wall,
                       "compile_seconds": compile_s, "nonfinite": float(np.mean(~np.isfinite(np.asarray(x))))}
                row.setdefault(mname, []).append(rec)
                print(f"  {mname:12s} NFE {nfe:5d}: PSNR {rec['psnr']:.2f} dB  accuracy {rec['accuracy']:.3f}  "
                      f"{wall:.1f}s (+{rec['compile_seconds']:.1f}s compile)", flush=True)
        out["tasks"][tname] = row
    return out


def plot_digits(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import ScalarFormatter

    tasks = list(res["tasks"])
    names = sorted({m for row in res["tasks"].values() for m in row if m != "pinv"})
    colors = {m: f"C{i}" for i, m in enumerate(names)}
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.2), sharey=True)
    for ax, tname in zip(np.atleast_1d(axes), tasks):
        row = res["tasks"][tname]
        for mname, recs in row.items():
            if mname == "pinv":
                ax.axhline(recs["psnr"], color="gray", ls="--", label="A+y")
                continue
            ax.semilogx([r["nfe"] for r in recs], [r["psnr"] for r in recs], "o-", color=colors[mname], label=mname)
        ax.set_title(tname, fontsize=9)
        ax.set_xlabel("NFE per digit")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="minor", labelsize=6)
    np.atleast_1d(axes)[0].set_ylabel("PSNR (dB)")
    handles = {h.get_label(): h for ax in np.atleast_1d(axes) for h in ax.get_lines()}
    np.atleast_1d(axes)[-1].legend(list(handles.values()), list(handles), fontsize=7)
    fig.suptitle(f"digits: {res['num']} held-out digits, sigma_y = {res['noise_std']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer NFEs and samples")
    parser.add_argument("--cases", nargs="*", default=None, help="only these mixture cases")
    parser.add_argument("--methods", nargs="*", default=None,
                        help="only these mixture methods (merged into the saved cases)")
    parser.add_argument("--digits", default=None, help="a trained digits run directory (e.g. runs/digits)")
    parser.add_argument("--digits-tasks", nargs="*", default=None, help="only these digits tasks")
    parser.add_argument("--digits-methods", nargs="*", default=None, help="only these methods on digits")
    parser.add_argument("--digits-num", type=int, default=None, help="held-out digits restored (default 64; --quick 32)")
    parser.add_argument("--skip-mixtures", action="store_true")
    args = parser.parse_args()
    nfes = [10, 30, 100] if args.quick else [10, 30, 100, 300]
    num = 1000 if args.quick else 4000
    os.makedirs(RESULTS, exist_ok=True)
    out = {"platform": platform.platform(), "device": str(jax.devices()[0]), "noise_std": NOISE_STD}
    if not args.skip_mixtures:
        out["num"] = num  # mixture samples per (case, method, NFE); each case also records its own
    path = os.path.join(RESULTS, "inverse.json")
    save(out, path)
    if not args.skip_mixtures:
        res = run_mixtures(nfes, num, args.cases, path, args.methods)
        print("plots:", [f"inverse_{name}.png" for name in res])
    if args.digits:
        num_digits = args.digits_num or (32 if args.quick else 64)
        res = run_digits(args.digits, num_digits, None, args.digits_tasks, args.digits_methods)
        save({"digits": res}, path)
        print("plot:", plot_digits(res, os.path.join(RESULTS, "inverse_digits.png")))
    print("wrote", path)


if __name__ == "__main__":
    main()
