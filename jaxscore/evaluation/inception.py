r"""The FID Inception-v3 (pytorch-fid's ``InceptionV3(use_fid_inception=True)``) as a Flax Linen module.

This is the network every published FID is computed with: the TensorFlow 2015-12-05 Inception-v3
graph as ported by pytorch-fid (weights ``pt_inception-2015-12-05-6726825d.pth``), i.e. torchvision's
``Inception3(num_classes=1008, aux_logits=False)`` with the TF-specific patches

* ``Mixed_5b..5d``, ``Mixed_6b..6e``, ``Mixed_7b``: the pool branch averages a 3x3 window over the
  *valid* pixels only (``count_include_pad=False``);
* ``Mixed_7c``: the pool branch is a 3x3 **max** pool (stride 1, padding 1);
* every convolution is ``conv (no bias) -> BatchNorm(eps=1e-3, running statistics) -> ReLU``.

Layout is NHWC and inference only. For images ``x: [B, H, W, C]`` in [-1, 1] (``C`` in {1, 3})

    x  -> tile to 3 channels (C = 1) -> bilinear resize to 299 x 299 (torch ``align_corners=False``,
          no antialiasing) -> network -> pool3 = mean over the final 8 x 8 map     : [B, 2048]
    logits = pool3 @ W_fc (+ b_fc)                                                : [B, 1008]

pytorch-fid feeds ``2 u - 1`` of images ``u`` in [0, 1], the same numbers as ``x`` here.

``logits`` default to the *unbiased* ones, ``pool3 @ W_fc``: the reference Inception Score
(Salimans et al. 2016, ``inception_score.py``: ``tf.matmul(pool3, w)`` with ``w`` the input of
``softmax/logits/MatMul``) never adds the bias, and torch-fidelity's ``"logits_unbiased"`` (the
default of torchmetrics' ``InceptionScore``) reproduces that. ``logits_bias=True`` gives
``Inception3.fc``'s output.

Weights: :func:`load_inception_params` reads the ``.npz`` written by
:func:`jaxscore.evaluation.convert_inception.convert_pytorch_fid_weights` (``jaxscore
convert-inception``) and checks every key and shape. :func:`inception_extractor` turns the
variables into the evaluation contract ``extractor(images) -> (features [B, 2048], logits [B, 1008])``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

FEATURE_DIM = 2048
NUM_CLASSES = 1008
INPUT_SIZE = 299
MIN_INPUT_SIZE = 75  # the smallest H, W for which every stride-2 stage keeps a >= 1 x 1 map
BN_EPSILON = 1e-3
PYTORCH_FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
HOW_TO_GET_WEIGHTS = (
    "Download pytorch-fid's weights\n"
    f"    {PYTORCH_FID_WEIGHTS_URL}\n"
    "and convert them once (needs torch: pip install 'jaxscore[torch]'):\n"
    "    jaxscore convert-inception --src pt_inception-2015-12-05-6726825d.pth --out inception_fid.npz"
)
_KEY_SEP = "/"

Padding = tuple[int, int]


# ---------------------------------------------------------------------------------------------
# Input preprocessing


def check_images(images) -> jax.Array:
    """Check ``images`` is ``[B, H, W, C]`` floating point with ``C`` in {1, 3} (trace time); return float32."""
    images = jnp.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"FID Inception-v3: expected images [B, H, W, C] (NHWC, 4 axes), got shape {tuple(images.shape)}."
        )
    if images.shape[-1] not in (1, 3):
        raise ValueError(
            f"FID Inception-v3: expected C = 1 (grayscale) or 3 (RGB) channels in the last axis of "
            f"[B, H, W, C], got C = {images.shape[-1]} (shape {tuple(images.shape)})."
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(
            f"FID Inception-v3: expected floating-point images in [-1, 1], got dtype {images.dtype} "
            "(convert uint8 images u with u / 127.5 - 1)."
        )
    return images.astype(jnp.float32)


def to_rgb(images: jax.Array) -> jax.Array:
    """``[B, H, W, 1] -> [B, H, W, 3]`` by repeating the channel; ``[B, H, W, 3]`` unchanged."""
    return jnp.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def bilinear_resize(images: jax.Array, height: int, width: int) -> jax.Array:
    r"""Resize ``[B, H, W, C] -> [B, height, width, C]`` exactly like torch's
    ``F.interpolate(x, size, mode="bilinear", align_corners=False)`` (no antialiasing).

    Per axis, output pixel ``i`` samples the input at ``s = (i + 1/2) * n_in / n_out - 1/2``
    (half-pixel centres), clamped to ``[0, n_in - 1]``, with weights ``1 - frac(s)`` and ``frac(s)``
    on its two neighbours. Downsampling therefore aliases (only two taps), as in pytorch-fid;
    ``jax.image.resize``'s default would low-pass filter first.
    """
    batch, _, _, channels = images.shape
    return jax.image.resize(
        images, (batch, height, width, channels), method="linear", antialias=False, precision=jax.lax.Precision.HIGHEST
    )


# ---------------------------------------------------------------------------------------------
# Layers


class BasicConv(nn.Module):
    """torchvision's ``BasicConv2d``: ``relu(BN_eps=1e-3(conv_nobias(x)))`` with running BN statistics.

    ``padding`` is torch's symmetric ``(pad_h, pad_w)``. Params ``conv/kernel: [kh, kw, C_in, C_out]``,
    ``bn/scale, bn/bias: [C_out]``; batch_stats ``bn/mean, bn/var: [C_out]``.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: Padding = (0, 0)
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad_h, pad_w = self.padding
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=((pad_h, pad_h), (pad_w, pad_w)),
            use_bias=False,
            precision=self.precision,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def avg_pool_3x3_valid_pixels(x: jax.Array) -> jax.Array:
    """3x3 average, stride 1, padding 1, dividing by the number of *valid* pixels (TF's average pool)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3_same(x: jax.Array) -> jax.Array:
    """3x3 max, stride 1, padding 1 (padded pixels are -inf)."""
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def max_pool_3x3_stride2(x: jax.Array) -> jax.Array:
    """3x3 max, stride 2, no padding: ``n -> (n - 3) // 2 + 1``."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
    """35x35 block (``Mixed_5b..5d``): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool(valid)->1x1."""

    pool_features: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(avg_pool_3x3_valid_pixels(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (``Mixed_6a``): 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2."""

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, max_pool_3x3_stride2(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block (``Mixed_6b..6e``) with factorised 7x7 convolutions and an avgpool(valid) branch."""

    channels_7x7: int
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        c7 = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(avg_pool_3x3_valid_pixels(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (``Mixed_7a``): 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2."""

    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, max_pool_3x3_stride2(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block (``Mixed_7b``: ``pool="avg"``, valid-pixel average; ``Mixed_7c``: ``pool="max"``)."""

    pool: str
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.pool not in ("avg", "max"):
            raise ValueError(f"InceptionE.pool: expected 'avg' or 'max', got {self.pool!r}.")
        conv = functools.partial(BasicConv, precision=self.precision)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        pooled = avg_pool_3x3_valid_pixels(x) if self.pool == "avg" else max_pool_3x3_same(x)
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class ClassifierHead(nn.Module):
    """``pool3 @ kernel (+ bias)``; ``kernel: [2048, 1008]`` and ``bias: [1008]`` are always stored."""

    num_classes: int
    add_bias: bool
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, pool3: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (pool3.shape[-1], self.num_classes))
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        logits = jnp.dot(pool3, kernel, precision=self.precision)
        return logits + bias if self.add_bias else logits


class FIDInceptionV3(nn.Module):
    r"""pytorch-fid's FID Inception-v3 plus its 1008-way classifier, NHWC, inference only.

    ``apply(variables, images: [B, H, W, C] in [-1, 1]) -> (pool3: [B, 2048], logits: [B, 1008])``,
    both float32. ``variables = {"params": ..., "batch_stats": ...}``; submodule names are
    torchvision's (``Conv2d_1a_3x3``, ``Mixed_5b/branch1x1``, ..., ``fc``), so a torch key
    ``Mixed_5b.branch1x1.conv.weight`` lives at ``params/Mixed_5b/branch1x1/conv/kernel``.

    Attributes:
      resize_to: side the input is bilinearly resized to first (299, as pytorch-fid's
        ``resize_input=True``); ``None`` feeds it as it is (then ``H, W >= 75``).
      logits_bias: add ``fc``'s bias to the logits (``Inception3.fc``); default ``False`` gives the
        reference Inception Score's logits ``pool3 @ W_fc`` (see the module docstring).
      precision: matmul/conv precision. ``HIGHEST`` keeps float32 accumulation on GPU/TPU (whose
        default would round inputs to TF32/bfloat16 and shift FID); CPU computes float32 either way.
    """

    resize_to: int | None = INPUT_SIZE
    logits_bias: bool = False
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = to_rgb(check_images(images))
        if self.resize_to is not None and x.shape[1:3] != (self.resize_to, self.resize_to):
            x = bilinear_resize(x, self.resize_to, self.resize_to)
        if min(x.shape[1:3]) < MIN_INPUT_SIZE:
            raise ValueError(
                f"FID Inception-v3: the network needs H, W >= {MIN_INPUT_SIZE} after resizing, got "
                f"{tuple(x.shape[1:3])} (resize_to={self.resize_to})."
            )
        precision = self.precision
        conv = functools.partial(BasicConv, precision=precision)
        x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)  # 149
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)  # 147
        x = max_pool_3x3_stride2(x)  # 73
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71
        x = max_pool_3x3_stride2(x)  # 35
        x = InceptionA(32, precision=precision, name="Mixed_5b")(x)  # 256 channels
        x = InceptionA(64, precision=precision, name="Mixed_5c")(x)  # 288
        x = InceptionA(64, precision=precision, name="Mixed_5d")(x)  # 288
        x = InceptionB(precision=precision, name="Mixed_6a")(x)  # 17 x 17 x 768
        x = InceptionC(128, precision=precision, name="Mixed_6b")(x)
        x = InceptionC(160, precision=precision, name="Mixed_6c")(x)
        x = InceptionC(160, precision=precision, name="Mixed_6d")(x)
        x = InceptionC(192, precision=precision, name="Mixed_6e")(x)
        x = InceptionD(precision=precision, name="Mixed_7a")(x)  # 8 x 8 x 1280
        x = InceptionE("avg", precision=precision, name="Mixed_7b")(x)  # 2048
        x = InceptionE("max", precision=precision, name="Mixed_7c")(x)  # 2048
        pool3 = jnp.mean(x, axis=(1, 2))  # adaptive average pool to 1 x 1
        logits = ClassifierHead(NUM_CLASSES, self.logits_bias, precision=precision, name="fc")(pool3)
        return pool3, logits


# ---------------------------------------------------------------------------------------------
# Variables: expected layout, save / load


def inception_param_shapes() -> dict[str, tuple[int, ...]]:
    """Every variable of :class:`FIDInceptionV3` as ``{"params/Mixed_5b/branch1x1/conv/kernel": shape}``
    (``"/"``-joined paths into ``{"params": ..., "batch_stats": ...}``), in the module's order."""
    return dict(_param_shapes())


@functools.lru_cache(maxsize=1)
def _param_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    model = FIDInceptionV3(resize_to=None)
    shapes = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3), jnp.float32)
    )
    flat = traverse_util.flatten_dict(jax.tree_util.tree_map(lambda s: tuple(s.shape), shapes), sep=_KEY_SEP)
    return tuple(flat.items())


