r"""Samplers for score-based models: time grids, reverse-SDE, Langevin / PC, fast ODE solvers
(DDIM, DPM-Solver++, UniPC), EDM, and (from :mod:`jaxscore.samplers.diffrax_samplers`) adaptive
probability-flow ODE / reverse SDE through diffrax.

Every sampler: ``fn(key, score_fn, sde, shape, *, steps, grid, t_min, denoise, return_info, ...)``
returning ``[B, *D]`` samples (``(samples, info)`` with ``return_info=True``; ``info["nfe"]`` is the
number of score evaluations, ``info["trajectory"]`` ``[steps + 1, B, *D]`` with
``return_trajectory=True``). Each is compiled whole (``lax.scan``) and jit-able with ``score_fn``
closed over and ``shape``, ``steps`` static. ``sample(..., sampler=name)`` dispatches by name.
"""

from jaxscore.samplers.api import (
    SAMPLERS,
    available_samplers,
    evals_per_step,
    get_sampler,
    iter_sample_batches,
    nfe_for_steps,
    process_rows,
    sample,
    sample_in_batches,
    sample_local_shard,
    steps_for_nfe,
)
from jaxscore.samplers.grids import GRIDS, time_grid
from jaxscore.samplers.sde_samplers import ancestral, euler_maruyama, reverse_diffusion


def __getattr__(name):
    # lazy access to the other families: jaxscore.samplers.dpmpp_2m etc.
    if name in SAMPLERS:
        return get_sampler(name)
    raise AttributeError(f"module 'jaxscore.samplers' has no attribute {name!r}")


__all__ = [
    "GRIDS",
    "SAMPLERS",
    "ancestral",
    "available_samplers",
    "euler_maruyama",
    "evals_per_step",
    "get_sampler",
    "iter_sample_batches",
    "nfe_for_steps",
    "process_rows",
    "reverse_diffusion",
    "sample",
    "sample_in_batches",
    "sample_local_shard",
    "steps_for_nfe",
    "time_grid",
]
