r"""Deterministic, per-host batching of in-memory uint8 image datasets.

The batch for step :math:`s` is a pure function of ``(dataset, seed, s)``:

* The example stream is the concatenation of one permutation per epoch; epoch :math:`e`'s
  permutation of :math:`0..N-1` is drawn by ``numpy.random.Generator(PCG64)`` from
  ``SeedSequence(seed, spawn_key=(0, e))``. Global batch :math:`s` holds stream positions
  :math:`[sB, (s+1)B)`; position :math:`p` is example ``perm_{p // N}[p % N]``. Each epoch
  therefore visits every example exactly once (a batch may straddle two epochs; nothing is
  dropped), and a resumed run (start at step :math:`s`) sees exactly the batches it would
  have seen.
* Host :math:`i` of :math:`P` reads only rows :math:`[iB/P, (i+1)B/P)` of the global batch.
* Augmentations (random horizontal flip, uniform dequantisation) draw from counter-based
  Philox streams keyed by ``(seed, step)`` and indexed by the *global* row, so host shards of
  an augmented batch are also exactly the rows of the single-host batch: the run is the same
  whatever the number of hosts.

Scaling: :func:`scale_images` maps :math:`k \in \{0..255\}` to :math:`k/127.5 - 1 \in [-1, 1]`
(or to :math:`k/255 \in [0, 1]` with ``value_range=(0, 1)``, NCSN's range);
with dequantisation, :math:`x = 2\,(k + u)/256 - 1`, :math:`u \sim U[0, 1)`, which lies in
the bin :math:`[k/128 - 1, (k+1)/128 - 1)` (the convention of likelihood/bits-per-dim
evaluation: the continuous density on :math:`[0,1)^D` of :math:`(k+u)/256`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxscore.data.images import check_dataset

__all__ = [
    "batch_at_step",
    "batch_indices",
    "dequantize_images",
    "epoch_permutation",
    "scale_images",
    "unscale_images",
]

_PERM, _FLIP, _DEQUANT = 0, 1, 2  # spawn-key tags: independent streams per purpose


# --------------------------------------------------------------------------------------
# Scaling
# --------------------------------------------------------------------------------------


def _check_uint8(images, name="images"):
    if getattr(images, "dtype", None) != np.uint8:
        got = getattr(images, "dtype", type(images))
        raise TypeError(f"{name}: expected uint8 values 0..255, got dtype {got}.")


CENTERED = (-1.0, 1.0)  # jaxscore's image range (score_sde's data.centered=True)
UNIT = (0.0, 1.0)  # NCSN's and score_sde's data.centered=False


def _check_range(value_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"value_range: expected a pair (low, high) such as (-1, 1) or (0, 1), got {value_range!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"value_range: expected finite (low, high) with high > low, got {value_range!r}.")
    return lo, hi


def scale_images(images, value_range=CENTERED):
    r"""uint8 :math:`k \in \{0..255\}` -> float32 in ``value_range`` (lo, hi): :math:`x = lo + (hi - lo)\,k/255`.

    The default :math:`[-1, 1]` is :math:`x = k/127.5 - 1` (jaxscore's convention); ``(0, 1)`` is
    :math:`x = k/255` (NCSN, score_sde's ``centered=False``). Any shape; numpy and jax arrays.
    """
    _check_uint8(images)
    lo, hi = _check_range(value_range)
    if (lo, hi) == CENTERED:
        return images.astype(np.float32) * np.float32(1.0 / 127.5) - np.float32(1.0)
    return images.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)


def unscale_images(x, *, dequantized: bool = False, value_range=CENTERED):
    r"""float in ``value_range`` (default :math:`[-1, 1]`) -> uint8, inverse of :func:`scale_images`
    (or of dequantisation).

    With :math:`y = (x - lo)/(hi - lo) \in [0, 1]`: ``dequantized=False``: :math:`k = \mathrm{round}(255 y)`;
    ``dequantized=True``: :math:`k = \lfloor 256 y \rfloor` (the bin index of :func:`dequantize_images`).
    Values outside the range are clipped to 0..255.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None or not np.issubdtype(dtype, np.floating):
        raise TypeError(f"x: expected a floating-point array in {value_range}, got dtype {dtype}.")
    lo, hi = _check_range(value_range)
    if (lo, hi) != CENTERED:
        y = (x - lo) * (1.0 / (hi - lo))
        k = (y * 256.0) // 1.0 if dequantized else (y * 255.0).round()
        return k.clip(0, 255).astype(np.uint8)
    if dequantized:
        k = ((x + 1.0) * 128.0) // 1.0  # floor, for numpy and jax arrays alike
    else:
        k = ((x + 1.0) * 127.5).round()
    return k.clip(0, 255).astype(np.uint8)


def dequantize_images(images: np.ndarray, u: np.ndarray, value_range=CENTERED) -> np.ndarray:
    r"""Uniform dequantisation: :math:`x = 2\,(k + u)/256 - 1`, float32, for ``u`` in ``[0, 1)``
    (``value_range=(lo, hi)``: :math:`x = lo + (hi - lo)(k + u)/256`; ``(0, 1)``: :math:`(k + u)/256`, exact too).

    ``u`` must be a multiple of :math:`2^{-16}` (as :func:`batch_at_step` draws it) for the
    result to be exact in float32 (:math:`k + u` has at most 24 significant bits, and scaling by
    :math:`2^{-7}` and subtracting 1 are exact); then :math:`x \in [k/128 - 1, (k+1)/128 - 1)` strictly.
    """
    _check_uint8(images)
    lo, hi = _check_range(value_range)
    if (lo, hi) != CENTERED:
        return (images.astype(np.float32) + u.astype(np.float32)) * np.float32((hi - lo) / 256.0) + np.float32(lo)
    return (images.astype(np.float32) + u.astype(np.float32)) * np.float32(1.0 / 128.0) - np.float32(1.0)


# --------------------------------------------------------------------------------------
# Index stream
# --------------------------------------------------------------------------------------


def _check_seed_step(seed, step):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}.")
    if not isinstance(step, (int, np.integer)) or step < 0:
        raise ValueError(f"step: expected a non-negative int, got {step!r}.")


@functools.lru_cache(maxsize=4)
def _cached_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(_PERM, epoch))))
    perm = rng.permutation(n)
    if n < 2**31:
        perm = perm.astype(np.int32)  # half the memory of the cached epochs
    perm.flags.writeable = False
    return perm


