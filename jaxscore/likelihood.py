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

**Bits/dim comparable to score_sde.** :func:`bits_per_dim`'s defaults are the settings of
score_sde's ``likelihood.get_likelihood_fn`` as its ``run_lib.evaluate`` calls it (Song et al.,
2021, github.com/yang-song/score_sde), for the VE, VP and sub-VP SDEs alike:

* ``t_min = 1e-5`` (:data:`LIKELIHOOD_T_MIN`): their ``eps=1e-5``, the time the probability-flow
  ODE starts from, "for numerical stability". ``run_lib`` never overrides it, so it holds for VP
  and sub-VP as well, whose *sampling* ``eps`` (and this package's ``VPSDE().t_min``) is 1e-3.
  The density reported is the model's :math:`p_{10^{-5}}` (score_sde calls it the model's
  :math:`p_0`).
* ``solver="dopri5"``, ``rtol = atol = 1e-5``: their ``scipy.integrate.solve_ivp(method="RK45",
  rtol=1e-5, atol=1e-5)``. RK45 is the Dormand–Prince 5(4) pair, diffrax's ``Dopri5``; both
  accept a step when the RMS over components of ``err / (atol + rtol max(|y|, |y_new|))`` is
  below 1 and rescale the step by ``0.9 err^{-1/5}`` (clipped to [0.2, 10]; diffrax never
  shrinks after an accepted step, scipy by at most 0.9). The tolerances apply to x and to the
  log-density integral alike (score_sde concatenates them into one state).
* ``divergence="hutchinson"``, one Rademacher probe per example drawn once per solve
  (their ``hutchinson_type='Rademacher'``, ``epsilon`` drawn once per batch).
* Prior ``log p_T(z) = sde.prior_log_prob(z)``: N(0, I) for VP / sub-VP, N(0, sigma_max^2 I)
  for VE (their ``sde.prior_logp``).
* Dequantisation and offset: uniform noise on the 256 levels, ``x = lo + (hi - lo)(k + u)/256``
  (their ``(u + 255 img)/256`` in [0, 1), then ``2x - 1`` when ``data.centered``), and
  ``bpd = -log2 p(x)/D + log2(256/(hi - lo))``: +7 on [-1, 1] and +8 on [0, 1], their
  ``offset = log2(grad(inverse_scaler)(0)) + 8`` (7 centred, 8 not).
* Several dequantisation draws: score_sde's test-split evaluation averages 5 passes over the
  test set (``bpd_num_repeats = 5``), each with fresh dequantisation noise and fresh probes;
  ``dequant_draws=5`` is that estimator (the mean over images of per-image means over draws,
  equal to their mean over all images x repeats). The default is 1 draw: the same expectation,
  more variance.

What differs, and why: (1) each example is solved on its own (``vmap``; own steps and error
control), where score_sde solves the whole flattened batch as one state whose RMS error over all
examples meets the tolerance (one example may exceed it while others are over-resolved); here
each example meets it, and its result does not depend on the batch; (2) the first step is ``dt0 = 0.01 (T - t_min)`` instead of scipy's initial-step
heuristic (two extra evaluations); (3) the solve runs in the data's dtype (float32), scipy's in
float64 around float32 network evaluations. (1)–(3) move results by solver error (<= the
tolerances), not in expectation. Training: score_sde samples continuous training times from
U(1e-5, 1); this package's losses default to ``sde.t_min`` (1e-3 for VP / sub-VP), so a model
trained with that default is evaluated at t < its training range at t_min = 1e-5 (pass
``t_min=sde.t_min`` to stay inside it, at the cost of comparability).

