"""The ``jaxscore`` command line (in-process through ``cli.main``): train / sample / likelihood.

A short toy2d run (ring of 8 Gaussians, exact density known) is trained through the CLI;
``sample`` and ``likelihood`` read it back from the workdir.
"""

from __future__ import annotations

import json
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore import cli, commands, experiment
from jaxscore.data.toy import ring_mixture
from jaxscore.likelihood import log_likelihood
from short_runs import DIGITS, N_ITERS, SHORT_DIGITS_COND, SHORT_TOY2D, TOY2D

TRAIN_ARGS = [*SHORT_TOY2D, "--config.eval.num_samples=1000"]


def test_train_sample_likelihood_on_a_toy_run(tmp_path, capsys):
    """``train`` then ``sample`` and ``likelihood`` on its workdir (one test rather than a module
    fixture shared by several, so pytest-xdist does not train it once per worker)."""
    wd = str(tmp_path / "cli_toy")
    assert cli.main(["train", "--config", TOY2D, "--workdir", wd, *TRAIN_ARGS]) == 0
    check_train_applies_overrides(wd)
    check_sample_writes_npz_and_png_and_passes_options(wd, tmp_path, capsys)
    check_likelihood_prints_nll_near_the_exact_mixture_nll(wd, capsys)


def check_train_applies_overrides(toy_workdir):
    with open(os.path.join(toy_workdir, "config.json")) as f:
        saved = json.load(f)
    assert saved["training"]["n_iters"] == N_ITERS and saved["optim"]["ema_rate"] == 0.99
    assert saved["data"]["name"] == "ring"  # from the file
    assert sorted(os.listdir(os.path.join(toy_workdir, "checkpoints"))) == [str(N_ITERS)]
    with pytest.raises(ValueError, match="unconditional"):
        commands.sample_from_workdir(toy_workdir, sampler="ddim", steps=2, num=2, out="unused.npz", label=1)


def test_train_unknown_key_or_bad_type_is_a_clear_error(tmp_path, capsys):
    wd = tmp_path / "never"
    assert cli.main(["train", "--config", TOY2D, "--workdir", str(wd), "--config.training.n_iterz=5"]) == 2
    err = capsys.readouterr().err
    assert "config error: unknown config key 'config.training.n_iterz'" in err and "n_iters" in err
    assert cli.main(["train", "--config", TOY2D, "--workdir", str(wd), "--config.training.n_iters=lots"]) == 2
    assert "expected a value of type int" in capsys.readouterr().err
    assert cli.main(["train", "--config", TOY2D, "--workdir", str(wd), "--config.model.widht=3"]) == 2
    assert "fields of model 'mlp_toy'" in capsys.readouterr().err
    assert not wd.exists()  # nothing was started
    assert cli.main(["train", "--config", TOY2D, "--workdir", str(wd), "--n_iters=5"]) == 2  # not a --config.* override
    assert "unrecognized arguments: --n_iters=5" in capsys.readouterr().err


def test_parse_option_types():
    assert cli.parse_option("corrector_steps=2") == ("corrector_steps", 2)
    assert cli.parse_option("snr=0.16") == ("snr", 0.16)
    assert cli.parse_option("denoise=true") == ("denoise", True)
    assert cli.parse_option("grid=logsnr") == ("grid", "logsnr")
    assert cli.parse_option("t_min=None") == ("t_min", None)
    with pytest.raises(Exception, match="key=value"):
        cli.parse_option("snr")


def check_sample_writes_npz_and_png_and_passes_options(toy_workdir, tmp_path, capsys):
    outs = {}
    for eta in (0.0, 1.0):
        out = str(tmp_path / f"s_eta{eta}.npz")
        assert cli.main(["sample", "--workdir", toy_workdir, "--sampler", "ddim", "--steps", "10", "--num", "300",
                         "--batch-size", "128", "--out", out, "--option", f"eta={eta}"]) == 0
        assert f"wrote {out}" in capsys.readouterr().out
        with np.load(out) as f:
            assert f["samples"].shape == (300, 2) and int(f["step"]) == N_ITERS
            outs[eta] = f["samples"]
        png = out[:-4] + "_scatter.png"  # a name of its own: never the report's samples.png
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert np.all(np.isfinite(outs[0.0])) and np.all(np.isfinite(outs[1.0]))
    # same seed, same prior draw: eta=1 (ancestral noise) must change the result, so the option arrived
    assert np.abs(outs[0.0] - outs[1.0]).mean() > 0.05
    # both land on the ring of radius 4 (modes' std 0.2... loose: within 1.5 of the radius)
    assert np.mean(np.abs(np.linalg.norm(outs[0.0], axis=1) - 4.0) < 1.5) > 0.9
    assert cli.main(["sample", "--workdir", toy_workdir, "--sampler", "ddim", "--option", "etta=1"]) == 2
    assert "has no option(s) ['etta']" in capsys.readouterr().err
    assert cli.main(["sample", "--workdir", toy_workdir, "--option", "denoise=tweedie"]) == 2  # before sampling
    assert capsys.readouterr().err.strip().splitlines() == [
        "jaxscore: config error: --option: denoise must be one of (False, True, 'extrapolate', 'auto'), got {'denoise': 'tweedie'}."]


