"""Experiments: a config becomes data, an SDE, a model, a loss and a training run.

This is the top layer below the CLI: it resolves the names in a config (datasets, SDEs, model
presets, losses) into the pure objects of the library, hands them to
:func:`jaxscore.train.train` with the evaluators of :mod:`jaxscore.evaluators` (held-out loss,
bits/dim, FID / KID / IS / precision-recall, pictures), and loads a run back from its workdir
(:func:`load_run`, :func:`load_for_inference`). ``metrics.jsonl``, ``loss.png`` and, when sample
quality is measured, ``fid.png`` are written into the workdir.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxscore import guidance, losses, viz
from jaxscore.config import DDPM_SCHEDULES, model_overrides
from jaxscore.data import images as image_data
from jaxscore.data import TOY_DATASETS, TOY_MIXTURES, pipeline, toy
from jaxscore.models import build_model
from jaxscore.parameterization import make_score_fn
from jaxscore.samplers.grids import time_grid
from jaxscore.sde import DiscreteVPSDE, SubVPSDE, VESDE, VPSDE



# --- names -> objects --------------------------------------------------------------------

def build_sde(cfg):
    """``config.sde`` -> a LinearSDE.

    ``"ddpm"``: the discrete chain :class:`jaxscore.sde.DiscreteVPSDE` with ``num_steps`` N (default
    1000) and ``schedule`` ``"linear"`` (``beta_start``..``beta_end``, default 1e-4..0.02, Ho et al.
    2020) or ``"cosine"`` (``cosine_s``, default 0.008, Nichol & Dhariwal 2021)."""
    if cfg.name == "ddpm":
        n = int(cfg.get("num_steps", 1000))
        schedule = cfg.get("schedule", "linear")
        if schedule == "linear":
            return DiscreteVPSDE.linear(n, float(cfg.get("beta_start", 1e-4)), float(cfg.get("beta_end", 0.02)))
        if schedule == "cosine":
            return DiscreteVPSDE.cosine(n, float(cfg.get("cosine_s", 0.008)))
        raise ValueError(f"config.sde.schedule: expected one of {DDPM_SCHEDULES}, got {schedule!r}.")
    if cfg.name == "vp":
        return VPSDE(beta_min=cfg.beta_min, beta_max=cfg.beta_max)
    if cfg.name == "subvp":
        return SubVPSDE(beta_min=cfg.beta_min, beta_max=cfg.beta_max)
    if cfg.name == "ve":
        return VESDE(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max)
    raise ValueError(f"config.sde.name: expected 'vp', 've', 'subvp' or 'ddpm', got {cfg.name!r}.")


@functools.partial(jax.jit, static_argnums=2)
def _draw_mixture(mixture, key, num: int):
    """``num`` draws of a toy mixture (a pytree argument): one compiled call per shape, reused by every
    ``load_data`` of the process (each CLI command loads its run's data)."""
    return mixture.sample(key, num)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _draw_toy(name: str, key, num: int):
    """``num`` draws of the named non-mixture toy dataset (moons, swiss roll, ...), compiled once per shape."""
    return toy.TOY_SAMPLERS[name](key, num)


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
        draw = functools.partial(_draw_mixture, mixture) if mixture is not None else functools.partial(_draw_toy, name)
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
    """``step -> {"x": float32 [B/P, *D], "labels"?: int32}``: a pure function of (seed, step); images
    in ``config.data.value_range`` (:func:`jaxscore.config.value_range`)."""
    from jaxscore.config import value_range

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
                                       dequantize=bool(config.data.dequantize), value_range=value_range(config), **kw)
        out = {"x": batch["images"]}
        if "labels" in batch and config.model.get("num_classes"):
            out["labels"] = batch["labels"]
        return out

    return image_batch


