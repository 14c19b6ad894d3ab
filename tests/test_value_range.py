"""Images in [0, 1] as well as [-1, 1], selected by ``config.data.value_range`` and read from there by
every consumer: training batches, pictures, bits/dim, FID features, the report's sampling (which also
takes ``config.sampling.options``); and ``loss.t_min``, the training times' lower end.

Closed forms: a Gaussian "image" model N(mu, S) on [-1, 1] and its image under y = (x + 1)/2,
N((mu + 1)/2, S/4) on [0, 1], both diffused exactly by the VP SDE. The same uint8 pixels dequantised
with the same noise land on x and y = (x + 1)/2; log p_Y(y) = log p_X(x) + D log 2 (the Jacobian,
1 bit per dimension, up to the diffusion's s_t^2 at t_min = 1e-5), which the bits/dim offsets
log2(256 / (hi - lo)) = 7 and 8 cancel: the same bits/dim in both ranges.
"""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxscore import experiment, losses, viz
from jaxscore.config import ConfigError, base_config, load_config, sampling_options, value_range
from jaxscore.data.pipeline import scale_images
from jaxscore.evaluation.streaming import accumulate_features
from jaxscore.evaluators import BitsPerDim, Report, Run, eval_key
from jaxscore.likelihood import bits_per_dim
from jaxscore.samplers import sample_in_batches
from jaxscore.sde import VPSDE
from short_runs import CONFIGS, TOY2D

D = 4  # pixels of the Gaussian "images" [B, 2, 2, 1]


def _gauss_score(sde, params, x, t):
    r"""Exact score of N(mu, S) diffused by ``sde``: :math:`-C_t^{-1}(x - a_t\mu)`, ``C_t = a_t^2 S + s_t^2 I``;
    ``params = (mu [D], q [D, D], lam [D])`` with ``S = q diag(lam) q^T``; x: [B, *shape]."""
    mu, q, lam = params
    a, s = sde.marginal_coefs(t)
    y = (x.reshape(x.shape[0], -1) - a[:, None] * mu) @ q
    return (-(y / (a[:, None] ** 2 * lam + s[:, None] ** 2)) @ q.T).reshape(x.shape)


def _log_normal(x, mean, cov):
    r = np.asarray(x, np.float64).reshape(len(x), -1) - mean
    return -0.5 * (np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov), r) + np.linalg.slogdet(cov)[1]
                   + r.shape[1] * math.log(2 * math.pi))


def _run(config, sde, score_with_params, data, workdir="."):
    return Run(config=config, workdir=str(workdir), data=data, sde=sde, loss_fn=None, test_batch_fn=None,
               score_with_params=score_with_params, class_score_with_params=None)


def _config(**sections) -> ml_collections.ConfigDict:
    c = base_config()
    for dotted, value in sections.items():
        sec, key = dotted.split("__")
        c[sec][key] = value
    return c


def test_uint8_round_trip_and_pictures_in_both_ranges():
    """Every level 0..255 scaled into either range and converted back for pictures is itself; the
    same picture comes from y in [0, 1] and from 2y - 1 in [-1, 1]; out-of-range and NaN pixels clip."""
    k = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    for r in ((-1.0, 1.0), (0.0, 1.0)):
        np.testing.assert_array_equal(viz.to_uint8(scale_images(k, r), r), k)
    y = scale_images(k, (0.0, 1.0))
    np.testing.assert_array_equal(viz.image_grid(y, value_range=(0.0, 1.0)), viz.image_grid(2 * y - 1))
    assert not np.array_equal(viz.image_grid(y), viz.image_grid(y, value_range=(0.0, 1.0)))  # the range matters
    np.testing.assert_array_equal(viz.to_uint8(np.array([-0.5, 1.5, np.nan], np.float32), (0, 1)), [0, 255, 0])


