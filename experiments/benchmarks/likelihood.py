"""Benchmark: probability-flow likelihoods and diffrax samplers on exact Gaussian mixtures, and
likelihood throughput of the digits U-Net.

Toy section. For each case (2-D ring mixture, 8-D random mixture; VP SDE; exact score) it measures
  * compile time (trace + XLA compile of the jitted call) and wall time per batch (median),
  * NFE (augmented-field evaluations: max over the batch, which is what a vmapped solve costs,
    and the mean per example),
  * the error of log_likelihood against the analytic log p_{t_min}(x) (nats/dim), and the
    ODE-only error with the exact p_T in place of the N(0, I) prior (isolates solver and
    divergence error from the prior mismatch),
for exact and Hutchinson (1 Rademacher probe) divergences at rtol = atol = 1e-5, plus the
compile/wall time and NFE of ode_sampler and sde_sampler.

U-Net section (issue 14). bits_per_dim of 8x8 digits test images under the U-Net of
experiments/configs/digits.py (unet_tiny, ch 16, EDM preconditioning on the VP SDE), untrained
parameters by default or a run's EMA parameters with --workdir (the NFE, hence the throughput,
depends on the score field: a trained model's is the realistic figure). Settings:
  * score_sde: Hutchinson (1 Rademacher probe), dopri5 (= RK45), rtol = atol = 1e-5, t_min = 1e-5
    (bits_per_dim's defaults, score_sde's likelihood settings),
  * exact divergence at the same settings (D = 64 JVPs per evaluation instead of 1),
  * Hutchinson at rtol = atol = 1e-3 (the training-time eval hook's tolerance),
  * score_sde's settings but t_min = 1e-3, the VP SDE's t_min and the lower end of this
    package's default training times (what t_min = 1e-5 changes for a model trained on [1e-3, 1]).
Reports compile time, wall per batch, examples/s (= batch / wall), NFE, mean bits/dim.

Usage: python experiments/benchmarks/likelihood.py [--quick] [--only toy|unet] [--workdir runs/digits] [--no-exact]
Writes experiments/benchmarks/results/likelihood.json (sections not run are kept from the file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore.data.toy import random_mixture, ring_mixture
from jaxscore.likelihood import log_likelihood
from jaxscore.samplers.diffrax_samplers import ode_sampler, sde_sampler
from jaxscore.sde import VPSDE

RESULTS = os.path.join(os.path.dirname(__file__), "results", "likelihood.json")


def timed(fn, *args, repeats: int):
    """(compile seconds, median wall seconds per call, output) for jax.jit(fn)(*args)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    out = jax.block_until_ready(compiled(*args))  # warm-up
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        walls.append(time.perf_counter() - t0)
    return compile_s, statistics.median(walls), out


def likelihood_case(name, mix, sde, batch, divergence, repeats, tol=1e-5):
    sf = mix.score_fn(sde)
    x = mix.sample(jax.random.key(1), batch)
    key = jax.random.key(0)

    def fn(x):
        return log_likelihood(key, sf, sde, x, divergence=divergence, rtol=tol, atol=tol, return_info=True)

    compile_s, wall_s, (logp, info) = timed(fn, x, repeats=repeats)
    d = mix.dim
    ref = mix.log_prob_t(x, jnp.full((batch,), sde.t_min), sde)
    ode_only = info["delta_logp"] + mix.log_prob_t(info["z"], jnp.full((batch,), sde.T), sde)
    err = np.asarray(logp - ref) / d
    err_ode = np.asarray(ode_only - ref) / d
    row = {
        "case": name, "dim": d, "batch": batch, "divergence": divergence, "rtol": tol, "atol": tol,
        "compile_s": round(compile_s, 3), "wall_s_per_batch": round(wall_s, 4),
        "nfe_max": int(info["nfe"]), "nfe_mean": float(jnp.mean(info["nfe_per_example"])),
        "err_nats_per_dim_mean_abs": float(np.mean(np.abs(err))),
        "err_nats_per_dim_max_abs": float(np.max(np.abs(err))),
        "err_nats_per_dim_mean": float(np.mean(err)),
        "ode_only_err_nats_per_dim_mean_abs": float(np.mean(np.abs(err_ode))),
        "ode_only_err_nats_per_dim_max_abs": float(np.max(np.abs(err_ode))),
        "ode_only_err_nats_per_dim_mean": float(np.mean(err_ode)),
        "mean_logp_nats_per_dim": float(jnp.mean(logp)) / d,
    }
    print(f"{name:>10} {divergence:>10} B={batch:5d}  compile {compile_s:6.2f}s  wall {wall_s*1e3:8.1f}ms  "
          f"NFE max {row['nfe_max']:4d} mean {row['nfe_mean']:6.1f}  "
          f"|err| mean {row['err_nats_per_dim_mean_abs']:.2e} max {row['err_nats_per_dim_max_abs']:.2e}  "
          f"ODE-only |err| mean {row['ode_only_err_nats_per_dim_mean_abs']:.2e} "
          f"max {row['ode_only_err_nats_per_dim_max_abs']:.2e} (nats/dim)")
    return row


