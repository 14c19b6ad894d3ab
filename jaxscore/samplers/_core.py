r"""Pieces shared by the fixed-step samplers: argument checks, batch-size-invariant noise,
score calls on a scalar time, the compiled step loop and the final (optional) Tweedie step.

Batch-size invariance: example ``i`` of a call gets its own key ``k_i = fold_in(key, offset + i)``;
its prior draw uses ``fold_in(k_i, 0)`` and the ``j``-th normal draw of step ``n`` uses
``fold_in(fold_in(k_i, n + 1), j)``. So the noise that example ``i`` sees depends on ``(key, i)``
only, never on the batch size: the first 16 samples of a 16-sample call equal those of a
4096-sample call (up to float round-off from batched arithmetic in ``score_fn``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import broadcast_to_data
from jaxscore._keys import example_keys
from jaxscore.samplers.grids import check_steps, time_grid

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_shape(shape) -> tuple[int, ...]:
    """``shape`` = ``(B, *D)``: a tuple of positive Python ints with at least one data axis."""
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as err:
        raise TypeError(f"shape: expected a tuple of ints (B, *D), got {shape!r}.") from err
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"shape: expected (B, *D) with B >= 1 and at least one data axis, all > 0, got {shape}.")
    return shape


def check_score_fn(score_fn) -> None:
    if not callable(score_fn):
        raise TypeError(f"score_fn: expected a callable score_fn(x: [B, *D], t: [B]) -> [B, *D], got {type(score_fn).__name__}.")


def float_dtype():
    return jnp.result_type(float)


def prior_draw(ex_keys: jax.Array, sde, shape: tuple[int, ...]) -> jax.Array:
    """Prior sample ``[B, *D]``; row i drawn from ``fold_in(k_i, 0)`` via ``sde.prior_sample``."""
    data_shape = (1,) + tuple(shape[1:])
    return jax.vmap(lambda k: sde.prior_sample(jax.random.fold_in(k, 0), data_shape, float_dtype())[0])(ex_keys)


def step_normal(ex_keys: jax.Array, step, data_shape: tuple[int, ...], sub: int = 0) -> jax.Array:
    """Standard normals ``[B, *D]`` for draw ``sub`` of step ``step`` (``step`` may be traced)."""
    step = jnp.asarray(step, jnp.uint32)

    def one(k):
        k = jax.random.fold_in(jax.random.fold_in(k, step + jnp.uint32(1)), sub)
        return jax.random.normal(k, data_shape, float_dtype())

    return jax.vmap(one)(ex_keys)


def tvec(t, x: jax.Array) -> jax.Array:
    """Broadcast a scalar time to ``[B]`` for ``x: [B, *D]``."""
    return jnp.full(x.shape[:1], t, dtype=x.dtype)


def call_score(score_fn: ScoreFn, x: jax.Array, t) -> jax.Array:
    """``score_fn(x, t * ones[B])`` with a trace-time check of the output's shape and dtype."""
    out = score_fn(x, tvec(t, x))
    if getattr(out, "shape", None) != x.shape:
        raise ValueError(
            f"score_fn: expected output of shape {x.shape} (same as x, contract score_fn(x: [B, *D], t: [B]) -> [B, *D]), "
            f"got {getattr(out, 'shape', type(out).__name__)}."
        )
    return out.astype(x.dtype)


def bcast(coef, x: jax.Array) -> jax.Array:
    """Per-example ``[B]`` or scalar coefficient, reshaped to broadcast against ``x``."""
    coef = jnp.asarray(coef)
    return coef if coef.ndim == 0 else broadcast_to_data(coef, x)


def setup(key, score_fn, sde, shape, steps, grid, t_min, rho, example_offset, x_init=None, *, min_steps: int = 1):
    """Checks and the common start: ``(shape, steps, ts [steps+1], ex_keys [B], x_T [B, *D])``.

    ``x_init`` [B, *D], when given, replaces the prior draw as the state at ``ts[0]`` (e.g. to start
    several samplers from the same noise, or from a partially noised image with ``grid`` an explicit
    array starting below T).
    """
    check_score_fn(score_fn)
    shape = check_shape(shape)
    steps = check_steps(steps, minimum=min_steps)
    ts = time_grid(sde, steps, grid, t_min=t_min, rho=rho)
    ex_keys = example_keys(key, shape[0], example_offset)
    if x_init is None:
        x = prior_draw(ex_keys, sde, shape)
    else:
        x = jnp.asarray(x_init)
        if x.shape != shape or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x_init: expected a float array of shape {shape}, got {x.dtype} {x.shape}.")
        x = x.astype(float_dtype())
    return shape, steps, ts, ex_keys, x


def scan_steps(body, carry, steps: int, return_trajectory: bool, get_x=lambda c: c[0]):
    """Run ``carry = body(carry, n)`` for ``n = 0..steps-1`` in one ``lax.scan``.

    Returns ``(carry, trajectory)`` where ``trajectory`` is ``[steps, B, *D]`` (the state after each
    step) when requested, else ``None``.
    """

    def step(c, n):
        c = body(c, n)
        return c, (get_x(c) if return_trajectory else None)

    carry, ys = jax.lax.scan(step, carry, jnp.arange(steps))
    return carry, ys


def finish(x, x_init, traj, ts, nfe: int, score_fn, sde, denoise: bool, return_info: bool, return_trajectory: bool,
           extra_info: dict | None = None):
    """Optional final Tweedie step :math:`\\hat x_0 = (x + \\sigma^2 s(x, t_{min}))/\\alpha` (1 NFE); pack info."""
    t_last = ts[-1]
    if denoise:
        x = sde.denoise(x, call_score(score_fn, x, t_last), tvec(t_last, x))
        nfe += 1
    if not return_info:
        if return_trajectory:
            raise ValueError("return_trajectory=True needs return_info=True (the trajectory is returned in info).")
        return x
    info = {"nfe": int(nfe), "ts": ts}
    if return_trajectory:
        info["trajectory"] = jnp.concatenate([x_init[None], traj], axis=0)
    if extra_info:
        info.update(extra_info)
    return x, info


def order_schedule(steps: int, order: int, lower_order_final: bool) -> np.ndarray:
    """Static per-step order of a multistep solver: warm-up (1, 2, ..) and, if ``lower_order_final``,
    ``min(order, steps - n)`` for the last steps (as in DPM-Solver++ / UniPC)."""
    n = np.arange(steps)
    o = np.minimum(order, n + 1)
    if lower_order_final:
        o = np.minimum(o, steps - n)
    return o.astype(np.int32)
