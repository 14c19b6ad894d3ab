r"""Streaming feature statistics: running mean and covariance in float64, mergeable across processes.

:class:`FeatureStats` accumulates ``(count n, mean mu [F], M2 [F, F])`` with
:math:`M_2 = \sum_i (x_i - \mu)(x_i - \mu)^T`, the statistics of every feature row seen so far,
without holding the rows. Two accumulators combine by Chan, Golub & LeVeque's parallel rule

.. math::
    n = n_a + n_b,\quad \delta = \mu_b - \mu_a,\quad
    \mu = \mu_a + \delta\, n_b / n,\quad
    M_2 = M_{2,a} + M_{2,b} + \delta\delta^T n_a n_b / n ,

and a batch is absorbed as the merge with its own (count, mean, centred M2). Chan's form is
chosen over sums of outer products around a fixed shift because it needs no shift agreed in
advance by all processes and stays accurate when the feature mean is large against its spread
(a raw sum of squares would lose the covariance to cancellation). Merging a list of accumulators
in a fixed order (:func:`merge_feature_stats`) gives the same ``mu``/``sigma`` as one pass over
all rows up to float64 round-off, whatever the batch split.

Besides the moments, an accumulator keeps a bounded reservoir: the first ``keep`` feature rows
(and, when the extractor gives logits, the same rows' logits) in arrival order, for the metrics
that need samples (KID, precision/recall, Inception score). The first rows are a uniform subset
when rows arrive in random order (generated samples; shuffled datasets). ``merge(a, b)`` treats
a's rows as coming before b's. Reservoir rows are stored as float32 (what extractors produce),
the moments as float64.

Reference statistics files are ``.npz`` with float64 ``mu [F]`` and ``sigma [F, F]``, the format of
pytorch-fid and clean-fid (:func:`save_stats`, :func:`load_stats`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

from jaxscore.evaluation.metrics import check_features, check_gaussian, frechet_distance

__all__ = ["FeatureStats", "merge_feature_stats", "save_stats", "load_stats", "fid_from_stats"]

_RESERVOIR_DTYPE = np.float32


def _read_only(array: np.ndarray) -> np.ndarray:
    view = np.asarray(array).view()
    view.flags.writeable = False
    return view


@dataclasses.dataclass(frozen=True, eq=False)
class FeatureStats:
    r"""Immutable running statistics of feature rows ``[*, F]`` (see the module docstring for the math).

    Fields (arrays are read-only numpy arrays):
      count: number of rows seen, ``n``.
      mean: ``[F]`` float64 running mean.
      m2: ``[F, F]`` float64 sum of outer products of deviations from the mean.
      keep: capacity of the reservoir (rows).
      kept_features: ``[min(n, keep), F]`` float32, the first rows seen.
      kept_logits: ``[min(n, keep), K]`` float32, their logits, or ``None`` when not tracked.

    Build one with :meth:`create`, then ``stats = stats.update(features, logits)`` per batch.
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray
    keep: int
    kept_features: np.ndarray
    kept_logits: np.ndarray | None = None

    def __post_init__(self):
        mean = np.asarray(self.mean, np.float64)
        m2 = np.asarray(self.m2, np.float64)
        kept_features = np.asarray(self.kept_features, _RESERVOIR_DTYPE)
        kept_logits = None if self.kept_logits is None else np.asarray(self.kept_logits, _RESERVOIR_DTYPE)
        f = mean.shape[0] if mean.ndim == 1 else -1
        if f < 1 or m2.shape != (f, f) or kept_features.ndim != 2 or kept_features.shape[1] != f:
            raise ValueError(
                f"FeatureStats: expected mean [F], m2 [F, F], kept_features [n_kept, F], got "
                f"{mean.shape}, {m2.shape}, {kept_features.shape}."
            )
        n_kept = kept_features.shape[0]
        if self.count < 0 or self.keep < 0 or n_kept != min(self.count, self.keep):
            raise ValueError(
                f"FeatureStats: expected count >= 0, keep >= 0 and min(count, keep) kept rows, got "
                f"count {self.count}, keep {self.keep}, {n_kept} kept rows."
            )
        if kept_logits is not None and (kept_logits.ndim != 2 or kept_logits.shape[0] != n_kept):
            raise ValueError(f"FeatureStats: expected kept_logits [{n_kept}, K], got {kept_logits.shape}.")
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "keep", int(self.keep))
        object.__setattr__(self, "mean", _read_only(mean))
        object.__setattr__(self, "m2", _read_only(m2))
        object.__setattr__(self, "kept_features", _read_only(kept_features))
        object.__setattr__(self, "kept_logits", None if kept_logits is None else _read_only(kept_logits))

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def create(cls, feature_dim: int, *, keep: int = 0, logit_dim: int | None = None) -> "FeatureStats":
        """Empty statistics for ``F = feature_dim`` features, a reservoir of ``keep`` rows, and
        ``K = logit_dim`` logits per row kept alongside (``None``: logits are not tracked)."""
        for name, value, minimum in (("feature_dim", feature_dim, 1), ("keep", keep, 0)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"FeatureStats.create: {name} expected an integer >= {minimum}, got {value!r}.")
        if logit_dim is not None and (not isinstance(logit_dim, (int, np.integer)) or logit_dim < 1):
            raise ValueError(f"FeatureStats.create: logit_dim expected None or an integer >= 1, got {logit_dim!r}.")
        return cls(
            count=0,
            mean=np.zeros(feature_dim),
            m2=np.zeros((feature_dim, feature_dim)),
            keep=keep,
            kept_features=np.zeros((0, feature_dim), _RESERVOIR_DTYPE),
            kept_logits=None if logit_dim is None else np.zeros((0, logit_dim), _RESERVOIR_DTYPE),
        )

    @property
    def feature_dim(self) -> int:
        return self.mean.shape[0]

    @property
    def logit_dim(self) -> int | None:
        return None if self.kept_logits is None else self.kept_logits.shape[1]

    # -- statistics --------------------------------------------------------------------------------

    @property
    def mu(self) -> np.ndarray:
        """Mean ``[F]`` float64 of all rows seen."""
        if self.count < 1:
            raise ValueError("FeatureStats.mu: no rows seen yet (count 0).")
        return self.mean

    @property
    def sigma(self) -> np.ndarray:
        """Covariance ``[F, F]`` float64, ``M2 / (n - 1)`` (ddof = 1, as ``np.cov`` in pytorch-fid)."""
        if self.count < 2:
            raise ValueError(f"FeatureStats.sigma: expected at least 2 rows for a covariance, got {self.count}.")
        return self.m2 / (self.count - 1)

    # -- accumulation ------------------------------------------------------------------------------

    def update(self, features, logits=None) -> "FeatureStats":
        """Statistics after also seeing ``features [B, F]`` (and their ``logits [B, K]`` when tracked).

        Raises a ValueError naming the shapes on a feature- or logit-size mismatch, and on
        non-finite rows (a diverged sampler should fail loudly, not give a NaN FID).
        """
        batch = check_features("features", features, min_rows=0)
        if batch.shape[1] != self.feature_dim:
            raise ValueError(
                f"features: expected shape [B, F] with F = {self.feature_dim}, got {batch.shape}."
            )
        batch_logits = self._check_logits(logits, batch.shape[0])
        if batch.shape[0] == 0:
            return self
        batch_mean = batch.mean(axis=0)
        centred = batch - batch_mean
        batch_stats = FeatureStats(
            count=batch.shape[0],
            mean=batch_mean,
            m2=centred.T @ centred,
            keep=self.keep,
            kept_features=batch[: self.keep],
            kept_logits=None if batch_logits is None else batch_logits[: self.keep],
        )
        return self.merge(batch_stats)

    def _check_logits(self, logits, batch_size: int) -> np.ndarray | None:
        if self.kept_logits is None:
            if logits is not None:
                raise ValueError(
                    "logits: these FeatureStats do not track logits (created with logit_dim=None), got "
                    f"an array of shape {np.shape(logits)}; create them with logit_dim=K."
                )
            return None
        if logits is None:
            raise ValueError(
                f"logits: expected [B, K] = [{batch_size}, {self.logit_dim}] (logits are tracked), got None."
            )
        arr = check_features("logits", logits, min_rows=0)
        if arr.shape != (batch_size, self.logit_dim):
            raise ValueError(f"logits: expected shape [B, K] = {(batch_size, self.logit_dim)}, got {arr.shape}.")
        return arr

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Statistics of the rows of ``self`` followed by the rows of ``other`` (Chan et al.'s merge)."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"merge: expected FeatureStats, got {type(other).__name__}.")
        layout = (self.feature_dim, self.keep, self.logit_dim)
        other_layout = (other.feature_dim, other.keep, other.logit_dim)
        if layout != other_layout:
            raise ValueError(
                f"merge: expected the same (feature_dim, keep, logit_dim) = {layout}, got {other_layout}."
            )
        n = self.count + other.count
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.count * other.count / n)
        kept_logits = None
        if self.kept_logits is not None:
            kept_logits = np.concatenate([self.kept_logits, other.kept_logits])[: self.keep]
        return FeatureStats(
            count=n,
            mean=mean,
            m2=m2,
            keep=self.keep,
            kept_features=np.concatenate([self.kept_features, other.kept_features])[: self.keep],
            kept_logits=kept_logits,
        )

    # -- flat form for cross-process gathers ------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Fixed-shape arrays (identical shapes in every process, whatever its count) for an all-gather.

        Keys: ``count`` int64 ``[]``, ``mean`` float64 ``[F]``, ``m2`` float64 ``[F, F]``,
        ``kept_features`` float32 ``[keep, F]`` zero-padded past ``min(count, keep)`` rows, and
        ``kept_logits`` float32 ``[keep, K]`` when logits are tracked. Gather them without a cast:
        JAX with ``jax_enable_x64`` off would round float64 to float32 and int64 to int32.
        """
        arrays = {
            "count": np.asarray(self.count, np.int64),
            "mean": np.array(self.mean),
            "m2": np.array(self.m2),
            "kept_features": _pad_rows(self.kept_features, self.keep),
        }
        if self.kept_logits is not None:
            arrays["kept_logits"] = _pad_rows(self.kept_logits, self.keep)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "FeatureStats":
        """Inverse of :meth:`to_arrays` (``keep`` is the padded reservoir's row count)."""
        missing = {"count", "mean", "m2", "kept_features"} - set(arrays)
        if missing:
            raise ValueError(
                f"FeatureStats.from_arrays: expected keys count, mean, m2, kept_features[, kept_logits], "
                f"missing {sorted(missing)}."
            )
        count = int(np.asarray(arrays["count"]))
        kept_features = np.asarray(arrays["kept_features"])
        if kept_features.ndim != 2:
            raise ValueError(f"FeatureStats.from_arrays: kept_features expected [keep, F], got {kept_features.shape}.")
        keep = kept_features.shape[0]
        n_kept = min(count, keep)
        kept_logits = arrays.get("kept_logits")
        return cls(
            count=count,
            mean=np.asarray(arrays["mean"]),
            m2=np.asarray(arrays["m2"]),
            keep=keep,
            kept_features=kept_features[:n_kept],
            kept_logits=None if kept_logits is None else np.asarray(kept_logits)[:n_kept],
        )


def _pad_rows(rows: np.ndarray, num_rows: int) -> np.ndarray:
    padded = np.zeros((num_rows, rows.shape[1]), rows.dtype)
    padded[: rows.shape[0]] = rows
    return padded


def merge_feature_stats(stats: Sequence[FeatureStats]) -> FeatureStats:
    """Merge accumulators left to right (``stats[0]`` first, its rows first in the reservoir).

    A fixed order makes the result a deterministic function of the list, so every process that
    merges the same gathered list gets bit-identical statistics.
    """
    stats = list(stats)
    if not stats:
        raise ValueError("merge_feature_stats: expected at least one FeatureStats, got an empty sequence.")
    merged = stats[0]
    for item in stats[1:]:
        merged = merged.merge(item)
    return merged


# ---------------------------------------------------------------------------------------------
# reference statistics files
# ---------------------------------------------------------------------------------------------


def _mu_sigma(name: str, stats) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` float64 from FeatureStats, a mapping with ``mu``/``sigma``, or a pair."""
    if isinstance(stats, FeatureStats):
        return stats.mu, stats.sigma
    if isinstance(stats, Mapping):
        if "mu" not in stats or "sigma" not in stats:
            raise ValueError(f"{name}: expected a mapping with keys 'mu' and 'sigma', got keys {sorted(stats)}.")
        return check_gaussian(name, stats["mu"], stats["sigma"])
    if isinstance(stats, (tuple, list)) and len(stats) == 2:
        return check_gaussian(name, stats[0], stats[1])
    raise TypeError(
        f"{name}: expected FeatureStats, a mapping with 'mu' and 'sigma', or a pair (mu, sigma), "
        f"got {type(stats).__name__}."
    )


def fid_from_stats(a, b, **frechet_kwargs) -> float:
    """Fréchet distance between two sets of statistics (FeatureStats, ``load_stats`` dicts or
    ``(mu, sigma)`` pairs); keyword arguments go to :func:`~jaxscore.evaluation.metrics.frechet_distance`."""
    mu_a, sigma_a = _mu_sigma("a", a)
    mu_b, sigma_b = _mu_sigma("b", b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b, **frechet_kwargs)


def save_stats(path: str | os.PathLike, stats_or_mu_sigma, **extra) -> None:
    """Write ``.npz`` with float64 ``mu [F]`` and ``sigma [F, F]`` (pytorch-fid / clean-fid format).

    ``stats_or_mu_sigma`` is a FeatureStats (its ``count`` is saved too), a mapping with ``mu`` and
    ``sigma``, or a pair ``(mu, sigma)``. ``extra`` names further arrays to store (e.g.
    ``feats=stats.kept_features`` for KID, as clean-fid's ``_kid.npz``); they must be numeric, since
    files are read back without pickle. The file is written at exactly ``path`` (no suffix added).
    """
    mu, sigma = _mu_sigma("stats_or_mu_sigma", stats_or_mu_sigma)
    arrays = {"mu": np.asarray(mu, np.float64), "sigma": np.asarray(sigma, np.float64)}
    if isinstance(stats_or_mu_sigma, FeatureStats):
        arrays["count"] = np.asarray(stats_or_mu_sigma.count, np.int64)
    for key, value in extra.items():
        if key in arrays:
            raise ValueError(f"save_stats: extra array '{key}' would overwrite the statistic of that name.")
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            raise TypeError(
                f"save_stats: extra array '{key}' must be numeric (read back without pickle), got dtype {value.dtype}."
            )
        arrays[key] = value
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def load_stats(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.npz`` statistics file (``mu [F]``, ``sigma [F, F]``, optional extras) without pickle.

    Accepts pytorch-fid's and clean-fid's reference files (just ``mu`` and ``sigma``) and those of
    :func:`save_stats`. Returns a dict of all arrays with ``mu``/``sigma`` as float64.

    Raises:
      ValueError naming the file if it is not an ``.npz`` archive (a pickle or a single ``.npy``
      array), lacks ``mu`` or ``sigma``, holds object arrays, or has shapes other than ``mu [F]``,
      ``sigma [F, F]`` or non-finite values.
    """
    expected = "an .npz archive with float arrays 'mu' [F] and 'sigma' [F, F] (as pytorch-fid / clean-fid write)"
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as error:  # numpy refuses pickled content (or a file that is no .npy/.npz)
        raise ValueError(
            f"{os.fspath(path)}: expected {expected}; it cannot be read without pickle, which is never "
            f"used ({error})."
        ) from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{os.fspath(path)}: expected {expected}, got a single array of shape {np.shape(loaded)}.")
    with loaded:
        missing = {"mu", "sigma"} - set(loaded.files)
        if missing:
            raise ValueError(
                f"{os.fspath(path)}: expected {expected}; missing {sorted(missing)}, found keys {sorted(loaded.files)}."
            )
        try:
            arrays = {key: loaded[key] for key in loaded.files}
        except ValueError as error:  # an object array inside the archive
            raise ValueError(
                f"{os.fspath(path)}: expected {expected}; it holds object (pickled) arrays ({error})."
            ) from error
    arrays["mu"], arrays["sigma"] = check_gaussian(os.fspath(path), arrays["mu"], arrays["sigma"])
    return arrays