def test_config_value_range_is_validated_and_read_by_the_batches():
    """data.value_range: a pair, checked at load (expected vs got); the training batches are
    k / 255 in [0, 1] (k / 127.5 - 1 by default); an old run without the key is [-1, 1]."""
    with pytest.raises(ConfigError, match=r"config.data.value_range: expected a pair \(low, high\) with high > low.*"
                                          r"got \('zero to one',\)"):
        load_config(TOY2D, ["--config.data.value_range=zero to one"])
    cfg = load_config(f"{CONFIGS}/digits.py", ["--config.data.value_range=0,1"])
    assert value_range(cfg) == (0.0, 1.0) and value_range(ml_collections.ConfigDict({"data": {"name": "x"}})) == (-1, 1)
    data = experiment.load_data(cfg)
    x = experiment.make_batch_fn(cfg, data)(0)["x"]
    centred = experiment.make_batch_fn(load_config(f"{CONFIGS}/digits.py"), data)(0)["x"]
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    np.testing.assert_allclose(x, (centred + 1) / 2, atol=1e-6)


def test_bits_per_dim_in_both_ranges_against_the_gaussian_closed_form():
    """The BitsPerDim evaluator of a [0, 1] run, and bits_per_dim on [-1, 1] with the Gaussian's image
    there (exact scores, exact divergence, rtol = atol = 1e-5, t_min = 1e-5, the N(0, I) prior): each
    row's bits/dim is its closed form -log2 N(x; a mu, a^2 S + s^2 I)/D + log2(256/(hi - lo)) within
    1e-3 nats/dim; the densities of matching rows differ by the Jacobian, D log 2 (1 bit/dim), and
    the bits/dim agree. beta_max = 40 makes a_T = 4e-5, so the N(0, I) prior is p_T to ~1e-5 nats
    (with beta_max = 20, a_T mu.z would cost ~3e-3 bits/dim at the [0, 1] means ~0.5)."""
    sde = VPSDE(beta_min=0.1, beta_max=40.0)
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((D, D)))[0]
    lam = rng.uniform(0.002, 0.005, D)  # [0, 1] units: std 0.045..0.07
    mu01 = rng.uniform(0.3, 0.7, D)
    k = np.clip(np.floor((mu01 + rng.standard_normal((16, D)) @ (q * np.sqrt(lam)).T) * 256), 0, 255)
    k = k.astype(np.uint8).reshape(16, 2, 2, 1)
    params01 = tuple(jnp.asarray(a, jnp.float32) for a in (mu01, q, lam))
    params_pm1 = tuple(jnp.asarray(a, jnp.float32) for a in (2 * mu01 - 1, q, 4 * lam))  # x = 2y - 1
    score = jax.tree_util.Partial(_gauss_score, sde)

    cfg = _config(data__value_range=(0.0, 1.0), eval__bpd_num=16, eval__bpd_divergence="exact", eval__bpd_rtol=1e-5)
    run = _run(cfg, sde, score, {"image": True, "test": {"images": k}})
    logged = BitsPerDim(run)(types.SimpleNamespace(ema_params=params01), 0)["bits_per_dim"]

    key, kw = eval_key(cfg, "bits_per_dim"), dict(divergence="exact", rtol=1e-5, atol=1e-5, return_info=True)
    bpd01, info01 = bits_per_dim(key, jax.tree_util.Partial(score, params01), sde, k, data_range=(0.0, 1.0), **kw)
    bpd_pm1, info_pm1 = bits_per_dim(key, jax.tree_util.Partial(score, params_pm1), sde, k, **kw)
    assert logged == pytest.approx(float(np.mean(bpd01)), rel=1e-6)  # the evaluator dequantises into [0, 1]
    y, x = np.asarray(info01["x"]), np.asarray(info_pm1["x"])
    np.testing.assert_allclose(y, (x + 1) / 2, atol=1e-6)  # the same dequantisation noise
    a, s = (float(v) for v in sde.marginal_coefs(jnp.asarray(1e-5)))
    for r, xs, bpd, mean, cov in (((0.0, 1.0), y, bpd01, mu01, np.diag(lam)),
                                  ((-1.0, 1.0), x, bpd_pm1, 2 * mu01 - 1, 4 * np.diag(lam))):
        cov = q @ cov @ q.T
        closed = (-_log_normal(xs, a * mean, a**2 * cov + s**2 * np.eye(D)) / D + math.log(256 / (r[1] - r[0])))
        closed = closed / math.log(2)
        np.testing.assert_allclose(np.asarray(bpd), closed, atol=1e-3 / math.log(2), err_msg=str(r))
    jacobian = (np.asarray(info01["log_likelihood"]) - np.asarray(info_pm1["log_likelihood"])) / (D * math.log(2))
    np.testing.assert_allclose(jacobian, 1.0, atol=2e-3)  # log2 of the scale factor 2, per dimension
    np.testing.assert_allclose(np.asarray(bpd01), np.asarray(bpd_pm1), atol=2e-3)
    assert abs(float(np.mean(bpd01)) - float(np.mean(bpd_pm1))) < 1e-3


