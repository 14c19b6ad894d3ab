r"""``jaxscore distill``: a teacher's run directory (or an exact toy score) becomes few-step students,
trained by the ordinary training loop (:func:`jaxscore.train.train`: orbax checkpoints, resume,
``training.mode`` single / pmap / sharded, metrics.jsonl, the run's evaluators).

``config.distill`` (defaults in :func:`distill_section`):

* ``method``: ``"progressive"`` (Salimans & Ho), ``"consistency_distillation"`` or
  ``"consistency_training"`` (no teacher);
* ``teacher``: a run directory, ``"exact"`` (the exact score of a toy mixture dataset, ``data.name``
  ring / grid) or ``""`` (then ``--teacher`` must say);
* progressive: ``base_steps`` (the teacher's DDIM steps :math:`N_0` on the uniform-time grid from ``T``
  to ``sde.t_min``), ``stages`` (0 = down to one step), ``weighting`` (``truncated_snr`` |
  ``snr_plus_one``);
* ``student_init``: ``"teacher"`` (default): the student starts as its teacher, with the teacher run's EMA
  weights or, for ``"exact"``, as the exact score plus a correction network with a zero-initialised gain
  (:mod:`jaxscore.distill.residual`; ``jaxscore sample`` / ``eval`` rebuild it from the run's config);
  ``"fresh"``: ``config.model`` (or the teacher's architecture) freshly initialised;
* consistency: ``solver`` (heun | euler, the teacher's ODE step), ``s0`` / ``s1`` (iCT's level
  curriculum, :func:`~jaxscore.distill.consistency.ict_levels`), ``level_sampling`` (lognormal |
  uniform), ``p_mean`` / ``p_std``, ``huber_c`` (< 0: iCT's ``0.00054 sqrt(dim)``), ``sample_steps``
  (the steps of the ``consistency`` sampler in the run's pictures and FID).

``training.n_iters`` is the number of optimizer steps *per stage*. With a teacher run directory the
student has the teacher's ``data``, ``sde`` and ``model`` sections (its network, initialised from the
teacher's EMA parameters); with ``"exact"`` or without a teacher it is ``config.model`` (see ``student_init``). Layout: progressive stage ``k`` (``N_k = N_0 / 2^k`` steps) is the run directory
``WORKDIR/stage<k>_<N_k>steps`` (its ``config.json`` samples with ``ddim``, ``N_k`` steps, so
``jaxscore sample --workdir WORKDIR/stage3_4steps --sampler ddim --steps 4`` reproduces it; the grid is
also saved as ``grid.npz``, key ``ts``); a consistency student is ``WORKDIR`` itself
(``model.parameterization = "consistency"``; :func:`load_student` makes its ``score_fn``).
``WORKDIR/distill.json`` sums up the stages: steps, grid, minutes, last metrics.
"""

from __future__ import annotations

import copy
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxscore._checks import check_choice
from jaxscore.distill.consistency import LEVEL_SAMPLING, ODE_SOLVERS, consistency_loss, consistency_score_fn, ict_levels
from jaxscore.distill.progressive import PD_WEIGHTINGS, halving_grids, progressive_distillation_loss

from jaxscore.distill import METHODS

CONSISTENCY_PARAMETERIZATION = "consistency"  # model.parameterization of a consistency student's run directory
STUDENT_INITS = ("teacher", "fresh")  # distill.student_init


def distill_section() -> ml_collections.ConfigDict:
    """The ``distill`` section with its defaults (module docstring)."""
    d = ml_collections.ConfigDict()
    d.method = "progressive"
    d.teacher = ""
    d.base_steps = 32
    d.stages = 0  # 0: halve down to one step
    d.weighting = "truncated_snr"
    d.solver = "heun"
    d.s0 = 10
    d.s1 = 1280
    d.level_sampling = "lognormal"
    d.p_mean = -1.1
    d.p_std = 2.0
    d.huber_c = -1.0  # < 0: 0.00054 * sqrt(dim)
    d.sample_steps = 1
    d.student_init = "teacher"
    return d


def _section(config):
    out = distill_section()
    given = config.get("distill") if hasattr(config, "get") else None
    if given is not None:
        for k, v in given.items():
            if k not in out:
                raise ValueError(f"config.distill: unknown key {k!r}; known keys {sorted(out.keys())}.")
            out[k] = v
    check_choice("config.distill.method", out.method, METHODS)
    check_choice("config.distill.student_init", out.student_init, STUDENT_INITS)
    return out


