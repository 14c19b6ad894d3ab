"""Config loading: overrides must name existing keys and fit their types; errors say what was wrong."""

import os
import re

import ml_collections
import pytest

from jaxscore.config import (
    RULES,
    SDE_NAMES,
    ConfigError,
    base_config,
    config_to_dict,
    load_config,
    model_fields,
    validate_config,
)
from jaxscore.train import DEFAULTS, LoopSettings, default_config, make_optimizer
from jaxscore.train.state import optim_settings

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs")


def _write(tmp_path, body="from jaxscore.config import base_config\n\ndef get_config():\n    return base_config()\n"):
    path = tmp_path / "cfg.py"
    path.write_text(body)
    return str(path)


def test_overrides_are_typed_and_applied(tmp_path):
    cfg = load_config(_write(tmp_path), ["--config.training.n_iters=7", "--config.optim.lr=1", "--config.sde.name=ve",
                                         "--config.data.random_flip=true"])
    assert cfg.training.n_iters == 7
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.sde.name == "ve"
    assert cfg.data.random_flip is True


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'config.training.n_iterz'"):
        load_config(_write(tmp_path), ["--config.training.n_iterz=7"])
    with pytest.raises(ConfigError, match="unknown config key 'config.nope'"):
        load_config(_write(tmp_path), ["--config.nope.x=7"])


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="expected a value of type int"):
        load_config(_write(tmp_path), ["--config.training.n_iters=many"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.py"))
    with pytest.raises(ConfigError, match="must define get_config"):
        load_config(_write(tmp_path, "x = 1\n"))
    with pytest.raises(ConfigError, match="failed to import"):
        load_config(_write(tmp_path, "raise RuntimeError('boom')\n"))


def test_locked_after_load(tmp_path):
    cfg = load_config(_write(tmp_path))
    with pytest.raises(AttributeError):
        cfg.training.new_key = 1


def test_training_defaults_have_one_source():
    """base_config's seed/training/optim/distributed are the training package's DEFAULTS (plus the
    experiment's training.label_dropout), and what train() and make_optimizer() read for an empty
    config is the same: a default changed in DEFAULTS changes all three."""
    cfg = config_to_dict(base_config())
    for section in ("training", "optim", "distributed"):
        extra = {"label_dropout"} if section == "training" else set()
        assert {k: v for k, v in cfg[section].items() if k not in extra} == DEFAULTS[section], section
    assert cfg["seed"] == DEFAULTS["seed"]
    assert config_to_dict(default_config()) == config_to_dict(DEFAULTS)
    loop = LoopSettings.from_config({})
    assert {k: getattr(loop, k) for k in DEFAULTS["training"]} == DEFAULTS["training"]
    assert loop.seed == DEFAULTS["seed"]
    assert optim_settings(None) == DEFAULTS["optim"] == optim_settings({"training": {"n_iters": 3}})
    make_optimizer(None)  # builds from the defaults alone
    assert LoopSettings.from_config({"training": {"n_iters": 7}, "seed": 3}).n_iters == 7


def test_cifar10_configs_share_one_base():
    """The two CIFAR-10 presets differ only in the model/SDE/loss/EMA/sampler keys they name."""
    from jaxscore.train.settings import config_diff

    ddpm = config_to_dict(load_config(os.path.join(CONFIG_DIR, "cifar10_ddpmpp.py")))
    ncsn = config_to_dict(load_config(os.path.join(CONFIG_DIR, "cifar10_ncsnpp.py")))
    diff = [k for k, _, _ in config_diff(ddpm, ncsn)]
    assert [k for k in diff if not k.startswith("sampling.options")] == [
        "loss.reduce_mean", "model.name", "optim.ema_rate", "sampling.sampler", "sampling.steps", "sde.name"]
    assert ddpm["loss"]["t_min"] == ncsn["loss"]["t_min"] == 1e-5  # score_sde's training eps, both
    for cfg in (ddpm, ncsn):
        assert cfg["data"]["name"] == "cifar10" and cfg["training"]["n_iters"] == 1300001


def _documented_specs():
    """Every config file, plus each ``name.py:variant`` its text documents (e.g. digits.py:cond)."""
    specs = []
    for name in sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py")):
        specs.append(name)
        with open(os.path.join(CONFIG_DIR, name)) as f:
            text = f.read()
        specs += sorted({f"{name}:{v}" for v in re.findall(rf"{re.escape(name)}:(\w+)", text)})
    return specs


def test_documented_variants_are_found():
    assert {"digits.py:ve", "digits.py:cond", "toy2d.py", "_cifar10.py"} <= set(_documented_specs())


@pytest.mark.parametrize("spec", _documented_specs())
def test_shipped_configs_load(spec):
    """Every shipped config and documented variant loads, i.e. passes validate_config."""
    cfg = load_config(os.path.join(CONFIG_DIR, spec))
    assert set(base_config().keys()) <= set(cfg.keys())
    validate_config(cfg)


# --- value errors at load time: (override, the key, words of what is expected) ------------------

BAD_VALUES = [
    ("sde.name=vpp", "sde.name", "expected one of ('vp', 've', 'subvp', 'ddpm') (did you mean 'vp'?), got 'vpp'"),
    ("training.mode=pmapp", "training.mode", "expected one of ('single', 'pmap', 'sharded') (did you mean 'pmap'?)"),
    ("training.batch_size=0", "training.batch_size", "expected an integer >= 1, got 0"),
    ("sampling.sampler=dpmpp2m", "sampling.sampler", "(did you mean 'dpmpp_2m'?), got 'dpmpp2m'"),
    ("training.checkpoint_every=0", "training.checkpoint_every", "expected an integer >= 1, got 0"),
    ("training.eval_every=-1", "training.eval_every", "expected an integer >= 0, got -1"),
    ("training.log_every=0", "training.log_every", "expected an integer >= 1, got 0"),
    ("training.steps_per_call=0", "training.steps_per_call", "expected an integer >= 1, got 0"),
    ("training.n_iters=0", "training.n_iters", "expected an integer >= 1, got 0"),
    ("optim.lr=-0.002", "optim.lr", "expected a finite number > 0, got -0.002"),
    ("optim.lr=0", "optim.lr", "expected a finite number > 0, got 0.0"),
    ("optim.lr=1e999", "optim.lr", "expected a finite number > 0, got inf"),
    ("optim.warmup=-1", "optim.warmup", "expected an integer >= 0, got -1"),
    ("optim.ema_rate=1.5", "optim.ema_rate", "expected a number in [0.0, 1.0), got 1.5"),
    ("model.parameterization=epsilon", "model.parameterization", "expected one of ('score', 'eps', 'x0', 'v', 'edm')"),
    ("loss.name=dsm", "loss.name", "expected one of ('continuous_dsm', 'eps', 'x0', 'v', 'edm', 'ncsn', 'ism', 'ssm')"),
    ("loss.name=x0", "loss.name", "expected 'continuous_dsm' or the network's parameterization 'eps'"),
    ("loss.weighting=sigma", "loss.weighting", "expected one of ('sigma2', 'likelihood', 'uniform', 'inv_sigma2', 'snr') "
     "or 'module:function'"),
    ("loss.weighting=os:no_such_fn", "loss.weighting", "got 'os:no_such_fn'"),
    ("sde.name=ddpn", "sde.name", "(did you mean 'ddpm'?)"),
    ("data.name=rign", "data.name", "(did you mean 'ring'?), got 'rign'"),
    ("data.name=imagenet", "data.name", "'digits', 'array', 'mnist', 'cifar10', 'folder'), got 'imagenet'"),
    ("data.test_fraction=0", "data.test_fraction", "expected a number in (0.0, 1.0), got 0.0"),
    ("data.file_range=1,0", "data.file_range", "expected '' (uint8/integer images) or 'low,high'"),
    ("data.value_range=1,0", "data.value_range", "expected a pair (low, high) with high > low: (-1.0, 1.0)"),
    ("data.value_range=0", "data.value_range", "(0.0, 1.0) (NCSN's), got (0,)"),
    ("loss.t_min=1.5", "loss.t_min", "expected None (the SDE's t_min) or a number in [0, 1), got 1.5"),
    ("sampling.options.step_lr=1e-4", "sampling.options", "sampler 'dpmpp_2m' has no option(s) ['step_lr']; "
     "its options are ['denoise', 'grid', 'lower_order_final', 'rho', 'sigma_max', 'sigma_min', 't_max', 't_min']"),
    ("eval.features=incep", "eval.features", "expected one of ('digits', 'mnist', 'inception')"),
    ("eval.fid_ref=valid", "eval.fid_ref", "expected one of ('train', 'test'), got 'valid'"),
    ("eval.fid_every=-5", "eval.fid_every", "expected an integer >= 0, got -5"),
    ("eval.bpd_divergence=jacobian", "eval.bpd_divergence", "expected one of ('exact', 'hutchinson')"),
    ("sampling.steps=0", "sampling.steps", "expected an integer >= 1 (or None), got 0"),
    ("sampling.num_samples=0", "sampling.num_samples", "expected an integer >= 1, got 0"),
]


@pytest.mark.parametrize("override,key,expected", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_config_errors(tmp_path, override, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path), [f"--config.{override}"])
    assert str(err.value).startswith(f"config.{key}: ")
    assert expected in str(err.value)


def test_fid_num_needs_two_samples_only_when_fid_is_on(tmp_path):
    assert load_config(_write(tmp_path), ["eval.fid_num=1"]).eval.fid_num == 1  # fid_every = 0: never used
    with pytest.raises(ConfigError, match=r"config.eval.fid_num: expected an integer >= 2 when eval.fid_every > 0, got 1"):
        load_config(_write(tmp_path), ["eval.fid_every=100", "eval.fid_num=1"])


def test_boundary_values_load(tmp_path):
    """The edges the rules allow: 0 = never for eval periods, no warm-up, EMA off, adaptive steps."""
    cfg = load_config(_write(tmp_path), [
        "training.eval_every=0", "eval.fid_every=0", "optim.warmup=0", "optim.ema_rate=0", "sampling.steps=None",
        "loss.name=eps", "model.parameterization=eps", "data.file_range=-1,1", "data.name=array", "seed=0",
        "data.value_range=0,1", "loss.t_min=0"])
    assert cfg.training.eval_every == 0 and cfg.sampling.steps is None and cfg.data.file_range == "-1,1"
    assert cfg.data.value_range == (0, 1) and cfg.loss.t_min == 0


def test_non_finite_values_in_a_file(tmp_path):
    """A file can set what the command line cannot spell (nan): still a ConfigError."""
    body = "from jaxscore.config import base_config\n\ndef get_config():\n    c = base_config()\n" \
           "    c.optim.lr = float('nan')\n    return c\n"
    with pytest.raises(ConfigError, match=r"config.optim.lr: expected a finite number > 0, got nan"):
        load_config(_write(tmp_path, body))


def test_rules_cover_existing_keys_once():
    """One rule per key, and every rule names a key of base_config, of a config with a section of its own
    (distill, classifier) or a constructor field of the model (model fields are set only where a config
    changes the preset, e.g. model.dtype) — no rule checks a key that can never be set."""
    keys = [r.key for r in RULES]
    assert len(keys) == len(set(keys))
    base = base_config()
    fields = model_fields(base.model.name)
    own_sections = [load_config(os.path.join(CONFIG_DIR, f))
                    for f in ("digits_distill.py", "digits_consistency.py", "digits_classifier.py")]

    def has(config, key):
        node = config
        for name in key.split("."):
            if not (hasattr(node, "keys") and name in node):
                return False
            node = node[name]
        return True

    for key in keys:
        if key.startswith("model.") and key.split(".")[1] in fields:
            continue
        assert has(base, key) or any(has(c, key) for c in own_sections), key


def test_validate_config_skips_absent_keys():
    validate_config(ml_collections.ConfigDict({"training": {"n_iters": 5}}))
    with pytest.raises(ConfigError, match="config.training.n_iters"):
        validate_config(ml_collections.ConfigDict({"training": {"n_iters": -5}}))


def test_name_tables_match_the_experiment():
    """The names the config accepts are the names the experiment layer resolves."""
    from jaxscore import data, experiment

    for name in SDE_NAMES:
        experiment.build_sde(ml_collections.ConfigDict({**base_config().sde.to_dict(), "name": name}))
    assert tuple(experiment.TOY_DATASETS) == data.TOY_DATASETS


@pytest.mark.parametrize("variant,words", [
    ("toy2d.py:foo", "variant 'foo': this file has no variants (its get_config() takes no argument)"),
    ("digits.py:foo", "variant 'foo': get_config() raised ValueError: digits config: expected 'vp', 've' or 'cond'"),
])
def test_unknown_variant_is_a_config_error(variant, words):
    with pytest.raises(ConfigError) as err:
        load_config(os.path.join(CONFIG_DIR, variant))
    assert str(err.value).startswith(f"config file {os.path.join(CONFIG_DIR, variant.split(':')[0])!r}")
    assert words in str(err.value)


@pytest.mark.parametrize("args", [
    ["experiments/configs/toy2d.py:foo"],
    ["experiments/configs/toy2d.py", "--config.sde.name=vpp"],
    ["experiments/configs/toy2d.py", "--config.sampling.sampler=dpmpp2m"],
    ["experiments/configs/toy2d.py", "--config.optim.lr=-0.002"],
])
def test_cli_prints_config_value_errors(tmp_path, capsys, args):
    """In process: one ``jaxscore: config error: ...`` line and exit status 2, before anything trains."""
    from jaxscore.cli import main

    root = os.path.join(os.path.dirname(__file__), "..")
    workdir = tmp_path / "run"
    rc = main(["train", "--config", os.path.join(root, args[0]), "--workdir", str(workdir), *args[1:]])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("jaxscore: config error: ") and "\n" not in err and "Traceback" not in err
    assert not workdir.exists()
