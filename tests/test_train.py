"""Training system: optimizer/EMA math, the pure step, parallel modes, checkpoints, the loop.

Runs on the 8 fake CPU devices set by conftest. Subprocess tests (kill -9, SIGTERM) use
tests/train_worker.py.
"""

from __future__ import annotations

import glob
import json
import math
import os
import signal
import subprocess
import sys
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import train_worker
from jaxscore.train import (
    CheckpointFallbackWarning,
    Checkpointer,
    CheckpointStructureError,
    ConfigMismatchError,
    Hook,
    check_config,
    NonFiniteError,
    create_train_state,
    ema_decay,
    ema_update,
    ema_warmup_from_config,
    init_train_state,
    lr_at,
    make_lr_schedule,
    make_optimizer,
    make_parallel,
    multi_step,
    read_metrics,
    restore_params,
    train,
    train_step,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "train_worker.py")

INIT_FN, LOSS_FN, MAKE_BATCH_FN = train_worker.problem()
BATCH_FN = MAKE_BATCH_FN()
# One optimizer object for every run: compiled steps are cached on (loss_fn, tx) identity,
# so the loop tests compile each (mode, K) once. Settings = train_worker.make_config()'s.
TX = make_optimizer(train_worker.make_config())


def tree_equal(a, b) -> bool:
    """Bit-for-bit equality as a bool (for "differs" checks; equalities use chex.assert_trees_all_equal)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def max_rel_err(a, b) -> float:
    """max over leaves of ||a - b|| / ||b|| (leaf-wise relative L2 error)."""
    errs = []
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        errs.append(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))
    return max(errs)


def stacked_batches(start, k, batch_fn=BATCH_FN):
    bs = [batch_fn(s) for s in range(start, start + k)]
    return jax.tree.map(lambda *xs: np.stack(xs), *bs)


# ---------------------------------------------------------------- optimizer / EMA


def test_optimizer_matches_hand_written_clipped_adam_with_warmup():
    """make_optimizer == clip_by_global_norm(1) -> Adam(0.9, 0.999, 1e-8) at lr*min(n/warmup, 1)."""
    lr, warmup, clip = 0.1, 4, 1.0
    tx = make_optimizer({"optim": {"lr": lr, "warmup": warmup, "grad_clip": clip}})
    rng = np.random.default_rng(0)
    p = {"w": rng.normal(size=(3,)).astype(np.float32), "b": rng.normal(size=(2, 2)).astype(np.float32)}
    state = tx.init(p)
    update = jax.jit(tx.update)
    m = jax.tree.map(np.zeros_like, p)
    v = jax.tree.map(np.zeros_like, p)
    ref = jax.tree.map(np.array, p)
    for n in range(6):
        g = jax.tree.map(lambda x: (rng.normal(size=x.shape) * 3).astype(np.float32), p)
        upd, state = update(g, state, p)
        p = optax.apply_updates(p, upd)
        # reference, float64
        norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree.leaves(g)))
        g64 = jax.tree.map(lambda x: np.asarray(x, np.float64) * min(1.0, clip / norm), g)
        m = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, m, g64)
        v = jax.tree.map(lambda a, b: 0.999 * a + 0.001 * b * b, v, g64)
        rate = lr * min(n / warmup, 1.0)
        ref = jax.tree.map(
            lambda r, a, b: r - rate * (a / (1 - 0.9 ** (n + 1))) / (np.sqrt(b / (1 - 0.999 ** (n + 1))) + 1e-8),
            ref,
            m,
            v,
        )
        assert max_rel_err(p, ref) < 1e-5
    # score_sde defaults
    sched = make_lr_schedule(None)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(2500)), 1e-4, rtol=1e-6)
    np.testing.assert_allclose(float(sched(10**6)), 2e-4, rtol=1e-6)
    assert float(make_lr_schedule(None, warmup=0)(0)) == pytest.approx(2e-4)
    # the host-side twin used for logging. optax evaluates end + (init - end) * (1 - n/w) in
    # float32, which cancels for small n: absolute error ~ ulp(2e-4) ~ 1e-11.
    for n in (0, 1, 2500, 5000, 7000):
        assert lr_at(n) == pytest.approx(float(sched(n)), rel=1e-6, abs=1e-10)


def test_optimizer_rejects_unknown_settings():
    with pytest.raises(TypeError, match="unknown setting"):
        make_optimizer(learning_rate=1.0)
    with pytest.raises(ValueError, match="optim.optimizer"):
        make_optimizer({"optim": {"optimizer": "sgd"}})


def test_ema_update_closed_form():
    """n updates toward constant p: ema_n = r^n ema_0 + (1 - r^n) p."""
    r, n = 0.9, 7
    e0, p = {"a": jnp.array([1.0, -2.0])}, {"a": jnp.array([3.0, 0.5])}
    e = e0
    for _ in range(n):
        e = ema_update(e, p, r)
    np.testing.assert_allclose(e["a"], r**n * e0["a"] + (1 - r**n) * p["a"], rtol=1e-6)


def test_ema_decay_warmup_formula():
    """d_n = min(rate, (1+n)/(10+n)) with warm-up (tf.train.ExponentialMovingAverage's num_updates
    rule), rate without; the warm-up ends where (1+n)/(10+n) = rate, n = (10 rate - 1)/(1 - rate)."""
    rate = 0.999
    for n in (0, 1, 9, 300, 8989, 8990, 8991, 10**6):
        assert float(ema_decay(n, rate)) == pytest.approx(min(rate, (1 + n) / (10 + n)), rel=1e-6)
        assert float(ema_decay(jnp.int32(n), rate, warmup=False)) == pytest.approx(rate, rel=1e-7)
    assert float(ema_decay(0, rate)) == pytest.approx(0.1)
    assert float(ema_decay(8989, rate)) < rate and float(ema_decay(8991, rate)) == pytest.approx(rate)
    from jaxscore.config import base_config

    assert base_config().optim.ema_warmup is True  # the default every config starts from
    assert ema_warmup_from_config(None) is True
    assert ema_warmup_from_config({"optim": {"ema_warmup": False}}) is False
    with pytest.raises(ValueError, match=r"optim.ema_warmup: expected True or False, got 'yes'"):
        ema_warmup_from_config({"optim": {"ema_warmup": "yes"}})


def test_ema_warmup_leaves_almost_no_weight_on_the_init_after_300_steps():
    """300 steps, ema_rate=0.999. The EMA is linear in the initial EMA and does not feed back into
    training, so two runs whose initial EMAs differ by 1 end with EMAs differing by exactly the
    weight left on the init, prod_{n<300} d_n: 0.999**300 = 0.741 without warm-up, and
    prod (1+n)/(10+n) = 1/binom(309, 9) = 1.6e-17 with it. And the warmed-up EMA is far closer to
    the live parameters (measured: ||ema - params|| 0.18 vs 1.55; ||init - params|| 1.96)."""
    rate, n = 0.999, 300
    batches = stacked_batches(0, n)
    state = init_train_state(0, INIT_FN, TX)
    shifted = state.replace(ema_params=jax.tree.map(lambda x: x + 1.0, state.ema_params))
    weight_on_init, distance = {}, {}
    for warmup in (True, False):
        par = make_parallel("single", loss_fn=LOSS_FN, tx=TX, ema_rate=rate, ema_warmup=warmup)
        a, _ = par.step(par.put_state(state), par.put_batches(batches))
        b, _ = par.step(par.put_state(shifted), par.put_batches(batches))
        chex.assert_trees_all_equal(a.params, b.params)  # the EMA never feeds back
        diffs = np.concatenate([np.ravel(np.asarray(y) - np.asarray(x))
                                for x, y in zip(jax.tree.leaves(a.ema_params), jax.tree.leaves(b.ema_params))])
        weight_on_init[warmup] = diffs
        distance[warmup] = max_rel_err(a.ema_params, a.params)
    expect = {False: rate**n, True: math.prod(min(rate, (1 + k) / (10 + k)) for k in range(n))}
    assert expect[True] == pytest.approx(1 / math.comb(n + 9, 9), rel=1e-9)
    # float32: each of the 300 updates rounds at ~6e-8 relative -> ~1e-5 abs on 0.74 (observed 4e-6)
    np.testing.assert_allclose(weight_on_init[False], expect[False], atol=2e-5)
    np.testing.assert_allclose(weight_on_init[True], expect[True], atol=2e-5)
    assert distance[True] < 0.25 * distance[False]


# ---------------------------------------------------------------- the pure step


@pytest.fixture(scope="module")
def state0():
    return init_train_state(0, INIT_FN, TX), TX  # the same compiled init as train()


def _single(loss_fn=LOSS_FN):
    """The loop's own compiled single-device program (K from the batches' leading axis)."""
    return make_parallel("single", loss_fn=loss_fn, tx=TX, ema_rate=0.9)


def test_train_step_uses_per_example_fold_in_keys_and_updates_ema(state0):
    """Row i of step n sees key fold_in(fold_in(key, n), i) and a one-row batch; loss/aux are row means."""
    state, tx = state0

    def loss_fn(params, key, batch):
        assert batch["x"].shape[0] == 1  # called per example (under vmap)
        u = jax.random.uniform(key)
        return jnp.sum(params["params"]["Dense_1"]["bias"]) * u, {"u": u, "ux": u * batch["x"][0, 0]}

    step = jax.jit(lambda s, b: train_step(s, b, loss_fn=loss_fn, tx=tx, ema_rate=0.5, ema_warmup=False))
    s1, m1 = step(state, BATCH_FN(0))
    s2, m2 = step(s1, BATCH_FN(1))
    base = jax.random.wrap_key_data(state.key)
    for n, m in ((0, m1), (1, m2)):
        x = BATCH_FN(n)["x"]
        u = np.array([float(jax.random.uniform(jax.random.fold_in(jax.random.fold_in(base, n), i))) for i in range(len(x))])
        np.testing.assert_allclose(float(m["u"]), u.mean(), rtol=1e-6)
        np.testing.assert_allclose(float(m["ux"]), np.mean(u * x[:, 0]), rtol=1e-5)  # row i paired with key i
    assert int(s2.step) == 2 and int(m2["skipped"]) == 0
    # ema_2 = 0.5 * ema_1 + 0.5 * params_2, ema_1 = 0.5 * params_0 + 0.5 * params_1
    expect = jax.tree.map(lambda p0, p1, p2: 0.25 * p0 + 0.25 * p1 + 0.5 * p2, state.params, s1.params, s2.params)
    assert max_rel_err(s2.ema_params, expect) < 1e-6
    # with the warm-up (the default) the decays are d_0 = min(0.5, 1/10), d_1 = min(0.5, 2/11):
    # ema_1 = 0.1 p0 + 0.9 p1, ema_2 = 2/11 ema_1 + 9/11 p2 (same params: the EMA does not feed back)
    warm_step = jax.jit(lambda s, b: train_step(s, b, loss_fn=loss_fn, tx=tx, ema_rate=0.5)[0])
    w2 = warm_step(warm_step(state, BATCH_FN(0)), BATCH_FN(1))
    chex.assert_trees_all_equal(w2.params, s2.params)
    expect = jax.tree.map(lambda p0, p1, p2: 2 / 11 * (0.1 * p0 + 0.9 * p1) + 9 / 11 * p2,
                          state.params, s1.params, s2.params)
    assert max_rel_err(w2.ema_params, expect) < 1e-6


def test_multi_step_equals_repeated_train_step(state0):
    """K steps in one lax.scan call == K calls of one step (step keys depend only on step)."""
    state, _ = state0
    par = _single()
    s = par.put_state(state)  # a copy: the step donates its input
    for i in range(4):
        s, _ = par.step(s, par.put_batches(stacked_batches(i, 1)))
    sk, mk = par.step(par.put_state(state), par.put_batches(stacked_batches(0, 4)))
    chex.assert_shape(mk["loss"], (4,))
    # a scan body vs top-level ops: XLA may fuse differently -> a few ulps at most
    assert max_rel_err(sk.params, s.params) < 1e-6
    assert int(sk.step) == 4


def test_nonfinite_step_is_skipped(state0):
    state, _ = state0
    par = _single()
    s1, _ = par.step(par.put_state(state), par.put_batches(stacked_batches(0, 1)))
    bad = stacked_batches(1, 1)
    bad["x"][0, 3, 0] = np.nan
    s1 = jax.tree.map(np.asarray, s1)  # keep a host copy: the next call donates s1
    s2, m2 = par.step(par.put_state(s1), par.put_batches(bad))
    assert int(m2["skipped"][0]) == 1 and not np.isfinite(float(m2["loss"][0]))
    assert int(s2.step) == int(s1.step) + 1
    chex.assert_trees_all_equal((s2.params, s2.ema_params, s2.opt_state), (s1.params, s1.ema_params, s1.opt_state),
                                strict=True)
    s2 = jax.tree.map(np.asarray, s2)
    s3, m3 = par.step(par.put_state(s2), par.put_batches(stacked_batches(2, 1)))
    assert int(m3["skipped"][0]) == 0 and not tree_equal(s3.params, s2.params)


def test_loss_fn_contract_errors(state0):
    state, tx = state0
    with pytest.raises(ValueError, match="scalar loss"):
        train_step(state, BATCH_FN(0), loss_fn=lambda p, k, b: b["x"], tx=tx, ema_rate=0.9)
    with pytest.raises(TypeError, match=r"\(loss, aux_dict\)"):
        train_step(state, BATCH_FN(0), loss_fn=lambda p, k, b: (1.0, 2.0, 3.0), tx=tx, ema_rate=0.9)
    with pytest.raises(ValueError, match="leading"):
        multi_step(state, {"x": np.zeros((2, 8, 3)), "y": np.zeros((3, 8, 3))}, loss_fn=LOSS_FN, tx=tx, ema_rate=0.9)


# ---------------------------------------------------------------- parallel modes


def _apply(params, x):
    # the worker's MLP: Dense(16) -> silu -> Dense(3)
    p = params["params"]
    h = jax.nn.silu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


def _det_loss(params, key, batch):
    """Deterministic given the batch (noise pre-drawn into it); aux u = uniform(step key)."""
    loss = jnp.mean((_apply(params, batch["x"] + 0.1 * batch["n"]) - batch["y"]) ** 2)
    return loss, {"u": jax.random.uniform(key)}


def test_pmap_and_sharded_match_single_device(state0):
    """Same global batch of 16 on 8 devices: params agree with one device to 1e-5 relative.

    The math is identical; only float32 summation order differs (per-device partial means
    + all-reduce vs one reduction), each op contributing ~1e-7 relative error, amplified
    mildly over 6 Adam steps -> 1e-5 relative tolerance (observed ~1e-6).
    Also: in every mode global row i draws from fold_in(fold_in(key, step), i) (logged aux =
    the mean over the 16 rows); an Inf on one replica skips the step on all.
    """
    state, tx = state0
    rng = np.random.default_rng(3)
    batches = [{k: rng.normal(size=(3, 16, 3)).astype(np.float32) for k in ("x", "y", "n")} for _ in range(2)]
    batches[1]["x"][1, 5, 1] = np.inf  # step 4, row 5: lands on device 2 of 8
    k_base = jax.random.wrap_key_data(state.key)
    step_keys = [jax.random.fold_in(k_base, n) for n in range(6)]
    results = {}
    for mode in ("single", "pmap", "sharded"):
        par = make_parallel(mode, loss_fn=_det_loss, tx=tx, ema_rate=0.9)
        st = par.put_state(state)
        ms = []
        for b in batches:
            st, m = par.step(st, par.put_batches(b))
            ms.append(par.fetch_metrics(m))
        skipped = np.concatenate([m["skipped"] for m in ms])
        assert skipped.tolist() == [0, 0, 0, 0, 1, 0], mode
        if mode == "pmap":  # replicas stayed identical (all skipped the same step)
            for leaf in jax.tree.leaves(st):
                shards = [np.asarray(sh.data) for sh in leaf.addressable_shards]
                assert all(np.array_equal(shards[0], x) for x in shards[1:])
        expect = [np.mean([float(jax.random.uniform(jax.random.fold_in(k, i))) for i in range(16)]) for k in step_keys]
        np.testing.assert_allclose(np.concatenate([m["u"] for m in ms]), expect, rtol=1e-6, err_msg=mode)
        results[mode] = par.unreplicate(st)
    ref = results["single"]
    assert int(ref.step) == 6
    for mode in ("pmap", "sharded"):
        got = results[mode]
        assert int(got.step) == 6
        assert max_rel_err(got.params, ref.params) < 1e-5, mode
        assert max_rel_err(got.ema_params, ref.ema_params) < 1e-5, mode
        assert max_rel_err(got.opt_state, ref.opt_state) < 1e-5, mode


# slow: 20 s on 2 cores; the deterministic-loss equality across modes stays in the default suite
@pytest.mark.slow
def test_stochastic_dsm_loss_same_params_in_all_modes():
    """Continuous-time DSM (random t and eps per example) on a ring mixture, global batch 16 on
    8 devices: single == pmap == sharded to 1e-5 relative, because row i's noise comes from
    fold_in(step key, i) whatever device holds it. Same float-order argument as the
    deterministic test above (observed ~1e-7). Control: a different training key moves the
    params by far more than the tolerance, so the test sees the noise."""
    from jaxscore import losses
    from jaxscore.data.toy import ring_mixture
    from jaxscore.models import ScoreMLP
    from jaxscore.sde import VPSDE

    sde = VPSDE()
    model = ScoreMLP(hidden_dims=(32, 32), embedding="fourier", embedding_dim=16)

    def loss_fn(params, key, batch):
        apply = lambda p, x, t: model.apply(p, x, t)  # noqa: E731
        return losses.continuous_dsm_loss(apply, params, key, batch["x"], sde, parameterization="eps")

    def init_fn(key):
        return model.init(key, jnp.zeros((1, 2)), jnp.full((1,), 0.5))

    tx = optax.adam(1e-2)
    # 4 calls x 1 step x 16 rows (K=1: no scan, so the three programs compile quickly)
    x = np.asarray(ring_mixture().sample(jax.random.key(1), 4 * 16), np.float32).reshape(4, 1, 16, 2)
    batches = [{"x": x[i]} for i in range(4)]

    def run(mode):
        par = make_parallel(mode, loss_fn=loss_fn, tx=tx, ema_rate=0.9)
        st = par.put_state(init_train_state(0, init_fn, tx))
        for b in batches:
            st, m = par.step(st, par.put_batches(b))
        assert np.all(np.isfinite(par.fetch_metrics(m)["loss"]))
        return par.unreplicate(st)

    ref = run("single")
    for mode in ("pmap", "sharded"):
        got = run(mode)
        assert max_rel_err(got.params, ref.params) < 1e-5, mode
        assert max_rel_err(got.ema_params, ref.ema_params) < 1e-5, mode
    # control: same init, different noise key (the state key is the second half of the seed split)
    other = init_train_state(0, init_fn, tx)
    par = make_parallel("single", loss_fn=loss_fn, tx=tx, ema_rate=0.9)
    st = par.put_state(other.replace(key=jax.random.key_data(jax.random.key(123))))
    for b in batches:
        st, _ = par.step(st, par.put_batches(b))
    assert max_rel_err(st.params, ref.params) > 1e-3


def test_batch_size_must_divide_devices(state0):
    state, tx = state0
    par = make_parallel("sharded", loss_fn=_det_loss, tx=tx, ema_rate=0.9)
    assert par.local_batch_size(16) == 16
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        par.local_batch_size(12)
    with pytest.raises(ValueError, match="training.mode"):
        make_parallel("dp", loss_fn=_det_loss, tx=tx, ema_rate=0.9)


@pytest.mark.parametrize("mode", ["single", "pmap", "sharded"])
def test_mode_placement_round_trips_bit_for_bit(state0, mode):
    """put_state -> to_checkpoint (the saved form) -> from_checkpoint -> unreplicate gives the host
    state back exactly in every mode, and the saved form is unreplicated (same shapes as the host
    state), which is what lets a checkpoint written in one mode restore in another."""
    from jaxscore.train import Parallel

    state, tx = state0
    par = make_parallel(mode, loss_fn=_det_loss, tx=tx, ema_rate=0.9)
    assert isinstance(par, Parallel) and par.name == mode
    host = jax.tree.map(np.asarray, state)
    saved = par.to_checkpoint(par.put_state(host))
    chex.assert_trees_all_equal_shapes(saved, host)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, saved), host, strict=True)
    chex.assert_trees_all_equal(jax.tree.map(np.asarray, par.unreplicate(par.from_checkpoint(saved))), host,
                                strict=True)
    with pytest.raises(ValueError, match=r"\[K, B, \.\.\.\]"):
        par.put_batches({"x": np.zeros((16,), np.float32)})  # one [B] batch, not [K, B]


@pytest.mark.parametrize("n_iters,k,ckpt_every,hook_every", [(23, 4, 5, 0), (23, 4, 5, 3), (10, 1, 7, 4), (17, 50, 6, 0)])
def test_schedule_cuts_calls_at_checkpoint_and_hook_steps(n_iters, k, ckpt_every, hook_every):
    """Calls tile [start, n_iters) with at most K steps each and end at every checkpoint and hook
    step (brute force: walk step by step, end a call at a boundary or after K steps)."""
    from jaxscore.train.loop import _normalize_hooks, _Schedule
    from jaxscore.train.settings import LoopSettings

    settings = LoopSettings.from_config({"training": {"n_iters": n_iters, "steps_per_call": k,
                                                      "checkpoint_every": ckpt_every, "eval_every": 0}})
    schedule = _Schedule(settings, _normalize_hooks([Hook(fn=lambda st, s: None, every=hook_every)], 0))
    for start in (0, 2, 5):
        expect, first = [], start
        for step in range(start + 1, n_iters + 1):
            boundary = step % ckpt_every == 0 or (hook_every and step % hook_every == 0) or step == n_iters
            if boundary or step - first == k:
                expect.append((first, step - first))
                first = step
        assert list(schedule.calls(start)) == expect


def test_next_call_batches_are_built_before_the_current_call_is_read(tmp_path):
    """Prefetch order: batch_fn for the call starting at step s runs right after the call ending at
    s is dispatched, before its metrics are fetched, its checkpoint issued and its hooks run; and
    no batch past n_iters is built."""
    events = []

    def batch_fn(step):
        events.append(("batch", step))
        return BATCH_FN(step)

    hook = Hook(fn=lambda st, s: events.append(("hook", s)), every=2, at_end=False)
    _train(tmp_path, batch_fn=batch_fn, eval_fns=[hook], n_iters=6, steps_per_call=2, checkpoint_every=100)
    assert events == [("batch", 0), ("batch", 1), ("batch", 2), ("batch", 3), ("hook", 2),
                      ("batch", 4), ("batch", 5), ("hook", 4), ("hook", 6)]


# ---------------------------------------------------------------- checkpoints


def _small_state(value: float):
    tx = make_optimizer(lr=1e-3, warmup=0)
    params = {"a": jnp.full((3, 4), value), "b": {"c": jnp.arange(5.0) + value}}
    return create_train_state(jax.random.key(0), params, tx)


def test_checkpoint_retention_and_exact_roundtrip(tmp_path):
    ck = Checkpointer(tmp_path, save_every=2, keep_last=2, keep_every=4)
    states = {}
    for s in range(1, 11):
        st = _small_state(float(s)).replace(step=jnp.int32(s))
        states[s] = st
        ck.maybe_save(s, st, config={"x": 1})
    ck.wait()
    assert ck.all_steps() == [4, 8, 10]  # last 2 of {2,4,6,8,10} + multiples of 4
    abstract = jax.eval_shape(lambda: states[10])
    got, meta = ck.restore_latest(abstract)
    chex.assert_trees_all_equal(got, states[10], strict=True)
    assert meta["data_position"] == 10 and meta["config"] == {"x": 1}
    got4, _ = ck.restore(4, abstract)
    chex.assert_trees_all_equal(got4, states[4], strict=True)
    ck.close()


def _corrupt_garbage(step_dir):
    for f in glob.glob(os.path.join(step_dir, "state", "**"), recursive=True):
        if os.path.isfile(f):
            with open(f, "wb") as fh:
                fh.write(b"\x00garbage")


def _corrupt_partial(step_dir):
    import shutil

    shutil.rmtree(os.path.join(step_dir, "state", "d"))  # the array data chunks


def _corrupt_fingerprint(step_dir):
    """Stands in for silently flipped bytes: the stored checksums no longer match the data."""
    path = os.path.join(step_dir, "meta", "metadata")
    with open(path) as f:
        meta = json.load(f)
    leaf = sorted(meta["fingerprint"])[0]
    meta["fingerprint"][leaf][0] = (meta["fingerprint"][leaf][0] + 1) % 2**32
    with open(path, "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize(
    "dtype", ["float32", "float64", "bfloat16", "float16", "int8", "uint8", "int32", "uint32", "int64", "bool"]
)
def test_host_fingerprint_equals_device_checksums(dtype, monkeypatch):
    """The host (numpy) checksums are the device (XLA) ones, across host chunk boundaries; one
    flipped bit changes the sum, and swapping two equal-sum elements changes the weighted sum."""
    from jaxscore.train import checkpoint as ckpt

    monkeypatch.setattr(ckpt, "_HOST_CHUNK", 7)  # several chunks, the last one partial
    rng = np.random.default_rng(0)
    with jax.enable_x64(dtype in ("float64", "int64")):
        if dtype == "bool":
            x = jnp.asarray(rng.integers(0, 2, (5, 6)).astype(bool))
        else:
            x = jnp.asarray(rng.normal(size=(5, 6)) * 50, dtype=dtype)
        device = [int(v) for v in np.asarray(ckpt._leaf_checksums(x))]
        assert ckpt._leaf_fingerprint(x) == device
        assert ckpt._leaf_fingerprint(np.asarray(x)) == device
        assert ckpt._leaf_fingerprint(x[0, 0]) == [int(v) for v in np.asarray(ckpt._leaf_checksums(x[0, 0]))]
        bits = np.asarray(x).copy().reshape(-1).view(np.uint8)
        bits[3] ^= 1
        assert ckpt._leaf_fingerprint(bits.view(np.asarray(x).dtype).reshape(5, 6))[0] != device[0]
        swapped = np.asarray(x).copy()
        swapped[0, [0, 1]] = swapped[0, [1, 0]]
        if swapped[0, 0] != swapped[0, 1]:
            got = ckpt._leaf_fingerprint(swapped)
            assert got[0] == device[0] and got[1] != device[1]


def test_fingerprint_of_sharded_and_replicated_arrays():
    """On 8 fake devices: an array sharded over devices (gathered on the host) and a replicated
    one (one local copy read) fingerprint like the same values on one device."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jaxscore.train.checkpoint import fingerprint

    mesh = Mesh(np.array(jax.devices()[:8]), ("d",))
    x = jnp.arange(64 * 3, dtype=jnp.float32).reshape(64, 3) / 7
    tree = {"sharded": jax.device_put(x, NamedSharding(mesh, PartitionSpec("d"))),
            "replicated": jax.device_put(x, NamedSharding(mesh, PartitionSpec()))}
    assert fingerprint(tree) == fingerprint({"sharded": x, "replicated": x})


