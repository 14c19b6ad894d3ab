r"""DDPM++ and NCSN++ U-Nets (Song et al. 2021, score_sde ``ncsnpp.py``) in Flax Linen, NHWC.

Call (every jaxscore model)::

    variables = model.init({"params": k1, "dropout": k2}, x, t, labels=None, train=False)
    out = model.apply(variables, x, t, labels=None, train=True, rngs={"dropout": k3})   # same shape as x

``x: [B, H, W, C]`` (values ~[-1, 1]), ``t: [B]`` any real (time in [0, 1], EDM ``c_noise``,
``log sigma`` ...), ``labels: [B]`` int in ``[0, num_classes]`` or None (= the null label
``num_classes``, for classifier-free guidance). H and W must be divisible by
``2 ** (len(ch_mult) - 1)``: 8x8 with 2 levels, 16x16 with up to 5, 28x28 with up to 3
(28 -> 14 -> 7), 32x32 with up to 6.

Architecture (score_sde ``NCSNpp`` module list, one-to-one):

1. time embedding ``e = Dense(4ch)(act(Dense(4ch)(emb(embedding_scale * t))))`` with ``emb`` the
   positional (dim ``ch``) or Gaussian-Fourier (dim ``2ch``) embedding; ``+ Embed(K+1, 4ch)(labels)``
   when ``num_classes = K`` (an addition to score_sde).
2. ``conv3x3(ch)``; per level ``i``: ``num_res_blocks`` residual blocks to ``ch * ch_mult[i]``
   channels (+ self-attention when the resolution is in ``attn_resolutions``), then (except at the
   last level) a downsampling residual block (``resblock="biggan"``) or a ``Downsample``
   (``resblock="ddpm"``); NCSN++'s ``progressive_input`` adds a pyramid of downsampled inputs.
3. middle: res block, attention, res block.
4. per level (reversed): ``num_res_blocks + 1`` res blocks on ``concat(h, skip)``, attention at the
   listed resolutions, then an upsampling res block / ``Upsample``.
5. ``act(GroupNorm(h))``, ``conv3x3(C)`` (init scale ``init_scale``; 0 -> output ~0 at init).

Simplifications with respect to score_sde (documented, deliberate):

* ``progressive`` (output skip pyramid) is always ``"none"`` (score_sde's CIFAR-10 configs use
  "none"; "output_skip"/"residual" are used only for its >= 256px models).
* FIR resampling is implemented for resampling without a conv (BigGAN blocks, ``input_skip``)
  and for the pyramid's strided conv (``progressive_input="residual"``), not for the
  ``resblock="ddpm"`` Upsample-with-conv (raises).
* no ``scale_by_sigma`` / ``centered`` handling: the output is the raw network output, turned into a
  score by :func:`jaxscore.parameterization.make_score_fn`; inputs are expected centred ([-1, 1]).
* class conditioning (``num_classes``, null label) is an addition.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxscore._checks import check_batch
from jaxscore.models.embeddings import EMBEDDINGS, make_embedding
from jaxscore.models.layers import (
    AttnBlock,
    Downsample,
    ResnetBlockBigGAN,
    ResnetBlockDDPM,
    Upsample,
    conv1x1,
    conv3x3,
    dense,
    fir_downsample,
    get_activation,
    group_count,
    naive_downsample,
    normal_init,
)
from jaxscore.models.precision import compute_dtype, output_dtype

Array = jax.Array

#: default ``embedding_scale`` per embedding: positional embeds ``1000 t`` (score_sde DDPM++ uses
#: the timestep ``999 t``), Fourier embeds ``t`` as given (score_sde NCSN++ feeds ``log sigma``).
DEFAULT_EMBEDDING_SCALE = {"positional": 1000.0, "fourier": 1.0}


def resolve_embedding_scale(embedding: str, embedding_scale: float | None) -> float:
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding: expected one of {sorted(EMBEDDINGS)}, got {embedding!r}.")
    return DEFAULT_EMBEDDING_SCALE[EMBEDDINGS[embedding]] if embedding_scale is None else float(embedding_scale)


def label_or_null(labels, batch: int, num_classes: int | None, model: str) -> Array | None:
    """``labels [B] int`` -> indices into a ``num_classes + 1`` table (None -> the null index ``num_classes``)."""
    if num_classes is None:
        if labels is not None:
            raise ValueError(f"{model}: got labels but the model was built with num_classes=None (unconditional).")
        return None
    if labels is None:
        return jnp.full((batch,), num_classes, dtype=jnp.int32)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"{model}: labels must be integer class indices, got dtype {labels.dtype}.")
    if labels.shape != (batch,):
        raise ValueError(f"{model}: labels: expected shape [B] = ({batch},), got {tuple(labels.shape)}.")
    return labels


class UNet(nn.Module):
    """Configurable score_sde U-Net (DDPM++ / NCSN++). See the module docstring.

    Fields: ``ch`` base channels; ``ch_mult`` per-level multipliers; ``num_res_blocks``;
    ``attn_resolutions`` spatial sizes (height) with self-attention; ``dropout``;
    ``embedding`` ``"positional"|"fourier"``; ``embedding_scale`` (None: 1000 positional, 1 fourier);
    ``fourier_scale``; ``num_classes``; ``resblock`` ``"biggan"|"ddpm"``; ``resamp_with_conv``;
    ``fir`` / ``fir_kernel``; ``progressive_input`` ``"none"|"input_skip"|"residual"``;
    ``progressive_combine`` ``"sum"|"cat"``; ``skip_rescale``; ``init_scale``; ``num_groups``
    (None: ``min(C//4, 32)``); ``num_heads``; ``activation``; ``dtype`` the compute dtype
    (None / ``"float32"`` / ``"bfloat16"``: bfloat16 activations and convs, float32 params, time
    embedding, GroupNorm statistics, softmax and output head; the output is float32 either way,
    see :mod:`jaxscore.models.precision`).
    """

    ch: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    embedding: str = "positional"
    embedding_scale: float | None = None
    fourier_scale: float = 16.0
    num_classes: int | None = None
    resblock: str = "biggan"
    resamp_with_conv: bool = True
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    progressive_input: str = "none"
    progressive_combine: str = "sum"
    skip_rescale: bool = True
    init_scale: float = 0.0
    num_groups: int | None = None
    num_heads: int = 1
    activation: str | Callable[[Array], Array] = "silu"
    dtype: Any = None

    def _check(self, x, t):
        name = type(self).__name__
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(
                f"{name}: expected images x of shape [B, H, W, C] (NHWC), got shape {tuple(x.shape)}; "
                "use ScoreMLP for vector data [B, d]."
            )
        x, t = check_batch(x, t)
        factor = 2 ** (len(self.ch_mult) - 1)
        _, hh, ww, _ = x.shape
        if hh % factor or ww % factor:
            raise ValueError(
                f"{name}: image size {hh}x{ww} must be divisible by 2**(len(ch_mult)-1) = {factor} "
                f"(ch_mult={tuple(self.ch_mult)}); pad the images or use fewer levels."
            )
        if self.resblock not in ("biggan", "ddpm"):
            raise ValueError(f"{name}: resblock: expected 'biggan' or 'ddpm', got {self.resblock!r}.")
        if self.progressive_input not in ("none", "input_skip", "residual"):
            raise ValueError(
                f"{name}: progressive_input: expected 'none', 'input_skip' or 'residual', got {self.progressive_input!r}."
            )
        if self.progressive_combine not in ("sum", "cat"):
            raise ValueError(f"{name}: progressive_combine: expected 'sum' or 'cat', got {self.progressive_combine!r}.")
        return x, t

    @nn.compact
    def __call__(self, x: Array, t: Array, labels: Array | None = None, train: bool = False) -> Array:
        x, t = self._check(x, t)
        act = get_activation(self.activation)
        ch, nres = self.ch, len(self.ch_mult)
        dtype = compute_dtype(self.dtype)  # None (float32) or a numpy dtype; raises on unknown names
        out_dtype = output_dtype(x.dtype)
        if dtype is not None:
            x = x.astype(dtype)

        # --- time (+ label) embedding: sin/cos of scale * t in float32 (1000 t in bfloat16 would be
        # off by up to 2, i.e. by whole DDPM timesteps); the two dense layers in the compute dtype
        kind = EMBEDDINGS[self.embedding] if self.embedding in EMBEDDINGS else self.embedding
        scale = resolve_embedding_scale(self.embedding, self.embedding_scale)
        emb_dim = 2 * ch if kind == "fourier" else ch
        temb = make_embedding(kind, emb_dim, fourier_scale=self.fourier_scale)(scale * t)
        temb = dense(4 * ch, dtype=dtype, name="Dense_temb_0")(temb)
        temb = dense(4 * ch, dtype=dtype, name="Dense_temb_1")(act(temb))
        lab = label_or_null(labels, x.shape[0], self.num_classes, type(self).__name__)
        if lab is not None:
            temb = temb + nn.Embed(self.num_classes + 1, 4 * ch, embedding_init=normal_init(1.0), name="label_embedding")(lab).astype(temb.dtype)

        common = dict(
            dropout=self.dropout,
            skip_rescale=self.skip_rescale,
            init_scale=self.init_scale,
            act=act,
            num_groups=self.num_groups,
            dtype=dtype,
        )
        if self.resblock == "biggan":

            def res_block(out_ch=None, up=False, down=False):
                return ResnetBlockBigGAN(out_ch, up=up, down=down, fir=self.fir, fir_kernel=tuple(self.fir_kernel), **common)

        else:

            def res_block(out_ch=None, up=False, down=False):
                return ResnetBlockDDPM(out_ch, **common)

        def attn():
            return AttnBlock(
                num_heads=self.num_heads,
                skip_rescale=self.skip_rescale,
                init_scale=self.init_scale,
                num_groups=self.num_groups,
                dtype=dtype,
            )

        # --- downsampling path ------------------------------------------------------------------
        input_pyramid = x if self.progressive_input != "none" else None
        hs = [conv3x3(ch, dtype=dtype, name="Conv_in")(x)]
        for i_level in range(nres):
            for _ in range(self.num_res_blocks):
                h = res_block(ch * self.ch_mult[i_level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn()(h)
                hs.append(h)
            if i_level != nres - 1:
                if self.resblock == "biggan":
                    h = res_block(down=True)(hs[-1], temb, train)
                else:
                    h = Downsample(
                        with_conv=self.resamp_with_conv, fir=self.fir, fir_kernel=tuple(self.fir_kernel), dtype=dtype
                    )(hs[-1])
                if self.progressive_input == "input_skip":
                    input_pyramid = (
                        fir_downsample(input_pyramid, tuple(self.fir_kernel)) if self.fir else naive_downsample(input_pyramid)
                    )
                    proj = conv1x1(h.shape[-1], dtype=dtype)(input_pyramid)
                    h = proj + h if self.progressive_combine == "sum" else jnp.concatenate([proj, h], axis=-1)
                elif self.progressive_input == "residual":
                    input_pyramid = Downsample(
                        h.shape[-1], with_conv=True, fir=self.fir, fir_kernel=tuple(self.fir_kernel), dtype=dtype
                    )(input_pyramid)
                    input_pyramid = (input_pyramid + h) / math.sqrt(2.0) if self.skip_rescale else input_pyramid + h
                    h = input_pyramid
                hs.append(h)

        # --- middle -------------------------------------------------------------------------------
        h = hs[-1]
        h = res_block()(h, temb, train)
        h = attn()(h)
        h = res_block()(h, temb, train)

        # --- upsampling path ----------------------------------------------------------------------
        for i_level in reversed(range(nres)):
            for _ in range(self.num_res_blocks + 1):
                h = res_block(ch * self.ch_mult[i_level])(jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
            if h.shape[1] in self.attn_resolutions:
                h = attn()(h)
            if i_level != 0:
                if self.resblock == "biggan":
                    h = res_block(up=True)(h, temb, train)
                else:
                    h = Upsample(
                        with_conv=self.resamp_with_conv, fir=self.fir, fir_kernel=tuple(self.fir_kernel), dtype=dtype
                    )(h)
        assert not hs

        # output head in float32 (a negligible share of the FLOPs): the returned eps / x0 / score is not
        # rounded to the compute dtype, so losses, samplers and likelihoods stay float32
        h = act(nn.GroupNorm(group_count(h.shape[-1], self.num_groups), epsilon=1e-6, dtype=out_dtype, name="GroupNorm_out")(h))
        h = conv3x3(x.shape[-1], init_scale=self.init_scale, dtype=out_dtype, name="Conv_out")(h)
        return h.astype(out_dtype)


class DDPMpp(UNet):
    """DDPM++ (score_sde ``configs/vp/cifar10_ddpmpp_continuous.py``): positional embedding of
    ``1000 t``, BigGAN res blocks, no FIR, no input pyramid. Defaults = the CIFAR-10 model."""


class NCSNpp(UNet):
    """NCSN++ (score_sde ``configs/ve/cifar10_ncsnpp_continuous.py``): Gaussian-Fourier embedding
    (scale 16), BigGAN res blocks with FIR (1,3,3,1) resampling, ``progressive_input="residual"``
    (an input pyramid through FIR strided convs, summed into each downsampled level).
    Feed it ``t`` such that ``embedding_scale * t`` is a log-noise-like input (score_sde: ``log sigma``)."""

    embedding: str = "fourier"
    fir: bool = True
    progressive_input: str = "residual"


__all__ = ["UNet", "DDPMpp", "NCSNpp", "DEFAULT_EMBEDDING_SCALE", "label_or_null", "resolve_embedding_scale"]
