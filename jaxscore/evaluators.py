"""Periodic evaluators of a training run: each a small object built from the run, called by the
train loop as ``evaluator(state, step) -> dict of scalars | None`` (big_vision's ``evaluators/``
pattern). :func:`build_evaluators` reads ``config.eval`` and returns the ones a config asks for.

Every evaluator runs on every process with that process's copy of the (replicated) state:
held-out loss, bits/dim and FID are computed on this process's share of the examples and
combined over processes; files are written by process 0 only.

Images live in the run's ``config.data.value_range`` (``jaxscore.config.value_range``: [-1, 1] or
[0, 1]): pictures, bits/dim and the features of FID read it from there. Every sampling passes the
run's ``config.sampling.options`` to its sampler (``jaxscore.config.sampling_options``).

Random streams: each evaluator draws from ``key(config.seed + offset)`` with its own offset in
:data:`KEY_OFFSETS`, so evaluation never reuses the training stream ``key(config.seed)`` nor
another evaluator's keys, and adding an evaluator changes no other figure.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore import viz
from jaxscore.config import sampling_options, value_range
from jaxscore.metrics import mixture_metrics, relative_score_error
from jaxscore.samplers import sample_in_batches

KEY_OFFSETS = {"heldout": 10_000, "report": 20_000, "bits_per_dim": 30_000, "sample_quality": 40_000}
"""``evaluator name -> offset`` added to ``config.seed`` for that evaluator's PRNG stream."""


@dataclasses.dataclass(frozen=True)
class Run:
    """What evaluators need of a run: its config, workdir, data (see ``experiment.load_data``),
    SDE, the jitted ``loss_fn(params, key, batch)``, the held-out ``batch_fn`` and
    ``score_of(params, labels=None) -> score_fn`` (labels for class-conditional models)."""

    config: Any
    workdir: str
    data: dict
    sde: Any
    loss_fn: Callable
    test_batch_fn: Callable
    score_with_params: Callable  # (params, x, t) -> score; one function object (see Partial below)
    class_score_with_params: Callable | None  # (params, labels, x, t) -> guided score, or None


def eval_key(config, name: str) -> jax.Array:
    """The PRNG key of evaluator ``name`` (see :data:`KEY_OFFSETS`)."""
    return jax.random.key(KEY_OFFSETS[name] + int(config.seed))


def mean_over_processes(local_sum: float, local_count: int) -> float:
    """``sum of local_sum / sum of local_count`` over all processes (this process alone if one)."""
    total = np.array([local_sum, local_count], np.float64)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        total = np.asarray(multihost_utils.process_allgather(total.astype(np.float32)), np.float64).sum(0)
    return float(total[0] / total[1])


def ema_score(run: Run, params):
    """The EMA score as a ``jax.tree_util.Partial`` over one function object: samplers and the
    likelihood (``eqx.filter_jit``) then trace the parameters and compile once per run."""
    return jax.tree_util.Partial(run.score_with_params, params)


class HeldoutLoss:
    """Mean training loss of the EMA parameters on ``eval.heldout_batches`` held-out batches."""

    name = "eval"

    def __init__(self, run: Run):
        self.run = run

    def __call__(self, state, step):
        run, n = self.run, int(self.run.config.eval.heldout_batches)
        key = eval_key(run.config, "heldout")
        vals = [run.loss_fn(state.ema_params, jax.random.fold_in(key, i), run.test_batch_fn(i)) for i in range(n)]
        # every process scored its own rows of the held-out batches (equal shares)
        total = sum(float(v[0] if isinstance(v, tuple) else v) for v in vals)
        return {"loss": mean_over_processes(total, len(vals))}


class BitsPerDim:
    """Dequantised bits/dim of the first ``eval.bpd_num`` test images (probability-flow ODE), the pixels
    dequantised into the run's ``data.value_range`` (:func:`jaxscore.likelihood.bits_per_dim`'s ``data_range``)."""

    name = "eval"

    def __init__(self, run: Run):
        self.run = run

    def __call__(self, state, step):
        from jaxscore.likelihood import bits_per_dim

        cfg = self.run.config.eval
        p, count = jax.process_index(), jax.process_count()
        images = self.run.data["test"]["images"][: int(cfg.bpd_num)][p::count]  # this process's share
        tol = float(cfg.bpd_rtol)
        vals = np.asarray(bits_per_dim(eval_key(self.run.config, "bits_per_dim"), ema_score(self.run, state.ema_params),
                                       self.run.sde, images, divergence=str(cfg.bpd_divergence), rtol=tol, atol=tol,
                                       data_range=value_range(self.run.config)))
        return {"bits_per_dim": mean_over_processes(float(vals.sum()), len(vals))}


