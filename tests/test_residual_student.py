"""Teacher-initialised students (jaxscore.distill.residual) and the output inverse they rest on."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxscore as js
from jaxscore.data.toy import ring_mixture
from jaxscore.distill import (
    consistency_fn,
    ddim_step,
    halving_grids,
    progressive_distillation_loss,
    residual_apply,
    residual_consistency_apply,
    residual_params,
    score_denoiser,
)
from jaxscore.models import build_model
from jaxscore.parameterization import make_score_fn, output_to_score, score_to_output
from jaxscore.sde import VESDE, VPSDE

SDES = [VPSDE(), VESDE(sigma_max=10.0)]


def _mlp(hidden=(32, 32)):
    model = build_model("mlp_toy", hidden_dims=hidden, embedding_dim=16)
    params = model.init(jax.random.key(1), jnp.zeros((1, 2)), jnp.ones((1,)))["params"]
    return (lambda p, x, t: model.apply({"params": p}, x, t)), params


def _points(sde, n=64):
    x = 3.0 * jax.random.normal(jax.random.key(2), (n, 2))
    t = jnp.linspace(0.05, 1.0, n) * sde.T
    return x, t


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve"])
@pytest.mark.parametrize("parameterization", ["score", "eps", "x0", "v"])
def test_score_to_output_inverts_output_to_score(sde, parameterization):
    x, t = _points(sde)
    score = jax.random.normal(jax.random.key(3), x.shape)
    out = score_to_output(score, x, t, sde, parameterization)
    # float32: the v conversions go through (alpha^2 + sigma^2) x0 / sigma, up to ~10 x |x0| at VE's sigma = 10
    atol = 1e-3 if parameterization == "v" else 2e-4
    np.testing.assert_allclose(np.asarray(output_to_score(out, x, t, sde, parameterization)), np.asarray(score),
                               rtol=2e-4, atol=atol)


def test_score_to_output_refuses_edm():
    x, t = _points(VPSDE())
    with pytest.raises(ValueError, match="not 'edm'"):
        score_to_output(x, x, t, VPSDE(), "edm")


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve"])
@pytest.mark.parametrize("parameterization", ["score", "eps", "x0", "v"])
def test_residual_student_starts_as_its_teacher(sde, parameterization):
    """At gain 0 the student's score is the teacher's; a non-zero gain moves it."""
    teacher = ring_mixture().score_fn(sde)
    apply, params = _mlp()
    student = residual_apply(apply, teacher, sde, parameterization)
    p = residual_params(params)
    x, t = _points(sde)
    ref = np.asarray(teacher(x, t))
    got = np.asarray(make_score_fn(student, p, sde, parameterization)(x, t))
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    moved = np.asarray(make_score_fn(student, {**p, "gain": jnp.ones(())}, sde, parameterization)(x, t))
    assert np.abs(moved - ref).max() > 1e-2


def test_residual_student_refuses_edm():
    apply, _ = _mlp()
    with pytest.raises(ValueError, match="parameterization"):
        residual_apply(apply, ring_mixture().score_fn(VPSDE()), VPSDE(), "edm")


@pytest.mark.parametrize("sde", SDES, ids=["vp", "ve"])
def test_residual_consistency_student_starts_at_the_teachers_jump(sde):
    """At gain 0 the consistency function is the teacher's one DDIM step to t_min; at t_min it is x bit for bit
    (the boundary condition survives the wrapper); a non-zero gain moves it away from t_min only."""
    teacher = ring_mixture().score_fn(sde)
    apply, params = _mlp()
    student = residual_consistency_apply(apply, teacher, sde)
    p = residual_params(params)
    x, t = _points(sde)
    f = consistency_fn(student, p, sde)
    t_lo = jnp.full_like(t, sde.t_min)
    jump = ddim_step(sde, x, score_denoiser(teacher, sde)(x, t), t, t_lo)
    np.testing.assert_allclose(np.asarray(f(x, t)), np.asarray(jump), rtol=2e-3, atol=2e-3)
    moved = consistency_fn(student, {**p, "gain": jnp.ones(())}, sde)
    np.testing.assert_array_equal(np.asarray(moved(x, t_lo)), np.asarray(x))
    assert float(jnp.abs(moved(x, t) - f(x, t)).max()) > 1e-2


def test_residual_student_learns_the_two_step_correction():
    """Exact ring teacher, one stage 2 -> 1 DDIM steps, residual v-student (2x32 MLP, 300 Adam steps). At init
    the student's one step is the teacher's one step, far from its two (relative RMS 0.94); after training it
    is within a quarter of that distance on 2048 held-out x_T (measured: 0.073, 0.08 of it)."""
    sde, mix = VPSDE(), ring_mixture()
    teacher = mix.score_fn(sde)
    grids = [jnp.asarray(g) for g in halving_grids(sde, 2)]
    apply, params = _mlp()
    student = residual_apply(apply, teacher, sde, "v")
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, 300))

    def loss(p, key):
        kd, kl = jax.random.split(key)
        return progressive_distillation_loss(student, p, kl, mix.sample(kd, 256), sde, teacher, grids[0])

    @jax.jit
    def train(p):
        def body(carry, i):
            p, o = carry
            g = jax.grad(loss)(p, jax.random.fold_in(jax.random.key(0), i))
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), None

        return jax.lax.scan(body, (p, tx.init(p)), jnp.arange(300))[0][0]

    x_T = sde.prior_sample(jax.random.key(123), (2048, 2))
    two = js.sample(jax.random.key(0), teacher, sde, x_T.shape, "ddim", steps=2, grid=grids[0], x_init=x_T)

    def distance(p):
        one = js.sample(jax.random.key(0), make_score_fn(student, p, sde, "v"), sde, x_T.shape, "ddim", steps=1,
                        grid=grids[1], x_init=x_T)
        return float(jnp.sqrt(jnp.mean((one - two) ** 2)) / jnp.sqrt(jnp.mean(two**2)))

    start = distance(residual_params(params))
    end = distance(train(residual_params(params)))
    assert start > 0.1, start
    assert end < 0.25 * start, (start, end)
