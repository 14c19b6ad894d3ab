"""The training settings and their defaults: the one place they are defined.

``DEFAULTS`` holds every key the training package reads, with its default value;
:func:`default_config` is it as an ``ml_collections.ConfigDict`` (``jaxscore.config.base_config``
starts from it, so the CLI and library callers get the same defaults). The training code
accepts an ``ml_collections.ConfigDict``, a nested ``dict`` or ``None``; a key a config does
not set falls back to ``DEFAULTS``, so a config only has to state what it changes.

Sections: ``seed``; ``training`` (the loop: :class:`LoopSettings`); ``optim`` (score_sde's
optimizer and EMA, read by ``state.make_optimizer``); ``distributed``
(``parallel.maybe_initialize_distributed``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import ml_collections

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "training": {
        "n_iters": 10000,
        "batch_size": 128,  # global batch size (all devices, all processes)
        "mode": "single",  # single | pmap | sharded
        "steps_per_call": 1,  # K optimizer steps fused into one compiled call (lax.scan)
        "log_every": 100,
        "checkpoint_every": 1000,
        "keep_last": 3,
        "keep_every": 0,  # also keep every step divisible by this (0: none)
        "eval_every": 1000,  # period of hooks that give none (0: only at the end)
        "max_consecutive_nonfinite": 10,  # 0: never stop on non-finite steps
        "async_checkpoint": True,
        "progress": True,
    },
    "optim": {  # score_sde's defaults (configs/default_*_configs.py: optim.*, model.ema_rate)
        "optimizer": "adam",  # adam | adamw
        "lr": 2e-4,
        "warmup": 5000,
        "grad_clip": 1.0,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "ema_rate": 0.9999,
        "ema_warmup": True,  # EMA decay min(ema_rate, (1 + n) / (10 + n)) at step n (state.ema_decay)
    },
    "distributed": {  # multi-host: jax.distributed.initialize()
        "enabled": False,
        "coordinator_address": None,  # "host:port"; None lets JAX auto-detect (TPU pods, SLURM)
        "num_processes": None,
        "process_id": None,
        "local_device_ids": None,  # e.g. [0, 1] when several processes share a host's GPUs
        "cpu_collectives": None,  # "gloo" for multi-process CPU runs
    },
}


def default_config() -> ml_collections.ConfigDict:
    """``DEFAULTS`` as a fresh (unlocked) ``ConfigDict``: every setting ``train`` reads."""
    return ml_collections.ConfigDict(copy.deepcopy(DEFAULTS))


_MISSING = object()


def cfg_get(config: Any, dotted: str, default: Any = None) -> Any:
    """``config.a.b`` for ``dotted="a.b"``; ``default`` when any level is missing or ``None``."""
    node = config
    for part in dotted.split("."):
        if node is None:
            return default
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        else:
            try:
                node = node[part]  # ConfigDict supports item access
            except (KeyError, TypeError, AttributeError):
                node = getattr(node, part, _MISSING)
        if node is _MISSING:
            return default
    return default if node is None else node


def setting(config: Any, dotted: str) -> Any:
    """``config``'s value of ``dotted`` (e.g. ``"training.n_iters"``), else its value in ``DEFAULTS``."""
    return cfg_get(config, dotted, cfg_get(DEFAULTS, dotted))


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """The ``training.*`` settings of the loop, resolved against ``DEFAULTS`` and checked.

    ``seed`` is ``config.seed`` (or ``training.seed``); periods are clamped to >= 1 and
    ``steps_per_call`` to >= 1, as the loop has always read them.
    """

    seed: int
    n_iters: int
    batch_size: int
    mode: str
    steps_per_call: int
    log_every: int
    checkpoint_every: int
    keep_last: int
    keep_every: int
    eval_every: int
    max_consecutive_nonfinite: int
    async_checkpoint: bool
    progress: bool

    @classmethod
    def from_config(cls, config: Any) -> LoopSettings:
        def get(name):
            return setting(config, f"training.{name}")

        return cls(
            seed=int(cfg_get(config, "seed", cfg_get(config, "training.seed", DEFAULTS["seed"]))),
            n_iters=int(get("n_iters")),
            batch_size=int(get("batch_size")),
            mode=str(get("mode")),
            steps_per_call=max(1, int(get("steps_per_call"))),
            log_every=max(1, int(get("log_every"))),
            checkpoint_every=max(1, int(get("checkpoint_every"))),
            keep_last=int(get("keep_last")),
            keep_every=int(get("keep_every") or 0),
            eval_every=int(get("eval_every") or 0),
            max_consecutive_nonfinite=int(get("max_consecutive_nonfinite")),
            async_checkpoint=bool(get("async_checkpoint")),
            progress=bool(get("progress")),
        )


def config_to_dict(config: Any) -> dict:
    """A JSON-normalised plain ``dict`` of ``config`` (tuples become lists, odd objects ``str``)."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return json.loads(json.dumps(config, default=_json_default, sort_keys=True))


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return repr(obj)


def flatten_dict(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: Mapping, new: Mapping, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """Sorted ``(key, old_value, new_value)`` for every dotted key whose value differs.

    A key present on one side only shows the other side as ``"<missing>"``. Keys in
    ``ignore`` (exact dotted names) are skipped.
    """
    fo, fn = flatten_dict(old), flatten_dict(new)
    diffs = []
    for key in sorted(set(fo) | set(fn)):
        if key in ignore:
            continue
        a, b = fo.get(key, "<missing>"), fn.get(key, "<missing>")
        if a != b:
            diffs.append((key, a, b))
    return diffs
