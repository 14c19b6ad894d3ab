"""Execution modes around the one pure step: one small class per mode.

Every mode compiles the same ``multi_step`` (K train steps per call via ``lax.scan``) and
knows how to place state and batches for it:

- :class:`SingleDevice` (``"single"``): ``jax.jit`` on one device; the batch is the whole
  global batch.
- :class:`Pmap` (``"pmap"``): ``jax.pmap`` over the local devices with ``axis_name="data"``;
  the state is replicated (leading device axis), each device gets ``B / n_devices`` examples
  and gradients/loss are averaged with ``lax.pmean``. Noise is drawn per global example row
  (``step.py``), so even a stochastic loss gives the same numbers as single-device
  training, up to float summation order.
- :class:`Sharded` (``"sharded"``): ``jax.jit`` over a ``Mesh`` of all (global) devices with
  ``NamedSharding``: the batch is sharded on its batch axis (``P(None, "data")`` for
  ``[K, B, ...]``), the state is replicated (``P()``). XLA inserts the gradient all-reduce.
  The program is the single-device program, so results equal single-device training up to
  float reduction order (random draws included).

Multi-host: every process runs the same code; ``batch_fn`` returns this process's slice of
the global batch (``B / process_count`` rows, rows ``[p*b, (p+1)*b)``); the global array
is assembled with ``jax.make_array_from_process_local_data`` (sharded) or by pmap itself.
``maybe_initialize_distributed(config)`` starts ``jax.distributed`` when configured.

Checkpoint form: in every mode the state is saved as unreplicated arrays (replicated
``NamedSharding(mesh, P())`` global arrays in pmap/sharded mode), so a checkpoint written
in one mode restores in another.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Sequence
from typing import ClassVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxscore.train.settings import setting
from jaxscore.train.step import multi_step

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
    address = setting(config, "distributed.coordinator_address")
    if not (bool(setting(config, "distributed.enabled")) or address is not None):
        return False
    cpu_collectives = setting(config, "distributed.cpu_collectives")
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=setting(config, "distributed.num_processes"),
        process_id=setting(config, "distributed.process_id"),
        local_device_ids=setting(config, "distributed.local_device_ids"),
    )
    return True


def _first_local(x) -> np.ndarray:
    """This process's copy of a replicated value as a NumPy array (any mode)."""
    if isinstance(x, jax.Array):
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def _check_stacked(batches) -> None:
    for x in jax.tree.leaves(batches):
        if np.ndim(x) < 2:
            raise ValueError(
                f"batches: expected every leaf as [K, B, ...] (steps, examples), got shape {np.shape(x)}."
            )


def _multi_step_positional(state, batches, loss_fn, tx, ema_rate, ema_warmup, axis_name=None):
    return multi_step(state, batches, loss_fn=loss_fn, tx=tx, ema_rate=ema_rate, ema_warmup=ema_warmup,
                      axis_name=axis_name)


def _pmap_step(state, batches, loss_fn, tx, ema_rate, ema_warmup):
    return multi_step(state, batches, loss_fn=loss_fn, tx=tx, ema_rate=ema_rate, ema_warmup=ema_warmup,
                      axis_name=AXIS)


class Parallel(abc.ABC):
    """A compiled K-step training function plus how to place state and batches for it.

    Build with :func:`make_parallel`. ``K`` = steps per call, ``b`` = this process's rows:

    - ``put_state(state)``: a device copy of a host/single-device state (never aliasing it).
    - ``put_batches(batches)``: place this process's ``[K, b, ...]`` batches.
    - ``step(state, batches) -> (state, metrics)``: run K steps (state donated).
    - ``fetch_metrics(metrics) -> dict[str, np.ndarray [K]]``: metrics on the host.
    - ``unreplicate(state)``: a state usable by ordinary single-program code (hooks).
    - ``to_checkpoint(state)`` / ``from_checkpoint(state)``: the unreplicated saved form.
    - ``checkpoint_sharding()``: the sharding a restored leaf should have.

    The compiled program is cached on ``(mode, devices, donate, loss_fn, tx, ema_rate, ema_warmup)``
    (``loss_fn`` and ``tx`` by identity), so building a second instance with the same
    objects reuses the executable instead of compiling again.
    """

    name: ClassVar[str]

    def __init__(self, *, loss_fn, tx, ema_rate: float, ema_warmup: bool, devices: tuple, local_devices: tuple,
                 compiled):
        self.loss_fn, self.tx, self.ema_rate, self.ema_warmup = loss_fn, tx, float(ema_rate), bool(ema_warmup)
        self.devices = devices  # all devices taking part (global), in mesh order
        self.local_devices = local_devices
        self._compiled = compiled

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def local_batch_size(self, global_batch_size: int) -> int:
        """Rows this process feeds per step; checks divisibility by processes (and devices)."""
        n_proc = jax.process_count()
        if global_batch_size % n_proc:
            raise ValueError(
                f"training.batch_size={global_batch_size} is not divisible by process_count={n_proc}."
            )
        return global_batch_size // n_proc

    def step(self, state, batches):
        return self._compiled(state, batches, self.loss_fn, self.tx, self.ema_rate, self.ema_warmup)

    def put_batches(self, batches):
        _check_stacked(batches)
        return self._place_batches(batches)

    def fetch_metrics(self, metrics) -> dict[str, np.ndarray]:
        return {name: _first_local(value) for name, value in metrics.items()}

    def unreplicate(self, state):
        return state

    def to_checkpoint(self, state):
        return state

    def from_checkpoint(self, state):
        return state

    @classmethod
    @abc.abstractmethod
    def create(cls, *, loss_fn, tx, ema_rate: float, ema_warmup: bool, devices: Sequence | None,
               donate: bool) -> Parallel:
        """This mode over ``devices`` (``None``: ``jax.devices()``) with the step compiled (or cached)."""

    @abc.abstractmethod
    def put_state(self, state): ...

    @abc.abstractmethod
    def _place_batches(self, batches): ...

    @abc.abstractmethod
    def checkpoint_sharding(self): ...


