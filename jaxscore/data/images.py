r"""Image datasets read from local files into memory, as uint8.

Every loader returns a *dataset dict*::

    {"images": np.ndarray uint8 [N, H, W, C], "labels": np.ndarray int32 [N] or None}

Images stay ``uint8`` (0..255) in memory and on disk; the conversion to float
in the model's range (:math:`[-1, 1]` by default, :math:`[0, 1]` with ``value_range=(0, 1)``; a
config's ``data.value_range``), with dequantisation and flips, happens per batch in
:mod:`jaxscore.data.pipeline`. Nothing is downloaded: every loader reads files
already on disk, and a missing or malformed file raises ``FileNotFoundError`` /
``ValueError`` naming the file and what was wrong with it.

Loaders
-------
* :func:`load_digits` -- scikit-learn's bundled 8x8 digits (1797 images), optionally
  upsampled to 16x16; a fixed split (the last 10% is the test set).
* :func:`load_array_file` -- ``.npy`` / ``.npz`` arrays (``allow_pickle=False``).
* :func:`load_mnist_idx` -- MNIST / Fashion-MNIST IDX files (optionally gzipped).
* :func:`load_cifar10_binary` -- CIFAR-10 binary batches (``data_batch_1..5.bin``, ``test_batch.bin``).
* :func:`load_image_folder` -- PNG / JPEG files, optionally in one sub-folder per class.
* :func:`load_dataset` -- dispatch on an ``ml_collections`` config section (the only
  place where dataset *names* are looked up).

Held-out splits
---------------
digits, MNIST and CIFAR-10 come with their own test sets. An ``array`` file or image
``folder`` is one set of images, so :func:`load_dataset` holds part of it out
(:func:`heldout_split`): the test split is the file/folder at ``test_path`` when one is
given (the ``path`` images are then all training images), else the last
``round(test_fraction * n_c)`` rows of each class ``c`` (of the whole set when unlabelled),
in file order; ``test_fraction`` defaults to ``DEFAULT_TEST_FRACTION`` = 0.1 as for digits.
Train and test are disjoint and together are the file, and the split depends on nothing but
the file and the fraction.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "DATASET_NAMES",
    "DEFAULT_TEST_FRACTION",
    "check_dataset",
    "heldout_split",
    "image_folder_classes",
    "load_array_file",
    "load_cifar10_binary",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist_idx",
    "parse_value_range",
    "read_idx",
    "resize_images",
]

Dataset = dict  # {"images": uint8 [N,H,W,C], "labels": int32 [N] | None}

DATASET_NAMES = ("digits", "array", "mnist", "cifar10", "folder")
_SPLITS = ("train", "test", "all")
DEFAULT_TEST_FRACTION = 0.1  # held-out share of an array file / image folder without a test_path (as digits)


# --------------------------------------------------------------------------------------
# Dataset dict helpers
# --------------------------------------------------------------------------------------


def check_dataset(dataset: Mapping[str, Any], *, name: str = "dataset") -> Dataset:
    """Validate a dataset dict and return it as ``{"images": uint8 [N,H,W,C], "labels": int32 [N] | None}``.

    Raises ``TypeError`` / ``ValueError`` saying what was expected and what came.
    Arrays are not copied when they are already of the right dtype (memory maps stay maps).
    """
    if not isinstance(dataset, Mapping) or "images" not in dataset:
        raise TypeError(
            f"{name}: expected a dict with key 'images' (and optional 'labels'), got {type(dataset).__name__}."
        )
    images = dataset["images"]
    if not isinstance(images, np.ndarray):
        images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"{name}['images']: expected dtype uint8 (0..255), got {images.dtype}.")
    if images.ndim != 4:
        raise ValueError(f"{name}['images']: expected shape [N, H, W, C], got {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError(f"{name}['images']: the dataset is empty (shape {tuple(images.shape)}).")
    labels = dataset.get("labels")
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{name}['labels']: expected integer labels, got dtype {labels.dtype}.")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"{name}['labels']: expected shape ({images.shape[0]},) to match the images, "
                f"got {tuple(labels.shape)}."
            )
        labels = labels.astype(np.int32, copy=False)
    return {"images": images, "labels": labels}


def _make_dataset(images: np.ndarray, labels: np.ndarray | None) -> Dataset:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if labels is not None:
        labels = np.ascontiguousarray(labels, dtype=np.int32)
    return {"images": images, "labels": labels}


def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise ValueError(f"split: expected one of {_SPLITS}, got {split!r}.")
    return split


def _check_file(path) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file.")
    if os.path.isdir(path):
        raise ValueError(f"{path}: expected a file, got a directory.")
    return path


def _check_dir(path) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such directory.")
    if not os.path.isdir(path):
        raise ValueError(f"{path}: expected a directory, got a file.")
    return path


def heldout_split(dataset: Dataset, split: str, test_fraction: float = DEFAULT_TEST_FRACTION) -> Dataset:
    """The ``split`` ("train", "test" or "all") of one set of images, holding out a stated fraction.

    Test rows: for each class ``c`` (each distinct label; the whole set when ``labels`` is
    ``None``) the last ``round(test_fraction * n_c)`` of its ``n_c`` rows in file order, so an
    array sorted by label or a folder read class by class still gives a test set of every
    class. Train rows are the others; both keep file order, are disjoint and together are the
    set ("all"). Unlabelled sets are sliced, so a memory-mapped file stays mapped.

    Raises ``ValueError`` when ``test_fraction`` is not in (0, 1) or a split would be empty.
    """
    _check_split(split)
    if not (isinstance(test_fraction, (int, float, np.floating)) and 0.0 < float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction: expected a held-out fraction in (0, 1), got {test_fraction!r}.")
    if split == "all":
        return dataset
    images, labels = dataset["images"], dataset["labels"]
    n = images.shape[0]
    if labels is None:
        n_test = int(round(float(test_fraction) * n))
        is_test = np.zeros(n, bool)
        is_test[n - n_test :] = True
    else:
        is_test = np.zeros(n, bool)
        for c in np.unique(labels):
            rows = np.flatnonzero(labels == c)
            n_c_test = int(round(float(test_fraction) * rows.size))
            is_test[rows[rows.size - n_c_test :]] = True
    n_test = int(is_test.sum())
    if n_test == 0 or n_test == n:
        raise ValueError(
            f"test_fraction={test_fraction} of {n} images leaves {n_test} test and {n - n_test} training "
            "images; both must be non-empty: use more images, another test_fraction, or a separate test_path."
        )
    keep = is_test if split == "test" else ~is_test
    if labels is None:  # a contiguous block: slice (memory maps stay maps)
        block = slice(n - n_test, n) if split == "test" else slice(0, n - n_test)
        return {"images": images[block], "labels": None}
    return {"images": images[keep], "labels": labels[keep]}


def parse_value_range(value) -> tuple[float, float] | None:
    """What float images mean: ``None`` / ``""`` (no floats: uint8 or integer images), a pair
    ``(lo, hi)``, or the text ``"lo,hi"`` (e.g. ``"0,1"``, ``"-1,1"``, as a config or the CLI
    gives it) -> ``(lo, hi)`` floats with ``hi > lo``; anything else is a ``ValueError``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        lo, hi = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(
            f"value_range: expected '' (integer images) or 'low,high' such as '0,1' or '-1,1', got {value!r}."
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"value_range: expected finite (low, high) with high > low, got {value!r}.")
    return lo, hi