def ncsn_ladder(sde, num_scales: int) -> tuple[jax.Array, jax.Array]:
    r"""NCSN's noise ladder as the SDE's times: ``(ts [L], sigmas [L])`` with ``ts`` the levels
    ``annealed_langevin`` visits with ``steps = L`` on its default uniform grid (``time_grid(sde, L)[1:]``:
    :math:`t_i = T - i(T - t_{min})/L`, i = 1..L) and ``sigmas`` their :math:`\sigma_t/\alpha_t`. For a VE
    SDE this is the geometric ladder :math:`\sigma_{min}(\sigma_{max}/\sigma_{min})^{t_i}` of Song & Ermon
    (2019), so training (``loss.name = "ncsn"``) and sampling use the same levels, bit for bit."""
    ts = time_grid(sde, int(num_scales), "uniform")[1:]
    return ts, sde.sigma_ratio(ts)


def ve_sigmas_for_ladder(sigma_first: float, sigma_last: float, num_scales: int) -> tuple[float, float]:
    r"""``(sigma_min, sigma_max)`` of the VE SDE whose :func:`ncsn_ladder` of ``num_scales`` L levels runs
    from ``sigma_first`` down to ``sigma_last`` (NCSN's :math:`\sigma_1 > \dots > \sigma_L`, geometric):
    the levels sit at :math:`t_i \approx 1 - i/L`, so :math:`\sigma_{min} = \sigma_L` and
    :math:`\sigma_{max} = \sigma_L(\sigma_1/\sigma_L)^{L/(L-1)}` (exact up to the VE SDE's
    :math:`t_{min} = 10^{-5}`: relative error :math:`\le 10^{-5}\log(\sigma_{max}/\sigma_{min})`)."""
    num_scales = int(num_scales)
    if num_scales < 2 or not 0 < sigma_last < sigma_first:
        raise ValueError(f"ve_sigmas_for_ladder: expected num_scales >= 2 and 0 < sigma_last < sigma_first, got "
                         f"num_scales={num_scales}, sigma_first={sigma_first}, sigma_last={sigma_last}.")
    return float(sigma_last), float(sigma_last * (sigma_first / sigma_last) ** (num_scales / (num_scales - 1)))


def _noisy_score_matching(objective, score_apply, params, key, x0, sde, t_lo, **kw):
    r"""Implicit / sliced score matching of the diffused marginals: per example
    :math:`t\sim U(t_{min}, T)`, :math:`x_t\sim p_t`, the objective of :math:`s_\theta(\cdot, t)` on that one
    point, weighted by :math:`\lambda(t) = \sigma_t^2` (so every t contributes O(d), as DSM's
    ``"sigma2"`` weighting). Its minimiser is the score of every :math:`p_t` without knowing the kernel.
    ``objective(apply, params, key, x [1, *D], t [1]) -> scalar``; returns the batch mean."""
    k_t, k_x, k_obj = jax.random.split(key, 3)
    t = jax.random.uniform(k_t, x0.shape[:1], x0.dtype, minval=t_lo, maxval=sde.T)
    x_t, _ = sde.marginal_sample(k_x, x0, t)
    keys = jax.random.split(k_obj, x0.shape[0])
    def one(k, x, tt, kw1):  # per-example keyword arrays (labels) get their batch axis back
        return objective(score_apply, params, k, x[None], tt[None], **{n: v[None] for n, v in kw1.items()})

    per = jax.vmap(one)(keys, x_t, t, kw)
    _, sigma = sde.marginal_coefs(t)
    return jnp.mean(sigma**2 * per)