def _unlocked_copy(config) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(copy.deepcopy(config.to_dict()))


class _Teacher:
    """What a teacher spec resolves to: ``score_fn`` (or None), its network params (or None), and
    the sections the student takes over."""

    def __init__(self, spec: str, config, method: str):
        from jaxscore.data import TOY_MIXTURES
        from jaxscore.experiment import build_sde, is_conditional, load_run, load_run_config, model_score_fn

        self.spec, self.params, self.score_fn, self.sections = spec, None, None, {}
        if method == "consistency_training":
            if spec:
                raise ValueError("distill: consistency_training uses no teacher; drop --teacher / distill.teacher.")
            return
        if not spec:
            raise ValueError(f"distill: method {method!r} needs a teacher: --teacher RUN_DIR (a trained run) or "
                             "--teacher exact (the exact score of a toy mixture dataset).")
        if spec == "exact":
            if config.data.name not in TOY_MIXTURES:
                raise ValueError(f"distill: --teacher exact needs a toy mixture dataset (data.name one of "
                                 f"{tuple(TOY_MIXTURES)}), got data.name={config.data.name!r}.")
            self.score_fn = TOY_MIXTURES[config.data.name]().score_fn(build_sde(config.sde))
            return
        if not os.path.isdir(spec):
            raise FileNotFoundError(f"--teacher: expected a run directory or 'exact', got {spec!r} (no such directory).")
        tconf = load_run_config(spec)
        if is_conditional(tconf):
            raise ValueError(f"distill: the teacher {spec!r} is class-conditional; only unconditional teachers are supported.")
        if tconf.model.parameterization == CONSISTENCY_PARAMETERIZATION:
            raise ValueError(f"distill: the teacher {spec!r} is a consistency model; use a diffusion model's run.")
        _, model, params, sde, _, step = load_run(spec)
        self.params, self.step = params, step
        self.score_fn = model_score_fn(tconf, model, params, sde)
        self.sections = {name: _unlocked_copy(tconf[name]) for name in ("data", "sde", "model")}


def _student_config(config, teacher: _Teacher, method: str) -> ml_collections.ConfigDict:
    cfg = _unlocked_copy(config)
    for name, section in teacher.sections.items():
        cfg[name] = section
    cfg.distill = _section(config)
    cfg.distill.teacher = teacher.spec
    if method != "progressive":
        cfg.model.parameterization = CONSISTENCY_PARAMETERIZATION
    return cfg


def _apply(model, train: bool, dropout_key=None):
    if train:
        return lambda p, x, t, **kw: model.apply({"params": p}, x, t, train=True, rngs={"dropout": dropout_key}, **kw)
    return lambda p, x, t, **kw: model.apply({"params": p}, x, t, train=False, **kw)


def _evaluator_hooks(cfg, workdir, data, sde, loss_fn, test_batch_fn, score_with_params):
    """The run's evaluators (held-out loss, sample grid / toy report, FID when asked) as loop hooks."""
    from jaxscore.evaluators import Run, build_evaluators
    from jaxscore.train import Hook

    run = Run(config=cfg, workdir=workdir, data=data, sde=sde, loss_fn=jax.jit(loss_fn), test_batch_fn=test_batch_fn,
              score_with_params=score_with_params, class_score_with_params=None)
    return [Hook(ev, every=getattr(ev, "every", None), name=ev.name) for ev in build_evaluators(run)]


def _last_metrics(workdir: str) -> dict:
    from jaxscore.train import read_metrics

    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    out = {}
    for row in read_metrics(path):
        out.update({k: v for k, v in row.items() if isinstance(v, (int, float))})
    return out


def _train_stage(cfg, workdir, *, init_fn, loss_fn, batch_fn, hooks, allow_config_change):
    from jaxscore import viz
    from jaxscore.train import train

    t0 = time.perf_counter()
    result = train(cfg, workdir, init_fn=init_fn, loss_fn=loss_fn, batch_fn=batch_fn, eval_fns=hooks,
                   allow_config_change=allow_config_change)
    minutes = (time.perf_counter() - t0) / 60.0
    if jax.process_index() == 0:
        viz.save_training_curves(os.path.join(workdir, "metrics.jsonl"), workdir)
    return result, minutes