@pytest.mark.parametrize("corrupt", [_corrupt_garbage, _corrupt_partial, _corrupt_fingerprint])
def test_corrupt_latest_checkpoint_falls_back_with_warning(tmp_path, corrupt):
    ck = Checkpointer(tmp_path, save_every=1, keep_last=3, async_save=False)
    for s in (1, 2, 3):
        ck.save(s, _small_state(float(s)).replace(step=jnp.int32(s)))
    ck.close()
    corrupt(os.path.join(tmp_path, "checkpoints", "3"))
    ck = Checkpointer(tmp_path, save_every=1)
    abstract = jax.eval_shape(lambda: _small_state(0.0))
    with pytest.warns(CheckpointFallbackWarning, match="step 3"):
        got, meta = ck.restore_latest(abstract)
    assert meta["step"] == 2
    chex.assert_trees_all_equal(got, _small_state(2.0).replace(step=jnp.int32(2)), strict=True)
    assert ck.all_steps() == [1, 2]  # step 3 moved aside, so it can be re-saved
    assert os.listdir(os.path.join(tmp_path, "corrupt_checkpoints"))[0].startswith("3-")
    ck.save(3, _small_state(3.0))
    ck.close()


def test_structure_change_is_an_error_not_a_fallback(tmp_path):
    ck = Checkpointer(tmp_path, save_every=1, async_save=False)
    ck.save(1, _small_state(1.0))
    other = create_train_state(jax.random.key(0), {"a": jnp.zeros((3, 5))}, make_optimizer())
    with pytest.raises(CheckpointStructureError, match="does not fit"):
        ck.restore_latest(jax.eval_shape(lambda: other))
    assert ck.all_steps() == [1]
    ck.close()