def make_loss_fn(config, model, sde) -> Callable:
    """``loss_fn(params, key, batch) -> scalar``; dropout keys are split from ``key``.

    ``config.loss.name`` (:data:`jaxscore.config.LOSS_NAMES`):

    * ``continuous_dsm``: :func:`jaxscore.losses.continuous_dsm_loss` with ``loss.weighting`` (a name
      or ``"module:function"``, :func:`jaxscore.config.resolve_weighting`) and ``loss.t_sampling``
      (``"uniform"`` or ``"importance"``);
    * ``eps`` / ``x0`` / ``v``: the direct objectives (integer timesteps on a ``ddpm`` SDE);
    * ``edm``: :func:`jaxscore.losses.edm_loss`;
    * ``ncsn``: :func:`jaxscore.losses.multiscale_dsm_loss` on :func:`ncsn_ladder` (``loss.num_scales``,
      ``loss.anneal_power``), the network fed the ladder's times;
    * ``ism`` / ``ssm``: implicit (``loss.divergence``) / sliced (``loss.num_projections``,
      ``loss.variance_reduced``) score matching of the diffused marginals (:func:`_noisy_score_matching`;
      small data: ISM's exact divergence costs d JVPs).

    ``loss.t_min`` (None: ``sde.t_min``) is the lower end of the training times t ~ U(t_min, T) of
    ``continuous_dsm``, ``eps`` / ``x0`` / ``v`` on a continuous SDE, ``ism`` and ``ssm`` (score_sde
    trains from 1e-5). The integer timesteps of a ``ddpm`` chain's direct losses, the ``ncsn`` ladder and
    ``edm``'s log-normal sigmas have their own times (the config's rule refuses a t_min for them).
    """
    from jaxscore.config import resolve_weighting

    name = config.loss.name
    param = config.model.parameterization
    label_dropout = float(config.training.get("label_dropout", 0.0))
    lc = config.loss
    num_timesteps = sde.num_steps if config.sde.name == "ddpm" else None  # DDPM: integer timesteps
    weighting = resolve_weighting(lc.get("weighting", "sigma2"))
    if name == "ncsn":
        ladder_ts, ladder_sigmas = ncsn_ladder(sde, int(lc.get("num_scales", 10)))
    t_lo = sde.t_min if lc.get("t_min") is None else float(lc.t_min)  # training times U(t_lo, T)

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
                                              weighting=weighting, t_sampling=lc.get("t_sampling", "uniform"),
                                              reduce_mean=config.loss.reduce_mean, t_min=t_lo, **kw)
        if name in ("eps", "x0", "v"):
            if param != name:
                raise ValueError(f"config.loss.name={name!r} trains a {name!r} network: set config.model.parameterization={name!r}.")
            fn = {"eps": losses.eps_loss, "x0": losses.x0_loss, "v": losses.v_loss}[name]
            return fn(apply, params, loss_key, x0, sde, reduce_mean=config.loss.reduce_mean,
                      num_timesteps=num_timesteps, t_min=None if num_timesteps else t_lo, **kw)
        if name in ("ncsn", "ism", "ssm"):
            def score_apply(p, x, t, **k):  # the network as a score at (x, t), whatever its parameterization
                return make_score_fn(apply, p, sde, param, **k)(x, t)

        if name == "ncsn":
            def ladder_apply(p, x, idx, **k):  # ladder index -> the level's time
                return score_apply(p, x, ladder_ts[idx].astype(x.dtype), **k)

            return losses.multiscale_dsm_loss(ladder_apply, params, loss_key, x0, ladder_sigmas.astype(x0.dtype),
                                              noise_input="index", anneal_power=float(lc.get("anneal_power", 2.0)),
                                              reduce_mean=config.loss.reduce_mean, **kw)
        if name == "ism":
            def ism(a, p, k, x, t, **kk):
                return losses.implicit_score_matching(a, p, x, t=t, key=k, divergence=lc.get("divergence", "exact"),
                                                      reduce_mean=config.loss.reduce_mean, **kk)

            return _noisy_score_matching(ism, score_apply, params, loss_key, x0, sde, t_lo, **kw)
        if name == "ssm":
            def ssm(a, p, k, x, t, **kk):
                return losses.sliced_score_matching(a, p, k, x, t=t, num_projections=int(lc.get("num_projections", 1)),
                                                    variance_reduced=bool(lc.get("variance_reduced", True)),
                                                    reduce_mean=config.loss.reduce_mean, **kk)

            return _noisy_score_matching(ssm, score_apply, params, loss_key, x0, sde, t_lo, **kw)
        if name == "edm":
            if param != "edm":
                raise ValueError("config.loss.name='edm' needs config.model.parameterization='edm'.")
            return losses.edm_loss(apply, params, loss_key, x0, reduce_mean=config.loss.reduce_mean, **kw)
        raise ValueError(f"config.loss.name: expected continuous_dsm, eps, x0, v, edm, ncsn, ism or ssm, got {name!r}.")

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


def _starts_at_exact_teacher(config) -> bool:
    """A distilled student of an exact teacher that started as it (``distill.teacher == "exact"``,
    ``distill.student_init == "teacher"``; runs written before that key existed were fresh)."""
    d = config.get("distill")
    return d is not None and d.get("teacher") == "exact" and d.get("student_init", "fresh") == "teacher"


