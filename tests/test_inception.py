"""FID Inception-v3 (jaxscore.evaluation.inception) and its weight converter.

Fast tests run in the default environment on random weights. The parity tests against
pytorch-fid 0.3.0 (marked slow) need the optional torch extra: torch, torchvision, pytorch-fid.
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxscore.evaluation import inception as inc
from jaxscore.evaluation.convert_inception import state_dict_to_variables

TORCH_REASON = "optional extra 'torch' (torch, torchvision, pytorch-fid==0.3.0) is not installed"


def random_flat_variables(seed: int) -> dict[str, np.ndarray]:
    """Random FID-Inception variables (He-scaled kernels, non-trivial BN statistics) keyed like the .npz."""
    rng = np.random.default_rng(seed)

    def leaf(key, shape):
        if key.endswith("kernel"):
            return rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
        if key.endswith("var"):
            return rng.uniform(0.5, 2.0, shape)
        if key.endswith("scale"):
            return rng.uniform(0.5, 1.5, shape)
        return 0.1 * rng.standard_normal(shape)  # BN bias / mean, fc bias

    return {k: leaf(k, s).astype(np.float32) for k, s in inc.inception_param_shapes().items()}


@pytest.fixture(scope="module")
def variables():
    return inc.unflatten_variables(random_flat_variables(0))


# ----------------------------------------------------------------------------------------------
# Fast tests (no torch)


def test_output_shapes_and_dtypes_for_any_input_size_and_channels(variables):
    extractor = inc.inception_extractor(variables)
    for shape in [(2, 32, 32, 1), (3, 299, 299, 3), (1, 512, 384, 3)]:
        pool, logits = jax.eval_shape(extractor, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert (pool.shape, pool.dtype) == ((shape[0], 2048), jnp.float32)
        assert (logits.shape, logits.dtype) == ((shape[0], 1008), jnp.float32)


def test_bad_images_raise_naming_expected_and_given(variables):
    extractor = inc.inception_extractor(variables)
    with pytest.raises(ValueError, match=r"C = 1 .* or 3 .* got C = 2"):
        jax.eval_shape(extractor, jax.ShapeDtypeStruct((2, 32, 32, 2), jnp.float32))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\].*got shape \(32, 32, 3\)"):
        jax.eval_shape(extractor, jax.ShapeDtypeStruct((32, 32, 3), jnp.float32))
    with pytest.raises(TypeError, match="uint8"):
        jax.eval_shape(extractor, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.uint8))
    small = inc.inception_extractor(variables, resize_to=None)
    with pytest.raises(ValueError, match=r"H, W >= 75.*\(64, 80\)"):
        jax.eval_shape(small, jax.ShapeDtypeStruct((1, 64, 80, 3), jnp.float32))


def test_to_rgb_repeats_the_grayscale_channel():
    gray = jax.random.uniform(jax.random.key(0), (2, 5, 4, 1), minval=-1, maxval=1)
    rgb = inc.to_rgb(gray)
    assert rgb.shape == (2, 5, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], gray[..., 0])
    np.testing.assert_array_equal(inc.to_rgb(rgb), rgb)


def torch_bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of torch's bilinear, align_corners=False, no antialias (ATen's
    ``area_pixel_compute_source_index``: s = max(0, (i + 1/2) n_in / n_out - 1/2), i0 = floor(s),
    i1 = min(i0 + 1, n_in - 1), weights 1 - (s - i0) and s - i0)."""
    a = np.zeros((n_out, n_in))
    for i in range(n_out):
        s = max(0.0, (i + 0.5) * n_in / n_out - 0.5)
        i0 = min(int(np.floor(s)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = s - i0
        a[i, i0] += 1 - frac
        a[i, i1] += frac
    return a


@pytest.mark.parametrize("size_in, size_out", [((8, 5), (19, 13)), ((19, 23), (7, 6)), ((32, 32), (299, 299))])
def test_bilinear_resize_is_torch_interpolate_without_antialias(size_in, size_out):
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, *size_in, 3)), np.float64)
    a_h = torch_bilinear_matrix(size_in[0], size_out[0])
    a_w = torch_bilinear_matrix(size_in[1], size_out[1])
    expected = np.einsum("ph,bhwc,qw->bpqc", a_h, x, a_w, optimize=True)
    got = inc.bilinear_resize(jnp.asarray(x, jnp.float32), *size_out)
    np.testing.assert_allclose(got, expected, atol=1e-5)  # float32 rounding of O(1) values
    if size_out[0] < size_in[0]:  # the default (antialiased) resize would not match: the test can fail
        antialiased = jax.image.resize(jnp.asarray(x, jnp.float32), got.shape, "linear")
        assert np.max(np.abs(antialiased - expected)) > 1e-2