def test_unfinished_tmp_checkpoint_is_ignored_and_cleaned(tmp_path):
    """Orbax commits by renaming <step>.orbax-checkpoint-tmp-<ts> -> <step>; a leftover tmp dir
    (a save killed mid-write) is not a step and is removed when the next manager opens."""
    ck = Checkpointer(tmp_path, save_every=1, async_save=False)
    ck.save(1, _small_state(1.0))
    ck.close()
    tmp = os.path.join(tmp_path, "checkpoints", "2.orbax-checkpoint-tmp-1234")
    os.makedirs(os.path.join(tmp, "state"))
    with open(os.path.join(tmp, "state", "manifest.ocdbt"), "wb") as f:
        f.write(b"half written")
    ck = Checkpointer(tmp_path, save_every=1)
    assert ck.all_steps() == [1]
    got, meta = ck.restore_latest(jax.eval_shape(lambda: _small_state(0.0)))
    assert meta["step"] == 1
    ck.close()
    assert not os.path.exists(tmp)


# ---------------------------------------------------------------- the loop


def _train(workdir, batch_fn=BATCH_FN, eval_fns=(), allow_config_change=False, **training):
    cfg = train_worker.make_config(**training)
    return train(
        cfg,
        workdir,
        init_fn=INIT_FN,
        loss_fn=LOSS_FN,
        batch_fn=batch_fn,
        eval_fns=eval_fns,
        allow_config_change=allow_config_change,
        tx=TX,
    )


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """Uninterrupted 12-step single-device run (checkpoint every 5, log every 2)."""
    wd = tmp_path_factory.mktemp("ref")
    calls = []
    hook = Hook(fn=lambda st, s: calls.append((s, int(st.step))) or {"ema_norm": np.sqrt(sum(np.sum(np.asarray(x) ** 2) for x in jax.tree.leaves(st.ema_params)))},
                every=4, name="h")
    res = _train(wd, n_iters=12, eval_fns=[hook])
    return wd, res, calls


