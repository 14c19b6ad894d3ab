"""Execution modes around the one pure step: ``"single"``, ``"pmap"``, ``"sharded"``.

All three compile the same ``multi_step`` (K train steps per call via ``lax.scan``):

- ``single``: ``jax.jit`` on one device; the batch is the whole global batch.
- ``pmap``: ``jax.pmap`` over the local devices with ``axis_name="data"``; the state is
  replicated (leading device axis), each device gets ``B / n_devices`` examples and
  gradients/loss are averaged with ``lax.pmean``. Noise is drawn per global example row
  (``step.py``), so even a stochastic loss gives the same numbers as single-device
  training, up to float summation order.
- ``sharded``: ``jax.jit`` over a ``Mesh`` of all (global) devices with ``NamedSharding``:
  the batch is sharded on its batch axis (``P(None, "data")`` for ``[K, B, ...]``), the
  state is replicated (``P()``). XLA inserts the gradient all-reduce. The program is the
  single-device program, so results equal single-device training up to float
  reduction order (random draws included).

Multi-host: every process runs the same code; ``batch_fn`` returns this process's slice of
the global batch (``B / process_count`` rows, rows ``[p*b, (p+1)*b)``); the global array
is assembled with ``jax.make_array_from_process_local_data`` (sharded) or by pmap itself.
``maybe_initialize_distributed(config)`` starts ``jax.distributed`` when configured.

Checkpoint form: in every mode the state is saved as unreplicated arrays (replicated
``NamedSharding(mesh, P())`` global arrays in pmap/sharded mode), so a checkpoint written
in one mode restores in another.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxscore.train._config import cfg_get
from jaxscore.train.step import multi_step

MODES = ("single", "pmap", "sharded")
AXIS = "data"


def maybe_initialize_distributed(config=None) -> bool:
    """Start ``jax.distributed`` if ``config.distributed.enabled`` (or a coordinator is set).

    Reads ``config.distributed.{coordinator_address, num_processes, process_id,
    local_device_ids, cpu_collectives}``; unset fields are auto-detected by JAX (SLURM,
    TPU pods, Open MPI...). ``cpu_collectives`` (e.g. ``"gloo"``) sets
    ``jax_cpu_collectives_implementation`` first, needed for multi-process CPU runs.
    Idempotent; returns whether ``jax.distributed`` is (now) initialized.
    Must run before any other JAX call that touches devices.
    """
    if jax.distributed.is_initialized():
        return True
    address = cfg_get(config, "distributed.coordinator_address", None)
    enabled = bool(cfg_get(config, "distributed.enabled", False)) or address is not None
    if not enabled:
        return False
    cpu_coll = cfg_get(config, "distributed.cpu_collectives", None)
    if cpu_coll:
        jax.config.update("jax_cpu_collectives_implementation", cpu_coll)
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=cfg_get(config, "distributed.num_processes", None),
        process_id=cfg_get(config, "distributed.process_id", None),
        local_device_ids=cfg_get(config, "distributed.local_device_ids", None),
    )
    return True


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"training.mode: expected one of {MODES}, got {mode!r}.")
    return mode


def _first_local(x):
    """This process's copy of a replicated value as a NumPy array (any mode)."""
    if isinstance(x, jax.Array):
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


