"""Trace-time argument checks shared by the public API.

Every check runs on shapes and dtypes (known while tracing), so a mistake is
reported when a function is first traced under ``jit``, with what was expected
and what came. Value checks (``t`` in range) run only on concrete arrays.
"""

from __future__ import annotations

import math

import equinox as eqx
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


# --- one validator per concept: the samplers' and solvers' arguments ------------------------------

def check_steps(steps, *, name: str = "steps", minimum: int = 1, allow_none: bool = False) -> int | None:
    """A loop length: a Python int >= ``minimum`` (it fixes a compiled loop, so it is static).

    Rule: not an int (a float, bool, string, array) -> ``TypeError``; an int below ``minimum`` ->
    ``ValueError``; ``None`` -> ``None`` where ``allow_none`` (adaptive solvers), else ``ValueError``.
    """
    if steps is None:
        if allow_none:
            return None
        raise ValueError(f"{name}: expected an int >= {minimum} (None, adaptive steps, is not supported here), "
                         f"got None.")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"{name}: expected a Python int (static loop length), got {type(steps).__name__} {steps!r}.")
    if steps < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {steps}.")
    return int(steps)


def check_choice(name: str, value, choices) -> None:
    """``value`` must be one of ``choices`` (a ``ValueError`` naming them otherwise)."""
    if isinstance(value, (list, dict)) or value not in tuple(choices):
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {value!r}.")


