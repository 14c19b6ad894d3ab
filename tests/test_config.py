"""Config loading: overrides must name existing keys and fit their types; errors say what was wrong."""

import os

import pytest

from jaxscore.config import ConfigError, base_config, config_to_dict, load_config
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
    assert [k for k, _, _ in config_diff(ddpm, ncsn)] == [
        "loss.reduce_mean", "model.name", "optim.ema_rate", "sampling.sampler", "sampling.steps", "sde.name"]
    for cfg in (ddpm, ncsn):
        assert cfg["data"]["name"] == "cifar10" and cfg["training"]["n_iters"] == 1300001


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_")))
def test_shipped_configs_load(name):
    cfg = load_config(os.path.join(CONFIG_DIR, name))
    assert set(base_config().keys()) <= set(cfg.keys())
