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

Config keys and their defaults: ``settings.DEFAULTS`` (``seed``; ``training.*``, read as
:class:`~jaxscore.train.settings.LoopSettings`; ``optim.*``, see ``state.make_optimizer``;
``distributed.*``, see ``parallel.maybe_initialize_distributed``).

The parts, each a helper below: :class:`_Schedule` (where calls end: checkpoint and hook
steps, ``n_iters``; which hooks are due), :func:`_prefetched_calls` (host batches stacked to
``[K, b, ...]`` and placed one call ahead), :class:`_NonFiniteGuard`,
:class:`_MetricsWindow` (what a log record averages), :class:`_Preemption` (SIGTERM) and
:func:`_restore_or_init`.

Determinism: a run interrupted at any point (even ``kill -9``) and restarted with the same
workdir and config ends with bit-identical parameters to an uninterrupted run, because the
state is restored exactly, step ``n`` uses ``fold_in(key, n)`` (example ``i`` of it
``fold_in(fold_in(key, n), i)``) and ``batch_fn(n)``, and calls are cut at checkpoint
boundaries so the same compiled programs run on the same inputs. Resuming with a different
``training.mode``, ``steps_per_call`` or device count is allowed and computes the same math,
but in a different float summation order: equal to float tolerance, not bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxscore.train.checkpoint import CONFIG_FILE, Checkpointer, check_config
from jaxscore.train.logging import MetricsWriter
from jaxscore.train.parallel import Parallel, make_parallel, maybe_initialize_distributed
from jaxscore.train.settings import LoopSettings, config_to_dict
from jaxscore.train.state import TrainState, ema_rate_from_config, init_train_state, lr_at, make_optimizer


class NonFiniteError(RuntimeError):
    """Training stopped after too many consecutive steps with non-finite loss/gradients."""


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


# ---- scheduling: where compiled calls end, which hooks run ---------------------------------


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


@dataclasses.dataclass
class _Schedule:
    """Calls of up to ``steps_per_call`` steps, cut so every checkpoint and hook step ends one."""

    settings: LoopSettings
    hooks: list[Hook]

    def call_length(self, step: int) -> int:
        s = self.settings
        end = min(s.n_iters, step + s.steps_per_call, _next_boundary(step, s.checkpoint_every))
        for h in self.hooks:
            if h.every:
                end = min(end, _next_boundary(step, h.every))
        return end - step

    def calls(self, start: int) -> Iterator[tuple[int, int]]:
        """``(first step, number of steps)`` of each call from ``start`` to ``n_iters``."""
        step = start
        while step < self.settings.n_iters:
            k = self.call_length(step)
            yield step, k
            step += k

    def run_hooks(self, step: int, state_view: Callable[[], TrainState], writer: MetricsWriter) -> None:
        """Call the hooks due at ``step`` (all ``at_end`` ones at ``n_iters``); log what they return."""
        final = step == self.settings.n_iters
        view = None
        for h in self.hooks:
            if (h.every and step % h.every == 0) or (final and h.at_end):
                view = state_view() if view is None else view
                out = h.fn(view, step)
                if out:
                    writer.write(step, {f"{h.name}/{k}": v for k, v in out.items()})


# ---- batches: stacked on the host, placed one call ahead ------------------------------------


def _stack_batches(batch_fn, start: int, k: int, local_batch_size: int):
    """``batch_fn(start), ..., batch_fn(start + k - 1)`` stacked to ``[k, b, ...]`` (rows checked)."""
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


def _prefetched_calls(batch_fn, mode: Parallel, local_batch_size: int, calls: Iterator[tuple[int, int]]):
    """``(k, device batches)`` per call. Built when asked for: the loop asks for the next call's
    right after dispatching the current one, so they are built while it runs."""
    for start, k in calls:
        yield k, mode.put_batches(_stack_batches(batch_fn, start, k, local_batch_size))


# ---- per-step bookkeeping: non-finite guard, metrics window -------------------------------


