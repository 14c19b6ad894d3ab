"""``jaxscore likelihood`` flags (issue 14): --t-min, --rtol, --atol, --solver, --steps, --divergence,
--dequant-draws. A bad value is one line ``jaxscore: …`` with exit status 2, refused before any model
is restored (a run directory holding only its config.json is enough, so these tests train nothing);
every flag reaches the back-end under its name and the bits/dim summary line states the standard
error and the draws. Slow tests: on a 2-step toy run and a 2-step digits run, the printed NLL /
bits/dim and their standard errors equal the library calls with the same settings, keys and points.
"""

from __future__ import annotations

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore import cli, commands, experiment
from jaxscore.config import load_config
from jaxscore.likelihood import bits_per_dim, log_likelihood, mean_and_standard_error
from jaxscore.samplers.diffrax_samplers import ODE_SOLVERS
from short_runs import DIGITS, TOY2D


@pytest.fixture(scope="module")
def config_only_run(tmp_path_factory):
    """A toy run directory with only its config.json (what the settings checks read)."""
    wd = tmp_path_factory.mktemp("lik_cli_config") / "toy"
    wd.mkdir()
    (wd / "config.json").write_text(json.dumps(load_config(TOY2D).to_dict()))
    return str(wd)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("lik_cli") / "toy")
    assert cli.main(["train", "--config", TOY2D, "--workdir", wd, "--config.training.n_iters=2",
                     "--config.training.eval_every=2", "--config.training.checkpoint_every=2",
                     "--config.training.progress=false", "--config.eval.num_samples=64"]) == 0
    return wd


def _printed(out: str) -> dict:
    return dict(re.findall(r"^(\w+): (\S+)$", out, re.M))


def test_flags_reach_the_back_end_and_summary(monkeypatch, capsys):
    """Every flag reaches likelihood_from_workdir under its name (the back-end itself is the slow
    tests' subject); the printed summary states mean, standard error, image count and draws."""
    seen = {}

    def fake(workdir, **kwargs):
        seen.update(kwargs, workdir=workdir)
        return {"step": 7, "num": 12, "nll_nats": 1.5, "nll_nats_sem": 0.25, "bits_per_dim": 1.25,
                "bits_per_dim_sem": 0.125, "dequant_draws": kwargs["dequant_draws"]}

    monkeypatch.setattr(commands, "likelihood_from_workdir", fake)
    assert cli.main(["likelihood", "--workdir", "W", "--num", "12", "--t-min", "1e-4", "--rtol", "1e-3", "--atol",
                     "2e-3", "--solver", "tsit5", "--steps", "9", "--divergence", "exact", "--dequant-draws", "5",
                     "--seed", "4", "--batch-size", "6", "--data", "train"]) == 0
    assert seen == {"workdir": "W", "data": "train", "num": 12, "divergence": "exact", "batch_size": 6, "seed": 4,
                    "dequant_draws": 5, "t_min": 1e-4, "solver": "tsit5", "rtol": 1e-3, "atol": 2e-3, "steps": 9}
    out = capsys.readouterr().out
    assert "bits/dim 1.2500 +- 0.1250 (standard error of the mean over 12 images; each image's value is its mean " \
           "over 5 dequantisation draws)" in out
    seen.clear()
    assert cli.main(["likelihood", "--workdir", "W"]) == 0  # defaults: chosen by the back-end per data kind
    assert (seen["divergence"], seen["solver"], seen["t_min"], seen["rtol"], seen["atol"], seen["dequant_draws"]) == (
        None, None, None, 1e-5, 1e-5, 1)
    assert "steps" not in seen


@pytest.mark.slow
def test_flags_reach_the_solve_toy(toy_run, capsys):
    """Toy data: every flag is applied (the NLL and its standard error equal log_likelihood's with the
    same settings on the same points and key) and printed back."""
    args = ["likelihood", "--workdir", toy_run, "--num", "8", "--batch-size", "8", "--seed", "3", "--t-min", "0.01",
            "--rtol", "1e-3", "--atol", "1e-4", "--solver", "heun", "--divergence", "hutchinson"]
    assert cli.main(args) == 0
    got = _printed(capsys.readouterr().out)
    assert (got["t_min"], got["rtol"], got["atol"], got["solver"], got["divergence"]) == (
        "0.01", "0.001", "0.0001", "heun", "hutchinson")
    assert "bits_per_dim" not in got and "dequant_draws" not in got  # continuous data: no bits/dim
    config, score_fn, sde, _, _ = experiment.load_for_inference(toy_run)
    x = jnp.asarray(experiment.load_data(config)["test"]["x"][:8])
    logp = log_likelihood(jax.random.fold_in(jax.random.key(3), 0), score_fn, sde, x, divergence="hutchinson",
                          solver="heun", rtol=1e-3, atol=1e-4, t_min=0.01)
    mean, sem = mean_and_standard_error(-np.asarray(logp))
    assert float(got["nll_nats"]) == pytest.approx(mean, rel=1e-5, abs=1e-6)
    assert float(got["nll_nats_sem"]) == pytest.approx(sem, rel=1e-4)