@eqx.filter_jit
def _call_score(score_fn, x, t):
    """``score_fn(x, t)`` compiled; a ``jax.tree_util.Partial`` score's parameters are traced."""
    return score_fn(x, t)


class Report:
    """Pictures of the EMA model (process 0): toy data: ``samples.png`` and ``score_field.png``
    with mode metrics and score errors where the exact score is known; images: a sample grid
    ``samples.png`` / ``samples_<step>.png`` (class-conditional: sample i has class i % K), pixels read in the
    run's ``data.value_range``. Samples are drawn with ``sampling.sampler``, ``sampling.steps`` and
    ``sampling.options``."""

    name = "report"

    def __init__(self, run: Run):
        self.run = run

    def score(self, params):
        run, config = self.run, self.run.config
        if run.class_score_with_params is None:
            return ema_score(run, params)
        labels = jnp.arange(int(config.sampling.num_samples), dtype=jnp.int32) % int(config.model.num_classes)
        return jax.tree_util.Partial(run.class_score_with_params, params, labels)

    def __call__(self, state, step):
        if jax.process_index() != 0:
            return None
        score_fn, key = self.score(state.ema_params), eval_key(self.run.config, "report")
        if self.run.data["image"]:
            return self.image_report(score_fn, key, step)
        return self.toy_report(score_fn, key)

    def image_report(self, score_fn, key, step) -> dict:
        config, data, workdir = self.run.config, self.run.data, self.run.workdir
        num = int(config.sampling.num_samples)
        devices = 1 if self.run.class_score_with_params is not None else None  # labels are per row of the batch
        samples = np.asarray(sample_in_batches(key, score_fn, self.run.sde, (num, *data["shape"]), num,
                                               config.sampling.sampler, config.sampling.steps, devices=devices,
                                               progress=False, **sampling_options(config)))
        for name in (f"samples_{step:07d}.png", "samples.png"):
            viz.save_image_grid(samples, os.path.join(workdir, name), value_range=value_range(config))
        return {"sample_mean": float(samples.mean()), "sample_std": float(samples.std())}

    def toy_report(self, score_fn, key) -> dict:
        config, data, workdir, sde = self.run.config, self.run.data, self.run.workdir, self.run.sde
        num = int(config.eval.num_samples)
        score_fn = functools.partial(_call_score, score_fn)  # evaluated eagerly below: compiled once per run
        samples = np.asarray(sample_in_batches(key, score_fn, sde, (min(num, 4096), 2), num, config.sampling.sampler,
                                               config.sampling.steps, progress=False, **sampling_options(config)))
        reference = data["test"]["x"]
        viz.save_scatter(samples, reference, os.path.join(workdir, "samples.png"),
                         title=f"{config.sampling.sampler}, {config.sampling.steps} steps")
        out, mixture, fields = {}, data["mixture"], [("learned", score_fn)]
        if mixture is not None:
            out.update({f"sample_{k}": v for k, v in mixture_metrics(samples, mixture).items()})
            exact = jax.jit(mixture.score_fn(sde))
            fields.append(("exact", exact))
            for t in (0.05, 0.2, 0.5):
                tt = jnp.full((len(reference),), t, jnp.float32)
                xt, _ = sde.marginal_sample(jax.random.fold_in(key, int(t * 100)), jnp.asarray(reference), tt)
                out[f"score_rel_error_t{t}"] = relative_score_error(score_fn, exact, xt, tt)
        viz.save_score_field(fields, os.path.join(workdir, "score_field.png"), t=0.05, extent=6.0)
        return out


