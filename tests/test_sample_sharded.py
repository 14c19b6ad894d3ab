"""Sampling spread over local devices and over processes equals single-device sampling.

Every sampler draws example ``g`` from its own key ``fold_in(key, g)`` and takes the global index
of its first row (``example_offset``), so splitting a batch over devices (``jax.shard_map``, one
contiguous block of rows per device) or over processes (each drawing its own global indices)
must not change any sample. The reference is one call ``sample(key, ..., (num, *D))`` on one
device. The score is the ring mixture's exact score, which treats rows independently; with it the
fixed-step samplers (dpmpp_2m, euler_maruyama, pc) agree bitwise (measured: from 2 rows per
device up; a 1-row batch rounds differently, ~2e-6). The diffrax samplers (ode, sde) agree to
float32 round-off: XLA compiles their vmapped solve loops differently for a multi-device program
(measured up to 2e-6 here, 2e-5 for sde across two processes, where the last reverse-SDE step
multiplies round-off by g^2 / sigma^2); a wrong key or offset would change a sample by O(1).
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import sample_worker
from multiprocess import REPO, run_workers
from jaxscore.data.toy import ring_mixture
from jaxscore.samplers import get_sampler, sample, sample_in_batches
from jaxscore.samplers.api import iter_sample_batches, process_rows, sample_local_shard
from jaxscore.sde import VPSDE

WORKER = os.path.join(REPO, "tests", "sample_worker.py")

SDE = VPSDE()
SCORE = ring_mixture().score_fn(SDE)
KEY = jax.random.key(11)
# (sampler, steps, options, bitwise equal to one call): deterministic (dpmpp_2m, ode) and
# stochastic (euler_maruyama, pc, sde); the fixed-step core and diffrax
CASES = [("dpmpp_2m", 4, {}, True), ("euler_maruyama", 4, {}, True), ("pc", 3, {}, True),
         ("ode", 3, {"solver": "heun"}, False), ("sde", 4, {}, False)]
NUM = 21  # a multiple of neither the batch (12) nor the 8 devices
BATCH = 12  # padded to 16 over 8 devices: 2 rows per device
# float32 round-off (see the module docstring; 5x the largest difference measured, as in
# test_diffrax_samplers' batch-invariance check); another key or offset would differ by O(1)
ROUND_OFF = dict(rtol=1e-4, atol=1e-4)


def one_call(name, steps, options, num=NUM):
    return np.asarray(jax.jit(lambda k: sample(k, SCORE, SDE, (num, 2), name, steps=steps, **options))(KEY))


@pytest.mark.parametrize("name,steps,options,bitwise", CASES, ids=[c[0] for c in CASES])
def test_sharded_batches_equal_one_device(name, steps, options, bitwise):
    assert len(jax.local_devices()) == 8
    got = sample_in_batches(KEY, SCORE, SDE, (BATCH, 2), NUM, name, steps, progress=False, **options)
    assert got.shape == (NUM, 2)
    assert got.devices() == {jax.local_devices()[0]}  # gathered on one device, as a one-device call
    ref = one_call(name, steps, options)
    if bitwise:
        np.testing.assert_array_equal(np.asarray(got), ref)
    else:
        np.testing.assert_allclose(np.asarray(got), ref, **ROUND_OFF)


def test_process_rows_cover_every_index_once():
    for num in (1, 7, 23, 64):
        for batch in (1, 5, 8, 10):
            for count in (1, 2, 3, 4, 16):
                got = []
                for p in range(count):
                    rows = process_rows(num, batch, p, count)
                    assert len(rows) == -(-num // batch)  # one entry per global batch on every process
                    for j, (first, n) in enumerate(rows):
                        assert n == 0 or j * batch <= first < first + n <= min((j + 1) * batch, num)
                        got.extend(range(first, first + n))
                assert sorted(got) == list(range(num)), (num, batch, count)
    # the contiguous share of a global batch: B = 10 over 3 processes -> 4, 4, 2 rows
    assert [process_rows(23, 10, p, 3)[1] for p in range(3)] == [(10, 4), (14, 4), (18, 2)]


def test_local_shards_put_at_their_indices_equal_one_call():
    """Three processes simulated in one (explicit process_index / process_count, as in a job array):
    B = 10 gives shares of 4, 4, 2 rows, each padded to a multiple of 3 devices."""
    name, steps, options, _ = CASES[1]
    full = np.full((NUM, 2), np.nan, np.float32)
    for p in range(3):
        x, idx = sample_local_shard(KEY, SCORE, SDE, (10, 2), NUM, name, steps, process_index=p, process_count=3,
                                    devices=3, progress=False, **options)
        assert x.devices() == {jax.local_devices()[0]}
        expected = [i for first, n in process_rows(NUM, 10, p, 3) for i in range(first, first + n)]
        assert x.shape == (len(expected), 2) and idx.dtype == np.int64 and idx.tolist() == expected
        assert np.all(np.isnan(full[idx]))  # no index drawn twice
        full[idx] = np.asarray(x)
    np.testing.assert_allclose(full, one_call(name, steps, options), **ROUND_OFF)


def test_iter_sample_batches_streams_the_same_rows():
    """Process 1 of 2 with a global batch of 24: its share of 12 rows is padded to 16 (2 rows per
    device, as with BATCH = 12 on one process), so each device runs the same program on the same
    rows as in ``sample_in_batches(..., (12, 2), ...)``: bitwise equal."""
    name, steps, options, _ = CASES[0]
    num = 40
    batches = list(iter_sample_batches(KEY, SCORE, SDE, (24, 2), num, name, steps, process_index=1,
                                       process_count=2, progress=False, **options))
    # global batches [0, 24), [24, 40): process 1 takes [12, 24) and [36, 40)
    assert [idx.tolist() for _, idx in batches] == [list(range(12, 24)), list(range(36, 40))]
    ref = np.asarray(sample_in_batches(KEY, SCORE, SDE, (BATCH, 2), num, name, steps, progress=False, **options))
    for x, idx in batches:
        np.testing.assert_array_equal(np.asarray(x), ref[idx])


def test_compiles_once_per_shape_not_per_offset_or_num():
    """Also: a user's 1-D Mesh (any axis name) as ``devices``; the samples land on its first device."""
    traces = []

    def counted(x, t):
        traces.append(1)  # runs only while tracing
        return SCORE(x, t)

    mesh = Mesh(np.asarray(jax.local_devices()[4:]), ("data",))
    for num, key in ((9, KEY), (30, jax.random.key(3))):
        x = sample_in_batches(key, counted, SDE, (8, 2), num, "euler_maruyama", 2, devices=mesh, progress=False)
        assert x.shape == (num, 2) and x.devices() == {jax.local_devices()[4]}
    assert len(traces) == 1
    ref = np.asarray(sample_in_batches(KEY, SCORE, SDE, (9, 2), 9, "euler_maruyama", 2, devices=1, progress=False))
    np.testing.assert_allclose(np.asarray(sample_in_batches(KEY, counted, SDE, (8, 2), 9, "euler_maruyama", 2,
                                                            devices=mesh, progress=False)), ref, **ROUND_OFF)


