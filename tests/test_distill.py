"""Progressive distillation (Salimans & Ho 2022) against the exact 2-D ring score, and ``jaxscore distill``.

The teacher is the exact score of the ring mixture (jaxscore.data.toy.ring_mixture) under the VP SDE,
so the teacher's DDIM map is known exactly and a student is graded against it on held-out x_T.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxscore as js
from jaxscore import cli
from jaxscore.data.toy import ring_mixture
from jaxscore.distill import (
    ddim_step,
    denoiser,
    halving_grids,
    one_step_target,
    progressive_distillation_loss,
    score_denoiser,
    student_grid,
)
from jaxscore.metrics import mixture_metrics
from jaxscore.models import build_model
from jaxscore.parameterization import make_score_fn
from jaxscore.sde import VESDE, VPSDE

CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "digits_distill.py")


def _mlp(hidden=(64, 64)):
    model = build_model("mlp_toy", hidden_dims=hidden, embedding_dim=32)
    params = model.init(jax.random.key(1), jnp.zeros((1, 2)), jnp.ones((1,)))["params"]
    return model, (lambda p, x, t: model.apply({"params": p}, x, t)), params


def _distil_stage(apply, params, mix, sde, teacher, teacher_grid, *, iters, lr=3e-3, batch=256, seed=0,
                  parameterization="v"):
    """``iters`` Adam steps of the progressive-distillation loss on fresh mixture draws (one compiled scan)."""
    tx = optax.adam(optax.cosine_decay_schedule(lr, iters))
    grid = jnp.asarray(teacher_grid)

    def loss(p, key):
        k_data, k_loss = jax.random.split(key)
        return progressive_distillation_loss(apply, p, k_loss, mix.sample(k_data, batch), sde, teacher, grid,
                                             parameterization=parameterization)

    @jax.jit
    def run(p):
        def body(carry, i):
            p, o = carry
            value, g = jax.value_and_grad(loss)(p, jax.random.fold_in(jax.random.key(seed), i))
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), value

        (p, _), values = jax.lax.scan(body, (p, tx.init(p)), jnp.arange(iters))
        return p, values

    return run(params)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_max=10.0)], ids=["vp", "ve"])
def test_target_is_the_teachers_two_step_ddim_map(sde):
    """The target's one DDIM step lands where the teacher's two do; the DDIM step equals the ``ddim``
    sampler's; the student grids are the base grid subsampled."""
    mix = ring_mixture()
    teacher = mix.score_fn(sde)
    grids = halving_grids(sde, 8)
    assert [len(g) - 1 for g in grids] == [8, 4, 2, 1]
    np.testing.assert_array_equal(grids[2], np.asarray(student_grid(grids[1])))
    x_t = sde.prior_sample(jax.random.key(0), (64, 2))
    ts = jnp.asarray(grids[2])  # the teacher's 2 steps T -> mid -> t_min
    t, mid, s = (jnp.full((64,), v) for v in ts)
    x0 = score_denoiser(teacher, sde)
    x_mid = ddim_step(sde, x_t, x0(x_t, t), t, mid)
    x_s = ddim_step(sde, x_mid, x0(x_mid, mid), mid, s)
    ref = js.sample(jax.random.key(0), teacher, sde, (64, 2), "ddim", steps=2, grid=ts, x_init=x_t)
    np.testing.assert_allclose(np.asarray(x_s), np.asarray(ref), rtol=1e-5, atol=1e-5)
    target = one_step_target(sde, x_t, x_s, t, s)
    np.testing.assert_allclose(np.asarray(ddim_step(sde, x_t, target, t, s)), np.asarray(x_s), atol=2e-4)


@pytest.mark.slow  # default-suite budget: 15-180 s of compile and training on 2 cores
def test_denoiser_matches_make_score_fn_for_every_parameterization():
    sde = VPSDE()
    model, apply, params = _mlp((16,))
    x = jax.random.normal(jax.random.key(2), (8, 2)) * 2
    t = jnp.linspace(0.05, 1.0, 8)
    for p in ("v", "x0", "eps", "score", "edm"):
        via_score = sde.denoise(x, make_score_fn(apply, params, sde, p)(x, t), t)
        np.testing.assert_allclose(np.asarray(denoiser(apply, params, sde, p)(x, t)), np.asarray(via_score),
                                   rtol=1e-4, atol=1e-4, err_msg=p)


