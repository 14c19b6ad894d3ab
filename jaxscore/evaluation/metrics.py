r"""Sample-quality metrics on features: FID, KID, IS, precision/recall, density/coverage.

Every function here is a pure function of host arrays (numpy), computed in float64: features come
off the device in batches and the metrics are a few dense linear-algebra steps on ``[N, F]``
feature matrices or on their statistics ``(mu [F], sigma [F, F])``. Conventions follow the
reference implementations, so figures are comparable with published ones:

* ``frechet_distance``  pytorch-fid / clean-fid formula, with a symmetric eigenvalue square root
  instead of ``scipy.linalg.sqrtm`` (stable for singular covariances, no ``eps`` offset).
* ``kernel_inception_distance``  Bińkowski et al. 2018, as torch-fidelity / clean-fid: unbiased
  MMD^2 with the cubic polynomial kernel, averaged over random subsets.
* ``inception_score``  Salimans et al. 2016, as the original OpenAI code (contiguous splits).
* ``precision_recall``  Kynkäänniemi et al. 2019, as the StyleGAN2-ADA code (``<=`` the radius).
* ``density_coverage``  Naeem et al. 2020, as the ``prdc`` package (strict ``<`` the radius).

Feature matrices are ``[N, F]`` (one row per sample); pairwise distances are computed a row block
at a time (``chunk_size`` rows against all the other set), so 10k x 10k distances never exist at
once.
"""

from __future__ import annotations

import numpy as np
import scipy.special

__all__ = [
    "frechet_distance",
    "kernel_inception_distance",
    "inception_score",
    "precision_recall",
    "density_coverage",
]

# ---------------------------------------------------------------------------------------------
# argument checks (host arrays: shapes and values are known, so all checks run eagerly)
# ---------------------------------------------------------------------------------------------


def _as_float64(name: str, value, *, ndim: int) -> np.ndarray:
    """``value`` as a float64 array with exactly ``ndim`` axes and finite entries, else raise."""
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name}: expected a real (floating-point) array, got dtype {arr.dtype}.")
    if arr.ndim != ndim:
        axes = {1: "[F]", 2: "[N, F]"}.get(ndim, f"{ndim} axes")
        raise ValueError(f"{name}: expected shape {axes}, got shape {arr.shape}.")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: expected finite values, got {bad} non-finite entries (NaN/inf).")
    return arr


def check_features(name: str, value, *, min_rows: int = 1) -> np.ndarray:
    """Return ``value`` as finite float64 features ``[N, F]`` with ``N >= min_rows``, else raise."""
    arr = _as_float64(name, value, ndim=2)
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} rows ([N, F]), got shape {arr.shape}.")
    return arr


def _check_same_dim(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same feature size F, got shapes {a.shape} and {b.shape}."
        )


def _check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_gaussian(name: str, mu, sigma) -> tuple[np.ndarray, np.ndarray]:
    """Check ``mu [F]`` and ``sigma [F, F]`` (finite, square, matching F); return them as float64."""
    mu = _as_float64(f"{name} mu", mu, ndim=1)
    sigma = _as_float64(f"{name} sigma", sigma, ndim=2)
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{name} sigma: expected shape [F, F] = {(mu.shape[0],) * 2} matching mu [F] = {mu.shape}, "
            f"got {sigma.shape}."
        )
    return mu, sigma


# ---------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------


def _clip_psd_eigenvalues(eigenvalues: np.ndarray, what: str, psd_rtol: float) -> np.ndarray:
    """Eigenvalues of a PSD matrix with those at round-off level set to 0; raise if one is truly negative.

    An eigenvalue below ``-psd_rtol * max|eigenvalue|`` cannot be round-off, so the matrix is not a
    covariance and the caller gets an error instead of a silently wrong distance. Eigenvalues up
    to ``F * eps * max|eigenvalue|`` (the numerical-rank threshold of ``numpy.linalg.matrix_rank``)
    are set to 0: they are noise of either sign, and the square roots taken later would turn
    noise of 1e-16 into errors of 1e-8 each.
    """
    scale = float(np.max(np.abs(eigenvalues))) if eigenvalues.size else 0.0
    smallest = float(np.min(eigenvalues)) if eigenvalues.size else 0.0
    if smallest < -psd_rtol * scale:
        raise ValueError(
            f"{what}: expected a positive semi-definite matrix, got smallest eigenvalue {smallest:.6g} "
            f"< -{psd_rtol:g} x largest |eigenvalue| {scale:.6g}."
        )
    round_off = eigenvalues.size * np.finfo(np.float64).eps * scale
    return np.where(eigenvalues > round_off, eigenvalues, 0.0)


