"""Subprocess worker for the training tests (kill -9 / SIGTERM / 2-process jax.distributed).

Run as ``python tests/train_worker.py --workdir W [...]``; prints one JSON line
``RESULT {...}``, (process 0) saves the final params to ``W/final_params.npz`` and exits with
``TrainResult.exit_code`` (0 finished, 143 SIGTERM, 130 SIGINT), as the CLI does.
The tiny problem (MLP regression with key-dependent input noise, batches a pure function
of (seed, step)) is importable so in-process tests can build the identical run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys


def problem(dim: int = 3, hidden: int = 16, global_batch: int = 8, seed: int = 0):
    """``(init_fn, loss_fn, make_batch_fn)`` of a tiny deterministic regression problem."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.silu(nn.Dense(hidden)(x))
            return nn.Dense(dim)(h)

    model = MLP()

    def init_fn(key):
        return model.init(key, jnp.zeros((1, dim)))

    def loss_fn(params, key, batch):
        x = batch["x"]
        noisy = x + 0.1 * jax.random.normal(key, x.shape)
        pred = model.apply(params, noisy)
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, {"pred_mean": jnp.mean(pred)}

    def make_batch_fn(process_index: int = 0, process_count: int = 1, hooks=None):
        b = global_batch // process_count

        def batch_fn(step):
            for hook in hooks or ():
                hook(step)
            rng = np.random.default_rng([seed, step])
            x = rng.normal(size=(global_batch, dim)).astype(np.float32)
            y = np.sin(x).astype(np.float32)
            sl = slice(process_index * b, (process_index + 1) * b)
            return {"x": x[sl], "y": y[sl]}

        return batch_fn

    return init_fn, loss_fn, make_batch_fn


def make_config(**training):
    """The training defaults (``jaxscore.train.default_config``) with a short, small run's cadence."""
    from jaxscore.train import default_config

    cfg = default_config()
    cfg.seed = 0
    cfg.training.update(
        dict(n_iters=20, batch_size=8, log_every=2, checkpoint_every=5, keep_last=2, progress=False)
    )
    cfg.training.update(training)
    cfg.optim.update(dict(lr=1e-2, warmup=3, ema_rate=0.9))
    return cfg


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--n_iters", type=int, default=20)
    p.add_argument("--checkpoint_every", type=int, default=5)
    p.add_argument("--steps_per_call", type=int, default=1)
    p.add_argument("--mode", default="single")
    p.add_argument("--devices", type=int, default=8, help="fake CPU devices in this process")
    p.add_argument("--kill_at", type=int, default=-1, help="send --signal to itself when batch kill_at is built")
    p.add_argument("--signal", default="KILL", choices=["KILL", "TERM", "INT"])
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--process_id", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.devices)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    cfg = make_config(
        n_iters=args.n_iters,
        checkpoint_every=args.checkpoint_every,
        steps_per_call=args.steps_per_call,
        mode=args.mode,
    )
    if args.num_processes > 1:
        cfg.distributed.update(
            coordinator_address=f"127.0.0.1:{args.port}",
            num_processes=args.num_processes,
            process_id=args.process_id,
            cpu_collectives="gloo",
        )
        from jaxscore.train import maybe_initialize_distributed

        maybe_initialize_distributed(cfg)

    import numpy as np

    from jaxscore.train import train

    sig = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}[args.signal]

    def killer(step):
        if step == args.kill_at:
            os.kill(os.getpid(), sig)

    init_fn, loss_fn, make_batch_fn = problem()
    batch_fn = make_batch_fn(jax.process_index(), jax.process_count(), hooks=[killer])
    result = train(cfg, args.workdir, init_fn=init_fn, loss_fn=loss_fn, batch_fn=batch_fn)
    if jax.process_index() == 0:
        leaves = jax.tree_util.tree_flatten_with_path(result.state.params)[0]
        np.savez(
            os.path.join(args.workdir, "final_params.npz"),
            **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves},
        )
    summary = {
        "step": result.step,
        "preempted": result.preempted,
        "resumed_from": result.resumed_from,
        "process_index": jax.process_index(),
    }
    print("RESULT " + json.dumps(summary), flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