@dataclasses.dataclass
class _NonFiniteGuard:
    """Counts skipped (non-finite) steps; raises after ``limit`` in a row (``limit <= 0``: never)."""

    limit: int
    total: int = 0
    consecutive: int = 0

    def check(self, first_step: int, skipped: np.ndarray, ckpt: Checkpointer) -> None:
        """``skipped[i]``: whether step ``first_step + i`` was skipped."""
        for i, bad in enumerate(skipped):
            self.consecutive = self.consecutive + 1 if bad else 0
            if self.limit > 0 and self.consecutive >= self.limit:
                raise NonFiniteError(self._message(first_step + i + 1, ckpt))
        self.total += int(skipped.sum())

    def _message(self, bad_to: int, ckpt: Checkpointer) -> str:
        last = ckpt.latest_step()
        return (
            f"{self.consecutive} consecutive training steps ({bad_to - self.consecutive}..{bad_to - 1}) had a "
            "non-finite loss or gradient and were skipped "
            f"(training.max_consecutive_nonfinite={self.limit}). Stopping. "
            + (
                f"The last checkpoint (step {last}) in {ckpt.directory} is intact."
                if last is not None
                else "No checkpoint had been written yet."
            )
            + " Look at the learning rate, the data at those steps and the loss's numerics."
        )


class _MetricsWindow:
    """The steps since the last log record: metric values of applied steps, skipped count, time.

    Time spent on checkpoints and hooks (``with window.paused():``) is not counted, so
    ``steps_per_sec`` measures training only.
    """

    def __init__(self, step: int, log_every: int, n_iters: int):
        self.log_every, self.n_iters = log_every, n_iters
        self._reset(step)

    def _reset(self, step: int) -> None:
        self.values: dict[str, list[float]] = {}
        self.skipped = self.steps = 0
        self.started_at = step
        self.t0 = time.perf_counter()

    def add(self, metrics: Mapping[str, np.ndarray], skipped: np.ndarray) -> None:
        """``metrics[name][i]`` of each of the call's steps; values of skipped steps are left out."""
        for i in np.flatnonzero(~skipped):
            for name, v in metrics.items():
                if name != "skipped":
                    self.values.setdefault(name, []).append(float(v[i]))
        self.skipped += int(skipped.sum())
        self.steps += len(skipped)

    def due(self, step: int) -> bool:
        return step // self.log_every > self.started_at // self.log_every or step == self.n_iters

    def flush(self, step: int, total_skipped: int, lr: float) -> dict[str, float]:
        """The record for this window (means, skipped counts, lr, steps/s); starts a new window."""
        dt = time.perf_counter() - self.t0
        record = {name: float(np.mean(v)) for name, v in self.values.items()}
        record.update(skipped=self.skipped, skipped_total=total_skipped, lr=lr,
                      steps_per_sec=self.steps / max(dt, 1e-9))
        self._reset(step)
        return record

    @contextlib.contextmanager
    def paused(self):
        t_aside = time.perf_counter()
        try:
            yield
        finally:
            self.t0 += time.perf_counter() - t_aside


class _Progress:
    """A tqdm bar on process 0 when ``training.progress`` (else nothing)."""

    def __init__(self, enabled: bool, total: int, initial: int):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", dynamic_ncols=True)

    def update(self, k: int, record: Mapping[str, float] | None) -> None:
        if self.bar is None:
            return
        self.bar.update(k)
        if record is not None:
            post = {"loss": f"{record.get('loss', float('nan')):.4g}", "steps/s": f"{record['steps_per_sec']:.3g}"}
            if record["skipped_total"]:
                post["skipped"] = record["skipped_total"]
            self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---- preemption, start-up ------------------------------------------------------------------


class _Preemption:
    """SIGTERM -> a flag checked between compiled calls (main thread only; ``watch`` installs it)."""

    def __init__(self):
        self.flag = False
        self._previous = None
        self._installed = False

    def watch(self, enabled: bool) -> None:
        if enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
            self._installed = True

    def _handler(self, signum, frame):
        self.flag = True

    def requested(self) -> bool:
        """Whether any process got SIGTERM (an all-gather when there are several)."""
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


def _open_checkpointer(workdir: str, s: LoopSettings) -> Checkpointer:
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
    return Checkpointer(workdir, save_every=s.checkpoint_every, keep_last=s.keep_last,
                        keep_every=s.keep_every or None, async_save=s.async_checkpoint)


