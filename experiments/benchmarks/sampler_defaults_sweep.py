r"""Sweep behind the deterministic fixed-step samplers' default range and grid (``grids.default_range``).

Tuned ONLY on the benchmark's two TUNED mixtures (``samplers.TUNED``: ring2d, mix16d), VP SDE, exact scores.
For each (sampler, steps) the sampler is compiled once with the grid as a traced argument, then run on
every grid of the sweep from the same prior noise (common random numbers):

* grid family: ``edm`` (Karras rho-grid in sigma~ = sigma_t/alpha_t, rho in RHOS), ``logsnr`` (uniform in
  log sigma~, the rho -> inf limit), ``auto`` (the previous default: power-in-t blended with logsnr);
* start ``sigma_max`` (sigma~ units; ``T`` = the SDE's T, sigma~ = 152 for VP); ``jump``: a first step from T
  to ``sigma_max`` and the remaining ``steps - 1`` on the family's grid (pays one NFE to remove the
  prior mismatch of a low start);
* end ``sigma_min``.

Each run is scored with the benchmark's measure (:func:`jaxscore.metrics.mixture_sample_error`, whose
Monte-Carlo floor at these sample counts is printed) and with a *paired* error against a 300-step
reference solve (UniPC on a log-SNR grid from T to sigma~ = 1e-3) from the same noise: per mode
sum_k w_k mean_j |s_kj(x) - s_kj(ref)| and sum_k w_k rms_j(mean_kj(x) - mean_kj(ref)) in true stds, whose
Monte-Carlo part largely cancels (the samples are smooth maps of the same noise), so it resolves
discretisation bias far below the unpaired floor. ``bias`` = max of the two.

Writes ``results/sampler_defaults_sweep.json`` (one row per run). ``--quick`` runs a small subset.
``--final-step``: the later sweep behind ``denoise="auto"`` (:func:`final_step_sweep`, on all six mixtures).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from samplers import HELD_OUT, TUNED, mixtures  # noqa: E402

from jaxscore.metrics import assign_modes, exact_draw_floor, mixture_sample_error  # noqa: E402
from jaxscore.samplers import sample, time_grid  # noqa: E402
from jaxscore.sde import VPSDE  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
RHOS = (3.0, 5.0, 7.0)


def mode_stats(x, mix):
    """Per mode: (weight, std per eigen-axis [d], mean per eigen-axis [d]) in standardized coordinates."""
    x = np.asarray(x, np.float64)
    labels = assign_modes(x, mix)
    means, vecs = np.asarray(mix.means, np.float64), np.asarray(mix.eigvecs, np.float64)
    stds = np.sqrt(np.asarray(mix.eigvals, np.float64))
    out = []
    for k in range(len(means)):
        y = (x[labels == k] - means[k]) @ vecs[k] / stds[k]
        out.append((y.std(0, ddof=1), y.mean(0)) if len(y) > 2 else (np.full(x.shape[1], np.nan),) * 2)
    return out


def paired_error(x, ref_stats, mix):
    w = np.asarray(mix.weights, np.float64)
    st = mode_stats(x, mix)
    std = sum(w[k] * np.mean(np.abs(st[k][0] - ref_stats[k][0])) for k in range(len(w)))
    mean = sum(w[k] * np.sqrt(np.mean((st[k][1] - ref_stats[k][1]) ** 2)) for k in range(len(w)))
    std, mean = float(np.nan_to_num(std, nan=1.0)), float(np.nan_to_num(mean, nan=10.0))
    return {"pstd": std, "pmean": mean, "bias": max(std, mean)}


def make_grid(sde, steps, family, sigma_max, sigma_min, jump):
    smax = None if sigma_max == "T" else float(sigma_max)
    kw = dict(sigma_min=float(sigma_min), sigma_max=smax)
    if family.startswith("edm"):
        kw.update(grid="edm", rho=float(family[3:]))
    else:
        kw.update(grid=family)
    if jump and smax is not None:
        rest = time_grid(sde, steps - 1, **kw)
        return jnp.concatenate([jnp.asarray([sde.T], rest.dtype), rest])
    return time_grid(sde, steps, **kw)


SAMPLERS = {  # label -> (sampler, options)
    "ddim": ("ddim", {}),
    "dpmpp_2m": ("dpmpp_2m", {}),
    "dpmpp_2m_nolof": ("dpmpp_2m", {"lower_order_final": False}),
    "dpmpp_3m": ("dpmpp_3m", {}),
    "unipc": ("unipc", {}),
    "unipc_3": ("unipc", {"order": 3}),
    "unipc_nolof": ("unipc", {"lower_order_final": False}),
    "heun": ("heun", {}),
}
PER_STEP = {"heun": 2}  # score evaluations per step (NFE budget -> steps)


def prior_mismatch(mix, sde, num, key, sigma_maxes=(5.0, 10.0, 20.0, 40.0, 80.0), steps=300):
    """The error a start at ``sigma_max`` (x~ ~ N(0, sigma_max^2 I) in place of p_data * N(0, sigma_max^2 I)) leaves
    after a near-exact solve: paired error of a ``steps``-step UniPC solve from each start against the same solve
    from T (same noise), and the benchmark measure of each. Closed form for a Gaussian N(m, c) per axis: the
    start's z = x~/sigma_max has mean -m/sqrt(c + sigma^2) and variance sigma^2/(c + sigma^2) under the true
    marginal, so the output mean is off by |m|/sqrt(c + sigma^2) true stds (times sqrt(c), and rescaled)."""
    sf = mix.score_fn(sde)
    shape = (num, mix.dim)

    def solve(smax):
        return np.asarray(jax.jit(lambda k: sample(k, sf, sde, shape, "unipc", steps=steps, grid="logsnr",
                                                   sigma_min=1e-3, sigma_max=smax))(key))

    ref = solve(None)
    ref_stats = mode_stats(ref, mix)
    out = {"T": {**mixture_sample_error(ref, mix), "bias": 0.0}}
    for smax in sigma_maxes:
        x = solve(smax)
        out[str(smax)] = {**mixture_sample_error(x, mix), **paired_error(x, ref_stats, mix)}
    return out


FINAL_NFES = (8, 10, 12, 15, 20)
FINAL_ENDS = (0.03, 0.04, 0.05, 0.07, 0.1)
FINAL_CONFIGS = {"unipc2": ("unipc", {"order": 2}), "unipc3": ("unipc", {"order": 3}), "dpmpp_2m": ("dpmpp_2m", {})}


def final_step_sweep(names, num: int, key) -> list:
    """The sweep behind ``denoise="auto"`` (:func:`jaxscore.samplers.grids.default_range`): at each NFE budget,
    "stop" (``steps = NFE`` on the default grid, ``denoise=False``: the run ends at the grid's end) against "extrapolate"
    (``NFE - 1`` steps on the default grid ending at sigma~ = ``end``, then the extrapolated step to 0), for unipc of
    order 2 and 3 and dpmpp_2m, scored with the benchmark's error. Returns one row per run."""
    sde = VPSDE()
    rows = []
    for mname, mix in mixtures(names).items():
        sf = mix.score_fn(sde)
        shape = (num, mix.dim)
        for label, (name, opts) in FINAL_CONFIGS.items():
            for nfe in FINAL_NFES:
                x = jax.jit(lambda k: sample(k, sf, sde, shape, name, steps=nfe, denoise=False, **opts))(key)
                rows.append({"mix": mname, "config": label, "nfe": nfe, "rule": "stop",
                             **mixture_sample_error(np.asarray(x), mix)})
                run = jax.jit(lambda k, t_end: sample(k, sf, sde, shape, name, steps=nfe - 1, t_min=t_end,
                                                      denoise="extrapolate", **opts))
                line = f"[{mname}] {label:8s} nfe {nfe:2d}: stop {rows[-1]['error']:.4f} | extrapolate"
                for end in FINAL_ENDS:
                    x = run(key, sde.t_from_sigma_ratio(jnp.asarray(end)))
                    rows.append({"mix": mname, "config": label, "nfe": nfe, "rule": f"extrapolate_{end}",
                                 **mixture_sample_error(np.asarray(x), mix)})
                    line += f" {end}: {rows[-1]['error']:.4f}"
                print(line, flush=True)
    return rows


def final_step_sweep_summary(rows) -> dict:
    """Per (NFE, unipc order, rule): the largest over the mixtures of the best of that unipc and dpmpp_2m."""
    summary = {}
    for nfe, order in itertools.product(FINAL_NFES, ("unipc2", "unipc3")):
        for rule in ["stop"] + [f"extrapolate_{e}" for e in FINAL_ENDS]:
            best = {}
            for r in rows:
                if r["nfe"] == nfe and r["rule"] == rule and r["config"] in (order, "dpmpp_2m"):
                    best[r["mix"]] = min(best.get(r["mix"], np.inf), r["error"])
            if best:
                summary[f"{nfe}/{order}/{rule}"] = {"max": max(best.values()), "per_mixture": best}
    return {"summary": summary}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mixtures", default=",".join(TUNED))
    p.add_argument("--num", type=int, default=8000)
    p.add_argument("--samplers", default="dpmpp_2m,unipc,unipc_3,dpmpp_3m")
    p.add_argument("--steps", default="5,10,20")
    p.add_argument("--families", default="edm3,edm5,edm7,logsnr,auto")
    p.add_argument("--sigma-max", default="5,10,20,40,80,T")
    p.add_argument("--sigma-min", default="0.005,0.01,0.02,0.04")
    p.add_argument("--jump", default="0,1")
    p.add_argument("--denoise", default="0")
    p.add_argument("--out", default=os.path.join(RESULTS, "sampler_defaults_sweep.json"))
    p.add_argument("--mismatch", action="store_true", help="only the prior mismatch of a start below T")
    p.add_argument("--final-step", action="store_true",
                   help="only the final-step sweep (stop at the grid's end vs the extrapolated step; all six mixtures "
                        "unless --mixtures, 20,000 samples unless --num): results/sampler_final_step_sweep.json")
    a = p.parse_args(argv)
    sde = VPSDE()
    key = jax.random.PRNGKey(0)
    if a.final_step:
        names = a.mixtures.split(",") if a.mixtures != ",".join(TUNED) else TUNED + HELD_OUT
        num = 20000 if a.num == 8000 else a.num
        out = os.path.join(RESULTS, "sampler_final_step_sweep.json")
        rows = final_step_sweep(names, num, key)
        if os.path.exists(out):  # merge with the mixtures of an earlier run (e.g. the other half, run in parallel)
            with open(out) as f:
                rows = [r for r in json.load(f)["rows"] if r["mix"] not in names] + rows
        res = {"num": num, **final_step_sweep_summary(rows), "rows": rows}
        with open(out, "w") as f:
            json.dump(res, f, default=float, indent=1)
        return
    if a.mismatch:
        res = {}
        for mname, mix in mixtures(a.mixtures.split(",")).items():
            res[mname] = prior_mismatch(mix, sde, a.num, key)
            res[mname]["exact"] = exact_draw_floor(jax.random.fold_in(key, 99), mix, a.num)
            for k, v in res[mname].items():
                print(f"[{mname}] start {k:>5s}: error {v['error']:.4f} tv {v['tv']:.4f} bias vs T "
                      f"{v.get('bias', 0.0):.4f} (mean {v.get('pmean', 0.0):.4f} std {v.get('pstd', 0.0):.4f})",
                      flush=True)
        with open(os.path.join(RESULTS, "prior_mismatch.json"), "w") as f:
            json.dump(res, f, default=float, indent=1)
        return
    rows, floors = [], {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            old = json.load(f)
        rows, floors = old["rows"], old["floors"]
    done = {tuple(r["cfg"]) for r in rows}
    t0 = time.perf_counter()
    for mname, mix in mixtures(a.mixtures.split(",")).items():
        sf = mix.score_fn(sde)
        shape = (a.num, mix.dim)
        floor = exact_draw_floor(jax.random.fold_in(key, 99), mix, a.num)
        ref = jax.jit(lambda k: sample(k, sf, sde, shape, "unipc", steps=300, grid="logsnr", t_min=None,
                                       sigma_min=1e-3))(key)
        ref_err = mixture_sample_error(ref, mix)
        ref_stats = mode_stats(ref, mix)
        floors[mname] = {"exact": floor, "reference": ref_err}
        print(f"[{mname}] n={a.num}: exact-draw floor {floor['error']:.4f}; 300-step reference {ref_err['error']:.4f}",
              flush=True)
        for label, steps_s, den in itertools.product(a.samplers.split(","), a.steps.split(","), a.denoise.split(",")):
            name, opts = SAMPLERS[label]
            steps, den = int(steps_s), bool(int(den))
            run_steps = (steps - int(den)) // PER_STEP.get(label, 1)  # steps = NFE budget
            run = jax.jit(lambda ts, name=name, opts=opts, n=run_steps, den=den: sample(
                key, sf, sde, shape, name, steps=n, grid=ts, denoise=den, **opts))
            for fam, smax, smin, jump in itertools.product(a.families.split(","), a.sigma_max.split(","),
                                                             a.sigma_min.split(","), a.jump.split(",")):
                jump = bool(int(jump))
                if jump and smax == "T":
                    continue
                cfg = (mname, a.num, label, steps, int(den), fam, smax, float(smin), int(jump))
                if cfg in done:
                    continue
                try:
                    ts = make_grid(sde, run_steps, fam, smax, smin, jump)
                except ValueError as e:
                    print("skip", cfg, e)
                    continue
                x = np.asarray(run(ts))
                err = mixture_sample_error(x, mix)
                pe = paired_error(x, ref_stats, mix)
                rows.append({"cfg": cfg, "error": err["error"], "std": err["std"], "mean_c": err["mean_corrected"],
                             "tv": err["tv"], **pe})
                print(f"{mname} {label:14s} nfe {steps:2d} den {int(den)} {fam:6s} smax {smax:>3s} smin {smin:5s} "
                      f"jump {int(jump)}: error {err['error']:.4f} bias {pe['bias']:.4f} (pstd {pe['pstd']:.4f} "
                      f"pmean {pe['pmean']:.4f}) [{time.perf_counter() - t0:.0f}s]", flush=True)
            os.makedirs(RESULTS, exist_ok=True)
            with open(a.out, "w") as f:
                json.dump({"floors": floors, "rows": rows}, f, default=float)


if __name__ == "__main__":
    main()
