r"""Exact log-likelihoods, bits/dim and latent encodings through the probability-flow ODE.

The probability-flow ODE :math:`dx/dt = \tilde f(x, t) = f(t)x - \tfrac12 g(t)^2 s_\theta(x, t)`
is a continuous normalising flow (Chen et al., 2018; Grathwohl et al., 2019, FFJORD;
Song et al., 2021, sec. D.2). Along a solution the log-density obeys
:math:`d\log p_t(x_t)/dt = -\nabla\cdot\tilde f(x_t, t)`, so solving the augmented ODE

.. math:: \frac{d}{dt}\begin{bmatrix} x \\ \delta \end{bmatrix}
          = \begin{bmatrix} \tilde f(x, t) \\ \nabla\cdot\tilde f(x, t) \end{bmatrix},
          \qquad x(t_{min}) = x,\ \delta(t_{min}) = 0,

from :math:`t_{min}` to :math:`T` gives

.. math:: \log p_{t_{min}}(x) = \log p_T(z) + \delta(T),\qquad z = x(T).

This is the density of the model's :math:`p_{t_{min}}` (the model's :math:`p_0`, as in
score_sde); with the exact score of a known :math:`p_0` it equals the exact
:math:`\log p_{t_{min}}(x)`, which is what the tests compare against.

The divergence is either exact (``d`` forward-mode JVPs per evaluation,
:func:`jaxscore.divergence.value_and_exact_divergence`) or Hutchinson's unbiased estimate
with probes drawn **once per solve** and held fixed along the trajectory (FFJORD), so the
ODE stays an ODE (:func:`jaxscore.divergence.value_and_hutchinson_divergence`).

Every solve runs per example under ``jax.vmap`` (own adaptive steps and error control;
probes and dequantisation noise from ``fold_in(key, i)``), so example i's result does not
depend on the rest of the batch beyond float round-off.

NFE counts augmented-field evaluations per example; each costs one score evaluation plus
``d`` (exact) or ``num_probes`` (Hutchinson) JVPs through ``score_fn``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import check_finite_rows, check_float_array, check_key, is_concrete
from jaxscore._keys import example_keys
from jaxscore.divergence import sample_probes, value_and_exact_divergence, value_and_hutchinson_divergence
from jaxscore.samplers.diffrax_samplers import (
    check_steps,
    default_adjoint,
    make_solver,
    probability_flow_solve,
    raise_if_unfinished,
    resolve_t_min,
    stats_info,
    step_controller,
)

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def log_likelihood(
    key: jax.Array,
    score_fn: ScoreFn,
    sde,
    x: jax.Array,
    *,
    divergence: str = "exact",
    probe: str = "rademacher",
    num_probes: int = 1,
    solver: str = "tsit5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    steps: int | None = None,
    max_steps: int = 4096,
    chunk_size: int | None = None,
    adjoint: diffrax.AbstractAdjoint | None = None,
    prior_log_prob: Callable[[jax.Array], jax.Array] | None = None,
    return_info: bool = False,
):
    r""":math:`\log p_{t_{min}}(x)` in nats per example via the probability-flow ODE.

    Solves :math:`d[x, \delta]/dt = [\tilde f(x,t), \nabla\cdot\tilde f(x,t)]` from ``t_min``
    to T with diffrax and returns :math:`\log p_T(z) + \delta(T)`, where
    :math:`\tilde f` is ``sde.probability_flow_drift(score_fn, x, t)``.

    Args:
      key: PRNG key for Hutchinson probes (example i uses ``fold_in(key, i)``); unused for
        ``divergence="exact"``.
      score_fn: ``score_fn(x: [B, *D], t: [B]) -> [B, *D]``.
      sde: a :class:`jaxscore.sde.LinearSDE`.
      x: data [B, *D], float, on the scale the model was trained on (see :func:`bits_per_dim`
        for discrete data, which must be dequantised).
      divergence: ``"exact"`` (trace of the Jacobian, d JVPs per evaluation) or
        ``"hutchinson"`` (``num_probes`` JVPs, unbiased; probes fixed for the solve).
      probe: ``"rademacher"`` or ``"gaussian"`` Hutchinson probes.
      solver: ``"tsit5"``, ``"dopri5"``, ``"heun"`` (adaptive or fixed) or ``"euler"`` (fixed).
      rtol, atol: PID controller tolerances (on both x and the log-density integral).
      t_min: starting time (default ``sde.t_min``).
      steps: ``None`` = adaptive; ``N`` = N uniform fixed steps.
      chunk_size: basis vectors per JVP batch for the exact divergence (memory knob).
      adjoint: diffrax adjoint. Default ``diffrax.ForwardMode()`` (evaluation; ``jax.jvp`` works);
        pass ``diffrax.RecursiveCheckpointAdjoint()`` to take ``jax.grad`` of the log-likelihood.
      prior_log_prob: ``z: [B, *D] -> [B]``, the log-density used for the latent at T. Default
        ``sde.prior_log_prob`` (the SDE's :math:`N(0, \sigma_T^2 I)`, as score_sde). The true
        terminal marginal :math:`p_T` differs from it (for VP, :math:`p_T = N(\alpha_T\mu, \ldots)`
        with :math:`\alpha_T \approx 7\cdot 10^{-3}`); pass the exact :math:`\log p_T` when it is
        known (e.g. ``lambda z: mix.log_prob_t(z, T * ones, sde)`` for a toy mixture) to remove that
        mismatch from the estimate.
      return_info: also return a dict with ``nfe`` (scalar, max over the batch),
        ``nfe_per_example`` [B], ``num_steps`` [B], ``z`` (latent at T) [B, *D],
        ``prior_logp`` [B] (``prior_log_prob(z)``) and ``delta_logp`` [B].

    Returns:
      log-likelihood [B] (nats), or ``(logp, info)``.

    Raises ``ValueError`` naming the rows when a concrete ``x`` holds a NaN or inf (before any
    solve: such a row would otherwise run the adaptive solver to ``max_steps``); under ``jit`` the
    same check is an ``equinox.error_if`` raised when the compiled function runs.
    """
    check_key(key)
    x = check_finite_rows("x", check_float_array("x", x, min_ndim=2))
    _check_choice("divergence", divergence, DIVERGENCES)
    _check_choice("probe", probe, PROBES)
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes: expected a positive int, got {num_probes!r}.")
    if prior_log_prob is not None and not callable(prior_log_prob):
        raise TypeError(f"prior_log_prob: expected None or a callable z: [B, *D] -> [B], got {type(prior_log_prob).__name__}.")
    t_min = resolve_t_min(sde, t_min)
    steps = check_steps(steps)
    make_solver(solver, adaptive=steps is None)
    logp, info = _log_likelihood_impl(
        key, score_fn, sde, x, divergence=divergence, probe=probe, num_probes=num_probes,
        solver=solver, rtol=rtol, atol=atol, t_min=t_min, steps=steps, max_steps=int(max_steps),
        chunk_size=chunk_size, adjoint=adjoint, prior_log_prob=prior_log_prob,
    )
    return (logp, info) if return_info else logp


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}.")


@eqx.filter_jit
def _log_likelihood_impl(key, score_fn, sde, x, *, divergence, probe, num_probes, solver, rtol, atol,
                         t_min, steps, max_steps, chunk_size, adjoint, prior_log_prob=None):
    adaptive = steps is None
    solver_obj = make_solver(solver, adaptive=adaptive)
    data_shape = x.shape[1:]
    dtype = x.dtype
    t0 = jnp.asarray(t_min, dtype)
    t1 = jnp.asarray(sde.T, dtype)
    controller, dt0 = step_controller(t0, t1, steps=steps, rtol=rtol, atol=atol)

    def solve_one(x_i, key_i):
        if divergence == "hutchinson":
            probes = sample_probes(key_i, (1, *data_shape), kind=probe, num_probes=num_probes, dtype=dtype)

        def vf(t, y, args):
            xt, _ = y
            tb = jnp.reshape(t, (1,)).astype(dtype)
            drift = lambda z: sde.probability_flow_drift(score_fn, z, tb)  # noqa: E731
            if divergence == "exact":
                value, div = value_and_exact_divergence(drift, xt[None], chunk_size=chunk_size)
            else:
                value, div = value_and_hutchinson_divergence(drift, xt[None], probes)
            return value[0], div[0]

        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vf), solver_obj, t0, t1, dt0, (x_i, jnp.zeros((), dtype)),
            stepsize_controller=controller, max_steps=max_steps if adaptive else steps,
            saveat=diffrax.SaveAt(t1=True), adjoint=default_adjoint(adjoint), throw=not adaptive,
        )
        z, delta = sol.ys
        return z[-1], delta[-1], sol.stats, sol.result

    z, delta, stats, results = jax.vmap(solve_one)(x, example_keys(key, x.shape[0]))
    if adaptive:
        z, delta = raise_if_unfinished((z, delta), results, "log_likelihood", max_steps)
    if prior_log_prob is None:
        prior_logp = sde.prior_log_prob(z)
    else:
        prior_logp = jnp.asarray(prior_log_prob(z))
        if prior_logp.shape != (x.shape[0],):
            raise ValueError(f"prior_log_prob: expected output of shape [B] = ({x.shape[0]},), got {prior_logp.shape}.")
        prior_logp = prior_logp.astype(dtype)
    info = {**stats_info(solver, stats, adaptive=adaptive), "z": z, "prior_logp": prior_logp, "delta_logp": delta}
    return prior_logp + delta, info


def bits_per_dim(
    key: jax.Array,
    score_fn: ScoreFn,
    sde,
    x: jax.Array,
    *,
    num_bins: int = 256,
    data_range: tuple[float, float] | None = None,
    dequantize: bool = True,
    return_info: bool = False,
    **likelihood_kwargs: Any,
):
    r"""Bits per dimension of discrete data under the model, with uniform dequantisation.

    **Primary input: integer pixels** ``k`` in ``{0, ..., num_bins-1}`` (e.g. uint8 images,
    [B, *D]). They are dequantised here, :math:`u \sim U[0,1)^D` per example
    (``fold_in(k_deq, i)``), and mapped to the model's scale ``data_range = (lo, hi)``
    (default (-1, 1), the package's image convention):

    .. math:: x = lo + (hi - lo)\,\frac{k + u}{\text{num\_bins}},
       \qquad \Delta = \frac{hi - lo}{\text{num\_bins}} \text{ per dimension (Jacobian)}.

    The dequantised bound on the discrete negative log-likelihood is
    :math:`-\log P(k) \le -\log p(x) - D\log\Delta`, and

    .. math:: \text{bpd} = \frac{-\log p(x) - D\log\Delta}{D\ln 2}.

    For 256 levels on [-1, 1], :math:`-D\log\Delta = D\log 128`, i.e. bpd = -log2 p(x)/D + 7
    (score_sde's offset). One dequantisation draw is used: average over keys for a tighter
    estimate of the expectation over u.

    **Float input** (already dequantised, continuous values) is accepted only when the caller
    states it: ``dequantize=False`` *and* an explicit ``data_range``. Warning: the values must
    be (k + u)/num_bins mapped to ``data_range`` with u ~ U[0,1) already added; passing
    un-dequantised grid values (or data scaled by 255 instead of 256) gives a meaningless,
    optimistic bpd. Values outside ``data_range`` raise.

    Args:
      key: PRNG key (split into the dequantisation key and the likelihood key).
      x: integer pixels [B, *D] (primary), or dequantised floats with the flags above.
      num_bins: number of discrete levels (256 for 8-bit data).
      data_range: ``(lo, hi)`` the model's data scale; required for float input.
      dequantize: must be True for integer input, False for float input.
      return_info: also return ``(bpd, info)``; info is :func:`log_likelihood`'s plus
        ``log_likelihood`` [B] (nats, continuous) and ``x`` [B, *D] (the dequantised input).
      **likelihood_kwargs: forwarded to :func:`log_likelihood` (divergence, solver, rtol, ...).

    Returns:
      bpd [B].

    Non-finite float input raises ``ValueError`` naming the rows (see :func:`log_likelihood`).
    """
    check_key(key)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins: expected an int >= 2, got {num_bins!r}.")
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x: expected shape [B, *D] with at least one data axis, got {tuple(x.shape)}.")
    is_int = jnp.issubdtype(x.dtype, jnp.integer)
    if not is_int and not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x: expected integer pixels (e.g. uint8) or dequantised floats, got dtype {x.dtype}.")
    if is_int:
        if not dequantize:
            raise ValueError(
                "bits_per_dim: integer pixels must be dequantised (a density of discrete values is "
                "unbounded); leave dequantize=True."
            )
        lo, hi = _check_range((-1.0, 1.0) if data_range is None else data_range)
    else:
        if data_range is None or dequantize:
            raise ValueError(
                f"bits_per_dim: got float input (dtype {x.dtype}). Pass integer pixels (e.g. uint8 "
                f"in [0, {num_bins - 1}]) to have them dequantised here, or, if the floats are "
                "already uniformly dequantised, say so with dequantize=False and an explicit "
                f"data_range=(lo, hi); got dequantize={dequantize}, data_range={data_range}."
            )
        lo, hi = _check_range(data_range)

    k_deq, k_ll = jax.random.split(key)
    batch = x.shape[0]
    d = math.prod(x.shape[1:])
    if is_int:
        x = _check_values(x, 0, num_bins - 1, "x (integer pixels)")
        u = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], jnp.float32))(example_keys(k_deq, batch))
        x_cont = lo + (hi - lo) * (x.astype(jnp.float32) + u) / num_bins
    else:
        x_cont = _check_values(check_finite_rows("x", x), lo, hi, "x (dequantised floats)")
    log_delta = math.log((hi - lo) / num_bins)
    logp, info = log_likelihood(k_ll, score_fn, sde, x_cont, return_info=True, **likelihood_kwargs)
    bpd = -(logp + d * log_delta) / (d * math.log(2.0))
    if return_info:
        return bpd, {**info, "log_likelihood": logp, "x": x_cont}
    return bpd


def _check_range(data_range):
    try:
        lo, hi = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range: expected a pair (lo, hi) of numbers, got {data_range!r}.") from None
    if not lo < hi:
        raise ValueError(f"data_range: expected lo < hi, got {data_range!r}.")
    return lo, hi


def _check_values(x, lo, hi, name):
    """Raise if values of ``x`` leave [lo, hi]: at call time for concrete arrays, at run time
    (``equinox.error_if``) under jit."""
    if is_concrete(x):
        arr = np.asarray(x)
        if arr.size and (arr.min() < lo or arr.max() > hi or not np.all(np.isfinite(arr))):
            raise ValueError(
                f"{name}: expected values in [{lo}, {hi}], got min {arr.min()}, max {arr.max()}."
            )
        return x
    outside = (x < lo) | (x > hi)
    if jnp.issubdtype(x.dtype, jnp.floating):
        outside = outside | ~jnp.isfinite(x)  # a NaN compares False with both bounds
    return eqx.error_if(x, jnp.any(outside), f"{name}: values outside [{lo}, {hi}] (or not finite).")


def encode(
    score_fn: ScoreFn,
    sde,
    x: jax.Array,
    *,
    solver: str = "tsit5",
    steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    max_steps: int = 4096,
    adjoint: diffrax.AbstractAdjoint | None = None,
    return_info: bool = False,
):
    r"""Latent :math:`z = x(T)` of data ``x = x(t_min)`` under the probability-flow ODE
    (deterministic, invertible up to solver error by :func:`decode`). x: [B, *D] -> z: [B, *D].

    Useful for latent interpolation: encode two images, interpolate z (e.g. spherically),
    decode. ``info`` (with ``return_info``) as :func:`jaxscore.samplers.diffrax_samplers.probability_flow_solve`.
    Non-finite rows of ``x`` raise ``ValueError`` (see :func:`log_likelihood`).
    """
    x = check_finite_rows("x", check_float_array("x", x, min_ndim=2))
    t_min = resolve_t_min(sde, t_min)
    steps = check_steps(steps)
    make_solver(solver, adaptive=steps is None)
    z, info = _pf_impl(score_fn, sde, x, *_times(x, t_min, sde.T), solver=solver, steps=steps, rtol=rtol,
                       atol=atol, max_steps=int(max_steps), adjoint=adjoint)
    return (z, info) if return_info else z


def decode(
    score_fn: ScoreFn,
    sde,
    z: jax.Array,
    *,
    solver: str = "tsit5",
    steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float | None = None,
    max_steps: int = 4096,
    adjoint: diffrax.AbstractAdjoint | None = None,
    return_info: bool = False,
):
    r"""Data :math:`x(t_{min})` from a latent ``z = x(T)``: the probability-flow ODE solved from
    T down to ``t_min`` (deterministic; the inverse of :func:`encode`). z: [B, *D] -> [B, *D].
    Non-finite rows of ``z`` raise ``ValueError`` (see :func:`log_likelihood`)."""
    z = check_finite_rows("z", check_float_array("z", z, min_ndim=2))
    t_min = resolve_t_min(sde, t_min)
    steps = check_steps(steps)
    make_solver(solver, adaptive=steps is None)
    x, info = _pf_impl(score_fn, sde, z, *_times(z, sde.T, t_min), solver=solver, steps=steps, rtol=rtol,
                       atol=atol, max_steps=int(max_steps), adjoint=adjoint)
    return (x, info) if return_info else x


def _times(x, t0, t1):
    # arrays, not Python floats, so encode and decode share one compiled solve (direction is traced)
    return jnp.asarray(t0, x.dtype), jnp.asarray(t1, x.dtype)


@eqx.filter_jit
def _pf_impl(score_fn, sde, x, t0, t1, *, solver, steps, rtol, atol, max_steps, adjoint):
    return probability_flow_solve(score_fn, sde, x, t0, t1, solver=solver, steps=steps, rtol=rtol, atol=atol,
                                  max_steps=max_steps, adjoint=adjoint)


__all__ = ["bits_per_dim", "decode", "encode", "log_likelihood"]
