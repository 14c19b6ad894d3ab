r"""Students that need fewer steps: progressive distillation and consistency models.

Everything here meets the one contract ``score_fn(x, t) -> score`` (x: [B, *D], t: [B]): a teacher is
any ``score_fn`` (a trained network, a previous student, an exact mixture score) and a student becomes
one again (a progressive student through its parameterization, a consistency student through its x0
view), so the samplers sample it: ``"ddim"`` on the student's halved grid, ``"consistency"`` for a
consistency model.

* :mod:`jaxscore.distill.progressive`: :func:`progressive_distillation_loss` (Salimans & Ho 2022),
  :func:`halving_grids`, the DDIM pieces.
* :mod:`jaxscore.distill.consistency`: :func:`consistency_fn` (boundary condition by construction),
  :func:`consistency_score_fn`, :func:`consistency_loss` (distillation and training, the iCT recipe),
  :func:`ict_levels`.
* :mod:`jaxscore.distill.residual`: students that start as their teacher (teacher output + a zero-gain
  correction) when there are no teacher weights to copy, e.g. an exact score.
* :mod:`jaxscore.distill.run` (imported on use): the ``jaxscore distill`` command on the training loop.
"""

METHODS = ("progressive", "consistency_distillation", "consistency_training")
"""``config.distill.method`` values (the ``jaxscore distill`` command)."""

from jaxscore.distill.consistency import LEVEL_SAMPLING as LEVEL_SAMPLING  # noqa: E402
from jaxscore.distill.consistency import ODE_SOLVERS as ODE_SOLVERS
from jaxscore.distill.consistency import consistency_coefs as consistency_coefs
from jaxscore.distill.consistency import consistency_fn as consistency_fn
from jaxscore.distill.consistency import consistency_loss as consistency_loss
from jaxscore.distill.consistency import consistency_score_fn as consistency_score_fn
from jaxscore.distill.consistency import ict_levels as ict_levels
from jaxscore.distill.consistency import karras_level as karras_level
from jaxscore.distill.consistency import pseudo_huber as pseudo_huber
from jaxscore.distill.consistency import teacher_ode_step as teacher_ode_step
from jaxscore.distill.progressive import PD_WEIGHTINGS as PD_WEIGHTINGS
from jaxscore.distill.progressive import ddim_step as ddim_step
from jaxscore.distill.progressive import denoiser as denoiser
from jaxscore.distill.progressive import halving_grids as halving_grids
from jaxscore.distill.progressive import loss_weight as loss_weight
from jaxscore.distill.progressive import one_step_target as one_step_target
from jaxscore.distill.progressive import progressive_distillation_loss as progressive_distillation_loss
from jaxscore.distill.progressive import score_denoiser as score_denoiser
from jaxscore.distill.progressive import student_grid as student_grid
from jaxscore.distill.residual import RESIDUAL_PARAMETERIZATIONS as RESIDUAL_PARAMETERIZATIONS
from jaxscore.distill.residual import residual_apply as residual_apply
from jaxscore.distill.residual import residual_consistency_apply as residual_consistency_apply
from jaxscore.distill.residual import residual_params as residual_params

__all__ = [
    "LEVEL_SAMPLING", "METHODS", "ODE_SOLVERS", "PD_WEIGHTINGS", "RESIDUAL_PARAMETERIZATIONS", "consistency_coefs",
    "consistency_fn", "consistency_loss", "consistency_score_fn", "ddim_step", "denoiser", "halving_grids",
    "ict_levels", "karras_level", "loss_weight", "one_step_target", "progressive_distillation_loss", "pseudo_huber",
    "residual_apply", "residual_consistency_apply", "residual_params", "score_denoiser", "student_grid",
    "teacher_ode_step",
]