def test_solver_choices_are_the_library_solvers():
    lik = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices["likelihood"]._actions
               if "--solver" in a.option_strings)
    assert tuple(lik.choices) == ODE_SOLVERS


# (arguments; text the one error line must contain)
ROWS = [
    (["--t-min", "-0.5"], "argument --t-min: expected a finite number >= 0, got '-0.5'"),
    (["--t-min", "nan"], "argument --t-min: expected a finite number, got 'nan'"),
    (["--rtol", "0"], "argument --rtol: expected a finite number > 0, got '0'"),
    (["--atol", "-0.001"], "argument --atol: expected a finite number > 0, got '-0.001'"),
    (["--atol", "tight"], "argument --atol: expected a number, got 'tight'"),
    (["--solver", "rk45"], "argument --solver: invalid choice: 'rk45'"),
    (["--divergence", "skilling"], "argument --divergence: invalid choice: 'skilling'"),
    (["--dequant-draws", "0"], "argument --dequant-draws: expected an integer >= 1, got 0"),
    (["--dequant-draws", "2.5"], "argument --dequant-draws: expected an integer >= 1, got '2.5'"),
    (["--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
    (["--t-min", "1.5"], "t_min: expected 0 <= t_min < t_max <= T = 1.0, got t_min=1.5"),
    (["--dequant-draws", "2"], "--dequant-draws: the data of"),
    (["--solver", "euler"], "solver='euler' has no embedded error estimate"),
]


@pytest.mark.parametrize("args,expected", ROWS, ids=[" ".join(r[0]) for r in ROWS])
def test_bad_values_are_one_line_with_exit_status_2(config_only_run, capsys, args, expected):
    capsys.readouterr()
    assert cli.main(["likelihood", "--workdir", config_only_run, "--num", "2", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxscore: ") and "Traceback" not in err[0], err
    assert expected in err[0], err[0]


@pytest.mark.slow
def test_dequant_draws_round_trip_digits(tmp_path, capsys):
    """Digits (images) after 2 training steps: --dequant-draws 2 with loose tolerances; the printed
    bits/dim and its standard error equal bits_per_dim(..., dequant_draws=2) on the first 4 test
    images with the same key, the NLL is consistent with them (bpd = NLL / (D ln 2) + 7), and the
    summary line states the draws."""
    wd = str(tmp_path / "digits")
    assert cli.main(["train", "--config", DIGITS, "--workdir", wd, "--config.training.n_iters=2",
                     "--config.training.eval_every=2", "--config.training.progress=false",
                     "--config.eval.fid_every=0", "--config.sampling.num_samples=4",
                     "--config.sampling.steps=2"]) == 0
    capsys.readouterr()
    assert cli.main(["likelihood", "--workdir", wd, "--num", "4", "--batch-size", "4", "--dequant-draws", "2",
                     "--rtol", "1e-2", "--atol", "1e-2", "--t-min", "1e-3"]) == 0
    out = capsys.readouterr().out
    got = _printed(out)
    assert (got["dequant_draws"], got["divergence"], got["solver"], got["t_min"]) == ("2", "hutchinson", "dopri5", "0.001")
    assert "each image's value is its mean over 2 dequantisation draws" in out
    config, score_fn, sde, shape, _ = experiment.load_for_inference(wd)
    images = experiment.load_data(config)["test"]["images"][:4]
    bpd = bits_per_dim(jax.random.fold_in(jax.random.key(0), 0), score_fn, sde, images, dequant_draws=2,
                       rtol=1e-2, atol=1e-2, t_min=1e-3)
    mean, sem = mean_and_standard_error(np.asarray(bpd))
    assert float(got["bits_per_dim"]) == pytest.approx(mean, rel=1e-5)
    assert float(got["bits_per_dim_sem"]) == pytest.approx(sem, rel=1e-3)
    d = math.prod(shape)
    assert float(got["bits_per_dim"]) == pytest.approx(float(got["nll_nats"]) / (d * math.log(2)) + 7.0, rel=1e-5)