def epoch_permutation(seed: int, epoch: int, n: int, *, shuffle: bool = True) -> np.ndarray:
    """The order of the ``n`` examples in epoch ``epoch``: a permutation (read-only, int32 [n] when n < 2^31).

    Drawn by ``Generator(PCG64(SeedSequence(seed, spawn_key=(0, epoch)))).permutation(n)``;
    ``shuffle=False`` gives ``arange(n)``. Cached (a few epochs), so consecutive steps are cheap.
    """
    _check_seed_step(seed, epoch)
    if shuffle:
        return _cached_permutation(int(seed), int(epoch), int(n))
    return np.arange(n)


def batch_indices(
    n: int,
    step: int,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
) -> np.ndarray:
    """Dataset indices of this host's rows of global batch ``step`` (integer ``[B/P]``).

    Global row ``r`` of step ``s`` is stream position ``p = s*B + r``, i.e. example
    ``perm_{p // n}[p % n]`` (see :func:`epoch_permutation`). Host ``i`` gets rows
    ``[i*B/P, (i+1)*B/P)``.
    """
    _check_seed_step(seed, step)
    B, P, i = int(global_batch_size), int(process_count), int(process_index)
    if B < 1:
        raise ValueError(f"global_batch_size: expected a positive int, got {global_batch_size!r}.")
    if P < 1 or not 0 <= i < P:
        raise ValueError(
            f"process_index/process_count: expected 0 <= index < count, got {process_index}/{process_count}."
        )
    if B % P:
        raise ValueError(f"global_batch_size={B} is not divisible by process_count={P}.")
    if n < 1:
        raise ValueError(f"n: expected a non-empty dataset, got n={n}.")
    per_host = B // P
    start = int(step) * B + i * per_host
    stop = start + per_host
    first, last = start // n, (stop - 1) // n
    if first == last:
        perm = epoch_permutation(seed, first, n, shuffle=shuffle)
        return perm[start - first * n : stop - first * n].copy()
    stream = np.concatenate([epoch_permutation(seed, e, n, shuffle=shuffle) for e in range(first, last + 1)])
    return stream[start - first * n : stop - first * n]