def sampler_case(name, fn, batch, repeats):
    key = jax.random.key(0)
    compile_s, wall_s, (x, info) = timed(fn, key, repeats=repeats)
    row = {"sampler": name, "batch": batch, "compile_s": round(compile_s, 3),
           "wall_s_per_batch": round(wall_s, 4), "nfe": int(info["nfe"])}
    print(f"{name:>28} B={batch:5d}  compile {compile_s:6.2f}s  wall {wall_s*1e3:8.1f}ms  NFE {row['nfe']}")
    return row


DIGITS_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "digits.py")

UNET_SETTINGS = (
    # (name, bits_per_dim options)
    ("score_sde (hutchinson, dopri5, tol 1e-5, t_min 1e-5)", {}),
    ("exact divergence (dopri5, tol 1e-5, t_min 1e-5)", {"divergence": "exact"}),
    ("hutchinson, tol 1e-3 (eval hook)", {"rtol": 1e-3, "atol": 1e-3}),
    ("score_sde but t_min 1e-3 (VPSDE().t_min)", {"t_min": 1e-3}),
)


def unet_score_fn(workdir):
    """(score_fn, sde, test images uint8 [N, 8, 8, 1], source) for the digits preset."""
    from jaxscore import experiment
    from jaxscore.config import load_config

    if workdir:
        config, score_fn, sde, _, step = experiment.load_for_inference(workdir)
        source = f"EMA params of {workdir} (step {step})"
    else:
        config = load_config(DIGITS_CONFIG)
        shape = tuple(experiment.load_data(config)["shape"])
        model = experiment.build_model_from_config(config.model)
        params = experiment.make_init_fn(model, shape)(jax.random.key(0))
        sde = experiment.build_sde(config.sde)
        score_fn = experiment.model_score_fn(config, model, params, sde)
        source = "untrained parameters (init key 0)"
    images = experiment.load_data(config)["test"]["images"]
    return score_fn, sde, images, source


def unet_case(name, score_fn, sde, images, batch, repeats, options):
    from jaxscore.likelihood import bits_per_dim

    key = jax.random.key(0)
    x = jnp.asarray(images[:batch])

    def fn(x):
        return bits_per_dim(key, score_fn, sde, x, return_info=True, **options)

    compile_s, wall_s, (bpd, info) = timed(fn, x, repeats=repeats)
    row = {"setting": name, "options": options, "batch": batch, "compile_s": round(compile_s, 2),
           "wall_s_per_batch": round(wall_s, 3), "examples_per_s": round(batch / wall_s, 3),
           "nfe_max": int(info["nfe"]), "nfe_mean": float(jnp.mean(info["nfe_per_example"])),
           "bits_per_dim_mean": float(jnp.mean(bpd))}
    print(f"{name:>52} B={batch:3d}  compile {compile_s:6.1f}s  wall {wall_s:7.2f}s  {row['examples_per_s']:8.3f} ex/s  "
          f"NFE max {row['nfe_max']:4d} mean {row['nfe_mean']:6.1f}  bpd {row['bits_per_dim_mean']:.3f}")
    return row


