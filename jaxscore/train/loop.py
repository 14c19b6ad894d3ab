"""The training loop: resume-or-init, compiled K-step calls, checkpoints, logging, hooks.

``train(config, workdir, init_fn=..., loss_fn=..., batch_fn=...)`` is generic: it knows
nothing of models, SDEs or datasets. The caller supplies

- ``init_fn(key) -> params``: builds the initial parameters (traceable: it is also run
  under ``jax.eval_shape`` to get the structure to restore into);
- ``loss_fn(params, key, batch) -> loss | (loss, aux_dict)``: pure;
- ``batch_fn(step) -> batch``: this process's slice of the global batch for optimizer step
  ``step`` (rows ``[p*b, (p+1)*b)`` of the ``B``-row global batch, ``b = B/process_count``) —
  a pure function of ``(seed, step)``, so a resumed run sees exactly the data it would
  have seen;
- ``eval_fns``: ``Hook``s called every ``every`` steps with ``(state, step)``; they return a
  dict of scalars to log (or ``None``) — sample grids, held-out loss, bits/dim...

Config keys (defaults in ``default_config()``): ``seed``; ``training.{n_iters, batch_size,
mode, steps_per_call, log_every, checkpoint_every, keep_last, keep_every, eval_every,
max_consecutive_nonfinite, async_checkpoint, progress}``; ``optim.*`` (see
``state.make_optimizer``); ``distributed.*`` (see ``parallel.maybe_initialize_distributed``).

Determinism: a run interrupted at any point (even ``kill -9``) and restarted with the same
workdir and config ends with bit-identical parameters to an uninterrupted run, because the
state is restored exactly, step ``n`` uses ``fold_in(key, n)`` (example ``i`` of it
``fold_in(fold_in(key, n), i)``) and ``batch_fn(n)``, and calls are cut at checkpoint
boundaries so the same compiled programs run on the same inputs. Resuming with a different
``training.mode``, ``steps_per_call`` or device count is allowed and computes the same math,
but in a different float summation order: equal to float tolerance, not bit for bit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from jaxscore.train._config import cfg_get, config_to_dict
from jaxscore.train.checkpoint import CONFIG_FILE, Checkpointer, check_config
from jaxscore.train.logging import MetricsWriter
from jaxscore.train.parallel import make_parallel, maybe_initialize_distributed
from jaxscore.train.state import (
    TrainState,
    ema_rate_from_config,
    init_train_state,
    lr_at,
    make_optimizer,
)


class NonFiniteError(RuntimeError):
    """Training stopped after too many consecutive steps with non-finite loss/gradients."""


def default_config() -> ml_collections.ConfigDict:
    """The training/optimizer settings ``train`` reads, with their defaults (score_sde's for optim)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.training = ml_collections.ConfigDict(
        {
            "n_iters": 1000,
            "batch_size": 128,  # global batch size (all devices, all processes)
            "mode": "single",  # "single" | "pmap" | "sharded"
            "steps_per_call": 1,  # K optimizer steps per compiled call (lax.scan)
            "log_every": 50,
            "checkpoint_every": 500,
            "keep_last": 3,
            "keep_every": 0,  # also keep every step divisible by this (0: none)
            "eval_every": 0,  # default period for hooks that give none (0: only at the end)
            "max_consecutive_nonfinite": 10,
            "async_checkpoint": True,
            "progress": True,
        }
    )
    c.optim = ml_collections.ConfigDict(
        {
            "optimizer": "adam",
            "lr": 2e-4,
            "warmup": 5000,
            "grad_clip": 1.0,
            "beta1": 0.9,
            "beta2": 0.999,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "ema_rate": 0.9999,
        }
    )
    return c


@dataclasses.dataclass
class Hook:
    """A periodic callback: ``fn(state, step) -> dict of scalars | None``.

    ``state`` is the unreplicated ``TrainState`` (use ``state.ema_params`` for sampling).
    Called on every process (so hooks may run collective computations); write files only
    when ``jax.process_index() == 0``. ``every=None`` uses ``training.eval_every``;
    ``at_end`` also calls it after the last step. Results are logged as ``"{name}/{key}"``.
    """

    fn: Callable[[TrainState, int], Mapping[str, Any] | None]
    every: int | None = None
    name: str = ""
    at_end: bool = True


@dataclasses.dataclass
class TrainResult:
    """What ``train`` returns: the final (unreplicated) state and how the run ended."""

    state: TrainState
    step: int
    preempted: bool
    resumed_from: int | None
    total_skipped: int
    workdir: str


class _Preemption:
    """SIGTERM -> a flag checked between compiled calls (main thread only)."""

    def __init__(self, enabled: bool):
        self.flag = False
        self._previous = None
        self._installed = False
        if enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
            self._installed = True

    def _handler(self, signum, frame):
        self.flag = True

    def requested(self) -> bool:
        if not self._installed:
            return False
        if jax.process_count() == 1:
            return self.flag
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.array([self.flag], dtype=np.int32))
        return bool(np.any(flags))

    def restore(self):
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False


