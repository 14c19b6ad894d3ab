"""The README's promises: its test command is the one CI runs, and its API tour runs."""

import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    blocks = re.findall(r"```bash\n(.*?)\n```", _readme(), re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert "jaxscore train --config experiments/configs/digits.py" in main_job
    test_command = tests.split("&&", 2)[2].strip()  # after "python3 -m venv ... && . activate &&"
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert test_command in ci, f"README test command {test_command!r} is not what .ci/run runs"


def test_readme_tour_runs():
    tour = re.findall(r"```python\n(.*?)\n```", _readme(), re.S)[0]
    ns: dict = {}
    exec(compile(tour, "<README tour>", "exec"), ns)
    x, logp, mix = ns["x"], ns["logp"], ns["mix"]
    assert x.shape == (4096, 2) and np.all(np.isfinite(np.asarray(x)))
    # the tour's likelihood is the exact one: within issue 3's 0.01 nats per dimension of the
    # mixture's analytic log-density (2-D: 0.02 nats)
    assert float(np.max(np.abs(np.asarray(logp) - np.asarray(mix.log_prob(x[:256]))))) < 0.02
    assert np.isfinite(float(ns["loss"]))
    assert ns["learned"](x[:8], np.full(8, 0.5, np.float32)).shape == (8, 2)
