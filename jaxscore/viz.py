"""Pictures: sample grids, 2-D scatters, score fields, loss curves (matplotlib figures, Agg canvas).

Every function takes arrays (numpy or jax) and a path, writes one PNG and returns the path.
Nothing here is traced; call it outside ``jit``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Sequence

import numpy as np


def _subplots(*args, figsize=None, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots`` gives them, without pyplot: a ``matplotlib.figure.Figure`` written
    by ``savefig`` (the Agg canvas), so writing a picture never switches the caller's backend (a notebook's inline
    figures keep working) and leaves no global figure to close."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _ensure_dir(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def to_uint8(images, value_range=(-1.0, 1.0)) -> np.ndarray:
    r"""Float images in ``value_range`` ``(lo, hi)`` -> uint8 pixels :math:`k = \mathrm{round}(255 (x - lo)/(hi - lo))`,
    clipped to 0..255 (:func:`jaxscore.data.pipeline.unscale_images`, the inverse of the batches' scaling, so
    ``to_uint8(scale_images(k, r), r) == k`` for either range). NaN pixels become 0."""
    from jaxscore.data.pipeline import unscale_images

    lo, hi = (float(v) for v in value_range)
    images = np.asarray(images, np.float32)
    return unscale_images(np.clip(np.where(np.isnan(images), lo, images), lo, hi), value_range=value_range)


def image_grid(images, nrow: int | None = None, pad: int = 1, value_range=(-1.0, 1.0)) -> np.ndarray:
    """Tile images [N, H, W, C] (values in ``value_range``, default [-1, 1]; :func:`to_uint8`) into one
    uint8 array [rows*(H+pad), cols*(W+pad), C]."""
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images: expected [N, H, W, C], got shape {images.shape}.")
    n, h, w, c = images.shape
    cols = nrow or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    pixels = to_uint8(images, value_range)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = pixels[i]
    return grid


def save_image_grid(images, path: str, nrow: int | None = None, scale: int = 4, value_range=(-1.0, 1.0)) -> str:
    """Write a grid of images [N, H, W, C] in ``value_range`` (default [-1, 1]; values outside are clipped)
    as a PNG, each pixel drawn ``scale`` x ``scale``."""
    from matplotlib.image import imsave

    grid = image_grid(images, nrow, value_range=value_range)
    grid = np.repeat(np.repeat(grid, scale, 0), scale, 1)
    _ensure_dir(path)
    if grid.shape[-1] == 1:
        imsave(path, grid[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        imsave(path, grid)
    return path


def points_outside(points, lim: float) -> int:
    """Rows of ``points [N, 2]`` outside the square frame ``[-lim, lim]²`` (non-finite rows included)."""
    points = np.asarray(points, np.float64)
    return int(np.sum(~np.all(np.abs(points) <= lim, axis=-1)))


def save_scatter(samples, reference, path: str, *, title: str = "", extent: float | None = None) -> str:
    """Side-by-side scatter of reference data and model samples (2-D), framed on the data; each
    panel's title says how many of its points fall outside the frame (or are not finite)."""
    samples, reference = np.asarray(samples), np.asarray(reference)
    lim = extent or float(np.percentile(np.abs(reference), 99.5) * 1.3)
    fig, axes = _subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, pts, name in ((axes[0], reference, "data"), (axes[1], samples, "samples")):
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        outside = points_outside(pts, lim)
        ax.set_title(f"{name} ({len(pts)})" + (f": {outside} outside the frame" if outside else ""),
                     color="C3" if outside > 0.01 * len(pts) else "black")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _ensure_dir(path)
    fig.savefig(path, dpi=110)
    return path