# --------------------------------------------------------------------------------------
# Resizing (used for digits 8 -> 16)
# --------------------------------------------------------------------------------------


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] bilinear weights, half-pixel centres, edges clamped.

    Output pixel i samples input coordinate ``(i + 0.5) * n_in / n_out - 0.5``.
    """
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    w = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    np.add.at(w, (rows, lo), 1.0 - frac)
    np.add.at(w, (rows, hi), frac)
    return w


def resize_images(images: np.ndarray, size: int | tuple[int, int], method: str = "nearest") -> np.ndarray:
    """Resize uint8 images ``[N, H, W, C] -> [N, h, w, C]`` with numpy.

    ``method="nearest"``: output pixel i takes input pixel ``floor((i + 0.5) * H / h)``
    (pixel replication for integer upsampling). ``method="bilinear"``: separable linear
    interpolation with half-pixel centres and clamped edges (equal to
    ``jax.image.resize(..., "linear")`` when upsampling), rounded to the nearest integer.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images: expected uint8 [N, H, W, C], got {images.dtype} {tuple(images.shape)}.")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size: expected positive sizes, got {(h, w)}.")
    _, H, W, _ = images.shape
    if (h, w) == (H, W):
        return images.copy()
    if method == "nearest":
        ri = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
        ci = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
        return np.ascontiguousarray(images[:, ri][:, :, ci])
    if method == "bilinear":
        wh = _linear_weights(H, h)
        ww = _linear_weights(W, w)
        out = np.einsum("ih,nhwc,jw->nijc", wh, images.astype(np.float64), ww, optimize=True)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    raise ValueError(f"method: expected 'nearest' or 'bilinear', got {method!r}.")