@pytest.mark.slow  # 400 compiled Adam steps of a 3x128 MLP: over this file's share of the default-suite budget
def test_one_stage_reproduces_the_teachers_two_step_map():
    """Exact ring teacher, DDIM 2 steps -> a 1-step MLP student (v-prediction, 400 Adam steps): on 2048
    held-out x_T the student's one DDIM step is within 5% RMS (relative to the map's RMS ~1.7) of the
    teacher's two steps (measured: ~2%)."""
    sde, mix = VPSDE(), ring_mixture()
    teacher = mix.score_fn(sde)
    grids = halving_grids(sde, 2)
    _, apply, params = _mlp((128, 128, 128))
    params, losses = _distil_stage(apply, params, mix, sde, teacher, grids[0], iters=400)
    assert float(jnp.mean(losses[-30:])) < 0.05 * float(jnp.mean(losses[:30]))
    x_T = sde.prior_sample(jax.random.key(123), (2048, 2))
    student = make_score_fn(apply, params, sde, "v")
    ys = js.sample(jax.random.key(0), student, sde, x_T.shape, "ddim", steps=1, grid=jnp.asarray(grids[1]), x_init=x_T)
    yt = js.sample(jax.random.key(0), teacher, sde, x_T.shape, "ddim", steps=2, grid=jnp.asarray(grids[0]), x_init=x_T)
    rel = float(jnp.sqrt(jnp.mean((ys - yt) ** 2)) / jnp.sqrt(jnp.mean(yt**2)))
    assert rel < 0.05, rel


@pytest.mark.slow
def test_distilled_students_keep_the_mode_weights():
    """Unequal-weight ring, exact teacher on DDIM 16 steps, distilled 16 -> 8 -> 4 -> 2 -> 1: the 4-, 2- and
    1-step students' deterministic maps give mode weights within 0.06 total variation of the truth
    (Monte-Carlo floor of 8000 exact draws: ~0.01)."""
    sde = VPSDE()
    weights = np.arange(1, 9) / np.arange(1, 9).sum()
    mix = ring_mixture(weights=weights)
    teacher = mix.score_fn(sde)
    grids = halving_grids(sde, 16)
    _, apply, params = _mlp((128, 128, 128))
    x_T = sde.prior_sample(jax.random.key(7), (8000, 2))
    tv = {}
    for k in range(1, len(grids)):
        params, _ = _distil_stage(apply, params, mix, sde, teacher, grids[k - 1], iters=600, seed=k)
        teacher = make_score_fn(apply, params, sde, "v")
        n = len(grids[k]) - 1
        ys = js.sample(jax.random.key(0), teacher, sde, x_T.shape, "ddim", steps=n, grid=jnp.asarray(grids[k]), x_init=x_T)
        tv[n] = mixture_metrics(ys, mix)["mode_tv"]
    assert all(tv[n] < 0.06 for n in (4, 2, 1)), tv


def _short(extra=()):
    return ["--config.training.n_iters=2", "--config.training.steps_per_call=1", "--config.training.progress=False",
            "--config.training.checkpoint_every=1", "--config.distill.base_steps=2", "--config.eval.num_samples=64",
            "--config.training.batch_size=16", "--config.data.num_train=256", *extra]


