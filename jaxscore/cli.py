"""``jaxscore`` command line: train / distill / train-classifier / sample / restore / fit-grid / likelihood / eval / fid-stats / convert-inception.

    jaxscore train --config experiments/configs/toy2d.py --workdir runs/toy2d [--config.training.n_iters=500]
    jaxscore sample --workdir runs/toy2d --sampler dpmpp_2m --steps 20 --num 4096 --out samples.npz
    jaxscore sample --workdir runs/toy2d --sampler pc --steps 100 --option snr=0.16 --option corrector_steps=1
    jaxscore fit-grid --workdir runs/toy2d --sampler unipc --steps 10     # writes runs/toy2d/grids/unipc_10.npz
    jaxscore sample --workdir runs/toy2d --grid runs/toy2d/grids/unipc_10.npz --num 4096
    jaxscore likelihood --workdir runs/digits --data test --num 256
    jaxscore likelihood --workdir runs/digits --dequant-draws 5 --t-min 1e-5 --rtol 1e-5 --atol 1e-5 --solver dopri5
    jaxscore eval --workdir runs/digits --num 1000 --metrics fid,kid,is,pr      # features/reference from the run's config
    jaxscore fid-stats --data cifar10_train.npz --features inception --out cifar10_ref.npz
    jaxscore distill --config experiments/configs/digits_distill.py --teacher runs/digits --workdir runs/digits_pd
    jaxscore train-classifier --config experiments/configs/digits_classifier.py --workdir runs/digits_clf
    jaxscore sample --workdir runs/digits --classifier runs/digits_clf --label 3 --guidance-scale 2
    jaxscore restore --workdir runs/digits --task deblur --input digits.npz --method pigdm --out restored.npz

``train`` takes ``--config.a.b=value`` overrides of existing keys (an unknown key or a value of
the wrong type is an error, exit status 2). ``sample`` and ``likelihood`` use the EMA parameters
of the latest checkpoint in the workdir; ``sample --option key=value`` (repeatable) passes a
sampler option, the value parsed as int, float, bool (true/false), None or else a string.
``likelihood --data`` is ``train``, ``test`` (the run's own dataset) or an ``.npy``/``.npz`` file;
for images its defaults are score_sde's bits/dim settings (:mod:`jaxscore.likelihood`), and it
prints the mean with its standard error over examples (``*_sem``).
This is the edge of the library: names (samplers, presets, datasets) are resolved here
and in :mod:`jaxscore.experiment`, never inside the numerics.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings


def _train(args, overrides) -> int:
    from jaxscore.config import load_config
    from jaxscore.experiment import train_and_evaluate

    config = load_config(args.config, overrides)
    _check_workdir(args.workdir)
    result = train_and_evaluate(config, args.workdir, allow_config_change=args.allow_config_change)
    return int(getattr(result, "exit_code", 0) or 0)


def _distill(args, overrides) -> int:
    from jaxscore.config import load_config
    from jaxscore.distill.run import run_distillation

    config = load_config(args.config, overrides)
    _check_workdir(args.workdir)
    summary = run_distillation(config, args.workdir, teacher=args.teacher, allow_config_change=args.allow_config_change)
    for stage in summary["stages"]:
        print(f"student: {stage['dir']} ({stage['sampler']}, {stage['steps']} step(s); "
              f"{stage['train_steps']} training steps, {stage['minutes']:.2f} min)")
    return 0


def _train_classifier(args, overrides) -> int:
    from jaxscore.config import ConfigError, load_config
    from jaxscore.models.classifier import train_classifier

    config = load_config(args.config, overrides)
    if "classifier" not in config:
        raise ConfigError(f"--config {args.config}: expected a config with a 'classifier' section "
                          "(e.g. experiments/configs/digits_classifier.py).")
    _check_workdir(args.workdir)
    summary = train_classifier(config, args.workdir)
    print("held-out accuracy by t: " + ", ".join(f"t={t} {a:.3f}" for t, a in summary["accuracy_by_t"].items())
          + f" (chance {summary['chance']:.3f}); wrote {args.workdir}/accuracy.json")
    return 0


def _check_workdir(workdir: str) -> None:
    """``--workdir``: a directory (or a path that can become one) that this user can write."""
    from jaxscore.config import ConfigError

    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--workdir: expected a directory (new or a run's), got the file {workdir!r}.")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir: expected a directory this user can write, but {existing!r} is not writable.")


def parse_option(item: str) -> tuple[str, object]:
    """``"key=value"`` -> ``(key, value)`` with value parsed as int, float, bool, None or str."""
    from jaxscore.config import _parse_value

    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"--option {item!r}: expected key=value with key a Python identifier.")
    value = _parse_value(text)
    if not isinstance(value, (int, float, bool, str, type(None))):
        value = text  # lists/dicts are not sampler options: keep the text
    return key, value


def _check_sampler_options(sampler: str, options: dict) -> None:
    """Unknown sampler names/options (and a ``denoise`` that is no choice) are a usage error (before loading
    anything)."""
    from jaxscore.config import ConfigError, sampler_option_error

    try:
        error = sampler_option_error(sampler, options)
    except ValueError as e:
        raise ConfigError(f"--sampler: {e}") from e
    if error:
        raise ConfigError(f"--option: {error}, got {options!r}.")


def _grid_file(args, options: dict) -> None:
    """``sample --grid FILE``: the fitted grid becomes the ``grid`` option; its sampler and step count are
    the defaults of ``--sampler`` / ``--steps``, and other values given for them are an error."""
    from jaxscore.config import ConfigError

    if args.grid in (None, "default"):
        args.sampler = args.sampler or "dpmpp_2m"
        args.steps = args.steps or 20
        return
    from jaxscore.samplers.fit_grid import load_grid

    if "grid" in options:
        raise ConfigError("--grid and --option grid=...: give one grid.")
    ts, meta = load_grid(args.grid)
    if args.sampler is not None and args.sampler != meta["sampler"]:
        raise ConfigError(f"--grid {args.grid} was fitted for sampler {meta['sampler']!r}; expected --sampler "
                          f"{meta['sampler']} (or no --sampler), got {args.sampler!r}.")
    if args.steps is not None and args.steps != meta["steps"]:
        raise ConfigError(f"--grid {args.grid} holds a {meta['steps']}-step grid; expected --steps {meta['steps']} "
                          f"(or no --steps), got {args.steps}.")
    args.sampler, args.steps = meta["sampler"], meta["steps"]
    options["grid"] = ts


def _sample(args, overrides) -> int:
    from jaxscore.commands import sample_from_workdir
    from jaxscore.config import ConfigError

    if args.classifier is not None and args.label is None:
        raise ConfigError("--classifier: expected --label (the class to guide towards), got none.")
    if args.classifier is not None and args.label < 0:
        raise ConfigError(f"--label: expected a class index >= 0, got {args.label}.")
    options = dict(args.option or ())
    if args.grid in (None, "default") and os.path.exists(os.path.join(args.workdir, "config.json")):
        from jaxscore.experiment import student_sampling  # a distilled student samples with its own sampler

        args.sampler, args.steps, options = student_sampling(args.workdir, args.sampler, args.steps, options)
    _grid_file(args, options)
    _check_sampler_options(args.sampler, options)
    path = sample_from_workdir(
        args.workdir, sampler=args.sampler, steps=args.steps, num=args.num, out=args.out,
        batch_size=args.batch_size, seed=args.seed, label=args.label, guidance_scale=args.guidance_scale,
        classifier=args.classifier, fitted_grid=args.grid is None, **options,
    )
    print(f"wrote {path}")
    return 0


def _restore(args, overrides) -> int:
    from jaxscore.commands import restore_from_workdir

    result = restore_from_workdir(args.workdir, task=args.task, input=args.input, method=args.method, out=args.out,
                                  noise_std=args.noise_std, steps=args.steps, particles=args.particles, seed=args.seed,
                                  factor=args.factor, blur_std=args.blur_std)
    print(f"{args.task} / {args.method}: PSNR {result['psnr']:.2f} dB over {result['num']} images "
          f"(least squares A+y: {result['psnr_least_squares']:.2f} dB)")
    print(f"wrote {result['out']}")
    return 0


def _fit_grid(args, overrides) -> int:
    from jaxscore.commands import fit_grid_for_workdir

    options = dict(args.option or ())
    _check_sampler_options(args.sampler, options)
    with warnings.catch_warnings(record=True) as caught:  # fit_grid's warnings as one line each, no source line
        warnings.simplefilter("always", UserWarning)
        path, info = fit_grid_for_workdir(args.workdir, sampler=args.sampler, steps=args.steps, num=args.num,
                                          iters=args.iters, reference_steps=args.reference_steps, seed=args.seed,
                                          out=args.out, **options)
    for w in caught:
        if str(w.message).startswith("fit_grid:"):
            print(f"jaxscore: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(f"fitted {args.steps}-step grid for {args.sampler}: distance to the {info['reference_steps']}-step "
          f"reference {info['loss_init']:.4g} -> {info['loss']:.4g} ({info['score_evals']} score evaluations, "
          f"{info['score_vjps']} VJPs)")
    print(f"wrote {path}")
    return 0


def _likelihood(args, overrides) -> int:
    from jaxscore.commands import likelihood_from_workdir

    extra = {"steps": args.steps} if args.steps is not None else {}
    result = likelihood_from_workdir(
        args.workdir, data=args.data, num=args.num, divergence=args.divergence, batch_size=args.batch_size,
        seed=args.seed, dequant_draws=args.dequant_draws, t_min=args.t_min, solver=args.solver, rtol=args.rtol,
        atol=args.atol, **extra,
    )
    for key, value in result.items():
        print(f"{key}: {value}")
    if result["num"] < args.num:
        print(f"note: asked for {args.num} examples; the data has {result['num']}, all evaluated")
    if "bits_per_dim" in result:
        k = result["dequant_draws"]
        print(f"bits/dim {result['bits_per_dim']:.4f} +- {result['bits_per_dim_sem']:.4f} (standard error of the mean "
              f"over {result['num']} images; each image's value is its mean over {k} dequantisation draw{'s' * (k > 1)})")
    return 0


def _comma_list(text: str | None, what: str, choices: tuple[str, ...] | None = None) -> list[str]:
    from jaxscore.config import ConfigError

    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    bad = sorted(set(items) - set(choices)) if choices else []
    if bad:
        raise ConfigError(f"{what}: expected a comma-separated subset of {list(choices)}, got unknown {bad}.")
    return items


def _eval(args, overrides) -> int:
    from jaxscore.commands import evaluate_workdir
    from jaxscore.config import ConfigError

    metrics = _comma_list(args.metrics, "--metrics", ("fid", "kid", "is", "pr", "bpd"))
    if args.ref is not None and args.data is not None:
        raise ConfigError("--ref and --data: give one reference (statistics file or images), not both.")
    scales = _comma_list(args.guidance_scales, "--guidance-scales")
    try:
        scales = [float(s) for s in scales]
    except ValueError as e:
        raise ConfigError(f"--guidance-scales: expected comma-separated numbers, got {args.guidance_scales!r}.") from e
    options = dict(args.option or ())
    if args.sampler is not None:
        _check_sampler_options(args.sampler, options)
    result = evaluate_workdir(args.workdir, num=args.num, metrics=metrics, ref=args.ref, data=args.data,
                              features=args.features, inception_weights=args.inception_weights, sampler=args.sampler,
                              steps=args.steps, options=options, batch_size=args.batch_size, seed=args.seed,
                              bpd_num=args.bpd_num, guidance_scales=scales or None, out=args.out,
                              fitted_grid=args.grid == "fitted")
    for key, value in result.items():
        if key != "guidance":
            print(f"{key}: {value}")
    for scale, res in result.get("guidance", {}).items():
        print(f"guidance scale {scale}: " + ", ".join(f"{k} {v:.4g}" for k, v in res.items() if isinstance(v, float)))
    return 0


def _fid_stats(args, overrides) -> int:
    from jaxscore.commands import fid_stats
    from jaxscore.config import load_config

    config = load_config(args.config, overrides) if args.config else None
    info = fid_stats(args.out, features=args.features, config=config, split=args.split, data=args.data,
                     inception_weights=args.inception_weights, num=args.num, batch_size=args.batch_size)
    print(f"wrote {info['out']}: statistics of {info['count']} images, {info['feature_dim']} features")
    return 0


def _convert_inception(args, overrides) -> int:
    from jaxscore.evaluation.convert_inception import convert_pytorch_fid_weights

    print(f"wrote {convert_pytorch_fid_weights(args.src, args.out)}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error style: one line ``jaxscore: …``, exit status 2."""

    def error(self, message):
        where = self.prog[len("jaxscore"):].strip()
        print(f"jaxscore: {where + ': ' if where else ''}{message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def finite_float(text: str) -> float:
    """A finite float (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite float > 0 (argparse type)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite float >= 0 (argparse type)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jaxscore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume) a model from a config file")
    train.add_argument("--config", required=True, help="config file (path.py or path.py:arg)")
    train.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics, pictures")
    train.add_argument("--allow-config-change", action="store_true", help="resume even if the config differs from the saved one")
    train.set_defaults(run=_train)

    distill = sub.add_parser("distill", help="few-step students of a teacher: progressive distillation, "
                                             "consistency distillation / training")
    distill.add_argument("--config", required=True, help="config file with a distill section (path.py or path.py:arg)")
    distill.add_argument("--teacher", default=None, help="the teacher's run directory, or 'exact' (a toy mixture's "
                                                        "exact score); default: the config's distill.teacher")
    distill.add_argument("--workdir", required=True, help="students' directory: stage run directories, distill.json")
    distill.add_argument("--allow-config-change", action="store_true", help="resume even if the config differs from the saved one")
    distill.set_defaults(run=_distill)

    sample = sub.add_parser("sample", help="draw samples with the EMA parameters of the latest checkpoint")
    sample.add_argument("--workdir", required=True)
    sample.add_argument("--sampler", default=None, help="default: the --grid file's sampler, else dpmpp_2m")
    sample.add_argument("--steps", type=positive_int, default=None, help="default: the --grid file's steps, else 20")
    sample.add_argument("--grid", default=None, help="a time grid fitted by `jaxscore fit-grid` (.npz); sets the "
                                                     "sampler and steps it was fitted for. Default: the run's own "
                                                     "WORKDIR/grids/<sampler>_<steps>.npz when fitted on this "
                                                     "checkpoint with these options; 'default': the sampler's own grid")
    sample.add_argument("--num", type=positive_int, default=64)
    sample.add_argument("--batch-size", type=positive_int, default=1024)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default="samples.npz", help="npz file (key 'samples'); a picture <name>_grid.png "
                                                             "(images) or <name>_scatter.png (2-D) is written beside it")
    sample.add_argument("--label", type=int, default=None,
                        help="class-conditional models: draw this class (default: sample i gets class i %% num_classes)")
    sample.add_argument("--guidance-scale", type=finite_float, default=None,
                        help="class-conditional models: classifier-free guidance scale (default: the run's "
                             "sampling.guidance_scale; 1 = conditional, 0 = unconditional)")
    sample.add_argument("--option", action="append", type=parse_option, metavar="KEY=VALUE",
                        help="sampler option (repeatable), e.g. --option snr=0.16 --option eta=1.0")
    sample.add_argument("--classifier", default=None, metavar="WORKDIR",
                        help="classifier guidance with a noise-conditional classifier run (`jaxscore train-classifier`): "
                             "needs --label; --guidance-scale is its scale (default 1)")
    sample.set_defaults(run=_sample)

    tc = sub.add_parser("train-classifier", help="train (or resume) a noise-conditional classifier p_t(y | x_t) "
                                                 "for classifier guidance")
    tc.add_argument("--config", required=True, help="config file with a classifier section (path.py or path.py:arg)")
    tc.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics.jsonl, accuracy.json")
    tc.set_defaults(run=_train_classifier)

    from jaxscore.inverse.tasks import METHODS, TASKS

    rs = sub.add_parser("restore", help="degrade clean images (y = A x + noise) and restore them with the run's model "
                                        "as prior (jaxscore.inverse)")
    rs.add_argument("--workdir", required=True)
    rs.add_argument("--task", required=True, choices=TASKS)
    rs.add_argument("--input", required=True, help=".npz with 'images' (uint8, or float in the run's data.value_range) "
                                                      "of the run's shape")
    rs.add_argument("--method", default="pigdm", choices=METHODS)
    rs.add_argument("--out", default="restored.npz", help="npz (restored, observed, clean) and <name>_grid.png beside it")
    rs.add_argument("--noise-std", type=positive_float, default=0.05, help="observation noise sigma_y")
    rs.add_argument("--steps", type=positive_int, default=None, help="default: the method's (jaxscore.inverse.tasks)")
    rs.add_argument("--particles", type=positive_int, default=16, help="tds: particles per image")
    rs.add_argument("--factor", type=positive_int, default=2, help="superres: the pooling factor")
    rs.add_argument("--blur-std", type=positive_float, default=1.0, help="deblur: Gaussian blur std in pixels")
    rs.add_argument("--seed", type=int, default=0)
    rs.set_defaults(run=_restore)

    fg = sub.add_parser("fit-grid", help="fit a deterministic sampler's time grid to the run's model "
                                         "(writes WORKDIR/grids/<sampler>_<steps>.npz for `sample --grid`)")
    fg.add_argument("--workdir", required=True)
    fg.add_argument("--sampler", default="dpmpp_2m")
    fg.add_argument("--steps", type=positive_int, default=10)
    fg.add_argument("--num", type=positive_int, default=256, help="calibration batch (prior draws)")
    fg.add_argument("--iters", type=positive_int, default=100, help="Adam steps")
    fg.add_argument("--reference-steps", type=positive_int, default=None, help="default max(10 * steps, 100)")
    fg.add_argument("--seed", type=int, default=0)
    fg.add_argument("--out", default=None, help="default WORKDIR/grids/<sampler>_<steps>.npz")
    fg.add_argument("--option", action="append", type=parse_option, metavar="KEY=VALUE", help="sampler option (repeatable)")
    fg.set_defaults(run=_fit_grid)

    lik = sub.add_parser("likelihood", help="mean NLL (nats) and bits/dim through the probability-flow ODE")
    lik.add_argument("--workdir", required=True)
    lik.add_argument("--data", default=None, help="'train', 'test' (the run's dataset) or an .npy/.npz file")
    lik.add_argument("--num", type=positive_int, default=256)
    lik.add_argument("--batch-size", type=positive_int, default=128)
    lik.add_argument("--divergence", choices=("exact", "hutchinson"), default=None,
                     help="default: hutchinson (one Rademacher probe, as score_sde) for images, exact for toy data")
    lik.add_argument("--seed", type=int, default=0)
    lik.add_argument("--t-min", type=nonnegative_float, default=None,
                     help="start of the probability-flow ODE (default: 1e-5 for images, score_sde's likelihood "
                          "eps; the SDE's t_min for toy data)")
    lik.add_argument("--rtol", type=positive_float, default=1e-5, help="ODE relative tolerance (score_sde: 1e-5)")
    lik.add_argument("--atol", type=positive_float, default=1e-5, help="ODE absolute tolerance (score_sde: 1e-5)")
    lik.add_argument("--solver", choices=("tsit5", "dopri5", "heun", "euler"), default=None,
                     help="diffrax solver (default: dopri5 = score_sde's RK45 for images, tsit5 for toy data; "
                          "euler needs --steps)")
    lik.add_argument("--steps", type=positive_int, default=None, help="fixed uniform steps (default: adaptive)")
    lik.add_argument("--dequant-draws", type=positive_int, default=1, metavar="K",
                     help="images: average each image's bits/dim over K independent uniform dequantisation draws "
                          "(and probes); score_sde's test-set protocol is 5")
    lik.set_defaults(run=_likelihood)

    ev = sub.add_parser("eval", help="sample quality (FID, KID, IS, precision/recall) and bits/dim of a run")
    ev.add_argument("--workdir", required=True)
    ev.add_argument("--num", type=positive_int, default=None, help="samples to draw (default: the run's eval.fid_num)")
    ev.add_argument("--metrics", default="fid,kid,is,pr", help="comma-separated: fid, kid, is, pr, bpd")
    ev.add_argument("--ref", default=None, help="reference statistics .npz (keys mu, sigma; as pytorch-fid / "
                                               "clean-fid write them, or `jaxscore fid-stats`)")
    ev.add_argument("--data", default=None, help="reference images instead of --ref: 'train', 'test' (the run's "
                                                "dataset) or an .npy/.npz file (default: the run's eval.fid_ref)")
    ev.add_argument("--features", default=None, help="feature network: digits, mnist or inception "
                                                    "(default: the run's eval.features)")
    ev.add_argument("--inception-weights", default=None, help="converted FID Inception weights (.npz; see "
                                                             "`jaxscore convert-inception`); default $JAXSCORE_INCEPTION_WEIGHTS")
    ev.add_argument("--sampler", default=None, help="default: the run's sampling.sampler")
    ev.add_argument("--steps", type=positive_int, default=None, help="default: the run's sampling.steps")
    ev.add_argument("--option", action="append", type=parse_option, metavar="KEY=VALUE", help="sampler option (repeatable)")
    ev.add_argument("--grid", choices=("fitted", "default"), default="fitted",
                    help="fitted (default): the run's own WORKDIR/grids/<sampler>_<steps>.npz when fitted on this "
                         "checkpoint with these options; default: the sampler's own grid")
    ev.add_argument("--batch-size", type=positive_int, default=500)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--bpd-num", type=positive_int, default=256, help="test images for the bpd metric")
    ev.add_argument("--guidance-scales", default=None, help="class-conditional runs: comma-separated scales; writes "
                                                           "per-class accuracy of guided samples vs scale (guidance_accuracy.png)")
    ev.add_argument("--out", default=None, help="JSON file (default WORKDIR/eval.json)")
    ev.set_defaults(run=_eval)

    fs = sub.add_parser("fid-stats", help="reference feature statistics of a dataset (.npz with mu, sigma, features)")
    src = fs.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="config file: its dataset (path.py or path.py:arg)")
    src.add_argument("--data", help="an .npy/.npz image file (uint8 [N, H, W, C])")
    fs.add_argument("--split", default="train", help="with --config: train, test or all")
    fs.add_argument("--features", required=True, help="digits, mnist or inception")
    fs.add_argument("--inception-weights", default=None)
    fs.add_argument("--num", type=positive_int, default=None, help="first NUM images (default all)")
    fs.add_argument("--batch-size", type=positive_int, default=500)
    fs.add_argument("--out", required=True)
    fs.set_defaults(run=_fid_stats)

    conv = sub.add_parser("convert-inception", help="convert pytorch-fid's Inception weights (.pth) to .npz (needs torch)")
    conv.add_argument("--src", required=True, help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid's FID weights)")
    conv.add_argument("--out", required=True, help="output .npz")
    conv.set_defaults(run=_convert_inception)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv  # accepted anywhere on the line
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    try:  # usage errors print their one line (_Parser.error) and exit 2; --help exits 0
        args, rest = parser.parse_known_args(argv)
        overrides = [a for a in rest if a.startswith("--config.")]
        unknown = [a for a in rest if not a.startswith("--config.")]
        if overrides and not (args.command in ("train", "distill", "train-classifier") or (args.command == "fid-stats" and args.config)):
            unknown += overrides  # --config.* overrides only apply where a config file is loaded
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    except SystemExit as e:
        return int(e.code or 0)
    args.debug = debug
    import logging

    from jaxscore.config import ConfigError

    if not args.debug:  # orbax logs "Given directory is read only" on every restore
        logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        return args.run(args, overrides)
    except ConfigError as e:
        if args.debug:
            raise
        print(f"jaxscore: config error: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError, FloatingPointError) as e:  # bad input the library named: one line, exit 2
        if args.debug:
            raise
        print(f"jaxscore: {e}".replace("\n", " "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