def test_report_pictures_in_unit_range_with_the_configs_sampler_options(tmp_path):
    """The report of a [0, 1] run whose config asks ancestral sampling down to t_min = 0 (a sampler
    option, DDPM's Alg. 2 end): with data N(mu, 1e-8 I), mu = k/255, the samples are mu (to 1e-5) and
    the PNGs' pixels are k exactly, i.e. samples_<step>.png / samples.png read the samples in [0, 1].
    The option reached the sampler: the report's sample mean and std are those of the draw with it, not
    of the draw without it, which ends at the SDE's t_min = 1e-3 with noise a sigma_s^2/sigma_t z
    (beta_min = 10: sigma_{1e-3} = 0.1, several levels of noise)."""
    sde = VPSDE(beta_min=10.0, beta_max=20.0)
    levels = np.array([0, 17, 64, 100, 128, 129, 200, 255] * 2, np.uint8).reshape(4, 4, 1)
    mu = jnp.asarray(levels.reshape(-1) / 255.0, jnp.float32)
    params = (mu, jnp.eye(16), jnp.full((16,), 1e-8))
    cfg = _config(data__value_range=(0.0, 1.0), sampling__sampler="ancestral", sampling__steps=10,
                  sampling__num_samples=8)
    cfg.sampling.options = ml_collections.ConfigDict({"t_min": 0.0})
    run = _run(cfg, sde, jax.tree_util.Partial(_gauss_score, sde), {"image": True, "shape": (4, 4, 1)}, tmp_path)
    out = Report(run)(types.SimpleNamespace(ema_params=params), 3)

    key, score = eval_key(cfg, "report"), jax.tree_util.Partial(run.score_with_params, params)
    draw = lambda **o: np.asarray(sample_in_batches(key, score, sde, (8, 4, 4, 1), 8, "ancestral", 10,  # noqa: E731
                                                    progress=False, **o))
    samples, without = draw(**sampling_options(cfg)), draw()
    assert sampling_options(cfg) == {"t_min": 0.0}
    assert np.abs(samples - levels / 255.0).max() < 1e-5 and np.abs(without - levels / 255.0).max() > 3 / 255
    np.testing.assert_array_equal(viz.to_uint8(samples, (0.0, 1.0)), np.broadcast_to(levels, samples.shape))
    assert out["sample_mean"] == pytest.approx(float(samples.mean()), rel=1e-6, abs=0)
    assert out["sample_std"] == pytest.approx(float(samples.std()), rel=1e-6, abs=0)
    assert abs(out["sample_std"] - float(without.std())) > 1e-4
    expected = np.repeat(np.repeat(viz.image_grid(samples, value_range=(0.0, 1.0)), 4, 0), 4, 1)[..., 0]
    for name in ("samples.png", "samples_0000003.png"):
        png = np.asarray(Image.open(tmp_path / name).convert("L"))
        np.testing.assert_array_equal(png, expected)
        assert set(np.unique(png)) == set(np.unique(levels)) | {255}  # the levels, and the white grid lines


