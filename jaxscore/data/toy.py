r"""Toy distributions; the Gaussian ones have exact scores and log-densities at every t.

A Gaussian mixture :math:`p_0 = \sum_k w_k N(\mu_k, \Sigma_k)` diffused by a linear SDE
(:math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`) is again a mixture,

.. math:: p_t = \sum_k w_k\, N(\alpha_t\mu_k,\; \alpha_t^2\Sigma_k + \sigma_t^2 I),

with the same weights. Storing :math:`\Sigma_k = U_k\,\mathrm{diag}(\lambda_k)\,U_k^\top` once makes
every :math:`p_t` diagonal in the same basis, so log-density and score cost
:math:`O(K d^2)` per point at any t. These are the ground truth for tests and benchmarks.

Non-Gaussian toys for pictures (moons, swiss roll, checkerboard, rings) are
plain samplers ``f(key, n) -> [n, 2]``.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore._checks import check_batch, check_float_array


@flax.struct.dataclass
class GaussianMixture:
    """Mixture of K full-covariance Gaussians in d dimensions (a pytree; passes through jit).

    weights: [K] (sum to 1), means: [K, d], eigvals: [K, d] (> 0), eigvecs: [K, d, d]
    (columns are eigenvectors). Build with :func:`gaussian_mixture`.
    """

    weights: jax.Array
    means: jax.Array
    eigvals: jax.Array
    eigvecs: jax.Array

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def covariances(self) -> jax.Array:
        """[K, d, d]."""
        return jnp.einsum("kij,kj,klj->kil", self.eigvecs, self.eigvals, self.eigvecs)

    @property
    def mean(self) -> jax.Array:
        """Mean of the mixture, [d]."""
        return self.weights @ self.means

    @property
    def covariance(self) -> jax.Array:
        """Covariance of the mixture, [d, d]."""
        centered = self.means - self.mean
        return jnp.einsum("k,kij->ij", self.weights, self.covariances) + jnp.einsum(
            "k,ki,kj->ij", self.weights, centered, centered
        )

    def _check(self, x):
        x = check_float_array("x", x, min_ndim=2)
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"x: expected shape [B, {self.dim}], got {tuple(x.shape)}.")
        return x

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """Draw ``num`` points: [num, d]."""
        return self.sample_with_labels(key, num)[0]

    def sample_with_labels(self, key: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
        """Draw ``num`` points and their component index: ([num, d], [num] int)."""
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.choice(k_comp, self.num_components, (num,), p=self.weights)
        z = jax.random.normal(k_noise, (num, self.dim), self.means.dtype)
        scaled = jnp.einsum("nij,nj->ni", self.eigvecs[comp], jnp.sqrt(self.eigvals[comp]) * z)
        return self.means[comp] + scaled, comp

    # --- exact quantities at noise (alpha, sigma) -------------------------------------
    def _component_terms(self, x, alpha, sigma):
        """Per-component log-density [B, K] and score [B, K, d] of p_t at x [B, d].

        alpha, sigma: [B]. Component k of p_t is N(alpha mu_k, alpha^2 Sigma_k + sigma^2 I).
        """
        a = alpha[:, None, None]
        var = a**2 * self.eigvals[None] + sigma[:, None, None] ** 2  # [B, K, d]
        diff = x[:, None, :] - a * self.means[None]  # [B, K, d]
        y = jnp.einsum("kji,bkj->bki", self.eigvecs, diff)  # coordinates in eigenbasis
        log_det = jnp.sum(jnp.log(var), axis=-1)
        log_norm = -0.5 * (self.dim * math.log(2 * math.pi) + log_det)
        log_comp = log_norm - 0.5 * jnp.sum(y**2 / var, axis=-1) + jnp.log(self.weights)[None]
        score_comp = -jnp.einsum("kij,bkj->bki", self.eigvecs, y / var)
        return log_comp, score_comp

    def log_prob_at(self, x: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
        r""":math:`\log p(x)` of the mixture scaled by alpha and convolved with :math:`N(0,\sigma^2 I)`: [B]."""
        x = self._check(x)
        log_comp, _ = self._component_terms(x, jnp.broadcast_to(alpha, x.shape[:1]), jnp.broadcast_to(sigma, x.shape[:1]))
        return jax.nn.logsumexp(log_comp, axis=-1)

    def score_at(self, x: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
        r"""Exact score of the same distribution: posterior-weighted component scores, [B, d]."""
        x = self._check(x)
        log_comp, score_comp = self._component_terms(
            x, jnp.broadcast_to(alpha, x.shape[:1]), jnp.broadcast_to(sigma, x.shape[:1])
        )
        resp = jax.nn.softmax(log_comp, axis=-1)
        return jnp.einsum("bk,bkd->bd", resp, score_comp)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log p_0(x) of the mixture itself: [B]."""
        return self.log_prob_at(x, jnp.ones(()), jnp.zeros(()))

    def score(self, x: jax.Array) -> jax.Array:
        """Exact score of the mixture itself: [B, d]."""
        return self.score_at(x, jnp.ones(()), jnp.zeros(()))

    def log_prob_t(self, x: jax.Array, t: jax.Array, sde) -> jax.Array:
        r"""Exact :math:`\log p_t(x)` under ``sde`` (which defines p_t from this p_0): [B]."""
        x, t = check_batch(x, t)
        return self.log_prob_at(x, *sde.marginal_coefs(t))

    def score_t(self, x: jax.Array, t: jax.Array, sde) -> jax.Array:
        r"""Exact :math:`\nabla_x \log p_t(x)` under ``sde``: [B, d]."""
        x, t = check_batch(x, t)
        return self.score_at(x, *sde.marginal_coefs(t))

    def score_fn(self, sde) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """The exact ``score_fn(x, t)`` of the diffused mixture: plug into any sampler."""
        return lambda x, t: self.score_t(x, t, sde)

    def posterior(self, A, y, noise_std) -> "GaussianMixture":
        r"""Exact posterior :math:`p(x \mid y)` under :math:`y = A x + n`, :math:`n \sim N(0, \sigma_y^2 I)`.

        See :func:`linear_gaussian_posterior` (A: [m, d] dense, y: [m], noise_std: scalar >= 0)."""
        return linear_gaussian_posterior(self, A, y, noise_std)

    def marginal(self, alpha: float, sigma: float) -> "GaussianMixture":
        """The diffused mixture at scalar (alpha, sigma) as a new GaussianMixture."""
        return GaussianMixture(
            self.weights, alpha * self.means, alpha**2 * self.eigvals + sigma**2, self.eigvecs
        )


