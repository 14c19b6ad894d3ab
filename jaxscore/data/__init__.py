"""Data: toy distributions with exact scores, image datasets from local files, deterministic batching."""

from jaxscore.data.images import (
    DATASET_NAMES,
    DEFAULT_TEST_FRACTION,
    check_dataset,
    heldout_split,
    load_array_file,
    load_cifar10_binary,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist_idx,
    parse_value_range,
)
from jaxscore.data.pipeline import batch_at_step, scale_images, unscale_images
from jaxscore.data.toy import (
    TOY_SAMPLERS,
    GaussianMixture,
    gaussian,
    gaussian_mixture,
    grid_mixture,
    random_mixture,
    ring_mixture,
)

TOY_MIXTURES = {"ring": ring_mixture, "grid": grid_mixture}
"""Toy datasets with an exact mixture (and score): name -> constructor."""
TOY_DATASETS = (*TOY_MIXTURES, *TOY_SAMPLERS)
"""Every toy ``data.name``: the mixtures, then the samplers of :mod:`jaxscore.data.toy` (moons, ...)."""

__all__ = [
    "DATASET_NAMES", "DEFAULT_TEST_FRACTION", "TOY_DATASETS", "TOY_MIXTURES", "TOY_SAMPLERS",
    "GaussianMixture", "batch_at_step", "check_dataset", "gaussian", "heldout_split", "parse_value_range",
    "gaussian_mixture", "grid_mixture", "load_array_file", "load_cifar10_binary", "load_dataset", "load_digits",
    "load_image_folder", "load_mnist_idx", "random_mixture", "ring_mixture", "scale_images",
    "unscale_images",
]
