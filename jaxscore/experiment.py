"""Experiments: a config becomes data, an SDE, a model, a loss and a training run.

This is the top layer (below the CLI): it resolves the names in a config
(datasets, SDEs, model presets, losses, samplers) into the pure objects of the
library and hands them to :func:`jaxscore.train.train`. After training it writes
pictures and metrics into the workdir:

* toy data: ``samples.png`` (samples vs data), ``score_field.png`` (learned vs exact
  score where the exact one is known), mode metrics and relative score error;
* images: ``samples_<step>.png`` grids, held-out loss, and with ``config.eval.bits_per_dim``
  the dequantised bits/dim of ``config.eval.bpd_num`` held-out images (EMA parameters,
  probability-flow ODE with ``eval.bpd_divergence`` and tolerances ``eval.bpd_rtol``);
* always: ``metrics.jsonl``, ``loss.png``.

Hooks run on every process with that process's own copy of the (replicated) state; held-out
loss and bits/dim are computed on this process's share of the examples and averaged over
processes; files are written by process 0 only.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore import guidance, losses, viz
from jaxscore.config import config_to_dict, model_overrides
from jaxscore.data import images as image_data
from jaxscore.data import pipeline, toy
from jaxscore.metrics import mixture_metrics, relative_score_error
from jaxscore.models import build_model
from jaxscore.parameterization import make_score_fn
from jaxscore.samplers import sample_in_batches
from jaxscore.sde import SubVPSDE, VESDE, VPSDE

TOY_MIXTURES = {"ring": toy.ring_mixture, "grid": toy.grid_mixture}
TOY_DATASETS = (*TOY_MIXTURES, *toy.TOY_SAMPLERS)


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

@eqx.filter_jit
def _call_score(score_fn, x, t):
    """``score_fn(x, t)`` compiled; a ``jax.tree_util.Partial`` score's parameters are traced."""
    return score_fn(x, t)


def _toy_report(config, workdir, data, score_fn, sde, key) -> dict:
    num = int(config.eval.num_samples)
    score_fn = functools.partial(_call_score, score_fn)  # evaluated eagerly below: compiled once per run
    samples = np.asarray(sample_in_batches(key, score_fn, sde, (min(num, 4096), 2), num, config.sampling.sampler,
                                           config.sampling.steps, progress=False))
    reference = data["test"]["x"]
    viz.save_scatter(samples, reference, os.path.join(workdir, "samples.png"),
                     title=f"{config.sampling.sampler}, {config.sampling.steps} steps")
    out = {}
    mixture = data["mixture"]
    if mixture is not None:
        out.update({f"sample_{k}": v for k, v in mixture_metrics(samples, mixture).items()})
        exact = jax.jit(mixture.score_fn(sde))
        fields = [("learned", score_fn), ("exact", exact)]
        for t in (0.05, 0.2, 0.5):
            tt = jnp.full((len(reference),), t, jnp.float32)
            xt, _ = sde.marginal_sample(jax.random.fold_in(key, int(t * 100)), jnp.asarray(reference), tt)
            out[f"score_rel_error_t{t}"] = relative_score_error(score_fn, exact, xt, tt)
    else:
        fields = [("learned", score_fn)]
    viz.save_score_field(fields, os.path.join(workdir, "score_field.png"), t=0.05, extent=6.0)
    return out


def _image_report(config, workdir, data, score_fn, sde, key, step) -> dict:
    """Sample grid; for a class-conditional model ``score_fn`` is conditioned on ``i % num_classes``
    for sample i (so a grid with num_classes columns shows one class per column)."""
    num = int(config.sampling.num_samples)
    shape = (num, *data["shape"])
    samples = np.asarray(sample_in_batches(key, score_fn, sde, shape, num, config.sampling.sampler,
                                           config.sampling.steps, progress=False))
    viz.save_image_grid(np.clip(samples, -1, 1), os.path.join(workdir, f"samples_{step:07d}.png"))
    viz.save_image_grid(np.clip(samples, -1, 1), os.path.join(workdir, "samples.png"))
    return {"sample_mean": float(samples.mean()), "sample_std": float(samples.std())}