def test_loop_logs_hooks_and_checkpoints(reference_run):
    wd, res, calls = reference_run
    assert res.step == 12 and not res.preempted and res.resumed_from is None
    assert calls == [(4, 4), (8, 8), (12, 12)]
    recs = read_metrics(os.path.join(wd, "metrics.jsonl"))
    train_steps = [r["step"] for r in recs if "loss" in r]
    assert train_steps == [2, 4, 6, 8, 10, 12]
    assert all(np.isfinite(r["loss"]) and r["skipped"] == 0 for r in recs if "loss" in r)
    assert [r["step"] for r in recs if "h/ema_norm" in r] == [4, 8, 12]
    assert sorted(int(d) for d in os.listdir(os.path.join(wd, "checkpoints"))) == [10, 12]
    try:
        import tensorboardX  # noqa: F401  (optional dependency: JSONL alone without it)

        assert glob.glob(os.path.join(wd, "tb", "events.out.tfevents.*"))
    except ImportError:
        assert not os.path.exists(os.path.join(wd, "tb"))
    with open(os.path.join(wd, "config.json")) as f:
        assert json.load(f)["training"]["n_iters"] == 12


def test_restore_params_for_inference(reference_run):
    wd, res, _ = reference_run
    ema, step = restore_params(wd, INIT_FN)
    assert step == 12
    chex.assert_trees_all_equal(ema, res.state.ema_params, strict=True)
    assert jax.tree.structure(ema) == jax.tree.structure(res.state.ema_params)
    params, _ = restore_params(wd, which="params")  # no init_fn: structure from the metadata
    chex.assert_trees_all_equal(params, res.state.params, strict=True)
    params10, step10 = restore_params(wd, which="params", step=10)
    assert step10 == 10 and not tree_equal(params10, res.state.params)
    with pytest.raises(CheckpointStructureError, match="do not match"):
        restore_params(wd, train_worker.problem(hidden=8)[0])