def _philox_raw(seed: int, step: int, tag: int, offset: int, count: int) -> np.ndarray:
    """Raw uint64 values ``offset .. offset+count-1`` of the Philox stream keyed by (seed, tag, step)."""
    key = np.random.SeedSequence(seed, spawn_key=(tag, step)).generate_state(2, np.uint64)
    bitgen = np.random.Philox(key=key)
    bitgen.advance(offset // 4)  # one Philox4x64 counter step = 4 raw outputs
    skip = offset % 4
    return bitgen.random_raw(skip + count)[skip:]


def _philox_u16(seed: int, step: int, tag: int, offset: int, count: int) -> np.ndarray:
    """16-bit values ``offset .. offset+count-1`` of the stream: raw uint64 j holds values 4j..4j+3
    (little-endian 16-bit words, independent of the machine's byte order)."""
    first, last = offset // 4, (offset + count + 3) // 4
    words = _philox_raw(seed, step, tag, first, last - first).astype("<u8").view("<u2")
    skip = offset - 4 * first
    return words[skip : skip + count].astype(np.uint16)


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def batch_at_step(
    dataset: Mapping[str, Any],
    step: int,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    flip: bool = False,
    dequantize: bool = False,
    shuffle: bool = True,
    value_range=CENTERED,
) -> dict[str, np.ndarray]:
    r"""This host's shard of global batch ``step``.

    Returns ``{"images": float32 [B/P, H, W, C] in [-1, 1], "labels": int32 [B/P]}`` (in
    ``value_range``, e.g. ``(0, 1)``, when given: :func:`scale_images` / :func:`dequantize_images`).

    A pure function of ``(dataset, seed, step, process_index, process_count)`` (see the module
    docstring for the index stream). ``"labels"`` is present only when the dataset has labels.
    ``flip``: each row is mirrored left-right with probability 1/2 (keep it off for digits);
    ``dequantize``: :math:`x = 2(k+u)/256 - 1` with :math:`u \sim U[0,1)` in steps of
    :math:`2^{-16}` (as :func:`dequantize_images`; exact in float32), else :math:`x = k/127.5 - 1`.
    Augmentation noise of global row ``r`` comes from position ``r`` of a Philox stream keyed
    by ``(seed, step)``, so it does not depend on the number of hosts. ``shuffle=False`` walks
    the examples in order (evaluation).
    """
    ds = check_dataset(dataset)
    images, labels = ds["images"], ds["labels"]
    n = images.shape[0]
    idx = batch_indices(
        n,
        step,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        shuffle=shuffle,
    )
    per_host = idx.shape[0]
    row0 = int(process_index) * per_host
    x = images[idx]  # uint8 [b, H, W, C]; one numpy gather
    if flip:
        bits = _philox_raw(int(seed), int(step), _FLIP, row0, per_host) >> np.uint64(63)
        mirror = bits.astype(bool)
        x[mirror] = x[mirror, :, ::-1]
    if dequantize:
        d = int(np.prod(x.shape[1:]))
        u16 = _philox_u16(int(seed), int(step), _DEQUANT, row0 * d, per_host * d).reshape(x.shape)
        out = dequantize_images(x, u16.astype(np.float32) * np.float32(2.0**-16), value_range)  # exact: u = j 2^-16
    else:
        out = scale_images(x, value_range)
    batch = {"images": out}
    if labels is not None:
        batch["labels"] = labels[idx]
    return batch