def _mean_over_processes(local_sum: float, local_count: int) -> float:
    """``sum of local_sum / sum of local_count`` over all processes (this process alone if one)."""
    total = np.array([local_sum, local_count], np.float64)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        total = np.asarray(multihost_utils.process_allgather(total.astype(np.float32)), np.float64).sum(0)
    return float(total[0] / total[1])


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False):
    """Train (or resume) the run described by ``config`` in ``workdir``; write pictures and metrics."""
    from jaxscore.train import Hook, maybe_initialize_distributed, train

    maybe_initialize_distributed(config)  # before anything touches devices (process_index, PRNG keys)
    workdir = os.path.abspath(workdir)
    data = load_data(config)
    sde = build_sde(config.sde)
    model = build_model_from_config(config.model)
    loss_fn = make_loss_fn(config, model, sde)
    batch_fn = make_batch_fn(config, data, process_index=jax.process_index(), process_count=jax.process_count())
    test_batch_fn = make_batch_fn(config, data, "test", process_index=jax.process_index(),
                                  process_count=jax.process_count())
    eval_loss = jax.jit(loss_fn)

    def heldout(state, step):
        key = jax.random.key(10_000 + int(config.seed))
        vals = [eval_loss(state.ema_params, jax.random.fold_in(key, i), test_batch_fn(i))
                for i in range(int(config.eval.heldout_batches))]
        # every process scored its own rows of the held-out batches (equal shares)
        return {"loss": _mean_over_processes(sum(float(v[0] if isinstance(v, tuple) else v) for v in vals), len(vals))}

    def score_with_params(params, x, t):
        return model_score_fn(config, model, params, sde)(x, t)

    def class_score_with_params(params, labels, x, t):
        return class_score_fn(config, model, params, sde, labels, config.sampling.get("guidance_scale", 1.0))(x, t)

    def bpd(state, step):
        # this process's share of the first eval.bpd_num test images, local EMA params
        from jaxscore.likelihood import bits_per_dim

        n, p, count = int(config.eval.bpd_num), jax.process_index(), jax.process_count()
        images = data["test"]["images"][:n][p::count]
        # params as a pytree leaf of a Partial over one function object: the likelihood's
        # filter_jit then compiles once per run, not once per eval (a fresh closure each time)
        score_fn = jax.tree_util.Partial(score_with_params, state.ema_params)
        tol = float(config.eval.bpd_rtol)
        vals = np.asarray(bits_per_dim(jax.random.key(30_000 + int(config.seed)), score_fn, sde, images,
                                       divergence=str(config.eval.bpd_divergence), rtol=tol, atol=tol))
        return {"bits_per_dim": _mean_over_processes(float(vals.sum()), len(vals))}

    def report(state, step):
        if jax.process_index() != 0:
            return None
        # a Partial over one function object: the samplers compile once per run, not per report
        if is_conditional(config):
            labels = jnp.arange(int(config.sampling.num_samples), dtype=jnp.int32) % int(config.model.num_classes)
            score_fn = jax.tree_util.Partial(class_score_with_params, state.ema_params, labels)
        else:
            score_fn = jax.tree_util.Partial(score_with_params, state.ema_params)
        key = jax.random.key(20_000 + int(config.seed))
        if data["image"]:
            return _image_report(config, workdir, data, score_fn, sde, key, step)
        return _toy_report(config, workdir, data, score_fn, sde, key)

    hooks = [Hook(heldout, name="eval"), Hook(report, name="report")]
    if data["image"] and bool(config.eval.get("bits_per_dim", False)):
        hooks.insert(1, Hook(bpd, name="eval"))
    result = train(config, workdir, init_fn=make_init_fn(model, data["shape"]), loss_fn=loss_fn,
                   batch_fn=batch_fn, eval_fns=hooks, allow_config_change=allow_config_change)
    if jax.process_index() == 0:
        metrics_path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(metrics_path):
            viz.save_loss_curve(metrics_path, os.path.join(workdir, "loss.png"), keys=("loss", "eval/loss"))
    return result


# --- inference from a workdir --------------------------------------------------------------

