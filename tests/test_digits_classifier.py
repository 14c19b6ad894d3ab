"""The digits / MNIST feature classifier: shipped weights, deterministic retraining, the extractor
contract and its input checks, and the MNIST train-once-then-load cache."""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxscore.data.images import load_digits, resize_images
from jaxscore.evaluation.digits_classifier import (
    DIGITS_SPEC,
    FEATURE_DIM,
    MNIST_SPEC,
    SHIPPED_WEIGHTS,
    accuracy,
    affine_warp,
    digits_extractor,
    learning_rate,
    load_classifier,
    load_or_train_mnist_classifier,
    mnist_extractor,
    param_count,
    random_affine,
    save_classifier,
    train_digits_classifier,
    training_key,
)


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


@pytest.fixture(scope="module")
def shipped():
    return digits_extractor()


def _scale(images_u8):
    return images_u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    r"""Frechet distance of Gaussians fitted to rows of ``a`` and ``b``, in float64 numpy:
    :math:`\|\mu_a-\mu_b\|^2 + \mathrm{tr}(\Sigma_a + \Sigma_b - 2(\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2})^{1/2})`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    cross = np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a)
    trace_sqrt = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


def _features(extractor, images_u8):
    features, _ = extractor(_scale(images_u8))
    return np.asarray(features)


# --------------------------------------------------------------------------------------
# Shipped weights
# --------------------------------------------------------------------------------------


def test_shipped_weights_classify_held_out_digits(digits, shipped):
    _, test = digits
    features, logits = shipped(_scale(test["images"]))
    assert features.shape == (180, FEATURE_DIM) and features.dtype == jnp.float32
    assert logits.shape == (180, 10) and logits.dtype == jnp.float32
    assert np.mean(np.argmax(np.asarray(logits), -1) == test["labels"]) >= 0.97
    assert param_count(shipped.args[0]) < 50_000


def test_16x16_digits_are_area_averaged_to_the_8x8_features(digits, shipped):
    _, test = digits
    big = load_digits("test", size=16)["images"]  # nearest: each pixel replicated 2x2
    np.testing.assert_allclose(_features(shipped, big), _features(shipped, test["images"]), rtol=0, atol=1e-5)
    smooth = load_digits("test", size=16, interpolation="bilinear")  # averaging only approximately undoes it
    assert accuracy(shipped, smooth["images"], smooth["labels"]) >= 0.97


def test_features_separate_real_digits_from_noise(digits, shipped):
    train, test = digits
    rng = np.random.default_rng(0)
    real_train = _features(shipped, train["images"])
    x = _scale(test["images"])
    noisy = np.clip(x + 0.8 * rng.standard_normal(x.shape, dtype=np.float32), -1.0, 1.0)
    uniform = rng.uniform(-1.0, 1.0, x.shape).astype(np.float32)
    fd_real = _frechet_distance(np.asarray(shipped(x)[0]), real_train)
    fd_noisy = _frechet_distance(np.asarray(shipped(noisy)[0]), real_train)
    fd_uniform = _frechet_distance(np.asarray(shipped(uniform)[0]), real_train)
    # Ordering: held-out digits < heavily noised digits < uniform noise. The factor 4 on the last is
    # a margin for retrained weights, about half of the ratio measured with the shipped ones (8.7).
    assert fd_real < fd_noisy < fd_uniform, (fd_real, fd_noisy, fd_uniform)
    assert 4 * fd_real < fd_uniform, (fd_real, fd_uniform)


def test_shipped_file_round_trips_and_is_checked(tmp_path):
    params = load_classifier(SHIPPED_WEIGHTS, 8)
    path = tmp_path / "copy.npz"
    save_classifier(path, params, 8)
    jax.tree.map(np.testing.assert_array_equal, load_classifier(path, 8), params)
    with pytest.raises(ValueError, match="for 28x28 images, got format 1 for 8x8"):
        load_classifier(path, 28)
    with pytest.raises(ValueError, match="expected the 28x28 classifier's parameters"):
        save_classifier(tmp_path / "bad.npz", params, 28)
    with open(tmp_path / "wrong.npz", "wb") as f:
        np.savez(f, format_version=np.int64(1), image_size=np.int64(8), kernel=np.zeros(3))
    with pytest.raises(ValueError, match="expected parameters"):
        load_classifier(tmp_path / "wrong.npz", 8)
    assert sorted(os.listdir(tmp_path)) == ["copy.npz", "wrong.npz"]  # no temporary file left behind


# --------------------------------------------------------------------------------------
# The extractor contract and its input checks
# --------------------------------------------------------------------------------------


def test_extractor_is_a_pytree_that_jit_traces(digits, shipped):
    _, test = digits
    x = _scale(test["images"][:16])
    params = load_classifier(SHIPPED_WEIGHTS, 8)
    assert len(jax.tree_util.tree_leaves(shipped)) == len(jax.tree_util.tree_leaves(params))
    through_jit = jax.jit(lambda extractor, images: extractor(images))(shipped, x)
    direct = shipped(x)
    np.testing.assert_allclose(through_jit[0], direct[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(through_jit[1], direct[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((4, 28, 28, 1), r"expected square digits \[B, 8k, 8k, 1\].*got shape \(4, 28, 28, 1\)"),
        ((4, 8, 16, 1), r"expected square digits.*got shape \(4, 8, 16, 1\)"),
        ((4, 8, 8, 3), r"expected grey NHWC images \[B, H, W, 1\], got shape \(4, 8, 8, 3\)"),
        ((8, 8, 1), r"expected grey NHWC images \[B, H, W, 1\], got shape \(8, 8, 1\)"),
    ],
)
def test_digits_extractor_rejects_wrong_shapes(shipped, shape, match):
    with pytest.raises(ValueError, match=match):
        shipped(jnp.zeros(shape))
    with pytest.raises(ValueError, match=match):  # at trace time, under an outer jit too
        jax.jit(lambda images: shipped(images))(jnp.zeros(shape))


def test_digits_extractor_rejects_integer_images(shipped):
    with pytest.raises(TypeError, match=r"expected floating-point images in \[-1, 1\].*got dtype uint8"):
        shipped(np.zeros((2, 8, 8, 1), np.uint8))


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


# slow: 25 s of training on 2 cores; the shipped weights' accuracy is checked in the default suite
@pytest.mark.slow
def test_retraining_reproduces_the_shipped_accuracy(digits, shipped):
    train, test = digits
    params = train_digits_classifier(train["images"], train["labels"], seed=0)
    retrained = accuracy(digits_extractor(params), test["images"], test["labels"])
    assert abs(retrained - accuracy(shipped, test["images"], test["labels"])) <= 0.01


def test_training_is_deterministic(digits):
    train, _ = digits
    run = lambda seed: train_digits_classifier(train["images"], train["labels"], seed=seed, steps=30)  # noqa: E731
    first, second, other_seed = run(0), run(0), run(1)
    jax.tree.map(np.testing.assert_array_equal, first, second)
    assert not np.array_equal(first["params"]["Dense_1"]["kernel"], other_seed["params"]["Dense_1"]["kernel"])


def test_learning_rate_is_optax_warmup_cosine():
    for steps in (1, 2, 30, DIGITS_SPEC.steps):
        warmup = min(DIGITS_SPEC.warmup_steps, max(steps - 1, 1))
        reference = optax.warmup_cosine_decay_schedule(0.0, DIGITS_SPEC.learning_rate, warmup, max(steps, 2))
        k = np.unique(np.clip([0, 1, 2, warmup - 1, warmup, warmup + 1, steps // 3, steps // 2, steps - 1], 0, steps - 1))
        ours = learning_rate(k, steps, DIGITS_SPEC)
        np.testing.assert_allclose(ours, [float(reference(int(i))) for i in k], rtol=1e-6, atol=1e-9)


def test_training_rejects_bad_data(digits):
    train, _ = digits
    with pytest.raises(TypeError, match="expected uint8 images"):
        train_digits_classifier(_scale(train["images"]), train["labels"], steps=1)
    with pytest.raises(ValueError, match=r"expected shape \[N, 28, 28, 1\]"):
        train_digits_classifier(train["images"], train["labels"], steps=1, image_size=28)
    with pytest.raises(ValueError, match=r"expected classes 0..9, got range \[1, 10\]"):
        train_digits_classifier(train["images"], train["labels"] + 1, steps=1)
    with pytest.raises(ValueError, match=r"image_size: expected one of \[8, 28\], got 16"):
        train_digits_classifier(train["images"], train["labels"], image_size=16)


def test_affine_warp_matches_closed_forms(digits):
    x = _scale(digits[0]["images"][:8])
    b = x.shape[0]
    warp = jax.jit(affine_warp)
    zeros, no_shift = np.zeros(b, np.float32), np.zeros((b, 2), np.float32)
    np.testing.assert_array_equal(warp(x, no_shift, zeros, zeros), x)
    # Shift by one row: out[i, j] = x[i - 1, j], background (-1) enters at the top.
    down = np.concatenate([-np.ones_like(x[:, :1]), x[:, :-1]], axis=1)
    one_row = np.tile(np.float32([[1.0, 0.0]]), (b, 1))
    np.testing.assert_allclose(warp(x, one_row, zeros, zeros), down, atol=1e-6)
    # A quarter turn is np.rot90 (cos(pi/2) ~ -4e-8 in float32 leaves a tiny interpolation error).
    quarter = np.full(b, np.pi / 2, np.float32)
    np.testing.assert_allclose(warp(x, no_shift, quarter, zeros), np.rot90(x, axes=(1, 2)), atol=1e-5)


def test_random_affine_stays_within_its_ranges(digits):
    x = jnp.asarray(_scale(digits[0]["images"][:8]))
    warp = jax.jit(random_affine, static_argnums=(2, 3, 4))
    moved = warp(x, jax.random.key(0), DIGITS_SPEC.max_shift, DIGITS_SPEC.max_rotation, DIGITS_SPEC.max_scale)
    # Bilinear weights are convex and the fill is -1, so values stay in [-1, 1]; the images do move.
    assert moved.shape == x.shape and float(jnp.min(moved)) >= -1.0 and float(jnp.max(moved)) <= 1.0
    assert float(jnp.max(jnp.abs(moved - x))) > 0.1


# --------------------------------------------------------------------------------------
# MNIST: train on first use, then load from the cache
# --------------------------------------------------------------------------------------


def _write_idx(path, array: np.ndarray) -> None:
    code = {np.uint8: 0x08}[array.dtype.type]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="module")
def fake_mnist(digits):
    """Digits upsampled to 28x28 stand in for MNIST (same format, no download)."""
    train, _ = digits
    return resize_images(train["images"][:512], 28, "bilinear"), train["labels"][:512]


def test_mnist_classifier_trains_once_then_loads_from_the_cache(tmp_path, fake_mnist):
    images, labels = fake_mnist
    first = load_or_train_mnist_classifier(images, labels, cache_dir=tmp_path, steps=20)
    assert first.trained and os.path.dirname(first.path) == str(tmp_path)
    mtime = os.stat(first.path).st_mtime_ns
    second = load_or_train_mnist_classifier(images, labels, cache_dir=tmp_path, steps=20)
    assert not second.trained and second.path == first.path
    assert os.stat(first.path).st_mtime_ns == mtime
    jax.tree.map(np.testing.assert_array_equal, second.params, jax.device_get(first.params))
    assert param_count(first.params) < 50_000

    # The IDX-folder form reads the same data, so it finds the same cache entry (no rewrite).
    data = tmp_path / "mnist"
    data.mkdir()
    _write_idx(data / "train-images-idx3-ubyte.gz", images[..., 0])
    _write_idx(data / "train-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    extractor = mnist_extractor(data_path=data, cache_dir=tmp_path, steps=20)
    assert os.stat(first.path).st_mtime_ns == mtime
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(first.path), "mnist"])
    features, logits = extractor(_scale(images[:5]))
    assert features.shape == (5, FEATURE_DIM) and logits.shape == (5, 10)
    with pytest.raises(ValueError, match=r"expected MNIST images \[B, 28, 28, 1\], got shape \(2, 8, 8, 1\)"):
        extractor(jnp.zeros((2, 8, 8, 1)))


def test_mnist_cache_key_covers_data_and_settings(fake_mnist):
    images, labels = fake_mnist
    key = training_key(images, labels, MNIST_SPEC, 0, 20)
    assert key == training_key(images.copy(), labels.copy(), MNIST_SPEC, 0, 20)
    changed = images.copy()
    changed[0, 0, 0, 0] ^= 1
    others = [
        training_key(changed, labels, MNIST_SPEC, 0, 20),
        training_key(images, labels[::-1].copy(), MNIST_SPEC, 0, 20),
        training_key(images, labels, MNIST_SPEC, 1, 20),
        training_key(images, labels, MNIST_SPEC, 0, 21),
        training_key(images, labels, dataclasses.replace(MNIST_SPEC, learning_rate=1e-3), 0, 20),
    ]
    assert len({key, *others}) == 1 + len(others)


def test_mnist_extractor_needs_exactly_one_data_source(fake_mnist, tmp_path):
    images, labels = fake_mnist
    with pytest.raises(ValueError, match="exactly one"):
        mnist_extractor(cache_dir=tmp_path)
    with pytest.raises(ValueError, match="exactly one"):
        mnist_extractor(images, labels, data_path=tmp_path, cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"expected shape \[N, 28, 28, 1\]"):
        mnist_extractor(images[:, :8, :8], labels, cache_dir=tmp_path)


def test_features_have_unit_scale_and_rescaling_keeps_logits(digits, shipped):
    """Shipped features: mean per-dimension variance 1 on the train digits (KID's cubic kernel
    assumes x.y/F = O(1)); rescaling the feature layer changes no logit."""
    from jaxscore.evaluation.digits_classifier import DIGITS_SPEC, unit_feature_scale

    train, test = digits
    feats = _features(shipped, train["images"]).astype(np.float64)
    assert np.mean(np.var(feats, axis=0, ddof=1)) == pytest.approx(1.0, rel=1e-4)
    params = load_classifier(SHIPPED_WEIGHTS, 8)
    doubled = jax.tree.map(lambda a: a, params)
    doubled["params"]["Dense_0"] = {k: v * 2.0 for k, v in params["params"]["Dense_0"].items()}
    doubled["params"]["Dense_1"] = {"kernel": params["params"]["Dense_1"]["kernel"] / 2.0,
                                    "bias": params["params"]["Dense_1"]["bias"]}
    restored = unit_feature_scale(doubled, train["images"], DIGITS_SPEC)
    x = _scale(test["images"])
    np.testing.assert_allclose(np.asarray(digits_extractor(restored)(x)[1]), np.asarray(shipped(x)[1]),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(digits_extractor(restored)(x)[0]), np.asarray(shipped(x)[0]),
                               rtol=1e-4, atol=1e-4)
