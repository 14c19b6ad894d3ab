"""Streaming evaluation: statistics of generated samples and of datasets equal the one-shot ones,
whatever the batch size, the devices (8 fake CPU devices) or the number of processes.

The data are 4×4 "images" drawn from N(0, s² I) under the VP SDE, whose score is exact at
every t: s_t(x) = -x / (α_t² s² + σ_t²). The extractor is a fixed random feature map with logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore.evaluation.stats import FeatureStats, fid_from_stats
from jaxscore.evaluation.streaming import sample_quality, stats_of_images, stats_of_samples
from jaxscore.samplers import sample, sample_in_batches
from jaxscore.sde import VPSDE

import eval_worker
from multiprocess import run_workers

SDE = VPSDE()
SHAPE = eval_worker.SHAPE
KEY = jax.random.key(3)


def quantised(x):
    return np.clip(np.round((np.asarray(x, np.float64) + 1) * 127.5), 0, 255) / 127.5 - 1


def one_shot(extractor, x):
    feats, logits = jax.jit(extractor)(jnp.asarray(x, jnp.float32))
    return np.asarray(feats, np.float64), np.asarray(logits)


def test_stats_of_samples_equal_one_shot_statistics():
    extractor, score = eval_worker.extractor(), eval_worker.gaussian_score(SDE)
    num, keep = 37, 20  # a multiple of neither the batch (12) nor the 8 devices
    stats = stats_of_samples(KEY, score, SDE, SHAPE, num, extractor, sampler="dpmpp_2m", steps=4, batch_size=12,
                             keep=keep)
    x = sample(KEY, score, SDE, (num, *SHAPE), "dpmpp_2m", steps=4)
    feats, logits = one_shot(extractor, quantised(x))
    assert stats.count == num
    # float32 round-off of the feature map at another batch size; the moments themselves are float64
    np.testing.assert_allclose(stats.mu, feats.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats.kept_features, feats[:keep], rtol=1e-5, atol=1e-6)  # first rows by index
    np.testing.assert_allclose(stats.kept_logits, logits[:keep], rtol=1e-5, atol=1e-6)


def test_statistics_do_not_depend_on_devices_or_batch_size():
    extractor, score = eval_worker.extractor(), eval_worker.gaussian_score(SDE)
    run = lambda batch, devices: stats_of_samples(KEY, score, SDE, SHAPE, 30, extractor, sampler="euler_maruyama",  # noqa: E731
                                                  steps=3, batch_size=batch, keep=30, devices=devices)
    a, b = run(30, 1), run(8, None)  # one device, one batch vs 8 devices, 4 batches
    np.testing.assert_allclose(a.kept_features, b.kept_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.sigma, b.sigma, rtol=1e-4, atol=1e-7)
    assert abs(fid_from_stats(a, b)) < 1e-6  # same samples: FID 0


def test_stats_of_uint8_images_equal_one_shot():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(53, *SHAPE), dtype=np.uint8)
    extractor = eval_worker.extractor()
    stats = stats_of_images(images, extractor, batch_size=16, keep=53)
    feats, _ = one_shot(extractor, images.astype(np.float32) / 127.5 - 1)
    np.testing.assert_allclose(stats.mu, feats.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-4, atol=1e-7)


def test_sample_quality_identical_sets_and_a_shifted_one():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(400, 6))
    make = lambda f: FeatureStats.create(6, keep=400).update(f)  # noqa: E731
    same = sample_quality(make(real), make(real), ("fid", "kid", "pr"))
    assert abs(same["fid"]) < 1e-9 and same["precision"] == 1.0 and same["recall"] == 1.0
    shifted = sample_quality(make(real + 3.0), make(real), ("fid", "kid", "pr"))
    assert shifted["fid"] == pytest.approx(9.0 * 6, rel=0.05)  # |Δμ|² = 6·3², same covariance
    assert shifted["kid"] > 10 * shifted["kid_std_err"] and shifted["precision"] < 0.05
    with pytest.raises(ValueError, match="no feature rows"):  # a pytorch-fid file has only mu, sigma
        sample_quality(make(real), {"mu": real.mean(0), "sigma": np.cov(real, rowvar=False)}, ("fid", "kid"))
    with pytest.raises(ValueError, match="unknown"):
        sample_quality(make(real), make(real), ("fid", "fdi"))


@pytest.mark.slow
def test_two_processes_give_the_statistics_and_fid_of_one(tmp_path):
    """2 processes on loopback (2 fake devices each) sample their own indices; the gathered
    statistics equal a one-process run's: moments to float64 round-off, kept rows exactly."""
    results = run_workers(eval_worker.__file__, [["--out", str(tmp_path)]] * 2)
    assert results[0] == results[1]  # every process holds the merged result
    with np.load(tmp_path / "process_0.npz") as f:
        multi = FeatureStats.from_arrays(dict(f))
    single = eval_worker.statistics(devices=None)
    assert multi.count == single.count == eval_worker.NUM
    np.testing.assert_allclose(multi.mu, single.mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(multi.sigma, single.sigma, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(multi.kept_features, single.kept_features, rtol=1e-5, atol=1e-6)  # in index order
    assert results[0]["fid"] == pytest.approx(fid_from_stats(single, eval_worker.reference()), rel=1e-5, abs=1e-8)


@pytest.mark.slow
def test_digits_fid_orders_real_trained_untrained_noise(tmp_path):
    """digits-FID against the held-out digits (the reference the main job uses), 180 images each:
    real training digits (what a perfect generator of the training data would give) < samples of
    a model trained for half the main job (1500 steps) < both samples of the untrained model and
    pixel noise (the prior draw x_T ~ N(0, I), and uniform). Untrained vs noise is not ordered:
    under the digits classifier the untrained U-Net's smooth, nearly constant samples score worse
    than noise."""
    from jaxscore import cli, experiment
    from jaxscore.evaluation.digits_classifier import digits_extractor
    from short_runs import DIGITS

    wd = str(tmp_path / "digits")
    assert cli.main(["train", "--config", DIGITS, "--workdir", wd, "--config.training.n_iters=1500",
                     "--config.training.eval_every=1500", "--config.training.progress=false",
                     "--config.eval.fid_every=0", "--config.sampling.num_samples=4"]) == 0
    config, model, params, sde, shape, _ = experiment.load_run(wd)
    data, extractor = experiment.load_data(config), digits_extractor()
    ref = stats_of_images(data["test"]["images"], extractor)
    n = len(data["test"]["images"])

    def fid_of_model(p):
        score = experiment.model_score_fn(config, model, p, sde)
        return fid_from_stats(stats_of_samples(jax.random.key(0), score, sde, shape, n, extractor,
                                               sampler="dpmpp_2m", steps=20, batch_size=n), ref)

    untrained = jax.jit(experiment.make_init_fn(model, shape))(jax.random.key(1))
    rng = np.random.default_rng(0)
    noise = [rng.normal(size=(n, *shape)).astype(np.float32), rng.uniform(-1, 1, (n, *shape)).astype(np.float32)]
    real = fid_from_stats(stats_of_images(data["train"]["images"][:n], extractor), ref)
    trained = fid_of_model(params)
    worse = [fid_of_model(untrained)] + [fid_from_stats(stats_of_images(x, extractor), ref) for x in noise]
    assert real < trained < 0.5 * min(worse), (real, trained, worse)


# slow: 15 s of compile on 2 cores
@pytest.mark.slow
def test_partial_scores_with_array_leaves_sample_like_closures():
    """Scores passed as a Partial with array leaves (parameters, the labels of a classifier-free
    guided score), as the training evaluators pass them, sample inside the per-device region
    exactly as the same score closed over: guided with labels per row of a batch (devices=1), and
    with a parameter leaf over the 8 devices."""
    from jaxscore import guidance

    base = eval_worker.gaussian_score(SDE)

    def labelled(x, t, y):
        return base(x, t) * (1.0 + 0.1 * y.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype))

    def guided(labels, x, t):
        return guidance.classifier_free(labelled, labels, null_label=3, scale=2.0)(x, t)

    labels = jnp.arange(12, dtype=jnp.int32) % 3
    got = sample_in_batches(KEY, jax.tree_util.Partial(guided, labels), SDE, (12, *SHAPE), 24, "dpmpp_2m", 3,
                            devices=1, progress=False)
    closed = lambda x, t: guided(labels, x, t)  # noqa: E731
    want = [sample(KEY, closed, SDE, (12, *SHAPE), "dpmpp_2m", steps=3, example_offset=o) for o in (0, 12)]
    np.testing.assert_allclose(np.asarray(got), np.concatenate(want), rtol=1e-6, atol=1e-6)
    scaled = jax.tree_util.Partial(lambda scale, x, t: base(x, t) * scale, jnp.float32(1.0))
    sharded = sample_in_batches(KEY, scaled, SDE, (16, *SHAPE), 24, "dpmpp_2m", 3, progress=False)
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(sample(KEY, base, SDE, (24, *SHAPE), "dpmpp_2m", steps=3)),
                               rtol=1e-6, atol=1e-6)


def test_nonfinite_samples_at_a_periodic_evaluation_warn_instead_of_ending_the_run(capsys):
    from jaxscore.evaluators import warn_on_nonfinite_samples

    class Diverged:
        name, every = "report", 5

        def __call__(self, state, step):
            raise FloatingPointError("sampler 'dpmpp_2m': 3 of 8 samples of this batch hold NaN or inf")

    wrapped = warn_on_nonfinite_samples(Diverged())
    assert (wrapped.name, wrapped.every) == ("report", 5)
    assert wrapped(None, 10) == {"nonfinite_samples": 1.0}
    assert "warning: step 10: report: sampler 'dpmpp_2m': 3 of 8" in capsys.readouterr().out


def test_per_class_accuracy_of_rows_drawn_as_class_i_mod_k():
    from jaxscore.evaluation.streaming import per_class_accuracy

    k, n = 3, 12
    logits = np.eye(k)[np.arange(n) % k]  # every row predicts its own class i % 3 ...
    logits[[0, 3]] = np.eye(k)[1]         # ... except two rows of class 0
    np.testing.assert_allclose(per_class_accuracy(logits, k), [0.5, 1.0, 1.0])
