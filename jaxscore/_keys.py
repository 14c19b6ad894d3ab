"""Per-example randomness: example ``i``'s key depends only on ``(key, i)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def example_keys(key: jax.Array, num: int, offset=0) -> jax.Array:
    """``[fold_in(key, offset + i) for i < num]``: [num] keys (``offset`` may be traced).

    Used wherever a batch's noise must not depend on the batch size or on how the batch is
    split: samplers, likelihood probes/dequantisation, and the training step's global rows.
    """
    idx = jnp.arange(num, dtype=jnp.uint32) + jnp.asarray(offset, jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