def flatten_variables(variables: Mapping) -> dict:
    """``{"params": {...}, "batch_stats": {...}}`` -> ``{"params/a/b/kernel": leaf}`` (leaves as given)."""
    return traverse_util.flatten_dict(dict(variables), sep=_KEY_SEP)


def check_variables(flat: Mapping[str, np.ndarray], source: str) -> None:
    """Raise if ``flat`` (``"/"``-joined keys) lacks a variable of :class:`FIDInceptionV3`, has one of a
    different shape or has one the network does not use; ``source`` names where ``flat`` came from."""
    expected = inception_param_shapes()
    for key, shape in expected.items():
        if key not in flat:
            raise KeyError(
                f"{source}: missing the FID Inception-v3 variable {key!r} (shape {shape}); "
                f"it has {len(flat)} of the {len(expected)} expected entries. Is it a file written by "
                f"jaxscore convert-inception?\n{HOW_TO_GET_WEIGHTS}"
            )
        if tuple(np.shape(flat[key])) != shape:
            raise ValueError(
                f"{source}: variable {key!r} has shape {tuple(np.shape(flat[key]))}, expected {shape}."
            )
    unexpected = sorted(set(flat) - set(expected))
    if unexpected:
        raise ValueError(
            f"{source}: {len(unexpected)} entries the FID Inception-v3 does not have, first {unexpected[0]!r}."
        )
    for key in expected:
        dtype = np.dtype(flat[key].dtype if hasattr(flat[key], "dtype") else np.asarray(flat[key]).dtype)
        if not np.issubdtype(dtype, np.floating):
            raise TypeError(f"{source}: variable {key!r} has dtype {dtype}, expected floating point.")


