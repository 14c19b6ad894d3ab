"""Paper recipes launchable from experiments/configs: every new config loads, trains two steps and
samples once (tiny sizes); the losses they name; PC with a probability-flow predictor.

Default suite: each recipe's objects (SDE, loss, sampler) are built from its config and run on the
2-D ring with a 16-unit MLP (the network is the only thing shrunk: data and model are swapped in the
loaded config, everything else is the file's); the CIFAR-10 paper configs resolve to the same
SDE / loss / sampler as their digits variants. ``slow``: every config through
``experiment.train_and_evaluate`` on digits at its own network (2 steps, 2-step report).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxscore import experiment, losses
from jaxscore.config import ConfigError, load_config, resolve_weighting, sampling_options, value_range
from jaxscore.data.toy import gaussian_mixture
from jaxscore.samplers import get_sampler, sample
from jaxscore.samplers.grids import time_grid
from jaxscore.sde import VPSDE, DiscreteVPSDE
from short_runs import CONFIGS

DIGITS_VARIANTS = ("ddpm", "ddpm_cosine", "ncsn", "subvp", "ve", "edm", "likelihood", "ism", "ssm")
# the default suite runs the variants whose code paths are new (discrete chain + integer timesteps +
# ancestral; NCSN ladder + annealed Langevin; sliced SM of the diffused marginals, whose code ISM shares);
# the others are slow (about 2 s of CPU each)
FAST_VARIANTS = ("ncsn", "ssm")  # ddpm (17 s of compile) runs under -m slow with the rest
# each CIFAR-10 paper config and the digits variant with the same SDE / loss / sampler
PAPER_CONFIGS = {
    "ncsn_cifar10.py": "ncsn",
    "ddpm_cifar10.py": "ddpm",
    "ddpm_cifar10.py:cosine": "ddpm_cosine",
    "edm_cifar10.py": "edm",
    "cifar10_ddpmpp_subvp.py": "subvp",
}


def _path(spec: str) -> str:
    return os.path.join(CONFIGS, spec)


def _toy_sized(config) -> ml_collections.ConfigDict:
    """The loaded config with 2-D ring data and a 16-unit MLP of the same parameterization."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.data.name = "ring"
    c.data.num_train = 64
    c.model = ml_collections.ConfigDict({"name": "mlp_toy", "parameterization": config.model.parameterization,
                                         "hidden_dims": (16,), "embedding_dim": 16})
    c.training.batch_size = 8
    return c


@pytest.mark.parametrize("variant", [v if v in FAST_VARIANTS else pytest.param(v, marks=pytest.mark.slow)
                                     for v in DIGITS_VARIANTS])
def test_recipe_trains_two_steps_and_samples(variant):
    config = _toy_sized(load_config(_path(f"digits_recipes.py:{variant}")))
    sde = experiment.build_sde(config.sde)
    model = experiment.build_model_from_config(config.model)
    loss_fn = experiment.make_loss_fn(config, model, sde)
    params = experiment.make_init_fn(model, (2,))(jax.random.key(0))
    tx = optax.adam(1e-3)

    @jax.jit
    def step(params, opt, key, x):
        loss, grads = jax.value_and_grad(loss_fn)(params, key, {"x": x})
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    x = jax.random.normal(jax.random.key(1), (8, 2))
    opt = tx.init(params)
    new, opt, l0 = step(params, opt, jax.random.key(2), x)
    new, opt, l1 = step(new, opt, jax.random.key(3), x)
    assert np.isfinite(float(l0)) and np.isfinite(float(l1)) and float(l0) > 0
    moved = jax.tree_util.tree_reduce(lambda a, b: a + b, jax.tree.map(lambda p, q: jnp.sum(jnp.abs(p - q)), new, params))
    assert float(moved) > 0
    out = sample(jax.random.key(4), experiment.model_score_fn(config, model, new, sde), sde, (4, 2),
                 sampler=config.sampling.sampler, steps=2, **sampling_options(config))
    assert out.shape == (4, 2) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("spec", sorted(PAPER_CONFIGS))
