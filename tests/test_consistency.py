"""Consistency models: the boundary condition by construction, the ``consistency`` sampler's facts, and
self-consistency along the exact probability-flow trajectory of a 1-D Gaussian after distillation.

For data N(mu, s^2) under a linear SDE the PF-ODE keeps the standardised coordinate: the trajectory
through x_T is x_t = alpha_t mu + sqrt(alpha_t^2 s^2 + sigma_t^2) u with u constant, so the ideal
consistency function is f(x_t, t) = x_{t_min} in closed form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxscore as js
from jaxscore.data.toy import gaussian, ring_mixture
from jaxscore.distill import consistency_fn, consistency_loss, consistency_score_fn, ict_levels, karras_level
from jaxscore.models import build_model
from jaxscore.samplers import get_sampler
from jaxscore.sde import VESDE, VPSDE

MU, S = 1.0, 0.5


def _mlp(dim):
    model = build_model("mlp_toy", hidden_dims=(64, 64), embedding_dim=32, fourier_scale=1.0)
    params = model.init(jax.random.key(1), jnp.zeros((1, dim)), jnp.ones((1,)))["params"]
    return (lambda p, x, t: model.apply({"params": p}, x, t)), params


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_boundary_condition_is_exact(sde):
    """f(x, t_min) == x bit for bit (random network, eager and jitted), and not the identity above t_min."""
    apply, params = _mlp(2)
    f = consistency_fn(apply, params, sde)
    x = 3.0 * jax.random.normal(jax.random.key(0), (256, 2))
    t_min = jnp.full((256,), sde.t_min)
    np.testing.assert_array_equal(np.asarray(f(x, t_min)), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(jax.jit(f)(x, t_min)), np.asarray(x))
    assert not np.allclose(np.asarray(f(x, jnp.full((256,), 0.5))), np.asarray(x))


@pytest.mark.slow  # default-suite budget: 15-180 s of compile and training on 2 cores
def test_score_view_and_sampler():
    """The x0 view gives f back through sde.denoise; the sampler's one step is f(x_T, T); its facts:
    NFE = steps, deterministic only for one step (that multistep runs draw noise is checked by
    test_samplers' generic test of the facts); the Karras levels hit t_min and T exactly."""
    sde = VPSDE()
    apply, params = _mlp(2)
    f, score_fn = consistency_fn(apply, params, sde), consistency_score_fn(apply, params, sde)
    x_T = sde.prior_sample(jax.random.key(3), (64, 2))
    t = jnp.full((64,), 0.7)
    np.testing.assert_allclose(np.asarray(sde.denoise(x_T, score_fn(x_T, t), t)), np.asarray(f(x_T, t)), atol=1e-4)
    one, info = js.sample(jax.random.key(0), score_fn, sde, (64, 2), "consistency", steps=1, x_init=x_T, return_info=True)
    np.testing.assert_allclose(np.asarray(one), np.asarray(f(x_T, jnp.ones(64))), rtol=1e-3, atol=2e-3)
    assert info["nfe"] == 1
    s = get_sampler("consistency")
    assert s.nfe(4) == 4 and s.deterministic(steps=1) and not s.deterministic(steps=2)
    n = 7
    levels = np.asarray(karras_level(sde, jnp.arange(n), n))
    assert levels[0] == np.float32(sde.t_min) and levels[-1] == sde.T and np.all(np.diff(levels) > 0)
    assert [ict_levels(k, 800, 10, 80) for k in (0, 199, 200, 400, 799)] == [11, 11, 21, 41, 81]


@pytest.mark.slow  # default-suite budget: 15-180 s of compile and training on 2 cores
def test_consistency_sampler_with_an_exact_score_is_denoise_renoise():
    """For any score_fn (here the exact ring score) one step is the posterior mean E[x_0 | x_T]; two steps
    re-noise by the exact transition from t_min (VE: x0 + sqrt(s_n^2 - s_min^2) z)."""
    sde = VESDE(sigma_max=10.0)
    mix = ring_mixture()
    score_fn = mix.score_fn(sde)
    x_T = sde.prior_sample(jax.random.key(5), (128, 2))
    one = js.sample(jax.random.key(0), score_fn, sde, (128, 2), "consistency", steps=1, x_init=x_T)
    T = jnp.full((128,), sde.T)
    np.testing.assert_allclose(np.asarray(one), np.asarray(sde.denoise(x_T, score_fn(x_T, T), T)), atol=1e-5)


def _train(sde, score, *, iters, teacher=True, batch=256, levels=18):
    """``iters`` Adam steps of consistency distillation (Heun teacher = the exact Gaussian score) or training."""
    apply, params = _mlp(1)
    data = gaussian(jnp.array([MU]), jnp.array([[S**2]]))
    tx = optax.adam(optax.cosine_decay_schedule(2e-3, iters))

    def loss(p, key):
        k_data, k_loss = jax.random.split(key)
        return consistency_loss(apply, p, k_loss, data.sample(k_data, batch), sde, levels,
                                teacher_score_fn=score if teacher else None, level_sampling="uniform")

    @jax.jit
    def run(p):
        def body(carry, i):
            p, o = carry
            value, g = jax.value_and_grad(loss)(p, jax.random.fold_in(jax.random.key(0), i))
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), value

        (p, _), values = jax.lax.scan(body, (p, tx.init(p)), jnp.arange(iters))
        return p, values

    params, values = run(params)
    return consistency_fn(apply, params, sde), values