def unflatten_variables(flat: Mapping[str, np.ndarray]) -> dict:
    """Inverse of :func:`flatten_variables`, as float32 ``jax.Array`` leaves."""
    tree = traverse_util.unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}, sep=_KEY_SEP)
    return tree


def save_inception_params(variables: Mapping, path: str | os.PathLike) -> Path:
    """Write ``variables`` (checked against :class:`FIDInceptionV3`) to an uncompressed ``.npz``; return its path."""
    path = Path(path)
    flat = flatten_variables(variables)
    check_variables(flat, source="variables to save")
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
        np.savez(f, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
    return path


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as err:
            raise ImportError(
                f"{path}: reading .safetensors needs the 'safetensors' package (pip install safetensors); "
                "or convert to .npz with jaxscore convert-inception."
            ) from err
        return dict(load_file(str(path)))
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_inception_params(path: str | os.PathLike) -> dict:
    """Read FID Inception-v3 variables ``{"params": ..., "batch_stats": ...}`` from ``path``.

    ``path`` is the ``.npz`` written by ``jaxscore convert-inception`` (``allow_pickle=False``), or a
    ``.safetensors`` file with the same keys when the ``safetensors`` package is installed. Every
    expected key and shape is checked; the error names the file and the first key that is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No FID Inception-v3 weights at {str(path)!r}.\n{HOW_TO_GET_WEIGHTS}")
    flat = _read_arrays(path)
    check_variables(flat, source=str(path))
    return unflatten_variables(flat)


# ---------------------------------------------------------------------------------------------
# The extractor


@functools.lru_cache(maxsize=None)
def _jitted_apply(resize_to: int | None, logits_bias: bool, precision: jax.lax.Precision) -> Callable:
    model = FIDInceptionV3(resize_to=resize_to, logits_bias=logits_bias, precision=precision)
    return jax.jit(model.apply)


def inception_extractor(
    variables: Mapping,
    *,
    resize_to: int | None = INPUT_SIZE,
    logits_bias: bool = False,
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST,
) -> jax.tree_util.Partial:
    r"""The FID Inception-v3 as an evaluation extractor.

    Returns ``extractor(images: [B, H, W, C] float in [-1, 1]) -> (pool3: [B, 2048], logits: [B, 1008])``
    (float32; ``C`` in {1, 3}). It is a ``jax.tree_util.Partial`` of one jitted apply function with
    ``variables`` as its pytree argument: new variables of the same shapes reuse the compiled
    program, and the extractor can itself be passed as an argument to jitted functions.
    Compilation happens once per input shape.
    """
    flat = flatten_variables(variables)
    check_variables(flat, source="inception_extractor(variables)")
    return jax.tree_util.Partial(_jitted_apply(resize_to, logits_bias, precision), variables)