def _symmetric(name: str, sigma: np.ndarray, psd_rtol: float) -> np.ndarray:
    """``(sigma + sigma^T) / 2`` after checking ``sigma`` is symmetric up to ``psd_rtol`` (relative)."""
    scale = float(np.max(np.abs(sigma))) if sigma.size else 0.0
    asym = float(np.max(np.abs(sigma - sigma.T))) if sigma.size else 0.0
    if asym > psd_rtol * scale:
        raise ValueError(
            f"{name}: expected a symmetric covariance matrix, got max |sigma - sigma^T| = {asym:.6g} "
            f"(largest |entry| {scale:.6g})."
        )
    return 0.5 * (sigma + sigma.T)


def _psd_sqrt(sigma: np.ndarray, name: str, psd_rtol: float) -> np.ndarray:
    r"""Symmetric square root :math:`V \operatorname{diag}(\sqrt{w}) V^T` of PSD ``sigma = V diag(w) V^T``."""
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    eigenvalues = _clip_psd_eigenvalues(eigenvalues, name, psd_rtol)
    return (eigenvectors * np.sqrt(eigenvalues)) @ eigenvectors.T


def trace_sqrt_product(sigma1, sigma2, *, psd_rtol: float = 1e-5) -> float:
    r""":math:`\operatorname{tr}((\Sigma_1\Sigma_2)^{1/2})` for PSD ``sigma1, sigma2 [F, F]`` (float64).

    :math:`\Sigma_1\Sigma_2` is similar to the PSD matrix
    :math:`M = \Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}`, so
    :math:`\operatorname{tr}((\Sigma_1\Sigma_2)^{1/2}) = \sum_i \sqrt{\lambda_i(M)}`, with
    :math:`\Sigma_1^{1/2}` and :math:`\lambda(M)` from ``eigh`` (symmetric, always real).
    Eigenvalues at round-off level (``|lambda| <= F * eps * max|eigenvalue|``, the numerical-rank
    threshold of ``numpy.linalg.matrix_rank``) and negative ones down to
    ``-psd_rtol * max|eigenvalue|`` are set to 0, so rank-deficient covariances (fewer samples than
    features) come out exact to round-off; anything more negative raises.
    """
    sqrt1 = _psd_sqrt(sigma1, "sigma1", psd_rtol)
    middle = sqrt1 @ sigma2 @ sqrt1
    eigenvalues = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    eigenvalues = _clip_psd_eigenvalues(eigenvalues, "sigma1^1/2 sigma2 sigma1^1/2", psd_rtol)
    return float(np.sum(np.sqrt(eigenvalues)))


def frechet_distance(mu1, sigma1, mu2, sigma2, *, psd_rtol: float = 1e-5) -> float:
    r"""Fréchet distance between :math:`N(\mu_1, \Sigma_1)` and :math:`N(\mu_2, \Sigma_2)` (FID on features).

    .. math::
        d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Sigma_1 + \operatorname{tr}\Sigma_2
              - 2 \sum_i \sqrt{\lambda_i(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})}

    Args:
      mu1, mu2: means ``[F]``.
      sigma1, sigma2: covariances ``[F, F]`` (symmetric PSD; e.g. ``np.cov(features, rowvar=False)``).
      psd_rtol: relative tolerance for round-off. Each sigma must be symmetric to
        ``max|S - S^T| <= psd_rtol * max|S|``; eigenvalues in ``[-psd_rtol * max|eigenvalue|, 0)``
        are clipped to 0, more negative ones raise. The default 1e-5 accepts covariances that were
        stored in float32 (entrywise rounding 6e-8 moves eigenvalues by up to ~6e-8 sqrt(F) x the
        largest, 3e-6 at F = 2048) and rejects matrices that are not covariances.

    Returns:
      :math:`d^2 \ge 0` as a Python float, computed in float64. Unlike pytorch-fid
      (``scipy.linalg.sqrtm`` of the non-symmetric product, then a ``1e-6`` diagonal offset when
      it fails), the symmetric form is exact for singular and rank-deficient covariances. Round-off
      can leave the distance of identical statistics at about ``-1e-16 x tr(Sigma)``; it is clipped to 0.

    Raises:
      ValueError: shapes other than ``mu [F]``, ``sigma [F, F]`` with one F; non-finite entries;
        a sigma that is not symmetric or not PSD within ``psd_rtol``.
    """
    mu1, sigma1 = check_gaussian("first", mu1, sigma1)
    mu2, sigma2 = check_gaussian("second", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"frechet_distance: both Gaussians must have the same feature size F, got mu1 {mu1.shape} "
            f"and mu2 {mu2.shape}."
        )
    sigma1 = _symmetric("first sigma", sigma1, psd_rtol)
    sigma2 = _symmetric("second sigma", sigma2, psd_rtol)
    diff = mu1 - mu2
    distance = (
        float(diff @ diff)
        + float(np.trace(sigma1))
        + float(np.trace(sigma2))
        - 2.0 * trace_sqrt_product(sigma1, sigma2, psd_rtol=psd_rtol)
    )
    return max(distance, 0.0)