def test_fid_features_see_the_same_images_from_either_range():
    """accumulate_features(value_range=(0, 1)) hands the extractor exactly the [-1, 1] images (on the
    same 8-bit grid) it gets from 2y - 1 by default."""
    def extractor(images):
        return images.reshape(images.shape[0], -1), None

    y = np.random.default_rng(1).uniform(0, 1, (6, 3, 3, 1)).astype(np.float32)
    stats = {}
    for r, imgs in (((0.0, 1.0), y), ((-1.0, 1.0), 2 * y - 1)):
        s, _ = accumulate_features(extractor, [(jnp.asarray(imgs), np.arange(6))], keep=6, value_range=r)
        stats[r] = np.asarray(s.kept_features)
    np.testing.assert_allclose(stats[(0.0, 1.0)], stats[(-1.0, 1.0)], atol=1e-6)
    grid = np.round(y * 255).reshape(6, -1) / 127.5 - 1
    np.testing.assert_allclose(stats[(0.0, 1.0)], grid, atol=1e-6)


def test_loss_t_min_is_the_one_the_loss_uses():
    """config.loss.t_min sets the training times' lower end: make_loss_fn's loss equals
    continuous_dsm_loss / eps_loss called with that t_min (same key), and differs from the SDE's default
    (1e-3): a network that outputs its input time makes the two ranges' losses differ."""
    class TimeNet:  # eps_theta(x, t) = t (per example): the loss depends on the drawn t
        def apply(self, variables, x, t, train=False, rngs=None, **kw):
            return jnp.broadcast_to(t.reshape(-1, 1), x.shape) * variables["params"]

    sde, x0, key = VPSDE(), jax.random.normal(jax.random.key(0), (256, 2)), jax.random.key(1)
    model, params = TimeNet(), jnp.ones(())
    for name in ("continuous_dsm", "eps"):
        cfg = _config(loss__name=name, model__parameterization="eps", loss__t_min=0.5)
        got = float(experiment.make_loss_fn(cfg, model, sde)(params, key, {"x": x0}))
        default = float(experiment.make_loss_fn(_config(loss__name=name, model__parameterization="eps"),
                                                model, sde)(params, key, {"x": x0}))
        loss_key = jax.random.split(key)[0]
        apply = lambda p, x, t, **kw: model.apply({"params": p}, x, t)  # noqa: E731
        fn = losses.continuous_dsm_loss if name == "continuous_dsm" else losses.eps_loss
        extra = {"parameterization": "eps"} if name == "continuous_dsm" else {}
        want = float(fn(apply, params, loss_key, x0, sde, t_min=0.5, **extra))
        assert got == pytest.approx(want, rel=1e-6), name
        assert abs(got - default) > 0.05 * abs(default), (name, got, default)
    with pytest.raises(ConfigError, match=r"config.loss.t_min: expected None: loss 'edm' on sde 'vp' draws its own times"):
        load_config(TOY2D, ["--config.loss.name=edm", "--config.model.parameterization=edm", "--config.loss.t_min=0.1"])


def test_sampling_options_are_checked_at_load_and_forwarded(tmp_path):
    """An unknown option is a ConfigError naming the sampler and its options; options given on the
    command line (one by one or as a dict) are checked against the final sampler; sampling_options
    gives them only for the config's own sampler."""
    with pytest.raises(ConfigError) as err:
        load_config(f"{CONFIGS}/ncsn_cifar10.py", ["--config.sampling.options.step_size=0.1"])
    assert str(err.value).startswith("config.sampling.options: sampler 'annealed_langevin' has no option(s) "
                                     "['step_size']; its options are ['denoise', 'final_noise', 'grid', "
                                     "'n_steps_each', 'rho', 'sigma_max', 'sigma_min', 'step_lr', 't_max', 't_min']")
    with pytest.raises(ConfigError, match="sampler 'dpmpp_2m' has no option"):  # the file's options, another sampler
        load_config(f"{CONFIGS}/ncsn_cifar10.py", ["--config.sampling.sampler=dpmpp_2m"])
    cfg = load_config(f"{CONFIGS}/ncsn_cifar10.py", ["--config.sampling.sampler=dpmpp_2m",
                                                     "--config.sampling.options={'denoise': True}"])
    assert sampling_options(cfg) == {"denoise": True} and sampling_options(cfg, "heun") == {}
    with pytest.raises(ConfigError, match=r"options: denoise must be one of \(False, True, 'extrapolate', 'auto'\), "
                                          r"got \{'denoise': 'tweedie'\}"):
        load_config(TOY2D, ["--config.sampling.sampler=unipc", "--config.sampling.options={'denoise': 'tweedie'}"])
    cfg = load_config(TOY2D, ["--config.sampling.sampler=unipc", "--config.sampling.options={'denoise': 'extrapolate'}"])
    assert sampling_options(cfg) == {"denoise": "extrapolate"}
    cfg = load_config(TOY2D, ["--config.sampling.options.eta=0.5", "--config.sampling.sampler=ddim"])
    assert sampling_options(cfg) == {"eta": 0.5} and sampling_options(cfg, "ddim") == {"eta": 0.5}
    assert sampling_options(ml_collections.ConfigDict({"sampling": {"sampler": "ddim"}})) == {}  # an older run


