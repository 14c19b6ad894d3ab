"""Benchmark the training system.

1. Train-step throughput vs the bare forward+backward of the same model and loss
   (``value_and_grad`` only, same batches; a ``lax.scan`` over them when K > 1),
   ratio = bare time / train time, the median over interleaved rounds of the paired ratio
   (target >= 0.9: optimizer, EMA, clipping and the
   non-finite guard cost <= ~10%); also against the bare fwd+bwd with the loss evaluated per
   example as the train step does (per-example noise keys: on the tiny MLP the extra PRNG work
   is most of the gap, on the U-Nets it is negligible);
2. compile time of the train call; peak memory as XLA plans it (arguments + outputs +
   temporaries - donated buffers) for the train step and for the bare fwd+bwd;
3. the same train step in ``pmap`` and ``sharded`` mode on 8 fake CPU devices vs one device
   (same global batch; on a CPU the fake devices share the cores, so this measures the
   overhead of the parallel wrappers, not a speed-up);
4. checkpoint: async save (time until training can continue) and a resume
   (a new ``Checkpointer`` + ``restore_latest`` of the whole TrainState).

Models: ``mlp_toy`` (ScoreMLP 3x128, 2-D data, batch 512, inline eps-DSM loss, 20 steps
per call); ``digits`` and ``cifar10_ddpmpp``: the networks and losses of
``experiments/configs/digits.py`` (batch 64) and ``cifar10_ddpmpp.py`` (batch 8 on a CPU),
built exactly as ``jaxscore train`` builds them, one step per call.

    python experiments/benchmarks/train.py            # full
    python experiments/benchmarks/train.py --quick    # smoke run

Writes experiments/benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import functools
import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from jaxscore.sde import VPSDE  # noqa: E402
from jaxscore.train import Checkpointer, init_train_state, make_optimizer, make_parallel  # noqa: E402
from jaxscore.train.step import _as_loss_and_aux, _per_example_loss, multi_step  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train.json")
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _config_problem(config_file: str, shape):
    """``(init_fn, loss_fn)`` exactly as ``jaxscore train --config experiments/configs/<file>`` builds them."""
    from jaxscore import experiment
    from jaxscore.config import load_config

    cfg = load_config(os.path.join(CONFIGS, config_file))
    model = experiment.build_model(cfg.model, ignore_unknown=True)
    loss_fn = experiment.make_loss_fn(cfg, model, experiment.build_sde(cfg.sde))
    return experiment.make_init_fn(model, shape), loss_fn


def _mlp_problem():
    """ScoreMLP preset on 2-D data with an inline eps-prediction DSM loss (VP SDE)."""
    from jaxscore.models import build_model

    model, sde = build_model("mlp_toy"), VPSDE()

    def init_fn(key):
        return model.init(key, jnp.zeros((1, 2)), jnp.full((1,), 0.5))

    def loss_fn(params, key, batch):
        """eps-prediction DSM: E_t,eps ||eps_theta(alpha_t x0 + sigma_t eps, t) - eps||^2."""
        x0 = batch["x"]
        kt, ke = jax.random.split(key)
        t = jax.random.uniform(kt, (x0.shape[0],), minval=sde.t_min, maxval=sde.T)
        xt, eps = sde.marginal_sample(ke, x0, t)
        pred = model.apply(params, xt, t)
        return jnp.mean(jnp.sum((pred - eps).reshape(x0.shape[0], -1) ** 2, -1))

    return init_fn, loss_fn


def _models(quick: bool):
    """(name, (init_fn, loss_fn), per-example shape, global batch, steps per call, modes, timed rounds).

    U-Nets run one step per call: XLA:CPU executes convolutions ~9x slower inside a while
    loop (``lax.scan``; measured 849 vs 85 ms per tiny-U-Net step), so on a CPU the K-step
    form is used for the MLP only.
    """
    specs = [("mlp_toy", _mlp_problem(), (2,), 512, 20, ("single", "pmap", "sharded"), 10)]
    if quick:
        return specs
    specs.append(("digits", _config_problem("digits.py", (8, 8, 1)), (8, 8, 1), 64, 1,
                  ("single", "pmap", "sharded"), 20))
    # score_sde's CIFAR-10 DDPM++ (cont.) network; batch 8 instead of 128 so a CPU step takes seconds
    specs.append(("cifar10_ddpmpp", _config_problem("cifar10_ddpmpp.py", (32, 32, 3)), (32, 32, 3), 8, 1,
                  ("single",), 3))
    return specs


def _xla_memory_mb(compiled) -> dict:
    """XLA's memory plan for one compiled call (MiB): arguments, outputs, temporaries, and
    their sum less donated/aliased buffers as the peak device-memory estimate."""
    m = compiled.memory_analysis()
    if m is None:
        return {}
    mb = 2.0**20
    return {
        "argument_mb": m.argument_size_in_bytes / mb,
        "output_mb": m.output_size_in_bytes / mb,
        "temp_mb": m.temp_size_in_bytes / mb,
        "peak_estimate_mb": (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                             - m.alias_size_in_bytes) / mb,
    }


def _timed(fn):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def bench_model(name, problem, shape, batch, *, k, repeats, modes):
    init_fn, loss_fn = problem
    tx = make_optimizer(lr=2e-4, warmup=100)
    state = init_train_state(0, init_fn, tx)
    n_params = int(sum(np.size(x) for x in jax.tree.leaves(state.params)))
    state_bytes = int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)))
    rng = np.random.default_rng(0)
    host_batches = {"x": rng.uniform(-1, 1, size=(k, batch, *shape)).astype(np.float32)}
    out = {"params": n_params, "state_mb": state_bytes / 2**20, "batch": batch, "steps_per_call": k}
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)

    # bare forward+backward of the same loss on the same batches, value_and_grad only
    # (a scan over the K batches when K > 1, exactly the structure of the K-step train call)
    @jax.jit
    def bare(params, key, batches):
        if k == 1:
            return jax.value_and_grad(loss_fn)(params, jax.random.fold_in(key, 0), jax.tree.map(lambda x: x[0], batches))

        def body(acc, xs):
            i, b = xs
            loss, g = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(key, i), b)
            return jax.tree.map(jnp.add, acc, g), loss

        zeros = jax.tree.map(jnp.zeros_like, params)
        return lax.scan(body, zeros, (jnp.arange(k), batches))

    # the same, with the loss evaluated per example as the train step does it (row i keyed by
    # fold_in(k, i), see jaxscore/train/step.py): separates the cost of per-example noise keys
    # from the cost of the optimizer, EMA and non-finite guard
    @jax.jit
    def bare_per_example(params, key, batches):
        wrapped = _as_loss_and_aux(loss_fn)

        def grad_at(i, b):
            loss_of_params = _per_example_loss(wrapped, b, jax.random.fold_in(key, i), None)
            return jax.value_and_grad(loss_of_params, has_aux=True)(params)

        if k == 1:
            return grad_at(0, jax.tree.map(lambda x: x[0], batches))

        def body(acc, xs):
            (loss, _), g = grad_at(*xs)
            return jax.tree.map(jnp.add, acc, g), loss

        return lax.scan(body, jax.tree.map(jnp.zeros_like, params), (jnp.arange(k), batches))

    dev_batches = jax.device_put(host_batches, jax.devices()[0])
    params = jax.device_put(state.params, jax.devices()[0])
    key = jax.random.key(1)
    runners = {"bare": lambda: bare(params, key, dev_batches),
               "bare_per_example": lambda: bare_per_example(params, key, dev_batches)}
    compile_s = {name: _timed(fn) for name, fn in runners.items()}
    for mode in modes:
        par = make_parallel(mode, loss_fn=loss_fn, tx=tx, ema_rate=0.9999)
        box = {"state": par.put_state(state)}
        b = par.put_batches(host_batches)

        def call(par=par, box=box, b=b):
            box["state"], metrics = par.step(box["state"], b)
            return box["state"], metrics

        compile_s[mode] = _timed(call)
        runners[mode] = call
        out[mode] = {"devices": par.num_devices}
    # Interleaved rounds, minimum per variant: this machine is shared, and the minimum is
    # the estimate least disturbed by other processes.
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            times[name].append(_timed(fn))
    out["bare_ms_per_step"] = 1e3 * min(times["bare"]) / k
    out["bare_first_call_s(compile)"] = compile_s["bare"]
    for mode in modes:
        t = min(times[mode])
        out[mode].update(
            {"ms_per_step": 1e3 * t / k, "steps_per_s": k / t, "first_call_s(compile)": compile_s[mode],
             "median_ms_per_step": 1e3 * float(np.median(times[mode])) / k}
        )
    out["bare_per_example_ms_per_step"] = 1e3 * min(times["bare_per_example"]) / k
    # ratios: the median over rounds of (bare / train) timed back to back in the same round; on
    # this shared VM the speed drifts by 20-40% within minutes, so ratios of minima taken in
    # different rounds are off by as much (the ratio of minima is kept for reference)
    for bare_name, field in (("bare", "ratio_bare_over_train_single"),
                             ("bare_per_example", "ratio_bare_per_example_over_train_single")):
        paired = np.asarray(times[bare_name]) / np.asarray(times["single"])
        out[field] = float(np.median(paired))
        out[field + "(of_minima)"] = min(times[bare_name]) / min(times["single"])
        out[field + "(spread)"] = [float(paired.min()), float(paired.max())]
    for mode in modes:
        if mode != "single":
            out[f"{mode}_over_single_time(paired_median)"] = float(np.median(np.asarray(times[mode]) / np.asarray(times["single"])))
    step_fn = jax.jit(functools.partial(multi_step, loss_fn=loss_fn, tx=tx, ema_rate=0.9999), donate_argnums=0)
    out["xla_memory"] = {
        "bare": _xla_memory_mb(bare.lower(params, key, dev_batches).compile()),
        "train_step_single": _xla_memory_mb(step_fn.lower(abstract_state, dev_batches).compile()),
    }
    for mode in modes:
        if mode != "single":
            out[f"{mode}_over_single_time"] = out[mode]["ms_per_step"] / out["single"]["ms_per_step"]

    # checkpoint save (async) and resume
    wd = tempfile.mkdtemp(prefix="jaxscore_bench_ckpt_")
    try:
        ck = Checkpointer(wd, save_every=1, async_save=True)
        t0 = time.perf_counter()
        ck.save(1, state)
        save_block = time.perf_counter() - t0
        ck.wait()
        save_total = time.perf_counter() - t0
        t0 = time.perf_counter()
        ck.save(2, state)
        out["async_save_blocking_s(steady)"] = time.perf_counter() - t0
        ck.wait()
        out["save_committed_s(steady)"] = time.perf_counter() - t0
        ck.close()
        shutil.rmtree(os.path.join(wd, "checkpoints", "2"))
        abstract = jax.eval_shape(lambda: state)
        resume = []
        for _ in range(2):  # the first one is what a restarted process pays (cold caches)
            t0 = time.perf_counter()
            ck2 = Checkpointer(wd)
            restored, meta = ck2.restore_latest(abstract)
            jax.block_until_ready(restored)
            resume.append(time.perf_counter() - t0)
            ck2.close()
            assert meta["step"] == 1
        out["checkpoint"] = {
            "async_save_blocking_s(first, incl. fingerprint compile)": save_block,
            "save_committed_s(first)": save_total,
            "resume_restore_s(cold)": resume[0],
            "resume_restore_s(warm)": resume[1],
        }
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small run (fewer repeats, MLP only)")
    p.add_argument("--models", nargs="*", default=None, help="only these models (mlp_toy, digits, cifar10_ddpmpp)")
    args = p.parse_args(argv)
    results = {
        "device": str(jax.devices()[0].device_kind),
        "n_devices": jax.device_count(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "quick": args.quick,
        "models": {},
    }
    if os.path.exists(RESULTS) and args.models:  # keep the other models' figures from an earlier run
        with open(RESULTS) as f:
            results["models"] = json.load(f).get("models", {})
    for name, problem, shape, batch, k, modes, repeats in _models(args.quick):
        if args.models and name not in args.models:
            continue
        if args.quick:
            k, repeats = min(k, 5), 3
        print(f"== {name}: data {shape}, batch {batch}, {k} steps/call, {repeats} timed rounds", flush=True)
        r = bench_model(name, problem, shape, batch, k=k, repeats=repeats, modes=modes)
        results["models"][name] = r
        c = r["checkpoint"]
        par_line = " | ".join(
            f"{m} x{r[m]['devices']} {r[m]['ms_per_step']:.2f} ms/step ({r[f'{m}_over_single_time(paired_median)']:.2f}x single)"
            for m in modes if m != "single"
        )
        mem = r["xla_memory"]
        print(
            f"  params {r['params']:,}  state {r['state_mb']:.2f} MiB\n"
            f"  bare fwd+bwd {r['bare_ms_per_step']:.2f} ms/step | train step (single) "
            f"{r['single']['ms_per_step']:.2f} ms/step -> ratio {r['ratio_bare_over_train_single']:.3f} "
            f"(vs per-example fwd+bwd {r['bare_per_example_ms_per_step']:.2f} ms/step: "
            f"{r['ratio_bare_per_example_over_train_single']:.3f})\n"
            + (f"  {par_line}\n" if par_line else "")
            + f"  compile (first call): " + ", ".join(f"{m} {r[m]['first_call_s(compile)']:.1f} s" for m in modes) + "\n"
            f"  XLA peak memory estimate: train step {mem['train_step_single'].get('peak_estimate_mb', float('nan')):.1f} MiB, "
            f"bare fwd+bwd {mem['bare'].get('peak_estimate_mb', float('nan')):.1f} MiB\n"
            f"  checkpoint: async save blocks training {r['async_save_blocking_s(steady)'] * 1e3:.0f} ms "
            f"(first save {c['async_save_blocking_s(first, incl. fingerprint compile)']:.2f} s), committed after "
            f"{r['save_committed_s(steady)'] * 1e3:.0f} ms; resume (restore + verify) cold "
            f"{c['resume_restore_s(cold)']:.2f} s, warm {c['resume_restore_s(warm)'] * 1e3:.0f} ms",
            flush=True,
        )
        r["peak_rss_mb_so_far"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _write(results)  # after every model, so a long run that is stopped keeps what it measured
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {results['peak_rss_mb']:.0f} MiB")
    _write(results)
    print(f"wrote {RESULTS}")


def _write(results):
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
