"""Evaluation benchmark: end-to-end ``jaxscore eval`` time on digits, and peak memory as N grows.

    python experiments/benchmarks/evaluation.py [--workdir runs/digits] [--num 10000]

1. Time of ``jaxscore eval`` (FID, KID, IS, precision/recall under the digits classifier) for
   ``--num`` samples of the run in ``--workdir`` with its own sampler settings (the main job:
   DPM-Solver++ 2M, 30 steps), as a user runs it: a fresh process, compile included. Without a
   workdir a 300-step digits run is trained first (quality does not change the time).
2. Peak resident memory (ru_maxrss of a fresh process) of the same evaluation at N = 10k and
   50k samples with 2 sampling steps: the statistics are streamed, so memory should not grow
   with N (the sample count only adds batches; steps do not change memory).

Prints a table and writes ``results/evaluation.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run_child(code: str) -> dict:
    """Run ``code`` in a fresh Python; it prints one JSON line (with its own peak RSS)."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": wall}


def eval_code(workdir: str, num: int, steps: int | None) -> str:
    steps_arg = "None" if steps is None else str(steps)
    return (
        "import json, resource, time\n"
        "from jaxscore.commands import evaluate_workdir\n"
        "t = time.perf_counter()\n"
        f"r = evaluate_workdir({workdir!r}, num={num}, steps={steps_arg}, metrics=('fid', 'kid', 'is', 'pr'), "
        f"features='digits', progress=False, out={os.path.join(workdir, f'bench_eval_{num}.json')!r})\n"
        "r['eval_s'] = time.perf_counter() - t\n"
        "r['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({k: v for k, v in r.items() if not isinstance(v, (dict, list))}))\n"
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", default=os.path.join(ROOT, "runs", "digits"))
    p.add_argument("--num", type=int, default=10_000)
    p.add_argument("--memory-nums", default="10000,50000")
    args = p.parse_args()
    if not os.path.exists(os.path.join(args.workdir, "config.json")):
        args.workdir = os.path.join(ROOT, "runs", "bench_eval_digits")
        subprocess.run([sys.executable, "-m", "jaxscore.cli", "train", "--config",
                        os.path.join(ROOT, "experiments", "configs", "digits.py"), "--workdir", args.workdir,
                        "--config.training.n_iters=300", "--config.training.progress=false",
                        "--config.eval.fid_every=0"], check=True, cwd=ROOT)
    results = {"workdir": args.workdir}
    e2e = run_child(eval_code(args.workdir, args.num, None))
    results["end_to_end"] = e2e
    print(f"jaxscore eval, {args.num} digits samples ({e2e['sampler']}, {e2e['steps']} steps) + features + "
          f"FID/KID/IS/PR: {e2e['wall_s']:.1f} s wall ({e2e['eval_s']:.1f} s after imports); FID {e2e['fid']:.3f}, "
          f"KID {e2e['kid']:.4f}, IS {e2e['is']:.2f}, precision {e2e['precision']:.3f}, recall {e2e['recall']:.3f}")
    results["memory"] = []
    for num in sorted(int(n) for n in args.memory_nums.split(",")):
        m = run_child(eval_code(args.workdir, num, 2))
        results["memory"].append({"num": num, "peak_rss_mib": m["peak_rss_mib"], "wall_s": m["wall_s"]})
        print(f"N = {num:>6}: peak RSS {m['peak_rss_mib']:.0f} MiB, {m['wall_s']:.1f} s (2 sampling steps)")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "evaluation.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