@dataclasses.dataclass
class Parallel:
    """A compiled K-step training function plus how to place state and batches for it.

    Build with ``make_parallel``. Methods (``K`` = steps per call, ``b`` = local batch):

    - ``put_state(state)``: place a host/single-device state (replicate for pmap/sharded).
    - ``put_batches(batches)``: place this process's ``[K, b, ...]`` batches.
    - ``step(state, batches) -> (state, metrics)``: run K steps (state donated).
    - ``fetch_metrics(metrics) -> dict[str, np.ndarray [K]]``: metrics on the host.
    - ``unreplicate(state)``: a state usable by ordinary single-program code (hooks).
    - ``to_checkpoint(state)`` / ``from_checkpoint(state)``: the unreplicated saved form.
    - ``checkpoint_sharding(shape)``: the sharding a restored leaf should have.
    """

    mode: str
    devices: tuple  # all devices taking part (global), in mesh order
    local_devices: tuple
    mesh: Mesh | None
    local_mesh: Mesh | None
    _step: Callable

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def local_batch_size(self, global_batch_size: int) -> int:
        """Rows this process feeds per step; checks divisibility by devices and processes."""
        n_proc = jax.process_count()
        if global_batch_size % n_proc:
            raise ValueError(
                f"training.batch_size={global_batch_size} is not divisible by process_count={n_proc}."
            )
        if self.mode != "single" and global_batch_size % self.num_devices:
            raise ValueError(
                f"training.batch_size={global_batch_size} is not divisible by the {self.num_devices} "
                f"devices of mode {self.mode!r}; expected a multiple of {self.num_devices}."
            )
        return global_batch_size // n_proc

    # ---- placement ---------------------------------------------------------------
    def put_state(self, state):
        """Device copy of ``state`` for this mode (never aliasing the input's buffers)."""
        if self.mode == "single":  # fresh buffers: the step donates them
            return jax.device_put(state, self.devices[0], may_alias=False)
        if self.mode == "sharded":
            sharding = NamedSharding(self.mesh, P())
            return jax.tree.map(
                lambda x: jax.make_array_from_process_local_data(sharding, _first_local(x)), state
            )
        n = len(self.local_devices)
        sharding = NamedSharding(self.local_mesh, P(AXIS))

        def rep(x):
            x = _first_local(x)
            return jax.device_put(np.broadcast_to(x[None], (n,) + x.shape), sharding)

        return jax.tree.map(rep, state)

    def put_batches(self, batches):
        leaves = jax.tree.leaves(batches)
        for x in leaves:
            if np.ndim(x) < 2:
                raise ValueError(
                    f"batches: expected every leaf as [K, B, ...] (steps, examples), got shape {np.shape(x)}."
                )
        if self.mode == "single":
            return jax.device_put(batches, self.devices[0])
        if self.mode == "sharded":
            sharding = NamedSharding(self.mesh, P(None, AXIS))

            def put(x):
                x = np.asarray(x)
                global_shape = (x.shape[0], x.shape[1] * jax.process_count()) + x.shape[2:]
                return jax.make_array_from_process_local_data(sharding, x, global_shape)

            return jax.tree.map(put, batches)
        n = len(self.local_devices)
        sharding = NamedSharding(self.local_mesh, P(AXIS))

        def split(x):
            x = np.asarray(x)
            k, b = x.shape[:2]
            if b % n:
                raise ValueError(f"pmap: local batch of {b} rows is not divisible by {n} local devices.")
            x = x.reshape((k, n, b // n) + x.shape[2:]).swapaxes(0, 1)
            return jax.device_put(x, sharding)

        return jax.tree.map(split, batches)

    # ---- running -----------------------------------------------------------------
    def step(self, state, batches):
        return self._step(state, batches)

    def fetch_metrics(self, metrics) -> dict[str, np.ndarray]:
        out = {}
        for name, value in metrics.items():
            v = _first_local(value)
            if self.mode == "pmap":
                v = v[0]  # [1, K] shard of the [n, K] replicated metrics
            out[name] = v
        return out

    # ---- views of the state ----------------------------------------------------------
    def unreplicate(self, state):
        """The state as this process's own single-program arrays.

        pmap: replica 0's copy. sharded over several processes: the local copy of each
        replicated array, so hooks can run ordinary ``jit`` code on one process without
        entering a cross-process computation. Otherwise: unchanged.
        """
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x.addressable_data(0)[0], state)
        if self.mode == "sharded" and jax.process_count() > 1:
            return jax.tree.map(lambda x: x.addressable_data(0), state)
        return state

    def to_checkpoint(self, state):
        if self.mode != "pmap":
            return state
        sharding = NamedSharding(self.mesh, P())

        def glob(x):
            shards = sorted(x.addressable_shards, key=lambda s: s.device.id)
            shape = x.shape[1:]
            return jax.make_array_from_single_device_arrays(
                shape, sharding, [s.data.reshape(shape) for s in shards]
            )

        return jax.tree.map(glob, state)

    def checkpoint_sharding(self):
        if self.mode == "single":
            return jax.sharding.SingleDeviceSharding(self.devices[0])
        return NamedSharding(self.mesh, P())

    def from_checkpoint(self, state):
        if self.mode != "pmap":
            return state
        sharding = NamedSharding(self.local_mesh, P(AXIS))
        n = len(self.local_devices)

        def rep(x):
            by_device = {s.device: s.data for s in x.addressable_shards}
            arrays = [by_device[d][None] for d in self.local_devices]
            return jax.make_array_from_single_device_arrays((n,) + x.shape, sharding, arrays)

        return jax.tree.map(rep, state)


def _multi_step_positional(state, batches, loss_fn, tx, ema_rate, axis_name=None):
    return multi_step(state, batches, loss_fn=loss_fn, tx=tx, ema_rate=ema_rate, axis_name=axis_name)


def _pmap_step(state, batches, loss_fn, tx, ema_rate):
    return multi_step(state, batches, loss_fn=loss_fn, tx=tx, ema_rate=ema_rate, axis_name=AXIS)


@functools.lru_cache(maxsize=32)
def _compiled_step(mode: str, devices: tuple | None, mesh_devices: tuple, donate: bool):
    """One jit/pmap wrapper per (mode, devices, donate); ``loss_fn``, ``tx`` and ``ema_rate`` are
    static arguments, so building a second ``Parallel`` with the same objects reuses the
    compiled executable instead of compiling again."""
    donate_argnums = (0,) if donate else ()
    if mode == "single":
        return jax.jit(_multi_step_positional, static_argnums=(2, 3, 4), donate_argnums=donate_argnums)
    if mode == "pmap":
        return jax.pmap(
            _pmap_step,
            axis_name=AXIS,
            static_broadcasted_argnums=(2, 3, 4),
            devices=devices,
            donate_argnums=donate_argnums,
        )
    mesh = Mesh(np.array(mesh_devices), (AXIS,))
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        _multi_step_positional,
        static_argnums=(2, 3, 4),
        in_shardings=(replicated, NamedSharding(mesh, P(None, AXIS))),
        out_shardings=(replicated, replicated),
        donate_argnums=donate_argnums,
    )


