"""Accelerator benchmark: score_sde's CIFAR-10 DDPM++ (``experiments/configs/cifar10_ddpmpp.py``)
on whatever devices JAX sees, in float32 and bfloat16 (``model.dtype``), in one short run.

Phases (each written to the JSON as soon as it ends, so a run stopped by the time budget keeps
what it measured; run in priority order: 1 for every dtype, 2 and 3 for the first dtype, 4,
then 2 and 3 for the other dtypes):

1. ``train:<dtype>``: the pure train step (``jaxscore.train.train_step``: per-example DSM loss,
   Adam, grad clip, EMA, non-finite guard) jitted on one device at ``--batch`` (128 = score_sde's)
   with donated state; compile time (ahead-of-time ``lower().compile()``), images/s over
   ``--steps`` timed steps, XLA's memory plan and the device's peak memory.
2. ``sample:<dtype>``: ``dpmpp_2m`` at 20 steps (DPM-Solver++(2M) is multistep: one network
   evaluation per step) on ``--sample-batch`` images: images/s.
3. ``likelihood:<dtype>``: ``jaxscore.likelihood.bits_per_dim`` with ``divergence="hutchinson"``
   (one Rademacher probe: one JVP of the network per evaluation) on uint8 images of CIFAR
   shape; a fixed-step Heun solve (``--lik-steps``) so the work per example does not depend on
   the (random) network: examples/s and the NFE.
4. ``parallel``: with more than one device, the same train step in ``training.mode`` of the
   config (``pmap``; ``--parallel-mode sharded`` for the mesh) over all devices vs ``single``
   on one, at the same global batch: throughput ratio (ideal = number of devices).

Nothing is downloaded: the data are random images of CIFAR-10's shape and the network is
freshly initialised (timing does not depend on the weights, except the adaptive solves, which
is why the likelihood uses fixed steps). Peak memory: ``device.memory_stats()["peak_bytes_in_use"]``
where the backend reports it (GPU, TPU; cumulative over the process, read after each phase),
else the process's peak RSS; and per compiled function XLA's plan (arguments + outputs +
temporaries - aliased).

``--budget-s`` is a hard limit: a phase starts only if ``--phase-reserve-s`` seconds remain,
timed loops stop early at the budget, and a watchdog writes the JSON and exits (code 3) if a
compile overruns it by ``--grace-s``.

    python experiments/benchmarks/accelerator.py                       # accelerator (<= 8 min on one GPU)
    python experiments/benchmarks/accelerator.py --batch 8 --quick     # CPU smoke run
    python experiments/benchmarks/accelerator.py --batch 8 --quick --cpu-devices 2   # + the ratio path
    python experiments/benchmarks/accelerator.py --config.model.num_res_blocks=1 ...  # config overrides

Writes experiments/benchmarks/results/accelerator.json (``--out``). Figures from a CPU are not
accelerator figures: XLA:CPU has no bfloat16 matmul/conv units (it converts), so bfloat16 is
usually *slower* there; the CPU run only proves the script works.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import sys
import threading
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # peak memory = what is used, not a pool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "experiments", "benchmarks", "results", "accelerator.json")
CONFIG = os.path.join(ROOT, "experiments", "configs", "cifar10_ddpmpp.py")
SHAPE = (32, 32, 3)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128, help="global train batch (score_sde: 128)")
    p.add_argument("--steps", type=int, default=None, help="timed train steps per dtype (default 20, quick 2)")
    p.add_argument("--sample-batch", type=int, default=None, help="images per sampling call (default --batch)")
    p.add_argument("--sample-steps", type=int, default=20, help="dpmpp_2m steps")
    p.add_argument("--lik-batch", type=int, default=None, help="examples per likelihood call (default --batch/2, quick 2)")
    p.add_argument("--lik-steps", type=int, default=None, help="fixed Heun steps of the likelihood ODE (default 50, quick 4)")
    p.add_argument("--repeats", type=int, default=None, help="timed sampling / likelihood calls (default 3, quick 1)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="compute dtypes (model.dtype)")
    p.add_argument("--phases", nargs="+", default=["train", "sample", "likelihood", "parallel"],
                   choices=["train", "sample", "likelihood", "parallel"])
    p.add_argument("--parallel-mode", default=None, choices=["pmap", "sharded"], help="default: the config's training.mode")
    p.add_argument("--parallel-dtype", default=None, help="dtype of the parallel phase (default: the last of --dtypes)")
    p.add_argument("--quick", action="store_true", help="few timed repeats and small sampling/likelihood batches")
    p.add_argument("--budget-s", type=float, default=450.0, help="hard wall-clock budget of the whole run (s)")
    p.add_argument("--phase-reserve-s", type=float, default=None,
                   help="start a phase only if this many seconds of budget remain (default 60, quick 10)")
    p.add_argument("--grace-s", type=float, default=20.0, help="the watchdog exits this long after the budget")
    p.add_argument("--cpu-devices", type=int, default=None, help="fake CPU devices (jax_num_cpu_devices), CPU only")
    p.add_argument("--out", default=RESULTS, help="JSON output path")
    args, rest = p.parse_known_args(argv)
    bad = [r for r in rest if not r.startswith("--config.")]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)} (config overrides are --config.key=value)")
    args.overrides = rest
    q = args.quick
    args.steps = args.steps if args.steps is not None else (2 if q else 20)
    args.sample_batch = args.sample_batch or (min(args.batch, 4) if q else args.batch)
    args.lik_batch = args.lik_batch or (2 if q else max(1, args.batch // 2))
    args.lik_steps = args.lik_steps or (4 if q else 50)
    args.repeats = args.repeats or (1 if q else 3)
    args.phase_reserve_s = args.phase_reserve_s if args.phase_reserve_s is not None else (10.0 if q else 60.0)
    for name in ("batch", "steps", "sample_batch", "sample_steps", "lik_batch", "lik_steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: expected an integer >= 1, got {getattr(args, name)}")
    return args


class Budget:
    """Wall clock since the start against ``--budget-s``."""

    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), float(seconds)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.seconds - self.elapsed()


def _memory(jax) -> dict:
    """Device peak / in-use bytes where the backend reports them, and the process's peak RSS (MiB)."""
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    stats = [d.memory_stats() for d in jax.local_devices()]
    if stats and all(s and "peak_bytes_in_use" in s for s in stats):
        out["device_peak_mb"] = max(s["peak_bytes_in_use"] for s in stats) / 2**20
        out["device_in_use_mb"] = max(s.get("bytes_in_use", 0) for s in stats) / 2**20
    return out


