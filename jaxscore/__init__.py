"""jaxscore: score matching and score-based diffusion models in JAX/Flax.

The one contract: ``score_fn(x: [B, *D], t: [B]) -> [B, *D]`` estimates grad_x log p_t(x).
"""

from jaxscore import divergence, losses, parameterization, sde
from jaxscore.parameterization import make_score_fn
from jaxscore.sde import LinearSDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"


def __getattr__(name):
    # heavier sub-packages load on first use (flax models, diffrax solvers, orbax training)
    import importlib

    if name in ("models", "samplers", "train", "data", "viz", "metrics", "likelihood", "experiment", "guidance",
                "evaluation"):
        return importlib.import_module(f"jaxscore.{name}")
    if name in ("sample", "sample_in_batches"):
        return getattr(importlib.import_module("jaxscore.samplers"), name)
    if name in ("log_likelihood", "bits_per_dim", "encode", "decode"):
        return getattr(importlib.import_module("jaxscore.likelihood"), name)
    raise AttributeError(f"module 'jaxscore' has no attribute {name!r}")


__all__ = [
    "LinearSDE",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "bits_per_dim",
    "decode",
    "divergence",
    "encode",
    "log_likelihood",
    "losses",
    "make_score_fn",
    "parameterization",
    "sample",
    "sde",
]