def make_parallel(
    mode: str,
    *,
    loss_fn,
    tx,
    ema_rate: float,
    devices: Sequence | None = None,
    donate: bool = True,
) -> Parallel:
    """Compile ``multi_step`` for ``mode`` (``"single"``, ``"pmap"`` or ``"sharded"``).

    ``devices``: the devices to use (default ``jax.devices()``; ``single`` uses the first
    local one). ``donate``: donate the input state's buffers to the step (halves peak
    state memory; the passed-in state must not be used afterwards).
    Compiled programs are cached on ``(mode, devices, loss_fn, tx, ema_rate)`` (the objects,
    by identity), so repeated ``make_parallel``/``train`` calls with the same ``loss_fn`` and
    ``tx`` objects compile once.
    """
    _check_mode(mode)
    ema_rate = float(ema_rate)
    all_devices = tuple(devices) if devices is not None else tuple(jax.devices())
    pid = jax.process_index()
    local = tuple(d for d in all_devices if d.process_index == pid)
    if not local:
        raise ValueError("make_parallel: none of the given devices belongs to this process.")
    if mode == "single":
        if jax.process_count() > 1:
            raise ValueError(
                "training.mode='single' runs on one device of one process; with "
                f"process_count={jax.process_count()} use 'pmap' or 'sharded'."
            )
        fn = _compiled_step(mode, None, (local[0],), bool(donate))
        step = lambda s, b: fn(s, b, loss_fn, tx, ema_rate)  # noqa: E731
        return Parallel(mode, (local[0],), (local[0],), None, None, step)
    mesh = Mesh(np.array(all_devices), (AXIS,))
    local_mesh = Mesh(np.array(local), (AXIS,))
    fn = _compiled_step(mode, tuple(devices) if devices is not None else None, all_devices, bool(donate))
    step = lambda s, b: fn(s, b, loss_fn, tx, ema_rate)  # noqa: E731
    return Parallel(mode, all_devices, local, mesh, local_mesh, step)
