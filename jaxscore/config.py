"""ml-collections config files with ``--config.a.b=value`` overrides, checked at load time.

A config file is a Python file with ``get_config()`` (optionally ``get_config(arg)`` for
``path.py:arg``) returning a ``ConfigDict``. Overrides must name existing keys; the value
is parsed as a Python literal and must fit the field's type. Errors name the key, what
was expected and what came.

The ``model`` section is ``name`` (a preset or class of :mod:`jaxscore.models`), the
non-network keys in ``MODEL_SECTION_KEYS`` (``parameterization``), and constructor fields
of the model class that *override the preset* (``ch``, ``dropout``...). Fields a config does
not set keep the preset's values. ``--config.model.<field>=...`` may name any constructor
field of the model class even if the file did not set it; any other key in ``model`` (a
misspelt field) is an error at load time, listing the valid fields.

Values are checked at load time too: :func:`validate_config` (called by :func:`load_config`
after the overrides) applies ``RULES``, one per key (names must be registered, counts and
periods positive, the learning rate positive and finite...), so a typo such as
``--config.sampling.sampler=dpmpp2m`` is a ``ConfigError`` before training starts rather
than a crash after it. Every ``ConfigError`` names the key, what was expected and what came.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import inspect
import math
import numbers
import os
from typing import Any, Callable, Iterable, Optional

import ml_collections

from jaxscore.data import DATASET_NAMES, DEFAULT_TEST_FRACTION, TOY_DATASETS, parse_value_range
from jaxscore.distill import LEVEL_SAMPLING, METHODS, ODE_SOLVERS, PD_WEIGHTINGS
from jaxscore.evaluation.extractors import FEATURES
from jaxscore.likelihood import DIVERGENCES
from jaxscore.losses import WEIGHTINGS
from jaxscore.parameterization import PARAMETERIZATIONS
from jaxscore.samplers import available_samplers
from jaxscore.train import MODES
from jaxscore.train.settings import config_to_dict as config_to_dict  # re-export: one JSON form of a config


class ConfigError(ValueError):
    """A config file or override that cannot be used."""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Load ``path.py`` or ``path.py:arg`` and call its ``get_config``."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist.")
    module_spec = importlib.util.spec_from_file_location(f"jaxscore_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a broken config file is a load-time error
        raise ConfigError(f"config file {path!r} failed to import: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} must define get_config().")
    config = _call_get_config(module.get_config, path, arg)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict, got {type(config).__name__}.")
    return config


def _call_get_config(get_config: Callable, path: str, variant: str) -> Any:
    """``get_config(variant)`` (``get_config()`` without one); an error it raises (an unknown
    variant, a file without variants given one) is a ``ConfigError`` naming the file and variant."""
    where = f"config file {path!r}" + (f", variant {variant!r}" if variant else "")
    if variant:
        try:
            inspect.signature(get_config).bind(variant)
        except TypeError:
            raise ConfigError(
                f"{where}: this file has no variants (its get_config() takes no argument); "
                f"use {path!r} without ':{variant}'."
            ) from None
        except ValueError:  # no signature to inspect (a builtin): just call it
            pass
    try:
        return get_config(variant) if variant else get_config()
    except ConfigError:
        raise
    except Exception as e:  # the file's own check of its variant, or a broken file
        raise ConfigError(f"{where}: get_config() raised {type(e).__name__}: {e}") from e


def _parse_value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# keys of ``config.model`` that are not constructor fields of the network
MODEL_SECTION_KEYS = ("name", "parameterization")


def model_fields(name: str) -> dict:
    """Constructor fields of the model class of preset/class ``name`` -> the value it would get
    (the preset's, else the class default, else ``None``). Raises ``ConfigError`` for an unknown name."""
    import dataclasses

    from jaxscore.models import MODEL_CLASSES, PRESET_NAMES, get_preset, preset_class

    if name in PRESET_NAMES:
        cls, preset = preset_class(name), get_preset(name)
    elif isinstance(name, str) and name.lower() in MODEL_CLASSES:
        cls, preset = MODEL_CLASSES[name.lower()], {}
    else:
        raise ConfigError(
            f"config.model.name: unknown model {name!r}; expected a preset {list(PRESET_NAMES)} "
            f"or a class {sorted(set(MODEL_CLASSES))}."
        )
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name in ("parent", "name"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        out[f.name] = preset.get(f.name, default)
    return out


def check_model_section(config: ml_collections.ConfigDict) -> None:
    """Every key of ``config.model`` must be a known section key or a field of the model class."""
    model = config.get("model") if isinstance(config, ml_collections.ConfigDict) else None
    if model is None or "name" not in model:
        return
    fields = model_fields(model.name)
    bad = sorted(k for k in model.keys() if k not in MODEL_SECTION_KEYS and k not in fields)
    if bad:
        raise ConfigError(
            f"config.model: unknown key(s) {bad} for model {model.name!r}; valid keys: "
            f"{sorted(MODEL_SECTION_KEYS)} and the model's fields {sorted(fields)}."
        )


def model_overrides(model_section) -> dict:
    """The constructor fields a ``config.model`` section sets (``None`` values = keep the preset's)."""
    section = model_section.to_dict() if hasattr(model_section, "to_dict") else dict(model_section)
    return {k: v for k, v in section.items() if k not in MODEL_SECTION_KEYS and v is not None}


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
    """Set ``config.<dotted> = parsed(text)``; the key must exist and the type must fit.

    Exception: ``model.<field>`` may be a constructor field of the model class that the file
    did not set (its type is checked against the preset's value); ``sampling.options.<name>`` may
    be any option of the sampler, and ``sampling.options`` a whole dict (names checked by
    :func:`validate_config` against the final ``sampling.sampler``)."""
    *parents, leaf = dotted.split(".")
    node = config
    for i, name in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise ConfigError(f"unknown config key 'config.{'.'.join(parents[: i + 1])}' (from --config.{dotted}).")
        node = node[name]
    if isinstance(node, ml_collections.ConfigDict) and leaf not in node and parents == ["model"] and "name" in node:
        fields = model_fields(node.name)
        if leaf in fields:
            with node.unlocked():
                node[leaf] = fields[leaf]  # the preset's value: the type check below applies
    if parents == ["sampling", "options"] and isinstance(node, ml_collections.ConfigDict) and leaf not in node:
        if not leaf.isidentifier():
            raise ConfigError(f"config.{dotted}: expected a sampler option name (an identifier), got {leaf!r}.")
        with node.unlocked():  # a sampler option the file did not set: validate_config checks the name
            node[leaf] = None
    if dotted == "sampling.options" and isinstance(node, ml_collections.ConfigDict) and "options" in node:
        value = _parse_value(text)  # the whole mapping, e.g. --config.sampling.options="{'step_lr': 8e-5}"
        if not isinstance(value, dict):
            raise ConfigError(f"config.sampling.options: expected a dict of sampler options, got {text!r}.")
        with node.unlocked():
            node["options"] = ml_collections.ConfigDict(value)
        return
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else ""
        if parents == ["model"] and isinstance(node, ml_collections.ConfigDict) and "name" in node:
            known += f"; fields of model {node.name!r}: {', '.join(sorted(model_fields(node.name)))}"
        raise ConfigError(f"unknown config key 'config.{dotted}'. Known keys here: {known}.")
    old = node[leaf]
    value = _parse_value(text)
    if isinstance(old, (list, tuple)) and isinstance(value, (int, float, str)):
        value = (value,)
    if isinstance(old, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(old, str) and not isinstance(value, str):
        value = text
    if old is not None and not isinstance(value, type(old)) and not (value is None):
        raise ConfigError(
            f"config.{dotted}: expected a value of type {type(old).__name__} (now {old!r}), got {text!r}."
        )
    with node.unlocked():
        node[leaf] = value


def load_config(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Load a config file and apply ``--config.a.b=value`` style overrides (``a.b=value`` also accepted)."""
    config = load_config_file(spec)
    for item in overrides:
        key, sep, text = item.removeprefix("--").removeprefix("config.").partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected --config.key=value.")
        apply_override(config, key, text)
    check_model_section(config)
    validate_config(config)
    config.lock()
    return config


# --- value rules: one per key -----------------------------------------------------------------

SDE_NAMES = ("vp", "ve", "subvp", "ddpm")  # config.sde.name (jaxscore.experiment.build_sde)
DDPM_SCHEDULES = ("linear", "cosine")  # config.sde.schedule of a "ddpm" SDE
# config.loss.name (jaxscore.experiment.make_loss_fn); the direct objectives train a network of that parameterization
LOSS_NAMES = ("continuous_dsm", "eps", "x0", "v", "edm", "ncsn", "ism", "ssm")
DIRECT_LOSSES = ("eps", "x0", "v", "edm")
T_SAMPLINGS = ("uniform", "importance")  # config.loss.t_sampling (continuous_dsm)


def _inv_sigma2(sde, t):
    r""":math:`\lambda(t) = 1/\sigma_t^2` (the score-matching term :math:`\|s_\theta - \nabla\log p_{t|0}\|^2`
    unweighted in the :math:`\varepsilon` scale's units: :math:`\|\hat\varepsilon-\varepsilon\|^2/\sigma_t^4`)."""
    return 1.0 / sde.marginal_coefs(t)[1] ** 2


def _snr(sde, t):
    r""":math:`\lambda(t) = \alpha_t^2` (:math:`\|\hat\varepsilon-\varepsilon\|^2` weighted by the SNR :math:`\alpha_t^2/\sigma_t^2`)."""
    return sde.marginal_coefs(t)[0] ** 2


# named weighting functions lambda(sde, t) for config.loss.weighting, besides the loss's own names
# (sigma2 | likelihood | uniform) and "module:function" import paths
WEIGHTING_FUNCTIONS = {"inv_sigma2": _inv_sigma2, "snr": _snr}


def resolve_weighting(name: str):
    """``config.loss.weighting`` -> what :func:`jaxscore.losses.continuous_dsm_loss` takes: one of its
    own names (``sigma2``, ``likelihood``, ``uniform``) as is, a name of :data:`WEIGHTING_FUNCTIONS`, or
    ``"package.module:function"``, imported here, a function ``lambda(sde, t: [B]) -> [B]``.
    Raises ``ConfigError`` naming what was expected."""
    if name in WEIGHTINGS:
        return name
    if name in WEIGHTING_FUNCTIONS:
        return WEIGHTING_FUNCTIONS[name]
    module, sep, attr = str(name).partition(":")
    expected = (f"config.loss.weighting: expected one of {WEIGHTINGS + tuple(WEIGHTING_FUNCTIONS)} or "
                f"'module:function' naming a function lambda(sde, t) -> [B]")
    if not sep or not module or not attr:
        raise ConfigError(f"{expected}, got {name!r}.")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{expected}, got {name!r}, which cannot be imported: {type(e).__name__}: {e}.") from None
    if not callable(fn):
        raise ConfigError(f"{expected}, got {name!r}, which is a {type(fn).__name__}, not a function.")
    return fn
FID_REFS = ("train", "test")  # config.eval.fid_ref: the split the samples are compared with

Check = Callable[[Any, ml_collections.ConfigDict], Optional[str]]


@dataclasses.dataclass(frozen=True)
class Rule:
    """The check of one config key: ``check(value, config)`` is ``None`` for a valid value, else the
    words for what is expected (``"expected one of ('vp', 've', 'subvp')"``); the error then reads
    ``config.<key>: <expected>, got <value>.``"""

    key: str
    check: Check


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def one_of(choices) -> Check:
    """``value`` in ``choices`` (a tuple, or a function giving the current registry's names)."""

    def check(value, config):
        names = tuple(choices() if callable(choices) else choices)
        if value in names:
            return None
        close = difflib.get_close_matches(str(value), [str(n) for n in names], n=1)
        return f"expected one of {names}" + (f" (did you mean {close[0]!r}?)" if close else "")

    return check


def greater_than(low: float) -> Check:
    """A finite number ``> low`` (a learning rate)."""
    return lambda value, config: (
        None if _is_number(value) and math.isfinite(value) and value > low else f"expected a finite number > {low}")


def count_at_least(low: int, *, allow_none: bool = False) -> Check:
    """An integer ``>= low`` (counts and periods; 0 may mean "never"), or ``None`` with ``allow_none``."""
    words = f"expected an integer >= {low}" + (" (or None)" if allow_none else "")

    def check(value, config):
        if value is None and allow_none:
            return None
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low else words

    return check


def in_interval(low: float, high: float, *, closed_low: bool = False) -> Check:
    """A number in ``(low, high)`` (``[low, high)`` with ``closed_low``)."""
    bracket = "[" if closed_low else "("

    def check(value, config):
        inside = _is_number(value) and (value >= low if closed_low else value > low) and value < high
        return None if inside else f"expected a number in {bracket}{low}, {high})"

    return check


def _loss_name(value, config) -> Optional[str]:
    """A known loss; the eps / x0 / v / edm objectives train a network of that parameterization."""
    wrong = one_of(LOSS_NAMES)(value, config)
    if wrong:
        return wrong
    param = _lookup(config, "model.parameterization")
    if value in DIRECT_LOSSES and param is not _MISSING and param != value:
        return (f"expected 'continuous_dsm' or the network's parameterization {param!r} "
                f"(loss {value!r} trains a {value!r} network: also set model.parameterization={value!r})")
    return None


def _weighting(value, config) -> Optional[str]:
    try:
        resolve_weighting(value)
    except ConfigError as e:
        return str(e).removeprefix("config.loss.weighting: ").rsplit(", got ", 1)[0]
    return None


def _file_range(value, config) -> Optional[str]:
    try:
        parse_value_range(value)
    except ValueError:
        return "expected '' (uint8/integer images) or 'low,high' for float images, e.g. '0,1' or '-1,1'"
    return None


def _value_range(value, config) -> Optional[str]:
    """``data.value_range``: the images' range for the model, a pair ``(lo, hi)`` with ``hi > lo``."""
    try:
        ok = parse_value_range(value) is not None
    except ValueError:
        ok = False
    return None if ok else ("expected a pair (low, high) with high > low: (-1.0, 1.0) (the default, "
                            "score_sde's centered data) or (0.0, 1.0) (NCSN's)")


def value_range(config) -> tuple[float, float]:
    """The images' range ``(lo, hi)`` of a run: ``config.data.value_range`` (the one place it lives).
    A config without it (a run saved before the key existed) or with ``""`` is ``(-1.0, 1.0)``."""
    data = config.get("data") if hasattr(config, "get") else None
    value = data.get("value_range") if data is not None and hasattr(data, "get") else None
    return parse_value_range(value) or (-1.0, 1.0)


def sampling_options(config, sampler: Optional[str] = None) -> dict:
    """The sampler options of a run, ``config.sampling.options`` as a dict, for ``sampler`` (default the
    run's ``sampling.sampler``). They are the options of the config's sampler: for another sampler they
    do not apply and the result is ``{}``. A config without the key (an older run) gives ``{}``."""
    sampling = config.get("sampling") if hasattr(config, "get") else None
    if sampling is None:
        return {}
    if sampler is not None and sampler != sampling.get("sampler"):
        return {}
    options = sampling.get("options")
    if options is None:
        return {}
    options = options.to_dict() if hasattr(options, "to_dict") else dict(options)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}


def sampler_option_error(sampler: str, options) -> Optional[str]:
    """What is wrong with ``options`` (names, or a mapping) for ``sampler``: option names it does not take, or a
    ``denoise`` that is none of :data:`jaxscore.samplers.grids.DENOISE_CHOICES`; ``None`` when nothing is. An
    unknown ``sampler`` raises ``ValueError`` (from ``get_sampler``). Shared by the config rule and the CLI's
    ``--option``."""
    from jaxscore.samplers import get_sampler
    from jaxscore.samplers.grids import DENOISE_CHOICES

    accepted = get_sampler(sampler).options
    bad = sorted(set(options) - set(accepted))
    if bad:
        return f"sampler {sampler!r} has no option(s) {bad}; its options are {sorted(accepted)}"
    d = options["denoise"] if hasattr(options, "keys") and "denoise" in options else False
    if not (isinstance(d, bool) or (isinstance(d, str) and d in DENOISE_CHOICES)):
        return f"denoise must be one of {DENOISE_CHOICES}"
    return None


def _sampler_options(value, config) -> Optional[str]:
    """``sampling.options``: a mapping of keyword options the config's ``sampling.sampler`` accepts."""
    if value is None:
        return None
    if not hasattr(value, "keys"):
        return "expected a mapping of the sampler's options (a ConfigDict or dict)"
    try:
        return sampler_option_error(_lookup(config, "sampling.sampler"), value)
    except ValueError:
        return None  # sampling.sampler's own rule names the bad sampler


def _t_min(value, config) -> Optional[str]:
    """``loss.t_min``: ``None`` (the SDE's) or a number in [0, 1) (time runs over [t_min, T = 1]); only
    ``None`` where the loss has its own times (``ncsn``'s ladder, ``edm``'s sigmas, a ``ddpm`` chain's
    integer steps for ``eps`` / ``x0`` / ``v``)."""
    if value is None:
        return None
    loss, sde = _lookup(config, "loss.name"), _lookup(config, "sde.name")
    if loss in ("ncsn", "edm") or (sde == "ddpm" and loss in ("eps", "x0", "v")):
        return f"expected None: loss {loss!r} on sde {sde!r} draws its own times"
    return None if _is_number(value) and 0.0 <= value < 1.0 else "expected None (the SDE's t_min) or a number in [0, 1)"


def _fid_num(value, config) -> Optional[str]:
    fid_every = _lookup(config, "eval.fid_every")
    if fid_every is _MISSING or not _is_number(fid_every) or fid_every <= 0:
        return None
    return None if _is_number(value) and value >= 2 else "expected an integer >= 2 when eval.fid_every > 0"


def _halvable_steps(value, config) -> Optional[str]:
    """``distill.base_steps``: an even integer >= 2 (each progressive stage halves it)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 2 and value % 2 == 0
    return None if ok else "expected an even integer >= 2 (each progressive-distillation stage halves the steps)"


def _distill_stages(value, config) -> Optional[str]:
    """``distill.stages``: 0 (down to one step) or how many times ``base_steps`` can be halved."""
    base = _lookup(config, "distill.base_steps")
    top = (base & -base).bit_length() - 1 if isinstance(base, numbers.Integral) and base > 0 else None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value and (top is None or value <= top)
    return None if ok else f"expected 0 (down to one step) or an integer in [1, {top}] (halvings of distill.base_steps={base})"


def _distill_s1(value, config) -> Optional[str]:
    s0 = _lookup(config, "distill.s0")
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and (not _is_number(s0) or value >= s0)
    return None if ok else f"expected an integer >= distill.s0 = {s0}"


def _model_dtype(value, config) -> Optional[str]:
    """``model.dtype``: the network's compute dtype (:mod:`jaxscore.models.precision`)."""
    from jaxscore.models.precision import COMPUTE_DTYPES, compute_dtype

    try:
        compute_dtype(value)
    except ValueError:
        return (f"expected None or one of {COMPUTE_DTYPES} (the compute dtype: bfloat16 activations and "
                "convolutions with float32 parameters; float16 would need loss scaling and is not supported)")
    return None


RULES: tuple[Rule, ...] = (
    Rule("training.n_iters", count_at_least(1)),
    Rule("training.batch_size", count_at_least(1)),
    Rule("training.mode", one_of(MODES)),
    Rule("training.steps_per_call", count_at_least(1)),
    Rule("training.log_every", count_at_least(1)),
    Rule("training.checkpoint_every", count_at_least(1)),
    Rule("training.eval_every", count_at_least(0)),
    Rule("training.label_dropout", in_interval(0.0, 1.0, closed_low=True)),
    Rule("optim.lr", greater_than(0)),
    Rule("optim.warmup", count_at_least(0)),
    Rule("optim.ema_rate", in_interval(0.0, 1.0, closed_low=True)),
    Rule("data.name", one_of(TOY_DATASETS + DATASET_NAMES)),
    Rule("data.test_fraction", in_interval(0.0, 1.0)),
    Rule("data.value_range", _value_range),
    Rule("data.file_range", _file_range),
    Rule("sde.name", one_of(SDE_NAMES)),
    Rule("model.parameterization", one_of(PARAMETERIZATIONS)),
    Rule("model.dtype", _model_dtype),
    Rule("loss.name", _loss_name),
    Rule("loss.weighting", _weighting),
    Rule("loss.t_sampling", one_of(T_SAMPLINGS)),
    Rule("loss.num_scales", count_at_least(1)),
    Rule("loss.t_min", _t_min),
    Rule("loss.anneal_power", lambda v, c: None if _is_number(v) and math.isfinite(v) else "expected a finite number"),
    Rule("loss.divergence", one_of(("exact", "hutchinson"))),
    Rule("loss.num_projections", count_at_least(1)),
    Rule("sde.schedule", one_of(DDPM_SCHEDULES)),
    Rule("sde.num_steps", count_at_least(1)),
    Rule("sampling.sampler", one_of(available_samplers)),
    Rule("sampling.steps", count_at_least(1, allow_none=True)),
    Rule("sampling.num_samples", count_at_least(1)),
    Rule("sampling.options", _sampler_options),
    Rule("eval.bpd_divergence", one_of(DIVERGENCES)),
    Rule("eval.features", one_of(FEATURES)),
    Rule("eval.fid_ref", one_of(FID_REFS)),
    Rule("eval.fid_every", count_at_least(0)),
    Rule("eval.fid_num", _fid_num),
    Rule("distill.method", one_of(METHODS)),
    Rule("distill.base_steps", _halvable_steps),
    Rule("distill.stages", _distill_stages),
    Rule("distill.weighting", one_of(PD_WEIGHTINGS)),
    Rule("distill.solver", one_of(ODE_SOLVERS)),
    Rule("distill.level_sampling", one_of(LEVEL_SAMPLING)),
    Rule("distill.s0", count_at_least(1)),
    Rule("distill.s1", _distill_s1),
    Rule("distill.p_std", greater_than(0)),
    Rule("distill.sample_steps", count_at_least(1)),
    # noise-conditional classifiers (jaxscore train-classifier)
    Rule("classifier.num_classes", count_at_least(2)),
    Rule("classifier.ch", count_at_least(1)),
    Rule("classifier.num_res_blocks", count_at_least(1)),
    Rule("classifier.embedding", one_of(("positional", "sinusoidal", "fourier"))),
    Rule("classifier.batch_size", count_at_least(1)),
    Rule("classifier.n_iters", count_at_least(1)),
    Rule("classifier.lr", greater_than(0)),
    Rule("classifier.log_every", count_at_least(1)),
    Rule("classifier.checkpoint_every", count_at_least(1)),
)
"""The value checks :func:`validate_config` applies, one per key."""

_MISSING = object()


def _lookup(config, dotted: str):
    node = config
    for name in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            return _MISSING
        node = node[name]
    return node


def validate_config(config: ml_collections.ConfigDict, rules: Iterable[Rule] = RULES) -> None:
    """Raise ``ConfigError`` for the first key whose value breaks its rule in ``rules``
    (default ``RULES``), naming the key, what was expected and what came. Keys a config does
    not have are skipped (the training package falls back to its defaults)."""
    for rule in rules:
        value = _lookup(config, rule.key)
        if value is _MISSING:
            continue
        expected = rule.check(value, config)
        if expected:
            shown = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
            raise ConfigError(f"config.{rule.key}: {expected}, got {shown!r}.")


def base_config() -> ml_collections.ConfigDict:
    """Every key a run reads, with defaults; preset files in ``experiments/configs`` start from this.

    ``seed`` and the ``training``/``optim``/``distributed`` sections are the training package's
    own defaults (``jaxscore.train.DEFAULTS``), plus ``training.label_dropout``; the sections
    the experiment layer reads are defined below, one function each: ``data``, ``sde``,
    ``model``, ``loss``, ``sampling``, ``eval``.
    """
    from jaxscore.train import default_config

    c = default_config()
    with c.training.unlocked():
        c.training.label_dropout = 0.1  # class-conditional models (model.num_classes): P(label -> null), for CFG
    c.data = _data_section()
    c.sde = _sde_section()
    c.model = _model_section()
    c.loss = _loss_section()
    c.sampling = _sampling_section()
    c.eval = _eval_section()
    return c


def _data_section() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.name = "ring"  # toy: ring | grid | moons | swiss_roll | checkerboard | rings; images: digits | mnist | cifar10 | array | folder
    d.path = ""  # file or folder for mnist / cifar10 / array / folder
    # array / folder: the test split is the file/folder test_path, else the last test_fraction of
    # each class of path (jaxscore.data.heldout_split); mnist / cifar10 / digits have their own
    d.test_path = ""
    d.test_fraction = DEFAULT_TEST_FRACTION
    # the range images live in for the model, the samplers, pictures, FID and bits/dim (value_range below)
    d.value_range = (-1.0, 1.0)  # (-1, 1): score_sde's data.centered=True; (0, 1): NCSN's, centered=False
    d.file_range = ""  # array of float images: "0,1" or "-1,1" maps [lo, hi] to 0..255 ("" = integer images)
    d.image_size = 8  # digits: 8 or 16
    d.num_train = 20000  # toy datasets: number of points drawn once from the seed
    d.random_flip = False
    d.dequantize = False
    return d


def _sde_section() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.name = "vp"  # vp | ve | subvp | ddpm (the discrete chain of Ho et al.: jaxscore.sde.DiscreteVPSDE)
    d.beta_min = 0.1
    d.beta_max = 20.0
    d.sigma_min = 0.01
    d.sigma_max = 50.0
    # ddpm: N steps, betas linear (beta_start..beta_end, Ho et al. 2020) or cosine (cosine_s, Nichol & Dhariwal 2021)
    d.schedule = "linear"
    d.num_steps = 1000
    d.beta_start = 1e-4
    d.beta_end = 0.02
    d.cosine_s = 0.008
    return d


def _model_section() -> ml_collections.ConfigDict:
    """``name`` and ``parameterization``. Constructor fields of the model (ch, dropout, ...) are
    set only where a config changes the preset: unset fields keep the preset's values (e.g.
    unet_small's dropout 0.1)."""
    d = ml_collections.ConfigDict()
    d.name = "mlp_toy"  # a preset of jaxscore.models
    d.parameterization = "eps"  # score | eps | x0 | v | edm
    return d


def _loss_section() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.name = "continuous_dsm"  # continuous_dsm | eps | x0 | v | edm | ncsn | ism | ssm
    # continuous_dsm: lambda(t) = sigma2 | likelihood | uniform | inv_sigma2 | snr | "module:function"
    d.weighting = "sigma2"
    d.t_sampling = "uniform"  # continuous_dsm: uniform | importance (t ~ g^2 / sigma_t^2)
    d.reduce_mean = True
    # training times t ~ U(t_min, T) (continuous_dsm / eps / x0 / v on continuous SDEs, ism, ssm);
    # None = the SDE's t_min (1e-3 VP / sub-VP, 1e-5 VE); score_sde trains every SDE from 1e-5
    d.t_min = None
    d.num_scales = 10  # ncsn: levels of the noise ladder (jaxscore.experiment.ncsn_ladder)
    d.anneal_power = 2.0  # ncsn: lambda(sigma) = sigma^anneal_power
    d.divergence = "exact"  # ism: exact | hutchinson
    d.num_projections = 1  # ssm
    d.variance_reduced = True  # ssm: SSM-VR
    return d


def _sampling_section() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.sampler = "dpmpp_2m"
    d.steps = 20
    d.num_samples = 64
    d.guidance_scale = 1.0  # class-conditional models: classifier-free scale (1 = conditional, 0 = unconditional)
    # keyword options of `sampler` (get_sampler(sampler).options), e.g. step_lr for annealed_langevin;
    # every sampling of the run (report, FID, `jaxscore sample` / `eval` with this sampler) passes them
    d.options = ml_collections.ConfigDict()
    return d


def _eval_section() -> ml_collections.ConfigDict:
    """The evaluation hooks' settings (their cadence is ``training.eval_every``)."""
    d = ml_collections.ConfigDict()
    d.num_samples = 4000  # toy: samples for the scatter and mode metrics
    d.heldout_batches = 4
    d.bits_per_dim = False  # images: log bits/dim of a few held-out examples (EMA params) each eval
    d.bpd_num = 16  # held-out examples per bits/dim estimate
    d.bpd_divergence = "hutchinson"  # exact | hutchinson
    d.bpd_rtol = 1e-3  # ODE solver tolerances (rtol = atol) for the eval estimate
    # sample quality (images): FID / KID / IS / precision-recall of fid_num EMA samples every
    # fid_every steps (0 = never) under the `features` network against the fid_ref split
    d.fid_every = 0
    d.fid_num = 1000
    d.features = "inception"  # digits | mnist | inception (pytorch-fid's; weights via inception_weights)
    d.fid_ref = "test"  # train | test: the reference images; the other split gives the real-data floor
    d.inception_weights = ""  # converted FID Inception .npz ("" = $JAXSCORE_INCEPTION_WEIGHTS)
    return d
