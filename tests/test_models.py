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
from jaxscore.models.layers import fir_downsample, fir_upsample, naive_downsample, naive_upsample
from jaxscore.parameterization import PARAMETERIZATIONS, make_score_fn
from jaxscore.sde import VESDE, VPSDE

KEY = jax.random.key(0)
# small U-Net used by most tests; init_scale=1 so residual branches and the output are not ~0
TINY = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, init_scale=1.0)


def _init(model, x, t, labels=None):
    return model.init({"params": jax.random.key(1), "dropout": jax.random.key(2)}, x, t, labels=labels, train=False)


def _images(b, h, w, c, seed=0):
    return jax.random.normal(jax.random.key(seed), (b, h, w, c))


def _times(b, seed=1):
    return jax.random.uniform(jax.random.key(seed), (b,), minval=0.05, maxval=0.95)


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


def test_fourier_embedding_is_fixed_constant_without_params_or_grad():
    emb = GaussianFourierEmbedding(8, scale=16.0)
    t = jnp.array([-1.3, 0.0, 0.7])
    variables = emb.init(KEY, t)
    assert jax.tree_util.tree_leaves(variables) == []  # no variable: nothing to train or decay
    w = fourier_frequencies(8, 16.0)
    expected = np.concatenate([np.sin(2 * np.pi * np.asarray(t)[:, None] * w), np.cos(2 * np.pi * np.asarray(t)[:, None] * w)], 1)
    np.testing.assert_allclose(np.asarray(emb.apply(variables, t)), expected, atol=1e-4)
    # frequencies are N(0, scale^2): sample std of many is close to the scale
    assert abs(fourier_frequencies(4096, 16.0).std() / 16.0 - 1.0) < 0.05

    # in a model: the frequencies are not parameters, so a gradient step never changes them
    model = NCSNpp(**TINY)
    x, tt = _images(2, 8, 8, 1), jnp.array([-2.0, 1.5])
    params = _init(model, x, tt)["params"]
    assert not any("fourier" in jax.tree_util.keystr(p).lower() for p, _ in jax.tree_util.tree_leaves_with_path(params))
    grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x, tt) ** 2))(params)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)


@pytest.mark.parametrize("embedding", ["positional", "fourier"])
def test_time_embedding_distinguishes_times(embedding):
    model = DDPMpp(**TINY, embedding=embedding)
    x = jnp.repeat(_images(1, 8, 8, 1), 3, axis=0)
    t = jnp.array([0.1, 0.5, 0.9]) if embedding == "positional" else jnp.array([-1.2, 0.0, 0.8])  # EDM c_noise-like
    out = model.apply(_init(model, x, t), x, t)
    for i in range(3):
        for j in range(i):
            assert float(jnp.max(jnp.abs(out[i] - out[j]))) > 1e-3

    mlp = ScoreMLP(hidden_dims=(32, 32), embedding="sinusoidal" if embedding == "positional" else "fourier")
    xv = jnp.ones((3, 2))
    o = mlp.apply(_init(mlp, xv, t), xv, t)
    assert float(jnp.min(jnp.abs(o[0] - o[1]) + jnp.abs(o[1] - o[2]))) > 1e-4


# -------------------------------------------------------------------------------------------------
# shapes
# -------------------------------------------------------------------------------------------------


def test_mlp_shapes():
    for d in (1, 2, 5):
        model = ScoreMLP(hidden_dims=(16, 16))
        x = jax.random.normal(KEY, (4, d))
        out = model.apply(_init(model, x, _times(4)), x, _times(4))
        assert out.shape == (4, d)
        assert out.dtype == jnp.float32
    # scalar t is broadcast to [B] (the score_fn contract convenience)
    assert model.apply(_init(model, x, _times(4)), x, 0.3).shape == (4, 5)


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
    x, t = _images(2, size, size, channels), _times(2)
    out = model.apply(_init(model, x, t), x, t)
    assert out.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(out)))


def test_unet_variants_run():
    """resblock='ddpm' (separate Downsample/Upsample), input_skip pyramid (sum / cat), multi-head."""
    x, t = _images(2, 8, 8, 2), _times(2)
    for kw in (
        dict(resblock="ddpm"),
        dict(resblock="ddpm", resamp_with_conv=False),
        dict(progressive_input="input_skip", progressive_combine="sum", fir=True),
        dict(progressive_input="input_skip", progressive_combine="cat"),
        dict(progressive_input="residual", fir=False),
        dict(num_heads=2, num_groups=2),
    ):
        model = UNet(**{**TINY, **kw})
        out = model.apply(_init(model, x, t), x, t)
        assert out.shape == x.shape, kw
        assert bool(jnp.all(jnp.isfinite(out))), kw


