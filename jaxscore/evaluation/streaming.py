r"""Feature statistics of generated samples and of datasets, streamed batch by batch over all
local devices and all processes, and the metrics computed from them.

Nothing here holds all samples or all features: each batch is sampled (spread over the local
devices), quantised to 8 bits, passed through the feature extractor and folded into a
:class:`~jaxscore.evaluation.stats.FeatureStats` (running mean / covariance plus the first
``keep`` rows for KID, precision/recall and IS). In a multi-process job each process draws only
its own global example indices (:func:`jaxscore.samplers.iter_sample_batches`); the per-process
statistics are then all-gathered and merged, the kept rows ordered by global index, so the
result equals a one-process evaluation (moments up to float64 round-off, kept rows exactly).

Quantisation: generated images are rounded to the 8-bit grid, :math:`q = \mathrm{clip}(\mathrm{round}
(127.5 (x + 1)), 0, 255)`, then mapped back to :math:`q / 127.5 - 1`, as the reference
pipelines (score_sde, EDM, pytorch-fid on saved PNGs) see samples; real images are uint8 already.
Samples of a model on another range (``value_range=(lo, hi)``, e.g. (0, 1)) are first mapped to
[-1, 1], :math:`x' = 2(x - lo)/(hi - lo) - 1`, where the feature networks take them: the same 8-bit
grid, :math:`q = \mathrm{round}(255 (x - lo)/(hi - lo))`, so a sample and its image in the other range
give the same features.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore.evaluation.metrics import inception_score, kernel_inception_distance, precision_recall
from jaxscore.evaluation.stats import FeatureStats, fid_from_stats

METRICS = ("fid", "kid", "is", "pr")
"""Metrics :func:`sample_quality` computes from statistics (``is`` needs an extractor with logits)."""


@eqx.filter_jit
def _extract(extractor, images: jax.Array, quantise: bool, value_range: tuple = (-1.0, 1.0)):
    """``extractor(images)`` on images in [-1, 1], first rounded to the 8-bit grid if ``quantise``;
    images in another ``value_range`` (static) are mapped to [-1, 1] first."""
    x = images.astype(jnp.float32)
    lo, hi = value_range
    if (lo, hi) != (-1.0, 1.0):
        y = (x - lo) * (1.0 / (hi - lo))  # [0, 1]
        if quantise:
            y = jnp.clip(jnp.round(y * 255.0), 0.0, 255.0) / 255.0
        return extractor(2.0 * y - 1.0)
    if quantise:
        x = jnp.clip(jnp.round((x + 1.0) * 127.5), 0.0, 255.0) / 127.5 - 1.0
    return extractor(x)


def _as_unit_range(images, value_range: tuple) -> tuple:
    """``(images, their range)`` for :func:`_extract`: uint8 ``[0, 255]`` -> float32 ``[-1, 1]`` (pixels, whatever the
    model's range); float images pass through in ``value_range``."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0), (-1.0, 1.0)
    return images, value_range


def accumulate_features(extractor: Callable, batches: Iterable[tuple], *, keep: int = 0,
                        quantise: bool = True, value_range=(-1.0, 1.0)) -> tuple[FeatureStats, np.ndarray]:
    """Fold ``(images [b, H, W, C], global indices [b])`` batches into statistics; float images are in
    ``value_range`` (default [-1, 1]; uint8 images are pixels whatever it is).

    Returns ``(stats, kept_indices)``: ``kept_indices [min(n, keep)]`` are the global indices of
    the rows ``stats`` kept (to order them when processes are merged)."""
    stats, kept = None, []
    value_range = tuple(float(v) for v in value_range)
    for images, indices in batches:
        x, x_range = _as_unit_range(images, value_range)
        features, logits = _extract(extractor, x, quantise, x_range)
        features = np.asarray(features)
        logits = None if logits is None else np.asarray(logits)
        if stats is None:
            stats = FeatureStats.create(features.shape[1], keep=keep,
                                        logit_dim=None if logits is None else logits.shape[1])
        stats = stats.update(features, logits)
        kept.append(np.asarray(indices, np.int64)[: max(keep - sum(map(len, kept)), 0)])
    if stats is None:
        raise ValueError("accumulate_features: expected at least one batch of images, got none.")
    return stats, np.concatenate(kept)


def _allgather_exact(array: np.ndarray) -> np.ndarray:
    """``[P, *shape]``: ``array`` of every process, bit-exact (float64 / int64 travel as uint32
    words, since a gather with ``jax_enable_x64`` off would round them to 32 bits)."""
    from jax.experimental import multihost_utils

    array = np.asarray(array)
    words = np.ascontiguousarray(array.reshape(-1)).view(np.uint32)
    gathered = np.asarray(multihost_utils.process_allgather(words))
    return gathered.view(array.dtype).reshape((gathered.shape[0], *array.shape))


def merge_over_processes(stats: FeatureStats, kept_indices: np.ndarray) -> FeatureStats:
    """All processes' statistics merged (in process order) with the kept rows re-ordered by global
    index and cut to ``keep``: the same as one process having seen every row. Identity for one process."""
    if jax.process_count() == 1:
        return stats
    arrays = stats.to_arrays()
    padded_idx = np.full((stats.keep,), np.iinfo(np.int64).max, np.int64)
    padded_idx[: len(kept_indices)] = kept_indices
    gathered = {name: _allgather_exact(value) for name, value in arrays.items()}
    all_idx = _allgather_exact(padded_idx)
    per_process = [FeatureStats.from_arrays({k: v[p] for k, v in gathered.items()}) for p in range(len(all_idx))]
    moments = per_process[0]
    for other in per_process[1:]:
        moments = moments.merge(other)
    order = np.argsort(all_idx.reshape(-1), kind="stable")[: min(moments.count, stats.keep)]
    kept_logits = gathered.get("kept_logits")
    return FeatureStats(count=moments.count, mean=moments.mean, m2=moments.m2, keep=stats.keep,
                        kept_features=gathered["kept_features"].reshape(-1, stats.feature_dim)[order],
                        kept_logits=None if kept_logits is None else kept_logits.reshape(-1, kept_logits.shape[-1])[order])


def stats_of_samples(key, score_fn, sde, data_shape, num: int, extractor: Callable, *, sampler: str = "dpmpp_2m",
                     steps: int | None = 20, batch_size: int = 500, keep: int = 10_000, progress: bool = False,
                     desc: str | None = None, value_range=(-1.0, 1.0), **options) -> FeatureStats:
    """Statistics of ``num`` samples ``sample(key, score_fn, sde, (num, *data_shape), sampler, steps, **options)``
    under ``extractor``, drawn ``batch_size`` at a time over all local devices and processes.
    ``value_range``: the model's image range (a config's ``data.value_range``); the samples are quantised
    on its 8-bit grid and mapped to [-1, 1] for the extractor.

    Example ``g`` is drawn with the key ``fold_in(key, g)``, so the statistics do not depend on
    ``batch_size``, on the devices or on the number of processes (up to float round-off)."""
    from jaxscore.samplers.api import iter_sample_batches

    batches = iter_sample_batches(key, score_fn, sde, (int(batch_size), *tuple(data_shape)), int(num), sampler, steps,
                                  progress=progress, desc=desc or f"sampling + features ({sampler})", **options)
    return merge_over_processes(*accumulate_features(extractor, batches, keep=keep, value_range=value_range))


def _image_batches(images, batch_size: int, process_index: int, process_count: int) -> Iterator[tuple]:
    """This process's rows of each global batch of ``images`` (contiguous share, like the samplers)."""
    from jaxscore.samplers.api import process_rows

    for first, n in process_rows(len(images), batch_size, process_index, process_count):
        if n > 0:
            yield images[first:first + n], np.arange(first, first + n)


def stats_of_images(images, extractor: Callable, *, batch_size: int = 500, keep: int = 10_000,
                    progress: bool = False, desc: str = "features") -> FeatureStats:
    """Statistics of a dataset's images (uint8 ``[N, H, W, C]`` or float in [-1, 1]) under
    ``extractor``; each process extracts its share, the results are merged over processes."""
    batches = _image_batches(images, int(batch_size), jax.process_index(), jax.process_count())
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch", total=-(-len(images) // int(batch_size)))
    quantise = not (isinstance(images, np.ndarray) and images.dtype == np.uint8)
    return merge_over_processes(*accumulate_features(extractor, batches, keep=keep, quantise=quantise))


def computable(metrics: Iterable[str], generated: FeatureStats) -> tuple[str, ...]:
    """``metrics`` without ``is`` when the extractor gave no logits (nothing to score it on)."""
    return tuple(m for m in metrics if m != "is" or generated.kept_logits is not None)


def per_class_accuracy(logits, num_classes: int) -> np.ndarray:
    """``[K]``: for kept rows ``i`` of class ``i % K`` (how class-conditional evaluation draws
    them), the fraction whose argmax logit is that class."""
    predicted = np.argmax(np.asarray(logits), axis=-1)
    labels = np.arange(len(predicted)) % num_classes
    return np.array([np.mean(predicted[labels == c] == c) for c in range(num_classes)])


def sample_quality(generated: FeatureStats, reference, metrics: Iterable[str] = METRICS, *,
                   kid_subsets: int = 100, kid_subset_size: int = 1000, is_splits: int = 10,
                   pr_k: int = 3, seed: int = 0) -> dict[str, float]:
    """FID / KID / IS / precision-recall of ``generated`` against ``reference``.

    ``reference``: FeatureStats, or a :func:`~jaxscore.evaluation.stats.load_stats` dict (``mu``,
    ``sigma`` and, for KID and precision/recall, ``features`` rows). FID uses the moments of all
    rows; KID, IS and precision/recall use the kept rows (the first ``keep`` by global index).
    Returns ``fid``; ``kid``, ``kid_std_err``; ``is``, ``is_std``; ``precision``, ``recall``;
    ``num`` (generated rows).
    """
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"metrics: expected some of {list(METRICS)}, got unknown {unknown}.")
    ref_rows = reference.kept_features if isinstance(reference, FeatureStats) else reference.get("features")
    if ref_rows is not None and len(ref_rows) == 0:
        ref_rows = None
    if ref_rows is None and ({"kid", "pr"} & set(metrics)):
        raise ValueError("metrics kid / pr: the reference holds no feature rows (a pytorch-fid / clean-fid file has "
                         "only mu and sigma); compute it with `jaxscore fid-stats` or pass reference images.")
    out = {"num": generated.count}
    if "fid" in metrics:
        out["fid"] = fid_from_stats(generated, reference)
    if "kid" in metrics:
        out["kid"], out["kid_std_err"] = kernel_inception_distance(
            generated.kept_features, ref_rows, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    if "is" in metrics:
        if generated.kept_logits is None:
            raise ValueError("metric is: the feature extractor gives no logits.")
        out["is"], out["is_std"] = inception_score(generated.kept_logits, splits=is_splits)
    if "pr" in metrics:
        out.update(precision_recall(ref_rows, generated.kept_features, k=pr_k))
    return {k: float(v) if k != "num" else int(v) for k, v in out.items()}