def test_paper_config_matches_its_digits_variant(spec):
    """Same SDE (class and parameters), loss, parameterization and sampler as the digits variant the
    default suite runs; and each file names its source paper in its docstring."""
    paper = load_config(_path(spec))
    small = load_config(_path(f"digits_recipes.py:{PAPER_CONFIGS[spec]}"))
    a, b = experiment.build_sde(paper.sde), experiment.build_sde(small.sde)
    assert type(a) is type(b)
    if not PAPER_CONFIGS[spec].startswith(("ncsn", "edm")):  # digits ladders / ranges are rescaled for 8x8
        assert jax.tree.all(jax.tree.map(lambda u, v: bool(np.allclose(u, v)), a, b))
    for key in ("loss.name", "loss.t_min", "model.parameterization", "sampling.sampler"):
        sec, name = key.split(".")
        assert paper[sec][name] == small[sec][name], key
    assert value_range(paper) == value_range(small)
    assert sampling_options(paper) == sampling_options(small)
    with open(_path(spec.split(":")[0])) as f:
        doc = f.read().split('"""')[1]
    assert any(w in doc for w in ("et al.", "Song & Ermon", "score_sde")), doc[:200]


def test_ddpm_config_is_ho_et_al():
    c = load_config(_path("ddpm_cifar10.py"))
    sde = experiment.build_sde(c.sde)
    assert isinstance(sde, DiscreteVPSDE) and sde.num_steps == 1000
    np.testing.assert_allclose(np.asarray(sde.betas)[[0, -1]], [1e-4, 0.02], rtol=1e-6)
    assert (c.training.batch_size, c.optim.lr, c.optim.ema_rate, c.model.dropout) == (128, 2e-4, 0.9999, 0.1)
    net = experiment.build_model_from_config(c.model)  # 35.7M-parameter U-Net of Ho et al. App. B
    assert (net.ch, tuple(net.ch_mult), net.num_res_blocks, tuple(net.attn_resolutions), net.dropout) == \
        (128, (1, 2, 2, 2), 2, (16,), 0.1)
    # the config's sampling (1000 ancestral steps, option t_min = 0) visits the integer steps 1000 -> 0: Alg. 2
    # (tests/test_ddpm.py checks that this grid is Ho et al.'s chain); the sampler's own t_min would stop at 1
    assert (c.sampling.sampler, c.sampling.steps, sampling_options(c)) == ("ancestral", 1000, {"t_min": 0.0})
    info = sample(jax.random.key(0), lambda x, t: -x, sde, (1, 1), sampler="ancestral", steps=c.sampling.steps,
                  return_info=True, **sampling_options(c))[1]
    np.testing.assert_allclose(np.asarray(info["ts"]) * 1000, np.arange(1000, -1, -1), atol=2e-3)
    ts = time_grid(sde, c.sampling.steps, "uniform")  # without the option: ends at the SDE's t_min = 1/1000
    assert float(ts[-1]) * 1000 == pytest.approx(1.0, abs=1e-4)


def test_ncsn_ladder_is_geometric_and_what_annealed_langevin_visits():
    """NCSN's own setting: images in [0, 1], sigma 1 .. 0.01, eps = 2e-5 with 100 steps per level."""
    c = load_config(_path("ncsn_cifar10.py"))
    assert value_range(c) == (0.0, 1.0)
    assert sampling_options(c) == {"n_steps_each": 100, "step_lr": 2e-5, "final_noise": True, "denoise": False}
    sde = experiment.build_sde(c.sde)
    ts, sigmas = experiment.ncsn_ladder(sde, c.loss.num_scales)
    np.testing.assert_allclose(np.asarray(sigmas), np.geomspace(1.0, 0.01, 10), rtol=2e-4)  # NCSN's 1..0.01
    info = sample(jax.random.key(0), lambda x, t: -x, sde, (1, 1), sampler="annealed_langevin",
                  steps=c.sampling.steps, n_steps_each=1, return_info=True)[1]
    np.testing.assert_array_equal(np.asarray(info["ts"])[1:], np.asarray(ts))