def test_interrupted_then_resumed_run_is_bit_identical(tmp_path, reference_run):
    """A run that dies at step 8 (exception mid-run) and is restarted ends bit-identical."""
    _, ref, _ = reference_run

    class Boom(Exception):
        pass

    def dying(step):
        if step == 8:
            raise Boom
        return BATCH_FN(step)

    with pytest.raises(Boom):
        _train(tmp_path, batch_fn=dying, n_iters=12)
    res = _train(tmp_path, n_iters=12)
    assert res.resumed_from == 5 and res.step == 12
    chex.assert_trees_all_equal(res.state, ref.state, strict=True)  # params, EMA, optimizer state, key, step
    steps = [r["step"] for r in read_metrics(os.path.join(tmp_path, "metrics.jsonl"))]
    assert steps == sorted(set(steps))  # the redone steps were not logged twice


def test_grouping_and_mode_do_not_change_the_result(tmp_path, reference_run):
    """steps_per_call=4 in sharded mode on 8 devices ~= 1 step per call on one device."""
    _, ref, _ = reference_run
    res = _train(tmp_path, n_iters=12, steps_per_call=4, checkpoint_every=4, mode="sharded")
    assert res.step == 12
    assert max_rel_err(res.state.params, ref.state.params) < 1e-5


def test_resume_across_modes_and_extend_n_iters(tmp_path, reference_run):
    """Checkpoint written in single mode, resumed in pmap mode with a larger n_iters."""
    wd, ref, _ = reference_run
    import shutil

    shutil.copytree(os.path.join(wd, "checkpoints"), os.path.join(tmp_path, "checkpoints"))
    res = _train(tmp_path, n_iters=14, mode="pmap")
    assert res.resumed_from == 12 and res.step == 14
    assert int(res.state.step) == 14 and not tree_equal(res.state.params, ref.state.params)


