r"""Sample-quality metrics against a known Gaussian mixture, and score errors.

Samples are assigned to the component with the largest posterior responsibility
:math:`r_k(x) \propto w_k N(x; \mu_k, \Sigma_k)`. With :math:`\hat w_k` the fraction of samples
assigned to k, and per-mode sample means/stds measured in the component's eigenbasis:

* ``mode_tv``   :math:`\tfrac12\sum_k |\hat w_k - w_k|`
* ``std_error`` :math:`\sum_k w_k \,\mathrm{mean}_j |\hat s_{kj}/s_{kj} - 1|` (s: true std along eigen-axis j)
* ``mean_error`` :math:`\sum_k w_k \,\| (\hat\mu_k - \mu_k)/s_k \|_2 / \sqrt{d}` (distance in true stds, RMS over axes)

For well-separated modes the assignment is almost exact, so these compare a sampler's
output with the truth without density estimation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def assign_modes(samples, mixture) -> np.ndarray:
    """Index [N] of the component with the largest responsibility for each sample [N, d]."""
    samples = jnp.asarray(samples, jnp.float32)
    log_comp, _ = mixture._component_terms(samples, jnp.ones(samples.shape[:1]), jnp.zeros(samples.shape[:1]))
    return np.asarray(jnp.argmax(log_comp, axis=-1))


def mixture_metrics(samples, mixture) -> dict[str, float]:
    """``mode_tv``, ``std_error``, ``mean_error`` (see module docstring) and ``nonfinite`` fraction."""
    samples = np.asarray(samples, np.float64)
    finite = np.all(np.isfinite(samples), axis=-1)
    x = samples[finite]
    labels = assign_modes(x, mixture)
    weights = np.asarray(mixture.weights, np.float64)
    means = np.asarray(mixture.means, np.float64)
    eigvecs = np.asarray(mixture.eigvecs, np.float64)
    stds = np.sqrt(np.asarray(mixture.eigvals, np.float64))
    k_count = len(weights)
    freq = np.bincount(labels, minlength=k_count) / max(len(x), 1)
    std_err = mean_err = 0.0
    for k in range(k_count):
        pts = x[labels == k]
        if len(pts) < 2:  # an empty mode counts as fully wrong
            std_err += weights[k]
            mean_err += weights[k] * 10.0
            continue
        y = (pts - means[k]) @ eigvecs[k]  # eigen-coordinates
        std_err += weights[k] * np.mean(np.abs(y.std(0, ddof=1) / stds[k] - 1.0))
        mean_err += weights[k] * np.linalg.norm(y.mean(0) / stds[k]) / np.sqrt(y.shape[1])
    return {
        "mode_tv": float(0.5 * np.abs(freq - weights).sum()),
        "std_error": float(std_err),
        "mean_error": float(mean_err),
        "nonfinite": float(1.0 - finite.mean()),
    }


def relative_score_error(score_fn, exact_score_fn, x, t) -> float:
    r""":math:`E\|s_\theta(x,t) - s(x,t)\|^2 / E\|s(x,t)\|^2` over the given points x [B, *D], t [B]."""
    diff = jax.device_get(score_fn(x, t) - exact_score_fn(x, t))
    ref = jax.device_get(exact_score_fn(x, t))
    return float(np.sum(np.square(diff)) / np.sum(np.square(ref)))
