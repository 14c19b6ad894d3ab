r"""Evaluation: the figures papers report (FID, KID, IS, precision/recall, bits/dim), computed the
way the reference implementations compute them, on features of any extractor.

A feature extractor is a pure, jit-able function

    extractor(images: [B, H, W, C] float in [-1, 1]) -> (features: [B, F], logits: [B, K] | None)

(the FID Inception-v3 of pytorch-fid, or the project's own digits / MNIST classifier). Metrics are
pure functions of features or of their streaming statistics::

    import jaxscore.evaluation as ev

    ref = ev.stats_of_images(test_images_uint8, ev.digits_extractor())
    gen = ev.stats_of_samples(key, score_fn, sde, (8, 8, 1), 10_000, ev.digits_extractor(), sampler="dpmpp_2m", steps=30)
    ev.sample_quality(gen, ref)   # {"fid", "kid", "kid_std_err", "is", "is_std", "precision", "recall", "num"}

Samples are streamed batch by batch over every local device and process (each draws its own
example indices), so 50,000 samples never sit in memory and a pod gives the numbers one device
would.
"""

from jaxscore.evaluation.digits_classifier import digits_extractor as digits_extractor
from jaxscore.evaluation.digits_classifier import mnist_extractor as mnist_extractor
from jaxscore.evaluation.digits_classifier import train_digits_classifier as train_digits_classifier
from jaxscore.evaluation.extractors import build_extractor as build_extractor
from jaxscore.evaluation.inception import inception_extractor as inception_extractor
from jaxscore.evaluation.inception import load_inception_params as load_inception_params
from jaxscore.evaluation.metrics import density_coverage as density_coverage
from jaxscore.evaluation.metrics import frechet_distance as frechet_distance
from jaxscore.evaluation.metrics import inception_score as inception_score
from jaxscore.evaluation.metrics import kernel_inception_distance as kernel_inception_distance
from jaxscore.evaluation.metrics import precision_recall as precision_recall
from jaxscore.evaluation.stats import FeatureStats as FeatureStats
from jaxscore.evaluation.stats import fid_from_stats as fid_from_stats
from jaxscore.evaluation.stats import load_stats as load_stats
from jaxscore.evaluation.stats import merge_feature_stats as merge_feature_stats
from jaxscore.evaluation.stats import save_stats as save_stats
from jaxscore.evaluation.streaming import sample_quality as sample_quality
from jaxscore.evaluation.streaming import stats_of_images as stats_of_images
from jaxscore.evaluation.streaming import stats_of_samples as stats_of_samples
