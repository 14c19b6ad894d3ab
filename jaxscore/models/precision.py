r"""Compute dtype of the bundled networks (mixed precision): one name -> one policy.

``model.dtype`` (a constructor field of :class:`~jaxscore.models.UNet` / ``DDPMpp`` / ``NCSNpp``
and :class:`~jaxscore.models.ScoreMLP`; ``config.model.dtype`` in a config) is the *compute*
dtype. With ``dtype="bfloat16"``:

==========================================  =====================================================
bfloat16                                    activations; the inputs and weights of every conv /
                                            dense (weights are cast from float32 at each call)
float32                                     parameters (``param_dtype``), hence gradients,
                                            optimizer state and EMA; the time / noise embedding
                                            (``sin``/``cos`` of ``1000 t`` or ``2 pi W t``);
                                            GroupNorm statistics and normalisation (flax's
                                            ``_compute_stats`` / ``_normalize`` promote to float32;
                                            only the normalised output is cast to bfloat16);
                                            attention logits and softmax
                                            (``jax.nn.dot_product_attention``); the output head
                                            (last GroupNorm + conv / last dense); the returned
                                            network output, so the loss, its reduction, the score
                                            and every sampler / likelihood state stay float32
==========================================  =====================================================

This is the usual practice: flax's ImageNet example passes ``dtype=bfloat16`` to every layer
with float32 parameters and float32 normalisation statistics; PyTorch autocast (which
score_sde_pytorch does not use: it trains in float32) runs ``group_norm``, ``softmax`` and
reductions in float32. bfloat16 keeps float32's 8 exponent bits, so gradients do not underflow
and no loss scaling is needed; it has 8 significant bits (unit roundoff
:math:`u = 2^{-8} \approx 3.9\times10^{-3}`), so each layer's output carries a relative error of
order ``u``. ``float16`` (5 exponent bits) would need loss scaling and is refused.

``dtype=None`` (the default) and ``"float32"`` compute in float32 (bit-identical networks).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

#: the names ``model.dtype`` accepts (``None`` = float32)
COMPUTE_DTYPES = ("float32", "bfloat16")


def compute_dtype(value: Any) -> Any:
    """``None`` -> ``None`` (compute in the input's dtype, float32); ``"float32"`` /
    ``"bfloat16"`` (or the ``jnp`` dtypes) -> the ``numpy`` dtype. Anything else raises
    ``ValueError`` naming the accepted values."""
    if value is None:
        return None
    try:
        dt = np.dtype(value)
    except TypeError:
        dt = None
    name = dt.name if dt is not None else None
    if name in COMPUTE_DTYPES:
        return jnp.dtype(name)
    if name == "float16":
        raise ValueError(
            "dtype: float16 is not supported (5 exponent bits: small gradients underflow without "
            f"loss scaling, which the train step does not do); expected None or one of {COMPUTE_DTYPES} "
            "(bfloat16 has float32's exponent range)."
        )
    raise ValueError(f"dtype: expected None or one of {COMPUTE_DTYPES} (the compute dtype), got {value!r}.")


def output_dtype(x_dtype: Any) -> Any:
    """The dtype a network returns for inputs of ``x_dtype``: at least float32."""
    return jnp.promote_types(x_dtype, jnp.float32)


__all__ = ["COMPUTE_DTYPES", "compute_dtype", "output_dtype"]
