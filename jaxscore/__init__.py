"""jaxscore: score matching and score-based diffusion models in JAX/Flax.

The one contract: ``score_fn(x: [B, *D], t: [B]) -> [B, *D]`` estimates grad_x log p_t(x).
Analytic scores, trained networks and guided scores all take that shape, so every loss,
sampler and likelihood works with any of them.
"""

from jaxscore import data as data
from jaxscore import divergence as divergence
from jaxscore import distill as distill
from jaxscore import evaluation as evaluation
from jaxscore import experiment as experiment
from jaxscore import guidance as guidance
from jaxscore import inverse as inverse
from jaxscore import likelihood as likelihood
from jaxscore import losses as losses
from jaxscore import metrics as metrics
from jaxscore import models as models
from jaxscore import parameterization as parameterization
from jaxscore import samplers as samplers
from jaxscore import sde as sde
from jaxscore import train as train
from jaxscore import viz as viz
from jaxscore.likelihood import bits_per_dim as bits_per_dim
from jaxscore.likelihood import decode as decode
from jaxscore.likelihood import encode as encode
from jaxscore.likelihood import log_likelihood as log_likelihood
from jaxscore.parameterization import make_score_fn as make_score_fn
from jaxscore.samplers import fit_grid as fit_grid
from jaxscore.samplers import sample as sample
from jaxscore.samplers import sample_in_batches as sample_in_batches
from jaxscore.samplers import sample_local_shard as sample_local_shard
from jaxscore.sde import LinearSDE as LinearSDE
from jaxscore.sde import SubVPSDE as SubVPSDE
from jaxscore.sde import VESDE as VESDE
from jaxscore.sde import VPSDE as VPSDE

__version__ = "0.1.0"