def run_distillation(config, workdir: str, *, teacher: str | None = None, allow_config_change: bool = False) -> dict:
    """Train the students ``config.distill`` asks for into ``workdir`` (module docstring); resumable:
    a finished stage is restored, not retrained. Returns the summary also written to
    ``workdir/distill.json`` (``stages``: per stage its directory, sampler, steps, grid, training
    steps, minutes of this call and last logged metrics). ``teacher`` overrides ``distill.teacher``."""
    from jaxscore.experiment import build_model_from_config, build_sde, load_data, run_init_fn
    from jaxscore.train import maybe_initialize_distributed

    maybe_initialize_distributed(config)
    section = _section(config)
    method = section.method
    spec = section.teacher if teacher is None else str(teacher)
    t = _Teacher(spec, config, method)
    cfg = _student_config(config, t, method)
    workdir = os.path.abspath(workdir)
    sde = build_sde(cfg.sde)
    data = load_data(cfg)
    if data["image"] and cfg.model.get("num_classes"):
        raise ValueError("distill: class-conditional students are not supported (unset model.num_classes).")
    model = build_model_from_config(cfg.model)
    shard = dict(process_index=jax.process_index(), process_count=jax.process_count())
    fresh_init = run_init_fn(cfg, model, data["shape"])  # residual params for a teacher-initialised exact student
    if section.student_init == "fresh":
        t.params = None
    if method == "progressive":
        stages = _progressive(cfg, section, workdir, t, sde, data, model, shard, fresh_init, allow_config_change)
    else:
        stages = _consistency(cfg, section, workdir, t, sde, data, model, shard, fresh_init, allow_config_change)
    summary = {"method": method, "teacher": spec, "workdir": workdir, "stages": stages}
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "distill.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _progressive(cfg, section, workdir, teacher, sde, data, model, shard, fresh_init, allow_config_change):
    from jaxscore.experiment import make_batch_fn, model_score_fn, student_apply

    base = int(section.base_steps)
    grids = halving_grids(sde, base, "uniform", stages=int(section.stages) or None)
    param = cfg.model.parameterization
    teacher_score, params = teacher.score_fn, teacher.params
    batch_fn = make_batch_fn(cfg, data, **shard)
    test_batch_fn = make_batch_fn(cfg, data, "test", **shard)
    stages = []
    for k in range(1, len(grids)):
        n_k = len(grids[k]) - 1
        stage_dir = os.path.join(workdir, f"stage{k}_{n_k}steps")
        stage_cfg = _unlocked_copy(cfg)
        _set_sampler(stage_cfg, "ddim", n_k)
        stage_cfg.distill.stage = k
        teacher_grid = jnp.asarray(grids[k - 1])

        def loss_fn(p, key, batch, teacher_score=teacher_score, teacher_grid=teacher_grid):
            loss_key, dropout_key = jax.random.split(key)
            return progressive_distillation_loss(student_apply(cfg, sde, _apply(model, True, dropout_key)), p,
                                                 loss_key, batch["x"], sde,
                                                 teacher_score, teacher_grid, parameterization=param,
                                                 weighting=str(section.weighting))

        def score_with_params(p, x, t, stage_cfg=stage_cfg):
            return model_score_fn(stage_cfg, model, p, sde)(x, t)

        init_fn = fresh_init if params is None else (lambda key, params=params: params)
        hooks = _evaluator_hooks(stage_cfg, stage_dir, data, sde, loss_fn, test_batch_fn, score_with_params)
        result, minutes = _train_stage(stage_cfg, stage_dir, init_fn=init_fn, loss_fn=loss_fn, batch_fn=batch_fn,
                                       hooks=hooks, allow_config_change=allow_config_change)
        if result.preempted:
            raise SystemExit(result.exit_code)
        params = result.state.ema_params
        teacher_score = model_score_fn(stage_cfg, model, params, sde)
        if jax.process_index() == 0:
            np.savez(os.path.join(stage_dir, "grid.npz"), ts=np.asarray(grids[k]), teacher_ts=np.asarray(grids[k - 1]))
        stages.append({"dir": stage_dir, "sampler": "ddim", "steps": n_k, "grid": np.asarray(grids[k]).tolist(),
                       "train_steps": int(result.step), "minutes": minutes, "metrics": _last_metrics(stage_dir)})
    return stages


