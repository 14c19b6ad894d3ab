"""jaxscore: score matching and score-based diffusion models in JAX/Flax.

The one contract: ``score_fn(x: [B, *D], t: [B]) -> [B, *D]`` estimates grad_x log p_t(x).
"""

from jaxscore import divergence, parameterization, sde
from jaxscore.parameterization import make_score_fn
from jaxscore.sde import LinearSDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"

__all__ = [
    "LinearSDE",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "divergence",
    "make_score_fn",
    "parameterization",
    "sde",
]