def _abstract_state(mode: Parallel, fresh_state: Callable[[], TrainState]):
    """Shapes, dtypes and the mode's checkpoint sharding of the state: the target of a restore."""
    sharding = mode.checkpoint_sharding()
    shapes = jax.eval_shape(fresh_state)
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def _restore_or_init(ckpt, mode: Parallel, abstract, fresh_state: Callable[[], TrainState], config, allow_change: bool):
    """``(device state, resumed_from step | None, skipped steps so far)``: the newest readable
    checkpoint (its saved config checked against ``config``) or ``fresh_state()``."""
    restored = ckpt.restore_latest(abstract)
    if restored is None:
        return mode.put_state(fresh_state()), None, 0
    host_state, meta = restored
    check_config(meta.get("config", {}), config, allow_change=allow_change)
    return mode.from_checkpoint(host_state), int(meta["step"]), int(meta.get("skipped_total", 0))


def _write_config(workdir: str, config) -> None:
    """``workdir/config.json`` (process 0; written to a temporary file, then renamed)."""
    if jax.process_index() == 0:
        tmp = os.path.join(workdir, f".{CONFIG_FILE}.tmp")
        with open(tmp, "w") as f:
            json.dump(config_to_dict(config), f, indent=2, sort_keys=True)
        os.replace(tmp, os.path.join(workdir, CONFIG_FILE))


# ---- the loop ------------------------------------------------------------------------------


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
    settings = LoopSettings.from_config(config)
    n_iters, workdir = settings.n_iters, os.path.abspath(os.fspath(workdir))
    tx = tx if tx is not None else make_optimizer(config)
    mode = make_parallel(settings.mode, loss_fn=loss_fn, tx=tx, ema_rate=ema_rate_from_config(config), devices=devices)
    local_batch_size = mode.local_batch_size(settings.batch_size)  # validates divisibility early
    schedule = _Schedule(settings, _normalize_hooks(eval_fns, settings.eval_every))
    fresh_state = lambda: init_train_state(settings.seed, init_fn, tx)  # noqa: E731
    abstract = _abstract_state(mode, fresh_state)
    ckpt, preemption, writer, progress = _open_checkpointer(workdir, settings), _Preemption(), None, None
    try:
        state, resumed_from, skipped_before = _restore_or_init(ckpt, mode, abstract, fresh_state, config,
                                                               allow_config_change)
        step = resumed_from or 0
        _write_config(workdir, config)
        writer = MetricsWriter(workdir, enabled=jax.process_index() == 0, start_step=step)
        preemption.watch(handle_sigterm)
        progress = _Progress(settings.progress and jax.process_index() == 0, n_iters, step)
        guard = _NonFiniteGuard(settings.max_consecutive_nonfinite, total=skipped_before)
        window = _MetricsWindow(step, settings.log_every, n_iters)
        calls = _prefetched_calls(batch_fn, mode, local_batch_size, schedule.calls(step))
        call, preempted = next(calls, None), False
        while call is not None:
            k, batches = call
            state, metrics = mode.step(state, batches)
            call = next(calls, None)  # the next call's batches are built while this one runs
            m = mode.fetch_metrics(metrics)
            skipped = np.asarray(m["skipped"]).astype(bool)
            guard.check(step, skipped, ckpt)
            window.add(m, skipped)
            step += k
            record = window.flush(step, guard.total, lr_at(step - guard.total, config)) if window.due(step) else None
            if record is not None:
                writer.write(step, record)
            progress.update(k, record)
            extra = {"skipped_total": guard.total}
            with window.paused():  # steps/s counts training time only
                ckpt.maybe_save(step, mode.to_checkpoint(state), force=step == n_iters, config=config, extra=extra)
                schedule.run_hooks(step, lambda: mode.unreplicate(state), writer)
            if step < n_iters and preemption.requested():
                ckpt.maybe_save(step, mode.to_checkpoint(state), force=True, config=config, extra=extra)
                preempted = True
                break
        return TrainResult(state=mode.unreplicate(state), step=step, preempted=preempted,
                           resumed_from=resumed_from, total_skipped=guard.total, workdir=workdir)
    finally:
        if progress is not None:
            progress.close()
        ckpt.close()  # waits for pending async writes (SIGTERM still only sets the flag here)
        preemption.restore()
        if writer is not None:
            writer.close()
