"""Noise-conditional classifiers (jaxscore.models.classifier): the module, its loss, classifier guidance with it,
training from the CLI (`jaxscore train-classifier`) and guided sampling (`jaxscore sample --classifier`)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore.cli import main
from jaxscore.guidance import classifier_guidance
from jaxscore.models.classifier import NoiseConditionalClassifier, classifier_log_likelihood, classifier_loss
from jaxscore.sde import VPSDE

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "configs")
CLF = os.path.join(CONFIGS, "digits_classifier.py")
DIGITS = os.path.join(CONFIGS, "digits.py")


@pytest.mark.slow  # default-suite budget: 15-180 s of compile and training on 2 cores
def test_module_loss_and_guidance_gradient():
    model = NoiseConditionalClassifier(num_classes=10, ch=8, ch_mult=(1, 2))
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    t = jnp.array([0.01, 0.3, 0.6, 1.0])
    params = jax.jit(model.init)({"params": jax.random.key(1)}, x, t)

    @jax.jit
    def everything(params, x, t):  # one compile
        logits = model.apply(params, x, t)
        loss, aux = classifier_loss(model.apply, params, jax.random.key(2), x, jnp.arange(4), VPSDE())
        log_lik = classifier_log_likelihood(model.apply, params, 3)
        guided = classifier_guidance(lambda z, tt: -z, log_lik, scale=2.0)(x, t)
        grad = jax.grad(lambda z: jnp.sum(jax.nn.log_softmax(model.apply(params, z, t))[:, 3]))(x)
        return logits, loss, aux["accuracy"], log_lik(x, t), guided, grad

    logits, loss, acc, ll, guided, grad = everything(params, x, t)
    assert logits.shape == (4, 10) and bool(jnp.all(jnp.isfinite(logits)))
    assert np.isfinite(float(loss)) and 0.0 <= float(acc) <= 1.0
    np.testing.assert_allclose(ll, jax.nn.log_softmax(logits)[:, 3], rtol=1e-5, atol=1e-6)
    # classifier guidance adds scale * grad_x log p_t(y | x) (rows independent: the gradient of the sum)
    np.testing.assert_allclose(guided, -x + 2.0 * grad, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(grad).max()) > 0
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        jax.eval_shape(model.apply, params, x.reshape(4, 64), t)
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(NoiseConditionalClassifier(ch=8, ch_mult=(1, 2, 2, 2, 2)).init, {"params": jax.random.key(1)}, x, t)


@pytest.mark.parametrize("args, expected", [
    (["train-classifier", "--config", DIGITS], "expected a config with a 'classifier' section"),
    (["train-classifier", "--config", CLF, "--config.classifier.lr=-1"], "config.classifier.lr: expected a finite number > 0"),
    (["train-classifier", "--config", CLF, "--config.classifier.num_classes=1"], "config.classifier.num_classes"),
    (["sample", "--workdir", "nowhere", "--classifier", "nowhere_clf"], "--classifier: expected --label"),
    (["sample", "--workdir", "nowhere", "--classifier", "nowhere_clf", "--label", "-1"], "--label: expected a class"),
    (["sample", "--workdir", "nowhere", "--classifier", "c", "--label", "3", "--guidance-scale", "inf"],
     "--guidance-scale"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, expected):
    args = [a if a != "nowhere" else str(tmp_path / "nowhere") for a in args]
    if args[0] == "train-classifier":
        args += ["--workdir", str(tmp_path / "clf")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and "\n" not in err, err


@pytest.mark.slow
def test_train_classifier_beats_chance_and_guides_sampling(tmp_path, capsys):
    """A 150-step classifier (ch 16) from the CLI: held-out accuracy on nearly clean digits far above chance,
    falling with the noise level; then `jaxscore sample --classifier` on a 2-step digits model writes guided
    samples and their labels; a classifier on another SDE is refused in one line."""
    clf = str(tmp_path / "clf")
    assert main(["train-classifier", "--config", CLF, "--workdir", clf, "--config.classifier.n_iters=150",
                 "--config.classifier.ch=16", "--config.classifier.log_every=50"]) == 0
    acc = json.load(open(os.path.join(clf, "accuracy.json")))
    by_t = acc["accuracy_by_t"]
    assert by_t["0.001"] > 0.5 > acc["chance"], by_t  # measured 0.8 after 100 steps
    assert by_t["1"] < by_t["0.001"]
    run = str(tmp_path / "digits")
    assert main(["train", "--config", DIGITS, "--workdir", run, "--config.training.n_iters=2",
                 "--config.training.eval_every=0", "--config.training.progress=false",
                 "--config.eval.fid_every=0", "--config.sampling.num_samples=4", "--config.sampling.steps=2"]) == 0
    out = str(tmp_path / "threes.npz")
    assert main(["sample", "--workdir", run, "--classifier", clf, "--label", "3", "--guidance-scale", "2",
                 "--num", "8", "--steps", "3", "--out", out]) == 0
    with np.load(out) as f:
        assert f["samples"].shape == (8, 8, 8, 1) and np.all(f["labels"] == 3) and np.all(np.isfinite(f["samples"]))
    capsys.readouterr()
    assert main(["sample", "--workdir", run, "--classifier", clf, "--label", "12", "--out", out]) == 2
    assert "[0, 10)" in capsys.readouterr().err
    ve = str(tmp_path / "clf_ve")
    assert main(["train-classifier", "--config", CLF + ":ve", "--workdir", ve, "--config.classifier.n_iters=1",
                 "--config.classifier.ch=8"]) == 0
    capsys.readouterr()
    assert main(["sample", "--workdir", run, "--classifier", ve, "--label", "3", "--out", out]) == 2
    assert "train it with the model's SDE" in capsys.readouterr().err