def unet_section(args, repeats):
    score_fn, sde, images, source = unet_score_fn(args.workdir)
    print(f"digits U-Net ({source}); D = {int(np.prod(images.shape[1:]))}")
    rows = []
    for name, options in UNET_SETTINGS:
        if args.no_exact and options.get("divergence") == "exact":
            continue
        batch = args.unet_batch if options.get("divergence") != "exact" else max(1, args.unet_batch // 4)
        rows.append(unet_case(name, score_fn, sde, images, batch, repeats, options))
    return {"model": "digits preset (experiments/configs/digits.py): unet_tiny ch 16, EDM parameterization, VP SDE",
            "params": source, "device": str(jax.devices()[0].device_kind), "cpu_count": os.cpu_count(),
            "quick": args.quick,
            "note": ("examples/s = batch / median wall per jitted bits_per_dim call (compile excluded). The exact "
                     "divergence runs a quarter of the batch (64 JVPs per evaluation). On a shared CPU the "
                     "figures are upper bounds on time (lower bounds on throughput)."),
            "rows": rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches, one repeat")
    parser.add_argument("--only", choices=("toy", "unet"), default=None, help="run one section (default both)")
    parser.add_argument("--workdir", default=None, help="U-Net: a digits run's EMA params (default: untrained)")
    parser.add_argument("--unet-batch", type=int, default=None, help="U-Net batch (default 8 quick, 32 otherwise)")
    parser.add_argument("--no-exact", action="store_true", help="U-Net: skip the exact-divergence setting")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args()
    repeats = 1 if args.quick else 5
    args.unet_batch = args.unet_batch or (8 if args.quick else 32)
    result = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            result = json.load(f)
    if args.only != "toy":
        key = "unet_trained" if args.workdir else "unet"
        result[key] = unet_section(args, 1 if args.quick else 3)
    if args.only != "unet":
        result.update(toy_section(args, repeats))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


def toy_section(args, repeats):
    b2, b8 = (128, 64) if args.quick else (1024, 256)

    sde = VPSDE()
    ring = ring_mixture()
    mix8 = random_mixture(jax.random.key(8), 8, 3)
    rows = []
    for name, mix, batch in (("ring-2d", ring, b2), ("mixture-8d", mix8, b8)):
        for divergence in ("exact", "hutchinson"):
            rows.append(likelihood_case(name, mix, sde, batch, divergence, repeats))

    sf = ring.score_fn(sde)
    samplers = [
        ("ode_sampler tsit5 adaptive", lambda k: ode_sampler(k, sf, sde, (b2, 2), return_info=True)),
        ("ode_sampler tsit5 100 steps", lambda k: ode_sampler(k, sf, sde, (b2, 2), steps=100, return_info=True)),
        ("sde_sampler euler 1000 steps", lambda k: sde_sampler(k, sf, sde, (b2, 2), steps=1000, return_info=True)),
    ]
    sampler_rows = [sampler_case(name, fn, b2, repeats) for name, fn in samplers]

    return {
        "benchmark": "likelihood",
        "quick": args.quick,
        "sde": "VPSDE(beta_min=0.1, beta_max=20), t_min=1e-3 (log_likelihood's default: the SDE's t_min)",
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "note": ("err = log_likelihood - exact log p_{t_min}(x); ode_only replaces the N(0, I) prior by the exact "
                 "p_T, isolating solver and divergence error. nfe_max = batched score evaluations of the vmapped "
                 "solve; each costs d (exact) or 1 (Hutchinson) extra JVPs. Hutchinson errors are per-example "
                 "(one probe), unbiased on average."),
        "likelihood": rows,
        "samplers": sampler_rows,
    }


if __name__ == "__main__":
    main()