:func:`log_likelihood` (continuous data, toy densities) keeps its own defaults: the SDE's
``t_min``, exact divergence, Tsit5.
"""

from __future__ import annotations

import functools
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

LIKELIHOOD_T_MIN = 1e-5
"""score_sde's ``eps`` for likelihoods (``get_likelihood_fn(eps=1e-5)``): :func:`bits_per_dim`'s default ``t_min``."""


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
    logp, info = _checked_log_likelihood(
        example_keys(key, x.shape[0]), score_fn, sde, x, divergence=divergence, probe=probe, num_probes=num_probes,
        solver=solver, rtol=rtol, atol=atol, t_min=t_min, steps=steps, max_steps=max_steps,
        chunk_size=chunk_size, adjoint=adjoint, prior_log_prob=prior_log_prob,
    )
    return (logp, info) if return_info else logp


def _checked_log_likelihood(row_keys, score_fn, sde, x, *, divergence, probe, num_probes, solver, rtol, atol,
                            t_min, steps, max_steps, chunk_size, adjoint, prior_log_prob):
    """Argument checks, then the solve; row ``i`` draws its probes from ``row_keys[i]``."""
    t_min, steps = check_likelihood_options(sde, divergence=divergence, probe=probe, num_probes=num_probes, solver=solver,
                                     rtol=rtol, atol=atol, t_min=t_min, steps=steps, prior_log_prob=prior_log_prob)
    return _log_likelihood_impl(
        row_keys, score_fn, sde, x, divergence=divergence, probe=probe, num_probes=num_probes,
        solver=solver, rtol=rtol, atol=atol, t_min=t_min, steps=steps, max_steps=int(max_steps),
        chunk_size=chunk_size, adjoint=adjoint, prior_log_prob=prior_log_prob,
    )


def check_likelihood_options(sde, *, divergence: str = "exact", probe: str = "rademacher", num_probes: int = 1,
                             solver: str = "tsit5", rtol: float = 1e-5, atol: float = 1e-5, t_min=None, steps=None,
                             prior_log_prob=None):
    """The checks :func:`log_likelihood` and :func:`bits_per_dim` make of their solve options, without
    solving (e.g. to refuse a bad setting before loading a model): ``ValueError`` / ``TypeError``
    naming the option, expected and given values. Returns the resolved ``(t_min, steps)``
    (``t_min=None``: ``sde.t_min``)."""
    _check_choice("divergence", divergence, DIVERGENCES)
    _check_choice("probe", probe, PROBES)
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes: expected a positive int, got {num_probes!r}.")
    if prior_log_prob is not None and not callable(prior_log_prob):
        raise TypeError(f"prior_log_prob: expected None or a callable z: [B, *D] -> [B], got {type(prior_log_prob).__name__}.")
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if is_concrete(tol) and not (float(tol) > 0 and math.isfinite(float(tol))):
            raise ValueError(f"{name}: expected a finite number > 0, got {tol!r}.")
    t_min = resolve_t_min(sde, t_min)
    steps = check_steps(steps)
    make_solver(solver, adaptive=steps is None)
    return t_min, steps


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {allowed}, got {value!r}.")


@eqx.filter_jit
def _log_likelihood_impl(row_keys, score_fn, sde, x, *, divergence, probe, num_probes, solver, rtol, atol,
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

    z, delta, stats, results = jax.vmap(solve_one)(x, row_keys)
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
    dequant_draws: int = 1,
    t_min: float | None = LIKELIHOOD_T_MIN,
    divergence: str = "hutchinson",
    probe: str = "rademacher",
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    return_info: bool = False,
    **likelihood_kwargs: Any,
):
    r"""Bits per dimension of discrete data under the model, with uniform dequantisation.

    The defaults are score_sde's likelihood settings (module docstring): ``t_min = 1e-5``,
    Dopri5 (RK45) at ``rtol = atol = 1e-5``, one Rademacher Hutchinson probe, prior
    ``sde.prior_log_prob``, 256-level uniform dequantisation and the +7 ([-1, 1]) / +8 ([0, 1])
    offset. ``t_min=None`` means ``sde.t_min``.

    **Primary input: integer pixels** ``k`` in ``{0, ..., num_bins-1}`` (e.g. uint8 images,
    [B, *D]). They are dequantised here, :math:`u \sim U[0,1)^D`, and mapped to the model's scale
    ``data_range = (lo, hi)`` (default (-1, 1), the package's image convention):

    .. math:: x = lo + (hi - lo)\,\frac{k + u}{\text{num\_bins}},
       \qquad \Delta = \frac{hi - lo}{\text{num\_bins}} \text{ per dimension (Jacobian)}.

    The dequantised bound on the discrete negative log-likelihood is
    :math:`-\log P(k) \le E_u[-\log p(x)] - D\log\Delta`, and per draw

    .. math:: \text{bpd} = \frac{-\log p(x) - D\log\Delta}{D\ln 2}.

    For 256 levels on [-1, 1], :math:`-D\log\Delta = D\log 128`, i.e. bpd = -log2 p(x)/D + 7
    (score_sde's offset).

    **Dequantisation draws.** With ``dequant_draws = K`` each example gets K independent draws
    (u and Hutchinson probes), and its bpd is the mean over them: an unbiased estimate of
    :math:`E_u[\text{bpd}]` whose variance over u (and probes) is divided by K. Draw ``j`` uses
    ``key`` (j = 0) or ``fold_in(key, j)`` (j >= 1), split into a dequantisation key and a probe
    key; example ``i`` of draw j uses ``fold_in(·, i)`` of each, so draw 0 is the one-draw
    result and results do not depend on how a dataset is batched. The K x B rows are solved as
    one vmapped batch (memory: K x B rows). K = 5 is score_sde's test-split protocol.

    **Float input** (already dequantised, continuous values) is accepted only when the caller
    states it: ``dequantize=False`` *and* an explicit ``data_range`` (then ``dequant_draws`` must be 1).
    Warning: the values must be (k + u)/num_bins mapped to ``data_range`` with u ~ U[0,1)
    already added; passing un-dequantised grid values (or data scaled by 255 instead of 256)
    gives a meaningless, optimistic bpd. Values outside ``data_range`` raise.

    Args:
      key: PRNG key (per draw: split into the dequantisation key and the likelihood key).
      x: integer pixels [B, *D] (primary), or dequantised floats with the flags above.
      num_bins: number of discrete levels (256 for 8-bit data).
      data_range: ``(lo, hi)`` the model's data scale; required for float input.
      dequantize: must be True for integer input, False for float input.
      dequant_draws: K >= 1 dequantisation draws per example (integer input).
      t_min, divergence, probe, solver, rtol, atol, **likelihood_kwargs: as
        :func:`log_likelihood` (``num_probes``, ``steps``, ``max_steps``, ``chunk_size``,
        ``adjoint``, ``prior_log_prob``).
      return_info: also return ``(bpd, info)``: :func:`log_likelihood`'s info over the K x B
        solved rows (row ``j*B + i`` = draw j of example i; ``nfe`` the max over all), plus
        ``log_likelihood`` [K*B] (nats, continuous), ``x`` [K*B, *D] (the dequantised inputs),
        ``bpd_draws`` [K, B] and ``t_min``. For K = 1 the rows are the B examples.

    Returns:
      bpd [B] (mean over the K draws of each example).

    Non-finite float input raises ``ValueError`` naming the rows (see :func:`log_likelihood`).
    """
    check_key(key)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins: expected an int >= 2, got {num_bins!r}.")
    if isinstance(dequant_draws, bool) or not isinstance(dequant_draws, (int, np.integer)) or dequant_draws < 1:
        raise ValueError(f"dequant_draws: expected an int >= 1, got {dequant_draws!r}.")
    draws = int(dequant_draws)
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
        if draws != 1:
            raise ValueError(f"dequant_draws: float input is already dequantised (one draw); got dequant_draws={draws}.")
        lo, hi = _check_range(data_range)

    batch = x.shape[0]
    d = math.prod(x.shape[1:])
    if is_int:
        x = _check_values(x, 0, num_bins - 1, "x (integer pixels)")
    else:
        x = _check_values(check_finite_rows("x", x), lo, hi, "x (dequantised floats)")
    kw = {"num_probes": 1, "steps": None, "max_steps": 4096, "chunk_size": None, "adjoint": None,
          "prior_log_prob": None, **likelihood_kwargs}
    unknown = sorted(set(kw) - {"num_probes", "steps", "max_steps", "chunk_size", "adjoint", "prior_log_prob"})
    if unknown:
        raise TypeError(f"bits_per_dim: unexpected keyword argument(s) {unknown}.")
    t_min, _ = check_likelihood_options(sde, divergence=divergence, probe=probe, num_probes=kw["num_probes"], solver=solver,
                                 rtol=rtol, atol=atol, t_min=t_min, steps=kw["steps"], prior_log_prob=kw["prior_log_prob"])
    x_cont, row_keys = _draw_rows(key, x, draws=draws, num_bins=num_bins, lo=lo, hi=hi, dequantize=bool(is_int))
    log_delta = math.log((hi - lo) / num_bins)
    logp, info = _checked_log_likelihood(row_keys, score_fn, sde, x_cont, divergence=divergence, probe=probe,
                                         solver=solver, rtol=rtol, atol=atol, t_min=t_min, **kw)
    bpd_rows = -(logp + d * log_delta) / (d * math.log(2.0))
    bpd_draws = bpd_rows.reshape(draws, batch)
    bpd = jnp.mean(bpd_draws, axis=0)
    if return_info:
        return bpd, {**info, "log_likelihood": logp, "x": x_cont, "bpd_draws": bpd_draws, "t_min": t_min}
    return bpd


@functools.partial(jax.jit, static_argnames=("draws", "num_bins", "lo", "hi", "dequantize"))
def _draw_rows(key, x, *, draws, num_bins, lo, hi, dequantize):
    """``(x_cont [K*B, *D], row_keys [K*B])``, row ``j*B + i`` = draw j of example i. Draw j's key is
    ``key`` (j = 0) or ``fold_in(key, j)``, split into (dequantisation key, likelihood key); example
    i takes ``fold_in(·, i)`` of each. Integer ``x`` is dequantised, ``lo + (hi - lo)(k + u)/num_bins``."""
    batch = x.shape[0]
    draw_keys = jnp.concatenate([key[None], jax.vmap(lambda j: jax.random.fold_in(key, j))(
        jnp.arange(1, draws, dtype=jnp.uint32))]) if draws > 1 else key[None]
    pairs = jax.vmap(jax.random.split)(draw_keys)  # [K, 2]
    row_keys = jax.vmap(lambda k: example_keys(k, batch))(pairs[:, 1]).reshape(-1)
    if not dequantize:
        return x, row_keys
    u = jax.vmap(lambda kd: jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], jnp.float32))(
        example_keys(kd, batch)))(pairs[:, 0])  # [K, B, *D]
    x_cont = lo + (hi - lo) * (x.astype(jnp.float32)[None] + u) / num_bins
    return x_cont.reshape(draws * batch, *x.shape[1:]), row_keys


def mean_and_standard_error(values) -> tuple[float, float]:
    r"""``(mean, standard error of the mean)`` of per-example values ``[N]`` (e.g. bpd of N images):
    :math:`\bar v` and :math:`s/\sqrt N` with :math:`s` the sample standard deviation (ddof = 1);
    the error is NaN for N < 2. With K dequantisation draws per example the values are the
    per-example means over draws, so the error covers images, dequantisation and probes."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_and_standard_error: expected at least one value, got none.")
    sem = float(np.std(v, ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(np.mean(v)), sem


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


__all__ = ["LIKELIHOOD_T_MIN", "bits_per_dim", "check_likelihood_options", "decode", "encode", "log_likelihood",
           "mean_and_standard_error"]
