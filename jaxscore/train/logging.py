"""Metrics logging: JSONL always, TensorBoard (tensorboardX) when installed; process 0 only.

``workdir/metrics.jsonl`` holds one JSON object per line: ``{"step": int, "time": float,
<name>: float, ...}`` (non-finite values are written as JSON ``NaN``/``Infinity``, which
Python's ``json`` reads back). On resume from step ``s`` the file is first cut back to the
records with ``step <= s`` (a killed run may have logged steps that are now redone, and
its last line may be partial), so the file always describes one consistent trajectory.
TensorBoard events go to ``workdir/tb`` with ``purge_step=s`` for the same reason.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"
TB_SUBDIR = "tb"


def _to_float(value: Any) -> float | Any:
    arr = np.asarray(value)
    if arr.size == 1 and np.issubdtype(arr.dtype, np.number):
        return float(arr.reshape(()))
    if arr.size == 1 and arr.dtype == bool:
        return float(arr.reshape(()))
    return value


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All complete records of a metrics JSONL file (a partial last line is ignored)."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
    return records


def truncate_metrics(path: str | os.PathLike, max_step: int) -> int:
    """Rewrite ``path`` keeping complete records with ``step <= max_step``; returns how many were dropped.

    Written to a temporary file and renamed over the original (atomic on POSIX).
    """
    if not os.path.exists(path):
        return 0
    records = read_metrics(path)
    keep = [r for r in records if int(r.get("step", -1)) <= max_step]
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        for r in keep:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)
    return len(records) - len(keep)


class MetricsWriter:
    """Appends scalar metrics to ``workdir/metrics.jsonl`` and TensorBoard.

    Args:
      workdir: the run directory.
      enabled: write anything at all (``False`` on processes other than 0).
      start_step: the step training (re)starts from; later records are removed first.
      tensorboard: also write TensorBoard events if tensorboardX is importable.
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True, start_step: int = 0, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(os.fspath(workdir), METRICS_FILE)
        self._file = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(os.fspath(workdir), exist_ok=True)
        truncate_metrics(self.path, start_step)
        self._file = open(self.path, "a")
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # optional dependency
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(
                    logdir=os.path.join(os.fspath(workdir), TB_SUBDIR), purge_step=int(start_step) + 1
                )

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Write one record; array-valued scalars are converted to ``float``."""
        if not self.enabled:
            return
        record = {"step": int(step), "time": time.time()}
        for name, value in metrics.items():
            record[name] = _to_float(value)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in record.items():
                if name in ("step", "time") or not isinstance(value, float) or not math.isfinite(value):
                    continue
                self._tb.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