class SampleQuality:
    """FID, KID, IS and precision/recall of ``eval.fid_num`` EMA samples (``sampling.sampler``,
    ``sampling.steps``, ``sampling.options``; in ``data.value_range``, mapped to the features' [-1, 1]) under the ``eval.features`` network against the ``eval.fid_ref`` split,
    every ``eval.fid_every`` steps; logged as ``sample_quality/*`` and plotted in ``fid.png``.

    Next to each figure: its floor, the same metrics for as many real images of the other split
    (an ideal generator's score at this sample size: FID is biased upwards for small samples).
    Class-conditional runs sample class ``i % K`` for example ``i`` (guidance ``sampling.guidance_scale``)
    and also report ``class_accuracy``, the fraction the feature network assigns to its class.
    """

    name = "sample_quality"

    def __init__(self, run: Run):
        from jaxscore.evaluation.extractors import build_extractor

        cfg = run.config.eval
        if str(cfg.fid_ref) not in ("train", "test"):
            raise ValueError(f"config.eval.fid_ref: expected 'train' or 'test', got {cfg.fid_ref!r}.")
        # built now, so a bad feature name or a missing weights file fails before training starts
        self.extractor = build_extractor(str(cfg.features), inception_weights=cfg.get("inception_weights") or None,
                                         mnist_path=run.config.data.get("path"))
        self.run = run
        self.every = int(cfg.fid_every)
        self._reference = None

    def reference(self):
        """``(extractor, reference stats, floor metrics)``, computed once per run."""
        if self._reference is None:
            from jaxscore.evaluation.streaming import METRICS, computable, sample_quality, stats_of_images

            cfg, data, extractor = self.run.config.eval, self.run.data, self.extractor
            ref_split = str(cfg.fid_ref)
            ref = stats_of_images(data[ref_split]["images"], extractor)
            real = data["train" if ref_split == "test" else "test"]["images"][: int(cfg.fid_num)]
            real_stats = stats_of_images(real, extractor)
            floor = sample_quality(real_stats, ref, computable(METRICS, real_stats))
            self._reference = (extractor, ref, floor)
        return self._reference

    def __call__(self, state, step):
        from jaxscore.evaluation.streaming import METRICS, computable, per_class_accuracy, sample_quality, stats_of_samples

        run, config = self.run, self.run.config
        extractor, ref, floor = self.reference()
        num = int(config.eval.fid_num)
        batch = min(500, num)
        score_fn, options = ema_score(run, state.ema_params), {}
        if run.class_score_with_params is not None:
            k = int(config.model.num_classes)
            batch = max(batch - batch % k, k)  # example i has class i % k in every batch
            labels = jnp.arange(batch, dtype=jnp.int32) % k
            score_fn = jax.tree_util.Partial(run.class_score_with_params, state.ema_params, labels)
            options["devices"] = 1  # the labels are per row of a whole batch
        options.update(sampling_options(config))
        stats = stats_of_samples(eval_key(config, "sample_quality"), score_fn, run.sde, run.data["shape"], num,
                                 extractor, sampler=config.sampling.sampler, steps=config.sampling.steps,
                                 batch_size=batch, value_range=value_range(config), **options)
        out = sample_quality(stats, ref, computable(METRICS, stats))
        out.update({f"{k}_floor": v for k, v in floor.items() if k != "num"})
        if run.class_score_with_params is not None and stats.kept_logits is not None:
            out["class_accuracy"] = float(np.mean(per_class_accuracy(stats.kept_logits, int(config.model.num_classes))))
        return out


def warn_on_nonfinite_samples(evaluator):
    """Wrap an evaluator so that samples holding NaN / inf (batched sampling raises
    ``FloatingPointError``) are logged as ``nonfinite_samples = 1`` with a warning line instead of
    ending the training run at a periodic evaluation."""
    def call(state, step):
        try:
            return evaluator(state, step)
        except FloatingPointError as err:
            if jax.process_index() == 0:
                print(f"warning: step {step}: {evaluator.name}: {err}", flush=True)
            return {"nonfinite_samples": 1.0}

    call.name, call.every = evaluator.name, getattr(evaluator, "every", None)
    return call


def build_evaluators(run: Run) -> list:
    """The evaluators ``run.config`` asks for, in the order they run at each evaluation: held-out
    loss; bits/dim (images, ``eval.bits_per_dim``); sample quality (images, ``eval.fid_every > 0``,
    its own schedule); the picture report."""
    evaluators = [HeldoutLoss(run)]
    if run.data["image"] and bool(run.config.eval.get("bits_per_dim", False)):
        evaluators.append(BitsPerDim(run))
    if run.data["image"] and int(run.config.eval.get("fid_every", 0) or 0) > 0:
        evaluators.append(warn_on_nonfinite_samples(SampleQuality(run)))
    evaluators.append(warn_on_nonfinite_samples(Report(run)))
    return evaluators