def gaussian_mixture(weights, means, covariances=None, stds=None) -> GaussianMixture:
    """Build a mixture from weights [K], means [K, d] and either full ``covariances``
    [K, d, d] or per-component ``stds`` ([K] isotropic or [K, d] diagonal)."""
    weights = np.asarray(weights, np.float64)
    means = np.asarray(means, np.float64)
    if means.ndim != 2:
        raise ValueError(f"means: expected shape [K, d], got {means.shape}.")
    k, d = means.shape
    if weights.shape != (k,) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, atol=1e-6):
        raise ValueError(f"weights: expected {k} non-negative numbers summing to 1, got {weights}.")
    if (covariances is None) == (stds is None):
        raise ValueError("gaussian_mixture: give exactly one of covariances or stds.")
    if covariances is not None:
        cov = np.asarray(covariances, np.float64)
        if cov.shape != (k, d, d):
            raise ValueError(f"covariances: expected shape {(k, d, d)}, got {cov.shape}.")
        eigvals, eigvecs = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, 1, 2)))
    else:
        s = np.asarray(stds, np.float64)
        s = np.broadcast_to(s[:, None] if s.ndim == 1 else s, (k, d))
        eigvals, eigvecs = s**2, np.broadcast_to(np.eye(d), (k, d, d))
    if np.any(eigvals <= 0):
        raise ValueError("covariances must be positive definite.")
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return GaussianMixture(f32(weights / weights.sum()), f32(means), f32(eigvals), f32(eigvecs))


