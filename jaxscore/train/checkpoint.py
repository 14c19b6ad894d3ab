"""Orbax checkpoints for ``TrainState``: async saves, retention, verified restore, fallback.

Layout of a run's ``workdir``::

    workdir/config.json                 the config of the latest (re)start (process 0)
    workdir/checkpoints/<step>/state/   the TrainState (orbax StandardSave, OCDBT)
    workdir/checkpoints/<step>/meta/    JSON: step, data_position, config, fingerprint, ...
    workdir/corrupt_checkpoints/<step>-<time>/   unreadable checkpoints moved aside

Guarantees:

- *Atomic*: orbax writes each step into ``<step>.orbax-checkpoint-tmp-<ts>`` and renames it
  to ``<step>`` only once every file is written (and, async, once the background write has
  finished). A run killed mid-save leaves only a tmp directory, which is never listed as a
  step and is deleted when the next manager opens the directory.
- *Verified*: ``meta.fingerprint`` holds two wrapping ``uint32`` checksums of every leaf's
  bit pattern (plain sum and position-weighted sum), computed on the host at save time and
  re-checked after restore, so silently altered bytes are caught too.
- *Fallback*: if the latest step cannot be read or fails its fingerprint, a warning
  (``CheckpointFallbackWarning``) is issued, the step is moved to
  ``corrupt_checkpoints/`` and the next older step is tried. A checkpoint whose tree
  structure does not match the model being restored raises ``CheckpointStructureError``
  instead (that is a code/config change, not corruption; nothing is moved).
- *Retention*: the last ``keep_last`` steps plus every step divisible by ``keep_every``.
- *Data position*: batches are a pure function of ``(seed, step)``, so ``step`` is the
  data position; it is stored as ``meta.data_position`` for readers.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax import lax
from orbax.checkpoint import checkpoint_managers as ocm

from jaxscore.train.settings import DEFAULTS, config_diff, config_to_dict

CHECKPOINT_SUBDIR = "checkpoints"
CORRUPT_SUBDIR = "corrupt_checkpoints"
CONFIG_FILE = "config.json"
_TRAINING = DEFAULTS["training"]  # the Checkpointer's defaults are the run's (training.checkpoint_every, ...)

# Settings a run may be resumed with different values of, without ``allow_config_change``.
# They do not change *what* is computed (the same loss, data, noise and optimizer for every
# step; see ``step.py``: noise depends only on (key, step, global example index)), but two
# of them change *how*, so bit-identity is guaranteed only when they are unchanged:
#   - ``training.mode`` (single / pmap / sharded) changes the float summation order of the
#     batch mean and the gradient all-reduce: results agree to float tolerance (~1e-6
#     relative per step), not bit for bit;
#   - ``training.steps_per_call`` moves steps into or out of a ``lax.scan`` body, where XLA
#     may fuse differently (a few ulps).
#   - ``distributed.*`` changes the device count and with it the mode's summation order.
# The rest (cadences, total steps, progress, the ``sampling``/``eval`` sections) never
# touch the training numbers: a resumed run with only those changed stays bit-identical.
RESUME_SAFE_KEYS = (
    "training.n_iters",
    "training.log_every",
    "training.eval_every",
    "training.checkpoint_every",
    "training.keep_last",
    "training.keep_every",
    "training.async_checkpoint",
    "training.progress",
    "training.max_consecutive_nonfinite",
    "training.steps_per_call",
    "training.mode",
    *(f"distributed.{name}" for name in DEFAULTS["distributed"]),
    "sampling.*",  # evaluation-only sections (a trailing ".*" matches the whole section)
    "eval.*",
)


class CheckpointFallbackWarning(UserWarning):
    """A checkpoint could not be restored and an older one is used instead."""


class CheckpointStructureError(ValueError):
    """The saved state's tree structure/shapes differ from the state being restored into."""


class ConfigMismatchError(ValueError):
    """The workdir holds a run with a different config."""


class CorruptCheckpointError(RuntimeError):
    """A restored checkpoint failed its fingerprint check."""


