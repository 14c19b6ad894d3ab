r"""Samplers for score-based models: time grids, reverse-SDE, Langevin / PC, fast ODE solvers
(DDIM, DPM-Solver++, UniPC), EDM, and (from :mod:`jaxscore.samplers.diffrax_samplers`) adaptive
probability-flow ODE / reverse SDE through diffrax.

Every sampler: ``fn(key, score_fn, sde, shape, *, steps, grid, t_min, denoise, return_info, ...)``
returning ``[B, *D]`` samples (``(samples, info)`` with ``return_info=True``; ``info["nfe"]`` is the
number of score evaluations, ``info["nonfinite"]`` the number of sample rows holding a NaN or inf
(batched sampling raises ``FloatingPointError`` on such rows), ``info["trajectory"]`` ``[steps + 1, B, *D]`` with
``return_trajectory=True``). Each is compiled whole (``lax.scan``) and jit-able with ``score_fn``
closed over and ``shape``, ``steps`` static. ``sample(..., sampler=name)`` dispatches by name through
:data:`SAMPLERS`, whose :class:`Sampler` entries carry each sampler's facts (NFE, determinism, options).
"""

from jaxscore.samplers.api import SAMPLERS as SAMPLERS
from jaxscore.samplers.api import available_samplers as available_samplers
from jaxscore.samplers.api import evals_per_step as evals_per_step
from jaxscore.samplers.api import get_sampler as get_sampler
from jaxscore.samplers.api import iter_sample_batches as iter_sample_batches
from jaxscore.samplers.api import nfe_for_steps as nfe_for_steps
from jaxscore.samplers.api import process_rows as process_rows
from jaxscore.samplers.api import sample as sample
from jaxscore.samplers.api import sample_in_batches as sample_in_batches
from jaxscore.samplers.api import sample_local_shard as sample_local_shard
from jaxscore.samplers.api import steps_for_nfe as steps_for_nfe
from jaxscore.samplers.base import Sampler as Sampler
from jaxscore.samplers.diffrax_samplers import ode_sampler as ode
from jaxscore.samplers.diffrax_samplers import ode_sampler as ode_sampler
from jaxscore.samplers.diffrax_samplers import sde_sampler as sde
from jaxscore.samplers.diffrax_samplers import sde_sampler as sde_sampler
from jaxscore.samplers.edm import edm_stochastic as edm_stochastic
from jaxscore.samplers.edm import heun as heun
from jaxscore.samplers.grids import GRIDS as GRIDS
from jaxscore.samplers.fit_grid import fit_grid as fit_grid
from jaxscore.samplers.fit_grid import grid_error as grid_error
from jaxscore.samplers.fit_grid import load_grid as load_grid
from jaxscore.samplers.fit_grid import save_grid as save_grid
from jaxscore.samplers.grids import time_grid as time_grid
from jaxscore.samplers.langevin import annealed_langevin as annealed_langevin
from jaxscore.samplers.langevin import pc as pc
from jaxscore.samplers.sde_samplers import ancestral as ancestral
from jaxscore.samplers.sde_samplers import euler_maruyama as euler_maruyama
from jaxscore.samplers.sde_samplers import reverse_diffusion as reverse_diffusion
from jaxscore.samplers.solvers import ddim as ddim
from jaxscore.samplers.solvers import dpmpp_2m as dpmpp_2m
from jaxscore.samplers.solvers import dpmpp_2m_sde as dpmpp_2m_sde
from jaxscore.samplers.solvers import dpmpp_3m as dpmpp_3m
from jaxscore.samplers.solvers import unipc as unipc

__all__ = [
    "GRIDS", "SAMPLERS", "Sampler", "ancestral", "annealed_langevin", "available_samplers", "ddim", "dpmpp_2m",
    "dpmpp_2m_sde", "dpmpp_3m", "edm_stochastic", "euler_maruyama", "evals_per_step", "fit_grid", "get_sampler",
    "grid_error", "heun", "iter_sample_batches", "load_grid", "nfe_for_steps", "ode", "ode_sampler", "pc",
    "process_rows", "reverse_diffusion", "sample", "sample_in_batches", "sample_local_shard", "save_grid", "sde",
    "sde_sampler", "steps_for_nfe", "time_grid", "unipc",
]
