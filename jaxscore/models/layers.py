r"""Building blocks of the score_sde DDPM++ / NCSN++ U-Nets (Song et al. 2021), in Flax Linen, NHWC.

Names and layer structure follow score_sde's ``layerspp.py`` so parameter counts match:

* :class:`ResnetBlockBigGAN` (``resblock="biggan"``, DDPM++/NCSN++):
  :math:`h = \mathrm{Conv}(\mathrm{resample}(\mathrm{act}(\mathrm{GN}(x)))) + \mathrm{Dense}(\mathrm{act}(e))`,
  :math:`h = \mathrm{Conv}(\mathrm{Dropout}(\mathrm{act}(\mathrm{GN}(h))))`,
  output :math:`(\mathrm{skip}(\mathrm{resample}(x)) + h)/\sqrt2` (``skip_rescale``), skip a 1x1 conv when
  channels change or the block resamples.
* :class:`ResnetBlockDDPM` (``resblock="ddpm"``): the same without resampling; the shortcut is a
  1x1 "NIN" (dense over channels) when channels change.
* :class:`AttnBlock`: single- (or multi-) head self-attention over the H*W positions,
  :math:`(x + W_o\,\mathrm{softmax}(QK^\top/\sqrt{C})V)/\sqrt2`.
* :class:`Downsample` / :class:`Upsample`: stride-2 3x3 conv (or 2x2 average pool) / nearest + 3x3 conv.
* FIR resampling (StyleGAN2 ``upfirdn2d`` with kernel ``(1,3,3,1)``) for ``fir=True``:
  :func:`fir_downsample` (blur then stride 2), :func:`fir_upsample` (zero-insertion then blur x4),
  and :class:`FIRConvDownsample` (blur then stride-2 3x3 conv, NCSN++'s pyramid downsampler).

Weights use score_sde's ``default_init(scale)`` = variance scaling (fan_avg, uniform) with
``scale = 1e-10`` when ``init_scale == 0``: the last conv of each residual branch and of the
network start (almost) at zero, so every block starts as the identity.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": nn.silu,
    "swish": nn.silu,
    "gelu": nn.gelu,
    "relu": nn.relu,
    "elu": nn.elu,
    "tanh": jnp.tanh,
    "softplus": nn.softplus,
}


def get_activation(act: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """An activation by name (``"silu"``/``"swish"``, ``"gelu"``, ``"relu"``, ...) or the callable itself."""
    if callable(act):
        return act
    if act not in ACTIVATIONS:
        raise ValueError(f"activation: expected a callable or one of {sorted(ACTIVATIONS)}, got {act!r}.")
    return ACTIVATIONS[act]


def _bucket_draw(key: Array, shape: tuple[int, ...], dtype, sampler) -> Array:
    """Draw ``prod(shape)`` iid values as the first entries of a flat draw whose length is rounded up
    to a power of two. Same distribution as drawing ``shape`` directly, but eager ``init`` compiles
    one RNG kernel per size bucket (a handful) instead of one per parameter shape, which dominates
    model initialisation time on CPU (each threefry kernel takes ~1 s to compile)."""
    n = int(np.prod(shape)) if len(shape) else 1
    m = 1 << max(n - 1, 0).bit_length()
    return sampler(key, (m,), dtype)[:n].reshape(shape)


def default_init(scale: float = 1.0):
    r"""score_sde's ``default_init``: variance scaling, fan_avg, uniform (``scale=0`` means 1e-10):
    :math:`W \sim U(-a, a)`, :math:`a = \sqrt{3 s / ((\text{fan\_in} + \text{fan\_out})/2)}` with
    fans over the last two axes times the receptive field (as ``flax.linen.initializers.variance_scaling``)."""
    s = 1e-10 if scale == 0 else scale

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(int(d) for d in shape)
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in = shape[-2] * receptive if len(shape) > 1 else shape[-1]
        fan_out = shape[-1] * receptive
        limit = math.sqrt(3.0 * s / max(1.0, (fan_in + fan_out) / 2.0))
        u = _bucket_draw(key, shape, dtype, lambda k, sh, dt: jax.random.uniform(k, sh, dt, -1.0, 1.0))
        return u * jnp.asarray(limit, dtype)

    return init


def normal_init(stddev: float = 1.0):
    r""":math:`W \sim N(0, \text{stddev}^2)` (size-bucketed draw, see :func:`default_init`)."""

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(int(d) for d in shape)
        return _bucket_draw(key, shape, dtype, jax.random.normal) * jnp.asarray(stddev, dtype)

    return init


def group_count(channels: int, num_groups: int | None) -> int:
    """GroupNorm groups: ``num_groups`` if given, else score_sde's ``min(channels // 4, 32)``."""
    g = num_groups if num_groups is not None else max(1, min(channels // 4, 32))
    if channels % g:
        raise ValueError(f"GroupNorm: {channels} channels are not divisible into {g} groups; set num_groups.")
    return g


def conv3x3(features: int, *, init_scale: float = 1.0, stride: int = 1, padding: Any = "SAME", dtype=None, name=None):
    return nn.Conv(
        features,
        (3, 3),
        strides=(stride, stride),
        padding=padding,
        kernel_init=default_init(init_scale),
        dtype=dtype,
        name=name,
    )


def conv1x1(features: int, *, init_scale: float = 1.0, dtype=None, name=None):
    return nn.Conv(features, (1, 1), kernel_init=default_init(init_scale), dtype=dtype, name=name)


def dense(features: int, *, init_scale: float = 1.0, dtype=None, name=None):
    return nn.Dense(features, kernel_init=default_init(init_scale), dtype=dtype, name=name)


# ------------------------------------------------------------------------------------------------
# resampling
# ------------------------------------------------------------------------------------------------


def naive_downsample(x: Array) -> Array:
    """2x2 average pooling, ``[B, H, W, C] -> [B, H/2, W/2, C]`` (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def naive_upsample(x: Array) -> Array:
    """Nearest-neighbour upsampling, ``[B, H, W, C] -> [B, 2H, 2W, C]``."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _fir_kernel2d(kernel: Sequence[float], gain: float = 1.0) -> np.ndarray:
    k = np.asarray(kernel, dtype=np.float32)
    k = np.outer(k, k)
    return (k / k.sum() * gain).astype(np.float32)


def _depthwise(x: Array, k2d: np.ndarray, *, stride: int, padding, lhs_dilation=(1, 1)) -> Array:
    c = x.shape[-1]
    k = jnp.asarray(k2d[::-1, ::-1], dtype=x.dtype)  # true convolution (the kernel is symmetric anyway)
    k = jnp.tile(k[:, :, None, None], (1, 1, 1, c))  # HWIO with feature_group_count = C
    return jax.lax.conv_general_dilated(
        x,
        k,
        window_strides=(stride, stride),
        padding=padding,
        lhs_dilation=lhs_dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
    )


def fir_downsample(x: Array, kernel: Sequence[float] = (1, 3, 3, 1)) -> Array:
    """``upfirdn2d(x, k, down=2)``: blur with the normalised outer product of ``kernel``, keep every 2nd pixel."""
    p = len(kernel) - 2
    pad = ((p + 1) // 2, p // 2)
    return _depthwise(x, _fir_kernel2d(kernel), stride=2, padding=(pad, pad))


def fir_upsample(x: Array, kernel: Sequence[float] = (1, 3, 3, 1)) -> Array:
    """``upfirdn2d(x, 4k, up=2)``: insert zeros between pixels, blur with 4x the normalised kernel."""
    p = len(kernel) - 2
    # upfirdn pads the zero-stuffed signal of length 2H by ((p+1)//2 + 1, p//2); lhs_dilation gives
    # length 2H-1 (no trailing zero), so the right pad grows by one.
    pad = ((p + 1) // 2 + 1, p // 2 + 1)
    return _depthwise(x, _fir_kernel2d(kernel, gain=4.0), stride=1, padding=(pad, pad), lhs_dilation=(2, 2))


class FIRConvDownsample(nn.Module):
    """score_sde ``Conv2d(down=True, resample_kernel=k)``: FIR blur (pad ``(p+1)//2, p//2`` with
    ``p = len(k) - 2 + 2``) then a stride-2 3x3 convolution without padding. ``[B,H,W,Cin] -> [B,H/2,W/2,out]``."""

    features: int
    kernel: Sequence[float] = (1, 3, 3, 1)
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        p = len(self.kernel) - 2 + 2
        pad = ((p + 1) // 2, p // 2)
        x = _depthwise(x, _fir_kernel2d(self.kernel), stride=1, padding=(pad, pad))
        return conv3x3(self.features, stride=2, padding="VALID", dtype=self.dtype, name="Conv_0")(x)


class Downsample(nn.Module):
    """DDPM downsampling: pad (0,1) and stride-2 3x3 conv (``with_conv``) or 2x2 average pool;
    with ``fir`` a FIR blur + stride-2 conv / FIR downsample."""

    features: int | None = None
    with_conv: bool = True
    fir: bool = False
    fir_kernel: Sequence[float] = (1, 3, 3, 1)
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out = self.features or x.shape[-1]
        if self.fir:
            if self.with_conv:
                return FIRConvDownsample(out, self.fir_kernel, self.dtype, name="FIRConv_0")(x)
            return fir_downsample(x, self.fir_kernel)
        if self.with_conv:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
            return conv3x3(out, stride=2, padding="VALID", dtype=self.dtype, name="Conv_0")(x)
        return naive_downsample(x)


class Upsample(nn.Module):
    """DDPM upsampling: nearest neighbour then (``with_conv``) a 3x3 conv; ``fir`` without conv only."""

    features: int | None = None
    with_conv: bool = True
    fir: bool = False
    fir_kernel: Sequence[float] = (1, 3, 3, 1)
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        out = self.features or x.shape[-1]
        if self.fir:
            if self.with_conv:
                raise NotImplementedError(
                    "Upsample(fir=True, with_conv=True) (FIR transposed conv) is not implemented; "
                    "use resblock='biggan' (FIR resampling inside the residual blocks) or fir=False."
                )
            return fir_upsample(x, self.fir_kernel)
        h = naive_upsample(x)
        if self.with_conv:
            h = conv3x3(out, dtype=self.dtype, name="Conv_0")(h)
        return h


# ------------------------------------------------------------------------------------------------
# residual and attention blocks
# ------------------------------------------------------------------------------------------------


def _skip_sum(x: Array, h: Array, skip_rescale: bool) -> Array:
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block of DDPM++/NCSN++ with optional up/down sampling.

    ``x: [B,H,W,Cin]``, ``temb: [B,E]`` or None -> ``[B,H',W',out_ch]`` (H' = 2H, H/2 or H).
    """

    out_ch: int | None = None
    up: bool = False
    down: bool = False
    dropout: float = 0.0
    fir: bool = False
    fir_kernel: Sequence[float] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    act: Callable[[Array], Array] = nn.silu
    num_groups: int | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, temb: Array | None = None, train: bool = False) -> Array:
        c_in = x.shape[-1]
        out_ch = self.out_ch or c_in
        h = self.act(nn.GroupNorm(group_count(c_in, self.num_groups), epsilon=1e-6, dtype=self.dtype, name="GroupNorm_0")(x))
        if self.up:
            resample = (lambda z: fir_upsample(z, self.fir_kernel)) if self.fir else naive_upsample
        elif self.down:
            resample = (lambda z: fir_downsample(z, self.fir_kernel)) if self.fir else naive_downsample
        else:
            resample = None
        if resample is not None:
            h, x = resample(h), resample(x)
        h = conv3x3(out_ch, dtype=self.dtype, name="Conv_0")(h)
        if temb is not None:
            h = h + dense(out_ch, dtype=self.dtype, name="Dense_0")(self.act(temb))[:, None, None, :]
        h = self.act(nn.GroupNorm(group_count(out_ch, self.num_groups), epsilon=1e-6, dtype=self.dtype, name="GroupNorm_1")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype, name="Conv_1")(h)
        if c_in != out_ch or self.up or self.down:
            x = conv1x1(out_ch, dtype=self.dtype, name="Conv_2")(x)
        return _skip_sum(x, h, self.skip_rescale)


class ResnetBlockDDPM(nn.Module):
    """DDPM(++) residual block (no resampling; 1x1 "NIN" shortcut when channels change)."""

    out_ch: int | None = None
    dropout: float = 0.0
    skip_rescale: bool = True
    init_scale: float = 0.0
    act: Callable[[Array], Array] = nn.silu
    num_groups: int | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, temb: Array | None = None, train: bool = False) -> Array:
        c_in = x.shape[-1]
        out_ch = self.out_ch or c_in
        h = self.act(nn.GroupNorm(group_count(c_in, self.num_groups), epsilon=1e-6, dtype=self.dtype, name="GroupNorm_0")(x))
        h = conv3x3(out_ch, dtype=self.dtype, name="Conv_0")(h)
        if temb is not None:
            h = h + dense(out_ch, dtype=self.dtype, name="Dense_0")(self.act(temb))[:, None, None, :]
        h = self.act(nn.GroupNorm(group_count(out_ch, self.num_groups), epsilon=1e-6, dtype=self.dtype, name="GroupNorm_1")(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype, name="Conv_1")(h)
        if c_in != out_ch:
            x = dense(out_ch, dtype=self.dtype, name="NIN_0")(x)
        return _skip_sum(x, h, self.skip_rescale)


class AttnBlock(nn.Module):
    r"""Self-attention over spatial positions (score_sde ``AttnBlockpp``), ``[B,H,W,C] -> [B,H,W,C]``.

    :math:`q,k,v = W_{q,k,v}\,\mathrm{GN}(x)`; :math:`h = W_o\,\mathrm{softmax}(q k^\top / \sqrt{C/n})\,v`
    with ``num_heads = n`` (score_sde: 1); output :math:`(x + h)/\sqrt2`. Uses
    ``jax.nn.dot_product_attention`` (fused kernels on GPU when available), softmax in float32.
    """

    num_heads: int = 1
    skip_rescale: bool = True
    init_scale: float = 0.0
    num_groups: int | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"AttnBlock: {c} channels not divisible by num_heads={self.num_heads}.")
        h = nn.GroupNorm(group_count(c, self.num_groups), epsilon=1e-6, dtype=self.dtype, name="GroupNorm_0")(x)
        q = dense(c, dtype=self.dtype, name="NIN_0")(h)
        k = dense(c, dtype=self.dtype, name="NIN_1")(h)
        v = dense(c, dtype=self.dtype, name="NIN_2")(h)
        shape = (b, hh * ww, self.num_heads, c // self.num_heads)
        q, k, v = (a.reshape(shape) for a in (q, k, v))
        h = jax.nn.dot_product_attention(q, k, v).reshape(b, hh, ww, c)
        h = dense(c, init_scale=self.init_scale, dtype=self.dtype, name="NIN_3")(h)
        return _skip_sum(x, h, self.skip_rescale)
