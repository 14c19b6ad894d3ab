"""The experiment layer: a config file becomes a trained run with pictures, metrics and resume.

Ground truth is the ring mixture's exact score (jaxscore.data.toy): the toy2d config is
trained briefly through ``experiment.train_and_evaluate`` and its EMA score is compared with
the closed form; samples' mode weights with the mixture's.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore import experiment
from jaxscore.config import ConfigError, load_config
from jaxscore.data.toy import ring_mixture
from jaxscore.metrics import relative_score_error
from jaxscore.train import read_metrics
from short_runs import CONFIGS, N_ITERS, SHORT_TOY2D, TOY2D

TOY_OVERRIDES = [*SHORT_TOY2D, "--config.training.log_every=100", "--config.eval.num_samples=2000"]


def png_ok(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000


# slow: 35-45 s on 2 cores; tests/test_cli.py's toy run trains, samples and writes the same report
@pytest.mark.slow
def test_toy2d_run_end_to_end(tmp_path):
    """One run (~25 s: mostly compiles), checked by the four ``check_*`` below. One test, not a
    module fixture shared by four, so pytest-xdist does not train it once per worker."""
    wd = str(tmp_path / "toy2d")
    config = load_config(TOY2D, TOY_OVERRIDES)
    t0 = time.perf_counter()
    result = experiment.train_and_evaluate(config, wd)
    run = (wd, config, result, time.perf_counter() - t0)
    check_learns_the_exact_score(run)
    check_samples_recover_mode_weights(run)
    check_writes_pictures_and_metrics(run)
    check_rerun_same_workdir_resumes_without_retraining(run)


def _report(wd) -> dict:
    recs = [r for r in read_metrics(os.path.join(wd, "metrics.jsonl")) if any(k.startswith("report/") for k in r)]
    assert [r["step"] for r in recs] == [N_ITERS]  # one report, at the end
    return recs[0]


def check_learns_the_exact_score(toy_run):
    """EMA score vs the exact diffused-mixture score on fresh x_t ~ p_t.

    Relative error E||s_theta - s||^2 / E||s||^2 (0 = exact; the untrained network, and a
    zero score, give >= ~1). At t = 0.5 the VP marginal is smooth and the net learns it fast:
    observed ~0.02 after 600 steps -> bound 0.08. At t = 0.2 the modes are still separate
    (sigma_t ~ 0.5 vs ring radius 4) and the field is sharper: observed ~0.05 -> bound 0.15.
    The experiment's own report must agree (same metric on test points).
    """
    wd, config, result, _ = toy_run
    assert result.step == N_ITERS and result.resumed_from is None
    _, score_fn, sde, shape, step = experiment.load_for_inference(wd)
    assert shape == (2,) and step == N_ITERS
    mixture = ring_mixture()
    exact = mixture.score_fn(sde)
    x0 = mixture.sample(jax.random.key(7), 4096)
    errs = {}
    for t, bound in ((0.5, 0.08), (0.2, 0.15)):
        tt = jnp.full((len(x0),), t)
        xt, _ = sde.marginal_sample(jax.random.key(int(t * 10)), x0, tt)
        errs[t] = relative_score_error(score_fn, exact, xt, tt)
        assert errs[t] < bound, (t, errs[t])
    rep = _report(wd)
    assert rep["report/score_rel_error_t0.5"] < 0.08
    assert rep["report/score_rel_error_t0.2"] < 0.15


def check_samples_recover_mode_weights(toy_run):
    """8 equal modes (weight 1/8): the 2000 samples' mode frequencies within total variation 0.1.

    Monte-Carlo alone: E TV for 2000 multinomial draws over 8 cells ~ 0.5 * 8 * sqrt(p(1-p)/n)
    * sqrt(2/pi) ~ 0.024; a sampler that collapsed or misweighted modes gives >= 0.125 per
    missing mode (observed 0.04). Per-mode std: ``sample_std_error`` is the weighted mean of
    |std_sample/std_true - 1| per mode axis; 1000 steps do not yet resolve the narrow modes
    (std 0.2 on a radius-4 ring: the score at t < 0.05 is the last thing learned), observed
    0.49 (modes ~1.5x too wide) -> bound 0.75; an unconverged net is at >= 1 (0.99 after 500 steps)."""
    rep = _report(toy_run[0])
    assert rep["report/sample_nonfinite"] == 0.0
    assert rep["report/sample_mode_tv"] < 0.1
    assert rep["report/sample_std_error"] < 0.75


def check_writes_pictures_and_metrics(toy_run):
    wd, _, _, _ = toy_run
    for name in ("samples.png", "score_field.png", "loss.png"):
        assert png_ok(os.path.join(wd, name)), name
    recs = read_metrics(os.path.join(wd, "metrics.jsonl"))
    train = [r for r in recs if "loss" in r]
    assert [r["step"] for r in train] == list(range(100, N_ITERS + 1, 100))
    assert all(np.isfinite(r["loss"]) for r in train)
    assert train[-1]["loss"] < train[0]["loss"]
    evals = [r for r in recs if "eval/loss" in r]
    assert [r["step"] for r in evals] == [N_ITERS] and np.isfinite(evals[0]["eval/loss"])
    with open(os.path.join(wd, "config.json")) as f:
        assert json.load(f)["training"]["n_iters"] == N_ITERS


def check_rerun_same_workdir_resumes_without_retraining(toy_run):
    wd, config, first, duration = toy_run
    n_records = len(read_metrics(os.path.join(wd, "metrics.jsonl")))
    t0 = time.perf_counter()
    again = experiment.train_and_evaluate(config, wd)
    elapsed = time.perf_counter() - t0
    assert again.resumed_from == N_ITERS and again.step == N_ITERS
    for a, b in zip(jax.tree.leaves(again.state.ema_params), jax.tree.leaves(first.state.ema_params)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert len(read_metrics(os.path.join(wd, "metrics.jsonl"))) == n_records  # no step was run or logged
    assert elapsed < duration


# ---------------------------------------------------------------- model section of configs


def _cfg_file(tmp_path, body: str) -> str:
    path = tmp_path / "cfg.py"
    path.write_text("from jaxscore.config import base_config\n\ndef get_config():\n    c = base_config()\n"
                    + "".join(f"    {line}\n" for line in body.splitlines()) + "    return c\n")
    return str(path)


def test_presets_keep_their_fields_unless_the_config_sets_them(tmp_path):
    mnist = load_config(os.path.join(CONFIGS, "mnist.py"))
    assert experiment.build_model_from_config(mnist.model).dropout == 0.1  # unet_small's preset value
    cifar = load_config(os.path.join(CONFIGS, "cifar10_ddpmpp.py"), ["--config.model.dropout=0.2"])
    assert experiment.build_model_from_config(cifar.model).dropout == 0.2
    digits = load_config(os.path.join(CONFIGS, "digits.py"))
    tiny = experiment.build_model_from_config(digits.model)
    assert tiny.ch == 16 and tiny.ch_mult == (1, 2)  # the file's ch, the preset's ch_mult
    # a field the file did not set can still be overridden (typed by the preset's value)
    toy = load_config(TOY2D, ["--config.model.hidden_dims=(64,64)"])
    assert experiment.build_model_from_config(toy.model).hidden_dims == (64, 64)
    with pytest.raises(ConfigError, match="expected a value of type float"):
        load_config(TOY2D, ["--config.model.dropout=high"])


def test_unknown_model_key_is_a_load_time_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'config.model.dropot'.*fields of model 'mlp_toy'.*dropout"):
        load_config(TOY2D, ["--config.model.dropot=0.1"])
    with pytest.raises(ConfigError, match=r"config.model: unknown key\(s\) \['chanels'\] for model 'unet_tiny'"):
        load_config(_cfg_file(tmp_path, 'c.model.name = "unet_tiny"\nc.model.chanels = 8'))
    with pytest.raises(ConfigError, match="unknown model 'unet_huge'"):
        load_config(_cfg_file(tmp_path, 'c.model.name = "unet_huge"'))