def test_default_init_output_is_near_zero():
    """score_sde init_scale=0: the last conv starts at ~0 (1e-10 variance scaling)."""
    model = DDPMpp(**{**TINY, "init_scale": 0.0})
    x, t = _images(2, 8, 8, 1), _times(2)
    assert float(jnp.max(jnp.abs(model.apply(_init(model, x, t), x, t)))) < 1e-3


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_shapes(name):
    model = build_model(name)
    assert isinstance(model, preset_class(name))
    assert model == preset_class(name)(**get_preset(name))
    if name == "mlp_toy":
        shapes = [(8, 2)]
    elif name == "unet_tiny":
        shapes = [(4, 8, 8, 1)]
    elif name == "unet_small":
        shapes = [(1, 16, 16, 1), (1, 28, 28, 1)]
    else:  # CIFAR-10 sizes: trace only (no forward pass at 32x32 with ch=128 here)
        x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
        t = jax.ShapeDtypeStruct((2,), jnp.float32)
        out = jax.eval_shape(lambda x, t: model.apply(_init(model, x, t), x, t), x, t)
        assert out.shape == (2, 32, 32, 3) and out.dtype == jnp.float32
        return
    for shape in shapes:
        x, t = jax.random.normal(KEY, shape), _times(shape[0])
        out = model.apply(_init(model, x, t), x, t)
        assert out.shape == shape
        assert bool(jnp.all(jnp.isfinite(out)))


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
    [("unet_tiny", 8, 1), ("unet_small", 28, 1), ("ddpmpp_cifar10", 32, 3), ("ncsnpp_cifar10", 32, 3), ("ddpmpp_deep_cifar10", 32, 3)],
)
def test_param_counts_match_score_sde_module_list(name, size, channels):
    kw = get_preset(name)
    n = count_params(init_shapes(build_model(name), (1, size, size, channels)))
    embedding = "fourier" if preset_class(name) is NCSNpp else "positional"
    progressive = "residual" if preset_class(name) is NCSNpp else "none"
    expected = _score_sde_count(
        kw["ch"], kw["ch_mult"], kw["num_res_blocks"], kw["attn_resolutions"], size, channels, embedding, progressive
    )
    assert n == expected
    if name == "ddpmpp_cifar10":
        assert 55e6 < n < 70e6  # score_sde DDPM++ cont. (VP) CIFAR-10: ~62M
    if name == "ddpmpp_deep_cifar10":
        assert 95e6 < n < 115e6  # deep (8 res blocks): ~107M


def test_param_count_ddpm_resblock_and_count_params_on_arrays():
    model = UNet(**{**TINY, "resblock": "ddpm"})
    x, t = _images(1, 8, 8, 3), _times(1)
    params = _init(model, x, t)["params"]
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
def test_dropout_only_in_train_mode(kind):
    if kind == "mlp":
        model, x = ScoreMLP(hidden_dims=(32, 32), dropout=0.5), jax.random.normal(KEY, (4, 3))
    else:
        model, x = DDPMpp(**{**TINY, "dropout": 0.5}), _images(2, 8, 8, 1)
    t = _times(x.shape[0])
    v = _init(model, x, t)
    ev1 = model.apply(v, x, t, train=False, rngs={"dropout": jax.random.key(10)})
    ev2 = model.apply(v, x, t, train=False, rngs={"dropout": jax.random.key(11)})
    np.testing.assert_array_equal(np.asarray(ev1), np.asarray(ev2))
    np.testing.assert_array_equal(np.asarray(ev1), np.asarray(model.apply(v, x, t)))  # no rng needed in eval
    tr1 = model.apply(v, x, t, train=True, rngs={"dropout": jax.random.key(10)})
    tr2 = model.apply(v, x, t, train=True, rngs={"dropout": jax.random.key(11)})
    tr1b = model.apply(v, x, t, train=True, rngs={"dropout": jax.random.key(10)})
    assert float(jnp.max(jnp.abs(tr1 - ev1))) > 1e-4
    assert float(jnp.max(jnp.abs(tr1 - tr2))) > 1e-4
    np.testing.assert_array_equal(np.asarray(tr1), np.asarray(tr1b))  # deterministic given the key


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_null_label_equals_none_and_labels_matter(kind):
    if kind == "mlp":
        model, x = ScoreMLP(hidden_dims=(32,), num_classes=3), jax.random.normal(KEY, (4, 2))
    else:
        model, x = NCSNpp(**TINY, num_classes=3), _images(4, 8, 8, 1)
    t = _times(4)
    v = _init(model, x, t)
    none = model.apply(v, x, t, labels=None)
    null = model.apply(v, x, t, labels=jnp.full((4,), 3))
    np.testing.assert_allclose(np.asarray(none), np.asarray(null), rtol=0, atol=0)
    c0 = model.apply(v, x, t, labels=jnp.zeros(4, jnp.int32))
    c1 = model.apply(v, x, t, labels=jnp.ones(4, jnp.int32))
    assert float(jnp.max(jnp.abs(c0 - null))) > 1e-4
    assert float(jnp.max(jnp.abs(c0 - c1))) > 1e-4