def _set_sampler(cfg, sampler: str, steps: int) -> None:
    """Make ``sampler`` at ``steps`` the student's own sampler in its (unlocked) config; the teacher's
    ``sampling.options`` belong to the teacher's sampler and are dropped."""
    cfg.sampling.sampler, cfg.sampling.steps = sampler, steps
    if "options" in cfg.sampling:
        cfg.sampling.options = ml_collections.ConfigDict()


def _consistency(cfg, section, workdir, teacher, sde, data, model, shard, fresh_init, allow_config_change):
    from jaxscore.experiment import make_batch_fn, student_apply

    _set_sampler(cfg, "consistency", int(section.sample_steps))
    n_iters, s0, s1 = int(cfg.training.n_iters), int(section.s0), int(section.s1)
    huber_c = None if float(section.huber_c) < 0 else float(section.huber_c)

    def with_levels(batch_fn):
        def fn(step):
            batch = dict(batch_fn(step))
            rows = np.shape(batch["x"])[0]
            batch["n_levels"] = np.full((rows,), ict_levels(min(step, n_iters - 1), n_iters, s0, s1), np.int32)
            return batch
        return fn

    def loss_fn(p, key, batch):
        loss_key, dropout_key = jax.random.split(key)
        return consistency_loss(student_apply(cfg, sde, _apply(model, True, dropout_key)), p, loss_key, batch["x"],
                                sde, batch["n_levels"],
                                teacher_score_fn=teacher.score_fn, solver=str(section.solver), huber_c=huber_c,
                                level_sampling=str(section.level_sampling), p_mean=float(section.p_mean),
                                p_std=float(section.p_std), max_levels=s1 + 1, return_aux=True)

    apply_eval = student_apply(cfg, sde, _apply(model, False))

    def score_with_params(p, x, t):
        return consistency_score_fn(apply_eval, p, sde)(x, t)

    params = teacher.params
    init_fn = fresh_init if params is None else (lambda key: params)
    hooks = _evaluator_hooks(cfg, workdir, data, sde, loss_fn, with_levels(make_batch_fn(cfg, data, "test", **shard)),
                             score_with_params)
    result, minutes = _train_stage(cfg, workdir, init_fn=init_fn, loss_fn=loss_fn,
                                   batch_fn=with_levels(make_batch_fn(cfg, data, **shard)), hooks=hooks,
                                   allow_config_change=allow_config_change)
    if result.preempted:
        raise SystemExit(result.exit_code)
    return [{"dir": workdir, "sampler": "consistency", "steps": int(section.sample_steps),
             "train_steps": int(result.step), "minutes": minutes, "metrics": _last_metrics(workdir)}]


def load_student(workdir: str) -> dict:
    """A student's run directory (a progressive stage or a consistency run) as ``{"config", "score_fn",
    "sde", "shape", "step", "sampler", "steps", "options"}``: sample it with
    ``js.sample(key, d["score_fn"], d["sde"], (n, *d["shape"]), d["sampler"], d["steps"], **d["options"])``.
    A progressive run directory (holding ``stage*`` directories) gives its last stage. The score comes from
    :func:`jaxscore.experiment.load_for_inference` and the sampler from
    :func:`jaxscore.experiment.student_sampling`, as for ``jaxscore sample`` / ``eval``."""
    from jaxscore.experiment import load_for_inference, student_sampling

    stage_dirs = sorted((d for d in os.listdir(workdir) if d.startswith("stage") and os.path.isdir(os.path.join(workdir, d))),
                        key=lambda d: int(d[5:].split("_")[0])) if os.path.isdir(workdir) else []
    if stage_dirs and not os.path.exists(os.path.join(workdir, "config.json")):
        workdir = os.path.join(workdir, stage_dirs[-1])
    config, score_fn, sde, shape, step = load_for_inference(workdir)
    sampler, steps, options = student_sampling(workdir, config=config)
    if sampler is None:
        raise ValueError(f"load_student: {workdir!r} is not a distilled student (no consistency parameterization, "
                         f"no distill.method='progressive' in its config.json).")
    return {"config": config, "score_fn": score_fn, "sde": sde, "shape": shape, "step": step,
            "sampler": sampler, "steps": steps, "options": options}


__all__ = ["CONSISTENCY_PARAMETERIZATION", "LEVEL_SAMPLING", "METHODS", "ODE_SOLVERS", "PD_WEIGHTINGS",
           "distill_section", "load_student", "run_distillation"]