def _trajectory_errors(sde, f, times):
    """RMS over 101 trajectories (u in [-2.5, 2.5]) of |f(x_t, t) - x_{t_min}| / s at each of ``times``."""
    u = jnp.linspace(-2.5, 2.5, 101)[:, None]

    def point(t):
        a, sig = sde.marginal_coefs(jnp.asarray(t, jnp.float32))
        return a * MU + jnp.sqrt(a**2 * S**2 + sig**2) * u

    end = point(sde.t_min)
    return [float(jnp.sqrt(jnp.mean((f(point(t), jnp.full((101,), t)) - end) ** 2)) / S) for t in times]


@pytest.mark.slow  # 500 compiled Adam steps with a Heun teacher: over this file's share of the default-suite budget
def test_self_consistent_along_the_exact_trajectory_after_distillation():
    """Consistency distillation of the exact 1-D Gaussian score (18 levels, Heun teacher, 500 Adam steps):
    along the closed-form PF-ODE trajectories f(x_t, t) is within 0.15 data std (RMS) of x_{t_min} for
    t up to 0.6 (an untrained network: > 1 std)."""
    sde = VPSDE()
    exact = gaussian(jnp.array([MU]), jnp.array([[S**2]])).score_fn(sde)
    times = (0.02, 0.1, 0.3, 0.6)
    f, values = _train(sde, exact, iters=500)
    assert float(jnp.mean(values[-20:])) < 0.2 * float(jnp.mean(values[:20]))
    errors = _trajectory_errors(sde, f, times)
    assert max(errors) < 0.15, errors


@pytest.mark.slow
@pytest.mark.parametrize("teacher", [True, False], ids=["distillation", "training"])
def test_self_consistent_along_the_whole_trajectory(teacher):
    """Longer runs (3000 steps): distillation within 0.1 std along the whole trajectory up to T; consistency
    training (no teacher, same z at both levels: a one-sample target, biased at 18 levels) within 0.35 std
    (measured: 0.26 at T, 0.09 at t = 0.1; an untrained network is > 1 std off)."""
    sde = VPSDE()
    exact = gaussian(jnp.array([MU]), jnp.array([[S**2]])).score_fn(sde)
    f, _ = _train(sde, exact, iters=3000, teacher=teacher)
    errors = _trajectory_errors(sde, f, (0.02, 0.1, 0.3, 0.6, 0.8, 1.0))
    assert max(errors) < (0.1 if teacher else 0.35), errors


