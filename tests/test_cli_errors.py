"""Every command-line mistake a user can fix is one line ``jaxscore: …`` naming what was expected,
exit status 2, no traceback (``--debug`` shows it). In-process through ``cli.main`` on a 2-step
toy run."""

from __future__ import annotations

import os

import numpy as np
import pytest

from jaxscore import cli
from short_runs import CONFIGS, TOY2D

QUIET = ["--config.training.progress=false", "--config.eval.num_samples=64"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("cli_errors") / "toy")
    assert cli.main(["train", "--config", TOY2D, "--workdir", wd, "--config.training.n_iters=2",
                     "--config.training.eval_every=2", "--config.training.checkpoint_every=2", *QUIET]) == 0
    return wd


# (arguments with {wd} for the run's workdir and {tmp} for a scratch folder, text the line must contain)
ROWS = [
    (["sample", "--workdir", "{wd}", "--num", "0"], "argument --num: expected an integer >= 1, got 0"),
    (["sample", "--workdir", "{wd}", "--num", "-3"], "argument --num: expected an integer >= 1, got -3"),
    (["sample", "--workdir", "{wd}", "--steps", "0"], "argument --steps: expected an integer >= 1, got 0"),
    (["sample", "--workdir", "{wd}", "--guidance-scale", "nan"], "expected a finite number, got 'nan'"),
    (["sample", "--workdir", "{wd}", "--label", "3", "--num", "2", "--out", "{tmp}/x.npz"], "is unconditional"),
    (["sample", "--workdir", "{wd}", "--sampler", "dpmpp2m"], "--sampler: sampler: expected one of"),
    (["sample", "--workdir", "{wd}", "--config.training.n_iters=3"], "unrecognized arguments: --config.training"),
    (["likelihood", "--workdir", "{wd}", "--num", "-3"], "argument --num: expected an integer >= 1, got -3"),
    (["likelihood", "--workdir", "{wd}", "--data", "valid"], "--data: expected 'train', 'test' or an existing"),
    (["eval", "--workdir", "{tmp}/none"], "no config.json"),
    (["eval", "--workdir", "{wd}", "--metrics", "fid,fdi"], "--metrics: expected a comma-separated subset"),
    (["train", "--config", TOY2D, "--workdir", "{tmp}/afile"], "--workdir: expected a directory"),
    (["train", "--config", os.path.join(CONFIGS, "mnist.py"), "--workdir", "{tmp}/m",
      "--config.data.path={tmp}/no_mnist_here"], "no_mnist_here"),
]


@pytest.mark.parametrize("args,expected", ROWS, ids=[" ".join(r[0][:1] + r[0][3:5]) for r in ROWS])
def test_user_errors_are_one_line_with_exit_status_2(toy_run, tmp_path, capsys, args, expected):
    (tmp_path / "afile").write_text("not a directory")
    argv = [a.replace("{wd}", toy_run).replace("{tmp}", str(tmp_path)) for a in args]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxscore: ") and "Traceback" not in err[0], err
    assert expected in err[0], err[0]


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        cli.main(["--debug", "eval", "--workdir", str(tmp_path / "none")])


def test_sample_out_without_suffix_says_the_file_it_wrote_and_keeps_the_report(toy_run, tmp_path, capsys):
    """``--out x`` writes and prints ``x.npz``; its picture is ``x_scatter.png``, so sampling into
    the workdir never overwrites the training report's ``samples.png``."""
    report = os.path.join(toy_run, "samples.png")
    before = os.path.getmtime(report)
    out = os.path.join(toy_run, "samples")
    assert cli.main(["sample", "--workdir", toy_run, "--num", "8", "--steps", "2", "--out", out]) == 0
    assert f"wrote {out}.npz" in capsys.readouterr().out
    assert np.load(out + ".npz")["samples"].shape == (8, 2) and os.path.exists(out + "_scatter.png")
    assert os.path.getmtime(report) == before


def test_rerun_of_a_finished_run_writes_its_missing_report(toy_run, capsys):
    os.remove(os.path.join(toy_run, "samples.png"))
    capsys.readouterr()
    assert cli.main(["train", "--config", TOY2D, "--workdir", toy_run, "--config.training.n_iters=2",
                     "--config.training.eval_every=2", "--config.training.checkpoint_every=2", *QUIET]) == 0
    assert "writing its missing report" in capsys.readouterr().out
    assert os.path.exists(os.path.join(toy_run, "samples.png"))
