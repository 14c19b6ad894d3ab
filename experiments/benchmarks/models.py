"""Model benchmark: parameter counts of every preset; forward and forward+backward time on this machine.

    python experiments/benchmarks/models.py            # full: unet_tiny @ B=128 (8x8x1), ddpmpp_cifar10 @ B=8 (32x32x3)
    python experiments/benchmarks/models.py --quick    # counts + unet_tiny only, fewer repetitions

Writes experiments/benchmarks/results/models.json. Besides wall-clock medians it records the
XLA cost-analysis FLOPs of each compiled function (independent of machine load) and the load
average, since timings on a shared machine are only meaningful next to them.
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

from jaxscore.models import PRESET_NAMES, build_model, count_params, init_shapes

INPUT_SHAPES = {  # per preset, the input used for the parameter count (counts do not depend on H, W)
    "mlp_toy": (1, 2),
    "unet_tiny": (1, 8, 8, 1),
    "unet_small": (1, 28, 28, 1),
}


def random_params(model, shape, seed=0):
    """Parameters of the right structure from NumPy (timing does not depend on the values; this
    avoids compiling the initializers, which is slow on CPU for the large presets)."""
    rng = np.random.default_rng(seed)

    def leaf(s):
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) > 1 else 1
        return jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(fan_in), s.dtype)

    return jax.tree_util.tree_map(leaf, init_shapes(model, shape))


def _median_ms(fn, reps):
    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times)), 1000 * float(np.min(times))


def time_model(name, batch_shape, reps, dropout=True):
    model = build_model(name)
    params = random_params(model, batch_shape)
    x = jax.random.normal(jax.random.key(0), batch_shape)
    t = jax.random.uniform(jax.random.key(1), batch_shape[:1])

    def fwd(p, x, t):
        return model.apply({"params": p}, x, t)

    def loss(p, x, t, key):
        out = model.apply({"params": p}, x, t, train=dropout, rngs={"dropout": key})
        return jnp.mean((out - x) ** 2)

    fwd_j = jax.jit(fwd)
    grad_j = jax.jit(jax.value_and_grad(loss))
    key = jax.random.key(2)
    result = {"batch_shape": list(batch_shape), "params": count_params(params)}
    for label, jitted, args in (("forward", fwd_j, (params, x, t)), ("forward_backward", grad_j, (params, x, t, key))):
        t0 = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        result[f"{label}_compile_s"] = round(time.perf_counter() - t0, 2)
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        result[f"{label}_gflop"] = round(float(cost.get("flops", float("nan"))) / 1e9, 3)
        med, best = _median_ms(lambda: compiled(*args), reps)
        result[f"{label}_ms_median"] = round(med, 2)
        result[f"{label}_ms_min"] = round(best, 2)
    result["steps_per_min_at_median"] = round(60000.0 / result["forward_backward_ms_median"], 1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="counts + unet_tiny only, fewer repetitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "models.json"))
    args = parser.parse_args()
    reps = args.reps or (5 if args.quick else 20)

    counts = {}
    for name in PRESET_NAMES:
        shape = INPUT_SHAPES.get(name, (1, 32, 32, 3))
        counts[name] = count_params(init_shapes(build_model(name), shape))
        print(f"{name:>22s}: {counts[name]:>12,d} parameters")

    timings = {}
    runs = [("unet_tiny", (128, 8, 8, 1))]
    if not args.quick:
        runs.append(("ddpmpp_cifar10", (8, 32, 32, 3)))
    for name, shape in runs:
        timings[name] = r = time_model(name, shape, reps if name == "unet_tiny" else max(3, reps // 4))
        print(
            f"{name} B={shape[0]} {shape[1:]}: forward {r['forward_ms_median']:.1f} ms (min {r['forward_ms_min']:.1f}, "
            f"{r['forward_gflop']} GFLOP), forward+backward {r['forward_backward_ms_median']:.1f} ms "
            f"(min {r['forward_backward_ms_min']:.1f}, {r['forward_backward_gflop']} GFLOP), "
            f"compile {r['forward_compile_s']}s / {r['forward_backward_compile_s']}s"
        )

    out = {
        "param_counts": counts,
        "timings": timings,
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "platform": platform.platform(),
        "jax": jax.__version__,
        "quick": args.quick,
        "reps": reps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