class SingleDevice(Parallel):
    """``jax.jit`` on the first local device; one process only."""

    name = "single"

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def _compile(donate: bool):
        return jax.jit(_multi_step_positional, static_argnums=(2, 3, 4, 5), donate_argnums=(0,) if donate else ())

    @classmethod
    def create(cls, *, loss_fn, tx, ema_rate, ema_warmup, devices: Sequence | None, donate: bool) -> SingleDevice:
        device = (_local(_all(devices))[0],)
        if jax.process_count() > 1:
            raise ValueError(
                "training.mode='single' runs on one device of one process; with "
                f"process_count={jax.process_count()} use 'pmap' or 'sharded'."
            )
        return cls(loss_fn=loss_fn, tx=tx, ema_rate=ema_rate, ema_warmup=ema_warmup, devices=device,
                   local_devices=device,
                   compiled=cls._compile(donate))

    def put_state(self, state):
        return jax.device_put(state, self.devices[0], may_alias=False)  # fresh buffers: the step donates them

    def _place_batches(self, batches):
        return jax.device_put(batches, self.devices[0])

    def checkpoint_sharding(self):
        return jax.sharding.SingleDeviceSharding(self.devices[0])


class _OverMesh(Parallel):
    """Modes over a ``Mesh`` of all devices (axis ``"data"``): the batch is split over devices."""

    def __init__(self, *, mesh: Mesh, local_mesh: Mesh, **kwargs):
        super().__init__(**kwargs)
        self.mesh, self.local_mesh = mesh, local_mesh

    @classmethod
    def create(cls, *, loss_fn, tx, ema_rate, ema_warmup, devices: Sequence | None, donate: bool):
        all_devices = _all(devices)
        local = _local(all_devices)
        return cls(loss_fn=loss_fn, tx=tx, ema_rate=ema_rate, ema_warmup=ema_warmup, devices=all_devices,
                   local_devices=local,
                   compiled=cls._compile(all_devices, devices is None, donate),
                   mesh=Mesh(np.array(all_devices), (AXIS,)), local_mesh=Mesh(np.array(local), (AXIS,)))

    def local_batch_size(self, global_batch_size: int) -> int:
        if global_batch_size % self.num_devices:
            raise ValueError(
                f"training.batch_size={global_batch_size} is not divisible by the {self.num_devices} "
                f"devices of mode {self.name!r}; expected a multiple of {self.num_devices}."
            )
        return super().local_batch_size(global_batch_size)

    def checkpoint_sharding(self):
        return NamedSharding(self.mesh, P())


class Sharded(_OverMesh):
    """``jax.jit`` over the global mesh: state replicated ``P()``, batches ``P(None, "data")``."""

    name = "sharded"

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def _compile(devices: tuple, default_devices: bool, donate: bool):  # default_devices: only pmap needs it
        mesh = Mesh(np.array(devices), (AXIS,))
        replicated = NamedSharding(mesh, P())
        return jax.jit(
            _multi_step_positional,
            static_argnums=(2, 3, 4, 5),
            in_shardings=(replicated, NamedSharding(mesh, P(None, AXIS))),
            out_shardings=(replicated, replicated),
            donate_argnums=(0,) if donate else (),
        )

    def put_state(self, state):
        sharding = NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, _first_local(x)), state)

    def _place_batches(self, batches):
        sharding = NamedSharding(self.mesh, P(None, AXIS))

        def put(x):
            x = np.asarray(x)
            global_shape = (x.shape[0], x.shape[1] * jax.process_count()) + x.shape[2:]
            return jax.make_array_from_process_local_data(sharding, x, global_shape)

        return jax.tree.map(put, batches)

    def unreplicate(self, state):
        """Over several processes: the local copy of each replicated array, so hooks can run
        ordinary ``jit`` code on one process without entering a cross-process computation."""
        if jax.process_count() > 1:
            return jax.tree.map(lambda x: x.addressable_data(0), state)
        return state


