"""Flax score networks: shapes, conditioning, embeddings, presets, parameter counts, errors.

Most checks run eagerly on deliberately small configurations (compilation dominates the cost
on CPU); one test jits value-and-grad. CIFAR-10 presets are only traced (``jax.eval_shape``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxscore.models import (
    PRESET_NAMES,
    DDPMpp,
    GaussianFourierEmbedding,
    NCSNpp,
    ScoreMLP,
    SinusoidalEmbedding,
    UNet,
    build_model,
    count_params,
    get_preset,
    init_shapes,
    preset_class,
)
from jaxscore.models.embeddings import fourier_frequencies
from jaxscore.models.layers import default_init, fir_downsample, fir_upsample, naive_downsample, naive_upsample, normal_init
from jaxscore.parameterization import PARAMETERIZATIONS, make_score_fn
from jaxscore.sde import VESDE, VPSDE

KEY = jax.random.key(0)
# small U-Net used by most tests; init_scale=1 so residual branches and the output are not ~0
TINY = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, init_scale=1.0)
B = 4  # one batch size everywhere, so jitted functions are compiled once per model


def _images(b, h, w, c, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, h, w, c))


def _times(b, seed=1):
    return jax.random.uniform(jax.random.key(seed), (b,), minval=0.05, maxval=0.95)


def _param_shapes(model, x, t, labels=None):
    """Variables of ``model`` as ShapeDtypeStructs (tracing only, nothing is compiled)."""
    return jax.eval_shape(lambda x, t: model.init({"params": KEY, "dropout": KEY}, x, t, labels=labels), x, t)


def _numpy_params(model, x, t, labels=None, seed=0):
    """Random variables of the right structure drawn with NumPy (1/sqrt(fan_in) weights, ~1 norm scales).

    Compiling ``model.init`` (one RNG kernel per parameter shape) costs far more on CPU than the
    checks that use the parameters; the real initializers are tested separately."""
    rng = np.random.default_rng(seed)

    def leaf(s):
        if len(s.shape) == 1:
            return jnp.asarray(1.0 + 0.1 * rng.standard_normal(s.shape), s.dtype)
        fan_in = int(np.prod(s.shape[:-1]))
        return jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(fan_in), s.dtype)

    return jax.tree_util.tree_map(leaf, _param_shapes(model, x, t, labels))


# Compilation, not computation, dominates these tests on CPU: the U-Net jits are compiled with
# XLA's backend optimisation level 0 (about half the compile time; the tests check values, not speed).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compile(fn, *args, static_argnums=()):
    return jax.jit(fn, static_argnums=static_argnums).lower(*args).compile(FAST_COMPILE)


def _jit_apply(model):
    """``apply(variables, x, t, labels=None, train=False, key=None)``: compiled once per
    (labels given or not, train) and reused; a dropout key is always passed."""
    cache = {}

    def call(v, x, t, labels, key, train):
        return model.apply(v, x, t, labels, train=train, rngs={"dropout": key})

    def apply(v, x, t, labels=None, train=False, key=None):
        key = jax.random.key(0) if key is None else key
        sig = (labels is None, train, x.shape)
        if sig not in cache:
            cache[sig] = _compile(call, v, x, t, labels, key, train, static_argnums=5)
        return cache[sig](v, x, t, labels, key)

    return apply


@pytest.fixture(scope="module")
def cond_unet():
    """A class-conditional DDPM++-style U-Net with dropout, its variables and a jitted apply."""
    model = DDPMpp(**{**TINY, "dropout": 0.5, "num_classes": 3})
    x, t = _images(B, 8, 8, 1), _times(B)
    variables = _numpy_params(model, x, t, labels=jnp.zeros(B, jnp.int32))
    return model, variables, _jit_apply(model)


@pytest.fixture(scope="module")
def mlp():
    model = ScoreMLP(hidden_dims=(32, 32), dropout=0.5, num_classes=3)
    x = jax.random.normal(KEY, (B, 3))
    variables = model.init({"params": jax.random.key(1)}, x, _times(B), labels=jnp.zeros(B, jnp.int32))
    return model, variables, _jit_apply(model)


# -------------------------------------------------------------------------------------------------
# embeddings
# -------------------------------------------------------------------------------------------------


def test_sinusoidal_embedding_matches_closed_form():
    t = jnp.array([0.0, 1.0, 250.5, -3.0])
    dim = 6
    emb = SinusoidalEmbedding(dim).apply({}, t)
    half = dim // 2
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / (half - 1))
    expected = np.concatenate([np.sin(np.asarray(t)[:, None] * freqs), np.cos(np.asarray(t)[:, None] * freqs)], axis=1)
    np.testing.assert_allclose(np.asarray(emb), expected, atol=1e-4)
    assert SinusoidalEmbedding(7).apply({}, t).shape == (4, 7)


def test_fourier_embedding_is_fixed_constant_without_params():
    emb = GaussianFourierEmbedding(8, scale=16.0)
    t = jnp.array([-1.3, 0.0, 0.7])
    variables = emb.init(KEY, t)
    assert jax.tree_util.tree_leaves(variables) == []  # no variable: nothing to train, decay or average
    w = fourier_frequencies(8, 16.0)
    expected = np.concatenate([np.sin(2 * np.pi * np.asarray(t)[:, None] * w), np.cos(2 * np.pi * np.asarray(t)[:, None] * w)], 1)
    np.testing.assert_allclose(np.asarray(emb.apply(variables, t)), expected, atol=1e-4)
    # frequencies are N(0, scale^2): the sample std of many is close to the scale
    assert abs(fourier_frequencies(4096, 16.0).std() / 16.0 - 1.0) < 0.05
    # inside NCSN++ the frequencies are not parameters: the parameter count is the module list's
    # (checked in test_param_counts_match_score_sde_module_list) and no leaf holds dim/2 = ch values
    shapes = _param_shapes(NCSNpp(**TINY), _images(B, 8, 8, 1), _times(B))["params"]
    assert "GaussianFourierEmbedding_0" not in shapes


def test_time_embedding_distinguishes_times(cond_unet, mlp):
    model, variables, apply = cond_unet
    x = jnp.repeat(_images(1, 8, 8, 1), B, axis=0)
    t = jnp.array([0.1, 0.4, 0.6, 0.9])
    out = apply(variables, x, t)
    for i in range(B):
        for j in range(i):
            assert float(jnp.max(jnp.abs(out[i] - out[j]))) > 1e-3
    model, variables, apply = mlp
    xv = jnp.ones((B, 3))
    o = apply(variables, xv, jnp.array([-1.2, 0.0, 0.5, 0.8]))  # any real input (EDM c_noise-like)
    for i in range(B):
        for j in range(i):
            assert float(jnp.max(jnp.abs(o[i] - o[j]))) > 1e-4
    emb = SinusoidalEmbedding(16).apply({}, jnp.array([0.0, 1.0, 2.0]))
    assert float(jnp.min(jnp.abs(emb[1] - emb[0]).sum() + jnp.abs(emb[2] - emb[1]).sum())) > 1e-2


# -------------------------------------------------------------------------------------------------
# shapes
# -------------------------------------------------------------------------------------------------


def test_mlp_shapes(mlp):
    model, variables, apply = mlp
    x = jax.random.normal(KEY, (B, 3))
    out = apply(variables, x, _times(B))
    assert out.shape == (B, 3) and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))
    # scalar t is broadcast to [B] (the score_fn contract convenience)
    assert jax.eval_shape(lambda v: model.apply(v, x, 0.3), variables).shape == (B, 3)
    for d in (1, 2, 5):
        xd = jax.ShapeDtypeStruct((7, d), jnp.float32)
        out = jax.eval_shape(lambda x: ScoreMLP(hidden_dims=(16,)).init_with_output(KEY, x, jnp.zeros(7))[0], xd)
        assert out.shape == (7, d)


@pytest.mark.parametrize(
    "cls, size, ch_mult, channels",
    [
        (DDPMpp, 8, (1, 2), 1),
        (NCSNpp, 8, (1, 2), 1),
        (DDPMpp, 16, (1, 2, 2), 1),
        (NCSNpp, 28, (1, 2, 2), 1),  # 28 -> 14 -> 7
        (DDPMpp, 32, (1, 2, 2, 2), 3),
    ],
)
def test_unet_shapes(cls, size, ch_mult, channels):
    model = cls(**{**TINY, "ch_mult": ch_mult, "attn_resolutions": (size // 2,)})
    x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
    t = jax.ShapeDtypeStruct((2,), jnp.float32)
    out = jax.eval_shape(lambda x, t: model.init_with_output(KEY, x, t)[0], x, t)
    assert out.shape == x.shape and out.dtype == jnp.float32


@pytest.mark.parametrize(
    "kw",
    [
        dict(resblock="ddpm"),
        dict(resblock="ddpm", resamp_with_conv=False),
        dict(progressive_input="input_skip", progressive_combine="sum", fir=True),
        dict(progressive_input="input_skip", progressive_combine="cat"),
        dict(progressive_input="residual", fir=False),
        dict(num_heads=2, num_groups=2, activation="gelu"),
    ],
)
def test_unet_variants_shapes(kw):
    model = UNet(**{**TINY, **kw})
    x = jax.ShapeDtypeStruct((2, 8, 8, 2), jnp.float32)
    out = jax.eval_shape(lambda x, t: model.init_with_output(KEY, x, t)[0], x, jnp.zeros(2))
    assert out.shape == x.shape


def test_default_init_statistics():
    """score_sde default_init: U(-a, a), a = sqrt(3 s / fan_avg); scale 0 -> 1e-10 (a block starts as identity)."""
    w = np.asarray(default_init(1.0)(KEY, (3, 3, 64, 32)))
    fan_avg = 9 * (64 + 32) / 2
    assert abs(w.var() / (1.0 / fan_avg) - 1.0) < 0.05
    assert np.abs(w).max() <= math.sqrt(3.0 / fan_avg) + 1e-7
    assert np.abs(np.asarray(default_init(0.0)(KEY, (3, 3, 8, 8)))).max() < 1e-5
    z = np.asarray(normal_init(2.0)(KEY, (300, 40)))
    assert abs(z.std() / 2.0 - 1.0) < 0.03 and abs(z.mean()) < 0.05


def test_mlp_real_init_and_param_count():
    model = ScoreMLP(hidden_dims=(8,))
    x = jnp.ones((B, 2))
    out, variables = model.init_with_output(KEY, x, _times(B))
    assert out.shape == (B, 2) and bool(jnp.all(jnp.isfinite(out)))
    assert count_params(variables) == (64 * 64 + 64) + (2 * 8 + 8) + 64 * 8 + (8 * 2 + 2)  # time dense, dense_0, time_proj_0, out


@pytest.mark.slow
def test_unet_tiny_real_init_and_forward():
    model = build_model("unet_tiny")
    x, t = _images(B, 8, 8, 1), _times(B)
    out, variables = jax.jit(model.init_with_output)({"params": KEY}, x, t)
    assert out.shape == x.shape
    assert float(jnp.max(jnp.abs(out))) < 1e-3  # init_scale=0: output conv starts at ~0
    grads = jax.jit(jax.grad(lambda p: jnp.sum((model.apply({"params": p}, x, t) - x) ** 2)))(variables["params"])
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_shapes(name):
    model = build_model(name)
    assert isinstance(model, preset_class(name))
    assert model == preset_class(name)(**get_preset(name))
    shapes = {
        "mlp_toy": [(8, 2)],
        "unet_tiny": [(8, 8, 8, 1)],
        "unet_small": [(2, 16, 16, 1), (2, 28, 28, 1), (2, 32, 32, 3)],
    }.get(name, [])  # CIFAR-10 presets: traced in test_param_counts_match_score_sde_module_list
    for shape in shapes:
        x = jax.ShapeDtypeStruct(shape, jnp.float32)
        t = jax.ShapeDtypeStruct(shape[:1], jnp.float32)
        out = jax.eval_shape(lambda x, t: model.init_with_output({"params": KEY, "dropout": KEY}, x, t)[0], x, t)
        assert out.shape == shape and out.dtype == jnp.float32


def test_unet_tiny_forward_finite():
    model = build_model("unet_tiny")
    x, t = _images(B, 8, 8, 1), _times(B)
    v = _numpy_params(model, x, t)
    out = _compile(model.apply, v, x, t)(v, x, t)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))


# -------------------------------------------------------------------------------------------------
# parameter counts: an independent re-count of score_sde's NCSNpp module list
# -------------------------------------------------------------------------------------------------


def _score_sde_count(ch, ch_mult, num_res_blocks, attn_resolutions, size, channels, embedding, progressive_input="none", resblock="biggan"):
    conv = lambda i, o, k=3: k * k * i * o + o  # noqa: E731
    lin = lambda i, o: i * o + o  # noqa: E731
    gn = lambda c: 2 * c  # noqa: E731
    temb = 4 * ch

    def rb(i, o, resample=False):
        n = gn(i) + conv(i, o) + lin(temb, o) + gn(o) + conv(o, o)
        if resblock == "biggan":
            return n + (conv(i, o, 1) if (i != o or resample) else 0)
        return n + (lin(i, o) if i != o else 0)

    def attn(c):
        return gn(c) + 4 * lin(c, c)

    n = lin(2 * ch if embedding == "fourier" else ch, temb) + lin(temb, temb) + conv(channels, ch)
    hs, c, pyr = [ch], ch, channels
    res = [size // 2**i for i in range(len(ch_mult))]
    for i, m in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            n += rb(c, ch * m)
            c = ch * m
            n += attn(c) if res[i] in attn_resolutions else 0
            hs.append(c)
        if i != len(ch_mult) - 1:
            n += rb(c, c, resample=True) if resblock == "biggan" else conv(c, c)
            if progressive_input == "residual":
                n += conv(pyr, c)
                pyr = c
            hs.append(c)
    n += 2 * rb(c, c) + attn(c)
    for i in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            n += rb(c + hs.pop(), ch * ch_mult[i])
            c = ch * ch_mult[i]
        n += attn(c) if res[i] in attn_resolutions else 0
        if i != 0:
            n += rb(c, c, resample=True) if resblock == "biggan" else conv(c, c)
    assert not hs
    return n + gn(c) + conv(c, channels)


@pytest.mark.parametrize(
    "name, size, channels",
    [
        ("unet_tiny", 8, 1),
        ("unet_small", 28, 1),
        ("ddpmpp_cifar10", 32, 3),
        ("ncsnpp_cifar10", 32, 3),
        pytest.param("ddpmpp_deep_cifar10", 32, 3, marks=pytest.mark.slow),
        pytest.param("ncsnpp_deep_cifar10", 32, 3, marks=pytest.mark.slow),
    ],
)
def test_param_counts_match_score_sde_module_list(name, size, channels):
    kw = get_preset(name)
    model = build_model(name)
    x = jax.ShapeDtypeStruct((2, size, size, channels), jnp.float32)
    out, variables = jax.eval_shape(lambda x, t: model.init_with_output({"params": KEY, "dropout": KEY}, x, t), x, jnp.zeros(2))
    assert out.shape == x.shape  # traced only: no forward pass at 32x32 with ch=128 here
    n = count_params(variables["params"])
    embedding = "fourier" if preset_class(name) is NCSNpp else "positional"
    progressive = "residual" if preset_class(name) is NCSNpp else "none"
    expected = _score_sde_count(
        kw["ch"], kw["ch_mult"], kw["num_res_blocks"], kw["attn_resolutions"], size, channels, embedding, progressive
    )
    assert n == expected
    if name == "ddpmpp_cifar10":
        assert 55e6 < n < 70e6  # score_sde DDPM++ cont. (VP) CIFAR-10: ~62M
    if name.endswith("deep_cifar10"):
        assert 95e6 < n < 115e6  # deep (8 res blocks): ~107M


def test_param_count_ddpm_resblock_and_count_params_on_arrays():
    model = UNet(**{**TINY, "resblock": "ddpm"})
    x, t = _images(1, 8, 8, 3), _times(1)
    params = _numpy_params(model, x, t)["params"]
    assert count_params(params) == _score_sde_count(8, (1, 2), 1, (4,), 8, 3, "positional", resblock="ddpm")
    assert count_params(params) == sum(p.size for p in jax.tree_util.tree_leaves(params))


def test_label_embedding_adds_k_plus_one_rows():
    base = count_params(init_shapes(DDPMpp(**TINY), (1, 8, 8, 1)))
    cond = count_params(init_shapes(DDPMpp(**TINY, num_classes=10), (1, 8, 8, 1)))
    assert cond - base == 11 * 4 * TINY["ch"]


# -------------------------------------------------------------------------------------------------
# dropout, labels
# -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_dropout_only_in_train_mode(kind, cond_unet, mlp):
    model, v, apply = mlp if kind == "mlp" else cond_unet
    x = jax.random.normal(KEY, (B, 3)) if kind == "mlp" else _images(B, 8, 8, 1)
    t, labels = _times(B), jnp.array([0, 1, 2, 3])
    ev1 = apply(v, x, t, labels, train=False, key=jax.random.key(10))
    ev2 = apply(v, x, t, labels, train=False, key=jax.random.key(11))
    np.testing.assert_array_equal(np.asarray(ev1), np.asarray(ev2))
    jax.eval_shape(lambda v: model.apply(v, x, t, labels), v)  # eval mode needs no dropout key
    tr1 = apply(v, x, t, labels, train=True, key=jax.random.key(10))
    tr2 = apply(v, x, t, labels, train=True, key=jax.random.key(11))
    tr1b = apply(v, x, t, labels, train=True, key=jax.random.key(10))
    assert float(jnp.max(jnp.abs(tr1 - ev1))) > 1e-4
    assert float(jnp.max(jnp.abs(tr1 - tr2))) > 1e-4
    np.testing.assert_array_equal(np.asarray(tr1), np.asarray(tr1b))  # deterministic given the key
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda v: model.apply(v, x, t, labels, train=True), v)  # train=True needs a dropout key


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_null_label_equals_none_and_labels_matter(kind, cond_unet, mlp):
    model, v, apply = mlp if kind == "mlp" else cond_unet
    x = jax.random.normal(KEY, (B, 3)) if kind == "mlp" else _images(B, 8, 8, 1)
    t = _times(B)
    none = apply(v, x, t, None)
    null = apply(v, x, t, jnp.full((B,), 3))
    np.testing.assert_allclose(np.asarray(none), np.asarray(null), rtol=0, atol=0)
    c0 = apply(v, x, t, jnp.zeros(B, jnp.int32))
    c1 = apply(v, x, t, jnp.ones(B, jnp.int32))
    assert float(jnp.max(jnp.abs(c0 - null))) > 1e-4
    assert float(jnp.max(jnp.abs(c0 - c1))) > 1e-4


# -------------------------------------------------------------------------------------------------
# errors
# -------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    """All raised while tracing (shapes / dtypes), before anything is computed."""
    unet = DDPMpp(**TINY)
    x, t = _images(2, 8, 8, 1), _times(2)
    v = _param_shapes(unet, x, t)

    def trace(model, variables, *args, **kw):
        return jax.eval_shape(lambda v: model.apply(v, *args, **kw), variables)

    with pytest.raises(ValueError, match=r"expected images x of shape \[B, H, W, C\].*got shape \(2, 5\)"):
        trace(unet, v, jnp.ones((2, 5)), t)
    with pytest.raises(ValueError, match=r"12x12 must be divisible by 2\*\*\(len\(ch_mult\)-1\) = 8"):
        _param_shapes(DDPMpp(**{**TINY, "ch_mult": (1, 2, 2, 2)}), _images(1, 12, 12, 1), _times(1))
    with pytest.raises(ValueError, match=r"t: expected shape \[B\]"):
        trace(unet, v, x, jnp.ones((3,)))
    with pytest.raises(ValueError, match="num_classes=None"):
        trace(unet, v, x, t, labels=jnp.zeros(2, jnp.int32))
    cond = DDPMpp(**TINY, num_classes=2)
    vc = _param_shapes(cond, x, t)
    with pytest.raises(TypeError, match="integer"):
        trace(cond, vc, x, t, labels=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"labels: expected shape \[B\]"):
        trace(cond, vc, x, t, labels=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match=r"expected vector data x of shape \[B, d\]"):
        _param_shapes(ScoreMLP(hidden_dims=(8,)), x, t)
    with pytest.raises(ValueError, match="embedding"):
        _param_shapes(UNet(**{**TINY, "embedding": "learned"}), x, t)
    with pytest.raises(ValueError, match="resblock"):
        _param_shapes(UNet(**{**TINY, "resblock": "wide"}), x, t)
    with pytest.raises(ValueError, match="not divisible into"):
        _param_shapes(UNet(**{**TINY, "num_groups": 3}), x, t)


def test_build_model_from_config_and_errors():
    cfg = ml_collections.ConfigDict({"name": "unet_tiny", "ch": 8, "ch_mult": [1, 2], "num_classes": 10})
    model = build_model(cfg)
    assert isinstance(model, DDPMpp)
    assert model.ch == 8 and model.ch_mult == (1, 2) and model.num_classes == 10
    assert model.num_res_blocks == get_preset("unet_tiny")["num_res_blocks"]
    assert isinstance(build_model({"name": "ncsnpp", "ch": 16}), NCSNpp)
    assert isinstance(build_model("ScoreMLP", hidden_dims=[8]), ScoreMLP)
    assert build_model("mlp_toy", dropout=0.1).dropout == 0.1
    with pytest.raises(ValueError, match="has no field"):
        build_model({"name": "unet_tiny", "ema_rate": 0.99})
    assert build_model({"name": "unet_tiny", "ema_rate": 0.99}, ignore_unknown=True) == build_model("unet_tiny")
    with pytest.raises(ValueError, match="unknown name"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="'name' field"):
        build_model({"ch": 3})
    # presets are fresh copies
    get_preset("unet_tiny")["ch"] = 1
    assert get_preset("unet_tiny")["ch"] != 1


# -------------------------------------------------------------------------------------------------
# FIR resampling against a direct upfirdn2d
# -------------------------------------------------------------------------------------------------


def _upfirdn_1d_ref(x, k, up, down, pad):
    """Plain definition: zero-stuff by `up`, pad, convolve with k (full), keep every `down`-th."""
    n = x.shape[0]
    z = np.zeros(n * up)
    z[::up] = x
    z = np.concatenate([np.zeros(pad[0]), z, np.zeros(pad[1])])
    out = np.array([np.sum(z[i : i + len(k)] * k[::-1]) for i in range(len(z) - len(k) + 1)])
    return out[::down]


def test_fir_resampling_matches_upfirdn_definition():
    k1 = np.array([1.0, 3.0, 3.0, 1.0])
    k1 = k1 / k1.sum()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)

    def sep(a, up, down, pad, gain):
        a = np.apply_along_axis(lambda r: _upfirdn_1d_ref(r, k1 * math.sqrt(gain), up, down, pad), 1, a)
        return np.apply_along_axis(lambda r: _upfirdn_1d_ref(r, k1 * math.sqrt(gain), up, down, pad), 2, a)

    np.testing.assert_allclose(np.asarray(fir_downsample(jnp.asarray(x))), sep(x, 1, 2, (1, 1), 1.0), atol=1e-5)
    np.testing.assert_allclose(np.asarray(fir_upsample(jnp.asarray(x))), sep(x, 2, 1, (2, 1), 4.0), atol=1e-5)
    # the naive versions: average pool and nearest neighbour
    np.testing.assert_allclose(np.asarray(naive_downsample(jnp.asarray(x))), x.reshape(1, 3, 2, 3, 2, 2).mean((2, 4)), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(naive_upsample(jnp.asarray(x)))[:, ::2, 1::2], x)


# -------------------------------------------------------------------------------------------------
# jit + grad, parameterizations
# -------------------------------------------------------------------------------------------------


# slow: 22 s of compile on 2 cores (NCSN++ is the largest U-Net); its forward shapes stay in the default suite
@pytest.mark.slow
def test_jit_value_and_grad_finite_ncsnpp():
    """NCSN++ (Fourier embedding, FIR resampling, input pyramid), labels, dropout: jit(value_and_grad).

    The batch holds one image at four noise inputs (log-sigma-like, any real), so the outputs also
    show the Fourier time embedding distinguishes them."""
    model = NCSNpp(**{**TINY, "dropout": 0.1, "num_classes": 2})
    x, t, labels = jnp.repeat(_images(1, 8, 8, 1), B, axis=0), jnp.array([-2.0, -0.5, 0.5, 1.5]), jnp.ones(B, jnp.int32)
    params = _numpy_params(model, x, t, labels)["params"]

    def loss_and_grad(p, key):
        def loss(p):
            out = model.apply({"params": p}, x, t, labels=labels, train=False, rngs={"dropout": key})
            return jnp.mean((out - x) ** 2), out

        return jax.value_and_grad(loss, has_aux=True)(p)

    (value, out), grads = _compile(loss_and_grad, params, jax.random.key(3))(params, jax.random.key(3))
    assert bool(jnp.isfinite(value))
    leaves = jax.tree_util.tree_leaves(grads)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert all(float(jnp.sum(jnp.abs(g))) > 0 for g in leaves)  # every parameter influences the loss
    for i in range(B):
        for j in range(i):
            assert float(jnp.max(jnp.abs(out[i] - out[j]))) > 1e-3


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_models_work_with_every_parameterization(parameterization, cond_unet, mlp):
    t = jnp.array([1e-3, 0.3, 0.7, 1.0])
    for sde in (VPSDE(), VESDE()):
        for (model, v, apply), x in ((mlp, jax.random.normal(KEY, (B, 3))), (cond_unet, _images(B, 8, 8, 1))):
            for labels in (None, jnp.array([0, 1, 2, 0])):
                score_fn = make_score_fn(lambda p, x, t, labels: apply(p, x, t, labels), v, sde, parameterization, labels=labels)
                s = score_fn(x, t)
                assert s.shape == x.shape
                assert bool(jnp.all(jnp.isfinite(s))), (parameterization, type(sde).__name__, type(model).__name__)
