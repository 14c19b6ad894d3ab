r"""Samplers by name (the edge of the library: CLI and configs) and batched sampling with progress.

``sample(key, score_fn, sde, shape, sampler="dpmpp_2m", steps=20, **options)`` looks the name up
in :data:`SAMPLERS` and calls it. Library code should call the sampler functions directly.
Modules are imported lazily, so a sampler family that is missing (or fails to import) only
breaks its own names.
"""

from __future__ import annotations

import importlib
import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxscore.samplers._core import check_shape
from jaxscore.samplers.grids import check_steps

# name -> "module:function" (imported on first use)
SAMPLERS: dict[str, str] = {
    "euler_maruyama": "jaxscore.samplers.sde_samplers:euler_maruyama",
    "reverse_diffusion": "jaxscore.samplers.sde_samplers:reverse_diffusion",
    "ancestral": "jaxscore.samplers.sde_samplers:ancestral",
    "pc": "jaxscore.samplers.langevin:pc",
    "annealed_langevin": "jaxscore.samplers.langevin:annealed_langevin",
    "ddim": "jaxscore.samplers.solvers:ddim",
    "dpmpp_2m": "jaxscore.samplers.solvers:dpmpp_2m",
    "dpmpp_3m": "jaxscore.samplers.solvers:dpmpp_3m",
    "dpmpp_2m_sde": "jaxscore.samplers.solvers:dpmpp_2m_sde",
    "unipc": "jaxscore.samplers.solvers:unipc",
    "heun": "jaxscore.samplers.edm:heun",
    "edm_stochastic": "jaxscore.samplers.edm:edm_stochastic",
    "ode": "jaxscore.samplers.diffrax_samplers:ode_sampler",
    "sde": "jaxscore.samplers.diffrax_samplers:sde_sampler",
}

# samplers written on jaxscore.samplers._core: they accept ``example_offset`` (global example index
# of row 0), which makes batched sampling exactly batch-size invariant.
_OFFSET_AWARE = frozenset(SAMPLERS) - {"ode", "sde"}