def _lines(text: str, *prefixes: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(prefixes)]


def test_train_says_what_it_does_without_a_progress_bar(tmp_path, capsys):
    """training.progress=False still prints: the start, resume and end lines, and before the
    at-end hooks a line naming them (printed before the hooks' own output)."""
    wd = str(tmp_path)
    hook = Hook(fn=lambda st, s: print(f"hook ran at {s}"), name="report")
    res = _train(wd, n_iters=4, checkpoint_every=2, eval_fns=[hook])
    out = capsys.readouterr().out
    assert res.step == 4 and _lines(out, "resuming") == []
    assert _lines(out, "training ") == [
        f"training 4 steps (0 -> 4) in {wd}: mode single on 1 device(s), batch 8, 1 step(s) per call; "
        "the first call compiles"]
    lines = out.splitlines()
    final = lines.index("step 4: running final evaluation hooks: report")
    assert lines[final + 1] == "hook ran at 4"
    assert lines[-1] == f"done: step 4, wrote checkpoints to {os.path.join(wd, 'checkpoints')} (latest: step 4)"

    res = _train(wd, n_iters=6, checkpoint_every=2)
    out = capsys.readouterr().out.splitlines()
    assert res.resumed_from == 4
    assert out[0] == f"resuming from step 4 ({wd})"
    assert out[1].startswith("training 2 steps (4 -> 6)")
    assert out[-1] == f"done: step 6, wrote checkpoints to {os.path.join(wd, 'checkpoints')} (latest: step 6)"

    _train(wd, n_iters=6, checkpoint_every=2)  # a finished run: says so, runs nothing
    assert capsys.readouterr().out.splitlines() == [
        f"resuming from step 6 ({wd})",
        "step 6 is already training.n_iters=6: nothing to train",
        f"done: step 6, nothing left to train; checkpoints in {os.path.join(wd, 'checkpoints')}",
    ]


