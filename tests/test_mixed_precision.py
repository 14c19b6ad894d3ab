r"""Mixed precision: ``model.dtype = "bfloat16"`` (bfloat16 activations and convs, float32 params,
optimizer state, loss reduction, embeddings, normalisation statistics and output).

Tolerances. bfloat16 keeps 8 significant bits: unit roundoff :math:`u = 2^{-8} \approx 3.9\times
10^{-3}`. Each rounded layer (input, weight and output rounding) adds a relative error of a few
``u``; over the ~30 layers on the digits U-Net's longest path these add like a random walk,
:math:`\sim\sqrt{L}\,u \approx 2\%` of an activation. The loss is a mean of many squared
residuals whose rounding errors average out: it moves by well under ``u`` (toy MLP) to ~``u``
(digits U-Net). A gradient entry is a sum of products of forward activations and backward
cotangents, each ~2% off, so the gradient vector moves by a few per cent in L2 (digits U-Net:
6-7%) while its direction is kept (1 - cosine ~ 2e-3). Entries whose exact value is 0 (the
attention key bias: softmax is shift-invariant) have no relative error to speak of, so the
comparisons are global (L2, cosine), not per leaf. Each bound is 3-10x the measured error
(stated at the test); they catch a wrong policy of the gross kind (parameters or optimizer state
in bfloat16, a lost cast, a NaN), not a last-bit change.

Default-suite tests use the toy MLP and the digits U-Net traced (not compiled); the digits U-Net
compiled in both dtypes (loss and gradient, a short run, sampling) is ``slow``.
"""

import collections
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jcore

from jaxscore import experiment, samplers
from jaxscore.config import ConfigError, load_config
from jaxscore.models import COMPUTE_DTYPES, build_model, compute_dtype
from jaxscore.train import init_train_state, make_optimizer, train_step

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs")
DIGITS = os.path.join(CONFIGS, "digits.py")
TOY2D = os.path.join(CONFIGS, "toy2d.py")


def _problem(config_file, dtype, *overrides):
    """(config, model, sde, loss_fn, init_fn) built as ``jaxscore train`` builds them."""
    cfg = load_config(config_file, [f"--config.model.dtype={dtype}", *overrides])
    model = experiment.build_model_from_config(cfg.model)
    sde = experiment.build_sde(cfg.sde)
    data_shape = (2,) if cfg.data.name == "ring" else (cfg.data.image_size, cfg.data.image_size, 1)
    return cfg, model, sde, experiment.make_loss_fn(cfg, model, sde), experiment.make_init_fn(model, data_shape)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _rel(a, b):
    """||a - b|| / ||b|| of two pytrees (b the float32 reference), on the host."""
    fa, fb = _flat(a), _flat(b)
    return float(np.linalg.norm(fa - fb) / np.linalg.norm(fb))


def _cos(a, b):
    fa, fb = _flat(a), _flat(b)
    return float(fa @ fb / (np.linalg.norm(fa) * np.linalg.norm(fb)))


# --- the option ---------------------------------------------------------------------------------


def test_compute_dtype_names_and_config_errors():
    assert COMPUTE_DTYPES == ("float32", "bfloat16")
    assert compute_dtype(None) is None
    assert compute_dtype("bfloat16") == jnp.bfloat16 and compute_dtype(jnp.float32) == jnp.float32
    with pytest.raises(ValueError, match="float16 is not supported.*loss scaling"):
        compute_dtype("float16")
    with pytest.raises(ValueError, match=r"expected None or one of \('float32', 'bfloat16'\).*got 'bf16'"):
        compute_dtype("bf16")
    # checked at config load time, naming the key, what is expected and what came
    assert load_config(DIGITS, ["--config.model.dtype=bfloat16"]).model.dtype == "bfloat16"
    for bad in ("float16", "bf16", "float64"):
        with pytest.raises(ConfigError, match=rf"config\.model\.dtype: expected None or one of .*got '{bad}'"):
            load_config(DIGITS, [f"--config.model.dtype={bad}"])
    # the model refuses it too (library callers that bypass configs), at trace time
    x, t = jnp.zeros((1, 2)), jnp.zeros((1,))
    with pytest.raises(ValueError, match="float16 is not supported"):
        jax.eval_shape(lambda: build_model("mlp_toy", dtype="float16").init(jax.random.key(0), x, t))


