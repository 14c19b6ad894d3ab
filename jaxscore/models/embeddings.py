r"""Time / noise-level embeddings: any real scalar per example -> a feature vector.

Both take ``t: [B]`` (any real number: a time in [0, 1], ``1000 t``, ``log sigma``,
EDM's ``c_noise = ln(sigma)/4`` ...) and return ``[B, dim]``. Scaling of the input
(``1000 t`` for DDPM++'s positional embedding) is the caller's ``embedding_scale``.

* :class:`SinusoidalEmbedding` (DDPM / Transformer positional embedding, score_sde
  ``get_timestep_embedding``): with ``h = dim // 2`` and
  :math:`\omega_k = \exp(-k \ln(\text{max\_period})/(h-1))`, :math:`k=0..h-1`,

  .. math:: e(t) = [\sin(t\,\omega_0), \dots, \sin(t\,\omega_{h-1}), \cos(t\,\omega_0), \dots, \cos(t\,\omega_{h-1})]

  (a zero column is appended when ``dim`` is odd).

* :class:`GaussianFourierEmbedding` (Tancik et al. 2020; score_sde NCSN++): fixed random
  frequencies :math:`W_k \sim \mathcal N(0, \text{scale}^2)`, :math:`k=0..dim/2-1`,

  .. math:: e(t) = [\sin(2\pi W t), \cos(2\pi W t)].

  The frequencies are **not a variable**: they are a deterministic constant drawn with
  NumPy from ``seed`` when the module is traced, so they never appear in ``params``,
  receive no gradient and are untouched by optimizers / weight decay / EMA
  (score_sde stores them as a ``requires_grad=False`` parameter; same effect).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import check_float_array


def _check_t(t) -> jax.Array:
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(jnp.float32)
    if t.ndim != 1:
        raise ValueError(f"t: expected shape [B] (one time / noise level per example), got shape {tuple(t.shape)}.")
    return check_float_array("t", t, min_ndim=1)


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    r"""Functional form of :class:`SinusoidalEmbedding`: ``t: [B] -> [B, dim]``."""
    t = _check_t(t)
    if dim < 2:
        raise ValueError(f"SinusoidalEmbedding: expected dim >= 2, got {dim}.")
    half = dim // 2
    step = math.log(max_period) / max(half - 1, 1)
    freqs = jnp.exp(-step * jnp.arange(half, dtype=jnp.float32))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def fourier_frequencies(dim: int, scale: float = 16.0, seed: int = 0) -> np.ndarray:
    """The fixed frequencies ``W: [dim // 2]`` of :class:`GaussianFourierEmbedding` (a NumPy constant)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"GaussianFourierEmbedding: expected an even dim >= 2, got {dim}.")
    return (np.random.default_rng(seed).standard_normal(dim // 2) * scale).astype(np.float32)


class SinusoidalEmbedding(nn.Module):
    """DDPM / Transformer sinusoidal embedding ``t: [B] -> [B, dim]`` (no parameters)."""

    dim: int
    max_period: float = 10000.0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        return sinusoidal_embedding(t, self.dim, self.max_period)


class GaussianFourierEmbedding(nn.Module):
    r"""Gaussian random Fourier features :math:`[\sin 2\pi W t, \cos 2\pi W t]`, ``t: [B] -> [B, dim]``.

    ``W ~ N(0, scale^2)`` of size ``dim // 2`` is a fixed constant (see module docstring).
    """

    dim: int
    scale: float = 16.0
    seed: int = 0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        t = _check_t(t)
        w = jnp.asarray(fourier_frequencies(self.dim, self.scale, self.seed))
        args = 2.0 * jnp.pi * t.astype(jnp.float32)[:, None] * w[None, :]
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


EMBEDDINGS = {"fourier": "fourier", "positional": "positional", "sinusoidal": "positional"}


def make_embedding(kind: str, dim: int, *, fourier_scale: float = 16.0, max_period: float = 10000.0) -> nn.Module:
    """Build an embedding by name: ``"fourier"`` or ``"positional"`` (alias ``"sinusoidal"``)."""
    canonical = EMBEDDINGS.get(kind)
    if canonical is None:
        raise ValueError(f"embedding: expected one of {sorted(EMBEDDINGS)}, got {kind!r}.")
    if canonical == "fourier":
        return GaussianFourierEmbedding(dim, scale=fourier_scale)
    return SinusoidalEmbedding(dim, max_period=max_period)
