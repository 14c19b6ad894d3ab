"""Digits students vs their teacher (CLI-equivalent runs), digits-FID of each.

    python experiments/benchmarks/distill.py --digits runs/digits --digits-iters 200
    python experiments/benchmarks/distill.py --digits-consistency runs/digits

The teacher at 32 DDIM steps vs the progressive students at 4, 2, 1 steps and a consistency-distilled student
at 1 and 2 steps, digits-FID of 1000 samples against the test split (jaxscore.evaluation), with each student's
training cost (steps, minutes on this machine). Writes experiments/benchmarks/results/distill_digits.json.
Timings are upper bounds on a shared CPU. The students of exact mixture scores (error vs NFE against the
closed forms) are ``students.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax

RESULTS = os.path.join(os.path.dirname(__file__), "results")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    ap.error("nothing to do: give --digits TEACHER_RUN or --digits-consistency TEACHER_RUN "
             "(the exact-mixture students are experiments/benchmarks/students.py's)")

if __name__ == "__main__":
    main()