def exact_teacher(config, sde):
    """The exact score a teacher-initialised student of an exact teacher adds its correction to
    (:mod:`jaxscore.distill.residual`; its params are ``{"net": ..., "gain": ...}``), or None for every other run."""
    return TOY_MIXTURES[config.data.name]().score_fn(sde) if _starts_at_exact_teacher(config) else None


def run_init_fn(config, model, shape) -> Callable:
    """:func:`make_init_fn`, with the residual wrapping of a teacher-initialised student of an exact teacher."""
    init = make_init_fn(model, shape)
    if not _starts_at_exact_teacher(config):
        return init
    from jaxscore.distill.residual import residual_params

    return lambda key: residual_params(init(key))


def student_apply(config, sde, apply):
    """``apply`` as the run trains and samples it: for a teacher-initialised student of an exact teacher
    (:func:`exact_teacher`), that teacher plus ``apply``'s zero-gain correction (:mod:`jaxscore.distill.residual`,
    in the consistency form for a consistency student); else ``apply`` itself."""
    teacher = exact_teacher(config, sde)
    if teacher is None:
        return apply
    from jaxscore.distill.residual import residual_apply, residual_consistency_apply

    if config.model.parameterization == "consistency":
        return residual_consistency_apply(apply, teacher, sde)
    return residual_apply(apply, teacher, sde, config.model.parameterization)


def model_score_fn(config, model, params, sde, **apply_kwargs):
    """The trained network as ``score_fn(x, t)`` (eval mode: no dropout). A consistency student
    (``model.parameterization == "consistency"``, written by ``jaxscore distill``) becomes
    :func:`jaxscore.distill.consistency_score_fn`, whose x0 view is the consistency function; a student of an exact
    teacher that started as it is that teacher plus its network's correction (:func:`student_apply`)."""
    apply = student_apply(config, sde, lambda p, x, t, **kw: model.apply({"params": p}, x, t, train=False, **kw))
    if config.model.parameterization == "consistency":
        from jaxscore.distill.consistency import consistency_score_fn

        return consistency_score_fn(apply, params, sde, **apply_kwargs)
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
    params, step = restore_params(workdir, run_init_fn(config, model, data_shape), which="ema_params")
    return config, model, params, sde, data_shape, step


def student_sampling(workdir: str, sampler: str | None = None, steps: int | None = None, options: dict | None = None,
                     config=None) -> tuple[str | None, int | None, dict]:
    """``(sampler, steps, options)`` for sampling the run in ``workdir``, filling what the caller left as None
    from a distilled student's own sampler (``jaxscore distill``): a consistency student
    (``model.parameterization == "consistency"``) -> ``"consistency"`` at ``sampling.steps``; a
    progressive-distillation stage -> ``"ddim"`` at its distilled step count, on its grid (``grid.npz``, key
    ``ts``, added as the ``grid`` option when the sampler and step count are the student's and no grid is given).
    Any other run is returned unchanged (``None`` stays ``None``: the caller's defaults apply)."""
    options = dict(options or {})
    config = load_run_config(workdir) if config is None else config
    if config.model.parameterization == "consistency":
        own, grid_path = "consistency", None
    elif config.get("distill") is not None and config.distill.get("method") == "progressive":
        own, grid_path = str(config.sampling.sampler), os.path.join(workdir, "grid.npz")
    else:
        return sampler, steps, options
    sampler = sampler or own
    if sampler == own:
        steps = steps or int(config.sampling.steps)
        if grid_path and steps == int(config.sampling.steps) and "grid" not in options and os.path.exists(grid_path):
            options["grid"] = jnp.asarray(np.load(grid_path)["ts"])
    return sampler, steps, options


def load_for_inference(workdir: str):
    """The config, EMA ``score_fn``, SDE and per-example data shape of the latest checkpoint in ``workdir``
    (a class-conditional model's score is its unconditional one: the null label)."""
    config, model, params, sde, data_shape, step = load_run(workdir)
    return config, model_score_fn(config, model, params, sde), sde, data_shape, step