def _eqns(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for p in e.params.values():
            for sub in p if isinstance(p, (list, tuple)) else [p]:
                if isinstance(sub, jcore.ClosedJaxpr):
                    yield from _eqns(sub.jaxpr)
                elif isinstance(sub, jcore.Jaxpr):
                    yield from _eqns(sub)


def _ops(fn, *args):
    """Counter of (primitive, input dtypes, output dtype) over the jaxpr of ``fn(*args)``."""
    counts = collections.Counter()
    for e in _eqns(jax.make_jaxpr(fn)(*args).jaxpr):
        counts[(e.primitive.name, tuple(str(v.aval.dtype) for v in e.invars), str(e.outvars[0].aval.dtype))] += 1
    return counts


def test_digits_unet_bfloat16_policy_in_the_jaxpr():
    """Where bfloat16 applies, read off the traced digits U-Net (nothing compiled): every conv and
    dense but the output conv in bfloat16; params float32; the sinusoidal embedding, GroupNorm
    statistics (reductions, rsqrt) and the attention softmax (max, exp, sum) in float32; a float32
    output. With ``dtype=None`` no bfloat16 appears at all."""
    _, model, _, _, _ = _problem(DIGITS, "bfloat16")
    x, t = jnp.zeros((2, 8, 8, 1)), jnp.full((2,), 0.5)
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x, t))
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
    variables = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), variables)
    ops = _ops(lambda v, x, t: model.apply(v, x, t), variables, x, t)
    by_prim = collections.defaultdict(collections.Counter)
    for (prim, ins, out), n in ops.items():
        by_prim[prim][(ins, out)] += n
    bf, f32 = "bfloat16", "float32"
    convs = by_prim["conv_general_dilated"]
    assert convs[((f32, f32), f32)] == 1 and convs[((bf, bf), bf)] >= 20 and sum(convs.values()) == convs[((f32, f32), f32)] + convs[((bf, bf), bf)]
    dots = by_prim["dot_general"]
    assert all(ins == (bf, bf) for ins, _ in dots)  # dense layers; attention q.k (f32 logits) and p.v
    assert dots[((bf, bf), f32)] >= 1  # attention logits accumulate in float32
    for prim in ("sin", "cos", "rsqrt", "reduce_sum", "reduce_max", "exp"):
        assert by_prim[prim] and all(ins == (f32,) for ins, _ in by_prim[prim]), (prim, by_prim[prim])
    assert jax.eval_shape(lambda: model.apply(variables, x, t)).dtype == jnp.float32
    f32_model = model.clone(dtype=None)
    assert not any(bf in ins or out == bf for (_, ins, out) in _ops(lambda v, x, t: f32_model.apply(v, x, t), variables, x, t))


# --- the toy MLP in the default suite --------------------------------------------------------------


def test_mlp_bfloat16_train_step_matches_float32():
    """toy2d's ScoreMLP, batch 64: same params, key and batch. Measured (3 keys): loss rel. error
    1e-4..5e-4, gradient rel. L2 error 6e-3..7e-3, 1 - cosine 2e-5..3e-5. Bounds: loss 4e-3 (= u),
    gradient 3e-2, 1 - cosine 3e-4. A bfloat16 train step keeps float32 params, EMA and Adam
    moments and a float32 loss (its output types, traced)."""
    cfg, m32, sde, loss32, init_fn = _problem(TOY2D, "float32")
    _, m16, _, loss16, init16 = _problem(TOY2D, "bfloat16")
    params = jax.jit(init_fn)(jax.random.key(0))
    batch = {"x": jnp.asarray(np.random.default_rng(1).normal(size=(64, 2)) * 2.0, jnp.float32)}  # the ring's scale
    key = jax.random.key(3)

    @jax.jit  # one compile for both
    def both(params):
        return jax.value_and_grad(loss32)(params, key, batch), jax.value_and_grad(loss16)(params, key, batch)

    (l32, g32), (l16, g16) = both(params)
    assert l16.dtype == jnp.float32 and {g.dtype for g in jax.tree.leaves(g16)} == {jnp.dtype("float32")}
    assert abs(float(l16) - float(l32)) / float(l32) < 4e-3
    assert _rel(g16, g32) < 3e-2 and 1 - _cos(g16, g32) < 3e-4

    tx = make_optimizer(cfg)
    state = jax.eval_shape(lambda: init_train_state(0, init16, tx))
    new, metrics = jax.eval_shape(functools.partial(train_step, loss_fn=loss16, tx=tx, ema_rate=0.999), state, batch)
    assert metrics["loss"].dtype == jnp.float32
    for part in (new.params, new.ema_params, new.opt_state):
        assert {x.dtype for x in jax.tree.leaves(part) if jnp.issubdtype(x.dtype, jnp.floating)} == {jnp.dtype("float32")}