# -------------------------------------------------------------------------------------------------
# errors
# -------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors():
    unet = DDPMpp(**TINY)
    x, t = _images(2, 8, 8, 1), _times(2)
    v = _init(unet, x, t)
    with pytest.raises(ValueError, match=r"expected images x of shape \[B, H, W, C\].*got shape \(2, 5\)"):
        unet.apply(v, jnp.ones((2, 5)), t)
    with pytest.raises(ValueError, match=r"12x12 must be divisible by 2\*\*\(len\(ch_mult\)-1\) = 8"):
        DDPMpp(**{**TINY, "ch_mult": (1, 2, 2, 2)}).init(KEY, _images(1, 12, 12, 1), _times(1))
    with pytest.raises(ValueError, match=r"t: expected shape \[B\]"):
        unet.apply(v, x, jnp.ones((3,)))
    with pytest.raises(ValueError, match="num_classes=None"):
        unet.apply(v, x, t, labels=jnp.zeros(2, jnp.int32))
    cond = DDPMpp(**TINY, num_classes=2)
    vc = _init(cond, x, t)
    with pytest.raises(TypeError, match="integer"):
        cond.apply(vc, x, t, labels=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"labels: expected shape \[B\]"):
        cond.apply(vc, x, t, labels=jnp.zeros(3, jnp.int32))
    mlp = ScoreMLP(hidden_dims=(8,))
    with pytest.raises(ValueError, match=r"expected vector data x of shape \[B, d\]"):
        mlp.init(KEY, x, t)
    with pytest.raises(ValueError, match="embedding"):
        UNet(**{**TINY, "embedding": "learned"}).init(KEY, x, t)
    with pytest.raises(ValueError, match="resblock"):
        UNet(**{**TINY, "resblock": "wide"}).init(KEY, x, t)


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


def test_jit_value_and_grad_finite():
    model = NCSNpp(**{**TINY, "dropout": 0.1, "num_classes": 2})
    x, t = _images(4, 8, 8, 1), jnp.array([-2.0, -0.5, 0.5, 1.5])
    params = _init(model, x, t)["params"]

    @jax.jit
    def loss_and_grad(p, key):
        def loss(p):
            out = model.apply({"params": p}, x, t, labels=jnp.array([0, 1, 2, 0]), train=True, rngs={"dropout": key})
            return jnp.mean((out - x) ** 2)

        return jax.value_and_grad(loss)(p)

    value, grads = loss_and_grad(params, jax.random.key(3))
    assert bool(jnp.isfinite(value))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_models_work_with_every_parameterization(parameterization):
    for sde in (VPSDE(), VESDE()):
        for model, x in (
            (ScoreMLP(hidden_dims=(16,)), jax.random.normal(KEY, (3, 2))),
            (DDPMpp(**TINY), _images(3, 8, 8, 1)),
        ):
            t = jnp.array([1e-3, 0.5, 1.0])
            params = _init(model, x, t)
            score_fn = make_score_fn(model.apply, params, sde, parameterization)
            s = score_fn(x, t)
            assert s.shape == x.shape
            assert bool(jnp.all(jnp.isfinite(s))), (parameterization, type(sde).__name__, type(model).__name__)