def check_likelihood_prints_nll_near_the_exact_mixture_nll(toy_workdir, capsys):
    """Mean NLL (nats) of 256 held-out points through the probability-flow ODE.

    Truth: -mean log p(x) of the ring mixture at the same points (``test`` split = points drawn
    from the mixture with the run's seed). The model density is that of a 600-step net, so
    it is not exact: by Gibbs' inequality E[-log q] >= E[-log p] up to Monte-Carlo error
    (std of -log p over 256 points / 16 ~ 0.06 nats), and a net that learned the modes is
    within a few tenths of a nat (observed ~0.1). Bound: -0.15 < NLL_model - NLL_exact < 0.5
    (a score field that missed modes or their widths is off by > 1 nat). Also: the CLI number
    equals ``jaxscore.log_likelihood`` on the same params, keys and points (exact divergence,
    same ODE solve) to 1e-5, and a progress bar is shown on stderr.
    """
    assert cli.main(["likelihood", "--workdir", toy_workdir, "--num", "256", "--batch-size", "128"]) == 0
    cap = capsys.readouterr()
    nll = float(re.search(r"nll_nats: (\S+)", cap.out).group(1))
    assert re.search(r"^num: 256$", cap.out, re.M) and "bits_per_dim" not in cap.out
    assert "likelihood" in cap.err and "2/2" in cap.err  # tqdm bar over the 2 batches
    config, score_fn, sde, shape, _ = experiment.load_for_inference(toy_workdir)
    x = experiment.load_data(config)["test"]["x"][:256]
    exact_nll = -float(jnp.mean(ring_mixture().log_prob(jnp.asarray(x))))
    assert -0.15 < nll - exact_nll < 0.5, (nll, exact_nll)
    printed_exact = float(re.search(r"exact_nll_nats: (\S+)", cap.out).group(1))  # the figure the config promises
    assert printed_exact == pytest.approx(exact_nll, rel=1e-6)
    key = jax.random.key(0)
    direct = np.concatenate([np.asarray(log_likelihood(jax.random.fold_in(key, i), score_fn, sde, jnp.asarray(x[i:i + 128])))
                             for i in (0, 128)])
    np.testing.assert_allclose(nll, -direct.mean(), rtol=1e-5)


@pytest.mark.slow
def test_digits_bits_per_dim_hook_and_cli(tmp_path, capsys):
    """Images: ``config.eval.bits_per_dim`` logs eval/bits_per_dim; ``likelihood`` prints bits/dim
    consistent with its NLL: bpd = NLL / (D ln 2) + log2(128) for 256 levels on [-1, 1] (D = 64)."""
    wd = str(tmp_path / "digits")
    assert cli.main(["train", "--config", DIGITS, "--workdir", wd, "--config.training.n_iters=4",
                     "--config.training.eval_every=4", "--config.training.progress=false",
                     "--config.eval.bits_per_dim=true", "--config.eval.bpd_num=4",
                     "--config.sampling.num_samples=4", "--config.sampling.steps=4"]) == 0
    recs = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    bpd = [r["eval/bits_per_dim"] for r in recs if "eval/bits_per_dim" in r]
    assert len(bpd) == 1 and 0 < bpd[0] < 20  # untrained: far from good, but a finite positive bound
    capsys.readouterr()
    assert cli.main(["likelihood", "--workdir", wd, "--num", "4", "--divergence", "hutchinson"]) == 0
    out = capsys.readouterr().out
    got = {k: float(v) for k, v in re.findall(r"^(nll_nats|bits_per_dim): (\S+)$", out, re.M)}
    assert got["bits_per_dim"] == pytest.approx(got["nll_nats"] / (64 * math.log(2)) + 7.0, rel=1e-5)


@pytest.mark.slow  # default-suite budget: 15-180 s of compile and training on 2 cores
def test_class_conditional_digits_train_and_guided_sample(tmp_path, capsys):
    """``digits.py:cond``: labels reach the network (label dropout for CFG), the report grid and a
    guided ``sample`` run; sample i gets class i % 10 across batches (batch 12 is rounded down to
    10) and the npz records it; a class out of range is a clear error."""
    wd = str(tmp_path / "cond")
    assert cli.main(["train", "--config", DIGITS + ":cond", "--workdir", wd, *SHORT_DIGITS_COND]) == 0
    assert os.path.exists(os.path.join(wd, "samples.png")) and os.path.exists(os.path.join(wd, "fid.png"))
    quality = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl")) if "sample_quality/fid" in line]
    assert len(quality) == 1 and 0.0 <= quality[0]["sample_quality/class_accuracy"] <= 1.0
    assert quality[0]["sample_quality/num"] == 25
    out = str(tmp_path / "all.npz")
    assert cli.main(["sample", "--workdir", wd, "--num", "25", "--batch-size", "12", "--steps", "2",
                     "--guidance-scale", "2.5", "--out", out]) == 0
    got = np.load(out, allow_pickle=False)
    assert got["samples"].shape == (25, 8, 8, 1) and np.all(np.isfinite(got["samples"]))
    np.testing.assert_array_equal(got["labels"], np.arange(25) % 10)
    with pytest.raises(ValueError, match=r"label: expected a class in \[0, 10\)"):
        commands.sample_from_workdir(wd, sampler="dpmpp_2m", steps=2, num=2, out=out, label=10)
    check_eval_and_fid_stats(wd, tmp_path, capsys)


