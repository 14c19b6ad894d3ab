"""Trace-time argument checks shared by the public API.

Every check runs on shapes and dtypes (known while tracing), so a mistake is
reported when a function is first traced under ``jit``, with what was expected
and what came. Value checks (``t`` in range) run only on concrete arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
    """True when ``value`` holds known numbers (not a tracer inside jit/vmap/grad)."""
    return not isinstance(value, jax.core.Tracer)


def check_float_array(name: str, value, *, min_ndim: int = 0) -> jax.Array:
    """Return ``value`` as an array after checking it is floating point with ``>= min_ndim`` axes."""
    arr = jnp.asarray(value)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}.")
    if arr.ndim < min_ndim:
        raise ValueError(
            f"{name}: expected at least {min_ndim} axes ([B, ...]), got shape {tuple(arr.shape)}."
        )
    return arr


def check_batch(x, t, *, name_x: str = "x", name_t: str = "t") -> tuple[jax.Array, jax.Array]:
    """Check the ``score_fn`` contract: ``x`` is ``[B, *D]`` float, ``t`` is ``[B]`` float.

    A scalar ``t`` is broadcast to ``[B]`` (a convenience for notebooks).
    """
    x = check_float_array(name_x, x, min_ndim=1)
    t = jnp.asarray(t)
    if not jnp.issubdtype(t.dtype, jnp.floating):
        t = t.astype(x.dtype)
    if t.ndim == 0:
        t = jnp.broadcast_to(t, x.shape[:1])
    if t.shape != x.shape[:1]:
        raise ValueError(
            f"{name_t}: expected shape [B] = {tuple(x.shape[:1])} matching {name_x}'s batch axis "
            f"(contract score_fn(x: [B, *D], t: [B])), got shape {tuple(t.shape)}."
        )
    return x, t


def check_time_range(t, t_lo: float, t_hi: float, *, name: str = "t") -> None:
    """Raise if concrete ``t`` lies outside ``[t_lo, t_hi]``; traced values are not checked."""
    if not is_concrete(t):
        return
    arr = np.asarray(t)
    if arr.size and (np.min(arr) < t_lo or np.max(arr) > t_hi or not np.all(np.isfinite(arr))):
        raise ValueError(
            f"{name}: expected values in [{t_lo}, {t_hi}], got min {np.min(arr):.6g}, max {np.max(arr):.6g}."
        )


def broadcast_to_data(coef: jax.Array, x: jax.Array) -> jax.Array:
    """Reshape a per-example coefficient ``[B]`` so it broadcasts against ``x: [B, *D]``."""
    coef = jnp.asarray(coef)
    return coef.reshape(coef.shape + (1,) * (x.ndim - coef.ndim))
