r"""Linear inverse problems :math:`y = A x_0 + n`, :math:`n \sim N(0, \sigma_y^2 I)`, with a diffusion prior.

* :mod:`jaxscore.inverse.operators`: the degradations as :class:`LinearOperator` objects with
  forward, adjoint and (for :class:`SVDOperator`) an implicit SVD: inpainting, colorization,
  super-resolution, FFT deblurring, any dense matrix, any linear function.
* :mod:`jaxscore.inverse.smc`: :func:`twisted_smc`, sequential Monte Carlo with twisted proposals
  (TDS, Wu et al. 2023), exact as the number of particles grows.
* :mod:`jaxscore.inverse.methods`: guided scores that plug into every sampler (:func:`pigdm`,
  :func:`dps`) and method-specific samplers (:func:`dps_sample`, :func:`replacement_sample`,
  :func:`ddrm_sample`).

The exact posterior of a Gaussian-mixture prior, the ground truth these are tested against, is
:func:`jaxscore.data.toy.linear_gaussian_posterior`.
"""

from jaxscore.inverse.methods import ddrm_sample as ddrm_sample
from jaxscore.inverse.methods import dps as dps
from jaxscore.inverse.methods import dps_sample as dps_sample
from jaxscore.inverse.methods import pigdm as pigdm
from jaxscore.inverse.methods import replacement_sample as replacement_sample
from jaxscore.inverse.operators import Blur as Blur
from jaxscore.inverse.operators import Colorization as Colorization
from jaxscore.inverse.operators import DenseOperator as DenseOperator
from jaxscore.inverse.operators import FunctionOperator as FunctionOperator
from jaxscore.inverse.operators import Inpainting as Inpainting
from jaxscore.inverse.operators import LinearOperator as LinearOperator
from jaxscore.inverse.operators import SuperResolution as SuperResolution
from jaxscore.inverse.operators import SVDOperator as SVDOperator
from jaxscore.inverse.operators import box_mask as box_mask
from jaxscore.inverse.operators import gaussian_blur as gaussian_blur
from jaxscore.inverse.operators import grayscale_operator as grayscale_operator
from jaxscore.inverse.operators import mask_operator as mask_operator
from jaxscore.inverse.operators import random_mask as random_mask
from jaxscore.inverse.operators import uniform_blur as uniform_blur
from jaxscore.inverse.smc import linear_gaussian_likelihood as linear_gaussian_likelihood
from jaxscore.inverse.smc import tweedie_likelihood as tweedie_likelihood
from jaxscore.inverse.smc import twisted_smc as twisted_smc

__all__ = [
    "Blur", "Colorization", "DenseOperator", "FunctionOperator", "Inpainting", "LinearOperator", "SVDOperator",
    "SuperResolution", "box_mask", "ddrm_sample", "dps", "dps_sample", "gaussian_blur", "grayscale_operator",
    "linear_gaussian_likelihood", "mask_operator", "pigdm", "random_mask", "replacement_sample", "tweedie_likelihood",
    "twisted_smc", "uniform_blur",
]
