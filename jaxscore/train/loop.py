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
:class:`_MetricsWindow` (what a log record averages), :class:`_Console` (process 0's one-line
messages and progress bar), :class:`_Preemption` (SIGTERM and SIGINT) and :func:`_restore_or_init`.

What ``train`` prints (process 0, to stdout, whatever ``training.progress``): ``resuming from
step N (workdir)`` when it resumes; ``training N steps ...`` at the start; a ``warning: ...`` line
per log window in which steps were skipped as non-finite; ``step N: running final evaluation
hooks: names`` before the at-end hooks; then ``done: step N, wrote checkpoints to ...``, or,
after a preemption, ``SIGTERM|SIGINT at step N: saved checkpoint ...``.

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
import optax

from jaxscore.train.checkpoint import CONFIG_FILE, Checkpointer, check_config
from jaxscore.train.logging import MetricsWriter
from jaxscore.train.parallel import Parallel, make_parallel, maybe_initialize_distributed
from jaxscore.train.settings import LoopSettings, config_to_dict
from jaxscore.train.state import (
    TrainState,
    ema_rate_from_config,
    ema_warmup_from_config,
    init_train_state,
    lr_at,
    make_optimizer,
)


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
    """What ``train`` returns: the final (unreplicated) state and how the run ended.

    ``preempted``: stopped before ``n_iters`` by SIGTERM or SIGINT (Ctrl-C), after saving a
    checkpoint at ``step``; ``stop_signal`` is then that signal's number, else ``None``.
    ``exit_code`` is what a command-line front end should exit with: 0 when training ran to
    ``n_iters``; ``128 + signal number`` after a preemption — 143 for SIGTERM, 130 for SIGINT —
    the shell's convention for "ended by a signal", which job schedulers (SLURM, Kubernetes)
    read as "terminated", so a job script can tell "preempted, requeue" from "finished".
    """

    state: TrainState
    step: int
    preempted: bool
    resumed_from: int | None
    total_skipped: int
    workdir: str
    stop_signal: int | None = None

    @property
    def exit_code(self) -> int:
        return 128 + int(self.stop_signal) if self.preempted and self.stop_signal else 0


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

    def due_hooks(self, step: int) -> list[Hook]:
        """The hooks due at ``step``: those whose period divides it, and all ``at_end`` ones at ``n_iters``."""
        final = step == self.settings.n_iters
        return [h for h in self.hooks if (h.every and step % h.every == 0) or (final and h.at_end)]

    def run_hooks(self, step: int, state_view: Callable[[], TrainState], writer: MetricsWriter) -> None:
        """Call the hooks due at ``step``; log what they return."""
        view = None
        for h in self.due_hooks(step):
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
        self.skipped_steps: list[int] = []  # the first few, for the warning line
        self.started_at = step
        self.t0 = time.perf_counter()

    def add(self, first_step: int, metrics: Mapping[str, np.ndarray], skipped: np.ndarray) -> None:
        """``metrics[name][i]`` of steps ``first_step + i`` of a call; values of skipped steps are left out."""
        for i in np.flatnonzero(~skipped):
            for name, v in metrics.items():
                if name != "skipped":
                    self.values.setdefault(name, []).append(float(v[i]))
        self.skipped_steps += [first_step + int(i) for i in np.flatnonzero(skipped)][: 5 - len(self.skipped_steps)]
        self.skipped += int(skipped.sum())
        self.steps += len(skipped)

    def due(self, step: int) -> bool:
        return step // self.log_every > self.started_at // self.log_every or step == self.n_iters

    def skipped_warning(self, step: int, total_skipped: int) -> str | None:
        """One line about this window's skipped (non-finite) steps, or ``None`` if there were none."""
        if not self.skipped:
            return None
        shown = ", ".join(map(str, self.skipped_steps)) + (", ..." if self.skipped > len(self.skipped_steps) else "")
        return (f"warning: {self.skipped} of the {self.steps} training steps in [{self.started_at}, {step}) had a "
                f"non-finite loss or gradient and were skipped (steps {shown}; {total_skipped} skipped in total)")

    def flush(self, step: int, total_skipped: int, optimizer_step: int, lr: float) -> dict[str, float]:
        """The record for this window (means, skipped counts, optimizer step and its lr, steps/s);
        starts a new window."""
        dt = time.perf_counter() - self.t0
        record = {name: float(np.mean(v)) for name, v in self.values.items()}
        record.update(skipped=self.skipped, skipped_total=total_skipped, opt_step=optimizer_step, lr=lr,
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


class _Console:
    """Process 0's output: one-line messages (always) and a tqdm bar (when ``training.progress``).

    The bar is created when the first compiled call has returned, starting at the step that call
    reached: its clock, and so its rate and ETA, leave out the first call's compile time.
    Messages go to stdout through ``tqdm.write`` while a bar is shown (so it is redrawn below
    them), else through ``print``. Other processes print nothing.
    """

    def __init__(self, *, main: bool, bar: bool, total: int):
        self.main, self.want_bar, self.total = main, bar and main, total
        self.bar = None

    def say(self, message: str) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def update(self, step: int, k: int, record: Mapping[str, float] | None) -> None:
        """The call of ``k`` steps that ended at ``step`` returned."""
        if not self.want_bar:
            return
        if self.bar is None:  # the first call (and its compile) is over: start the clock here
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=step, desc="train", dynamic_ncols=True)
        else:
            self.bar.update(k)
        if record is not None:
            post = {"loss": f"{record.get('loss', float('nan')):.4g}", "steps/s": f"{record['steps_per_sec']:.3g}"}
            if record["skipped_total"]:
                post["skipped"] = record["skipped_total"]
            self.bar.set_postfix(post, refresh=False)

    def describe(self, text: str) -> None:
        """Show ``text`` as the bar's description (what is happening while the bar stands still)."""
        if self.bar is not None:
            self.bar.set_description(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---- preemption, start-up ------------------------------------------------------------------


class _Preemption:
    """SIGTERM or SIGINT (Ctrl-C) -> a flag checked between compiled calls (main thread only;
    ``watch`` installs the handlers, ``restore`` puts the previous ones back).

    The first signal only records itself (and says, on stderr, that a checkpoint will be saved
    when the current call ends); a second SIGINT raises ``KeyboardInterrupt`` at once, so a
    user who presses Ctrl-C twice can still abort without saving.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._announce = False

    def watch(self, enabled: bool, announce: bool = True) -> None:
        if enabled and threading.current_thread() is threading.main_thread():
            self._announce = announce
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)

    def _handler(self, signum, frame):
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: abort now, no checkpoint
        if self.signum is not None:
            return
        self.signum = signum
        if self._announce:  # os.write: safe inside a signal handler, unlike print
            again = "; press Ctrl-C again to abort without saving" if signum == signal.SIGINT else ""
            os.write(2, f"\n{signal.Signals(signum).name} received: saving a checkpoint when the current call "
                        f"ends, then stopping{again}\n".encode())

    def requested(self) -> int | None:
        """The number of the signal some process got (an all-gather when there are several), or ``None``."""
        if not self._previous:
            return None
        if jax.process_count() == 1:
            return self.signum
        from jax.experimental import multihost_utils

        got = multihost_utils.process_allgather(np.array([self.signum or 0], dtype=np.int32))
        return int(np.max(got)) or None

    def restore(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


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


def _optimizer_step(opt_state) -> int | None:
    """The optimizer's own step on the host: optax's ``count`` (updates applied; skipped
    non-finite steps do not advance it), or ``None`` when ``tx`` keeps no count."""
    found = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
    if not found:
        return None
    count = found[0][1]
    local = count.addressable_data(0) if isinstance(count, jax.Array) else count  # pmap: [1] shard of [n]
    return int(np.asarray(local).reshape(-1)[0])


def _start_message(settings: LoopSettings, step: int, workdir: str, mode: Parallel) -> str:
    n = settings.n_iters
    if step >= n:
        return f"step {step} is already training.n_iters={n}: nothing to train"
    return (f"training {n - step} steps ({step} -> {n}) in {workdir}: mode {mode.name} on {mode.num_devices} "
            f"device(s), batch {settings.batch_size}, {settings.steps_per_call} step(s) per call; the first call "
            "compiles")


def _end_message(result: TrainResult, ckpt: Checkpointer) -> str:
    latest = ckpt.latest_step()
    if result.preempted:
        return (f"{signal.Signals(result.stop_signal).name} at step {result.step}: saved checkpoint {latest} to "
                f"{os.path.join(ckpt.directory, str(latest))}; run the same command again to resume "
                f"(exit code {result.exit_code})")
    if result.resumed_from == result.step:
        return f"done: step {result.step}, nothing left to train; checkpoints in {ckpt.directory}"
    return f"done: step {result.step}, wrote checkpoints to {ckpt.directory} (latest: step {latest})"


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

    Stops when ``step == n_iters`` (final checkpoint written), on SIGTERM or SIGINT (Ctrl-C;
    checkpoint written, ``preempted=True``, ``exit_code`` 143 or 130; a second Ctrl-C aborts
    without saving), or raises ``NonFiniteError`` after ``max_consecutive_nonfinite``
    skipped steps in a row (checkpoints already written are left intact; nothing new is
    saved). Always waits for pending async checkpoint writes before returning or raising.
    ``handle_sigterm=False`` leaves the SIGTERM and SIGINT handlers alone (then neither saves).
    The lines it prints are listed in the module docstring.
    """
    maybe_initialize_distributed(config)
    settings = LoopSettings.from_config(config)
    n_iters, workdir = settings.n_iters, os.path.abspath(os.fspath(workdir))
    tx = tx if tx is not None else make_optimizer(config)
    mode = make_parallel(settings.mode, loss_fn=loss_fn, tx=tx, ema_rate=ema_rate_from_config(config),
                         ema_warmup=ema_warmup_from_config(config), devices=devices)
    local_batch_size = mode.local_batch_size(settings.batch_size)  # validates divisibility early
    schedule = _Schedule(settings, _normalize_hooks(eval_fns, settings.eval_every))
    fresh_state = lambda: init_train_state(settings.seed, init_fn, tx)  # noqa: E731
    abstract = _abstract_state(mode, fresh_state)
    ckpt, preemption, writer = _open_checkpointer(workdir, settings), _Preemption(), None
    console = _Console(main=jax.process_index() == 0, bar=settings.progress, total=n_iters)
    try:
        state, resumed_from, skipped_before = _restore_or_init(ckpt, mode, abstract, fresh_state, config,
                                                               allow_config_change)
        step = resumed_from or 0
        if resumed_from is not None:
            console.say(f"resuming from step {resumed_from} ({workdir})")
        console.say(_start_message(settings, step, workdir, mode))
        _write_config(workdir, config)
        writer = MetricsWriter(workdir, enabled=jax.process_index() == 0, start_step=step)
        preemption.watch(handle_sigterm, announce=console.main)
        guard = _NonFiniteGuard(settings.max_consecutive_nonfinite, total=skipped_before)
        window = _MetricsWindow(step, settings.log_every, n_iters)
        calls = _prefetched_calls(batch_fn, mode, local_batch_size, schedule.calls(step))
        call, stop_signal = next(calls, None), None
        while call is not None:
            k, batches = call
            state, metrics = mode.step(state, batches)
            call = next(calls, None)  # the next call's batches are built while this one runs
            m = mode.fetch_metrics(metrics)
            skipped = np.asarray(m["skipped"]).astype(bool)
            guard.check(step, skipped, ckpt)
            window.add(step, m, skipped)
            step += k
            record = None
            if window.due(step):
                warning = window.skipped_warning(step, guard.total)
                opt_step = _optimizer_step(state.opt_state)
                opt_step = step - guard.total if opt_step is None else opt_step
                record = window.flush(step, guard.total, opt_step, lr_at(opt_step, config))
                writer.write(step, record)
                if warning:
                    console.say(warning)
            console.update(step, k, record)
            extra = {"skipped_total": guard.total}
            with window.paused():  # steps/s counts training time only
                ckpt.maybe_save(step, mode.to_checkpoint(state), force=step == n_iters, config=config, extra=extra)
                if step == n_iters and (final := schedule.due_hooks(step)):
                    console.describe("final evaluation")
                    console.say(f"step {step}: running final evaluation hooks: {', '.join(h.name for h in final)}")
                schedule.run_hooks(step, lambda: mode.unreplicate(state), writer)
            if step < n_iters and (stop_signal := preemption.requested()):
                ckpt.maybe_save(step, mode.to_checkpoint(state), force=True, config=config, extra=extra)
                break
        ckpt.wait()
        console.close()
        result = TrainResult(state=mode.unreplicate(state), step=step, preempted=stop_signal is not None,
                             resumed_from=resumed_from, total_skipped=guard.total, workdir=workdir,
                             stop_signal=stop_signal)
        if console.main:
            console.say(_end_message(result, ckpt))
        return result
    finally:
        console.close()
        ckpt.close()  # waits for pending async writes (SIGTERM still only sets the flag here)
        preemption.restore()
        if writer is not None:
            writer.close()
