"""Data: toy distributions with exact scores, image datasets from local files, deterministic batching."""

from jaxscore.data.images import (
    DATASET_NAMES,
    check_dataset,
    load_array_file,
    load_cifar10_binary,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist_idx,
)
from jaxscore.data.pipeline import batch_at_step, scale_images, unscale_images
from jaxscore.data.toy import (
    GaussianMixture,
    gaussian,
    gaussian_mixture,
    grid_mixture,
    random_mixture,
    ring_mixture,
)

__all__ = [
    "DATASET_NAMES", "GaussianMixture", "batch_at_step", "check_dataset", "gaussian",
    "gaussian_mixture", "grid_mixture", "load_array_file", "load_cifar10_binary", "load_dataset", "load_digits",
    "load_image_folder", "load_mnist_idx", "random_mixture", "ring_mixture", "scale_images",
    "unscale_images",
]