def test_a_run_directory_samples_a_student_with_its_own_sampler(tmp_path):
    """The one place a run directory becomes a sampler-ready function: ``model_score_fn`` of a consistency
    run is the consistency function's x0 view (``sde.denoise`` of its score is f, so f(x, t_min) = x to
    round-off; the slow CLI test below samples one), and ``student_sampling`` fills the sampler a
    user left unnamed: consistency at ``sampling.steps`` for a consistency student, DDIM at its step count on
    its ``grid.npz`` for a progressive stage, nothing for an ordinary run or a sampler the user named."""
    import json
    import os

    import ml_collections

    from jaxscore.distill.run import distill_section
    from jaxscore.experiment import model_score_fn, student_sampling

    def run_dir(name, parameterization, sampler, steps, distill=None):
        d = tmp_path / name
        d.mkdir()
        cfg = {"model": {"name": "mlp_toy", "parameterization": parameterization},
               "sampling": {"sampler": sampler, "steps": steps}}
        if distill:
            cfg["distill"] = {**distill_section().to_dict(), "method": distill}
        (d / "config.json").write_text(json.dumps(cfg))
        return str(d), ml_collections.ConfigDict(cfg)

    cm, cm_cfg = run_dir("cm", "consistency", "consistency", 2, "consistency_distillation")
    assert student_sampling(cm) == ("consistency", 2, {})
    assert student_sampling(cm, steps=1) == ("consistency", 1, {})
    assert student_sampling(cm, sampler="dpmpp_2m", steps=10) == ("dpmpp_2m", 10, {})
    pd, _ = run_dir("pd", "v", "ddim", 4, "progressive")
    ts = np.array([1.0, 0.75, 0.5, 0.25, 1e-3], np.float32)
    np.savez(os.path.join(pd, "grid.npz"), ts=ts)
    sampler, steps, opts = student_sampling(pd)
    assert (sampler, steps) == ("ddim", 4)
    np.testing.assert_array_equal(np.asarray(opts["grid"]), ts)
    assert student_sampling(pd, steps=8) == ("ddim", 8, {})  # not the student's step count: no grid
    plain, _ = run_dir("plain", "edm", "dpmpp_2m", 20)
    assert student_sampling(plain) == (None, None, {})

    sde = VPSDE()
    model = build_model("mlp_toy", hidden_dims=(32,), embedding_dim=16)
    params = model.init(jax.random.key(0), jnp.zeros((1, 2)), jnp.ones((1,)))["params"]
    score_fn = jax.jit(model_score_fn(cm_cfg, model, params, sde))
    x = jax.random.normal(jax.random.key(3), (8, 2)) * 2.0
    t_min = jnp.full((8,), sde.t_min)
    np.testing.assert_allclose(sde.denoise(x, score_fn(x, t_min), t_min), x, atol=1e-4)
    f = consistency_fn(lambda p, x, t: model.apply({"params": p}, x, t, train=False), params, sde)
    t = jnp.full((8,), 0.5)
    np.testing.assert_allclose(sde.denoise(x, score_fn(x, t), t), jax.jit(f)(x, t), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # a 2-step `jaxscore distill` run and three `jaxscore sample` calls: ~45 s of CPU on 2 cores
def test_cli_samples_a_consistency_run_with_its_own_sampler(tmp_path):
    """A consistency student's run directory (``jaxscore distill``, 2 training steps of the toy config) samples
    through ``jaxscore sample`` with no --sampler/--steps exactly as with ``--sampler consistency --steps
    <sampling.steps>`` (and not as the CLI's dpmpp_2m default), and its loaded ``score_fn`` is the consistency
    function's x0 view: ``sde.denoise`` gives back f, and f(x, t_min) = x."""
    import os

    from jaxscore import cli
    from jaxscore.experiment import load_for_inference, student_sampling

    config = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "digits_consistency.py")
    wd = str(tmp_path / "cd")
    short = ["--config.training.n_iters=2", "--config.training.steps_per_call=1", "--config.training.progress=False",
             "--config.training.checkpoint_every=2", "--config.training.eval_every=2", "--config.eval.num_samples=16",
             "--config.training.batch_size=16", "--config.data.num_train=256", "--config.distill.s1=20"]
    assert cli.main(["distill", "--config", config + ":toy", "--workdir", wd, *short]) == 0
    assert student_sampling(wd)[:2] == ("consistency", 2)

    def draw(*extra):
        out = str(tmp_path / f"s{len(extra)}.npz")
        assert cli.main(["sample", "--workdir", wd, "--num", "16", "--out", out, *extra]) == 0
        return np.load(out)["samples"]

    own = draw()
    np.testing.assert_array_equal(own, draw("--sampler", "consistency", "--steps", "2"))
    assert np.abs(own - draw("--sampler", "dpmpp_2m", "--steps", "2")).max() > 1e-3

    cfg, score_fn, sde, shape, _ = load_for_inference(wd)
    assert cfg.model.parameterization == "consistency" and shape == (2,)
    x = jax.random.normal(jax.random.key(3), (8, 2)) * 2.0
    t_min = jnp.full((8,), sde.t_min)
    np.testing.assert_allclose(sde.denoise(x, score_fn(x, t_min), t_min), x, atol=1e-4)
    y = js.sample(jax.random.key(0), score_fn, sde, (8, 2), sampler="consistency", steps=1)
    assert y.shape == (8, 2) and bool(jnp.all(jnp.isfinite(y)))
