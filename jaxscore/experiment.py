"""Experiments: a config becomes data, an SDE, a model, a loss and a training run.

This is the top layer below the CLI: it resolves the names in a config (datasets, SDEs, model
presets, losses) into the pure objects of the library, hands them to
:func:`jaxscore.train.train` with the evaluators of :mod:`jaxscore.evaluators` (held-out loss,
bits/dim, FID / KID / IS / precision-recall, pictures), and loads a run back from its workdir
(:func:`load_run`, :func:`load_for_inference`). ``metrics.jsonl``, ``loss.png`` and, when sample
quality is measured, ``fid.png`` are written into the workdir.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore import guidance, losses, viz
from jaxscore.config import model_overrides
from jaxscore.data import images as image_data
from jaxscore.data import TOY_DATASETS, TOY_MIXTURES, pipeline, toy
from jaxscore.models import build_model
from jaxscore.parameterization import make_score_fn
from jaxscore.sde import SubVPSDE, VESDE, VPSDE



# --- names -> objects --------------------------------------------------------------------

def build_sde(cfg):
    """``config.sde`` -> a LinearSDE."""
    if cfg.name == "vp":
        return VPSDE(beta_min=cfg.beta_min, beta_max=cfg.beta_max)
    if cfg.name == "subvp":
        return SubVPSDE(beta_min=cfg.beta_min, beta_max=cfg.beta_max)
    if cfg.name == "ve":
        return VESDE(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)
    raise ValueError(f"config.sde.name: expected 'vp', 've' or 'subvp', got {cfg.name!r}.")


def load_data(config) -> dict[str, Any]:
    """``config.data`` -> {"train": dataset, "test": dataset, "shape": per-example shape,
    "mixture": GaussianMixture or None, "image": bool}. Datasets are dicts of numpy arrays:
    toy ``{"x": float32 [N, 2]}``, images ``{"images": uint8 [N, H, W, C], "labels": ...}``."""
    name = config.data.name
    if name in TOY_DATASETS:
        key = jax.random.key(config.seed)
        k_train, k_test = jax.random.split(key)
        n = int(config.data.num_train)
        mixture = TOY_MIXTURES[name]() if name in TOY_MIXTURES else None
        draw = mixture.sample if mixture is not None else (lambda k, m: toy.TOY_SAMPLERS[name](k, m))
        draw = jax.jit(draw, static_argnums=1)  # one compiled call, not op-by-op dispatch
        train = {"x": np.asarray(draw(k_train, n), np.float32)}
        test = {"x": np.asarray(draw(k_test, max(n // 10, 512)), np.float32)}
        return {"train": train, "test": test, "shape": (2,), "mixture": mixture, "image": False}
    if name in image_data.DATASET_NAMES:
        sections = dict(config.data)
        train = image_data.load_dataset({**sections, "split": "train"})
        test = image_data.load_dataset({**sections, "split": "test"})
        return {"train": train, "test": test, "shape": tuple(train["images"].shape[1:]), "mixture": None, "image": True}
    raise ValueError(f"config.data.name: expected one of {TOY_DATASETS + tuple(image_data.DATASET_NAMES)}, got {name!r}.")


def make_batch_fn(config, data, split: str = "train", *, process_index: int = 0, process_count: int = 1):
    """``step -> {"x": float32 [B/P, *D], "labels"?: int32}``: a pure function of (seed, step)."""
    dataset = data[split]
    kw = dict(global_batch_size=int(config.training.batch_size), seed=int(config.seed),
              process_index=process_index, process_count=process_count)
    if not data["image"]:
        x = dataset["x"]

        def toy_batch(step):
            return {"x": x[pipeline.batch_indices(len(x), step, **kw)]}

        return toy_batch

    def image_batch(step):
        batch = pipeline.batch_at_step(dataset, step, flip=bool(config.data.random_flip),
                                       dequantize=bool(config.data.dequantize), **kw)
        out = {"x": batch["images"]}
        if "labels" in batch and config.model.get("num_classes"):
            out["labels"] = batch["labels"]
        return out

    return image_batch


def make_loss_fn(config, model, sde) -> Callable:
    """``loss_fn(params, key, batch) -> scalar``; dropout keys are split from ``key``."""
    name = config.loss.name
    param = config.model.parameterization
    label_dropout = float(config.training.get("label_dropout", 0.0))

    def loss_fn(params, key, batch):
        loss_key, dropout_key = jax.random.split(key)

        def apply(p, x, t, **kw):
            return model.apply({"params": p}, x, t, train=True, rngs={"dropout": dropout_key}, **kw)

        kw = {}
        if "labels" in batch:  # class-conditional: label dropout trains the null label too (CFG)
            kw["labels"] = guidance.drop_labels(jax.random.fold_in(key, 2), batch["labels"], rate=label_dropout,
                                                null_label=int(config.model.num_classes))
        x0 = batch["x"]
        if name == "continuous_dsm":
            return losses.continuous_dsm_loss(apply, params, loss_key, x0, sde, parameterization=param,
                                              weighting=config.loss.weighting, reduce_mean=config.loss.reduce_mean, **kw)
        if name in ("eps", "x0", "v"):
            if param != name:
                raise ValueError(f"config.loss.name={name!r} trains a {name!r} network: set config.model.parameterization={name!r}.")
            fn = {"eps": losses.eps_loss, "x0": losses.x0_loss, "v": losses.v_loss}[name]
            return fn(apply, params, loss_key, x0, sde, reduce_mean=config.loss.reduce_mean, **kw)
        if name == "edm":
            if param != "edm":
                raise ValueError("config.loss.name='edm' needs config.model.parameterization='edm'.")
            return losses.edm_loss(apply, params, loss_key, x0, reduce_mean=config.loss.reduce_mean, **kw)
        raise ValueError(f"config.loss.name: expected continuous_dsm, eps, x0, v or edm, got {name!r}.")

    return loss_fn


def build_model_from_config(model_cfg):
    """``config.model`` -> a Flax module: the preset ``name`` with the fields the section sets
    (``None`` = the preset's value). A field the model class does not have is an error."""
    return build_model({"name": model_cfg.name, **model_overrides(model_cfg)})


def make_init_fn(model, shape) -> Callable:
    def init_fn(key):
        x = jnp.zeros((1, *shape), jnp.float32)
        t = jnp.full((1,), 0.5, jnp.float32)
        return model.init({"params": key, "dropout": key}, x, t, train=False)["params"]

    return init_fn


def model_score_fn(config, model, params, sde, **apply_kwargs):
    """The trained network as ``score_fn(x, t)`` (eval mode: no dropout)."""
    apply = lambda p, x, t, **kw: model.apply({"params": p}, x, t, train=False, **kw)  # noqa: E731
    return make_score_fn(apply, params, sde, config.model.parameterization, **apply_kwargs)


def class_score_fn(config, model, params, sde, labels, guidance_scale: float = 1.0):
    """A class-conditional network's score for ``labels`` (scalar or [B] ints): conditional when
    ``guidance_scale == 1``, else classifier-free guided with the null label ``num_classes``."""
    def score_with_labels(x, t, y):
        return model_score_fn(config, model, params, sde, labels=y)(x, t)

    if float(guidance_scale) == 1.0:
        return guidance.with_labels(score_with_labels, labels)
    return guidance.classifier_free(score_with_labels, labels, null_label=int(config.model.num_classes),
                                    scale=float(guidance_scale))


def is_conditional(config) -> bool:
    return bool(config.model.get("num_classes"))


# --- training ----------------------------------------------------------------------------

def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False):
    """Train (or resume) the run described by ``config`` in ``workdir``; write pictures and metrics
    (the evaluators of :func:`jaxscore.evaluators.build_evaluators`)."""
    from jaxscore.evaluators import Run, build_evaluators
    from jaxscore.train import Hook, maybe_initialize_distributed, train

    maybe_initialize_distributed(config)  # before anything touches devices (process_index, PRNG keys)
    workdir = os.path.abspath(workdir)
    data = load_data(config)
    sde = build_sde(config.sde)
    model = build_model_from_config(config.model)
    loss_fn = make_loss_fn(config, model, sde)
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())

    def score_with_params(params, x, t):
        return model_score_fn(config, model, params, sde)(x, t)

    def class_score_with_params(params, labels, x, t):
        return class_score_fn(config, model, params, sde, labels, config.sampling.get("guidance_scale", 1.0))(x, t)

    run = Run(config=config, workdir=workdir, data=data, sde=sde, loss_fn=jax.jit(loss_fn),
              test_batch_fn=make_batch_fn(config, data, "test", **shard), score_with_params=score_with_params,
              class_score_with_params=class_score_with_params if is_conditional(config) else None)
    evaluators = build_evaluators(run)
    hooks = [Hook(ev, every=getattr(ev, "every", None), name=ev.name) for ev in evaluators]
    result = train(config, workdir, init_fn=make_init_fn(model, data["shape"]), loss_fn=loss_fn,
                   batch_fn=make_batch_fn(config, data, **shard), eval_fns=hooks, allow_config_change=allow_config_change)
    if result.resumed_from is not None and result.resumed_from >= int(config.training.n_iters):
        _report_if_missing(evaluators, result, workdir)
    if jax.process_index() == 0:
        viz.save_training_curves(os.path.join(workdir, "metrics.jsonl"), workdir)
    return result