def _load_run(workdir: str):
    """``(config, model, EMA params, sde, data shape, step)`` of the latest checkpoint in ``workdir``."""
    from ml_collections import ConfigDict

    from jaxscore.train import restore_params

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no config.json; is {workdir!r} a jaxscore run directory?")
    with open(path) as f:
        config = ConfigDict(json.load(f))
    data_shape = tuple(load_data(config)["shape"])
    sde = build_sde(config.sde)
    model = build_model_from_config(config.model)
    params, step = restore_params(workdir, make_init_fn(model, data_shape), which="ema_params")
    return config, model, params, sde, data_shape, step


def load_for_inference(workdir: str):
    """The config, EMA ``score_fn``, SDE and per-example data shape of the latest checkpoint in ``workdir``
    (a class-conditional model's score is its unconditional one: the null label)."""
    config, model, params, sde, data_shape, step = _load_run(workdir)
    return config, model_score_fn(config, model, params, sde), sde, data_shape, step


def sample_from_workdir(workdir: str, *, sampler: str, steps: int, num: int, out: str,
                        batch_size: int = 1024, seed: int = 0, progress: bool = True, label: int | None = None,
                        guidance_scale: float | None = None, **options) -> str:
    """Sample ``num`` examples with the EMA parameters; write ``out`` (npz, key ``samples``) and a PNG beside it.

    ``options`` go to the sampler (e.g. ``snr=0.16`` for ``pc``, ``eta=1.0`` for ``ddim``).
    Class-conditional models (``model.num_classes = K``): sample ``i`` gets class ``label``, or
    ``i % K`` when ``label`` is None (the batch size is then rounded down to a multiple of K, so the
    pattern holds across batches; the npz also holds ``labels``); ``guidance_scale`` (default the
    config's ``sampling.guidance_scale``) is the classifier-free scale.
    """
    config, model, params, sde, shape, step = _load_run(workdir)
    batch = min(batch_size, num)
    extra = {}
    if is_conditional(config):
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
    samples = np.asarray(sample_in_batches(jax.random.key(seed), score_fn, sde, (batch, *shape), num, sampler, steps,
                                           progress=progress, **options))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez(out, samples=samples, step=step, **extra)
    png = os.path.splitext(out)[0] + ".png"
    if len(shape) == 3:
        viz.save_image_grid(np.clip(samples[:256], -1, 1), png)
    else:
        reference = load_data(config)["test"]["x"]
        viz.save_scatter(samples, reference, png, title=f"{sampler}, {steps} steps")
    return out


def likelihood_from_workdir(workdir: str, *, data: str | None = None, num: int = 256, divergence: str = "exact",
                            batch_size: int = 128, seed: int = 0, progress: bool = True, **likelihood_kwargs) -> dict:
    """Mean negative log-likelihood (nats per example) and, for images, dequantised bits/dim.

    ``data``: ``"train"``/``"test"`` (the run's dataset) or an ``.npy``/``.npz`` file. Batch ``j``
    (rows ``[j*batch_size, ...)``) uses key ``fold_in(key(seed), j*batch_size)``. A tqdm bar
    over batches when ``progress``. ``likelihood_kwargs`` (``rtol``, ``solver``...) go to
    :func:`jaxscore.likelihood.log_likelihood`."""
    from jaxscore.likelihood import bits_per_dim, log_likelihood

    config, score_fn, sde, shape, step = load_for_inference(workdir)
    dataset = load_data(config)
    split = data or "test"
    if split in ("train", "test"):
        ds = dataset[split]
    else:
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
        if dataset["image"]:
            b, info = bits_per_dim(k, score_fn, sde, chunk, divergence=divergence, return_info=True,
                                   **likelihood_kwargs)
            bpd.append(np.asarray(b))
            nll.append(-np.asarray(info["log_likelihood"]) if "log_likelihood" in info else np.asarray(b) * np.log(2) * np.prod(shape))
        else:
            nll.append(-np.asarray(log_likelihood(k, score_fn, sde, jnp.asarray(chunk), divergence=divergence,
                                                  **likelihood_kwargs)))
    result = {"step": step, "num": int(len(arr)), "nll_nats": float(np.mean(np.concatenate(nll)))}
    if bpd:
        result["bits_per_dim"] = float(np.mean(np.concatenate(bpd)))
    return result
