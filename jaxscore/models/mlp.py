r"""Time-conditioned MLP score network for vector data ``x: [B, d]`` (toy 2-D / low-dim problems).

.. math::
   e = \mathrm{act}(W_e\,\mathrm{emb}(s\,t) + b_e) \;[+\; E[\text{label}]], \qquad
   h_0 = x, \quad h_{l} = \mathrm{Dropout}(\mathrm{act}(W_l h_{l-1} + U_l e + b_l)), \quad
   \text{out} = W_{L+1} h_L + b_{L+1} \in \mathbb R^d

``emb`` is :class:`~jaxscore.models.embeddings.GaussianFourierEmbedding` (``"fourier"``) or
:class:`~jaxscore.models.embeddings.SinusoidalEmbedding` (``"sinusoidal"``/``"positional"``) of the
scaled input ``s t`` (``embedding_scale``; default 1 for Fourier, 1000 for sinusoidal). The time
embedding is projected and added before every hidden activation. Same call signature as the
U-Nets: ``apply(variables, x, t, labels=None, train=False, rngs={"dropout": key}) -> [B, d]``.

``dtype`` is the compute dtype (None / ``"float32"`` / ``"bfloat16"``): the hidden layers and the
time projection run in it; the embedding, the parameters and the output layer stay float32 and
the output is float32 (:mod:`jaxscore.models.precision`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxscore._checks import check_batch
from jaxscore.models.embeddings import EMBEDDINGS, make_embedding
from jaxscore.models.layers import default_init, get_activation, normal_init
from jaxscore.models.precision import compute_dtype, output_dtype
from jaxscore.models.unet import label_or_null, resolve_embedding_scale

Array = jax.Array


class ScoreMLP(nn.Module):
    """MLP ``(x [B, d], t [B]) -> [B, d]`` with the time embedding added in every hidden layer."""

    hidden_dims: Sequence[int] = (128, 128, 128)
    embedding: str = "fourier"
    embedding_dim: int = 64
    embedding_scale: float | None = None
    fourier_scale: float = 16.0
    activation: str | Callable[[Array], Array] = "silu"
    num_classes: int | None = None
    dropout: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array, t: Array, labels: Array | None = None, train: bool = False) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 2:
            raise ValueError(
                f"ScoreMLP: expected vector data x of shape [B, d], got shape {tuple(x.shape)}; "
                "use a U-Net (DDPMpp/NCSNpp) for images or flatten them."
            )
        x, t = check_batch(x, t)
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"ScoreMLP: embedding: expected one of {sorted(EMBEDDINGS)}, got {self.embedding!r}.")
        act = get_activation(self.activation)
        dtype, out_dtype = compute_dtype(self.dtype), output_dtype(x.dtype)
        scale = resolve_embedding_scale(self.embedding, self.embedding_scale)
        emb = make_embedding(EMBEDDINGS[self.embedding], self.embedding_dim, fourier_scale=self.fourier_scale)(scale * t)
        temb = act(nn.Dense(self.embedding_dim, kernel_init=default_init(), dtype=dtype, name="time_dense")(emb))
        lab = label_or_null(labels, x.shape[0], self.num_classes, "ScoreMLP")
        if lab is not None:
            temb = temb + nn.Embed(self.num_classes + 1, self.embedding_dim, embedding_init=normal_init(1.0), name="label_embedding")(lab).astype(temb.dtype)
        h = x if dtype is None else x.astype(dtype)
        for i, width in enumerate(self.hidden_dims):
            h = nn.Dense(width, kernel_init=default_init(), dtype=dtype, name=f"dense_{i}")(h) + nn.Dense(width, use_bias=False, kernel_init=default_init(), dtype=dtype, name=f"time_proj_{i}")(temb)
            h = act(h)
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        return nn.Dense(x.shape[-1], kernel_init=default_init(), dtype=out_dtype, name="out")(h).astype(out_dtype)
