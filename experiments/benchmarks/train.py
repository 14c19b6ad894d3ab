"""Benchmark the training system.

1. Train-step throughput vs the bare forward+backward of the same model and loss
   (``lax.scan`` over K steps of ``value_and_grad`` only), ratio = bare time / train time
   (target >= 0.9: the optimizer, EMA, clipping and non-finite guard cost <= ~10%);
2. compile time of the K-step train call; process peak RSS (``resource.getrusage``);
3. the same train step in ``pmap`` and ``sharded`` mode on 8 fake CPU devices vs one device
   (same global batch; on a CPU the fake devices share the cores, so this measures the
   overhead of the parallel wrappers, not a speed-up);
4. checkpoint: async save (time until training can continue) and a resume
   (a new ``Checkpointer`` + ``restore_latest`` of the whole TrainState).

Models: ``mlp_toy`` (ScoreMLP 3x128, 2-D data, batch 512) and, when ``jaxscore.models``
is present, ``unet_tiny`` (DDPM++ ch=32 on 8x8x1 "digits"-sized images, batch 64).
Loss: continuous-time denoising score matching, eps-parameterisation, VP SDE (written
inline here so the benchmark measures the train system, not a loss implementation).

    python experiments/benchmarks/train.py            # full
    python experiments/benchmarks/train.py --quick    # smoke run

Writes experiments/benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
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

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train.json")


def _models(quick: bool):
    specs = []
    try:
        from jaxscore.models import build_model

        specs.append(("mlp_toy", build_model("mlp_toy"), (2,), 512, None))
        # a U-Net step is ~100x an MLP step on a CPU: fewer steps per call
        specs.append(("unet_tiny", build_model("unet_tiny"), (8, 8, 1), 64, 4))
    except Exception as err:  # pragma: no cover - models not available
        import flax.linen as nn

        print(f"jaxscore.models unavailable ({err}); using a local MLP")

        class MLP(nn.Module):
            @nn.compact
            def __call__(self, x, t, train=False):
                h = jnp.concatenate([x, t[:, None]], -1)
                for _ in range(3):
                    h = nn.silu(nn.Dense(128)(h))
                return nn.Dense(x.shape[-1])(h)

        specs.append(("local_mlp", MLP(), (2,), 512, None))
    return specs


def _problem(model, shape):
    """``(init_fn, loss_fn)`` for ``model`` on data of per-example ``shape``."""
    sde = VPSDE()

    def init_fn(key):
        return model.init(key, jnp.zeros((1, *shape)), jnp.full((1,), 0.5))

    def loss_fn(params, key, batch):
        """eps-prediction DSM: E_t,eps ||eps_theta(alpha_t x0 + sigma_t eps, t) - eps||^2."""
        x0 = batch["x"]
        kt, ke = jax.random.split(key)
        t = jax.random.uniform(kt, (x0.shape[0],), minval=sde.t_min, maxval=sde.T)
        xt, eps = sde.marginal_sample(ke, x0, t)
        pred = model.apply(params, xt, t)
        return jnp.mean(jnp.sum((pred - eps).reshape(x0.shape[0], -1) ** 2, -1))

    return init_fn, loss_fn


def _timed(fn):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def bench_model(name, model, shape, batch, *, k, repeats, modes):
    init_fn, loss_fn = _problem(model, shape)
    tx = make_optimizer(lr=2e-4, warmup=100)
    state = init_train_state(0, init_fn, tx)
    n_params = int(sum(np.size(x) for x in jax.tree.leaves(state.params)))
    state_bytes = int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)))
    rng = np.random.default_rng(0)
    host_batches = {"x": rng.uniform(-1, 1, size=(k, batch, *shape)).astype(np.float32)}
    out = {"params": n_params, "state_mb": state_bytes / 2**20, "batch": batch, "steps_per_call": k}

    # bare forward+backward: the same scan over K batches, value_and_grad only
    @jax.jit
    def bare(params, key, batches):
        def body(acc, xs):
            i, b = xs
            loss, g = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(key, i), b)
            return jax.tree.map(jnp.add, acc, g), loss

        zeros = jax.tree.map(jnp.zeros_like, params)
        return lax.scan(body, zeros, (jnp.arange(k), batches))

    dev_batches = jax.device_put(host_batches, jax.devices()[0])
    params = jax.device_put(state.params, jax.devices()[0])
    key = jax.random.key(1)
    runners = {"bare": lambda: bare(params, key, dev_batches)}
    compile_s = {"bare": _timed(runners["bare"])}
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
    out["ratio_bare_over_train_single"] = out["bare_ms_per_step"] / out["single"]["ms_per_step"]
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
    p.add_argument("--models", nargs="*", default=None, help="only these models (mlp_toy, unet_tiny)")
    args = p.parse_args(argv)
    k = 5 if args.quick else 20
    repeats = 3 if args.quick else 10
    results = {
        "device": str(jax.devices()[0].device_kind),
        "n_devices": jax.device_count(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "quick": args.quick,
        "models": {},
    }
    specs = _models(args.quick)
    if args.quick:
        specs = specs[:1]
    for name, model, shape, batch, k_model in specs:
        if args.models and name not in args.models:
            continue
        kk = min(k, k_model or k)
        reps = repeats if k_model is None else max(2, repeats // 3)
        print(f"== {name}: data {shape}, batch {batch}, {kk} steps/call, {reps} timed rounds", flush=True)
        r = bench_model(name, model, shape, batch, k=kk, repeats=reps, modes=("single", "pmap", "sharded"))
        results["models"][name] = r
        c = r["checkpoint"]
        print(
            f"  params {r['params']:,}  state {r['state_mb']:.2f} MiB\n"
            f"  bare fwd+bwd {r['bare_ms_per_step']:.2f} ms/step | train step (single) "
            f"{r['single']['ms_per_step']:.2f} ms/step -> ratio {r['ratio_bare_over_train_single']:.3f}\n"
            f"  pmap x{r['pmap']['devices']} {r['pmap']['ms_per_step']:.2f} ms/step "
            f"({r['pmap_over_single_time']:.2f}x single) | sharded x{r['sharded']['devices']} "
            f"{r['sharded']['ms_per_step']:.2f} ms/step ({r['sharded_over_single_time']:.2f}x single)\n"
            f"  compile (first call): single {r['single']['first_call_s(compile)']:.1f} s, "
            f"pmap {r['pmap']['first_call_s(compile)']:.1f} s, sharded {r['sharded']['first_call_s(compile)']:.1f} s\n"
            f"  checkpoint: async save blocks training {r['async_save_blocking_s(steady)'] * 1e3:.0f} ms "
            f"(first save {c['async_save_blocking_s(first, incl. fingerprint compile)']:.2f} s), committed after "
            f"{r['save_committed_s(steady)'] * 1e3:.0f} ms; resume (restore + verify) cold "
            f"{c['resume_restore_s(cold)']:.2f} s, warm {c['resume_restore_s(warm)'] * 1e3:.0f} ms"
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