# ---------------------------------------------------------------------------------------------
# Kernel Inception distance
# ---------------------------------------------------------------------------------------------


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r"""Polynomial kernel :math:`k(x, y) = (x \cdot y / F + 1)^3` on rows: ``[m, F], [n, F] -> [m, n]``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    r"""Unbiased MMD^2 of equal-size samples ``x, y [m, F]`` with the cubic polynomial kernel.

    .. math::
        \widehat{\mathrm{MMD}}^2 = \frac{1}{m(m-1)}\sum_{i \ne j}\big(k(x_i,x_j) + k(y_i,y_j)\big)
                                   - \frac{2}{m^2}\sum_{i,j} k(x_i, y_j)

    (the ``mmd_est="unbiased"`` estimator of torch-fidelity and clean-fid: the cross term keeps its
    diagonal). Its expectation is the population MMD^2, 0 when x and y share a distribution.
    """
    m = x.shape[0]
    k_xx = _cubic_kernel(x, x)
    k_yy = _cubic_kernel(y, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * _cubic_kernel(x, y).sum() / (m * m))


def kernel_inception_distance(
    feats_a, feats_b, *, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    r"""KID (Bińkowski et al. 2018): unbiased MMD^2 with :math:`k(x,y) = (x\cdot y/F + 1)^3`, averaged over subsets.

    For each of ``num_subsets`` draws, ``m = min(subset_size, N_a, N_b)`` rows of each set are
    drawn without replacement (independently across draws) and :func:`unbiased_mmd2` is
    evaluated; as clean-fid's ``kernel_distance`` (subset size clipped to the sample counts) and
    torch-fidelity's ``kid_features_to_metric`` (defaults 100 subsets of 1000).

    Args:
      feats_a, feats_b: features ``[N_a, F]``, ``[N_b, F]`` (at least 2 rows each).
      num_subsets: number of subset draws (>= 1).
      subset_size: rows per subset before clipping to ``min(N_a, N_b)`` (>= 2).
      seed: seed of the ``numpy.random.default_rng`` that draws the subsets (a then b, per draw);
        the result is a deterministic function of the inputs and the seed.

    Returns:
      ``(mean, std_err)``: the mean MMD^2 over subsets and its Monte-Carlo standard error
      ``std(ddof=1) / sqrt(num_subsets)`` (``nan`` for a single subset). The standard error
      measures the spread of the subset average around the full-data value, not the sampling
      error of the finite feature sets (torch-fidelity reports ``std(ddof=0)`` of the subsets
      instead; multiply by ``sqrt(num_subsets)`` to compare).
    """
    feats_a = check_features("feats_a", feats_a, min_rows=2)
    feats_b = check_features("feats_b", feats_b, min_rows=2)
    _check_same_dim("feats_a", feats_a, "feats_b", feats_b)
    num_subsets = _check_positive_int("num_subsets", num_subsets)
    subset_size = min(_check_positive_int("subset_size", subset_size, minimum=2), len(feats_a), len(feats_b))
    rng = np.random.default_rng(seed)
    mmds = np.empty(num_subsets)
    for i in range(num_subsets):
        rows_a = rng.choice(len(feats_a), subset_size, replace=False)
        rows_b = rng.choice(len(feats_b), subset_size, replace=False)
        mmds[i] = unbiased_mmd2(feats_a[rows_a], feats_b[rows_b])
    std_err = float(np.std(mmds, ddof=1) / np.sqrt(num_subsets)) if num_subsets > 1 else float("nan")
    return float(np.mean(mmds)), std_err


# ---------------------------------------------------------------------------------------------
# Inception score
# ---------------------------------------------------------------------------------------------


def _log_class_probs(logits_or_probs: np.ndarray, from_logits: bool) -> np.ndarray:
    """``log p(y|x)`` ``[N, K]``: log-softmax of logits, or the log of checked probabilities (-inf at 0)."""
    if from_logits:
        return scipy.special.log_softmax(logits_or_probs, axis=1)
    probs = logits_or_probs
    if np.any(probs < 0):
        raise ValueError(f"probs: expected non-negative class probabilities, got minimum {probs.min():.6g}.")
    row_sums = probs.sum(axis=1)
    worst = float(np.max(np.abs(row_sums - 1.0)))
    if worst > 1e-3:  # float32 softmax outputs sum to 1 within ~1e-6; 1e-3 catches logits passed as probs
        raise ValueError(
            f"probs: expected rows summing to 1 (from_logits=False), got a row sum off by {worst:.6g}; "
            f"pass from_logits=True for logits."
        )
    with np.errstate(divide="ignore"):
        return np.log(probs / row_sums[:, None])


def _split_score(log_p: np.ndarray) -> float:
    r""":math:`\exp(\mathbb{E}_x \mathrm{KL}(p(y|x)\,\|\,p(y)))` for one split's ``log p(y|x) [n, K]``, with
    :math:`\log p(y) = \operatorname{logsumexp}_x \log p(y|x) - \log n` and :math:`0 \log 0 = 0`."""
    log_marginal = scipy.special.logsumexp(log_p, axis=0) - np.log(log_p.shape[0])
    p = np.exp(log_p)
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (log_p - log_marginal), 0.0)
    return float(np.exp(np.mean(np.sum(terms, axis=1))))


def inception_score(logits_or_probs, *, splits: int = 10, from_logits: bool = True) -> tuple[float, float]:
    r"""Inception score (Salimans et al. 2016), mean and std over splits.

    Per split, :math:`\mathrm{IS} = \exp(\mathbb{E}_x \mathrm{KL}(p(y|x)\,\|\,p(y)))`.

    The ``N`` rows are cut, in the given order, into ``splits`` contiguous parts
    ``[i N // splits, (i+1) N // splits)`` (as the original OpenAI code; torch-fidelity first
    shuffles with a fixed seed); in each part :math:`p(y)` is the mean of :math:`p(y|x)` over
    the part. Everything is computed in log space in float64 (log-softmax, logsumexp), so
    saturated logits do not overflow and :math:`0 \log 0` terms are exactly 0.

    Args:
      logits_or_probs: ``[N, K]`` classifier logits (``from_logits=True``) or probabilities.
      splits: number of parts, ``1 <= splits <= N``.
      from_logits: whether the input is logits (default) or rows of probabilities summing to 1.

    Returns:
      ``(mean, std)`` over the splits, std with ``ddof=0`` as the reference. K equiprobable,
      confidently classified classes score K; a single class scores 1.
    """
    values = check_features("logits_or_probs", logits_or_probs)
    splits = _check_positive_int("splits", splits)
    n = values.shape[0]
    if splits > n:
        raise ValueError(f"splits: expected at most N = {n} splits (one sample each), got {splits}.")
    log_p = _log_class_probs(values, from_logits)
    scores = [_split_score(log_p[i * n // splits : (i + 1) * n // splits]) for i in range(splits)]
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------------------------------------
# k-NN manifolds: precision / recall, density / coverage
# ---------------------------------------------------------------------------------------------


def _squared_distances(rows: np.ndarray, cols: np.ndarray, cols_sq_norm: np.ndarray) -> np.ndarray:
    r"""``[r, c]`` squared Euclidean distances :math:`\|a\|^2 + \|b\|^2 - 2 a\cdot b`, clipped at 0."""
    d2 = np.sum(rows * rows, axis=1)[:, None] + cols_sq_norm[None, :] - 2.0 * (rows @ cols.T)
    return np.maximum(d2, 0.0)


def _row_blocks(n: int, chunk_size: int):
    for start in range(0, n, chunk_size):
        yield start, min(start + chunk_size, n)


def knn_radii_squared(features: np.ndarray, k: int, *, chunk_size: int = 512) -> np.ndarray:
    r"""Squared distance from each row of ``features [N, F]`` to its k-th nearest *other* row: ``[N]``.

    The point itself is excluded by index (its distance set to +inf), so duplicates of a point
    still count as neighbours at distance 0. Distances are computed ``chunk_size`` rows at a time
    (memory ``chunk_size x N`` floats).
    """
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"k: expected k < N = {n} (each point needs k other points), got k = {k}.")
    sq_norm = np.sum(features * features, axis=1)
    radii = np.empty(n)
    for start, stop in _row_blocks(n, chunk_size):
        d2 = _squared_distances(features[start:stop], features, sq_norm)
        d2[np.arange(stop - start), np.arange(start, stop)] = np.inf
        radii[start:stop] = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return radii


def _fraction_inside_any_ball(
    probes: np.ndarray, centres: np.ndarray, radii2: np.ndarray, chunk_size: int
) -> float:
    """Fraction of ``probes`` within (``<=``) the radius of at least one centre's ball."""
    sq_norm = np.sum(centres * centres, axis=1)
    inside = 0
    for start, stop in _row_blocks(probes.shape[0], chunk_size):
        d2 = _squared_distances(probes[start:stop], centres, sq_norm)
        inside += int(np.count_nonzero(np.any(d2 <= radii2[None, :], axis=1)))
    return inside / probes.shape[0]