# slow: 18 s (every sampler compiled); the sharded-equals-one-device checks stay in the default suite
@pytest.mark.slow
def test_all_samplers_start_from_the_same_prior_draw():
    """ode / sde draw x_T like the fixed-step samplers: fold_in(fold_in(key, offset + i), 0)."""
    _, info = sample(KEY, SCORE, SDE, (4, 2), "ode", steps=1, solver="euler", return_info=True, example_offset=3)
    _, core = sample(KEY, SCORE, SDE, (7, 2), "dpmpp_2m", steps=1, return_info=True, return_trajectory=True)
    np.testing.assert_array_equal(np.asarray(info["x_T"]), np.asarray(core["trajectory"][0, 3:]))
    _, sde_info = sample(KEY, SCORE, SDE, (4, 2), "sde", steps=1, return_info=True, example_offset=3)
    np.testing.assert_array_equal(np.asarray(sde_info["x_T"]), np.asarray(info["x_T"]))


def test_bad_arguments_raise_clear_errors():
    args = (KEY, SCORE, SDE, (4, 2), 8, "euler_maruyama", 2)
    with pytest.raises(ValueError, match=r"devices: expected an int in \[1, 8\]"):
        sample_in_batches(*args, devices=0, progress=False)
    with pytest.raises(ValueError, match="devices: expected a non-empty sequence of distinct"):
        sample_in_batches(*args, devices=[], progress=False)
    with pytest.raises(ValueError, match="devices: expected a non-empty sequence of distinct"):
        sample_in_batches(*args, devices=[jax.local_devices()[0]] * 2, progress=False)
    with pytest.raises(ValueError, match=r"process_index: expected an int in \[0, 2\)"):
        sample_local_shard(*args, process_index=2, process_count=2, progress=False)
    with pytest.raises(ValueError, match="process_count: expected an int >= 1"):
        sample_local_shard(*args, process_index=0, process_count=0, progress=False)
    with pytest.raises(ValueError, match="example_offset: batched sampling sets it"):
        sample_in_batches(*args, example_offset=3, progress=False)
    with pytest.raises(ValueError, match="x_init: batched sampling draws x_T per example"):
        sample_in_batches(*args, x_init=np.zeros((4, 2), np.float32), progress=False)
    with pytest.raises(TypeError, match="example_offset: expected a non-negative integer scalar"):
        get_sampler("ode")(KEY, SCORE, SDE, (4, 2), steps=2, example_offset=1.5)


@pytest.mark.slow
def test_two_processes_gathered_equal_one_process(tmp_path):
    """Two jax.distributed processes on loopback with 3 and 2 devices (the split of the indices
    does not depend on device counts): each draws only its own rows; put at their global indices
    they equal one single-process call, also with a score over parameters that span both
    processes (as an eval hook of multi-host training passes)."""
    devices_per_process = (3, 2)
    results = run_workers(WORKER, [["--out", str(tmp_path), "--devices", str(d), "--num_processes",
                                    str(len(devices_per_process))] for d in devices_per_process])
    assert [(r["process_index"], r["process_count"], r["local_devices"]) for r in results] == [(0, 2, 3), (1, 2, 2)]
    key, sde, score_fn = sample_worker.problem()
    num = sample_worker.NUM
    # "global_params": the first case's sampler with a score over parameters replicated across processes
    cases = [(name, *case) for case in sample_worker.CASES for name in (case[0],)]
    cases.append(("global_params", *sample_worker.CASES[0]))
    for case, sampler, steps, options in cases:
        full = np.full((num, 2), np.nan, np.float32)
        for p in range(2):
            with np.load(tmp_path / f"process_{p}.npz", allow_pickle=False) as f:
                x, idx = f[f"{case}_samples"], f[f"{case}_indices"]
            assert np.all(np.isnan(full[idx])), f"{case}: an index drawn by both processes"
            full[idx] = x
        assert not np.any(np.isnan(full)), f"{case}: an index drawn by no process"
        ref = jax.jit(lambda k: sample(k, score_fn, sde, (num, 2), sampler, steps=steps, **options))(key)
        np.testing.assert_allclose(full, np.asarray(ref), **ROUND_OFF, err_msg=case)
    assert [r["rows"]["dpmpp_2m"] for r in results] == [5 + 5 + 3, 5 + 5]  # batches [0,10), [10,20), [20,23)