def test_mlp_bfloat16_sampling_matches_float32():
    """dpmpp_2m, 10 steps, same key, toy2d's ScoreMLP (untrained: an O(1) eps field) in float32 and
    bfloat16: the solver state stays float32 and the samples differ by 1.3e-3..1.5e-3 of their RMS
    (measured, 2 keys). Bound 1e-2: 10 steps, each adding a network error of ~u times a step
    weight of order one, accumulate to at most ~sqrt(10) u ~ 1.2e-2 if they do not cancel."""
    cfg, m32, sde, _, init_fn = _problem(TOY2D, "float32")
    _, m16, _, _, _ = _problem(TOY2D, "bfloat16")
    params = jax.jit(init_fn)(jax.random.key(0))
    key = jax.random.key(7)

    def draw(model, k):
        return samplers.dpmpp_2m(k, experiment.model_score_fn(cfg, model, params, sde), sde, (256, 2), steps=10)

    s32, s16 = jax.jit(lambda k: (draw(m32, k), draw(m16, k)))(key)  # one compile for both
    assert s16.dtype == jnp.float32
    s32, s16 = np.asarray(s32, np.float64), np.asarray(s16, np.float64)
    assert np.all(np.isfinite(s16))
    err = float(np.sqrt(np.mean((s16 - s32) ** 2) / np.mean(s32**2)))
    assert err < 1e-2, err
    assert err > 0  # the bfloat16 network did run in bfloat16


# --- the digits U-Net (slow: compiled in both dtypes) ------------------------------------------------


@pytest.mark.slow
def test_digits_unet_bfloat16_loss_and_grad_match_float32():
    """The digits config's U-Net (unet_tiny, ch=16, EDM-preconditioned VP, continuous DSM), batch 8,
    ``init_scale=1`` so every residual branch and the output conv are active (with the default 0
    the network starts as the identity with output ~0, and agreement would be trivial).
    Measured: loss rel. error 8e-4, gradient rel. L2 error 7.1e-2, 1 - cosine 2.5e-3 (and 4.9e-3,
    6.0e-2, 1.4e-3 on uniform random images). Bounds: loss 1.5e-2, gradient 0.2, 1 - cosine 1e-2."""
    cfg, _, _, loss32, init_fn = _problem(DIGITS, "float32", "--config.model.init_scale=1.0")
    _, _, _, loss16, _ = _problem(DIGITS, "bfloat16", "--config.model.init_scale=1.0")
    params = jax.jit(init_fn)(jax.random.key(0))
    data = experiment.load_data(cfg)
    batch = experiment.make_batch_fn(cfg, data)(0)
    batch = {"x": jnp.asarray(batch["x"][:8])}
    key = jax.random.key(3)
    l32, g32 = jax.jit(jax.value_and_grad(loss32))(params, key, batch)
    l16, g16 = jax.jit(jax.value_and_grad(loss16))(params, key, batch)
    assert l16.dtype == jnp.float32 and {g.dtype for g in jax.tree.leaves(g16)} == {jnp.dtype("float32")}
    loss_err, grad_err, cos = abs(float(l16) - float(l32)) / float(l32), _rel(g16, g32), _cos(g16, g32)
    print(f"digits U-Net bfloat16 vs float32: loss rel {loss_err:.2e}, grad rel L2 {grad_err:.2e}, 1-cos {1 - cos:.2e}")
    assert loss_err < 1.5e-2 and grad_err < 0.2 and 1 - cos < 1e-2