def linear_gaussian_posterior(prior: GaussianMixture, A, y, noise_std) -> GaussianMixture:
    r"""Exact posterior of a Gaussian-mixture prior under a linear-Gaussian observation.

    Prior :math:`p(x) = \sum_k w_k N(x; \mu_k, \Sigma_k)`, observation
    :math:`y = A x + n`, :math:`n \sim N(0, \sigma_y^2 I_m)`. Per component, with
    :math:`S_k = A\Sigma_k A^\top + \sigma_y^2 I` and gain :math:`K_k = \Sigma_k A^\top S_k^{-1}`,

    .. math::
        p(x \mid y) = \sum_k w'_k\, N(x;\, \mu_k + K_k (y - A\mu_k),\; \Sigma_k - K_k A \Sigma_k),
        \qquad w'_k \propto w_k\, N(y;\, A\mu_k, S_k).

    A: [m, d] (any dense matrix; ``S_k`` must be invertible: ``noise_std > 0`` or A of full row
    rank), y: [m], noise_std: scalar :math:`\sigma_y \ge 0`. Returns a :class:`GaussianMixture` in d
    dimensions (same K), so it samples, and (when the posterior covariances are non-singular,
    e.g. ``noise_std > 0``) has exact log-density and scores at every t like any mixture.
    With ``noise_std = 0`` the covariances are singular along the observed directions: eigenvalues
    there are clipped to 0, so samples and moments are exact, densities are not defined.

    Pure jnp: jit/vmap over ``y`` (a batch of observations gives a batch of mixtures with
    leading axes). Covariances use the Joseph form
    :math:`(I - K A)\Sigma (I - K A)^\top + \sigma_y^2 K K^\top` (symmetric PSD in float32).
    """
    A = jnp.asarray(A, prior.means.dtype)
    y = jnp.asarray(y, prior.means.dtype)
    d = prior.dim
    if A.ndim != 2 or A.shape[1] != d:
        raise ValueError(f"A: expected a matrix [m, {d}] (the prior has d = {d}), got shape {tuple(A.shape)}.")
    if y.shape != A.shape[:1]:
        raise ValueError(f"y: expected shape [m] = {tuple(A.shape[:1])} (rows of A), got {tuple(y.shape)}.")
    if isinstance(noise_std, (int, float)) and not noise_std >= 0:
        raise ValueError(f"noise_std: expected sigma_y >= 0, got {noise_std}.")
    m = A.shape[0]
    var_y = jnp.asarray(noise_std, prior.means.dtype) ** 2
    cov = prior.covariances  # [K, d, d]
    A_cov = jnp.einsum("md,kde->kme", A, cov)  # A Sigma_k: [K, m, d]
    S = jnp.einsum("kme,ne->kmn", A_cov, A) + var_y * jnp.eye(m, dtype=A.dtype)  # [K, m, m]
    S = 0.5 * (S + jnp.swapaxes(S, 1, 2))
    chol = jnp.linalg.cholesky(S)
    resid = y[None] - prior.means @ A.T  # [K, m]
    white = jax.scipy.linalg.solve_triangular(chol, resid[..., None], lower=True)[..., 0]  # L^-1 r
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), -1)
    log_lik = -0.5 * (jnp.sum(white**2, -1) + log_det + m * math.log(2 * math.pi))
    weights = jax.nn.softmax(jnp.log(prior.weights) + log_lik)
    # K_k = Sigma A^T S^-1 = (S^-1 A Sigma)^T
    gain = jnp.swapaxes(jax.scipy.linalg.cho_solve((chol, True), A_cov), 1, 2)  # [K, d, m]
    means = prior.means + jnp.einsum("kdm,km->kd", gain, resid)
    I_KA = jnp.eye(d, dtype=A.dtype)[None] - jnp.einsum("kdm,me->kde", gain, A)
    post_cov = jnp.einsum("kde,kef,kgf->kdg", I_KA, cov, I_KA) + var_y * jnp.einsum("kdm,kem->kde", gain, gain)
    eigvals, eigvecs = jnp.linalg.eigh(0.5 * (post_cov + jnp.swapaxes(post_cov, 1, 2)))
    return GaussianMixture(weights, means, jnp.maximum(eigvals, 0.0), eigvecs)


def gaussian(mean, covariance) -> GaussianMixture:
    """A single Gaussian N(mean, covariance) as a one-component mixture."""
    mean = np.asarray(mean, np.float64)
    return gaussian_mixture([1.0], mean[None], covariances=np.asarray(covariance, np.float64)[None])


def ring_mixture(num_modes: int = 8, radius: float = 4.0, stds=None, weights=None) -> GaussianMixture:
    """2-D ring of ``num_modes`` Gaussians at ``radius``. Default stds 0.15..0.6 spread over
    the modes and unequal weights, so mode weights and per-mode stds are both tested."""
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    if stds is None:
        stds = np.linspace(0.15, 0.6, num_modes)
    if weights is None:
        weights = np.linspace(1.0, 2.0, num_modes)
        weights = weights / weights.sum()
    return gaussian_mixture(weights, means, stds=np.broadcast_to(np.asarray(stds, np.float64), (num_modes,)))


