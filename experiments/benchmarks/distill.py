"""Few-step students: error vs NFE on the 2-D ring, and (``--digits``) digits students vs their teacher.

    python experiments/benchmarks/distill.py            # ring: PD / CD / CT students at NFE 1, 2, 4, 8
    python experiments/benchmarks/distill.py --digits runs/digits --digits-iters 200   # digits (CLI-equivalent runs)

Ring (jaxscore.data.toy.ring_mixture, VP SDE, exact score as teacher), 20,000 samples per figure,
error = jaxscore.metrics.mixture_sample_error's ``error`` (max of std error and Monte-Carlo-corrected
mean error, in mode stds) with the exact-draw floor of the same sample size beside it:

* ``ddim (exact score)``: the training-free DDIM sampler with the exact score on the uniform grid
  (what progressive distillation starts from: its NFE-8 figure is the PD teacher);
* ``progressive``: students of 8 -> 4 -> 2 -> 1 steps (``mlp_toy`` 3x128, v-prediction, ``--iters``
  Adam steps per stage, batch 256), sampled with DDIM on their halved grids;
* ``consistency distillation`` (Heun steps of the exact teacher) and ``consistency training`` (no
  teacher): one ``mlp_toy`` each (Fourier scale 1), iCT curriculum 10 -> 320 levels, lognormal levels,
  pseudo-Huber; sampled with the ``consistency`` sampler at 1, 2, 4, 8 steps.

Digits (``--digits TEACHER_RUN``): the teacher at 32 DDIM steps vs the progressive students at 4, 2, 1
steps and a consistency-distilled student at 1 and 2 steps, digits-FID of 1000 samples against the
test split (jaxscore.evaluation), with each student's training cost (steps, minutes on this machine).
Writes experiments/benchmarks/results/distill.json and distill.png. Timings are upper bounds on a
shared CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxscore as js
from jaxscore.data.toy import ring_mixture
from jaxscore.distill import consistency_loss, consistency_score_fn, halving_grids, ict_levels, progressive_distillation_loss
from jaxscore.metrics import exact_draw_floor, mixture_sample_error
from jaxscore.models import build_model
from jaxscore.parameterization import make_score_fn
from jaxscore.sde import VPSDE

RESULTS = os.path.join(os.path.dirname(__file__), "results")
NFES = (1, 2, 4, 8)


def _adam_scan(loss, params, iters, lr, seed, extra_fn=None):
    """``iters`` Adam steps (cosine decay) of ``loss(params, key, i)`` in one compiled scan."""
    tx = optax.adam(optax.cosine_decay_schedule(lr, iters))

    @jax.jit
    def run(p):
        def body(carry, i):
            p, o = carry
            value, g = jax.value_and_grad(loss)(p, jax.random.fold_in(jax.random.key(seed), i), i)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), value

        (p, _), values = jax.lax.scan(body, (p, tx.init(p)), jnp.arange(iters))
        return p, values

    return run(params)


def ring(iters: int, num: int) -> dict:
    sde, mix = VPSDE(), ring_mixture()
    exact = mix.score_fn(sde)
    x_T = sde.prior_sample(jax.random.key(2024), (num, 2))
    floor = exact_draw_floor(jax.random.key(7), mix, num)["error"]
    out = {"floor": floor, "num": num, "iters": iters, "curves": {}, "train_s": {}}

    def err(x):
        return mixture_sample_error(np.asarray(x), mix)["error"]

    out["curves"]["ddim (exact score)"] = {n: err(js.sample(jax.random.key(0), exact, sde, x_T.shape, "ddim", steps=n,
                                                             x_init=x_T)) for n in NFES}
    # progressive distillation 8 -> 4 -> 2 -> 1
    model = build_model("mlp_toy")
    apply = lambda p, x, t: model.apply({"params": p}, x, t)  # noqa: E731
    params = model.init(jax.random.key(1), jnp.zeros((1, 2)), jnp.ones((1,)))["params"]
    grids, teacher, pd = halving_grids(sde, 8), exact, {8: out["curves"]["ddim (exact score)"][8]}
    t0 = time.perf_counter()
    for k in range(1, len(grids)):
        grid = jnp.asarray(grids[k - 1])

        def loss(p, key, i, teacher=teacher, grid=grid):
            kd, kl = jax.random.split(key)
            return progressive_distillation_loss(apply, p, kl, mix.sample(kd, 256), sde, teacher, grid, parameterization="v")

        params, _ = _adam_scan(loss, params, iters, 3e-3, k)
        teacher = make_score_fn(apply, params, sde, "v")
        n = len(grids[k]) - 1
        pd[n] = err(js.sample(jax.random.key(0), teacher, sde, x_T.shape, "ddim", steps=n, grid=jnp.asarray(grids[k]),
                              x_init=x_T))
    out["train_s"]["progressive"] = time.perf_counter() - t0
    out["curves"]["progressive (3 stages)"] = pd
    # consistency distillation / training
    cm_model = build_model("mlp_toy", fourier_scale=1.0)
    cm_apply = lambda p, x, t: cm_model.apply({"params": p}, x, t)  # noqa: E731
    cm_iters = 2 * iters * 3 // 2
    for name, teacher_fn in (("consistency distillation", exact), ("consistency training", None)):
        levels = jnp.asarray([ict_levels(i, cm_iters, 10, 320) for i in range(cm_iters)], jnp.int32)

        def loss(p, key, i, teacher_fn=teacher_fn, levels=levels):
            kd, kl = jax.random.split(key)
            return consistency_loss(cm_apply, p, kl, mix.sample(kd, 256), sde, levels[i], teacher_score_fn=teacher_fn,
                                    max_levels=321)

        p0 = cm_model.init(jax.random.key(3), jnp.zeros((1, 2)), jnp.ones((1,)))["params"]
        t0 = time.perf_counter()
        p, _ = _adam_scan(loss, p0, cm_iters, 1e-3, 11)
        jax.block_until_ready(p)
        out["train_s"][name] = time.perf_counter() - t0
        score_fn = consistency_score_fn(cm_apply, p, sde)
        out["curves"][name] = {n: err(js.sample(jax.random.key(0), score_fn, sde, x_T.shape, "consistency", steps=n,
                                                 x_init=x_T)) for n in NFES}
    out["cm_iters"] = cm_iters
    return out


def digits(teacher: str, iters: int, workdir: str, fid_num: int, base_steps: int = 32) -> dict:
    """Progressive (32 -> 1) and consistency-distilled students of ``teacher``; digits-FID of each."""
    from jaxscore.config import load_config
    from jaxscore.distill.run import load_student, run_distillation
    from jaxscore.evaluation.extractors import build_extractor
    from jaxscore.evaluation.streaming import sample_quality, stats_of_images, stats_of_samples
    from jaxscore.experiment import load_data, load_for_inference, load_run_config

    here = os.path.join(os.path.dirname(__file__), "..", "configs")
    common = [f"--config.training.n_iters={iters}", "--config.eval.fid_every=0", "--config.training.progress=False",
              f"--config.distill.base_steps={base_steps}",
              f"--config.training.checkpoint_every={iters}", f"--config.training.eval_every={iters}"]
    out = {"teacher": teacher, "iters_per_stage": iters, "fid_num": fid_num, "base_steps": base_steps, "students": {}}
    config = load_run_config(teacher)
    extractor = build_extractor("digits")
    data = load_data(config)
    ref = stats_of_images(data["test"]["images"], extractor, progress=False)

    def fid(score_fn, sde, shape, sampler, steps, **opts):
        stats = stats_of_samples(jax.random.key(0), score_fn, sde, shape, fid_num, extractor, sampler=sampler,
                                 steps=steps, batch_size=500, progress=False, **opts)
        return sample_quality(stats, ref, ("fid",))["fid"]

    _, t_score, t_sde, t_shape, _ = load_for_inference(teacher)
    for n in sorted({32, base_steps}):
        out[f"teacher_ddim{n}_fid"] = fid(t_score, t_sde, t_shape, "ddim", n)

    def fid_of(student_dir, steps):
        d = load_student(student_dir)
        return fid(d["score_fn"], d["sde"], d["shape"], d["sampler"], steps, **d["options"])

    for method, cfg_file in (("progressive", "digits_distill.py"), ("consistency_distillation", "digits_consistency.py")):
        wd = os.path.join(workdir, method)
        cfg = load_config(os.path.join(here, cfg_file), common)
        summary = run_distillation(cfg, wd, teacher=teacher)
        for stage in summary["stages"]:
            if method == "progressive":
                if stage["steps"] in (4, 2, 1):
                    out["students"][f"progressive {stage['steps']}-step"] = {
                        "fid": fid_of(stage["dir"], stage["steps"]), "train_steps": stage["train_steps"],
                        "minutes": stage["minutes"]}
            else:
                for n in (1, 2):
                    out["students"][f"consistency {n}-step"] = {"fid": fid_of(stage["dir"], n),
                                                                "train_steps": stage["train_steps"],
                                                                "minutes": stage["minutes"]}
        if method == "progressive":
            out["progressive_total"] = {"train_steps": sum(s["train_steps"] for s in summary["stages"]),
                                        "minutes": sum(s["minutes"] for s in summary["stages"])}
    return out


def digits_consistency(teacher: str, iters: dict, workdir: str, fid_num: int, steps=(1, 2),
                       checkpoint_every: int = 250) -> dict:
    """Consistency students of the digits ``teacher``: distillation (``digits_consistency.py``, Heun steps of
    the teacher, initialised from its EMA parameters) and training (``digits_consistency.py:ct``, no teacher,
    fresh U-Net), ``iters[method]`` optimizer steps each (the CLI's ``jaxscore distill`` runs); digits-FID of
    ``fid_num`` samples with the ``consistency`` sampler at each of ``steps`` (the same pieces as
    :func:`digits`: digits features, key 0, test-split reference). A run directory that already holds a
    checkpoint resumes; a run cut short is measured at its latest checkpoint (``train_steps`` says which)."""
    from jaxscore.config import load_config
    from jaxscore.distill.run import load_student, run_distillation
    from jaxscore.evaluation.extractors import build_extractor
    from jaxscore.evaluation.streaming import sample_quality, stats_of_images, stats_of_samples
    from jaxscore.experiment import load_data, load_run_config

    here = os.path.join(os.path.dirname(__file__), "..", "configs", "digits_consistency.py")
    extractor = build_extractor("digits")
    ref = stats_of_images(load_data(load_run_config(teacher))["test"]["images"], extractor, progress=False)
    out = {"teacher": teacher, "fid_num": fid_num, "students": {}}
    for method, variant in (("consistency_distillation", "cd"), ("consistency_training", "ct")):
        if method not in iters:
            continue
        n = int(iters[method])
        common = [f"--config.training.n_iters={n}", "--config.eval.fid_every=0", "--config.training.progress=False",
                  f"--config.training.checkpoint_every={min(checkpoint_every, n)}", f"--config.training.eval_every={n}"]
        wd = os.path.join(workdir, method)
        t0 = time.perf_counter()
        summary = run_distillation(load_config(f"{here}:{variant}", common), wd,
                                   teacher=teacher if variant == "cd" else None)
        stage = summary["stages"][0]
        d = load_student(wd)
        row = {"train_steps": int(d["step"]), "minutes_training": stage["minutes"],
               "minutes_total": (time.perf_counter() - t0) / 60.0, "s0_s1": None, "fid": {}}
        cfg = d["config"]
        row["s0_s1"] = [int(cfg.distill.s0), int(cfg.distill.s1)]
        row["lr"], row["batch"] = float(cfg.optim.lr), int(cfg.training.batch_size)
        for k in steps:
            stats = stats_of_samples(jax.random.key(0), d["score_fn"], d["sde"], d["shape"], fid_num, extractor,
                                     sampler="consistency", steps=int(k), batch_size=500, progress=False)
            row["fid"][str(k)] = sample_quality(stats, ref, ("fid",))["fid"]
        print(f"  {method}: {row['train_steps']} steps, {row['minutes_training']:.1f} min; digits-FID "
              + ", ".join(f"{k}-step {v:.3f}" for k, v in row["fid"].items()), flush=True)
        out["students"][method] = row
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, curve in result["ring"]["curves"].items():
        ns = sorted(int(n) for n in curve)
        ax.plot(ns, [curve[n] if n in curve else curve[str(n)] for n in ns], "o-", label=name)
    ax.axhline(result["ring"]["floor"], color="k", ls=":", label="exact-draw floor")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="error (mode stds)", title="2-D ring, VP")
    ax.set_xticks(NFES, [str(n) for n in NFES])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=600, help="Adam steps per PD stage (ring); CM runs 3x this")
    ap.add_argument("--num", type=int, default=20000)
    ap.add_argument("--digits", default=None, help="teacher run directory (e.g. runs/digits): run the digits part "
                                                   "only, into results/distill_digits.json")
    ap.add_argument("--digits-iters", type=int, default=200, help="training steps per digits student stage")
    ap.add_argument("--digits-workdir", default="runs/distill_bench")
    ap.add_argument("--fid-num", type=int, default=1000)
    ap.add_argument("--base-steps", type=int, default=32, help="the digits teacher's DDIM steps (PD halves them)")
    ap.add_argument("--digits-consistency", default=None, metavar="TEACHER_RUN",
                    help="consistency students (CD, CT) of this digits teacher only; adds the key "
                         "'consistency' to results/distill_digits.json (the rest of it is kept)")
    ap.add_argument("--cd-iters", type=int, default=1000)
    ap.add_argument("--ct-iters", type=int, default=1000)
    args = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    result = {"device": jax.devices()[0].platform, "cpu_count": os.cpu_count()}
    t0 = time.perf_counter()
    if args.digits_consistency:
        iters = {k: v for k, v in (("consistency_distillation", args.cd_iters),
                                   ("consistency_training", args.ct_iters)) if v > 0}
        res = digits_consistency(args.digits_consistency, iters, args.digits_workdir, args.fid_num)
        res["seconds"], res["device"], res["cpu_count"] = time.perf_counter() - t0, result["device"], os.cpu_count()
        path = os.path.join(RESULTS, "distill_digits.json")
        old = json.load(open(path)) if os.path.exists(path) else {}
        old["consistency"] = res
        with open(path, "w") as f:
            json.dump(old, f, indent=2, default=float)
        print(f"wrote {path} (key 'consistency')")
        return
    if args.digits:
        result["digits"] = digits(args.digits, args.digits_iters, args.digits_workdir, args.fid_num, args.base_steps)
        result["seconds"] = time.perf_counter() - t0
        print("digits: teacher DDIM FID " + ", ".join(f"{k}: {v:.3f}" for k, v in result["digits"].items()
                                                       if k.startswith("teacher_ddim")))
        for name, r in result["digits"]["students"].items():
            print(f"  {name:24s} FID {r['fid']:.3f}  ({r['train_steps']} steps, {r['minutes']:.1f} min)")
        with open(os.path.join(RESULTS, "distill_digits.json"), "w") as f:
            json.dump(result, f, indent=2, default=float)
        print(f"wrote {RESULTS}/distill_digits.json")
        return
    result["ring"] = ring(args.iters, args.num)
    result["ring"]["seconds"] = time.perf_counter() - t0
    print(f"ring (error, exact-draw floor {result['ring']['floor']:.3f} at {args.num} samples):")
    for name, curve in result["ring"]["curves"].items():
        print(f"  {name:28s} " + "  ".join(f"NFE {n}: {curve[n]:.3f}" for n in sorted(curve)))
    print("  training seconds:", {k: round(v, 1) for k, v in result["ring"]["train_s"].items()})
    with open(os.path.join(RESULTS, "distill.json"), "w") as f:
        json.dump(result, f, indent=2, default=float)
    plot(result, os.path.join(RESULTS, "distill.png"))
    print(f"wrote {RESULTS}/distill.json and distill.png")


if __name__ == "__main__":
    main()