# --------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------


def load_digits(
    split: str = "train", size: int = 8, *, interpolation: str = "nearest", test_fraction: float = 0.1
) -> Dataset:
    """scikit-learn's bundled handwritten digits (no download): 1797 grey 8x8 images, labels 0..9.

    Pixel values 0..16 are rescaled to uint8 by ``round(v * 255 / 16)``. Split is fixed and
    deterministic: the last ``round(test_fraction * 1797)`` images (180 by default) are
    ``"test"``, the rest ``"train"``; ``"all"`` returns all 1797. ``size=16`` upsamples with
    :func:`resize_images` (``interpolation`` = ``"nearest"`` or ``"bilinear"``).

    Returns images uint8 ``[N, size, size, 1]`` and labels int32 ``[N]``.
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    _check_split(split)
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size: expected a positive int (8 or 16), got {size!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}.")
    bunch = _sk_load_digits()
    raw = np.asarray(bunch.images, np.float64)  # [1797, 8, 8], values 0..16
    images = np.rint(raw * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = np.asarray(bunch.target, np.int32)
    n = images.shape[0]
    n_test = int(round(test_fraction * n))
    if split == "train":
        images, labels = images[: n - n_test], labels[: n - n_test]
    elif split == "test":
        images, labels = images[n - n_test :], labels[n - n_test :]
    if size != 8:
        images = resize_images(images, int(size), interpolation)
    return _make_dataset(images, labels)


# --------------------------------------------------------------------------------------
# .npy / .npz
# --------------------------------------------------------------------------------------

_IMAGE_KEYS = ("images", "x", "image", "data")
_LABEL_KEYS = ("labels", "y", "label", "targets")


def _to_uint8(arr: np.ndarray, value_range, what: str) -> np.ndarray:
    """uint8 as is; other integers checked to lie in 0..255; floats need an explicit range."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == object or arr.dtype.kind in "OUSV":
        raise ValueError(f"{what}: expected a numeric image array, got dtype {arr.dtype}.")
    if arr.dtype == np.bool_:
        raise ValueError(f"{what}: expected uint8 images, got dtype bool.")
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{what}: integer images must lie in 0..255 (dtype {arr.dtype}), got range [{lo}, {hi}]."
            )
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if value_range is None:
            raise ValueError(
                f"{what}: got float images (dtype {arr.dtype}); store uint8 images, or pass "
                "value_range=(0, 1) or (-1, 1) (in a config: data.file_range='0,1' or '-1,1') "
                "to say how the floats map to 0..255."
            )
        lo_v, hi_v = (float(v) for v in value_range)
        if not hi_v > lo_v:
            raise ValueError(f"value_range: expected (low, high) with high > low, got {value_range}.")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what}: float images contain NaN or inf.")
        amin, amax = float(arr.min()), float(arr.max())
        tol = 1e-6 * (hi_v - lo_v)
        if amin < lo_v - tol or amax > hi_v + tol:
            raise ValueError(
                f"{what}: float images must lie in value_range [{lo_v}, {hi_v}], got range [{amin}, {amax}]."
            )
        scaled = (arr.astype(np.float64) - lo_v) * (255.0 / (hi_v - lo_v))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    raise ValueError(f"{what}: expected uint8 images, got dtype {arr.dtype}.")