def _normalize_hooks(eval_fns, default_every: int) -> list[Hook]:
    hooks = []
    for i, h in enumerate(eval_fns):
        if isinstance(h, Hook):
            hook = h
        elif callable(h):
            hook = Hook(fn=h)
        elif isinstance(h, tuple) and len(h) == 2:
            hook = Hook(fn=h[1], every=h[0])
        else:
            raise TypeError(f"eval_fns[{i}]: expected a Hook, a callable or (every, fn), got {type(h).__name__}.")
        every = hook.every if hook.every is not None else default_every
        hooks.append(dataclasses.replace(hook, every=int(every or 0), name=hook.name or f"eval{i}"))
    return hooks


def _next_boundary(step: int, every: int) -> int:
    return (step // every + 1) * every


def _stack_batches(batch_fn, start: int, k: int, local_batch_size: int):
    batches = [batch_fn(s) for s in range(start, start + k)]
    for s, b in zip(range(start, start + k), batches):
        for x in jax.tree.leaves(b):
            if np.ndim(x) < 1 or np.shape(x)[0] != local_batch_size:
                raise ValueError(
                    f"batch_fn({s}): expected every leaf to have {local_batch_size} rows (this process's "
                    f"share of training.batch_size={local_batch_size * jax.process_count()} over "
                    f"{jax.process_count()} process(es)), got shape {np.shape(x)}."
                )
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)