@pytest.mark.slow
def test_cli_distill_runs_and_resumes(tmp_path, capsys):
    """``jaxscore distill`` trains a stage on the loop (checkpoints, metrics, pictures, grid.npz), resumes from
    its checkpoint, and its student samples through ``jaxscore sample`` with the stored grid's sampler."""
    wd = str(tmp_path / "pd")
    args = ["distill", "--config", CONFIG + ":toy", "--workdir", wd]
    assert cli.main([*args, *_short()]) == 0
    stage = os.path.join(wd, "stage1_1steps")
    for name in ("config.json", "metrics.jsonl", "samples.png", "grid.npz"):
        assert os.path.exists(os.path.join(stage, name)), name
    summary = json.load(open(os.path.join(wd, "distill.json")))
    assert summary["stages"][0]["steps"] == 1 and summary["stages"][0]["train_steps"] == 2
    grid = np.load(os.path.join(stage, "grid.npz"))["ts"]
    np.testing.assert_allclose(grid, [1.0, VPSDE().t_min], rtol=1e-6)
    capsys.readouterr()
    assert cli.main([*args, *_short(["--config.training.n_iters=3"]), "--allow-config-change"]) == 0
    out = capsys.readouterr().out
    assert "resuming from step 2" in out and "3 training steps" in out
    d = js.distill.run.load_student(wd)
    assert d["sampler"] == "ddim" and d["steps"] == 1
    # the exact teacher's student started as it: {"net", "gain"}, and at gain 0 its score is the exact score
    from jaxscore.experiment import load_run, model_score_fn

    config, model, params, sde, _, _ = load_run(stage)
    assert set(params) == {"net", "gain"} and config.distill.student_init == "teacher"
    x, t = jax.random.normal(jax.random.key(1), (16, 2)) * 3, jnp.linspace(0.1, 1.0, 16)
    at_start = model_score_fn(config, model, {**params, "gain": jnp.zeros(())}, sde)(x, t)
    exact = ring_mixture().score_fn(sde)(x, t)
    np.testing.assert_allclose(np.asarray(at_start), np.asarray(exact), rtol=1e-3, atol=1e-3)
    x = js.sample(jax.random.key(0), d["score_fn"], d["sde"], (8, *d["shape"]), d["sampler"], d["steps"], **d["options"])
    assert x.shape == (8, 2) and bool(jnp.all(jnp.isfinite(x)))
    # `jaxscore sample` with no --sampler/--steps: DDIM at the student's step count on its stored grid
    out = str(tmp_path / "s.npz")
    assert cli.main(["sample", "--workdir", stage, "--num", "8", "--out", out]) == 0
    ref = js.sample_in_batches(jax.random.key(0), d["score_fn"], d["sde"], (8, 2), 8, "ddim", 1, progress=False,
                               grid=jnp.asarray(grid))
    np.testing.assert_allclose(np.load(out)["samples"], np.asarray(ref), rtol=1e-6, atol=1e-6)


def test_cli_distill_bad_input_is_one_line(tmp_path, capsys):
    base = ["distill", "--config", CONFIG + ":toy", "--workdir", str(tmp_path / "w")]
    assert cli.main([*base, "--teacher", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxscore: ") and "--teacher" in err and err.count("\n") == 1
    assert cli.main([*base, "--config.distill.base_steps=6", "--config.distill.stages=2"]) == 2
    assert "distill.stages" in capsys.readouterr().err
    assert cli.main([*base, "--config.distill.method=progresive"]) == 2
    assert "did you mean 'progressive'" in capsys.readouterr().err
    assert cli.main([*base, "--config.data.name=moons"]) == 2
    assert "toy mixture" in capsys.readouterr().err
    assert cli.main([*base, "--config.distill.student_init=copy"]) == 2
    err = capsys.readouterr().err
    assert "distill.student_init: expected one of ('teacher', 'fresh'), got 'copy'" in err and err.count("\n") == 1


def test_student_sampler_drops_the_teachers_sampler_options():
    """A student's config names its own sampler; options of the teacher's sampler (e.g. DDPM's t_min = 0
    for ancestral) would be refused by it, so they are dropped."""
    import ml_collections

    from jaxscore.distill.run import _set_sampler

    cfg = ml_collections.ConfigDict({"sampling": {"sampler": "ancestral", "steps": 1000,
                                                  "options": {"t_min": 0.0}}})
    _set_sampler(cfg, "ddim", 4)
    assert (cfg.sampling.sampler, cfg.sampling.steps) == ("ddim", 4)
    assert dict(cfg.sampling.options) == {}
