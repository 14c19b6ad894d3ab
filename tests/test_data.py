"""Image loaders (real files written into tmp_path) and the deterministic per-host pipeline."""

from __future__ import annotations

import gzip
import os
import struct

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image  # matplotlib depends on Pillow, so it is always installed

from jaxscore.data.images import (
    check_dataset,
    image_folder_classes,
    heldout_split,
    load_array_file,
    load_cifar10_binary,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist_idx,
    parse_value_range,
    read_idx,
    resize_images,
)
from jaxscore.data.pipeline import (
    batch_at_step,
    batch_indices,
    dequantize_images,
    epoch_permutation,
    scale_images,
    unscale_images,
)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _indexed_dataset(n, h=4, w=5, c=3, seed=0):
    """Random uint8 images whose labels are their own indices (so a batch says which rows it holds)."""
    images = _rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    return {"images": images, "labels": np.arange(n, dtype=np.int32)}


# ----------------------------------------------------------------------------- digits


def test_digits_all_train_test():
    ds = load_digits("all")
    assert ds["images"].shape == (1797, 8, 8, 1) and ds["images"].dtype == np.uint8
    assert ds["labels"].shape == (1797,) and ds["labels"].dtype == np.int32
    assert set(np.unique(ds["labels"])) == set(range(10))
    assert ds["images"].min() == 0 and ds["images"].max() == 255  # 16 -> 255
    from sklearn.datasets import load_digits as sk

    np.testing.assert_array_equal(ds["images"][..., 0], np.rint(sk().images * 255 / 16).astype(np.uint8))
    train, test = load_digits("train"), load_digits("test")
    assert len(train["labels"]) == 1617 and len(test["labels"]) == 180  # last 10% is the test set
    np.testing.assert_array_equal(np.concatenate([train["images"], test["images"]]), ds["images"])
    np.testing.assert_array_equal(np.concatenate([train["labels"], test["labels"]]), ds["labels"])