DETERMINISTIC = frozenset({"ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "heun", "ode"})
"""Samplers that use no noise after the prior draw (``ddim`` with its default ``eta=0``)."""


def available_samplers() -> tuple[str, ...]:
    """All registered names (whether or not their module imports in this environment)."""
    return tuple(SAMPLERS)


def get_sampler(name: str) -> Callable:
    """The sampler function registered under ``name``."""
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {sorted(SAMPLERS)}, got {name!r}.")
    module, attr = SAMPLERS[name].split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"sampler {name!r}: its module {module} could not be imported ({err}).") from err
    try:
        return getattr(mod, attr)
    except AttributeError as err:
        raise ImportError(f"sampler {name!r}: {module} has no function {attr}.") from err


def sample(key, score_fn, sde, shape, sampler: str = "dpmpp_2m", steps: int | None = 20, **options):
    r"""Draw ``shape = (B, *D)`` samples with the named sampler: ``get_sampler(sampler)(key, score_fn, sde,
    shape, steps=steps, **options)``. Options are the sampler's keyword arguments (``grid``, ``t_min``,
    ``denoise``, ``return_info`` ...); unknown ones raise ``TypeError``.

    jit-able with ``score_fn``, ``sde`` closed over (or ``sde`` passed as an argument) and ``shape``,
    ``steps``, ``sampler`` static.
    """
    fn = get_sampler(sampler)
    return fn(key, score_fn, sde, shape, steps=steps, **options)


def evals_per_step(sampler: str, **options) -> int:
    """Score evaluations per step of a fixed-step sampler (for matching NFE budgets).
    ``denoise`` adds one evaluation in total, not per step; for ``ode``/``sde`` (diffrax, fixed
    ``steps``) it depends on ``solver`` (Tsit5/Dopri5 add one evaluation in total)."""
    if sampler == "pc":
        return int(options.get("corrector_steps", 1)) + (options.get("predictor", "reverse_diffusion") != "none")
    if sampler == "annealed_langevin":
        return int(options.get("n_steps_each", 100))
    if sampler in ("heun", "edm_stochastic"):
        return 2
    if sampler in ("ode", "sde"):
        solver = options.get("solver", "tsit5" if sampler == "ode" else "euler")
        per = {"tsit5": 6, "dopri5": 6, "heun": 2, "euler": 1}.get(solver)
        if per is None:
            raise ValueError(f"{sampler!r}: unknown solver {solver!r} (expected tsit5, dopri5, heun or euler).")
        return per
    get_sampler(sampler)  # validates the name
    return 1


def nfe_for_steps(sampler: str, steps: int, **options) -> int:
    """Score evaluations of a fixed-step run (what ``info["nfe"]`` reports)."""
    nfe = steps * evals_per_step(sampler, **options) + int(bool(options.get("denoise", False)))
    if sampler == "unipc" and options.get("final_corrector", False):
        nfe += 1
    if sampler in ("heun", "edm_stochastic") and options.get("lower_order_final", False):
        nfe -= 1
    if sampler == "ode" and options.get("solver", "tsit5") in ("tsit5", "dopri5"):
        nfe += 1
    return nfe


def steps_for_nfe(sampler: str, nfe: int, **options) -> int:
    """Largest ``steps`` whose NFE (:func:`nfe_for_steps`) does not exceed ``nfe``; at least 1."""
    per = evals_per_step(sampler, **options)
    budget = nfe - int(bool(options.get("denoise", False)))
    if sampler == "ode" and options.get("solver", "tsit5") in ("tsit5", "dopri5"):
        budget -= 1  # first-same-as-last: 6 * steps + 1 (fixed steps with diffrax)
    if sampler == "unipc" and options.get("final_corrector", False):
        budget -= 1
    if sampler in ("heun", "edm_stochastic") and options.get("lower_order_final", False):
        budget += 1
    return max(1, budget // per)


@eqx.filter_jit
def _sample_batch(fn, key, offset, score_fn, sde, shape, steps, offset_aware, options):
    """One batch of :func:`sample_in_batches`, compiled once per (sampler, ``score_fn``, shape,
    steps, options): arrays among the arguments are traced (so a ``jax.tree_util.Partial`` score
    over new parameters reuses the executable), everything else is static."""
    if offset_aware:
        return fn(key, score_fn, sde, shape, steps=steps, example_offset=offset, **options)
    return fn(jax.random.fold_in(key, offset // shape[0]), score_fn, sde, shape, steps=steps, **options)


def sample_in_batches(key, score_fn, sde, shape_per_batch, num: int, sampler: str = "dpmpp_2m",
                      steps: int | None = 20, *, progress: bool = True, desc: str | None = None, **options):
    r"""Draw ``num`` samples in batches of ``shape_per_batch[0]``: a Python loop over batches (with a
    tqdm bar when ``progress``), each batch one compiled call (the last, partial batch is padded
    and cut).

    Example ``g`` (global index) is drawn with the per-example key ``fold_in(key, g)`` for every
    sampler written on the fixed-step core, so the result does not depend on the batch size: it
    equals ``sample(key, ..., (num, *D))``. For the diffrax samplers (``ode``, ``sde``) batch ``j``
    gets ``fold_in(key, j)`` (invariant only for a fixed batch size).
    Returns ``[num, *D]`` (``info`` of the last batch is dropped; use :func:`sample` for it).

    Compilation is cached across calls by the identity of ``score_fn``. To sample with new
    parameters without recompiling (an eval hook during training), pass the score as
    ``jax.tree_util.Partial(score_with_params, params)`` over one function object
    ``score_with_params(params, x, t)``: the parameters are then traced, not baked in.
    """
    shape_per_batch = check_shape(shape_per_batch)
    if check_steps(num, name="num") < 1:
        raise ValueError(f"num: expected >= 1, got {num}.")
    fn = get_sampler(sampler)
    if options.get("return_info") or options.get("return_trajectory"):
        raise ValueError("sample_in_batches returns samples only; call sample(..., return_info=True) for info.")
    batch = shape_per_batch[0]
    n_batches = math.ceil(num / batch)
    iterator = range(n_batches)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=desc or f"sampling ({sampler})", unit="batch")
    outs = []
    for j in iterator:
        outs.append(_sample_batch(fn, key, jnp.asarray(j * batch, jnp.uint32), score_fn, sde, shape_per_batch, steps,
                                  sampler in _OFFSET_AWARE, options))
    return jnp.concatenate(outs, axis=0)[:num]