# ---- fingerprint -----------------------------------------------------------------------


_WEIGHT_MUL = 2654435761  # Knuth's multiplicative hash constant: weights a*i + 1 (mod 2**32)
_HOST_CHUNK = 1 << 22  # elements per host chunk: bounds the temporaries to ~32 MiB per leaf


def _leaf_checksums(x) -> jax.Array:
    """Two wrapping uint32 checksums of ``x``'s bit pattern: ``[sum u_i, sum u_i*(a*i+1)]``.

    Device form, for arrays no single process holds whole; :func:`_leaf_checksums_host` is
    the same function in numpy (tested equal for every dtype)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        u = x.astype(jnp.uint32)
    else:
        size = jnp.dtype(x.dtype).itemsize
        if size == 4 or size == 8:
            u = lax.bitcast_convert_type(x, jnp.uint32)  # 8-byte -> trailing axis of 2
        elif size == 2:
            u = lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
        elif size == 1:
            u = lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
        else:  # pragma: no cover - no other widths in JAX
            raise TypeError(f"fingerprint: unsupported dtype {x.dtype}.")
    u = u.reshape(-1)
    idx = lax.iota(jnp.uint32, u.size)
    weights = idx * jnp.uint32(_WEIGHT_MUL) + jnp.uint32(1)
    return jnp.stack([jnp.sum(u, dtype=jnp.uint32), jnp.sum(u * weights, dtype=jnp.uint32)])


_leaf_checksums_device = jax.jit(_leaf_checksums)


def _leaf_checksums_host(a: np.ndarray) -> list[int]:
    """:func:`_leaf_checksums` in numpy, in chunks (uint32 arithmetic wraps in both)."""
    a = np.ascontiguousarray(a)
    if a.dtype.itemsize in (4, 8):
        u = a.reshape(-1).view(np.uint32)  # 8-byte: low word first, as XLA's bitcast on little-endian
    elif a.dtype.itemsize in (2, 1):
        u = a.reshape(-1).view(np.uint16 if a.dtype.itemsize == 2 else np.uint8)  # bool: 0 / 1 bytes
    else:  # pragma: no cover - no other widths in JAX
        raise TypeError(f"fingerprint: unsupported dtype {a.dtype}.")
    total = weighted = np.uint32(0)
    with np.errstate(over="ignore"):
        for start in range(0, u.size, _HOST_CHUNK):
            chunk = u[start : start + _HOST_CHUNK].astype(np.uint32)
            weights = np.arange(start, start + chunk.size, dtype=np.uint64).astype(np.uint32)
            weights = weights * np.uint32(_WEIGHT_MUL) + np.uint32(1)
            total = total + chunk.sum(dtype=np.uint32)
            weighted = weighted + (chunk * weights).sum(dtype=np.uint32)
    return [int(total), int(weighted)]


def _leaf_fingerprint(x) -> list[int]:
    """Checksums on the host when this process holds the whole array (no compile, no device
    work: ~0.7 s for the 943 MiB CIFAR-10 DDPM++ state, where one jit over the tree cost 33 s
    to compile on every restore); a global device reduction otherwise."""
    if isinstance(x, jax.Array):
        if x.is_fully_replicated:
            return _leaf_checksums_host(np.asarray(x.addressable_data(0)))
        if not x.is_fully_addressable:
            return [int(v) for v in np.asarray(_leaf_checksums_device(x).addressable_data(0))]
    return _leaf_checksums_host(np.asarray(x))


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _path_names(tree) -> list[str]:
    """``"a/b/0"`` per leaf; dict keys, attributes and sequence indices are normalised alike
    (orbax metadata stores every level as a dict key or list), so a ``TrainState`` and the
    nested dicts restored from its metadata give the same names."""
    return ["/".join(_key_name(e) for e in path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def fingerprint(tree) -> dict[str, list[int]]:
    """``{leaf path: [sum, weighted sum]}`` uint32 checksums of ``tree`` (see :func:`_leaf_checksums`)."""
    return {name: _leaf_fingerprint(x) for name, x in zip(_path_names(tree), jax.tree.leaves(tree))}


# ---- config check ----------------------------------------------------------------------


def check_config(saved: Any, new: Any, *, allow_change: bool = False, ignore=RESUME_SAFE_KEYS) -> list:
    """Compare a saved run config with the new one; raise ``ConfigMismatchError`` if they differ.

    Keys in ``ignore`` (default ``RESUME_SAFE_KEYS``: logging/checkpoint cadence, total
    steps, execution mode and steps per call, distributed set-up, the ``sampling``/``eval``
    sections; ``"section.*"`` matches a whole section) may differ. None of them changes the
    training math; a changed ``training.mode``, ``training.steps_per_call`` or device count
    changes float summation order, so the resumed run then matches an uninterrupted one to
    float tolerance rather than bit for bit (see ``RESUME_SAFE_KEYS``). With
    ``allow_change=True`` the differences are returned (and warned about) instead.
    """
    diffs = config_diff(config_to_dict(saved), config_to_dict(new), tuple(ignore))
    prefixes = tuple(k[:-1] for k in ignore if k.endswith(".*"))
    diffs = [d for d in diffs if not d[0].startswith(prefixes)] if prefixes else diffs
    if diffs:
        listing = "\n".join(f"  {k}: saved {a!r} -> new {b!r}" for k, a, b in diffs)
        if not allow_change:
            raise ConfigMismatchError(
                "The workdir holds a run trained with a different config; refusing to resume.\n"
                f"Differing keys:\n{listing}\n"
                "Use a new workdir, restore the old values, or accept the change: --allow-config-change on "
                "the command line (jaxscore train), allow_config_change=True in Python (train, "
                "train_and_evaluate)."
            )
        warnings.warn(f"Resuming with a changed config (allow_config_change=True):\n{listing}", stacklevel=2)
    return diffs


# ---- manager ---------------------------------------------------------------------------


def _sync(name: str):
    if jax.process_count() > 1:
        ocp.multihost.sync_global_processes(name)


def _tree_signature(tree) -> dict[str, tuple]:
    """``{"a/b/0": (shape, dtype)}`` (path names as in ``_path_names``)."""
    leaves = jax.tree.leaves(tree)
    return {n: (tuple(np.shape(x)), str(np.dtype(x.dtype))) for n, x in zip(_path_names(tree), leaves)}


class Checkpointer:
    """Saves/restores ``TrainState`` pytrees under ``workdir/checkpoints`` (see module doc).

    Args:
      workdir: the run directory.
      save_every: ``maybe_save`` writes when ``step % save_every == 0`` (or when forced);
        default ``training.checkpoint_every``'s.
      keep_last: how many most recent steps to keep (>= 1); default ``training.keep_last``'s.
      keep_every: also keep every step divisible by this (``None``/0: none).
      async_save: write in a background thread (training continues after the device->host
        copy; ``wait()`` blocks until the write is committed).
      read_only: only read (no saving, no tmp-directory cleanup, corrupt steps are not moved).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        save_every: int = _TRAINING["checkpoint_every"],
        keep_last: int = _TRAINING["keep_last"],
        keep_every: int | None = None,
        async_save: bool = _TRAINING["async_checkpoint"],
        read_only: bool = False,
    ):
        if save_every < 1:
            raise ValueError(f"training.checkpoint_every: expected >= 1, got {save_every}.")
        if keep_last < 1:
            raise ValueError(f"training.keep_last: expected >= 1, got {keep_last}.")
        self.workdir = os.path.abspath(os.fspath(workdir))
        self.directory = os.path.join(self.workdir, CHECKPOINT_SUBDIR)
        self.save_every = int(save_every)
        policies = [ocm.LatestN(n=int(keep_last))]
        if keep_every:
            policies.append(ocm.EveryNSteps(interval_steps=int(keep_every)))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies) if len(policies) > 1 else policies[0],
            enable_async_checkpointing=bool(async_save),
            cleanup_tmp_directories=not read_only,
            create=not read_only,
            read_only=bool(read_only),
        )
        self.read_only = bool(read_only)
        self._mngr = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
        )
        self._n_sync = 0

    # -- queries --
    def all_steps(self) -> list[int]:
        return sorted(self._mngr.all_steps())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    # -- saving --
    def save(self, step: int, state, *, config=None, extra: dict | None = None) -> None:
        """Save ``state`` (unreplicated form, see ``Parallel.to_checkpoint``) as ``step``.

        Returns once the state is copied to host memory; with async saving the files are
        written in the background. ``extra``: more JSON-able metadata for ``meta``.
        """
        step = int(step)
        meta = {
            "step": step,
            "data_position": step,
            "config": config_to_dict(config),
            "fingerprint": fingerprint(state),
            "time": time.time(),
            "process_count": jax.process_count(),
        }
        meta.update(extra or {})
        self._mngr.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def maybe_save(self, step: int, state, *, force: bool = False, **kwargs) -> bool:
        """``save`` if ``force`` or ``step % save_every == 0`` and not saved yet; returns whether it saved."""
        step = int(step)
        if step in self._mngr.all_steps():
            return False
        if force or step % self.save_every == 0:
            self.save(step, state, **kwargs)
            return True
        return False

    def wait(self) -> None:
        """Block until every pending async save is committed (renamed into place)."""
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    # -- restoring --
    def read_meta(self, step: int) -> dict:
        return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore(self, step: int, abstract_state):
        """Restore ``step`` into the structure/shardings of ``abstract_state``; returns (state, meta).

        ``abstract_state``: a pytree of ``jax.ShapeDtypeStruct`` (with ``sharding``) or arrays.
        Raises ``CheckpointStructureError`` if the saved tree differs, ``CorruptCheckpointError``
        if the fingerprint does not match, or orbax's error if files are unreadable.
        """
        restored = self._mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        state, meta = restored["state"], restored["meta"]
        expected = meta.get("fingerprint")
        if expected is not None and fingerprint(state) != expected:
            raise CorruptCheckpointError(f"checkpoint step {step}: restored arrays do not match the saved fingerprint.")
        return state, meta

    def _check_structure(self, step: int, abstract_state) -> None:
        try:
            saved = self._mngr.item_metadata(step)["state"]
        except Exception:  # unreadable metadata: treated as corruption by the caller's restore
            return
        if saved is None:
            return
        try:
            saved_sig = _tree_signature(saved)
        except Exception:
            return
        want_sig = _tree_signature(abstract_state)
        if saved_sig != want_sig:
            missing = sorted(set(want_sig) - set(saved_sig))
            extra = sorted(set(saved_sig) - set(want_sig))
            changed = sorted(k for k in set(want_sig) & set(saved_sig) if want_sig[k] != saved_sig[k])
            lines = []
            if missing:
                lines.append(f"  in the model but not the checkpoint: {missing[:10]}")
            if extra:
                lines.append(f"  in the checkpoint but not the model: {extra[:10]}")
            for k in changed[:10]:
                lines.append(f"  {k}: saved {saved_sig[k]} vs model {want_sig[k]}")
            raise CheckpointStructureError(
                f"checkpoint step {step} in {self.directory} does not fit the state being restored:\n"
                + "\n".join(lines)
            )

    def _quarantine(self, step: int) -> None:
        self._n_sync += 1
        _sync(f"jaxscore_ckpt_quarantine_a_{step}_{self._n_sync}")
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            dst_root = os.path.join(self.workdir, CORRUPT_SUBDIR)
            os.makedirs(dst_root, exist_ok=True)
            if os.path.exists(src):
                shutil.move(src, os.path.join(dst_root, f"{step}-{int(time.time() * 1000)}"))
        _sync(f"jaxscore_ckpt_quarantine_b_{step}_{self._n_sync}")
        self._mngr.reload()

    def _fall_back(self, step: int, what: str, err: Exception) -> tuple[int, str]:
        """Warn that ``step`` is unusable (``CheckpointFallbackWarning``); ``(step, reason)``."""
        reason = f"{type(err).__name__}: {str(err)[:300]}"
        warnings.warn(
            f"checkpoint step {step} in {self.directory} {what} ({reason}); falling back to an earlier checkpoint.",
            CheckpointFallbackWarning,
            stacklevel=3,  # the caller of restore_latest
        )
        return step, reason

    def restore_latest(self, abstract_state):
        """Restore the newest readable checkpoint; ``None`` if there is none.

        Unreadable/corrupt steps are warned about (``CheckpointFallbackWarning``) and moved to
        ``corrupt_checkpoints/`` — but only once an older step has restored successfully; if no
        step can be restored, a ``RuntimeError`` lists every failure and nothing is moved.
        ``abstract_state``: the target pytree (``ShapeDtypeStruct``s with shardings, or arrays),
        or a callable mapping a step's saved metadata tree to one. Returns ``(state, meta)``.
        """
        self._mngr.reload()
        failures = []
        for step in sorted(self._mngr.all_steps(), reverse=True):
            if callable(abstract_state):  # built from the step's own metadata
                try:
                    target = abstract_state(self._mngr.item_metadata(step)["state"])
                except Exception as err:  # noqa: BLE001 - unreadable metadata = unusable step
                    failures.append(self._fall_back(step, "has unreadable metadata", err))
                    continue
            else:
                target = abstract_state
                self._check_structure(step, target)
            try:
                state, meta = self.restore(step, target)
            except CheckpointStructureError:
                raise
            except Exception as err:  # noqa: BLE001 - any read failure means "unusable step"
                failures.append(self._fall_back(step, "could not be restored", err))
                continue
            if not self.read_only:
                for bad, _ in failures:
                    self._quarantine(bad)
            return state, meta
        if failures:
            listing = "\n".join(f"  step {s}: {msg}" for s, msg in failures)
            raise RuntimeError(f"No checkpoint in {self.directory} could be restored:\n{listing}")
        return None