def test_digits_upsampled_16():
    small = load_digits("test")["images"]
    near = load_digits("test", 16)["images"]
    assert near.shape == (180, 16, 16, 1)
    np.testing.assert_array_equal(near, small.repeat(2, axis=1).repeat(2, axis=2))
    bil = load_digits("test", 16, interpolation="bilinear")["images"]
    ref = jax.image.resize(small.astype(np.float32), (180, 16, 16, 1), "linear")
    # jax works in float32, we in float64: a value that lands on .5 may round either way -> 1 level.
    diff = np.abs(bil.astype(int) - np.rint(np.asarray(ref)).astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_resize_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        resize_images(np.zeros((1, 4, 4, 1), np.float32), 8)
    with pytest.raises(ValueError, match="method"):
        resize_images(np.zeros((1, 4, 4, 1), np.uint8), 8, "cubic")


# ----------------------------------------------------------------------------- .npy / .npz


def test_array_file_npy_and_npz(tmp_path):
    imgs = _rng().integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", imgs)
    ds = load_array_file(tmp_path / "a.npy")
    assert ds["images"].shape == (6, 5, 4, 1) and ds["labels"] is None
    np.testing.assert_array_equal(ds["images"][..., 0], imgs)

    rgb = _rng(1).integers(0, 256, size=(6, 5, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "b.npz", images=rgb, labels=np.arange(6, dtype=np.int64))
    ds = load_array_file(tmp_path / "b.npz")
    np.testing.assert_array_equal(ds["images"], rgb)
    assert ds["labels"].dtype == np.int32 and list(ds["labels"]) == list(range(6))

    np.savez(tmp_path / "c.npz", x=rgb.astype(np.int64), y=np.zeros(6, np.uint8))  # ints in 0..255 accepted
    ds = load_array_file(tmp_path / "c.npz")
    np.testing.assert_array_equal(ds["images"], rgb)
    assert ds["images"].dtype == np.uint8


def test_array_file_float_policy(tmp_path):
    k = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    np.save(tmp_path / "f01.npy", k / 255.0)
    with pytest.raises(ValueError, match=r"f01\.npy.*value_range"):
        load_array_file(tmp_path / "f01.npy")
    np.testing.assert_array_equal(load_array_file(tmp_path / "f01.npy", value_range=(0, 1))["images"][..., 0], k)
    np.save(tmp_path / "fpm1.npy", (k / 127.5 - 1).astype(np.float32))
    np.testing.assert_array_equal(load_array_file(tmp_path / "fpm1.npy", value_range=(-1, 1))["images"][..., 0], k)
    with pytest.raises(ValueError, match=r"fpm1\.npy.*must lie in value_range"):
        load_array_file(tmp_path / "fpm1.npy", value_range=(0, 1))


def test_array_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_array_file(tmp_path / "missing.npy")
    obj = np.empty(3, dtype=object)
    obj[:] = [np.zeros((2, 2)), "x", None]
    np.save(tmp_path / "obj.npy", obj, allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy.*allow_pickle=False"):
        load_array_file(tmp_path / "obj.npy")
    np.savez(tmp_path / "objz.npz", images=obj)
    with pytest.raises(ValueError, match=r"objz\.npz.*allow_pickle=False"):
        load_array_file(tmp_path / "objz.npz")
    np.savez(tmp_path / "nokey.npz", foo=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"nokey\.npz.*'images'"):
        load_array_file(tmp_path / "nokey.npz")
    np.savez(tmp_path / "badlab.npz", images=np.zeros((4, 3, 3), np.uint8), labels=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match=r"badlab\.npz labels.*\(4,\)"):
        load_array_file(tmp_path / "badlab.npz")
    np.save(tmp_path / "nchw.npy", np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"nchw\.npy.*channels-first"):
        load_array_file(tmp_path / "nchw.npy")
    np.save(tmp_path / "big.npy", np.full((2, 3, 3), 300, np.int32))
    with pytest.raises(ValueError, match=r"big\.npy.*0\.\.255"):
        load_array_file(tmp_path / "big.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"junk\.npy"):
        load_array_file(tmp_path / "junk.npy")


def test_array_file_mmap(tmp_path):
    imgs = _rng().integers(0, 256, size=(20, 4, 4, 3), dtype=np.uint8)
    np.save(tmp_path / "m.npy", imgs)
    ds = load_array_file(tmp_path / "m.npy", mmap=True)
    assert isinstance(ds["images"], np.memmap)
    b = batch_at_step(ds, 3, global_batch_size=8, seed=0)
    b_mem = batch_at_step({"images": imgs, "labels": None}, 3, global_batch_size=8, seed=0)
    np.testing.assert_array_equal(b["images"], b_mem["images"])


# ----------------------------------------------------------------------------- MNIST IDX


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x0C: ">i4"}[code]
    header = struct.pack(">HBB", 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dt).tobytes()


def _write_mnist(directory, n_train=7, n_test=3, gz=False):
    os.makedirs(directory, exist_ok=True)
    r = _rng(3)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        imgs = r.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labs = r.integers(0, 10, size=n, dtype=np.uint8)
        for kind, arr, nd in (("images", imgs, 3), ("labels", labs, 1)):
            data = _idx_bytes(arr)
            name = f"{prefix}-{kind}-idx{nd}-ubyte"
            if gz:
                (directory / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (directory / name).write_bytes(data)
        out[prefix] = (imgs, labs)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    ref = _write_mnist(tmp_path, gz=gz)
    tr = load_mnist_idx(tmp_path, "train")
    assert tr["images"].shape == (7, 28, 28, 1) and tr["images"].dtype == np.uint8
    np.testing.assert_array_equal(tr["images"][..., 0], ref["train"][0])
    np.testing.assert_array_equal(tr["labels"], ref["train"][1].astype(np.int32))
    te = load_mnist_idx(tmp_path, "test")
    np.testing.assert_array_equal(te["images"][..., 0], ref["t10k"][0])
    al = load_mnist_idx(tmp_path, "all")
    assert al["images"].shape[0] == 10
    suffix = ".gz" if gz else ""
    pair = (tmp_path / f"t10k-images-idx3-ubyte{suffix}", tmp_path / f"t10k-labels-idx1-ubyte{suffix}")
    np.testing.assert_array_equal(load_mnist_idx(pair)["labels"], te["labels"])
    assert load_mnist_idx(pair[0])["labels"] is None


def test_read_idx_other_dtype(tmp_path):
    arr = np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 1000
    (tmp_path / "ints.idx").write_bytes(_idx_bytes(arr, 0x0C))
    np.testing.assert_array_equal(read_idx(tmp_path / "ints.idx"), arr)


def test_mnist_idx_errors(tmp_path):
    ref = _write_mnist(tmp_path)
    img_file = tmp_path / "train-images-idx3-ubyte"
    good = img_file.read_bytes()
    img_file.write_bytes(good[:-5])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: truncated IDX data"):
        load_mnist_idx(tmp_path)
    img_file.write_bytes(good + b"\x00")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: too long"):
        load_mnist_idx(tmp_path)
    img_file.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: wrong magic number 0x12340803"):
        load_mnist_idx(tmp_path)
    img_file.write_bytes(good)
    lab_file = tmp_path / "train-labels-idx1-ubyte"
    lab_file.write_bytes(_idx_bytes(ref["train"][1][:5]))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: 5 labels but .* 7 images"):
        load_mnist_idx(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist_idx(tmp_path, "test")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(ValueError, match=r"bad\.gz: corrupt or truncated gzip"):
        read_idx(tmp_path / "bad.gz")


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar_records(n, seed):
    r = _rng(seed)
    imgs = r.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = r.integers(0, 10, size=n, dtype=np.uint8)
    chw = imgs.transpose(0, 3, 1, 2).reshape(n, 3072)
    return np.concatenate([labels[:, None], chw], axis=1).tobytes(), imgs, labels


def test_cifar10_binary(tmp_path):
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    train_imgs, train_labels = [], []
    for i in range(1, 6):
        data, imgs, labels = _cifar_records(2, seed=i)
        (root / f"data_batch_{i}.bin").write_bytes(data)
        train_imgs.append(imgs)
        train_labels.append(labels)
    data, test_imgs, test_labels = _cifar_records(3, seed=9)
    (root / "test_batch.bin").write_bytes(data)
    tr = load_cifar10_binary(tmp_path)  # parent of cifar-10-batches-bin works too
    assert tr["images"].shape == (10, 32, 32, 3) and tr["images"].flags.c_contiguous
    np.testing.assert_array_equal(tr["images"], np.concatenate(train_imgs))
    np.testing.assert_array_equal(tr["labels"], np.concatenate(train_labels))
    te = load_cifar10_binary(root, "test")
    np.testing.assert_array_equal(te["images"], test_imgs)
    np.testing.assert_array_equal(te["labels"], test_labels)
    # red channel of pixel (row 0, col 1) is byte 1 + 1 of the record (CHW order)
    assert te["images"][0, 0, 1, 0] == data[2] and te["images"][0, 0, 0, 1] == data[1 + 1024]
    assert load_cifar10_binary(root, "all")["images"].shape[0] == 13


def test_cifar10_errors(tmp_path):
    data, _, _ = _cifar_records(2, seed=0)
    (tmp_path / "test_batch.bin").write_bytes(data[:-7])
    with pytest.raises(ValueError, match=r"test_batch\.bin: size 6139 bytes is not a positive multiple"):
        load_cifar10_binary(tmp_path, "test")
    bad = bytearray(data)
    bad[3073] = 10  # label of record 1
    (tmp_path / "test_batch.bin").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"test_batch\.bin: record 1 has label 10"):
        load_cifar10_binary(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin"):
        load_cifar10_binary(tmp_path, "train")


# ----------------------------------------------------------------------------- image folder


def _save_png(path, arr):
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(path)


def test_image_folder_flat_and_classes(tmp_path):
    r = _rng(5)
    flat = tmp_path / "flat"
    flat.mkdir()
    imgs = r.integers(0, 256, size=(3, 6, 7, 3), dtype=np.uint8)
    for i, im in enumerate(imgs):
        _save_png(flat / f"img{i}.png", im)
    (flat / "notes.txt").write_text("ignored")
    ds = load_image_folder(flat)
    assert ds["labels"] is None
    np.testing.assert_array_equal(ds["images"], imgs)  # PNG is lossless
    np.testing.assert_array_equal(load_image_folder(flat, backend="matplotlib")["images"], imgs)

    cls = tmp_path / "cls"
    grey = r.integers(0, 256, size=(5, 6, 7, 1), dtype=np.uint8)
    for name, rows in (("dog", [0, 1]), ("cat", [2, 3, 4])):
        (cls / name).mkdir(parents=True)
        for i in rows:
            _save_png(cls / name / f"{i}.png", grey[i])
    assert image_folder_classes(cls) == ["cat", "dog"]
    ds = load_image_folder(cls)
    assert ds["images"].shape == (5, 6, 7, 1)
    np.testing.assert_array_equal(ds["labels"], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(ds["images"], grey[[2, 3, 4, 0, 1]])
    np.testing.assert_array_equal(load_image_folder(cls, backend="matplotlib")["images"], ds["images"])
    assert load_image_folder(cls, channels=3)["images"].shape == (5, 6, 7, 3)


def test_image_folder_jpeg_and_mixed_channels(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], (16, 1, 3))
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(smooth[..., 0]).save(tmp_path / "b.png")  # grey joins an RGB folder as RGB
    ds = load_image_folder(tmp_path)
    assert ds["images"].shape == (2, 16, 16, 3)
    assert np.abs(ds["images"][0].astype(int) - smooth).max() <= 8  # JPEG is lossy
    np.testing.assert_array_equal(ds["images"][1], smooth)


def test_image_folder_errors(tmp_path):
    _save_png(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    _save_png(tmp_path / "b.png", np.zeros((5, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png: image size 4x5"):
        load_image_folder(tmp_path)
    (tmp_path / "b.png").unlink()
    (tmp_path / "c.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match=r"c\.png: cannot decode"):
        load_image_folder(tmp_path)
    (tmp_path / "c.png").unlink()
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="both image files"):
        load_image_folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no PNG/JPEG images"):
        load_image_folder(empty)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- config dispatch


def test_load_dataset_config(tmp_path):
    cfg = ml_collections.ConfigDict({"name": "digits", "split": "test", "image_size": 16})
    assert load_dataset(cfg)["images"].shape == (180, 16, 16, 1)
    np.savez(tmp_path / "d.npz", images=np.zeros((10, 8, 8, 3), np.uint8))
    cfg = ml_collections.ConfigDict({"name": "array", "path": str(tmp_path / "d.npz"), "num_channels": 3})
    assert load_dataset(cfg)["images"].shape == (9, 8, 8, 3)  # the last 10% held out
    cfg.image_size = 32
    with pytest.raises(ValueError, match="image_size.*8x8"):
        load_dataset(cfg)
    with pytest.raises(ValueError, match="config.name"):
        load_dataset({"name": "imagenet"})
    with pytest.raises(ValueError, match="config.path"):
        load_dataset({"name": "mnist"})


def _rows(images):
    """Each image as bytes: a set of rows says which images a split holds."""
    return [im.tobytes() for im in np.asarray(images)]


@pytest.mark.parametrize("labelled", [False, True])
def test_array_split_is_held_out(tmp_path, labelled):
    """data.name=array: train and test are disjoint, together are the file (in file order), and
    the test rows are the last round(0.1 * n_c) of each class (the last 10% when unlabelled)."""
    n = 40
    images = _rng(3).integers(0, 256, size=(n, 4, 4, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 10).astype(np.int32)  # sorted by label, as a class folder reads
    np.savez(tmp_path / "a.npz", images=images, **({"labels": labels} if labelled else {}))
    base = {"name": "array", "path": str(tmp_path / "a.npz"), "test_fraction": 0.1}
    train, test, full = (load_dataset({**base, "split": s}) for s in ("train", "test", "all"))
    np.testing.assert_array_equal(full["images"], images)
    assert not set(_rows(train["images"])) & set(_rows(test["images"]))
    assert sorted(_rows(train["images"]) + _rows(test["images"])) == sorted(_rows(images))
    if labelled:
        want_test = np.concatenate([np.arange(10 * c + 9, 10 * c + 10) for c in range(4)])  # 1 per class
        np.testing.assert_array_equal(test["labels"], labels[want_test])
    else:
        want_test = np.arange(36, 40)
    np.testing.assert_array_equal(test["images"], images[want_test])
    np.testing.assert_array_equal(train["images"], np.delete(images, want_test, axis=0))


def test_array_split_mmap_and_test_path(tmp_path):
    """An unlabelled mmap'ed .npy stays a memory map after the split; data.test_path is the test set."""
    images = _rng(4).integers(0, 256, size=(20, 3, 3, 1), dtype=np.uint8)
    other = _rng(5).integers(0, 256, size=(5, 3, 3, 1), dtype=np.uint8)
    np.save(tmp_path / "train.npy", images)
    np.save(tmp_path / "test.npy", other)
    train = load_dataset({"name": "array", "path": str(tmp_path / "train.npy"), "mmap": True, "test_fraction": 0.25})
    assert isinstance(train["images"], np.memmap)
    np.testing.assert_array_equal(train["images"], images[:15])
    cfg = {"name": "array", "path": str(tmp_path / "train.npy"), "test_path": str(tmp_path / "test.npy")}
    np.testing.assert_array_equal(load_dataset({**cfg, "split": "train"})["images"], images)
    np.testing.assert_array_equal(load_dataset({**cfg, "split": "test"})["images"], other)
    np.testing.assert_array_equal(load_dataset({**cfg, "split": "all"})["images"], np.concatenate([images, other]))
    with pytest.raises(ValueError, match="test_path.*path itself"):
        load_dataset({**cfg, "test_path": str(tmp_path / "train.npy"), "split": "test"})


def test_heldout_split_errors():
    ds = {"images": np.zeros((3, 2, 2, 1), np.uint8), "labels": None}
    with pytest.raises(ValueError, match=r"test_fraction=0.1 of 3 images leaves 0 test"):
        heldout_split(ds, "test", 0.1)
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"test_fraction: expected a held-out fraction in \(0, 1\)"):
            heldout_split(ds, "train", bad)
    with pytest.raises(ValueError, match="split: expected one of"):
        heldout_split(ds, "valid", 0.5)


def test_folder_split_is_per_class(tmp_path):
    """An image folder with class sub-folders holds out the last image of each class, not the last class."""
    for name, values in (("cat", (10, 20, 30, 40)), ("dog", (50, 60, 70, 80))):
        (tmp_path / name).mkdir()
        for i, v in enumerate(values):
            Image.fromarray(np.full((4, 4), v, np.uint8)).save(tmp_path / name / f"{i}.png")
    cfg = {"name": "folder", "path": str(tmp_path), "test_fraction": 0.25}
    test = load_dataset({**cfg, "split": "test"})
    train = load_dataset({**cfg, "split": "train"})
    assert list(test["images"][:, 0, 0, 0]) == [40, 80] and list(test["labels"]) == [0, 1]
    assert list(train["images"][:, 0, 0, 0]) == [10, 20, 30, 50, 60, 70] and list(train["labels"]) == [0, 0, 0, 1, 1, 1]


def test_value_range_from_config(tmp_path):
    """Float images load with data.file_range as the config/CLI gives it ("0,1", "-1,1");
    without it the error says how to pass it (data.value_range, the model's range, is another key)."""
    k = np.arange(256, dtype=np.uint8).reshape(4, 8, 8)
    np.save(tmp_path / "f01.npy", k / 255.0)
    np.save(tmp_path / "fpm1.npy", (k / 127.5 - 1).astype(np.float32))
    cfg = {"name": "array", "split": "all", "image_size": 8}
    for path, text in (("f01.npy", "0,1"), ("fpm1.npy", "-1, 1")):
        got = load_dataset({**cfg, "path": str(tmp_path / path), "file_range": text, "value_range": (0.0, 1.0)})["images"]
        np.testing.assert_array_equal(got[..., 0], k)
    with pytest.raises(ValueError, match="data.file_range='0,1'"):
        load_dataset({**cfg, "path": str(tmp_path / "f01.npy"), "file_range": "", "value_range": (0.0, 1.0)})
    assert parse_value_range("") is None and parse_value_range(None) is None
    assert parse_value_range((0, 1)) == (0.0, 1.0) == parse_value_range("0,1")
    for bad in ("1,0", "0", "a,b", "0,1,2", "0,inf"):
        with pytest.raises(ValueError, match="value_range: expected"):
            parse_value_range(bad)


# ----------------------------------------------------------------------------- pipeline


def test_scale_round_trip():
    k = np.arange(256, dtype=np.uint8)
    x = scale_images(k)
    assert x.dtype == np.float32 and x[0] == -1.0 and x[-1] == 1.0
    np.testing.assert_allclose(x, k / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(unscale_images(x), k)
    np.testing.assert_array_equal(unscale_images(np.array([-3.0, 3.0], np.float32)), [0, 255])
    np.testing.assert_array_equal(np.asarray(unscale_images(jax.numpy.asarray(x))), k)  # jax arrays too
    with pytest.raises(TypeError, match="uint8"):
        scale_images(k.astype(np.float32))


def test_dequantization_stays_in_bin():
    ds = {"images": np.tile(np.arange(256, dtype=np.uint8), (64, 1)).reshape(64, 16, 16, 1), "labels": None}
    b = batch_at_step(ds, 3, global_batch_size=64, seed=7, dequantize=True)["images"]
    k = np.broadcast_to(np.arange(256).reshape(1, 16, 16, 1), b.shape).astype(np.float64)
    lo, hi = k / 128 - 1, (k + 1) / 128 - 1
    assert b.dtype == np.float32 and np.all(b >= lo) and np.all(b < hi)
    u = (b.astype(np.float64) + 1) * 128 - k  # the uniform noise, exact
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    np.testing.assert_array_equal(unscale_images(b, dequantized=True), ds["images"])
    np.testing.assert_array_equal(dequantize_images(ds["images"], u.astype(np.float32)), b)  # same formula
    b2 = batch_at_step(ds, 4, global_batch_size=64, seed=7, dequantize=True)["images"]
    assert not np.array_equal(b, b2)  # fresh noise every step


def test_batch_is_pure_function_of_seed_and_step():
    ds = _indexed_dataset(50)
    kw = dict(global_batch_size=16, seed=3, flip=True, dequantize=True)
    a = batch_at_step(ds, 11, **kw)
    b = batch_at_step(ds, 11, **kw)
    for key in ("images", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["images"].shape == (16, 4, 5, 3) and a["labels"].dtype == np.int32
    c = batch_at_step(ds, 11, **{**kw, "seed": 4})
    assert not np.array_equal(a["labels"], c["labels"])


def test_epochs_cover_each_example_once():
    n, B = 37, 8  # N not a multiple of B: batches straddle epochs, nothing dropped
    ds = _indexed_dataset(n)
    steps = 3 * n // B + 1
    stream = np.concatenate([batch_at_step(ds, s, global_batch_size=B, seed=1)["labels"] for s in range(steps)])
    for e in range(3):
        chunk = stream[e * n : (e + 1) * n]
        np.testing.assert_array_equal(np.sort(chunk), np.arange(n))
        np.testing.assert_array_equal(chunk, epoch_permutation(1, e, n))
    assert not np.array_equal(stream[:n], stream[n : 2 * n])  # reshuffled each epoch
    unshuffled = batch_indices(n, 4, global_batch_size=B, seed=1, shuffle=False)
    np.testing.assert_array_equal(unshuffled, (np.arange(32, 40)) % n)
    # batch bigger than the dataset: several epochs in one batch, still each once per epoch
    tiny = batch_indices(5, 1, global_batch_size=12, seed=0)
    np.testing.assert_array_equal(np.sort(tiny[3:8]), np.arange(5))


@pytest.mark.parametrize("flip,dequantize", [(False, False), (True, True)])
def test_host_shards_union_is_global_batch(flip, dequantize):
    ds = _indexed_dataset(30)
    kw = dict(global_batch_size=12, seed=5, flip=flip, dequantize=dequantize)
    for step in (0, 2, 7):
        full = batch_at_step(ds, step, **kw)
        shards = [batch_at_step(ds, step, process_index=i, process_count=4, **kw) for i in range(4)]
        assert all(s["images"].shape[0] == 3 for s in shards)
        for key in ("images", "labels"):
            np.testing.assert_array_equal(np.concatenate([s[key] for s in shards]), full[key])


def test_flips_are_mirror_images():
    ds = _indexed_dataset(64)
    b = batch_at_step(ds, 2, global_batch_size=64, seed=9, flip=True)
    src = scale_images(ds["images"][b["labels"]])
    pairs = list(zip(b["images"], src))
    flipped = np.array([np.array_equal(x, s[:, ::-1]) and not np.array_equal(x, s) for x, s in pairs])
    same = np.array([np.array_equal(x, s) for x, s in pairs])
    assert np.all(flipped | same) and 16 < flipped.sum() < 48  # Binomial(64, 1/2)
    b0 = batch_at_step(ds, 2, global_batch_size=64, seed=9, flip=False)
    np.testing.assert_array_equal(b0["images"], src)


def test_batch_argument_errors():
    ds = _indexed_dataset(10)
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        batch_at_step(ds, 0, global_batch_size=8, seed=0, process_count=3)
    with pytest.raises(ValueError, match="process_index"):
        batch_at_step(ds, 0, global_batch_size=8, seed=0, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="step"):
        batch_at_step(ds, -1, global_batch_size=8, seed=0)
    with pytest.raises(TypeError, match="uint8"):
        batch_at_step({"images": ds["images"].astype(np.float32)}, 0, global_batch_size=8, seed=0)
    with pytest.raises(ValueError, match=r"labels.*\(10,\)"):
        check_dataset({"images": ds["images"], "labels": np.zeros(3, np.int32)})