def grid_mixture(side: int = 5, spacing: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """2-D ``side x side`` grid of equal-weight isotropic Gaussians centred on the origin."""
    coords = (np.arange(side) - (side - 1) / 2) * spacing
    means = np.stack(np.meshgrid(coords, coords, indexing="ij"), -1).reshape(-1, 2)
    k = means.shape[0]
    return gaussian_mixture(np.full(k, 1.0 / k), means, stds=np.full(k, std))


def random_mixture(key: jax.Array, dim: int, num_components: int = 4, *, separation: float = 4.0,
                   std_range: tuple[float, float] = (0.3, 0.8), anisotropic: bool = True) -> GaussianMixture:
    """A random mixture in ``dim`` dimensions: means ~ N(0, separation^2 I), random rotations and
    per-axis stds drawn from ``std_range``; weights ~ Dirichlet(5)."""
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    means = separation * rng.standard_normal((num_components, dim))
    weights = rng.dirichlet(np.full(num_components, 5.0))
    lo, hi = std_range
    stds = rng.uniform(lo, hi, (num_components, dim) if anisotropic else (num_components, 1))
    stds = np.broadcast_to(stds, (num_components, dim))
    rot = np.linalg.qr(rng.standard_normal((num_components, dim, dim)))[0] if anisotropic else np.broadcast_to(np.eye(dim), (num_components, dim, dim))
    cov = np.einsum("kij,kj,klj->kil", rot, stds**2, rot)
    return gaussian_mixture(weights, means, covariances=cov)


# --- non-Gaussian 2-D toys (samplers only) ---------------------------------------------

def sample_moons(key: jax.Array, num: int, noise: float = 0.05) -> jax.Array:
    """Two interleaved half circles, scaled to roughly [-2, 2]^2: [num, 2]."""
    k1, k2, k3 = jax.random.split(key, 3)
    theta = jnp.pi * jax.random.uniform(k1, (num,))
    upper = jax.random.bernoulli(k2, 0.5, (num,))
    x = jnp.where(upper, jnp.cos(theta), 1.0 - jnp.cos(theta))
    y = jnp.where(upper, jnp.sin(theta), 0.5 - jnp.sin(theta))
    pts = jnp.stack([x - 0.5, y - 0.25], -1) * 1.6
    return pts + noise * jax.random.normal(k3, pts.shape)


def sample_swiss_roll(key: jax.Array, num: int, noise: float = 0.05) -> jax.Array:
    """2-D swiss roll scaled to roughly [-2, 2]^2: [num, 2]."""
    k1, k2 = jax.random.split(key)
    t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(k1, (num,)))
    pts = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], -1) / 7.5
    return pts + noise * jax.random.normal(k2, pts.shape)


def sample_checkerboard(key: jax.Array, num: int, squares: int = 4) -> jax.Array:
    """Uniform on the dark squares of a ``squares x squares`` board on [-2, 2]^2: [num, 2]."""
    k1, k2 = jax.random.split(key)
    cells = jax.random.randint(k1, (num,), 0, squares * squares // 2)
    row = cells // (squares // 2)
    col = 2 * (cells % (squares // 2)) + (row % 2)
    offset = jax.random.uniform(k2, (num, 2))
    size = 4.0 / squares
    return jnp.stack([col, row], -1) * size + offset * size - 2.0


def sample_rings(key: jax.Array, num: int, radii=(0.5, 1.2, 1.9), noise: float = 0.04) -> jax.Array:
    """Concentric circles with points spread in proportion to circumference: [num, 2]."""
    radii = jnp.asarray(radii)
    k1, k2, k3 = jax.random.split(key, 3)
    ring = jax.random.choice(k1, radii.shape[0], (num,), p=radii / radii.sum())
    theta = 2 * jnp.pi * jax.random.uniform(k2, (num,))
    pts = radii[ring][:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)
    return pts + noise * jax.random.normal(k3, pts.shape)


TOY_SAMPLERS: dict[str, Callable[[jax.Array, int], jax.Array]] = {
    "moons": sample_moons,
    "swiss_roll": sample_swiss_roll,
    "checkerboard": sample_checkerboard,
    "rings": sample_rings,
}