def _as_nhwc(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.ndim == 3:
        return arr[..., None]
    if arr.ndim == 4:
        if arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[1] in (1, 3, 4):
            raise ValueError(
                f"{what}: expected channels-last images [N, H, W, C], got shape {tuple(arr.shape)} "
                "which looks channels-first [N, C, H, W]; transpose it with arr.transpose(0, 2, 3, 1)."
            )
        return arr
    raise ValueError(f"{what}: expected images of shape [N, H, W] or [N, H, W, C], got {tuple(arr.shape)}.")


def _pickle_message(path: str, err: Exception) -> str:
    return f"{path}: cannot load with allow_pickle=False ({err}); store plain numeric arrays."


def _load_np(path: str):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        # numpy says "Object arrays cannot be loaded when allow_pickle=False"
        raise ValueError(_pickle_message(path, err)) from None
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy/.npz file ({err}).") from None


def load_array_file(
    path, *, value_range: tuple[float, float] | None = None, mmap: bool = False
) -> Dataset:
    """Load images (and labels) from a ``.npy`` or ``.npz`` file, never unpickling.

    * ``.npy``: one array of images; labels are ``None``.
    * ``.npz``: images under ``"images"`` (or ``"x"``), optional labels under ``"labels"`` (or ``"y"``).

    Images are ``[N, H, W]`` (a channel axis is added) or ``[N, H, W, C]``, channels last.
    **dtype policy**: ``uint8`` is taken as is; other integer dtypes are accepted when every
    value lies in 0..255; floating-point images are refused unless ``value_range=(lo, hi)``
    says what they mean (e.g. ``(0, 1)`` or ``(-1, 1)``) -- then they are mapped to
    ``round((x - lo) * 255 / (hi - lo))`` after checking they lie in the range.
    Labels must be integers ``[N]`` (stored as int32).

    ``mmap=True`` memory-maps a uint8 ``.npy`` file (read-only) instead of reading it, so
    a host touches only the rows of its batches (ignored for ``.npz``, which is a zip).
    """
    path = _check_file(path)
    if mmap and path.endswith(".npy"):
        try:
            obj = np.load(path, allow_pickle=False, mmap_mode="r")
        except ValueError as err:
            raise ValueError(f"{path}: cannot memory-map with allow_pickle=False ({err}).") from None
    else:
        obj = _load_np(path)
    labels = None
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = list(obj.files)
            ikey = next((k for k in _IMAGE_KEYS if k in keys), None)
            if ikey is None:
                raise ValueError(
                    f"{path}: no image array found; expected one of keys {_IMAGE_KEYS[:2]}, got keys {keys}."
                )
            lkey = next((k for k in _LABEL_KEYS if k in keys), None)
            try:
                images = obj[ikey]
                labels = obj[lkey] if lkey is not None else None
            except ValueError as err:
                raise ValueError(_pickle_message(path, err)) from None
    else:
        images = obj
    what = f"{path} images"
    images = _as_nhwc(_to_uint8(images, value_range, what), what)
    if labels is not None:
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path} labels: expected integer labels, got dtype {labels.dtype}.")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"{path} labels: expected shape ({images.shape[0]},) to match the images, "
                f"got {tuple(labels.shape)}."
            )
        labels = labels.astype(np.int32)
    if images.shape[0] == 0:
        raise ValueError(f"{path}: contains no images (shape {tuple(images.shape)}).")
    if isinstance(images, np.memmap):
        return {"images": images, "labels": labels}
    return _make_dataset(images, labels)