def test_extractor_runs_head_is_pool_times_kernel_and_new_params_reuse_the_compilation(variables):
    extractor = inc.inception_extractor(variables, resize_to=75)  # small: the network's minimum size
    images = jax.random.uniform(jax.random.key(2), (2, 32, 32, 1), minval=-1, maxval=1)
    pool, logits = extractor(images)
    assert np.all(np.isfinite(pool)) and np.all(np.isfinite(logits))
    assert np.min(pool) >= 0  # mean of ReLU outputs
    assert np.std(pool) > 0
    kernel = np.asarray(variables["params"]["fc"]["kernel"], np.float64)
    np.testing.assert_allclose(logits, np.asarray(pool, np.float64) @ kernel, rtol=1e-4, atol=1e-5)

    apply = extractor.func
    compiled_before = apply._cache_size()
    other = inc.inception_extractor(inc.unflatten_variables(random_flat_variables(1)), resize_to=75)
    assert other.func is apply
    pool_other, _ = other(images)
    assert apply._cache_size() == compiled_before
    assert np.max(np.abs(pool_other - pool)) > 1e-3

    @jax.jit
    def mean_feature(ex, x):  # the extractor is a pytree: it passes through jit as an argument
        return jnp.mean(ex(x)[0])

    np.testing.assert_allclose(mean_feature(extractor, images), np.mean(pool), rtol=1e-5)


def test_save_load_roundtrip(tmp_path, variables):
    path = inc.save_inception_params(variables, tmp_path / "inception_fid.npz")
    assert path == tmp_path / "inception_fid.npz" and path.is_file()
    loaded = inc.load_inception_params(path)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(variables)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(variables)):
        np.testing.assert_array_equal(a, b)


def test_load_names_the_file_and_the_first_bad_key(tmp_path):
    flat = random_flat_variables(0)
    missing = "batch_stats/Mixed_6c/branch7x7dbl_3/bn/var"
    path = tmp_path / "missing.npz"
    np.savez(path, **{k: v for k, v in flat.items() if k != missing})
    with pytest.raises(KeyError, match=rf"(?s)missing\.npz.*{missing}.*convert-inception"):
        inc.load_inception_params(path)

    bad_shape = dict(flat, **{"params/fc/kernel": flat["params/fc/kernel"].T})
    path = tmp_path / "transposed.npz"
    np.savez(path, **bad_shape)
    with pytest.raises(ValueError, match=r"transposed\.npz.*params/fc/kernel.*\(1008, 2048\).*\(2048, 1008\)"):
        inc.load_inception_params(path)

    path = tmp_path / "extra.npz"
    np.savez(path, **dict(flat, **{"params/AuxLogits/fc/kernel": np.zeros((768, 1008), np.float32)}))
    with pytest.raises(ValueError, match=r"extra\.npz.*AuxLogits"):
        inc.load_inception_params(path)


def test_missing_weights_file_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)pt_inception-2015-12-05-6726825d\.pth.*jaxscore convert-inception"):
        inc.load_inception_params(tmp_path / "nope.npz")