def restore_params(workdir: str | os.PathLike, init_fn=None, *, which: str = "ema_params", step: int | None = None):
    """``(params, step)`` from a run directory, for sampling/evaluation (no optimizer needed).

    Reads the newest readable checkpoint (or ``step``), falling back past corrupt ones with a
    ``CheckpointFallbackWarning``; nothing in ``workdir`` is modified. ``which``: ``"ema_params"``
    (default) or ``"params"``. The tree is rebuilt from the checkpoint's own metadata (so the
    optimizer need not be known) and verified against the saved fingerprint; if ``init_fn``
    is given, the params are checked against ``jax.eval_shape(init_fn, key)`` and returned in
    its tree structure. Arrays are placed on the first local device.
    """
    if which not in ("ema_params", "params"):
        raise ValueError(f"restore_params: which must be 'ema_params' or 'params', got {which!r}.")
    directory = os.path.join(os.fspath(workdir), CHECKPOINT_SUBDIR)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory}: no checkpoints; is {os.fspath(workdir)!r} a training workdir?")
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def from_metadata(meta_tree):
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta_tree)

    ck = Checkpointer(workdir, read_only=True, async_save=False)
    try:
        if step is None:
            restored = ck.restore_latest(from_metadata)
            if restored is None:
                raise FileNotFoundError(f"{directory}: no checkpoints.")
        else:
            restored = ck.restore(int(step), from_metadata(ck._mngr.item_metadata(int(step))["state"]))
    finally:
        ck.close()
    state, meta = restored
    params = state[which]
    if init_fn is not None:
        want = jax.eval_shape(init_fn, jax.random.key(0))
        got_sig, want_sig = _tree_signature(params), _tree_signature(want)
        if got_sig != want_sig:
            diff = sorted(set(got_sig.items()) ^ set(want_sig.items()))[:10]
            raise CheckpointStructureError(
                f"restore_params: the checkpoint's {which} do not match init_fn's parameters; "
                f"differing (path, (shape, dtype)) entries: {diff}"
            )
        by_name = dict(zip(_path_names(params), jax.tree.leaves(params)))
        params = jax.tree.unflatten(jax.tree.structure(want), [by_name[n] for n in _path_names(want)])
    return params, int(meta["step"])
