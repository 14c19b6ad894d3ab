"""Flax Linen score networks with one call signature.

``model.init({"params": k, "dropout": k2}, x, t, labels=None, train=False)`` and
``model.apply(variables, x, t, labels=None, train=False, rngs={"dropout": k})`` -> same shape as ``x``.

* :class:`ScoreMLP` for vectors ``[B, d]``;
* :class:`DDPMpp`, :class:`NCSNpp` (and the configurable :class:`UNet`) for images ``[B, H, W, C]``;
* embeddings :class:`GaussianFourierEmbedding`, :class:`SinusoidalEmbedding`;
* presets: :func:`get_preset`, :func:`build_model`, :func:`count_params`;
* mixed precision: every model's ``dtype`` field is the compute dtype (``None``/``"float32"``,
  ``"bfloat16"``), checked by :func:`compute_dtype` (:data:`COMPUTE_DTYPES`); parameters and the
  output stay float32.
"""

from jaxscore.models.embeddings import GaussianFourierEmbedding, SinusoidalEmbedding, sinusoidal_embedding
from jaxscore.models.layers import AttnBlock, ResnetBlockBigGAN, ResnetBlockDDPM
from jaxscore.models.mlp import ScoreMLP
from jaxscore.models.precision import COMPUTE_DTYPES, compute_dtype
from jaxscore.models.presets import (
    MODEL_CLASSES,
    PRESET_NAMES,
    build_model,
    count_params,
    get_preset,
    init_shapes,
    preset_class,
)
from jaxscore.models.unet import DDPMpp, NCSNpp, UNet

__all__ = [
    "AttnBlock",
    "COMPUTE_DTYPES",
    "DDPMpp",
    "GaussianFourierEmbedding",
    "MODEL_CLASSES",
    "NCSNpp",
    "PRESET_NAMES",
    "ResnetBlockBigGAN",
    "ResnetBlockDDPM",
    "ScoreMLP",
    "SinusoidalEmbedding",
    "UNet",
    "build_model",
    "compute_dtype",
    "count_params",
    "get_preset",
    "init_shapes",
    "preset_class",
    "sinusoidal_embedding",
]