def train(
    config,
    workdir: str | os.PathLike,
    *,
    init_fn: Callable[[jax.Array], Any],
    loss_fn: Callable,
    batch_fn: Callable[[int], Any],
    eval_fns: Sequence[Hook | Callable | tuple] = (),
    tx=None,
    allow_config_change: bool = False,
    handle_sigterm: bool = True,
    devices=None,
) -> TrainResult:
    """Train (or resume training) in ``workdir``; see the module docstring.

    Steps: start ``jax.distributed`` if configured; build the optimizer (``tx`` or
    ``make_optimizer(config)``) and the compiled step for ``training.mode``; restore the
    newest readable checkpoint in ``workdir`` (older ones if it is corrupt; refusing if its
    saved config differs, unless ``allow_config_change``) or initialise with
    ``init_train_state(seed, init_fn, tx)``; then run calls of
    ``steps_per_call`` steps, cut so every checkpoint/hook step ends a call. Every
    ``log_every`` steps a record (window means of the metrics, skipped-step counts, lr,
    steps/s) goes to ``metrics.jsonl`` (+ TensorBoard) and the progress bar.

    Stops when ``step == n_iters`` (final checkpoint written), on SIGTERM (checkpoint written,
    ``preempted=True``), or raises ``NonFiniteError`` after ``max_consecutive_nonfinite``
    skipped steps in a row (checkpoints already written are left intact; nothing new is
    saved). Always waits for pending async checkpoint writes before returning or raising.
    """
    maybe_initialize_distributed(config)
    workdir = os.path.abspath(os.fspath(workdir))
    is_main = jax.process_index() == 0
    get = lambda name, default: cfg_get(config, name, default)  # noqa: E731
    n_iters = int(get("training.n_iters", 1000))
    batch_size = int(get("training.batch_size", 128))
    mode = str(get("training.mode", "single"))
    k_max = max(1, int(get("training.steps_per_call", 1)))
    log_every = max(1, int(get("training.log_every", 50)))
    ckpt_every = max(1, int(get("training.checkpoint_every", 500)))
    max_nonfinite = int(get("training.max_consecutive_nonfinite", 10))
    show_progress = bool(get("training.progress", True)) and is_main
    seed = int(get("seed", get("training.seed", 0)))

    tx = tx if tx is not None else make_optimizer(config)
    ema_rate = ema_rate_from_config(config)
    par = make_parallel(mode, loss_fn=loss_fn, tx=tx, ema_rate=ema_rate, devices=devices)
    local_bs = par.local_batch_size(batch_size)  # validates divisibility early
    hooks = _normalize_hooks(eval_fns, int(get("training.eval_every", 0) or 0))

    def fresh_state():
        return init_train_state(seed, init_fn, tx)

    sharding = par.checkpoint_sharding()
    abstract = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), jax.eval_shape(fresh_state)
    )

    if is_main:
        os.makedirs(workdir, exist_ok=True)
    ckpt = Checkpointer(
        workdir,
        save_every=ckpt_every,
        keep_last=int(get("training.keep_last", 3)),
        keep_every=int(get("training.keep_every", 0) or 0) or None,
        async_save=bool(get("training.async_checkpoint", True)),
    )
    writer = None
    preemption = None
    bar = None
    try:
        restored = ckpt.restore_latest(abstract)
        resumed_from = None
        if restored is not None:
            host_state, meta = restored
            check_config(meta.get("config", {}), config, allow_change=allow_config_change)
            state = par.from_checkpoint(host_state)
            resumed_from = int(meta["step"])
            prior_skipped = int(meta.get("skipped_total", 0))
        else:
            state = par.put_state(fresh_state())
            prior_skipped = 0
        step = resumed_from or 0
        if is_main:
            tmp = os.path.join(workdir, f".{CONFIG_FILE}.tmp")
            with open(tmp, "w") as f:
                json.dump(config_to_dict(config), f, indent=2, sort_keys=True)
            os.replace(tmp, os.path.join(workdir, CONFIG_FILE))
        writer = MetricsWriter(workdir, enabled=is_main, start_step=step)
        preemption = _Preemption(handle_sigterm)
        if show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=n_iters, initial=step, desc="train", dynamic_ncols=True)

        def chunk(s: int) -> int:
            end = min(n_iters, s + k_max, _next_boundary(s, ckpt_every))
            for h in hooks:
                if h.every:
                    end = min(end, _next_boundary(s, h.every))
            return end - s

        def run_hooks(s: int, final: bool):
            view = None
            for h in hooks:
                due = (h.every and s % h.every == 0) or (final and h.at_end)
                if not due:
                    continue
                view = par.unreplicate(state) if view is None else view
                out = h.fn(view, s)
                if out:
                    writer.write(s, {f"{h.name}/{k}": v for k, v in out.items()})

        window: dict[str, list] = {}
        window_skipped = 0
        window_steps = 0
        window_t0 = time.perf_counter()
        total_skipped = prior_skipped
        consecutive = 0
        last_logged = step
        preempted = False
        next_batches = None
        if step < n_iters:
            k = chunk(step)
            next_batches = (k, par.put_batches(_stack_batches(batch_fn, step, k, local_bs)))
        while step < n_iters:
            k, batches = next_batches
            state, metrics = par.step(state, batches)
            new_step = step + k
            if new_step < n_iters:  # prepare the next call's data while this one runs
                k_next = chunk(new_step)
                next_batches = (k_next, par.put_batches(_stack_batches(batch_fn, new_step, k_next, local_bs)))
            m = par.fetch_metrics(metrics)
            skipped = np.asarray(m["skipped"]).astype(bool)
            for i in range(k):
                if skipped[i]:
                    consecutive += 1
                else:
                    consecutive = 0
                    for name, v in m.items():
                        if name != "skipped":
                            window.setdefault(name, []).append(float(v[i]))
                if max_nonfinite > 0 and consecutive >= max_nonfinite:
                    last = ckpt.latest_step()
                    bad_to = step + i + 1
                    raise NonFiniteError(
                        f"{consecutive} consecutive training steps ({bad_to - consecutive}..{bad_to - 1}) had a "
                        "non-finite loss or gradient and were skipped "
                        f"(training.max_consecutive_nonfinite={max_nonfinite}). Stopping. "
                        + (
                            f"The last checkpoint (step {last}) in {ckpt.directory} is intact."
                            if last is not None
                            else "No checkpoint had been written yet."
                        )
                        + " Look at the learning rate, the data at those steps and the loss's numerics."
                    )
            n_skip = int(skipped.sum())
            total_skipped += n_skip
            window_skipped += n_skip
            window_steps += k
            step = new_step

            if bar is not None:
                bar.update(k)
            if step // log_every > last_logged // log_every or step == n_iters:
                dt = time.perf_counter() - window_t0
                record = {name: float(np.mean(v)) for name, v in window.items()}
                record.update(
                    skipped=window_skipped,
                    skipped_total=total_skipped,
                    lr=lr_at(step - total_skipped, config),
                    steps_per_sec=window_steps / max(dt, 1e-9),
                )
                writer.write(step, record)
                if bar is not None:
                    post = {"loss": f"{record.get('loss', float('nan')):.4g}", "steps/s": f"{record['steps_per_sec']:.3g}"}
                    if total_skipped:
                        post["skipped"] = total_skipped
                    bar.set_postfix(post, refresh=False)
                window, window_skipped, window_steps = {}, 0, 0
                window_t0 = time.perf_counter()
                last_logged = step

            extra = {"skipped_total": total_skipped}
            t_aside = time.perf_counter()
            ckpt.maybe_save(step, par.to_checkpoint(state), force=step == n_iters, config=config, extra=extra)
            run_hooks(step, final=step == n_iters)
            window_t0 += time.perf_counter() - t_aside  # steps/s counts training time only
            if step < n_iters and preemption.requested():
                ckpt.maybe_save(step, par.to_checkpoint(state), force=True, config=config, extra=extra)
                preempted = True
                break
        final_state = par.unreplicate(state)
        return TrainResult(
            state=final_state,
            step=step,
            preempted=preempted,
            resumed_from=resumed_from,
            total_skipped=total_skipped,
            workdir=workdir,
        )
    finally:
        if bar is not None:
            bar.close()
        ckpt.close()  # waits for pending async writes (SIGTERM still only sets the flag here)
        if preemption is not None:
            preemption.restore()
        if writer is not None:
            writer.close()