def check_eval_and_fid_stats(wd, tmp_path, capsys):
    """``eval`` writes eval.json and a metrics row, per-class accuracy at each guidance scale and
    its PNG; ``fid-stats`` writes the reference statistics of a split (the moments of its
    features) that ``eval --ref`` reads; bad metric names are a one-line error with exit status 2."""
    from jaxscore.data.images import load_digits
    from jaxscore.evaluation import digits_extractor, stats_of_images

    args = ["eval", "--workdir", wd, "--num", "20", "--steps", "2", "--batch-size", "10", "--features", "digits"]
    assert cli.main([*args, "--guidance-scales", "0"]) == 0
    result = json.load(open(os.path.join(wd, "eval.json")))
    assert {"fid", "kid", "kid_std_err", "is", "precision", "recall", "class_accuracy"} <= set(result)
    assert result["num"] == 20 and 1.0 <= result["is"] <= 10.0 and result["fid"] > 0
    assert result["grid"] == "default"  # no WORKDIR/grids/<sampler>_2.npz fitted: the sampler's own grid
    assert list(result["guidance"]) == ["0.0"] and len(result["guidance"]["0.0"]["per_class_accuracy"]) == 10
    assert os.path.exists(os.path.join(wd, "guidance_accuracy.png"))
    rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert rows[-1]["evaluate/fid"] == result["fid"]
    ref = str(tmp_path / "ref.npz")
    assert cli.main(["fid-stats", "--config", DIGITS, "--split", "test", "--features", "digits", "--out", ref]) == 0
    direct = stats_of_images(load_digits("test")["images"], digits_extractor())
    with np.load(ref, allow_pickle=False) as f:
        assert f["features"].shape == (180, 32)
        np.testing.assert_allclose(f["mu"], direct.mu, rtol=1e-12, atol=1e-12)  # same batches: same float64 merges
        np.testing.assert_allclose(f["sigma"], direct.sigma, rtol=1e-12, atol=1e-12)
    assert cli.main([*args, "--metrics", "fid,kid", "--ref", ref, "--out", str(tmp_path / "a.json")]) == 0
    assert np.isfinite(json.load(open(tmp_path / "a.json"))["kid"])
    capsys.readouterr()
    assert cli.main([*args, "--metrics", "fid,fdi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxscore: config error: --metrics") and "fdi" in err and err.count("\n") == 1


@pytest.mark.slow
def test_class_conditional_sample_one_label(tmp_path):
    wd = str(tmp_path / "cond")
    assert cli.main(["train", "--config", DIGITS + ":cond", "--workdir", wd, *SHORT_DIGITS_COND]) == 0
    out = str(tmp_path / "sevens.npz")
    assert cli.main(["sample", "--workdir", wd, "--label", "7", "--num", "6", "--steps", "2", "--out", out]) == 0
    got = np.load(out, allow_pickle=False)
    assert got["samples"].shape == (6, 8, 8, 1) and np.all(np.isfinite(got["samples"]))
    np.testing.assert_array_equal(got["labels"], np.full(6, 7))


def test_class_score_fn_scales():
    """``class_score_fn``: scale 1 is the labelled network's score, scale 0 the null label's,
    other scales the CFG combination of the two."""
    from jaxscore.config import load_config

    config = load_config(TOY2D, ["--config.model.num_classes=10"])  # the MLP: same code path, fast to compile
    model = experiment.build_model_from_config(config.model)
    sde = experiment.build_sde(config.sde)
    params = jax.jit(experiment.make_init_fn(model, (2,)))(jax.random.key(0))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)  # label embedding matters
    x = jax.random.normal(jax.random.key(2), (4, 2))
    t = jnp.full((4,), 0.4)
    labels = jnp.array([0, 3, 7, 9])

    @jax.jit
    def scores(params):
        cond = experiment.model_score_fn(config, model, params, sde, labels=labels)(x, t)
        null = experiment.model_score_fn(config, model, params, sde)(x, t)
        guided = [experiment.class_score_fn(config, model, params, sde, labels, s)(x, t) for s in (1.0, 0.0, 2.5)]
        return cond, null, guided

    cond, null, guided = scores(params)
    assert float(jnp.abs(cond - null).max()) > 1e-3
    for got, want in zip(guided, (cond, null, null + 2.5 * (cond - null))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
