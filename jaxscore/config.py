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
"""

from __future__ import annotations

import ast
import importlib.util
import os
from typing import Iterable

import ml_collections

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
    config = module.get_config(arg) if arg else module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict, got {type(config).__name__}.")
    return config


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
    did not set (its type is checked against the preset's value)."""
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
    config.lock()
    return config


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
    d.image_size = 8  # digits: 8 or 16
    d.num_train = 20000  # toy datasets: number of points drawn once from the seed
    d.random_flip = False
    d.dequantize = False
    return d


def _sde_section() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.name = "vp"  # vp | ve | subvp
    d.beta_min = 0.1
    d.beta_max = 20.0
    d.sigma_min = 0.01
    d.sigma_max = 50.0
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
    d.name = "continuous_dsm"  # continuous_dsm | eps | x0 | v | edm
    d.weighting = "sigma2"  # sigma2 | likelihood | uniform (continuous_dsm)
    d.reduce_mean = True
    return d


def _sampling_section() -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.sampler = "dpmpp_2m"
    d.steps = 20
    d.num_samples = 64
    d.guidance_scale = 1.0  # class-conditional models: classifier-free scale (1 = conditional, 0 = unconditional)
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