def _report_if_missing(evaluators, result, workdir: str) -> None:
    """A re-run of a finished run whose report is missing (the run died after its last checkpoint,
    or the report crashed) writes the report from the final checkpoint, and says so."""
    if os.path.exists(os.path.join(workdir, "samples.png")):
        return
    if jax.process_index() == 0:
        print(f"run already finished at step {result.step}; writing its missing report into {workdir}", flush=True)
    for evaluator in evaluators:
        if evaluator.name == "report":
            evaluator(result.state, result.step)


# --- inference from a workdir --------------------------------------------------------------

def load_run_config(workdir: str):
    """The config a run in ``workdir`` was trained with (its ``config.json``)."""
    from ml_collections import ConfigDict

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no config.json; is {workdir!r} a jaxscore run directory?")
    with open(path) as f:
        return ConfigDict(json.load(f))


def load_run(workdir: str):
    """``(config, model, EMA params, sde, data shape, step)`` of the latest checkpoint in ``workdir``."""
    from jaxscore.train import restore_params

    config = load_run_config(workdir)
    data_shape = tuple(load_data(config)["shape"])
    sde = build_sde(config.sde)
    model = build_model_from_config(config.model)
    params, step = restore_params(workdir, make_init_fn(model, data_shape), which="ema_params")
    return config, model, params, sde, data_shape, step


def load_for_inference(workdir: str):
    """The config, EMA ``score_fn``, SDE and per-example data shape of the latest checkpoint in ``workdir``
    (a class-conditional model's score is its unconditional one: the null label)."""
    config, model, params, sde, data_shape, step = load_run(workdir)
    return config, model_score_fn(config, model, params, sde), sde, data_shape, step
