"""FID Inception-v3 feature-extraction throughput: jaxscore's Flax module vs pytorch-fid on this CPU.

    /work/venv-torch/bin/python experiments/benchmarks/inception.py            # batch 64, 32x32 -> 299
    /work/venv-torch/bin/python experiments/benchmarks/inception.py --quick    # batch 8, 3 rounds

Needs the optional torch extra (torch, torchvision, pytorch-fid==0.3.0). Both networks get the
same random weights (throughput does not depend on them) and the same images; pytorch-fid runs
``InceptionV3([3])`` in eval mode under ``torch.no_grad``; jaxscore runs the jitted extractor
(pool3 + logits). The machine is shared, so rounds alternate jax / torch and the figures are
medians (and the median of the per-round ratios), next to the load average. ``--torch-one-thread``
adds torch with ``set_num_threads(1)``: OpenMP's spinning threads suffer most on an overloaded host. Compile time is the
``lower().compile()`` of the extractor at the benchmark's input shape. Writes
experiments/benchmarks/results/inception.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "inception.json"


def torch_models(seed: int):
    """pytorch-fid's InceptionV3 on torch's default random initialisation of ``fid_inception_v3()``'s
    layout (torchvision's Inception3(num_classes=1008, aux_logits=False); no download), and that state_dict."""
    import torch
    import torchvision
    from pytorch_fid import inception as pfid

    torch.manual_seed(seed)
    state_dict = torchvision.models.Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    original = pfid.load_state_dict_from_url
    pfid.load_state_dict_from_url = lambda *args, **kwargs: state_dict
    try:
        net = pfid.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    finally:
        pfid.load_state_dict_from_url = original
    return net, state_dict


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32, help="input side, resized to 299 inside both models")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 rounds")
    parser.add_argument(
        "--torch-one-thread", action="store_true", help="also time torch with 1 thread (OpenMP under load)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.batch, args.rounds = 8, 3

    import torch

    from jaxscore.evaluation.convert_inception import state_dict_to_variables
    from jaxscore.evaluation.inception import inception_extractor

    net, state_dict = torch_models(seed=0)
    variables = state_dict_to_variables(state_dict)
    images01 = np.random.default_rng(0).uniform(0, 1, (args.batch, 3, args.size, args.size)).astype(np.float32)
    x_torch = torch.from_numpy(images01)
    x_jax = jnp.asarray(2 * images01.transpose(0, 2, 3, 1) - 1)

    extractor = inception_extractor(variables)
    t0 = time.perf_counter()
    compiled = jax.jit(extractor.func).lower(variables, x_jax).compile()
    compile_s = time.perf_counter() - t0
    flops = (compiled.cost_analysis() or {}).get("flops")

    def run_jax():
        jax.block_until_ready(compiled(variables, x_jax))

    def run_torch(threads: int):
        def run():
            torch.set_num_threads(threads)
            with torch.no_grad():
                net(x_torch)

        return run

    default_threads = torch.get_num_threads()
    contenders = {"jax": run_jax, "torch": run_torch(default_threads)}
    if args.torch_one_thread:
        contenders["torch_1_thread"] = run_torch(1)
    for run in contenders.values():
        run()  # warm-up (allocations, oneDNN primitive caches)
    times = {name: [] for name in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            times[name].append(seconds(contenders[name]))
        print(f"round {r}: " + "   ".join(f"{n} {args.batch / times[n][-1]:6.2f} img/s" for n in names), flush=True)
    torch.set_num_threads(default_threads)

    medians = {name: float(np.median(t)) for name, t in times.items()}
    ratios = {  # > 1: jax faster; median over rounds of the paired ratio
        f"{name}_time_over_jax_time": float(np.median(np.asarray(times[name]) / np.asarray(times["jax"])))
        for name in names[1:]
    }
    result = {
        "benchmark": "FID Inception-v3 feature extraction (pool3 + logits), CPU",
        "input": f"[{args.batch}, {args.size}, {args.size}, 3] -> bilinear 299 x 299",
        "batch": args.batch,
        "rounds": args.rounds,
        "images_per_s": {name: args.batch / m for name, m in medians.items()},
        "median_s_per_batch": medians,
        "paired_ratios_median": ratios,
        "jax_compile_s": compile_s,
        "xla_flops_per_batch": flops,
        "jax_gflops_per_s": flops / medians["jax"] / 1e9 if flops else None,
        "rounds_s": times,
        "torch_default_num_threads": default_threads,
        "load_average_1_5_15": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
    }
    labels = {
        "jax": "jaxscore (Flax, XLA CPU)",
        "torch": f"pytorch-fid ({default_threads} threads)",
        "torch_1_thread": "pytorch-fid (1 thread)",
    }
    print()
    print(f"{'model':<30}{'images/s':>10}{'s/batch':>10}{'t / t_jax':>11}")
    for name in names:
        ratio = ratios.get(f"{name}_time_over_jax_time", 1.0)
        print(f"{labels[name]:<30}{args.batch / medians[name]:>10.2f}{medians[name]:>10.2f}{ratio:>11.2f}")
    print(f"jax compile: {compile_s:.1f} s   load average: {result['load_average_1_5_15']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
