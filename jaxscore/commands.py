"""Back-ends of the ``jaxscore`` commands that read a run directory: ``sample``, ``likelihood``,
``eval`` and ``fid-stats`` (the CLI parses arguments and calls these; notebooks may too).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore import viz
from jaxscore.config import sampling_options, value_range
from jaxscore.data import images as image_data
from jaxscore.experiment import (class_score_fn, is_conditional, load_data, load_for_inference, load_run,
                                 load_run_config, model_score_fn, student_sampling)
from jaxscore.samplers import sample_in_batches


def run_fitted_grid(workdir: str, sampler: str, steps: int, step: int, options: dict):
    """The run's own fitted grid for ``sampler`` at ``steps`` (``WORKDIR/grids/<sampler>_<steps>.npz``, written by
    ``jaxscore fit-grid``) as ``(ts, note)`` when it fits this call: no ``grid`` option given, fitted on this
    checkpoint ``step`` with these sampler ``options``; else ``(None, note)`` (``note`` says why, or is None when
    there is no such file)."""
    from jaxscore.samplers.fit_grid import load_grid

    path = os.path.join(workdir, "grids", f"{sampler}_{steps}.npz")
    if "grid" in options or not os.path.exists(path):
        return None, None
    ts, meta = load_grid(path, sampler=sampler, steps=steps)
    if meta.get("checkpoint_step") != int(step):
        return None, (f"not using {path}: fitted at checkpoint step {meta.get('checkpoint_step')}, the run is at "
                      f"step {step} (refit with `jaxscore fit-grid`)")
    if json.loads(json.dumps(options, default=str)) != meta.get("options", {}):
        return None, f"not using {path}: fitted with sampler options {meta.get('options')}, sampling with {options}"
    return jnp.asarray(ts), f"using the fitted grid {path} (pass a grid, or --grid default, to sample without it)"


def _use_run_fitted_grid(workdir: str, sampler: str, steps: int, step: int, options: dict) -> bool:
    """:func:`run_fitted_grid` applied: its note printed, its grid put in ``options``; whether a grid was."""
    ts, note = run_fitted_grid(workdir, sampler, steps, step, options)
    if note:
        print(note)
    if ts is not None:
        options["grid"] = ts
    return ts is not None


def sample_from_workdir(workdir: str, *, sampler: str, steps: int, num: int, out: str,
                        batch_size: int = 1024, seed: int = 0, progress: bool = True, label: int | None = None,
                        guidance_scale: float | None = None, classifier: str | None = None,
                        fitted_grid: bool = True, **options) -> str:
    """Sample ``num`` examples with the EMA parameters; write ``out`` (npz, key ``samples``) and a PNG beside it.

    ``fitted_grid``: sample on the run's own fitted grid for this sampler and step count when there is one
    (:func:`run_fitted_grid`: ``jaxscore fit-grid`` wrote it for this checkpoint and these options); a line says
    so. Measured on nine mixtures, a fitted grid (``js.fit_grid``'s default objective) was better than the
    sampler's default grid in 36 of 36 sampler x NFE x mixture cases (the least by 0.0002, within the noise;
    ``experiments/benchmarks/sampler_defaults_check.py --fit``).

    ``classifier``: the workdir of a noise-conditional classifier (``jaxscore train-classifier``) for classifier
    guidance of an unconditional model, :math:`s + \\gamma\\nabla_x\\log p_t(y\\mid x)` with ``label`` (required)
    and ``guidance_scale`` (default 1); see :func:`classifier_guided_score`.

    ``options`` go to the sampler (e.g. ``snr=0.16`` for ``pc``, ``eta=1.0`` for ``ddim``), over the run's
    ``sampling.options`` when ``sampler`` is the run's ``sampling.sampler``. Samples are in the run's
    ``data.value_range`` (saved as ``value_range`` in the npz; the grid PNG reads them in it).
    Class-conditional models (``model.num_classes = K``): sample ``i`` gets class ``label``, or
    ``i % K`` when ``label`` is None (the batch size is then rounded down to a multiple of K, so the
    pattern holds across batches; the npz also holds ``labels``); ``guidance_scale`` (default the
    config's ``sampling.guidance_scale``) is the classifier-free scale.
    """
    config, model, params, sde, shape, step = load_run(workdir)
    options = {**sampling_options(config, sampler), **options}  # the run's options for its sampler, then these
    if fitted_grid:
        _use_run_fitted_grid(workdir, sampler, steps, step, options)
    batch = min(batch_size, num)
    extra = {"value_range": np.asarray(value_range(config), np.float32)}
    if classifier is not None:
        score_fn = classifier_guided_score(config, model, params, sde, shape, classifier, label, guidance_scale)
        extra["labels"] = np.full(num, int(label), np.int32)
    elif is_conditional(config):
        k = int(config.model.num_classes)
        if label is not None and not 0 <= int(label) < k:
            raise ValueError(f"label: expected a class in [0, {k}), got {label}.")
        if label is None and batch > k:
            batch -= batch % k
        labels = jnp.full((batch,), int(label), jnp.int32) if label is not None else jnp.arange(batch, dtype=jnp.int32) % k
        scale = config.sampling.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale
        score_fn = class_score_fn(config, model, params, sde, labels, scale)
        extra["labels"] = np.full(num, label, np.int32) if label is not None else (np.arange(num) % k).astype(np.int32)
    else:
        if label is not None or guidance_scale is not None:
            raise ValueError(f"label / guidance_scale: the model in {workdir!r} is unconditional (config.model.num_classes unset).")
        score_fn = model_score_fn(config, model, params, sde)
    if is_conditional(config):
        options["devices"] = 1  # the labels are per row of a whole batch
    samples = np.asarray(sample_in_batches(jax.random.key(seed), score_fn, sde, (batch, *shape), num, sampler, steps,
                                           progress=progress, **options))
    out = out if out.endswith(".npz") else out + ".npz"  # np.savez would add it; say the path it writes
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez(out, samples=samples, step=step, **extra)
    stem = os.path.splitext(out)[0]  # pictures get names of their own: never the training report's samples.png
    if len(shape) == 3:
        viz.save_image_grid(samples[:256], stem + "_grid.png", value_range=value_range(config))
    else:
        reference = load_data(config)["test"]["x"]
        viz.save_scatter(samples, reference, stem + "_scatter.png", title=f"{sampler}, {steps} steps")
    return out


def classifier_guided_score(config, model, params, sde, shape, classifier: str, label, guidance_scale):
    """The EMA score of an unconditional run guided by the classifier run in ``classifier`` towards ``label``:
    :func:`jaxscore.guidance.classifier_guidance` with the classifier's log-softmax at ``label``. Refused (one-line
    ``ValueError``): no label or one outside the classifier's classes, a class-conditional model, a classifier trained
    on another SDE or image shape."""
    from jaxscore.guidance import classifier_guidance
    from jaxscore.models.classifier import classifier_log_likelihood, load_classifier

    if label is None:
        raise ValueError("--classifier: expected --label (the class to guide towards), got none.")
    if is_conditional(config):
        raise ValueError("--classifier: the model is class-conditional; guide it with --label/--guidance-scale "
                         "(classifier-free) instead of a classifier.")
    if value_range(config) != (-1.0, 1.0):
        raise ValueError(f"--classifier: classifiers are trained on images in [-1, 1] (jaxscore.models.classifier); "
                         f"expected a model with data.value_range (-1, 1), got {value_range(config)}.")
    clf_config, clf_model, clf_params, clf_sde = load_classifier(classifier)
    k = int(clf_config.classifier.num_classes)
    if not 0 <= int(label) < k:
        raise ValueError(f"--label: expected a class in [0, {k}) of the classifier, got {label}.")
    grid = jnp.linspace(0.0, 1.0, 33) * sde.T
    same = type(clf_sde) is type(sde) and clf_sde.T == sde.T and all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=1e-6) for a, b in zip(clf_sde.marginal_coefs(grid), sde.marginal_coefs(grid)))
    if not same:  # the same marginals (alpha_t, sigma_t) on a grid of t: the classifier saw this SDE's x_t
        raise ValueError(f"--classifier: the classifier was trained on SDE {clf_sde}, the model on {sde}; train it "
                         "with the model's SDE.")
    clf_shape = tuple(load_data(clf_config)["shape"])
    if clf_shape != tuple(shape):
        raise ValueError(f"--classifier: expected a classifier of images {tuple(shape)} (the model's), got {clf_shape}.")
    scale = 1.0 if guidance_scale is None else float(guidance_scale)
    log_lik = classifier_log_likelihood(clf_model.apply, clf_params, int(label))
    return classifier_guidance(model_score_fn(config, model, params, sde), log_lik, scale=scale)


def likelihood_from_workdir(workdir: str, *, data: str | None = None, num: int = 256, divergence: str | None = None,
                            batch_size: int = 128, seed: int = 0, progress: bool = True, dequant_draws: int = 1,
                            t_min: float | None = None, solver: str | None = None, rtol: float = 1e-5,
                            atol: float = 1e-5, **likelihood_kwargs) -> dict:
    """Mean negative log-likelihood (nats per example) and, for images, dequantised bits/dim, each
    with its standard error of the mean over examples.

    ``data``: ``"train"``/``"test"`` (the run's dataset) or an ``.npy``/``.npz`` file. Batch ``j``
    (rows ``[j*batch_size, ...)``) uses key ``fold_in(key(seed), j*batch_size)``. A tqdm bar
    over batches when ``progress``.

    Images go through :func:`jaxscore.likelihood.bits_per_dim`, dequantised into the run's
    ``data.value_range`` (its ``data_range``: +7 bits on [-1, 1], +8 on [0, 1]), with score_sde's settings by default
    (``t_min`` 1e-5, Hutchinson, ``dopri5``, ``rtol = atol = 1e-5``); ``dequant_draws = K`` averages
    each image over K dequantisation draws (K x ``batch_size`` rows per solve), and the standard
    errors are over images of those per-image means. Toy (continuous) data go through
    :func:`jaxscore.likelihood.log_likelihood`: exact divergence, ``sde.t_min``, ``tsit5`` by default;
    ``dequant_draws`` must be 1. ``likelihood_kwargs`` (``num_probes``, ``steps``...) go to the
    likelihood function. The result also records the settings used."""
    from jaxscore.data import TOY_DATASETS
    from jaxscore.experiment import build_sde
    from jaxscore.likelihood import (LIKELIHOOD_T_MIN, bits_per_dim, check_likelihood_options, log_likelihood,
                                     mean_and_standard_error)

    if int(num) < 1:
        raise ValueError(f"num: expected an integer >= 1, got {num}.")
    if int(dequant_draws) < 1:
        raise ValueError(f"dequant_draws: expected an integer >= 1, got {dequant_draws}.")
    # settings first (from the run's config.json): a bad one is refused before the model is restored
    run_config = load_run_config(workdir)
    image = run_config.data.name not in TOY_DATASETS
    if not image and int(dequant_draws) != 1:
        raise ValueError(f"--dequant-draws: the data of {workdir!r} are continuous (toy), not pixels to dequantise; "
                         f"expected 1, got {dequant_draws}.")
    divergence = divergence or ("hutchinson" if image else "exact")
    solver = solver or ("dopri5" if image else "tsit5")
    sde = build_sde(run_config.sde)
    t_min = (LIKELIHOOD_T_MIN if image else float(sde.t_min)) if t_min is None else float(t_min)
    settings = {"divergence": divergence, "solver": solver, "rtol": rtol, "atol": atol, "t_min": t_min,
                **likelihood_kwargs}
    check_likelihood_options(sde, **{k: v for k, v in settings.items() if k not in ("max_steps", "chunk_size", "adjoint")})
    config, score_fn, sde, shape, step = load_for_inference(workdir)
    dataset = load_data(config)
    split = data or "test"
    if split in ("train", "test"):
        ds = dataset[split]
    else:
        _check_data_file(split)
        ds = image_data.load_array_file(split) if dataset["image"] else {"x": np.load(split, allow_pickle=False)}
    key = jax.random.key(seed)
    nll, bpd = [], []
    arr = ds["images"] if dataset["image"] else ds["x"]
    arr = arr[:num]
    starts = range(0, len(arr), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="likelihood", unit="batch", dynamic_ncols=True)
    for i in starts:
        chunk = arr[i:i + batch_size]
        k = jax.random.fold_in(key, i)
        if image:
            b, info = bits_per_dim(k, score_fn, sde, chunk, dequant_draws=int(dequant_draws), return_info=True,
                                   data_range=value_range(run_config), **settings)
            bpd.append(np.asarray(b))
            nll.append(-np.asarray(info["log_likelihood"]).reshape(int(dequant_draws), len(chunk)).mean(axis=0))
        else:
            nll.append(-np.asarray(log_likelihood(k, score_fn, sde, jnp.asarray(chunk), **settings)))
    nll_mean, nll_sem = mean_and_standard_error(np.concatenate(nll))
    result = {"step": step, "num": int(len(arr)), "nll_nats": nll_mean, "nll_nats_sem": nll_sem}
    if bpd:
        result["bits_per_dim"], result["bits_per_dim_sem"] = mean_and_standard_error(np.concatenate(bpd))
        result["dequant_draws"] = int(dequant_draws)
        result["value_range"] = list(value_range(run_config))
    if dataset["mixture"] is not None and split in ("train", "test"):  # toy mixtures: the exact figure beside
        result["exact_nll_nats"] = float(-np.mean(np.asarray(dataset["mixture"].log_prob(jnp.asarray(arr)))))
    result.update(settings)
    return result


def _check_data_file(path: str) -> None:
    """``--data``: 'train', 'test' or an existing .npy / .npz file."""
    if not (path.endswith((".npy", ".npz")) and os.path.isfile(path)):
        raise ValueError(f"--data: expected 'train', 'test' or an existing .npy/.npz file, got {path!r}.")


def fit_grid_for_workdir(workdir: str, *, sampler: str, steps: int, num: int = 256, iters: int = 100,
                         reference_steps: int | None = None, seed: int = 0, out: str | None = None,
                         **options) -> tuple[str, dict]:
    """Fit the ``steps``-step time grid of ``sampler`` to the run's EMA model
    (:func:`jaxscore.samplers.fit_grid.fit_grid` on ``num`` prior draws from ``key(seed)``) and save it
    (default ``WORKDIR/grids/<sampler>_<steps>.npz``) for ``jaxscore sample --grid``. Returns
    ``(path, info)``."""
    from jaxscore.samplers.fit_grid import fit_grid, save_grid

    config, score_fn, sde, shape, step = load_for_inference(workdir)
    options = {**sampling_options(config, sampler), **options}  # as sample_from_workdir will sample
    ts, info = fit_grid(jax.random.key(seed), score_fn, sde, (int(num), *shape), sampler=sampler, steps=steps,
                        iters=iters, reference_steps=reference_steps, return_info=True, **options)
    out = out or os.path.join(workdir, "grids", f"{sampler}_{steps}.npz")
    meta = {"sampler": sampler, "options": options, "checkpoint_step": int(step), "num": int(num), "seed": int(seed),
            **{k: info[k] for k in ("loss_init", "loss", "iters", "reference_steps", "score_evals", "score_vjps")}}
    return save_grid(out, ts, meta), info


# --- sample quality -------------------------------------------------------------------------

def _reference_stats(config, extractor, *, ref: str | None, data: str | None, batch_size: int, progress: bool):
    """Reference statistics: a ``.npz`` file (``mu``, ``sigma``, optional ``features``) or the
    images of a split of the run's dataset / an image file (``eval.fid_ref`` by default)."""
    from jaxscore.evaluation.stats import load_stats
    from jaxscore.evaluation.streaming import stats_of_images

    if ref is not None:
        return load_stats(ref)
    split = data or str(config.eval.fid_ref)
    if split not in ("train", "test"):
        _check_data_file(split)
    images = load_data(config)[split]["images"] if split in ("train", "test") else image_data.load_array_file(split)["images"]
    return stats_of_images(images, extractor, batch_size=batch_size, progress=progress, desc=f"reference features ({split})")


def _conditional_sampling(config, model, params, sde, scale: float, batch: int):
    """``(score_fn, batch, options)`` drawing class ``i % K`` for example ``i`` with CFG ``scale``."""
    k = int(config.model.num_classes)
    batch = max(batch - batch % k, k)
    labels = jnp.arange(batch, dtype=jnp.int32) % k
    return class_score_fn(config, model, params, sde, labels, scale), batch, {"devices": 1}


def evaluate_workdir(workdir: str, *, num: int | None = None, metrics=("fid", "kid", "is", "pr"), ref: str | None = None,
                     data: str | None = None, features: str | None = None, inception_weights: str | None = None,
                     sampler: str | None = None, steps: int | None = None, options: dict | None = None,
                     batch_size: int = 500, seed: int = 0, bpd_num: int = 256, guidance_scales=None,
                     out: str | None = None, progress: bool = True, fitted_grid: bool = True) -> dict:
    """Sample quality of the run in ``workdir`` (EMA parameters of the latest checkpoint).

    Draws ``num`` samples (default ``eval.fid_num``) with ``sampler`` / ``steps`` (default the run's
    ``sampling`` section, with its ``sampling.options`` under ``options`` when the sampler is the run's),
    quantised on the 8-bit grid of the run's ``data.value_range``, streams them through the ``features`` network (default
    ``eval.features``) and compares with ``ref`` (a stats ``.npz``) or the images of ``data``
    (``train`` / ``test`` / an image file; default ``eval.fid_ref``). ``metrics`` ⊆ {fid, kid, is,
    pr, bpd} (bpd: bits/dim of ``bpd_num`` test images, Hutchinson divergence). Class-conditional
    runs draw class ``i % K`` for example ``i`` and add ``class_accuracy``; with ``guidance_scales``
    the FID and per-class accuracy at each scale go to ``guidance_accuracy.png``. ``fitted_grid``: as
    :func:`sample_from_workdir` (the run's own fitted grid when there is one for this sampler, steps, checkpoint
    and options; ``result["grid"]`` says which grid was used).

    Writes ``out`` (default ``WORKDIR/eval.json``) and appends one row to ``metrics.jsonl`` (keys
    ``evaluate/*`` at the checkpoint's step); returns the result dict."""
    from jaxscore.evaluation.extractors import build_extractor
    from jaxscore.evaluation.streaming import computable, per_class_accuracy, sample_quality, stats_of_samples
    from jaxscore.train import maybe_initialize_distributed

    maybe_initialize_distributed(load_run_config(workdir))  # before anything touches devices
    config, model, params, sde, shape, step = load_run(workdir)
    metrics = tuple(metrics)
    quality = tuple(m for m in metrics if m != "bpd")
    num = int(num or config.eval.fid_num)
    sampler, steps, options = student_sampling(workdir, sampler, steps, options, config=config)  # a student's own
    sampler, steps = sampler or config.sampling.sampler, steps or config.sampling.steps
    extractor = build_extractor(features or str(config.eval.features), inception_weights=inception_weights,
                                mnist_path=config.data.get("path"))
    reference = _reference_stats(config, extractor, ref=ref, data=data, batch_size=batch_size, progress=progress)
    sampler_opts = {**sampling_options(config, sampler), **(options or {})}
    given = "grid" in sampler_opts
    fitted = fitted_grid and _use_run_fitted_grid(workdir, sampler, steps, step, sampler_opts)

    def measure(scale):
        score_fn, batch, opts = model_score_fn(config, model, params, sde), min(batch_size, num), {}
        if is_conditional(config):
            score_fn, batch, opts = _conditional_sampling(config, model, params, sde, scale, batch)
        opts.update(sampler_opts)
        stats = stats_of_samples(jax.random.key(seed), score_fn, sde, shape, num, extractor, sampler=sampler,
                                 steps=steps, batch_size=batch, progress=progress, value_range=value_range(config),
                                 **opts)
        res = sample_quality(stats, reference, computable(quality, stats))
        if is_conditional(config) and stats.kept_logits is not None:
            res["per_class_accuracy"] = per_class_accuracy(stats.kept_logits, int(config.model.num_classes)).tolist()
            res["class_accuracy"] = float(np.mean(res["per_class_accuracy"]))
        return res

    result = {"step": int(step), "num": num, "sampler": sampler, "steps": int(steps),
              "grid": "fitted" if fitted else "given" if given else "default",
              "features": features or str(config.eval.features)}
    if quality:
        result.update(measure(config.sampling.get("guidance_scale", 1.0)))
    if "bpd" in metrics:
        lik = likelihood_from_workdir(workdir, data="test", num=bpd_num, divergence="hutchinson", progress=progress)
        result["bits_per_dim"] = lik.get("bits_per_dim", lik["nll_nats"])
    if guidance_scales:
        if not is_conditional(config):
            raise ValueError(f"guidance_scales: the model in {workdir!r} is unconditional (config.model.num_classes unset).")
        result["guidance"] = {str(float(s)): measure(float(s)) for s in guidance_scales}
    if jax.process_index() == 0:
        _write_eval(workdir, result, out)
    return result


def _write_eval(workdir: str, result: dict, out: str | None) -> None:
    out = out or os.path.join(workdir, "eval.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    scalars = {f"evaluate/{k}": v for k, v in result.items() if isinstance(v, (int, float)) and k != "step"}
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": result["step"], **scalars}) + "\n")
    if "guidance" in result:
        viz.save_guidance_curves(result["guidance"], os.path.join(workdir, "guidance_accuracy.png"))


def fid_stats(out: str, *, features: str, config=None, split: str = "train", data: str | None = None,
              inception_weights: str | None = None, num: int | None = None, batch_size: int = 500,
              keep: int = 10_000, progress: bool = True) -> dict:
    """Reference statistics of a dataset under ``features``: the images of ``config``'s dataset
    (``split``) or of the image file ``data`` (first ``num``). Writes ``out`` (.npz: ``mu``,
    ``sigma`` as pytorch-fid / clean-fid, plus ``count`` and the first ``keep`` feature rows
    ``features`` for KID and precision/recall); returns ``{"count", "feature_dim", "out"}``."""
    from jaxscore.evaluation.extractors import build_extractor
    from jaxscore.evaluation.stats import save_stats
    from jaxscore.evaluation.streaming import stats_of_images

    if (config is None) == (data is None):
        raise ValueError("fid_stats: expected exactly one of config (its dataset) or data (an image file).")
    if config is not None:
        images = load_data(config)[split]["images"] if split != "all" else np.concatenate(
            [load_data(config)[s]["images"] for s in ("train", "test")])
    else:
        images = image_data.load_array_file(data)["images"]
    images = images[: num or len(images)]
    extractor = build_extractor(features, inception_weights=inception_weights,
                                mnist_path=None if config is None else config.data.get("path"))
    stats = stats_of_images(images, extractor, batch_size=batch_size, keep=keep, progress=progress)
    if jax.process_index() == 0:
        save_stats(out, stats, features=stats.kept_features)
    return {"count": stats.count, "feature_dim": stats.feature_dim, "out": out}


def _clean_images(path: str, shape, value_range=(-1.0, 1.0)) -> np.ndarray:
    """``--input``: an .npz with ``images`` (uint8 in [0, 255] or float in ``value_range``, the run's) of the
    run's image shape -> float32 [N, H, W, C] in ``value_range``."""
    lo, hi = (float(v) for v in value_range)
    if not (path.endswith(".npz") and os.path.isfile(path)):
        raise ValueError(f"--input: expected an existing .npz file with key 'images', got {path!r}.")
    with np.load(path, allow_pickle=False) as f:
        if "images" not in f:
            raise ValueError(f"--input {path!r}: expected a key 'images', got keys {sorted(f.files)}.")
        images = f["images"]
    if images.ndim == 3:
        images = images[..., None]
    if tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(f"--input {path!r}: expected images of the run's shape [N, {', '.join(map(str, shape))}], "
                         f"got {list(images.shape)}.")
    if images.dtype == np.uint8:
        from jaxscore.data.pipeline import scale_images

        return scale_images(images, (lo, hi))
    images = images.astype(np.float32)
    tol = 1e-6 * (hi - lo)
    if not np.all(np.isfinite(images)) or images.min() < lo - tol or images.max() > hi + tol:
        raise ValueError(f"--input {path!r}: float images must be finite and in the run's data.value_range "
                         f"[{lo:g}, {hi:g}], got range "
                         f"[{np.nanmin(images):.3g}, {np.nanmax(images):.3g}].")
    return images


def restore_from_workdir(workdir: str, *, task: str, input: str, method: str, out: str, noise_std: float = 0.05,
                         steps: int | None = None, particles: int = 16, seed: int = 0, factor: int = 2,
                         blur_std: float = 1.0) -> dict:
    """Degrade the clean images in ``input`` by ``task`` (``y = A x + N(0, noise_std^2)``) and restore them with
    ``method`` under the run's EMA model (:mod:`jaxscore.inverse.tasks`). Writes ``out`` (npz: ``restored``,
    ``observed``, ``clean``) and ``<out>_grid.png`` (rows: clean, least-squares ``A^+ y``, restored); returns the
    mean PSNR (dB) of the restorations and of ``A^+ y``. Images and ``noise_std`` are in the run's
    ``data.value_range``; PSNR is over that range's width (the same figure in either range)."""
    from jaxscore.inverse.tasks import psnr, restore, task_operator

    config, score_fn, sde, shape, step = load_for_inference(workdir)
    if len(shape) != 3:
        raise ValueError(f"restore: expected an image run, got data of shape {shape} in {workdir!r}.")
    lo, hi = value_range(config)

    def centred(x):  # the run's range -> [-1, 1], where jaxscore.inverse.tasks.psnr measures
        return 2.0 * (jnp.asarray(x, jnp.float32) - lo) / (hi - lo) - 1.0

    clean = jnp.asarray(_clean_images(input, shape, (lo, hi)))
    key = jax.random.key(seed)
    op = task_operator(task, shape, key=jax.random.fold_in(key, 0), factor=factor, blur_std=blur_std)
    y = op(clean) + noise_std * jax.random.normal(jax.random.fold_in(key, 1), (clean.shape[0], *op.out_shape))
    restored = restore(jax.random.fold_in(key, 2), score_fn, sde, op, y, method=method, noise_std=noise_std,
                       steps=steps, particles=particles)
    restored = np.asarray(restored)
    if not np.all(np.isfinite(restored)):
        raise FloatingPointError(f"restore: {method} gave non-finite values for "
                                 f"{int(np.sum(~np.isfinite(restored).reshape(len(restored), -1).any(1)))} images.")
    least_squares = np.asarray(op.pinv(y))  # every task operator is an SVDOperator
    out = out if out.endswith(".npz") else out + ".npz"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez(out, restored=restored, observed=np.asarray(y), clean=np.asarray(clean), step=step)
    n = min(len(clean), 16)
    rows = np.concatenate([np.asarray(clean)[:n], least_squares[:n], restored[:n]])
    viz.save_image_grid(rows, os.path.splitext(out)[0] + "_grid.png", nrow=n, value_range=(lo, hi))
    return {"out": out, "psnr": float(jnp.mean(psnr(centred(restored), centred(clean)))),
            "psnr_least_squares": float(jnp.mean(psnr(centred(least_squares), centred(clean)))), "num": int(len(clean))}