# --------------------------------------------------------------------------------------
# IDX (MNIST)
# --------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: str) -> bytes:
    """File contents, transparently gunzipped (detected by the gzip magic bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: corrupt or truncated gzip data ({err}).") from None
    return data


def read_idx(path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped) into a numpy array.

    Format: magic ``0x0000TTDD`` big-endian (``TT`` = type code: 0x08 ubyte, 0x09 byte,
    0x0B short, 0x0C int, 0x0D float, 0x0E double; ``DD`` = number of dims), then ``DD``
    big-endian uint32 sizes, then the data, row-major. The size of the data must equal
    ``prod(sizes) * itemsize`` exactly.
    """
    path = _check_file(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, no 4-byte magic number).")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"{path}: wrong magic number 0x{int.from_bytes(data[:4], 'big'):08X}; expected 0x0000TTDD with "
            f"type TT in {[hex(c) for c in _IDX_DTYPES]} and DD >= 1 dims (e.g. 0x00000803 for MNIST images)."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, need {header} for {ndim} dims).")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        kind = "truncated" if got < expected else "too long"
        raise ValueError(
            f"{path}: {kind} IDX data: dims {dims} of {dtype.name} need {expected} bytes after the header, "
            f"got {got}."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def _find_mnist_file(directory: str, prefix: str, kind: str) -> str:
    """``{prefix}-{kind}-idx{1,3}-ubyte`` with '-' or '.' before idx, optionally .gz."""
    ndim = "3" if kind == "images" else "1"
    names = [f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}" for sep in ("-", ".") for ext in ("", ".gz")]
    for name in names:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{directory}: no MNIST {kind} file for split {prefix!r}; looked for {names}.")


def _load_idx_pair(images_path: str, labels_path: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    images = read_idx(images_path)
    if images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected unsigned-byte images (type 0x08), got {images.dtype}.")
    if images.ndim not in (3, 4):
        raise ValueError(f"{images_path}: expected image dims [N, H, W] or [N, H, W, C], got {images.shape}.")
    if images.ndim == 3:
        images = images[..., None]
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{labels_path}: expected integer labels [N], got {labels.dtype} {labels.shape}.")
        if labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{labels_path}: {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images."
            )
    return images, labels


def load_mnist_idx(path, split: str = "train") -> Dataset:
    """MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST …), gzipped or not.

    ``path`` is a directory holding ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
    ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]`` (``split`` = ``"train"``,
    ``"test"`` or ``"all"`` = train then test); or the path of one images file (labels ``None``);
    or a pair ``(images_file, labels_file)``. Magic numbers, dims and file sizes are checked
    (see :func:`read_idx`). Returns images uint8 ``[N, 28, 28, 1]``, labels int32 ``[N]``.
    """
    if isinstance(path, (tuple, list)):
        if len(path) != 2:
            raise ValueError(f"path: expected (images_file, labels_file), got {len(path)} paths.")
        images, labels = _load_idx_pair(_check_file(path[0]), _check_file(path[1]))
        return _make_dataset(images, labels)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory.")
    if not os.path.isdir(path):
        images, _ = _load_idx_pair(path, None)
        return _make_dataset(images, None)
    _check_split(split)
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    parts = [
        _load_idx_pair(_find_mnist_file(path, p, "images"), _find_mnist_file(path, p, "labels")) for p in prefixes
    ]
    shapes = {p[0].shape[1:] for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"{path}: train and test images differ in shape: {sorted(shapes)}.")
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    return _make_dataset(images, labels)


# --------------------------------------------------------------------------------------
# CIFAR-10 binary
# --------------------------------------------------------------------------------------

_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_FILES = {
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
}
_CIFAR_FILES["all"] = _CIFAR_FILES["train"] + _CIFAR_FILES["test"]


def _read_cifar_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    path = _check_file(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise ValueError(
            f"{path}: size {raw.size} bytes is not a positive multiple of the CIFAR-10 record size "
            f"{_CIFAR_RECORD} (1 label byte + 3072 image bytes); truncated or not a CIFAR-10 binary batch."
        )
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise ValueError(f"{path}: record {bad} has label {labels[bad]}; CIFAR-10 labels are 0..9.")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> HWC
    return images, labels


def load_cifar10_binary(path, split: str = "train") -> Dataset:
    """CIFAR-10 "binary version" batches -> images uint8 ``[N, 32, 32, 3]`` (NHWC), labels int32 ``[N]``.

    Each record is 1 label byte followed by 3072 bytes: the 1024 red, then green, then blue
    values of a 32x32 image, row-major (CHW). ``path`` is the directory holding
    ``data_batch_1.bin`` … ``data_batch_5.bin`` and ``test_batch.bin`` (or its parent that
    holds ``cifar-10-batches-bin/``), or a single ``.bin`` file. ``split``: ``"train"`` (the 5
    data batches, 50000 images), ``"test"`` (10000) or ``"all"``.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file or directory.")
    if os.path.isdir(path):
        _check_split(split)
        sub = os.path.join(path, "cifar-10-batches-bin")
        if not os.path.isfile(os.path.join(path, _CIFAR_FILES[split][0])) and os.path.isdir(sub):
            path = sub
        files = [os.path.join(path, name) for name in _CIFAR_FILES[split]]
        missing = [f for f in files if not os.path.isfile(f)]
        if missing:
            raise FileNotFoundError(f"{path}: missing CIFAR-10 batch file(s) for split {split!r}: {missing}.")
    else:
        files = [path]
    parts = [_read_cifar_file(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _make_dataset(images, labels)


# --------------------------------------------------------------------------------------
# Folder of PNG / JPEG images
# --------------------------------------------------------------------------------------

_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_GREY_MODES = ("1", "L", "LA")
_EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _pil_available() -> bool:
    try:
        import PIL.Image  # noqa: F401
    except ImportError:
        return False
    return True


def _list_images(directory: str) -> list[str]:
    names = sorted(n for n in os.listdir(directory) if not n.startswith("."))
    paths = [os.path.join(directory, n) for n in names if n.lower().endswith(_IMAGE_EXTS)]
    return [p for p in paths if os.path.isfile(p)]


def image_folder_classes(path) -> list[str]:
    """Class names of an image folder: its non-hidden sub-folders, sorted (label i = i-th name); [] if flat."""
    path = _check_dir(path)
    return sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isdir(os.path.join(path, n)))


def _convert_channels(arr: np.ndarray, channels: int, path: str) -> np.ndarray:
    """uint8 [H, W] / [H, W, c] -> [H, W, channels] (grey<->RGB, alpha dropped or made opaque)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[-1]
    if c == channels:
        return arr
    if c == 2:  # grey + alpha
        arr, c = arr[..., :1], 1
    if c == 4 and channels in (1, 3):
        arr, c = arr[..., :3], 3
    if c == channels:
        return arr
    if c == 1:
        rgb = np.repeat(arr, 3, axis=-1)
        if channels == 3:
            return rgb
        return np.concatenate([rgb, np.full_like(arr, 255)], axis=-1)
    if c == 3 and channels == 1:  # ITU-R 601-2 luma, as PIL's convert("L")
        luma = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    if c == 3 and channels == 4:
        return np.concatenate([arr, np.full_like(arr[..., :1], 255)], axis=-1)
    raise ValueError(f"{path}: cannot convert a {c}-channel image to {channels} channels.")


def _read_image_pil(path: str, channels: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode not in _EIGHT_BIT_MODES:
                raise ValueError(f"{path}: expected an 8-bit image, got PIL mode {im.mode!r}.")
            if channels is None:
                channels = 1 if im.mode in _GREY_MODES else 3
            target = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
            arr = np.asarray(im.convert(target), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{path}: cannot decode image ({err}).") from None
    return arr.reshape(arr.shape[0], arr.shape[1], channels)


def _read_image_matplotlib(path: str, channels: int | None) -> np.ndarray:
    import matplotlib.image

    if not path.lower().endswith(".png"):
        raise ValueError(
            f"{path}: reading JPEG files needs Pillow (pip install pillow); only PNG is read without it."
        )
    try:
        arr = matplotlib.image.imread(path)
    except Exception as err:  # matplotlib raises various errors for bad files
        raise ValueError(f"{path}: cannot decode image ({err}).") from None
    if np.issubdtype(arr.dtype, np.floating):  # PNG -> float32 in [0, 1]
        arr = np.clip(np.rint(arr.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ValueError(f"{path}: expected an 8-bit image, got dtype {arr.dtype}.")
    if channels is None:
        channels = 1 if arr.ndim == 2 or arr.shape[-1] in (1, 2) else 3
    return _convert_channels(arr, channels, path)


def load_image_folder(path, *, channels: int | None = None, backend: str | None = None) -> Dataset:
    """PNG / JPEG files of one size -> images uint8 ``[N, H, W, C]``, labels int32 ``[N]`` or ``None``.

    Layouts: a *flat* folder of images (labels ``None``), or one sub-folder per class
    (``path/cat/*.png``, ``path/dog/*.png``: labels are indices into the sorted sub-folder names,
    :func:`image_folder_classes`). Mixing images and sub-folders at the top level is an error,
    as is a class folder without images. Files are read in sorted name order; hidden files and
    other extensions are ignored.

    ``channels``: 1 (grey), 3 (RGB) or 4 (RGBA); ``None`` gives 1 when every image is grey,
    else 3 (alpha dropped). ``backend``: ``"pil"`` (default when Pillow imports) or
    ``"matplotlib"`` (PNG only). Every image must have the size of the first one, else a
    ``ValueError`` names the offending file.
    """
    path = _check_dir(path)
    if channels not in (None, 1, 3, 4):
        raise ValueError(f"channels: expected None, 1, 3 or 4, got {channels!r}.")
    if backend is None:
        backend = "pil" if _pil_available() else "matplotlib"
    if backend not in ("pil", "matplotlib"):
        raise ValueError(f"backend: expected 'pil' or 'matplotlib', got {backend!r}.")
    read = _read_image_pil if backend == "pil" else _read_image_matplotlib

    classes = image_folder_classes(path)
    top_files = _list_images(path)
    if classes and top_files:
        raise ValueError(
            f"{path}: holds both image files (e.g. {os.path.basename(top_files[0])}) and sub-folders "
            f"{classes}; use either a flat folder or one sub-folder per class."
        )
    if classes:
        files, labels = [], []
        for k, name in enumerate(classes):
            class_files = _list_images(os.path.join(path, name))
            if not class_files:
                raise ValueError(f"{os.path.join(path, name)}: class folder holds no PNG/JPEG images.")
            files += class_files
            labels += [k] * len(class_files)
        label_arr = np.asarray(labels, np.int32)
    else:
        files, label_arr = top_files, None
    if not files:
        raise ValueError(f"{path}: no PNG/JPEG images found.")

    arrays = [read(f, channels) for f in files]
    if channels is None:  # mixed grey/colour folders -> all RGB
        if len({a.shape[-1] for a in arrays}) > 1:
            arrays = [_convert_channels(a, 3, f) for a, f in zip(arrays, files)]
    h, w, c = arrays[0].shape
    for a, f in zip(arrays, files):
        if a.shape != (h, w, c):
            raise ValueError(
                f"{f}: image size {a.shape[1]}x{a.shape[0]} (WxH) with {a.shape[2]} channel(s) differs from "
                f"{w}x{h} with {c} of {files[0]}; all images must share one size."
            )
    return _make_dataset(np.stack(arrays), label_arr)


# --------------------------------------------------------------------------------------
# Config dispatch (the registry lives here, at the edge)
# --------------------------------------------------------------------------------------


def _cfg_get(config, key: str, default=None):
    if isinstance(config, Mapping):
        return config.get(key, default)
    getter = getattr(config, "get", None)
    if callable(getter):
        return getter(key, default)
    return getattr(config, key, default)


def _load_single_set(config, name: str, path, split: str) -> Dataset:
    """The ``split`` of an ``array`` file or image ``folder``: ``test_path`` holds the test images
    when given, else :func:`heldout_split` holds out ``test_fraction`` of ``path``."""
    if name == "array":
        # how float images in the file map to 0..255 (not data.value_range, the range the model sees)
        value_range = parse_value_range(_cfg_get(config, "file_range"))
        mmap = bool(_cfg_get(config, "mmap", False))

        def read(p):
            return load_array_file(p, value_range=value_range, mmap=mmap)
    else:
        channels = _cfg_get(config, "channels")

        def read(p):
            return load_image_folder(p, channels=channels)

    test_path = _cfg_get(config, "test_path") or ""
    if not test_path:
        test_fraction = _cfg_get(config, "test_fraction")
        test_fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        return heldout_split(read(path), split, test_fraction)
    if os.path.abspath(os.fspath(test_path)) == os.path.abspath(os.fspath(path)):
        raise ValueError(f"config.test_path: expected held-out images apart from path, got path itself {path!r}.")
    if name == "folder" and image_folder_classes(path) != image_folder_classes(test_path):
        raise ValueError(
            f"config.test_path: the class folders of {test_path!r} {image_folder_classes(test_path)} differ from "
            f"those of {path!r} {image_folder_classes(path)}; labels would not match."
        )
    if split != "all":
        return read(test_path if split == "test" else path)
    train, test = read(path), read(test_path)
    if train["images"].shape[1:] != test["images"].shape[1:] or (train["labels"] is None) != (test["labels"] is None):
        raise ValueError(
            f"config.test_path: {test_path!r} holds images {test['images'].shape[1:]} (labels: "
            f"{test['labels'] is not None}), {path!r} holds {train['images'].shape[1:]} (labels: {train['labels'] is not None})."
        )
    labels = None if train["labels"] is None else np.concatenate([train["labels"], test["labels"]])
    return _make_dataset(np.concatenate([train["images"], test["images"]]), labels)


def load_dataset(config) -> Dataset:
    """Load the dataset an ``ml_collections`` config section (or a dict) describes.

    Fields: ``name`` in ``DATASET_NAMES`` = ("digits", "array", "mnist", "cifar10", "folder");
    ``path`` (all but digits); ``split`` ("train" default, "test" or "all");
    digits: ``image_size`` (8 default, or 16), ``interpolation``; array: ``file_range``, the range
    float images in the file have (:func:`parse_value_range`: ``""`` for integer images, ``"0,1"`` /
    ``"-1,1"`` or a pair for floats; the config's ``value_range``, the range the model sees, is
    another key), ``mmap``; folder: ``channels``. array and folder hold out a test split
    (:func:`heldout_split`): ``test_path`` (a separate file / folder of test images; ``""`` =
    none) or else the fraction ``test_fraction`` (default ``DEFAULT_TEST_FRACTION``). When
    ``image_size`` / ``num_channels`` are set they are checked against the loaded images (a
    mismatch is a ``ValueError``), so a model config and its data agree.
    """
    name = _cfg_get(config, "name")
    if name not in DATASET_NAMES:
        raise ValueError(f"config.name: expected one of {DATASET_NAMES}, got {name!r}.")
    split = _check_split(_cfg_get(config, "split", "train"))
    image_size = _cfg_get(config, "image_size")
    if name == "digits":
        ds = load_digits(
            split, size=int(image_size or 8), interpolation=_cfg_get(config, "interpolation", "nearest")
        )
    else:
        path = _cfg_get(config, "path")
        if not path:
            raise ValueError(f"config.path: dataset {name!r} needs a path to local files, got {path!r}.")
        if name == "mnist":
            ds = load_mnist_idx(path, split)
        elif name == "cifar10":
            ds = load_cifar10_binary(path, split)
        else:
            ds = _load_single_set(config, name, path, split)
    _, h, w, c = ds["images"].shape
    if image_size is not None:
        want = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else tuple(image_size)
        if (h, w) != tuple(want):
            raise ValueError(f"config.image_size: expected {want}, but dataset {name!r} has {h}x{w} images.")
    num_channels = _cfg_get(config, "num_channels")
    if num_channels is not None and c != num_channels:
        raise ValueError(f"config.num_channels: expected {num_channels}, but dataset {name!r} has {c} channel(s).")
    return ds