class Pmap(_OverMesh):
    """``jax.pmap`` over the local devices: state and batches carry a leading device axis."""

    name = "pmap"

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def _compile(devices: tuple, default_devices: bool, donate: bool):
        return jax.pmap(
            _pmap_step,
            axis_name=AXIS,
            static_broadcasted_argnums=(2, 3, 4, 5),
            devices=None if default_devices else devices,  # None: pmap's own choice, all local devices
            donate_argnums=(0,) if donate else (),
        )

    def put_state(self, state):
        n = len(self.local_devices)
        sharding = NamedSharding(self.local_mesh, P(AXIS))

        def replicate(x):
            x = _first_local(x)
            return jax.device_put(np.broadcast_to(x[None], (n,) + x.shape), sharding)

        return jax.tree.map(replicate, state)

    def _place_batches(self, batches):
        n = len(self.local_devices)
        sharding = NamedSharding(self.local_mesh, P(AXIS))

        def split(x):  # [K, b, ...] -> [n, K, b/n, ...]
            x = np.asarray(x)
            k, b = x.shape[:2]
            if b % n:
                raise ValueError(f"pmap: local batch of {b} rows is not divisible by {n} local devices.")
            return jax.device_put(x.reshape((k, n, b // n) + x.shape[2:]).swapaxes(0, 1), sharding)

        return jax.tree.map(split, batches)

    def fetch_metrics(self, metrics) -> dict[str, np.ndarray]:
        return {name: v[0] for name, v in super().fetch_metrics(metrics).items()}  # [1, K] shard of [n, K]

    def unreplicate(self, state):
        """Replica 0's copy."""
        return jax.tree.map(lambda x: x.addressable_data(0)[0], state)

    def to_checkpoint(self, state):
        sharding = NamedSharding(self.mesh, P())

        def to_global(x):
            shards = sorted(x.addressable_shards, key=lambda s: s.device.id)
            shape = x.shape[1:]
            return jax.make_array_from_single_device_arrays(shape, sharding, [s.data.reshape(shape) for s in shards])

        return jax.tree.map(to_global, state)

    def from_checkpoint(self, state):
        sharding = NamedSharding(self.local_mesh, P(AXIS))
        n = len(self.local_devices)

        def replicate(x):
            by_device = {s.device: s.data for s in x.addressable_shards}
            arrays = [by_device[d][None] for d in self.local_devices]
            return jax.make_array_from_single_device_arrays((n,) + x.shape, sharding, arrays)

        return jax.tree.map(replicate, state)


_MODE_CLASSES: dict[str, type[Parallel]] = {cls.name: cls for cls in (SingleDevice, Pmap, Sharded)}
MODES = tuple(_MODE_CLASSES)


def _all(devices: Sequence | None) -> tuple:
    return tuple(devices) if devices is not None else tuple(jax.devices())


def _local(devices: tuple) -> tuple:
    pid = jax.process_index()
    local = tuple(d for d in devices if d.process_index == pid)
    if not local:
        raise ValueError("make_parallel: none of the given devices belongs to this process.")
    return local


def make_parallel(
    mode: str,
    *,
    loss_fn,
    tx,
    ema_rate: float,
    ema_warmup: bool = True,
    devices: Sequence | None = None,
    donate: bool = True,
) -> Parallel:
    """The execution mode ``mode`` (``"single"``, ``"pmap"`` or ``"sharded"``) with ``multi_step`` compiled.

    ``devices``: the devices to use (default ``jax.devices()``; ``single`` uses the first
    local one). ``donate``: donate the input state's buffers to the step (halves peak
    state memory; the passed-in state must not be used afterwards). ``ema_rate``, ``ema_warmup``:
    the EMA decay ``state.ema_decay(n, ema_rate, ema_warmup)`` (``optim.ema_rate``/``optim.ema_warmup``).
    """
    if mode not in _MODE_CLASSES:
        raise ValueError(f"training.mode: expected one of {MODES}, got {mode!r}.")
    return _MODE_CLASSES[mode].create(loss_fn=loss_fn, tx=tx, ema_rate=float(ema_rate), ema_warmup=bool(ema_warmup),
                                      devices=devices, donate=bool(donate))
