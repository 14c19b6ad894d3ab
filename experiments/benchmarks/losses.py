"""Benchmark the score-matching losses: loss+grad throughput, train-step compile time, ISM cost vs d.

1. steps/s of a jitted ``value_and_grad`` of every loss on a toy MLP (batch 512, d = 2);
2. compile time of one full train step (loss + grad + optax Adam update, jitted) per loss family;
3. implicit score matching, exact divergence vs Hutchinson (1 Rademacher probe): ms per
   loss+grad as d grows (2, 8, 32, 128, 256).

Prints a table and writes experiments/benchmarks/results/losses.json.

    python experiments/benchmarks/losses.py            # full (< 3 min on a 2-core CPU)
    python experiments/benchmarks/losses.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscore import losses as L
from jaxscore.sde import VESDE, VPSDE

try:  # the bundled MLP when present; a tiny Linen MLP otherwise
    from jaxscore.models import ScoreMLP

    def make_model(hidden):
        return ScoreMLP(hidden_dims=hidden)

    MODEL_NAME = "jaxscore.models.ScoreMLP"
except ImportError:  # pragma: no cover
    import flax.linen as nn

    class _MLP(nn.Module):
        hidden: tuple

        @nn.compact
        def __call__(self, x, t):
            h = jnp.concatenate([x, jnp.log(t)[:, None]], -1)
            for w in self.hidden:
                h = nn.silu(nn.Dense(w)(h))
            return nn.Dense(x.shape[-1])(h)

    def make_model(hidden):
        return _MLP(tuple(hidden))

    MODEL_NAME = "benchmark-local flax MLP"


def _losses(apply):
    vp, ve = VPSDE(), VESDE()
    sigmas = jnp.geomspace(0.01, 5.0, 10)
    fixed_t = 0.5  # noise-free losses query the time-conditioned net at one t
    return {
        "esm": lambda p, k, x: L.explicit_score_matching(apply, p, x, lambda y: -y, t=fixed_t),
        "ism_exact": lambda p, k, x: L.implicit_score_matching(apply, p, x, t=fixed_t),
        "ism_hutchinson": lambda p, k, x: L.implicit_score_matching(
            apply, p, x, divergence="hutchinson", key=k, t=fixed_t),
        "ssm": lambda p, k, x: L.sliced_score_matching(apply, p, k, x, t=fixed_t),
        "ssm_vr": lambda p, k, x: L.sliced_score_matching(apply, p, k, x, variance_reduced=True, t=fixed_t),
        "dsm": lambda p, k, x: L.dsm_loss(apply, p, k, x, 0.1, t=0.1),
        "multiscale_dsm": lambda p, k, x: L.multiscale_dsm_loss(apply, p, k, x, sigmas),
        "continuous_dsm_vp": lambda p, k, x: L.continuous_dsm_loss(apply, p, k, x, vp),
        "continuous_dsm_ve_likelihood_is": lambda p, k, x: L.continuous_dsm_loss(
            apply, p, k, x, ve, weighting="likelihood", t_sampling="importance"),
        "continuous_dsm_vp_edm": lambda p, k, x: L.continuous_dsm_loss(apply, p, k, x, vp, parameterization="edm"),
        "eps": lambda p, k, x: L.eps_loss(apply, p, k, x, vp),
        "x0": lambda p, k, x: L.x0_loss(apply, p, k, x, vp),
        "v": lambda p, k, x: L.v_loss(apply, p, k, x, vp),
        "edm": lambda p, k, x: L.edm_loss(apply, p, k, x),
    }


def _time_calls(fn, args_fn, iters):
    """Mean seconds per call of a compiled ``fn`` (after one warm-up call)."""
    jax.block_until_ready(fn(*args_fn(0)))
    start = time.perf_counter()
    out = None
    for i in range(iters):
        out = fn(*args_fn(i + 1))
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / iters


def bench_throughput(iters, batch, names=None):
    model = make_model((128, 128, 128))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, 2)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x, jnp.full((batch,), 0.5))
    keys = jax.random.split(jax.random.PRNGKey(1), iters + 1)
    rows = {}
    for name, loss in _losses(model.apply).items():
        if names and name not in names:
            continue
        step = jax.jit(jax.value_and_grad(lambda p, k: loss(p, k, x)))
        t0 = time.perf_counter()
        compiled = step.lower(params, keys[0]).compile()
        compile_s = time.perf_counter() - t0
        sec = _time_calls(compiled, lambda i: (params, keys[i]), iters)
        rows[name] = {"steps_per_s": 1.0 / sec, "ms_per_step": 1e3 * sec, "compile_s": compile_s}
        print(f"  {name:34s} {1.0 / sec:9.1f} steps/s  {1e3 * sec:7.2f} ms  (compile {compile_s:5.2f} s)", flush=True)
    return rows


def bench_train_step_compile(batch):
    model = make_model((128, 128, 128))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, 2)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x, jnp.full((batch,), 0.5))
    opt = optax.adam(1e-3)
    losses = _losses(model.apply)
    rows = {}
    for name in ("continuous_dsm_vp", "ism_exact", "edm"):
        loss = losses[name]

        def train_step(p, s, k, loss=loss):
            value, g = jax.value_and_grad(lambda q: loss(q, k, x))(p)
            upd, s = opt.update(g, s, p)
            return optax.apply_updates(p, upd), s, value

        t0 = time.perf_counter()
        jax.jit(train_step).lower(params, opt.init(params), jax.random.PRNGKey(2)).compile()
        rows[name] = time.perf_counter() - t0
        print(f"  train step compile ({name:18s}) {rows[name]:6.2f} s", flush=True)
    return rows


def bench_ism_vs_dim(dims, iters, batch):
    rows = []
    for d in dims:
        model = make_model((128, 128))
        x = jnp.asarray(np.random.default_rng(d).standard_normal((batch, d)), jnp.float32)
        params = model.init(jax.random.PRNGKey(0), x, jnp.full((batch,), 0.5))
        keys = jax.random.split(jax.random.PRNGKey(3), iters + 1)
        row = {"d": d}
        for kind in ("exact", "hutchinson"):
            fn = jax.jit(jax.value_and_grad(lambda p, k, kind=kind: L.implicit_score_matching(
                model.apply, p, x, divergence=kind, key=k, t=0.5)))
            row[f"{kind}_ms"] = 1e3 * _time_calls(fn, lambda i: (params, keys[i]), iters)
        row["ratio"] = row["exact_ms"] / row["hutchinson_ms"]
        rows.append(row)
        print(f"  d={d:4d}  exact {row['exact_ms']:8.2f} ms   hutchinson {row['hutchinson_ms']:7.2f} ms"
              f"   ratio {row['ratio']:6.1f}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (few iterations, d <= 32)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "losses.json"))
    args = parser.parse_args()

    iters = 5 if args.quick else 30
    batch = 512
    dims = (2, 8, 32) if args.quick else (2, 8, 32, 128, 256)
    ism_batch = 64 if args.quick else 128
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), model {MODEL_NAME}, "
          f"batch {batch}, d = 2")

    print("loss + grad throughput (jitted value_and_grad):")
    names = ("esm", "ism_exact", "ssm", "dsm", "continuous_dsm_vp", "eps", "edm") if args.quick else None
    throughput = bench_throughput(iters, batch, names)
    print("compile time of one train step (loss + grad + adam):")
    compile_rows = bench_train_step_compile(batch)
    print(f"ISM exact vs Hutchinson (1 Rademacher probe), MLP (128, 128), batch {ism_batch}:")
    ism = bench_ism_vs_dim(dims, max(3, iters // 3), ism_batch)

    result = {
        "benchmark": "losses",
        "quick": args.quick,
        "device": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "model": MODEL_NAME,
        "batch": batch,
        "iters": iters,
        "throughput_d2": throughput,
        "train_step_compile_s": compile_rows,
        "ism_exact_vs_hutchinson": {"batch": ism_batch, "hidden": [128, 128], "rows": ism},
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