def _short_run(dtype, steps, batch_size):
    """``steps`` train steps of digits.py in ``dtype`` (same data order and keys for every dtype)."""
    cfg, model, sde, loss_fn, init_fn = _problem(
        DIGITS, dtype, f"--config.training.batch_size={batch_size}", "--config.optim.warmup=20")
    data = experiment.load_data(cfg)
    batch_fn = experiment.make_batch_fn(cfg, data)
    tx = make_optimizer(cfg)
    state = init_train_state(cfg.seed, init_fn, tx)
    step = jax.jit(functools.partial(train_step, loss_fn=loss_fn, tx=tx, ema_rate=0.99))
    losses = []
    for i in range(steps):
        state, metrics = step(state, batch_fn(i))
        losses.append(float(metrics["loss"]))
    return cfg, model, sde, state, np.asarray(losses)


@pytest.mark.slow
def test_digits_bfloat16_short_run_trains_like_float32():
    """200 steps of digits.py (batch 32, warm-up 20) in each dtype, same batches and keys.

    Both losses fall (mean of the last 50 steps < 0.6 x the first 10; measured 0.3025 -> 0.1363
    float32, 0.3025 -> 0.1367 bfloat16, i.e. 0.45x) and the bfloat16 curve tracks the float32 one:
    the last-50 mean within 5% (measured 0.3%; the per-step loss noise is common to both runs, as
    they draw the same t and noise)."""
    steps = 200
    _, _, _, s32, loss32 = _short_run("float32", steps, 32)
    _, _, _, s16, loss16 = _short_run("bfloat16", steps, 32)
    for losses in (loss32, loss16):
        assert np.all(np.isfinite(losses))
        assert losses[-50:].mean() < 0.6 * losses[:10].mean(), losses
    print(f"digits short run: first-10 / last-50 mean loss float32 {loss32[:10].mean():.4f} / {loss32[-50:].mean():.4f}, "
          f"bfloat16 {loss16[:10].mean():.4f} / {loss16[-50:].mean():.4f}")
    assert abs(loss16[-50:].mean() - loss32[-50:].mean()) / loss32[-50:].mean() < 0.05
    assert {x.dtype for x in jax.tree.leaves(s16.params)} == {jnp.dtype("float32")}


@pytest.mark.slow
def test_digits_unet_bfloat16_sampling_matches_float32():
    """dpmpp_2m (10 steps, 16 images, same key) through the digits U-Net in bfloat16 and float32,
    same params (``init_scale=1``: every branch active, an O(1) network output at every noise
    level): the solver state stays float32 and the samples differ by 1.2e-2 of their RMS
    (measured). Bound 5e-2: each evaluation of this network is ~sqrt(L) u ~ 2% off (see the
    module docstring), and 10 solver steps add such errors with weights of order one."""
    cfg, m32, sde, _, init_fn = _problem(DIGITS, "float32", "--config.model.init_scale=1.0")
    _, m16, _, _, _ = _problem(DIGITS, "bfloat16", "--config.model.init_scale=1.0")
    params = jax.jit(init_fn)(jax.random.key(0))

    def draw(model, k):
        return samplers.dpmpp_2m(k, experiment.model_score_fn(cfg, model, params, sde), sde, (16, 8, 8, 1), steps=10)

    x32, x16 = jax.jit(lambda k: (draw(m32, k), draw(m16, k)))(jax.random.key(11))  # one compile for both
    assert x16.dtype == jnp.float32
    x32, x16 = np.asarray(x32, np.float64), np.asarray(x16, np.float64)
    assert np.all(np.isfinite(x16))
    err = float(np.sqrt(np.mean((x16 - x32) ** 2) / np.mean(x32**2)))
    print(f"digits dpmpp_2m 10 steps, bfloat16 vs float32 network: sample rel. RMS difference {err:.2e}")
    assert 0 < err < 5e-2, err