def test_progress_bar_clock_starts_after_the_first_call_and_names_the_final_evaluation(tmp_path, capsys):
    """The bar appears only once the first (compiling) call has returned, starting at the step it
    reached, so its rate and ETA leave the compile out; while the at-end hooks run it says so."""
    from jaxscore.train.loop import _Console

    console = _Console(main=True, bar=True, total=10)
    assert console.bar is None  # nothing drawn (no clock running) before the first call returns
    console.update(3, 3, None)
    assert console.bar.n == 3 and console.bar.format_dict["initial"] == 3  # rate counts later steps only
    console.update(5, 2, None)
    assert console.bar.n == 5
    console.close()

    seen = []
    hook = Hook(fn=lambda st, s: seen.append(capsys.readouterr().err), name="report")
    _train(tmp_path, n_iters=4, checkpoint_every=2, eval_fns=[hook], progress=True)
    err = seen[0] + capsys.readouterr().err
    assert "0/4" not in err and "1/4" in err  # first drawn after call 1 (steps_per_call=1)
    assert "final evaluation" in seen[0]  # shown before the hook ran


def test_config_change_refused_unless_allowed(tmp_path):
    _train(tmp_path, n_iters=4, checkpoint_every=2)
    cfg = train_worker.make_config(n_iters=6)
    cfg.optim.lr = 0.5
    with pytest.raises(ConfigMismatchError, match=r"optim\.lr: saved 0\.01 -> new 0\.5"):
        train(cfg, tmp_path, init_fn=INIT_FN, loss_fn=LOSS_FN, batch_fn=BATCH_FN)
    with pytest.raises(ConfigMismatchError, match="training.batch_size"):
        train(train_worker.make_config(n_iters=6, batch_size=16), tmp_path,
              init_fn=INIT_FN, loss_fn=LOSS_FN, batch_fn=BATCH_FN)
    cfg = train_worker.make_config(n_iters=6)
    cfg.seed = 1
    with pytest.warns(UserWarning, match="changed config"):
        res = train(cfg, tmp_path, init_fn=INIT_FN, loss_fn=LOSS_FN, batch_fn=BATCH_FN, tx=TX,
                    allow_config_change=True)
    assert res.resumed_from == 4 and res.step == 6  # n_iters 4 -> 6 alone is resume-safe


def test_check_config_resume_safe_keys():
    saved = {"seed": 0, "training": {"n_iters": 10, "batch_size": 8}, "sampling": {"steps": 20}}
    new = {"seed": 0, "training": {"n_iters": 99, "batch_size": 8}, "sampling": {"steps": 50}, "eval": {"n": 1}}
    assert check_config(saved, new) == []  # total steps, sampling and eval sections are resume-safe
    with pytest.raises(ConfigMismatchError, match=r"(?s)seed: saved 0 -> new 1.*training.batch_size") as err:
        check_config(saved, {**new, "seed": 1, "training": {"n_iters": 10, "batch_size": 16}})
    # the way out is named for both front ends: the CLI flag and the Python keyword
    assert "--allow-config-change" in str(err.value) and "allow_config_change=True" in str(err.value)


def test_batch_fn_with_wrong_row_count_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"batch_fn\(0\): expected every leaf to have 8 rows"):
        _train(tmp_path, batch_fn=lambda s: {k: np.concatenate([v, v]) for k, v in BATCH_FN(s).items()}, n_iters=2)


def test_corrupt_latest_checkpoint_resume_through_train(tmp_path):
    _train(tmp_path, n_iters=6, checkpoint_every=3)
    _corrupt_garbage(os.path.join(tmp_path, "checkpoints", "6"))
    with pytest.warns(CheckpointFallbackWarning):
        res = _train(tmp_path, n_iters=6, checkpoint_every=3)
    assert res.resumed_from == 3 and res.step == 6


def _nan_after(first_bad, last_bad=None):
    def batch_fn(step):
        b = BATCH_FN(step)
        if step >= first_bad and (last_bad is None or step <= last_bad):
            b = dict(b, x=np.full_like(b["x"], np.nan))
        return b

    return batch_fn


def test_isolated_nonfinite_steps_are_skipped_counted_and_warned_about(tmp_path, capsys):
    """Steps 3 and 4 get a NaN batch (so a NaN loss): both skipped, counted, one warning line per
    log window that had any (windows [2, 4) and [4, 6) of log_every=2), and each record's lr is the
    schedule at the optimizer's own step (optax's count: applied updates only)."""
    import optax

    res = _train(tmp_path, batch_fn=_nan_after(3, 4), n_iters=8, max_consecutive_nonfinite=3)
    assert res.step == 8 and res.total_skipped == 2
    recs = [r for r in read_metrics(os.path.join(tmp_path, "metrics.jsonl")) if "loss" in r]
    assert [r["skipped"] for r in recs] == [0, 1, 1, 0]  # windows (0,1] (2,3]... of 2 steps
    assert all(np.isfinite(r["loss"]) for r in recs)  # logged losses average finite steps
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(res.state.params))
    warnings_out = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning:")]
    assert warnings_out == [
        "warning: 1 of the 2 training steps in [2, 4) had a non-finite loss or gradient and were skipped "
        "(steps 3; 1 skipped in total)",
        "warning: 1 of the 2 training steps in [4, 6) had a non-finite loss or gradient and were skipped "
        "(steps 4; 2 skipped in total)",
    ]
    # applied updates by steps 2, 4, 6, 8: 2, 3 (step 3 skipped), 4 (step 4 skipped), 6
    assert [r["opt_step"] for r in recs] == [2, 3, 4, 6]
    counts = {int(c) for _, c in optax.tree_utils.tree_get_all_with_path(res.state.opt_state, "count")}
    assert counts == {6}
    cfg = train_worker.make_config()
    assert [r["lr"] for r in recs] == [pytest.approx(lr_at(n, cfg)) for n in (2, 3, 4, 6)]