def torch_layout_state_dict(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The torch ``state_dict`` (names, OIHW / [out, in] layouts) holding the same numbers as ``flat``."""
    torch_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
    state = {}
    for key, value in flat.items():
        _, *path, leaf = key.split("/")
        if path[-1] == "conv":
            value = np.transpose(value, (3, 2, 0, 1))  # [kh, kw, I, O] -> [O, I, kh, kw]
        elif path == ["fc"] and leaf == "kernel":
            value = value.T
        state[".".join(path + [torch_leaf[leaf]])] = value
        if leaf == "var":
            state[".".join(path + ["num_batches_tracked"])] = np.array(0)
    return state


def test_state_dict_mapping_transposes_conv_and_fc_and_routes_bn_statistics():
    flat = random_flat_variables(3)
    state = torch_layout_state_dict(flat)
    assert len(state) == 472 + 94  # 94 BasicConv2d, each with num_batches_tracked
    conv = state["Mixed_7c.branch3x3_2a.conv.weight"]
    assert conv.shape == (384, 384, 1, 3)
    variables = state_dict_to_variables(state)
    kernel = np.asarray(variables["params"]["Mixed_7c"]["branch3x3_2a"]["conv"]["kernel"])
    assert kernel.shape == (1, 3, 384, 384)
    assert kernel[0, 2, 5, 7] == conv[7, 5, 0, 2]
    np.testing.assert_array_equal(
        variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["mean"], state["Conv2d_1a_3x3.bn.running_mean"]
    )
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], state["fc.weight"].T)
    for key, value in inc.flatten_variables(variables).items():
        np.testing.assert_array_equal(value, flat[key])

    with pytest.raises(ValueError, match=r"AuxLogits\.conv0\.conv\.weigth.*not part of"):
        state_dict_to_variables(dict(state, **{"AuxLogits.conv0.conv.weigth": np.zeros(3)}))
    with pytest.raises(KeyError, match=r"my_dict.*params/Mixed_5b/branch_pool/conv/kernel"):
        state_dict_to_variables(
            {k: v for k, v in state.items() if k != "Mixed_5b.branch_pool.conv.weight"}, source="my_dict"
        )


# ----------------------------------------------------------------------------------------------
# Parity with pytorch-fid 0.3.0 (slow; optional torch extra)


def random_fid_inception_state_dict(torch, torchvision, seed: int) -> dict:
    """A deterministic random state_dict of pytorch-fid's ``fid_inception_v3()`` layout.

    The FID blocks subclass torchvision's and keep their parameters, so torchvision's
    ``Inception3(num_classes=1008, aux_logits=False)`` has the same keys and shapes. Kernels are
    He-scaled (activations stay O(1) through the 94 layers) and every BatchNorm gets random
    scale, bias, running mean and running variance, so a wrong BN mapping changes the output.
    """
    torch.manual_seed(seed)
    net = torchvision.models.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.1)
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
            elif isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 2048**-0.5)
                module.bias.normal_(0.0, 0.1)
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def torch_reference():
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    torchvision = pytest.importorskip("torchvision", reason=TORCH_REASON)
    pfid = pytest.importorskip("pytorch_fid.inception", reason=TORCH_REASON)
    state_dict = random_fid_inception_state_dict(torch, torchvision, seed=0)
    original = pfid.load_state_dict_from_url
    pfid.load_state_dict_from_url = lambda *args, **kwargs: state_dict  # no download: our random weights
    try:
        net = pfid.InceptionV3([3], resize_input=True, normalize_input=True, use_fid_inception=True).eval()
    finally:
        pfid.load_state_dict_from_url = original
    return torch, net, state_dict


def relative_max_error(got, reference) -> float:
    got, reference = np.asarray(got, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(got - reference)) / np.max(np.abs(reference)))


# Tolerance: both sides compute in float32 but sum the ~94 convolutions in different orders
# (oneDNN vs XLA) and fold BatchNorm differently; measured: 3e-7..1.3e-6 relative at pool3 and
# logits. 1e-4 of the feature scale is far below the effect of any wrong detail (measured with
# the same weights: average instead of max pool in Mixed_7c 0.2, count_include_pad=True 0.05,
# antialiased downsampling 0.27).
PARITY_RTOL = 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(4, 32, 32), (4, 299, 299), (1, 512, 512)], ids=["up32", "same299", "down512"])
def test_pool3_and_logits_match_pytorch_fid(torch_reference, shape):
    torch, net, state_dict = torch_reference
    variables = state_dict_to_variables(state_dict)
    extractor = inc.inception_extractor(variables, logits_bias=True)
    unbiased = inc.inception_extractor(variables)
    batch, height, width = shape
    images01 = np.random.default_rng(sum(shape)).uniform(0.0, 1.0, (batch, 3, height, width)).astype(np.float32)

    with torch.no_grad():
        pool_t = net(torch.from_numpy(images01))[0].flatten(1)
        logits_t = torch.nn.functional.linear(pool_t, state_dict["fc.weight"], state_dict["fc.bias"])
        logits_unbiased_t = pool_t @ state_dict["fc.weight"].T
    images = jnp.asarray(2 * images01.transpose(0, 2, 3, 1) - 1)  # NCHW [0, 1] -> NHWC [-1, 1]
    pool, logits = extractor(images)
    _, logits_unbiased = unbiased(images)

    assert pool.shape == (batch, 2048) and logits.shape == (batch, 1008)
    assert relative_max_error(pool, pool_t.numpy()) < PARITY_RTOL
    assert relative_max_error(logits, logits_t.numpy()) < PARITY_RTOL
    assert relative_max_error(logits_unbiased, logits_unbiased_t.numpy()) < PARITY_RTOL


@pytest.mark.slow
def test_convert_pytorch_fid_weights_from_a_pth_file(tmp_path, torch_reference):
    from jaxscore.evaluation.convert_inception import convert_pytorch_fid_weights

    torch, _, state_dict = torch_reference
    src = tmp_path / "pt_inception-random.pth"
    torch.save(state_dict, src)
    out = convert_pytorch_fid_weights(src, tmp_path / "inception_fid.npz")
    loaded = inc.load_inception_params(out)
    np.testing.assert_array_equal(
        loaded["params"]["Mixed_5b"]["branch5x5_2"]["conv"]["kernel"],
        state_dict["Mixed_5b.branch5x5_2.conv.weight"].numpy().transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        loaded["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
        state_dict["Mixed_7c.branch_pool.bn.running_var"].numpy(),
    )