def _check_manifold_args(real, fake, k, chunk_size) -> tuple[np.ndarray, np.ndarray, int, int]:
    k = _check_positive_int("k", k)
    chunk_size = _check_positive_int("chunk_size", chunk_size)
    real = check_features("real", real, min_rows=k + 1)
    fake = check_features("fake", fake, min_rows=1)
    _check_same_dim("real", real, "fake", fake)
    return real, fake, k, chunk_size


def precision_recall(real, fake, *, k: int = 3, chunk_size: int = 512) -> dict[str, float]:
    r"""Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake [M, F]`` against ``real [N, F]``.

    Each set's manifold is the union of balls around its points with radius the distance to the
    point's k-th nearest neighbour in the same set (the point itself not counted):

    .. math::
        \text{precision} = \frac1M \sum_j \mathbb 1\big[\exists i: \|y_j - x_i\| \le r_k(x_i)\big],\quad
        \text{recall} = \frac1N \sum_i \mathbb 1\big[\exists j: \|x_i - y_j\| \le r_k(y_j)\big]

    (``<=`` as the StyleGAN2-ADA reference; k = 3 its default). Distances are computed in float64,
    ``chunk_size`` rows at a time.

    Returns:
      ``{"precision": float, "recall": float}``, each in [0, 1].
    """
    real, fake, k, chunk_size = _check_manifold_args(real, fake, k, chunk_size)
    if fake.shape[0] <= k:
        raise ValueError(f"fake: expected more than k = {k} rows for its k-NN radii, got shape {fake.shape}.")
    real_radii2 = knn_radii_squared(real, k, chunk_size=chunk_size)
    fake_radii2 = knn_radii_squared(fake, k, chunk_size=chunk_size)
    return {
        "precision": _fraction_inside_any_ball(fake, real, real_radii2, chunk_size),
        "recall": _fraction_inside_any_ball(real, fake, fake_radii2, chunk_size),
    }


