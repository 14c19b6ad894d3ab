"""The benchmark's error measure (jaxscore.metrics.mixture_sample_error) and the samplers' defaults."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore.data.toy import gaussian_mixture, ring_mixture
from jaxscore.metrics import exact_draw_floor, mixture_sample_error


def test_error_measure_removes_monte_carlo_mean_sees_shifts_and_nonfinite():
    mix = ring_mixture()
    x, labels = mix.sample_with_labels(jax.random.PRNGKey(0), 20000)
    exact = mixture_sample_error(x, mix)
    assert exact["mean_corrected"] < exact["mean"] and exact["mean_corrected"] < 0.01
    assert exact["error"] == max(exact["std"], exact["mean_corrected"]) < 0.02
    # a shift of 0.2 true stds along every axis of every mode: corrected mean error ~0.2
    stds = np.sqrt(np.asarray(mix.eigvals))
    shifted = np.asarray(x) + 0.2 * stds[np.asarray(labels)].mean(-1, keepdims=True)
    assert 0.15 < mixture_sample_error(shifted, mix)["mean_corrected"] < 0.25
    # stds inflated by 10%: std error ~0.1
    one = gaussian_mixture(jnp.ones(1), jnp.zeros((1, 3)), stds=jnp.ones((1, 3)))
    floor = exact_draw_floor(jax.random.PRNGKey(1), one, 20000)  # the same measure on exact draws
    assert floor["error"] < 0.02
    y = 1.1 * np.asarray(one.sample(jax.random.PRNGKey(1), 20000))
    assert abs(mixture_sample_error(y, one)["std"] - 0.1) < 0.02
    x = np.array(x)
    x[3] = np.nan
    err = mixture_sample_error(x, mix)
    assert err["error"] == np.inf and err["nonfinite"] == pytest.approx(1 / 20000)
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        mixture_sample_error(np.zeros((10, 3)), mix)