def _xla_plan_mb(compiled) -> dict:
    """XLA's memory plan of one compiled call (MiB); {} when the backend gives none."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return {}
    if m is None:
        return {}
    mb = 2.0**20
    return {"argument_mb": m.argument_size_in_bytes / mb, "output_mb": m.output_size_in_bytes / mb,
            "temp_mb": m.temp_size_in_bytes / mb,
            "peak_estimate_mb": (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                                 - m.alias_size_in_bytes) / mb}


def _timed_calls(run, n: int, budget: Budget) -> list[float]:
    """Up to ``n`` timed calls of ``run()`` (blocking on its result); at least one, fewer if the budget ends."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
        if budget.left() <= 0:
            break
    return times


def main(argv=None):
    args = parse_args(argv)
    budget = Budget(args.budget_s)

    import jax

    if args.cpu_devices:
        jax.config.update("jax_num_cpu_devices", int(args.cpu_devices))
    import jax.numpy as jnp
    import numpy as np

    from jaxscore import experiment, samplers
    from jaxscore.config import load_config
    from jaxscore.likelihood import bits_per_dim
    from jaxscore.models import count_params
    from jaxscore.train import init_train_state, make_optimizer, make_parallel, train_step

    devices = jax.devices()
    results = {
        "benchmark": "accelerator",
        "config": "experiments/configs/cifar10_ddpmpp.py",
        "overrides": args.overrides,
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "n_devices": len(devices),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "args": {k: v for k, v in vars(args).items() if k not in ("overrides", "out")},
        "note": ("CPU figures prove the script runs; they are not accelerator figures (XLA:CPU converts "
                 "bfloat16 matmuls/convs, so bfloat16 is not faster there)") if jax.default_backend() == "cpu" else "",
        "phases": {},
        "skipped": {},
        "status": "running",
    }

    def write():
        results["elapsed_s"] = budget.elapsed()
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2)
        os.replace(tmp, args.out)

    def watchdog():  # a compile cannot be interrupted: leave with what was measured
        while True:
            time.sleep(1.0)
            if budget.left() < -args.grace_s:
                results["status"] = f"aborted: over the {args.budget_s:.0f} s budget during {results.get('current')}"
                write()
                print(f"\n{results['status']}; wrote {args.out}", flush=True)
                os._exit(3)

    threading.Thread(target=watchdog, daemon=True).start()

    def problem(dtype):
        cfg = load_config(CONFIG, [f"--config.model.dtype={dtype}", f"--config.training.batch_size={args.batch}",
                                   *args.overrides])
        model = experiment.build_model_from_config(cfg.model)
        sde = experiment.build_sde(cfg.sde)
        return cfg, model, sde, experiment.make_loss_fn(cfg, model, sde), experiment.make_init_fn(model, SHAPE)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(max(args.batch, args.lik_batch), *SHAPE), dtype=np.uint8)
    batch = {"x": jnp.asarray(images[: args.batch].astype(np.float32) / 127.5 - 1.0)}  # CIFAR-shaped, in [-1, 1]
    params_by_dtype = {}

    def phase(name, fn):
        if budget.left() < args.phase_reserve_s:
            results["skipped"][name] = f"budget: {budget.left():.0f} s left < reserve {args.phase_reserve_s:.0f} s"
            print(f"== {name}: skipped ({results['skipped'][name]})", flush=True)
            write()
            return
        results["current"] = name
        print(f"== {name} (t = {budget.elapsed():.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - record and go on to the next phase
            results["phases"][name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            print(f"   FAILED: {type(e).__name__}: {e}", flush=True)
            write()
            return
        out["phase_wall_s"] = time.perf_counter() - t0
        out["memory_after"] = _memory(jax)
        results["phases"][name] = out
        print("   " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in out.items() if not isinstance(v, dict)), flush=True)
        write()

    # --- 1. train step, one device, per dtype ------------------------------------------------------
    def train_phase(dtype):
        cfg, model, sde, loss_fn, init_fn = problem(dtype)
        tx = make_optimizer(cfg)
        state = init_train_state(int(cfg.seed), init_fn, tx)
        params_by_dtype[dtype] = (cfg, model, sde, state.ema_params)
        step = jax.jit(functools.partial(train_step, loss_fn=loss_fn, tx=tx, ema_rate=float(cfg.optim.ema_rate)),
                       donate_argnums=0)
        dev = devices[0]
        state = jax.device_put(state, dev, may_alias=False)
        b = jax.device_put(batch, dev)
        t0 = time.perf_counter()
        compiled = step.lower(state, b).compile()
        compile_s = time.perf_counter() - t0
        box = {"state": state}

        def run():
            box["state"], metrics = compiled(box["state"], b)
            jax.block_until_ready(metrics)
            return metrics

        first = _timed_calls(run, 1, budget)[0]  # first run: allocation, autotuning leftovers
        times = _timed_calls(run, args.steps, budget)
        metrics = run()
        step_s = float(np.median(times))
        return {"dtype": dtype, "batch": args.batch, "params": count_params(state.params),
                "compile_s": compile_s, "first_step_s": first, "timed_steps": len(times),
                "step_s_median": step_s, "step_s_min": float(min(times)), "images_per_s": args.batch / step_s,
                "loss": float(metrics["loss"]), "xla_plan": _xla_plan_mb(compiled)}

    # --- 2. sampling ------------------------------------------------------------------------------------
    def sample_phase(dtype):
        cfg, model, sde, params = params_by_dtype.get(dtype) or _fresh(dtype)
        score_fn = experiment.model_score_fn(cfg, model, params, sde)
        fn = jax.jit(lambda key: samplers.dpmpp_2m(key, score_fn, sde, (args.sample_batch, *SHAPE), steps=args.sample_steps))
        key = jax.random.key(0)
        t0 = time.perf_counter()
        compiled = fn.lower(key).compile()
        compile_s = time.perf_counter() - t0
        x = compiled(key)
        jax.block_until_ready(x)
        times = _timed_calls(lambda: jax.block_until_ready(compiled(key)), args.repeats, budget)
        t = float(np.median(times))
        return {"dtype": dtype, "sampler": "dpmpp_2m", "steps": args.sample_steps, "nfe": args.sample_steps,
                "batch": args.sample_batch, "compile_s": compile_s, "call_s_median": t,
                "images_per_s": args.sample_batch / t, "finite": bool(jnp.all(jnp.isfinite(x))),
                "xla_plan": _xla_plan_mb(compiled)}

    def _fresh(dtype):
        cfg, model, sde, _, init_fn = problem(dtype)
        params = jax.jit(init_fn)(jax.random.key(int(cfg.seed)))
        params_by_dtype[dtype] = (cfg, model, sde, params)
        return params_by_dtype[dtype]

    # --- 3. likelihood ------------------------------------------------------------------------------------
    def likelihood_phase(dtype):
        cfg, model, sde, params = params_by_dtype.get(dtype) or _fresh(dtype)
        score_fn = experiment.model_score_fn(cfg, model, params, sde)
        x = jnp.asarray(images[: args.lik_batch])

        def bpd(key, x):
            return bits_per_dim(key, score_fn, sde, x, divergence="hutchinson", solver="heun", steps=args.lik_steps,
                                return_info=True)

        fn = jax.jit(bpd)
        key = jax.random.key(1)
        t0 = time.perf_counter()
        compiled = fn.lower(key, x).compile()
        compile_s = time.perf_counter() - t0
        out, info = compiled(key, x)
        jax.block_until_ready(out)
        times = _timed_calls(lambda: jax.block_until_ready(compiled(key, x)), args.repeats, budget)
        t = float(np.median(times))
        nfe = int(np.max(np.asarray(info["nfe"]))) if "nfe" in info else None
        return {"dtype": dtype, "divergence": "hutchinson (1 Rademacher probe)", "solver": "heun",
                "ode_steps": args.lik_steps, "nfe": nfe, "batch": args.lik_batch, "compile_s": compile_s,
                "call_s_median": t, "examples_per_s": args.lik_batch / t,
                "bpd_mean(untrained net)": float(jnp.mean(out)), "xla_plan": _xla_plan_mb(compiled)}

    # --- 4. one device vs all devices ----------------------------------------------------------------------
    def parallel_phase(dtype):
        cfg, model, sde, loss_fn, init_fn = problem(dtype)
        mode = args.parallel_mode or str(cfg.training.mode)
        mode = "pmap" if mode == "single" else mode
        n = len(devices)
        if args.batch % n:
            raise ValueError(f"--batch {args.batch} is not divisible by the {n} devices")
        tx = make_optimizer(cfg)
        state0 = init_train_state(int(cfg.seed), init_fn, tx)
        host = {"x": np.asarray(batch["x"])[None]}  # [K=1, B, ...]
        out = {"dtype": dtype, "mode": mode, "devices": n, "global_batch": args.batch}
        for name, m in (("one_device", "single"), ("all_devices", mode)):
            par = make_parallel(m, loss_fn=loss_fn, tx=tx, ema_rate=float(cfg.optim.ema_rate))
            box = {"state": par.put_state(state0)}
            b = par.put_batches(host)

            def run(par=par, box=box, b=b):
                box["state"], metrics = par.step(box["state"], b)
                jax.block_until_ready(metrics)

            first = _timed_calls(run, 1, budget)[0]
            times = _timed_calls(run, args.steps, budget)
            t = float(np.median(times))
            out[name] = {"first_call_s(compile)": first, "step_s_median": t, "images_per_s": args.batch / t,
                         "devices": par.num_devices}
        out["throughput_ratio_all_over_one"] = out["all_devices"]["images_per_s"] / out["one_device"]["images_per_s"]
        out["ideal_ratio"] = n
        return out

    print(f"devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}); budget {args.budget_s:.0f} s",
          flush=True)
    # priority order, as the budget may end the run: the train step in every dtype; sampling and
    # likelihood in the first dtype; the multi-device ratio; then sampling / likelihood in the others
    first, others = args.dtypes[0], args.dtypes[1:]
    if "train" in args.phases:
        for dtype in args.dtypes:
            phase(f"train:{dtype}", functools.partial(train_phase, dtype))
    for dtypes in ([first], others):
        for dtype in dtypes:
            if "sample" in args.phases:
                phase(f"sample:{dtype}", functools.partial(sample_phase, dtype))
            if "likelihood" in args.phases:
                phase(f"likelihood:{dtype}", functools.partial(likelihood_phase, dtype))
        if dtypes == [first] and "parallel" in args.phases:
            if len(devices) > 1:
                phase("parallel", functools.partial(parallel_phase, args.parallel_dtype or args.dtypes[-1]))
            else:
                results["skipped"]["parallel"] = "one device"
    speedups = {}
    for kind, field in (("train", "images_per_s"), ("sample", "images_per_s"), ("likelihood", "examples_per_s")):
        a, b = results["phases"].get(f"{kind}:float32", {}), results["phases"].get(f"{kind}:bfloat16", {})
        if field in a and field in b:
            speedups[kind] = b[field] / a[field]
    results["bfloat16_over_float32_throughput"] = speedups
    results.pop("current", None)
    results["status"] = "done"
    results["memory_final"] = _memory(jax)
    write()
    print(f"bfloat16 / float32 throughput: {speedups}; total {budget.elapsed():.0f} s; wrote {args.out}", flush=True)
    return results


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
