"""Two-process jax.distributed training on 127.0.0.1 (CPU, gloo collectives).

Each process has 2 CPU devices (4 global) and feeds only its half of the global batch
(tests/train_worker.py). The run trains 4 steps, writes a checkpoint, is relaunched and
resumes to step 8; the result must match a one-process run on the same global batches.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

import train_worker
from multiprocess import run_workers
from jaxscore.train import Checkpointer, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "train_worker.py")


def _launch(workdir, mode, n_iters, timeout=300):
    args = ["--workdir", str(workdir), "--mode", mode, "--devices", "2", "--n_iters", str(n_iters),
            "--checkpoint_every", "4", "--num_processes", "2"]
    return run_workers(WORKER, [args, args], timeout=timeout)


def _reference(tmp_path, mode, n_iters):
    """Same global batches in this process: single device, or pmap over 4 devices."""
    init_fn, loss_fn, make_batch_fn = train_worker.problem()
    cfg = train_worker.make_config(n_iters=n_iters, checkpoint_every=4, mode=mode)
    res = train(cfg, tmp_path / f"ref_{mode}", init_fn=init_fn, loss_fn=loss_fn, batch_fn=make_batch_fn(),
                devices=jax.devices()[:4] if mode == "pmap" else None)
    return res.state.params


def _rel_err(a: dict, ref) -> float:
    leaves = jax.tree_util.tree_flatten_with_path(ref)[0]
    errs = []
    for path, y in leaves:
        x = a[jax.tree_util.keystr(path)]
        y = np.asarray(y)
        errs.append(np.linalg.norm(x - y) / np.linalg.norm(y))
    return max(errs)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sharded", "pmap"])
def test_two_process_training_checkpoints_and_resumes(tmp_path, mode):
    wd = tmp_path / "run"
    first = _launch(wd, mode, n_iters=4)
    assert [r["process_index"] for r in first] == [0, 1]
    assert all(r["step"] == 4 and r["resumed_from"] is None for r in first)
    ck = Checkpointer(wd)
    assert ck.all_steps() == [4]
    meta = ck.read_meta(4)
    ck.close()
    assert meta["process_count"] == 2 and meta["data_position"] == 4
    second = _launch(wd, mode, n_iters=8)
    assert all(r["step"] == 8 and r["resumed_from"] == 4 for r in second)
    with np.load(wd / "final_params.npz") as f:
        got = {k: f[k] for k in f.files}
    # sharded: the global program equals the one-device program (float summation order
    # differs -> 1e-5 relative); pmap: equals pmap over 4 local devices (same replica keys).
    ref = _reference(tmp_path, "single" if mode == "sharded" else "pmap", 8)
    assert _rel_err(got, ref) < 1e-5