# --- slow: a [0, 1] run end to end ------------------------------------------------------------------

TINY_UNIT_RUN = [
    "--config.data.value_range=0,1",
    "--config.model.ch=8",
    "--config.training.n_iters=2",
    "--config.training.eval_every=2",
    "--config.training.checkpoint_every=2",
    "--config.training.progress=false",
    "--config.training.batch_size=8",
    "--config.sampling.sampler=ancestral",
    "--config.sampling.steps=3",
    "--config.sampling.num_samples=8",
    "--config.sampling.options.t_min=0.0",
    "--config.eval.fid_every=0",
    "--config.eval.heldout_batches=1",
]


@pytest.mark.slow
def test_tiny_unit_range_run_trains_samples_and_writes_right_pictures(tmp_path):
    """digits in [0, 1]: 2 training steps, the report's samples.png is the uint8 picture of the EMA model's
    samples read in [0, 1] (drawn again here with the config's options: same key, same pixels up to one
    level of float round-off between two compilations); `jaxscore sample` uses the config's options for
    the config's sampler and writes the range beside the samples; `jaxscore likelihood` dequantises
    into [0, 1] (+8 bits/dim offset)."""
    from jaxscore.commands import likelihood_from_workdir, sample_from_workdir

    cfg = load_config(f"{CONFIGS}/digits.py", TINY_UNIT_RUN)
    workdir = str(tmp_path / "run")
    assert experiment.train_and_evaluate(cfg, workdir).step == 2
    config, score_fn, sde, shape, _ = experiment.load_for_inference(workdir)
    assert value_range(config) == (0.0, 1.0) and sampling_options(config) == {"t_min": 0.0}
    samples = np.asarray(sample_in_batches(eval_key(config, "report"), score_fn, sde, (8, *shape), 8, "ancestral", 3,
                                           progress=False, t_min=0.0))
    png = np.asarray(Image.open(f"{workdir}/samples.png").convert("L")).astype(int)
    expected = np.repeat(np.repeat(viz.image_grid(samples, value_range=(0.0, 1.0)), 4, 0), 4, 1)[..., 0]
    assert np.abs(png - expected).max() <= 1 and np.mean(png == expected) > 0.9  # measured 0.97 (read as [-1, 1]: ~128 off)

    out = sample_from_workdir(workdir, sampler="ancestral", steps=3, num=8, out=str(tmp_path / "s.npz"), progress=False)
    with np.load(out) as f:
        np.testing.assert_array_equal(f["value_range"], [0.0, 1.0])
        drawn = f["samples"]
    direct = np.asarray(sample_in_batches(jax.random.key(0), score_fn, sde, (8, *shape), 8, "ancestral", 3,
                                          progress=False, t_min=0.0))
    np.testing.assert_allclose(drawn, direct, atol=1e-5)  # the config's t_min = 0 reached the sampler
    default = np.asarray(sample_in_batches(jax.random.key(0), score_fn, sde, (8, *shape), 8, "ancestral", 3,
                                           progress=False))
    assert np.abs(default - direct).max() > 1e-4  # measured 1.3e-3 (the untrained model's last step, t = 1e-3 vs 0)

    lik = likelihood_from_workdir(workdir, num=4, batch_size=4, progress=False, solver="euler", steps=4)
    assert lik["value_range"] == [0.0, 1.0] and np.isfinite(lik["bits_per_dim"])