def test_integer_timesteps_and_weighting_functions():
    """eps_loss(num_timesteps=N) draws t in {1/N .. 1}: a model returning frac(N t) scores like a zero
    model. A weighting function lambda(sde, t) gives the built-in names' losses exactly (uniform and
    importance-sampled t); names and 'module:function' resolve at load time, with clear errors."""
    sde = DiscreteVPSDE.linear(100, 1e-3, 0.1)
    vp = VPSDE()
    x0 = jax.random.normal(jax.random.key(0), (64, 3))
    key = jax.random.key(1)
    frac = lambda p, x, t: jnp.broadcast_to((t * 100 - jnp.round(t * 100))[:, None], x.shape)  # noqa: E731
    zero = lambda p, x, t: jnp.zeros_like(x)  # noqa: E731
    score = lambda p, x, t: -x  # noqa: E731
    fns = {"sigma2": lambda s, t: s.marginal_coefs(t)[1] ** 2, "likelihood": lambda s, t: s.diffusion(t) ** 2,
           "uniform": lambda s, t: jnp.ones_like(t)}

    @jax.jit  # one compiled call for all the losses
    def all_losses(x0, key):
        out = {"frac_int": losses.eps_loss(frac, None, key, x0, sde, num_timesteps=100),
               "zero_int": losses.eps_loss(zero, None, key, x0, sde, num_timesteps=100),
               "frac_cont": losses.eps_loss(frac, None, key, x0, sde)}
        for ts in ("uniform", "importance"):
            for name, fn in fns.items():
                kw = dict(parameterization="score", t_sampling=ts)
                out[f"{name}/{ts}"] = (losses.continuous_dsm_loss(score, None, key, x0, vp, weighting=name, **kw),
                                 losses.continuous_dsm_loss(score, None, key, x0, vp, weighting=fn, **kw))
        return out

    out = jax.tree.map(float, all_losses(x0, key))
    np.testing.assert_allclose(out["frac_int"], out["zero_int"], rtol=1e-6)
    assert abs(out["frac_cont"] - out["zero_int"]) > 1e-3  # continuous t: not on the integer steps
    for ts in ("uniform", "importance"):
        for name in fns:
            ref, got = out[f"{name}/{ts}"]
            np.testing.assert_allclose(got, ref, rtol=1e-5, err_msg=f"{name}, {ts}")
    inv = resolve_weighting("inv_sigma2")
    t = jnp.array([0.1, 0.5])
    np.testing.assert_allclose(np.asarray(inv(vp, t)), 1 / np.asarray(vp.marginal_coefs(t)[1]) ** 2, rtol=1e-6)
    assert resolve_weighting("jaxscore.config:_snr") is resolve_weighting("snr")
    with pytest.raises(ConfigError, match="module:function"):
        load_config(_path("toy2d.py"), ["--config.loss.weighting=jaxscore.config:no_such_function"])
    with pytest.raises(ConfigError, match="config.sde.schedule"):
        load_config(_path("ddpm_cifar10.py"), ["--config.sde.schedule=quadratic"])