def test_consecutive_nonfinite_limit_stops_with_checkpoint_intact(tmp_path):
    with pytest.raises(NonFiniteError, match=r"3 consecutive training steps \(7\.\.9\).*step 5.*intact"):
        _train(tmp_path, batch_fn=_nan_after(7), n_iters=20, max_consecutive_nonfinite=3)
    ck = Checkpointer(tmp_path)
    assert ck.all_steps() == [5]
    state, meta = ck.restore_latest(jax.eval_shape(lambda: create_train_state(
        jax.random.key(0), INIT_FN(jax.random.key(0)), make_optimizer())))
    assert meta["step"] == 5 and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.params))
    ck.close()


# ---------------------------------------------------------------- interrupts


class _SigintNotHandled(Exception):
    pass


@pytest.fixture
def sigint_guard():
    """SIGINT raises _SigintNotHandled unless train installs its own handler (so a failure here
    fails the test instead of interrupting pytest); the previous handler comes back after."""

    def not_handled(signum, frame):
        raise _SigintNotHandled

    previous = signal.signal(signal.SIGINT, not_handled)
    yield not_handled
    signal.signal(signal.SIGINT, previous)


def _interrupting(at_step, times=1):
    def batch_fn(step):
        if step == at_step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return BATCH_FN(step)

    return batch_fn


def test_sigint_saves_a_checkpoint_and_resume_is_bit_identical(tmp_path, reference_run, sigint_guard, capsys):
    """Ctrl-C while the batches of step 7 are built (the call ending at 7 is running): the loop
    saves step 7 (cadence 5 alone would not), prints where, returns preempted with exit code 130,
    restores the previous handler; rerunning continues to the uninterrupted run's state exactly."""
    _, ref, _ = reference_run
    res = _train(tmp_path, batch_fn=_interrupting(7), n_iters=12)
    assert signal.getsignal(signal.SIGINT) is sigint_guard
    assert res.preempted and res.step == 7 and res.stop_signal == signal.SIGINT and res.exit_code == 130
    ck = Checkpointer(tmp_path)
    assert ck.all_steps() == [5, 7]
    ck.close()
    ckpt_dir = os.path.join(tmp_path, "checkpoints")
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"SIGINT at step 7: saved checkpoint 7 to {os.path.join(ckpt_dir, '7')}; run the same command again "
        "to resume (exit code 130)")
    res = _train(tmp_path, n_iters=12)
    assert res.resumed_from == 7 and res.step == 12 and not res.preempted and res.exit_code == 0
    chex.assert_trees_all_equal(res.state, ref.state, strict=True)


def test_second_sigint_aborts_without_saving(tmp_path, sigint_guard):
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, batch_fn=_interrupting(7, times=2), n_iters=12)
    assert signal.getsignal(signal.SIGINT) is sigint_guard
    ck = Checkpointer(tmp_path)
    assert ck.all_steps() == [5]
    ck.close()


def test_exit_codes():
    from jaxscore.train import TrainResult

    def result(preempted, sig):
        return TrainResult(state=None, step=3, preempted=preempted, resumed_from=None, total_skipped=0,
                           workdir="w", stop_signal=sig)

    assert result(False, None).exit_code == 0
    assert result(True, signal.SIGTERM).exit_code == 143 == 128 + signal.SIGTERM
    assert result(True, signal.SIGINT).exit_code == 130 == 128 + signal.SIGINT


# ---------------------------------------------------------------- real signals (subprocesses)


def _worker(workdir, *extra, timeout=240):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, WORKER, "--workdir", str(workdir), *map(str, extra)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO,
    )


def _result(proc):
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no RESULT line; rc={proc.returncode}\nstdout={proc.stdout[-2000:]}\nstderr={proc.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _params_npz(workdir):
    with np.load(os.path.join(workdir, "final_params.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    """kill -9 right after the step-10 save was issued (the async write is usually still in
    flight), rerun with the same workdir: final params equal an uninterrupted run exactly."""
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = _worker(ref_dir, "--n_iters", 20)
    assert _result(ref)["step"] == 20
    killed = _worker(run_dir, "--n_iters", 20, "--kill_at", 11, "--signal", "KILL")
    assert killed.returncode == -9, killed.stderr[-2000:]
    # atomicity: every directory named like a step is a complete, restorable checkpoint
    names = os.listdir(run_dir / "checkpoints")
    assert all(n.isdigit() or ".orbax-checkpoint-tmp" in n for n in names), names
    resumed = _worker(run_dir, "--n_iters", 20)
    r = _result(resumed)
    assert r["step"] == 20 and r["resumed_from"] in (5, 10)
    a, b = _params_npz(ref_dir), _params_npz(run_dir)
    chex.assert_trees_all_equal(a, b, strict=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [("TERM", 143), ("INT", 130)])
def test_sigterm_or_sigint_saves_and_exits_with_its_code(tmp_path, sig, code):
    """A real signal to a training process: checkpoint at the step reached, one line saying where,
    exit status 128 + signal number (the worker exits with TrainResult.exit_code, as the CLI does)."""
    proc = _worker(tmp_path, "--n_iters", 20, "--checkpoint_every", 100, "--kill_at", 7, "--signal", sig)
    assert proc.returncode == code, proc.stderr[-3000:]
    r = _result(proc)
    assert r["preempted"] and r["step"] == 7
    assert f"SIG{sig} at step 7: saved checkpoint 7 to {os.path.join(tmp_path, 'checkpoints', '7')}" in proc.stdout
    ck = Checkpointer(tmp_path)
    assert ck.all_steps() == [7]  # saved at the preemption step (cadence 100 alone would not)
    ck.close()
    r2 = _result(_worker(tmp_path, "--n_iters", 9, "--checkpoint_every", 100))
    assert r2["resumed_from"] == 7 and r2["step"] == 9 and not r2["preempted"]