def check_shape(shape, *, name: str = "shape") -> tuple[int, ...]:
    """``(B, *D)``: Python ints, ``B >= 1`` and at least one data axis, all > 0."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise TypeError(f"{name}: expected a tuple of ints (B, *D), got {shape!r}.") from err
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"{name}: expected (B, *D) with B >= 1 and at least one data axis, all > 0, got {shape}.")
    return shape


def check_time_interval(t_min, t_max, T, *, name: str = "t_min") -> None:
    """The times a sampler or solver runs between: ``0 <= t_min < t_max <= T`` (concrete values only;
    traced ones are not checked). Grids that need a finite log-SNR at ``t_min`` ask ``t_min > 0``
    themselves (:func:`jaxscore.samplers.grids.time_grid`)."""
    if not (is_concrete(t_min) and is_concrete(t_max) and is_concrete(T)):
        return
    lo, hi, top = float(np.asarray(t_min)), float(np.asarray(t_max)), float(np.asarray(T))
    if not (0.0 <= lo < hi <= top + 1e-12):
        raise ValueError(f"{name}: expected 0 <= t_min < t_max <= T = {top}, got t_min={lo}, t_max={hi}.")


def check_example_offset(example_offset) -> jax.Array:
    """Global example index of row 0: a non-negative integer scalar (int or integer array, possibly
    traced), returned as a uint32 scalar (traced, so a new offset never recompiles)."""
    if isinstance(example_offset, bool) or not (
        isinstance(example_offset, (int, np.integer))
        or (jnp.ndim(example_offset) == 0 and jnp.issubdtype(jnp.result_type(example_offset), jnp.integer))
    ):
        raise TypeError(f"example_offset: expected a non-negative integer scalar, got {example_offset!r}.")
    if isinstance(example_offset, (int, np.integer)) and example_offset < 0:
        raise ValueError(f"example_offset: expected a non-negative integer, got {example_offset}.")
    return jnp.asarray(example_offset, jnp.uint32)


# --- scalar options: one sign rule each (concrete values only; traced ones are not checked) -------

def _concrete_scalar(name: str, value) -> float | None:
    """``value`` as a Python float when it is a concrete real scalar, ``None`` when traced."""
    if not is_concrete(value):
        return None
    if isinstance(value, bool) or jnp.ndim(value) != 0:
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}.")
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}.") from None


def check_finite_number(name: str, value) -> None:
    """A concrete real scalar must be finite (not NaN or +-inf): a ``ValueError`` otherwise."""
    v = _concrete_scalar(name, value)
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {v}.")


def check_nonnegative(name: str, value, *, why: str = "") -> None:
    """A concrete real scalar must be finite and ``>= 0`` (``why`` is appended to the message)."""
    v = _concrete_scalar(name, value)
    if v is not None and not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name}: expected a finite number >= 0{why}, got {v}.")


def check_positive(name: str, value, *, why: str = "") -> None:
    """A concrete real scalar must be finite and ``> 0`` (``why`` is appended to the message)."""
    v = _concrete_scalar(name, value)
    if v is not None and not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name}: expected a finite number > 0{why}, got {v}.")


# --- PRNG keys -----------------------------------------------------------------------------------

def _legacy_key_shape() -> tuple[int, ...]:
    """Shape of a legacy ``jax.random.PRNGKey`` under the default PRNG implementation ((2,) for threefry)."""
    return tuple(jax.eval_shape(jax.random.PRNGKey, 0).shape)


def check_key(key, *, name: str = "key"):
    """One PRNG key: a typed key of shape ``()`` (``jax.random.key(seed)``) or a legacy raw key
    (``jax.random.PRNGKey(seed)``: uint32 of shape ``(2,)`` for threefry). Anything else (an int
    seed, a float array, a batch of keys) is a ``TypeError`` at trace time. Returns ``key``."""
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        if tuple(shape) != ():
            raise TypeError(f"{name}: expected one PRNG key (shape ()), got a key array of shape {tuple(shape)}.")
        return key
    legacy = _legacy_key_shape()
    if dtype is not None and dtype == jnp.uint32 and tuple(shape) == legacy:
        return key
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        got = f"the int {key}; pass jax.random.key({key})"
    else:
        got = (f"an array of dtype {dtype} and shape {tuple(shape)}" if dtype is not None
               else f"{type(key).__name__} {key!r}")
    raise TypeError(f"{name}: expected a PRNG key, jax.random.key(seed) (or a legacy uint32{list(legacy)} "
                    f"jax.random.PRNGKey(seed)), got {got}.")


# --- non-finite values ---------------------------------------------------------------------------

def nonfinite_rows(x) -> jax.Array:
    """``[B]`` bool: row ``i`` of ``x: [B, *D]`` holds a NaN or an infinity (jit-compatible)."""
    x = jnp.asarray(x)
    return ~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=-1)


def count_nonfinite_rows(x) -> jax.Array:
    """int32 scalar: the number of rows of ``x: [B, *D]`` with any non-finite value (jit-compatible)."""
    return jnp.sum(nonfinite_rows(x), dtype=jnp.int32)


def format_indices(indices, *, limit: int = 8) -> str:
    """``"3, 17, 40"`` (the first ``limit``, then ``", ..."``) for error messages."""
    indices = [int(i) for i in np.asarray(indices).ravel()]
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (", ..." if len(indices) > limit else "")


def check_finite_rows(name: str, x) -> jax.Array:
    """Every value of ``x: [B, *D]`` must be finite. Concrete ``x``: a ``ValueError`` naming the
    bad rows, before any work; traced ``x``: ``equinox.error_if`` (raised when the compiled
    function runs; the message cannot name rows there). Returns ``x``."""
    if is_concrete(x):
        bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(x).reshape(np.shape(x)[0], -1)), axis=-1))
        if bad.size:
            raise ValueError(f"{name}: expected finite values, got NaN or inf in {bad.size} of {np.shape(x)[0]} "
                             f"rows (rows {format_indices(bad)}).")
        return x
    return eqx.error_if(x, jnp.any(nonfinite_rows(x)), f"{name}: expected finite values, got NaN or inf in some rows.")


# --- shapes --------------------------------------------------------------------------------------

def check_broadcasts_to(name: str, shape, target, *, hint: str = "") -> None:
    """An array of ``shape`` must broadcast to ``target`` without changing it (e.g. a mask against
    the data): a ``ValueError`` naming both shapes otherwise."""
    shape, target = tuple(shape), tuple(target)
    try:
        ok = tuple(np.broadcast_shapes(shape, target)) == target
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected a shape that broadcasts to {target}{hint}, got {shape}.")