@pytest.mark.parametrize("predictor", ["ddim", "probability_flow"])
def test_pc_with_an_ode_predictor_samples_a_mixture(predictor):
    """PC = probability-flow predictor + one Langevin corrector (snr 0.16), 100 steps, exact VP scores of
    0.3 N(-2, 0.5^2) + 0.7 N(2, 0.5^2): mode weight within 0.035 of 0.7 (MC std 0.010 at 2000 draws;
    measured 0.699 / 0.693) and mode stds within 0.04 of 0.5 (measured 0.498 / 0.517: the
    probability-flow Euler step is first order). Without a corrector the sampler is deterministic."""
    mix = gaussian_mixture(jnp.array([0.3, 0.7]), jnp.array([[-2.0], [2.0]]), stds=jnp.array([0.5, 0.5]))
    sde = VPSDE()
    x = np.asarray(sample(jax.random.key(0), mix.score_fn(sde), sde, (2000, 1), sampler="pc", steps=100,
                          predictor=predictor, corrector_steps=1, snr=0.16))[:, 0]
    assert abs((x > 0).mean() - 0.7) < 0.035
    assert abs(x[x > 0].std() - 0.5) < 0.04 and abs(x[x < 0].std() - 0.5) < 0.04
    assert get_sampler("pc").deterministic(predictor=predictor, corrector_steps=0)
    assert not get_sampler("pc").deterministic(predictor=predictor, corrector_steps=1)


# --- slow: the configs themselves, through the experiment layer --------------------------------------

TINY_RUN = [
    "--config.training.n_iters=2",
    "--config.training.eval_every=2",
    "--config.training.checkpoint_every=2",
    "--config.training.progress=false",
    "--config.training.batch_size=8",
    "--config.sampling.num_samples=4",
    "--config.sampling.steps=2",
    "--config.eval.fid_every=0",
    "--config.eval.heldout_batches=1",
]
# CIFAR-10 files on 8x8 digits (no CIFAR on the test machine) with their own network classes, narrowed
CIFAR_ON_DIGITS = ["--config.data.name=digits", "--config.data.image_size=8", "--config.data.random_flip=false",
                   "--config.data.path=", "--config.model.ch=16", "--config.model.num_res_blocks=1",
                   "--config.training.mode=single", "--config.eval.features=digits"]


@pytest.mark.slow
@pytest.mark.parametrize("spec", [f"digits_recipes.py:{v}" for v in DIGITS_VARIANTS] + sorted(PAPER_CONFIGS))
def test_config_runs_through_the_experiment_layer(spec, tmp_path):
    overrides = TINY_RUN + (CIFAR_ON_DIGITS if spec in PAPER_CONFIGS else [])
    config = load_config(_path(spec), overrides)
    result = experiment.train_and_evaluate(config, str(tmp_path / "run"))
    assert result.step == 2
    _, score_fn, sde, shape, _ = experiment.load_for_inference(str(tmp_path / "run"))
    out = sample(jax.random.key(0), score_fn, sde, (2, *shape), sampler=config.sampling.sampler, steps=2)
    assert bool(jnp.all(jnp.isfinite(out)))


def test_images_scale_to_unit_interval_as_well_as_centered():
    """value_range=(0, 1) (NCSN, score_sde's centered=False): x = k/255, dequantised (k + u)/256; the same
    batch (same seed/step/flip/dequantisation draws) as the [-1, 1] one mapped by (x + 1)/2; uint8 round trip."""
    from jaxscore.data.pipeline import batch_at_step, scale_images, unscale_images

    k = np.arange(256, dtype=np.uint8)
    np.testing.assert_allclose(scale_images(k, (0, 1)), k / 255.0, atol=1e-7)
    np.testing.assert_array_equal(unscale_images(scale_images(k, (0, 1)), value_range=(0, 1)), k)
    data = {"images": np.random.default_rng(0).integers(0, 256, (10, 4, 4, 1), dtype=np.uint8)}
    for deq in (False, True):
        kw = dict(global_batch_size=6, seed=3, flip=True, dequantize=deq)
        centered = batch_at_step(data, 5, **kw)["images"]
        unit = batch_at_step(data, 5, value_range=(0, 1), **kw)["images"]
        assert unit.min() >= 0 and unit.max() <= 1
        np.testing.assert_allclose(unit, (centered + 1) / 2, atol=1e-6)
        np.testing.assert_array_equal(unscale_images(unit, dequantized=deq, value_range=(0, 1)),
                                      unscale_images(centered, dequantized=deq))
    with pytest.raises(ValueError, match="value_range"):
        scale_images(k, (1, 0))
