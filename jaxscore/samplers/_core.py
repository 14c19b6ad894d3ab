r"""Pieces shared by the fixed-step samplers: the one front every fixed-step sampler has
(:func:`fixed_step`: argument checks, the time grid resolved once, the prior draw, the optional final
Tweedie step and ``info``), batch-size-invariant noise, score calls on a scalar time and the
compiled step loop.

A fixed-step sampler is written as its *loop*: ``loop(score_fn, sde, start, **own_options) ->
(x, trajectory, nfe)`` on a :class:`Start` (the grid ``ts [steps + 1]``, ``x_T [B, *D]``, the
per-example keys); :func:`fixed_step` turns it into the public function
``fn(key, score_fn, sde, shape, *, steps, grid, t_min, t_max, rho, denoise, return_info, return_trajectory,
example_offset, x_init, **own_options)``. So ``grid`` / ``t_min`` / ``t_max`` / ``rho`` (a grid name and its
range, or an explicit array of times) are resolved once, by :func:`jaxscore.samplers.grids.time_grid`,
and no loop sees them.

Batch-size invariance: example ``i`` of a call gets its own key ``k_i = fold_in(key, offset + i)``;
its prior draw uses ``fold_in(k_i, 0)`` and the ``j``-th normal draw of step ``n`` uses
``fold_in(fold_in(k_i, n + 1), j)``. So the noise that example ``i`` sees depends on ``(key, i)``
only, never on the batch size: the first 16 samples of a 16-sample call equal those of a
4096-sample call (up to float round-off from batched arithmetic in ``score_fn``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import (
    broadcast_to_data,
    check_example_offset,
    check_key,
    check_shape,
    check_steps,
    count_nonfinite_rows,
)
from jaxscore._keys import example_keys
from jaxscore.samplers.grids import default_sigma_min, extrapolate_x0, resolve_denoise, time_grid

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


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


class Start(NamedTuple):
    """What a fixed-step loop starts from (made once by :func:`fixed_step`)."""

    ts: jax.Array  # [steps + 1] decreasing times; step n goes from ts[n] to ts[n + 1]
    x: jax.Array  # [B, *D] the state at ts[0] (the prior draw, or x_init)
    keys: jax.Array  # [B] per-example keys (noise of step n: step_normal(keys, n, ...))
    trajectory: bool  # whether the loop returns the state after every step
    denoise: bool | str = False  # the final step to sigma = 0 after the loop: False, True (Tweedie), "extrapolate"

    @property
    def steps(self) -> int:
        return self.ts.shape[0] - 1

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape


def setup(key, score_fn, sde, shape, steps, grid, t_min, rho, example_offset, x_init=None,
          return_trajectory: bool = False, t_max=None, denoise: bool = False, sigma_min=None,
          sigma_max=None) -> Start:
    r"""Checks and the common start (grid, per-example keys, ``x_T``).

    The state at ``ts[0]`` is the prior draw scaled by :math:`\sigma_{t_0}/\sigma_T`, i.e. the
    prior's own rule (:math:`N(0, \sigma_t^2 I)`, the marginal of data at the origin) at the start
    time: exactly the prior when ``ts[0] = T``, and for a start below ``T`` (``t_max``, or an explicit
    grid) the right scale for VE (where :math:`\sigma_{t_0} \ll \sigma_T`) and ~1 for VP.
    ``x_init`` [B, *D], when given, replaces that draw (e.g. to start several samplers from the same
    noise, or from a partially noised image with ``grid`` an explicit array starting below T).
    """
    check_key(key)
    check_score_fn(score_fn)
    shape = check_shape(shape)
    steps = check_steps(steps)
    ts = time_grid(sde, steps, grid, t_min=t_min, t_max=t_max, rho=rho, sigma_min=sigma_min, sigma_max=sigma_max)
    ex_keys = example_keys(key, shape[0], check_example_offset(example_offset))
    if x_init is None:
        x = prior_draw(ex_keys, sde, shape)
        scale = sde.marginal_coefs(ts[0])[1] / sde.marginal_coefs(jnp.asarray(sde.T, ts.dtype))[1]
        x = x * scale.astype(x.dtype)
    else:
        x = jnp.asarray(x_init)
        if x.shape != shape or not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x_init: expected a float array of shape {shape}, got {x.dtype} {x.shape}.")
        x = x.astype(float_dtype())
    return Start(ts, x, ex_keys, bool(return_trajectory), denoise)


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


class LoopResult(NamedTuple):
    """What a fixed-step loop returns: the state at ``ts[-1]``, the trajectory (or ``None``), the NFE of the loop
    and, for the loops that keep it, the data prediction made at ``ts[-2]`` (what ``denoise="extrapolate"``
    needs)."""

    x: jax.Array
    trajectory: jax.Array | None
    nfe: int
    last_x0: jax.Array | None = None


def finish(x, x_init, traj, ts, nfe: int, score_fn, sde, denoise, return_info: bool, return_trajectory: bool,
           extra_info: dict | None = None, last_x0=None, name: str = "sampler"):
    r"""The optional final step to :math:`\tilde\sigma = 0` (1 NFE) and ``info``. ``denoise=True``: Tweedie,
    :math:`\hat x_0 = (x + \sigma^2 s(x, t_{min}))/\alpha`; ``"extrapolate"``: that prediction and ``last_x0`` (the
    one made at ``ts[-2]``) extrapolated to :math:`\tilde\sigma = 0` (:func:`jaxscore.samplers.grids.extrapolate_x0`)."""
    t_last = ts[-1]
    if denoise:
        x0 = sde.denoise(x, call_score(score_fn, x, t_last), tvec(t_last, x))
        if denoise == "extrapolate":
            if last_x0 is None:
                raise ValueError(f"{name}: denoise='extrapolate' needs the data prediction made at ts[-2], which only "
                                 f"the multistep solvers keep (ddim, dpmpp_2m, dpmpp_3m, unipc); use denoise=True.")
            x0 = extrapolate_x0(sde, last_x0, x0, ts[-2], t_last)
        x = x0
        nfe += 1
    if not return_info:
        return x
    info = {"nfe": int(nfe), "ts": ts, "nonfinite": count_nonfinite_rows(x)}
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


def _keyword(name, default):
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)


def fixed_step(*, steps: int, grid, sigma_min=None, sigma_max=None, rho=None, denoise=False):
    r"""Decorator: a loop ``loop(score_fn, sde, start: Start, *, <own options>) -> (x, trajectory, nfe[, last_x0])``
    becomes the public sampler

    ``fn(key, score_fn, sde, shape, *, steps=steps, grid=grid, t_min=None, t_max=None, sigma_min=sigma_min,
    sigma_max=sigma_max, rho=rho, <own options>, denoise=denoise, return_info=False, return_trajectory=False,
    example_offset=0, x_init=None)``

    returning ``[B, *D]`` samples, or ``(samples, info)`` with ``return_info`` (``info["nfe"]``,
    ``info["ts"]``, ``info["nonfinite"]`` (int32: rows of the samples holding a NaN or inf), with
    ``return_trajectory`` ``info["trajectory"]`` ``[steps + 1, B, *D]``).
    ``steps``, ``grid``, ``sigma_min`` / ``sigma_max`` (the grid's end and start as noise levels
    :math:`\sigma_t/\alpha_t`, clipped into the SDE's range; ``None``: ``sde.t_min`` / ``T``), ``rho`` and
    ``denoise`` (``False``; ``True``, a Tweedie step to :math:`\tilde\sigma = 0`; ``"extrapolate"``, the
    second-order step of :func:`jaxscore.samplers.grids.extrapolate_x0`, for loops that return
    :class:`LoopResult` ``last_x0``; ``"auto"``, :func:`jaxscore.samplers.grids.default_denoise` of the step count)
    here are the sampler's defaults. ``t_min`` / ``t_max``, when given, set the range in time and win over
    ``sigma_min`` / ``sigma_max`` (:func:`jaxscore.samplers.grids.resolve_range`). The loop's docstring is the
    sampler's.
    """

    def wrap(loop):
        own = {p.name: p.default for p in inspect.signature(loop).parameters.values()
               if p.kind is inspect.Parameter.KEYWORD_ONLY}
        name = loop.__name__

        @functools.wraps(loop)
        def sampler(key, score_fn, sde, shape, *, steps=steps, grid=grid, t_min=None, t_max=None,
                    sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, denoise=denoise, return_info=False,
                    return_trajectory=False, example_offset=0, x_init=None, **options):
            unknown = sorted(set(options) - set(own))
            if unknown:
                raise TypeError(f"{name}() got unexpected keyword argument(s) {unknown}; its options are "
                                f"{sorted(['grid', 't_min', 't_max', 'sigma_min', 'sigma_max', 'rho', 'denoise', *own])}.")
            if return_trajectory and not return_info:
                raise ValueError("return_trajectory=True needs return_info=True (the trajectory is returned in info).")
            denoise = resolve_denoise(denoise, check_steps(steps))
            if isinstance(sigma_min, str) and sigma_min == "auto":
                sigma_min = default_sigma_min(steps, denoise)
            start = setup(key, score_fn, sde, shape, steps, grid, t_min, rho, example_offset, x_init,
                          return_trajectory, t_max, denoise, sigma_min, sigma_max)
            out = LoopResult(*loop(score_fn, sde, start, **options))
            return finish(out.x, start.x, out.trajectory, start.ts, out.nfe, score_fn, sde, denoise, return_info,
                          return_trajectory, last_x0=out.last_x0, name=name)

        common = inspect.signature(sampler, follow_wrapped=False).parameters
        params = [p for p in common.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        at = [p.name for p in params].index("denoise")
        params[at:at] = [_keyword(k, v) for k, v in own.items()]
        sampler.__signature__ = inspect.Signature(params)
        del sampler.__wrapped__  # the signature is the sampler's, not the loop's
        return sampler

    return wrap
