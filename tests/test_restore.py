"""Named restoration tasks (jaxscore.inverse.tasks) and ``jaxscore restore``.

Prior: a standard normal on 4x4x1 images, whose exact score is known; inpainting observes the kept
pixels with noise 0.01, so every method's restoration must agree with y on the observed pixels (the
posterior there is N(y / (1 + s^2), s^2 / (1 + s^2)) per pixel, s = 0.01) and look like the prior on
the missing ones (sample std ~ 1, where the observation alone says 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore import cli
from jaxscore.inverse.tasks import METHODS, TASKS, psnr, restore, task_operator
from jaxscore.sde import VPSDE
from short_runs import DIGITS

SHAPE = (4, 4, 1)


def _standard_normal_score(x, t):
    return -x  # N(0, I) stays N(0, I) under the VP SDE


def test_task_operators_have_the_promised_shapes_and_refuse_what_they_cannot_do():
    x = jnp.ones((2, 8, 8, 3))
    assert task_operator("superres", (8, 8, 3), factor=4)(x).shape == (2, 2, 2, 3)
    assert task_operator("colorize", (8, 8, 3))(x).shape[:3] == (2, 8, 8)
    box = np.asarray(task_operator("inpaint", (8, 8, 1)).mask)
    assert box.sum() == 64 - 16 and box[2:6, 2:6].sum() == 0  # the centre half-box is missing
    with pytest.raises(ValueError, match="C = 3"):
        task_operator("colorize", (8, 8, 1))
    with pytest.raises(ValueError, match="task"):
        task_operator("paint", (8, 8, 1))
    assert set(TASKS) >= {"inpaint", "colorize", "superres", "deblur"}


# one method in the default suite (each compiles its own 30-step loop: ~20 s on 2 cores); all of them under -m slow
@pytest.mark.parametrize("method", [m if m == "pigdm" else pytest.param(m, marks=pytest.mark.slow) for m in METHODS])
def test_every_method_matches_the_observed_pixels_and_fills_the_rest_from_the_prior(method):
    n = 64
    op = task_operator("inpaint_random", SHAPE, keep=0.5)
    mask = np.asarray(op.mask, bool)
    clean = jax.random.normal(jax.random.key(0), (n, *SHAPE))
    y = op(clean) + 0.01 * jax.random.normal(jax.random.key(1), (n, *SHAPE))
    x = np.asarray(restore(jax.random.key(2), _standard_normal_score, VPSDE(), op, y, method=method, noise_std=0.01,
                           steps=30, particles=4))
    assert x.shape == (n, *SHAPE) and np.all(np.isfinite(x))
    observed_err = np.abs(x[:, mask] - np.asarray(y)[:, mask])
    # observed pixels: posterior std 0.01; 0.1 leaves room for each method's 30-step discretisation.
    # DPS takes fixed-size steps zeta/||y - A x0_hat|| (Chung et al. 2023): it reaches y only to O(zeta)
    # (measured median 0.29 at zeta = 1, 30 steps); ignoring y would give ~1.1 (|N(0, 2)| median)
    tol = 0.4 if method == "dps" else 0.1
    assert np.median(observed_err) < tol, (method, np.median(observed_err))
    # missing pixels: the prior's spread (std 1), not the least-squares 0 (64 x 8 draws: std of std ~ 0.03)
    assert 0.7 < x[:, ~mask].std() < 1.3, (method, x[:, ~mask].std())


def test_psnr_is_the_closed_form():
    ref = jnp.zeros((3, 2, 2, 1))
    x = ref + jnp.array([0.1, 0.2, 2.0])[:, None, None, None]  # the last is clipped to 1
    np.testing.assert_allclose(psnr(x, ref), 10 * np.log10(4 / np.array([0.01, 0.04, 1.0])), rtol=1e-5)


def test_restore_cli_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert cli.main(["restore", "--workdir", str(tmp_path / "none"), "--task", "paint", "--input", "x.npz"]) == 2
    assert "invalid choice: 'paint'" in capsys.readouterr().err
    assert cli.main(["restore", "--workdir", str(tmp_path), "--task", "deblur", "--input", "x.npz",
                     "--noise-std", "-1"]) == 2
    assert "--noise-std" in capsys.readouterr().err


@pytest.mark.slow
def test_restore_cli_end_to_end_on_a_tiny_digits_run(tmp_path, capsys):
    wd = str(tmp_path / "digits")
    assert cli.main(["train", "--config", DIGITS, "--workdir", wd, "--config.training.n_iters=2",
                     "--config.training.eval_every=2", "--config.training.progress=false",
                     "--config.sampling.num_samples=4", "--config.sampling.steps=2", "--config.eval.fid_every=0"]) == 0
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    np.savez(tmp_path / "in.npz", images=images)
    out = str(tmp_path / "r.npz")
    assert cli.main(["restore", "--workdir", wd, "--task", "deblur", "--input", str(tmp_path / "in.npz"),
                     "--method", "ddrm", "--steps", "3", "--out", out]) == 0
    assert "PSNR" in capsys.readouterr().out
    with np.load(out) as f:
        assert f["restored"].shape == (5, 8, 8, 1) and f["observed"].shape == (5, 8, 8, 1)
    assert (tmp_path / "r_grid.png").exists()
    np.savez(tmp_path / "bad.npz", images=images[:, :4])
    assert cli.main(["restore", "--workdir", wd, "--task", "deblur", "--input", str(tmp_path / "bad.npz")]) == 2
    assert "run's shape" in capsys.readouterr().err