def density_coverage(real, fake, *, k: int = 5, chunk_size: int = 512) -> dict[str, float]:
    r"""Density and coverage (Naeem et al. 2020) of ``fake [M, F]`` against ``real [N, F]``.

    With :math:`r_k(x_i)` the distance from real point :math:`x_i` to its k-th nearest other real
    point and strict inequalities (as the ``prdc`` reference; k = 5 its default):

    .. math::
        \text{density} = \frac{1}{kM}\sum_j \sum_i \mathbb 1\big[\|y_j - x_i\| < r_k(x_i)\big],\quad
        \text{coverage} = \frac1N \sum_i \mathbb 1\big[\min_j \|x_i - y_j\| < r_k(x_i)\big]

    Density is about 1 when fake matches real (it is not bounded by 1); coverage is in [0, 1].

    Returns:
      ``{"density": float, "coverage": float}``.
    """
    real, fake, k, chunk_size = _check_manifold_args(real, fake, k, chunk_size)
    real_radii2 = knn_radii_squared(real, k, chunk_size=chunk_size)
    real_sq_norm = np.sum(real * real, axis=1)
    ball_hits = 0
    for start, stop in _row_blocks(fake.shape[0], chunk_size):
        d2 = _squared_distances(fake[start:stop], real, real_sq_norm)
        ball_hits += int(np.count_nonzero(d2 < real_radii2[None, :]))
    fake_sq_norm = np.sum(fake * fake, axis=1)
    covered = 0
    for start, stop in _row_blocks(real.shape[0], chunk_size):
        nearest_fake2 = np.min(_squared_distances(real[start:stop], fake, fake_sq_norm), axis=1)
        covered += int(np.count_nonzero(nearest_fake2 < real_radii2[start:stop]))
    return {"density": ball_hits / (k * fake.shape[0]), "coverage": covered / real.shape[0]}