def save_score_field(
    score_fns: Sequence[tuple[str, Callable]], path: str, *, t: float, extent: float = 6.0, points: int = 21
) -> str:
    """Quiver plots of 2-D score fields at time ``t``: ``score_fns`` is a list of (title, score_fn(x, t))."""
    g = np.linspace(-extent, extent, points, dtype=np.float32)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx.ravel(), yy.ravel()], -1)
    tt = np.full((pts.shape[0],), t, np.float32)
    fig, axes = _subplots(1, len(score_fns), figsize=(4.5 * len(score_fns), 4.5), squeeze=False)
    for ax, (name, fn) in zip(axes[0], score_fns):
        v = np.asarray(fn(pts, tt))
        norm = np.linalg.norm(v, axis=-1, keepdims=True) + 1e-8
        ax.quiver(pts[:, 0], pts[:, 1], *(v / norm).T, np.log1p(norm[:, 0]), cmap="viridis", scale=35)
        ax.set_title(f"{name}, t = {t:g}")
        ax.set_aspect("equal")
    fig.tight_layout()
    _ensure_dir(path)
    fig.savefig(path, dpi=110)
    return path


def read_metrics(path: str) -> list[dict]:
    """Read a metrics JSONL file (one JSON object per line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_metric_curve(metrics_path: str, path: str, keys: Sequence[str], *, ylabel: str, log: bool = False,
                      labels: Sequence[str] | None = None) -> str | None:
    """Plot ``keys`` of a metrics JSONL file against ``step`` with markers (a single evaluation
    shows as a point), legend ``labels`` (default the keys); returns ``None`` (no file) when no
    row has any of the keys."""
    rows = read_metrics(metrics_path) if os.path.exists(metrics_path) else []
    series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float)) and np.isfinite(r[k])]
              for k in keys}
    names = dict(zip(keys, labels or keys))
    series = {names[k]: pts for k, pts in series.items() if pts}
    if not series:
        return None
    fig, ax = _subplots(figsize=(6, 4))
    for key, pts in series.items():
        steps, vals = zip(*pts)
        ax.plot(steps, vals, marker="o" if len(pts) < 30 else None, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    if log and all(v > 0 for pts in series.values() for _, v in pts):
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    _ensure_dir(path)
    fig.savefig(path, dpi=110)
    return path


def save_training_curves(metrics_path: str, workdir: str) -> list[str]:
    """``loss.png`` (training and held-out loss) and, when the run measured sample quality,
    ``fid.png`` (FID / KID over training) in ``workdir``; returns the paths written."""
    written = [save_metric_curve(metrics_path, os.path.join(workdir, "loss.png"), ("loss", "eval/loss"),
                                 ylabel="loss", log=True),
               save_metric_curve(metrics_path, os.path.join(workdir, "fid.png"),
                                 ("sample_quality/fid", "sample_quality/fid_floor"), ylabel="FID",
                                 labels=("EMA samples", "floor: as many real images of the other split"))]
    return [p for p in written if p]


def save_guidance_curves(by_scale: dict, path: str) -> str:
    """Class-conditional sampling against the guidance scale: per-class accuracy of the samples
    under the evaluation classifier (thin lines; mean bold) and, when measured, FID.
    ``by_scale``: ``{scale (str or float): {"per_class_accuracy": [K], "fid"?: float}}``."""
    scales = sorted(by_scale, key=float)
    xs = [float(s) for s in scales]
    acc = np.array([by_scale[s]["per_class_accuracy"] for s in scales])  # [S, K]
    has_fid = all("fid" in by_scale[s] for s in scales)
    fig, axes = _subplots(1, 2 if has_fid else 1, figsize=(10 if has_fid else 5.5, 4), squeeze=False)
    ax = axes[0, 0]
    for k in range(acc.shape[1]):
        ax.plot(xs, acc[:, k], color="0.6", lw=0.8, marker=".", label="per class" if k == 0 else None)
    ax.plot(xs, acc.mean(1), color="C0", lw=2.5, marker="o", label="mean")
    ax.set(xlabel="guidance scale", ylabel="classified as its label", ylim=(-0.02, 1.02))
    ax.legend(loc="lower right")
    if has_fid:
        axes[0, 1].plot(xs, [by_scale[s]["fid"] for s in scales], color="C1", marker="o")
        axes[0, 1].set(xlabel="guidance scale", ylabel="FID (evaluation features)")
    fig.tight_layout()
    _ensure_dir(path)
    fig.savefig(path, dpi=110)
    return path
