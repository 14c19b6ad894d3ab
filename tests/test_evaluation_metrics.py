"""Evaluation metrics on features (FID, KID, IS, precision/recall, density/coverage) and streaming
feature statistics, against closed forms and direct reference implementations."""

import pickle

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import scipy.special

from jaxscore.evaluation.metrics import (
    density_coverage,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    knn_radii_squared,
    precision_recall,
    trace_sqrt_product,
    unbiased_mmd2,
)
from jaxscore.evaluation.stats import (
    FeatureStats,
    fid_from_stats,
    load_stats,
    merge_feature_stats,
    save_stats,
)


def _gaussian_stats(rng, n, f, *, shift=0.0):
    x = rng.normal(size=(n, f)) * rng.uniform(0.2, 3.0, size=f) + shift
    return x, x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))  # np.cov gives a scalar for F = 1


def _pytorch_fid_formula(mu1, sigma1, mu2, sigma2):
    """The reference formula with scipy.linalg.sqrtm of the product (accurate when well conditioned)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# ------------------------------------------------------------------------------------------ FD


@pytest.mark.parametrize("f", [1, 3, 16, 64])
def test_frechet_distance_matches_sqrtm_formula_on_full_rank(f):
    rng = np.random.default_rng(f)
    _, mu1, sigma1 = _gaussian_stats(rng, 4 * f + 10, f)
    _, mu2, sigma2 = _gaussian_stats(rng, 4 * f + 10, f, shift=0.5)
    scale = np.trace(sigma1) + np.trace(sigma2)
    ours = frechet_distance(mu1, sigma1, mu2, sigma2)
    np.testing.assert_allclose(ours, _pytorch_fid_formula(mu1, sigma1, mu2, sigma2), rtol=0, atol=1e-9 * scale)
    assert ours == pytest.approx(frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-12)  # symmetric


def test_frechet_distance_rank_deficient_matches_nuclear_norm_reference():
    # F = 64 features from 20 and 30 samples: both covariances have rank < F. With centred data
    # A, B, tr((S1 S2)^1/2) = ||B A^T||_* / sqrt((n-1)(m-1)) (singular values of a small matrix).
    rng = np.random.default_rng(0)
    for n, m in [(20, 30), (5, 64), (40, 200)]:
        a = rng.normal(size=(n, 64)) * rng.uniform(0.1, 10.0, size=64)
        b = rng.normal(size=(m, 64)) + 1.0
        sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        a_c, b_c = a - a.mean(0), b - b.mean(0)
        reference = np.linalg.svd(b_c @ a_c.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
        np.testing.assert_allclose(trace_sqrt_product(sigma_a, sigma_b), reference, rtol=1e-12)
        np.testing.assert_allclose(trace_sqrt_product(sigma_b, sigma_a), reference, rtol=1e-12)
        fd = frechet_distance(a.mean(0), sigma_a, b.mean(0), sigma_b)
        expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * reference
        assert np.isfinite(fd)
        np.testing.assert_allclose(fd, expected, rtol=1e-10)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(1)
    for n in (200, 20):  # full rank and rank-deficient (F = 64 from 20 samples)
        _, mu, sigma = _gaussian_stats(rng, n, 64)
        assert abs(frechet_distance(mu, sigma, mu, sigma)) <= 1e-8 * np.trace(sigma)


def test_frechet_distance_closed_form_for_commuting_diagonal_covariances():
    # For diagonal covariances: d^2 = |mu1 - mu2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0.0, 4.0, size=32), rng.uniform(0.0, 4.0, size=32)
    a[:5] = 0.0  # singular
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    np.testing.assert_allclose(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected, rtol=1e-12)
    # a rotation of both covariances changes nothing
    q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    rotated = frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
    np.testing.assert_allclose(rotated, expected, rtol=1e-10)


def test_frechet_distance_rejects_bad_input():
    mu, sigma = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError, match=r"mu: expected shape \[F\]"):
        frechet_distance(np.zeros((4, 1)), sigma, mu, sigma)
    with pytest.raises(ValueError, match=r"sigma: expected shape \[F, F\] = \(4, 4\)"):
        frechet_distance(mu, np.eye(3), mu, sigma)
    with pytest.raises(ValueError, match="same feature size F"):
        frechet_distance(mu, sigma, np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(mu, sigma, np.array([0.0, np.nan, 0.0, 0.0]), sigma)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance(mu, np.diag([1.0, 1.0, 1.0, -0.5]), mu, sigma)
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(mu, sigma + np.triu(np.ones((4, 4)), 1), mu, sigma)


# ----------------------------------------------------------------------------------------- KID


def _unbiased_mmd2_by_loops(x, y):
    """The estimator written term by term from Bińkowski et al. (2018), eq. (4), O(m^2) loops."""
    m, f = x.shape
    k = lambda u, v: (u @ v / f + 1.0) ** 3  # noqa: E731
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2.0 * cross / m**2


def test_kid_single_full_subset_equals_direct_unbiased_estimator():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 0.3
    expected = _unbiased_mmd2_by_loops(x, y)
    np.testing.assert_allclose(unbiased_mmd2(x, y), expected, rtol=1e-12)
    # one subset of all rows is a permutation of the data: the same value
    mean, std_err = kernel_inception_distance(x, y, num_subsets=1, subset_size=30)
    np.testing.assert_allclose(mean, expected, rtol=1e-12)
    assert np.isnan(std_err)
    # subset size larger than the data is clipped to min(N_a, N_b), as clean-fid
    clipped, _ = kernel_inception_distance(x, y[:-1], num_subsets=3, subset_size=1000)
    assert np.isfinite(clipped)


def test_kid_is_unbiased_for_one_distribution():
    # 300 independent pairs of samples (n = 40) from one distribution: the mean KID is 0 within a
    # few standard errors. The biased (V-statistic) estimator sits about 0.5 above it here.
    rng = np.random.default_rng(4)
    values = [
        kernel_inception_distance(rng.normal(size=(40, 4)), rng.normal(size=(40, 4)), num_subsets=1)[0]
        for _ in range(300)
    ]
    std_err = np.std(values, ddof=1) / np.sqrt(len(values))
    assert abs(np.mean(values)) < 4 * std_err
    assert std_err < 0.05  # the test has the power to see that bias


def test_kid_subsets_of_a_large_pool_zero_for_one_distribution_positive_for_a_shift():
    rng = np.random.default_rng(5)
    pool_a, pool_b = rng.normal(size=(20000, 8)), rng.normal(size=(20000, 8))
    mean, std_err = kernel_inception_distance(pool_a, pool_b, num_subsets=200, subset_size=100, seed=1)
    assert abs(mean) < 4 * std_err
    shifted_mean, shifted_err = kernel_inception_distance(pool_a, pool_b + 0.5, num_subsets=200, subset_size=100)
    assert shifted_mean > 10 * shifted_err > 0


def test_kid_deterministic_given_seed():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(300, 4)), rng.normal(size=(200, 4))
    first = kernel_inception_distance(x, y, num_subsets=5, subset_size=50, seed=7)
    assert kernel_inception_distance(x, y, num_subsets=5, subset_size=50, seed=7) == first
    assert kernel_inception_distance(x, y, num_subsets=5, subset_size=50, seed=8) != first
    with pytest.raises(ValueError, match="same feature size F"):
        kernel_inception_distance(x, y[:, :3])


# ------------------------------------------------------------------------------------------ IS


def _inception_score_reference(probs, splits):
    """The original OpenAI formula, in plain numpy."""
    scores = []
    n = len(probs)
    for i in range(splits):
        part = probs[i * n // splits : (i + 1) * n // splits]
        kl = scipy.special.rel_entr(part, part.mean(0, keepdims=True)).sum(1).mean()
        scores.append(np.exp(kl))
    return np.mean(scores), np.std(scores)


def test_inception_score_of_k_equiprobable_confident_classes_is_k():
    k = 7
    labels = np.arange(10 * k * 3) % k  # every split holds each class 3 times
    one_hot = np.eye(k)[labels]
    mean, std = inception_score(one_hot, splits=10, from_logits=False)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # saturated logits (exp would overflow) give the same, computed in log space
    mean, _ = inception_score(1e4 * one_hot, splits=10)
    assert mean == pytest.approx(k, rel=1e-12)
    # a single predicted class scores 1
    mean, _ = inception_score(np.tile(one_hot[:1], (60, 1)), splits=3, from_logits=False)
    assert mean == pytest.approx(1.0, abs=1e-12)


def test_inception_score_closed_form_for_soft_predictions():
    # p(y|x) = 1 - eps on the sample's class, eps / (K - 1) elsewhere, classes balanced: p(y) is
    # uniform and IS = exp(log K - H), H the entropy of p(y|x).
    k, eps = 5, 0.2
    probs = np.full((50, k), eps / (k - 1))
    probs[np.arange(50), np.arange(50) % k] = 1 - eps
    entropy = -(1 - eps) * np.log(1 - eps) - eps * np.log(eps / (k - 1))
    mean, _ = inception_score(probs, splits=2, from_logits=False)
    assert mean == pytest.approx(np.exp(np.log(k) - entropy), rel=1e-12)
    logits = np.log(probs) + 3.0  # logits are defined up to a constant per row
    assert inception_score(logits, splits=2)[0] == pytest.approx(mean, rel=1e-12)


def test_inception_score_matches_reference_on_random_logits():
    rng = np.random.default_rng(8)
    logits = 3.0 * rng.normal(size=(103, 11))  # splits of unequal size (103 = 10 x 10 + 3)
    expected = _inception_score_reference(scipy.special.softmax(logits, axis=1), 10)
    np.testing.assert_allclose(inception_score(logits, splits=10), expected, rtol=1e-12)


def test_inception_score_rejects_logits_passed_as_probabilities():
    with pytest.raises(ValueError, match="rows summing to 1"):
        inception_score(np.ones((10, 3)), from_logits=False)
    with pytest.raises(ValueError, match="at most N = 4 splits"):
        inception_score(np.ones((4, 3)), splits=5)


# ------------------------------------------------------------------------ precision / recall


def _mixture(rng, n, centres, scale=0.3):
    labels = np.arange(n) % len(centres)
    return centres[labels] + scale * rng.normal(size=(n, centres.shape[1]))


def test_knn_radii_exclude_the_point_itself_and_match_full_distance_matrix():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(57, 3))
    x[10] = x[3]  # a duplicate is a neighbour at distance 0
    d = scipy.spatial.distance.cdist(x, x)
    np.fill_diagonal(d, np.inf)
    for k in (1, 3, 5):
        expected = np.sort(d, axis=1)[:, k - 1] ** 2
        np.testing.assert_allclose(knn_radii_squared(x, k, chunk_size=8), expected, rtol=1e-9, atol=1e-12)
    assert knn_radii_squared(x, 1)[3] == pytest.approx(0.0, abs=1e-12)


def test_precision_recall_density_coverage_match_brute_force_reference():
    rng = np.random.default_rng(10)
    real, fake = rng.normal(size=(120, 4)), rng.normal(size=(90, 4)) + 0.4
    d_rf = scipy.spatial.distance.cdist(real, fake)

    def radii(x, k):
        d = scipy.spatial.distance.cdist(x, x)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    r_real, r_fake = radii(real, 3), radii(fake, 3)
    expected_pr = {
        "precision": np.mean(np.any(d_rf <= r_real[:, None], axis=0)),
        "recall": np.mean(np.any(d_rf <= r_fake[None, :], axis=1)),
    }
    r5 = radii(real, 5)
    expected_dc = {
        "density": np.sum(d_rf < r5[:, None]) / (5 * len(fake)),
        "coverage": np.mean(d_rf.min(axis=1) < r5),
    }
    for chunk_size in (7, 1000):
        assert precision_recall(real, fake, chunk_size=chunk_size) == pytest.approx(expected_pr, abs=1e-12)
        assert density_coverage(real, fake, chunk_size=chunk_size) == pytest.approx(expected_dc, abs=1e-12)


def test_precision_recall_identical_disjoint_and_half_covered_modes():
    rng = np.random.default_rng(11)
    centres = 10.0 * np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    real = _mixture(rng, 800, centres)

    assert precision_recall(real, real) == {"precision": 1.0, "recall": 1.0}
    dc = density_coverage(real, real)
    assert dc["coverage"] == 1.0 and dc["density"] == pytest.approx(1.0, abs=0.01)

    far = real + 1000.0
    assert precision_recall(real, far) == {"precision": 0.0, "recall": 0.0}
    assert density_coverage(real, far) == {"density": 0.0, "coverage": 0.0}

    # A fresh sample of the same distribution has precision and recall a little under 1 (k-NN balls
    # miss some tail points); a generator that drops two of the four modes keeps that precision and
    # halves the recall.
    full = precision_recall(real, _mixture(rng, 800, centres))
    assert full["precision"] > 0.9 and full["recall"] > 0.9
    half = _mixture(rng, 800, centres[:2])
    pr = precision_recall(real, half)
    assert pr["precision"] == pytest.approx(full["precision"], abs=0.04)
    assert pr["recall"] == pytest.approx(0.5 * full["recall"], abs=0.04)
    dc = density_coverage(real, half)
    assert dc["coverage"] == pytest.approx(0.5, abs=0.05) and dc["density"] == pytest.approx(1.0, abs=0.2)


def test_precision_recall_rejects_bad_input():
    with pytest.raises(ValueError, match="same feature size F"):
        precision_recall(np.zeros((10, 3)), np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"at least 4 rows"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
    with pytest.raises(ValueError, match="non-finite"):
        density_coverage(np.ones((10, 2)), np.full((10, 2), np.inf))


# ---------------------------------------------------------------------------- streaming stats


def _stream(x, batch_sizes, *, keep=0, logits=None):
    stats = FeatureStats.create(x.shape[1], keep=keep, logit_dim=None if logits is None else logits.shape[1])
    start = 0
    for size in batch_sizes:
        stats = stats.update(x[start : start + size], None if logits is None else logits[start : start + size])
        start += size
    assert start == len(x)
    return stats


def test_streaming_stats_equal_one_shot_mean_and_cov_for_any_split_and_merge_order():
    rng = np.random.default_rng(12)
    # a large common offset: a raw sum of squares would lose the covariance to cancellation
    x = 1e4 + rng.normal(size=(257, 6)) @ rng.normal(size=(6, 6))
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    for sizes in ([257], [1] * 10 + [247], [100, 0, 57, 100], list(rng.multinomial(257, np.ones(9) / 9))):
        stats = _stream(x, sizes)
        assert stats.count == 257
        np.testing.assert_allclose(stats.mu, mu, rtol=1e-13)
        np.testing.assert_allclose(stats.sigma, sigma, rtol=1e-8, atol=1e-10 * np.abs(sigma).max())
    shards = [_stream(part, [len(part)]) for part in np.array_split(x, 5)]
    for order in ([0, 1, 2, 3, 4], [4, 2, 0, 3, 1]):
        merged = merge_feature_stats([shards[i] for i in order])
        np.testing.assert_allclose(merged.mu, mu, rtol=1e-13)
        np.testing.assert_allclose(merged.sigma, sigma, rtol=1e-8, atol=1e-10 * np.abs(sigma).max())
    assert fid_from_stats(merged, (mu, sigma)) <= 1e-8 * np.trace(sigma)


def test_streaming_reservoir_keeps_first_rows_and_flat_arrays_roundtrip():
    rng = np.random.default_rng(13)
    x, logits = rng.normal(size=(50, 4)), rng.normal(size=(50, 3))
    stats = _stream(x, [7, 7, 36], keep=20, logits=logits)
    np.testing.assert_array_equal(stats.kept_features, x[:20].astype(np.float32))
    np.testing.assert_array_equal(stats.kept_logits, logits[:20].astype(np.float32))
    # per-process accumulators of different sizes flatten to the same shapes and merge back
    a, b = _stream(x[:5], [5], keep=20, logits=logits[:5]), _stream(x[5:], [45], keep=20, logits=logits[5:])
    flat_a, flat_b = a.to_arrays(), b.to_arrays()
    assert {k: v.shape for k, v in flat_a.items()} == {k: v.shape for k, v in flat_b.items()}
    merged = FeatureStats.from_arrays(flat_a).merge(FeatureStats.from_arrays(flat_b))
    assert merged.count == 50
    np.testing.assert_array_equal(merged.kept_features, stats.kept_features)
    np.testing.assert_array_equal(merged.kept_logits, stats.kept_logits)
    np.testing.assert_allclose(merged.sigma, np.cov(x, rowvar=False), rtol=1e-12)
    with pytest.raises(ValueError):
        stats.mean[0] = 1.0  # immutable


def test_streaming_stats_reject_bad_batches():
    stats = FeatureStats.create(4, keep=2)
    with pytest.raises(ValueError, match=r"expected shape \[B, F\] with F = 4, got \(3, 5\)"):
        stats.update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        stats.update(np.full((3, 4), np.nan))
    with pytest.raises(ValueError, match="do not track logits"):
        stats.update(np.zeros((3, 4)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        _ = stats.update(np.zeros((1, 4))).sigma
    with pytest.raises(ValueError, match="same \\(feature_dim, keep, logit_dim\\)"):
        stats.merge(FeatureStats.create(4, keep=3))


def test_save_load_stats_roundtrip_and_pytorch_fid_format(tmp_path):
    rng = np.random.default_rng(14)
    x = rng.normal(size=(40, 5))
    stats = _stream(x, [40], keep=10)
    path = tmp_path / "ref_stats.npz"
    save_stats(path, stats, feats=stats.kept_features)
    loaded = load_stats(path)
    np.testing.assert_array_equal(loaded["mu"], stats.mu)
    np.testing.assert_array_equal(loaded["sigma"], stats.sigma)
    assert int(loaded["count"]) == 40 and loaded["feats"].shape == (10, 5)
    assert loaded["mu"].dtype == np.float64 and loaded["sigma"].dtype == np.float64
    assert fid_from_stats(loaded, stats) == pytest.approx(0.0, abs=1e-10)
    # a pytorch-fid reference file holds just mu and sigma (float64)
    pytorch_fid_path = tmp_path / "fid_stats_cifar10.npz"
    np.savez(pytorch_fid_path, mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    assert set(load_stats(pytorch_fid_path)) == {"mu", "sigma"}
    # a (mu, sigma) pair, written at exactly the path given (numpy would append .npz)
    exact = tmp_path / "pair.stats"
    save_stats(exact, (x.mean(0), np.cov(x, rowvar=False)))
    assert exact.exists() and fid_from_stats(load_stats(exact), stats) == pytest.approx(0.0, abs=1e-10)


def test_load_stats_rejects_missing_sigma_pickles_and_bad_shapes(tmp_path):
    no_sigma = tmp_path / "no_sigma.npz"
    np.savez(no_sigma, mu=np.zeros(3))
    with pytest.raises(ValueError, match=r"no_sigma\.npz.*missing \['sigma'\]"):
        load_stats(no_sigma)
    pickled = tmp_path / "stats.pkl"
    pickled.write_bytes(pickle.dumps({"mu": np.zeros(3), "sigma": np.eye(3)}))
    with pytest.raises(ValueError, match=r"stats\.pkl.*without pickle"):
        load_stats(pickled)
    single = tmp_path / "mu.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match=r"mu\.npy.*got a single array"):
        load_stats(single)
    object_array = tmp_path / "object.npz"
    np.savez(object_array, mu=np.zeros(3), sigma=np.array([np.eye(3), None], dtype=object))
    with pytest.raises(ValueError, match=r"object\.npz.*object \(pickled\) arrays"):
        load_stats(object_array)
    bad_shape = tmp_path / "bad_shape.npz"
    np.savez(bad_shape, mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ValueError, match=r"bad_shape\.npz sigma: expected shape \[F, F\]"):
        load_stats(bad_shape)
    not_finite = tmp_path / "not_finite.npz"
    np.savez(not_finite, mu=np.array([0.0, np.nan]), sigma=np.eye(2))
    with pytest.raises(ValueError, match=r"not_finite\.npz mu: expected finite"):
        load_stats(not_finite)
