"""Guidance against closed forms: exact conditional scores of Gaussian mixtures, exact Gaussian
posteriors of linear inverse problems (ΠGDM is exact for an isotropic Gaussian prior)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscore import guidance
from jaxscore.data.toy import gaussian, ring_mixture
from jaxscore.samplers import sample
from jaxscore.sde import VESDE, VPSDE

RING = ring_mixture()
TIMES = (0.01, 0.3, 0.9)


def _component_scores(mix, sde):
    """Per-component Gaussians of ``mix`` (its exact class-conditional distributions)."""
    return [gaussian(np.asarray(mix.means[k]), np.asarray(mix.covariances[k])) for k in range(mix.num_components)]


def _labeled_score(mix, sde):
    """``s(x, t | y)``: component ``y``'s diffused score; ``y = K`` (null) the whole mixture's."""
    comps = [c.score_fn(sde) for c in _component_scores(mix, sde)] + [mix.score_fn(sde)]
    calls = []

    def score(x, t, labels):
        calls.append(x.shape[0])
        every = jnp.stack([f(x, t) for f in comps])  # [K + 1, B, d]
        return jnp.einsum("kbd,bk->bd", every, jax.nn.one_hot(labels, len(comps), dtype=x.dtype))

    return score, calls


def _points(key, n=64, d=2, scale=3.0):
    return scale * jax.random.normal(key, (n, d))


@pytest.mark.parametrize("t", TIMES)
def test_classifier_guidance_with_the_exact_classifier_is_the_class_score(t):
    """s + grad log p_t(y | x) with p_t(y=k | x) = w_k N_k,t(x) / p_t(x) is component k's score."""
    sde = VPSDE()
    k = 3
    comp = _component_scores(RING, sde)[k]

    def log_classifier(x, tt):
        return jnp.log(RING.weights[k]) + comp.log_prob_t(x, tt, sde) - RING.log_prob_t(x, tt, sde)

    guided = guidance.classifier_guidance(RING.score_fn(sde), log_classifier, scale=1.0)
    x = _points(jax.random.PRNGKey(0))
    tt = jnp.full((x.shape[0],), t)
    want = comp.score_t(x, tt, sde)
    np.testing.assert_allclose(np.asarray(jax.jit(guided)(x, tt)), np.asarray(want), rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def test_classifier_free_guidance_interpolates_and_uses_one_call():
    sde = VPSDE()
    score, calls = _labeled_score(RING, sde)
    x = _points(jax.random.PRNGKey(1))
    t = jnp.full((x.shape[0],), 0.3)
    labels = jnp.arange(x.shape[0]) % RING.num_components
    cond = guidance.with_labels(score, labels)(x, t)
    uncond = RING.score_fn(sde)(x, t)
    for scale in (0.0, 1.0, 3.0):
        calls.clear()
        got = guidance.classifier_free(score, labels, null_label=RING.num_components, scale=scale)(x, t)
        assert calls == [2 * x.shape[0]]  # one network call on the doubled batch
        np.testing.assert_allclose(np.asarray(got), np.asarray(uncond + scale * (cond - uncond)), rtol=1e-5, atol=1e-4)
    # scale 1 is the exact conditional score of the class (component 0 for label 0)
    one = guidance.classifier_free(score, 0, null_label=RING.num_components, scale=1.0)(x, t)
    np.testing.assert_allclose(np.asarray(one), np.asarray(_component_scores(RING, sde)[0].score_t(x, t, sde)),
                               rtol=1e-5, atol=1e-4)


def test_classifier_guided_sampling_draws_the_class():
    """Exact classifier guidance toward mode k: the samples are N(mu_k, Sigma_k)."""
    sde = VPSDE()
    k = 5
    comp = _component_scores(RING, sde)[k]

    def log_classifier(x, tt):
        return jnp.log(RING.weights[k]) + comp.log_prob_t(x, tt, sde) - RING.log_prob_t(x, tt, sde)

    guided = guidance.classifier_guidance(RING.score_fn(sde), log_classifier)
    n = 4096
    x = np.asarray(jax.jit(lambda key: sample(key, guided, sde, (n, 2), "dpmpp_2m", steps=30))(jax.random.PRNGKey(0)))
    mu, cov = np.asarray(RING.means[k]), np.asarray(RING.covariances[k])
    std = np.sqrt(np.diag(cov))
    # means within 5 standard errors (std / sqrt(n)); stds within 5% (se of a std is ~1.1%)
    np.testing.assert_allclose(x.mean(0), mu, atol=5 * std.max() / np.sqrt(n))
    np.testing.assert_allclose(x.std(0), std, rtol=0.05)


def _mask_posterior(mu0, v, mask, y, noise_std):
    """x0 ~ N(mu0, v I), y = mask * x0 + noise on the observed entries: per-entry posterior (mean, var)."""
    prec = 1.0 / v + mask / noise_std**2
    var = 1.0 / prec
    return var * (mu0 / v + mask * y / noise_std**2), var


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("t", TIMES)
def test_pigdm_inpainting_is_the_exact_posterior_score_for_a_gaussian_prior(sde, t):
    d, v, noise_std = 4, 0.7, 0.2
    mu0 = np.array([0.5, -1.0, 2.0, 0.0])
    mask = np.array([1.0, 0.0, 1.0, 1.0])
    prior = gaussian(mu0, v * np.eye(d))
    forward, aat = guidance.mask_operator(mask)
    key_y, key_x = jax.random.split(jax.random.PRNGKey(2))
    B = 32
    y = mask * (mu0 + np.sqrt(v) * np.asarray(jax.random.normal(key_y, (B, d))))
    guided = guidance.pigdm(prior.score_fn(sde), sde, forward, y, noise_std=noise_std, aat=aat, data_var=v)
    tt = jnp.full((B,), t)
    alpha, sigma = (np.asarray(c)[:, None] for c in sde.marginal_coefs(tt))
    x = alpha * mu0 + np.sqrt(alpha**2 * v + sigma**2) * np.asarray(jax.random.normal(key_x, (B, d)))
    mean, var = _mask_posterior(mu0, v, mask, y, noise_std)
    want = -(x - alpha * mean) / (alpha**2 * var + sigma**2)
    got = np.asarray(jax.jit(guided)(jnp.asarray(x, jnp.float32), tt))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("t", TIMES)
def test_pigdm_colorization_is_the_exact_posterior_score_for_a_gaussian_prior(t):
    """Images [B, 2, 2, 3], y = channel mean + noise: per pixel a 3-D Gaussian posterior."""
    sde, v, noise_std, B = VPSDE(), 0.25, 0.05, 8
    shape = (2, 2, 3)
    mu0 = np.asarray(jax.random.uniform(jax.random.PRNGKey(3), shape, minval=-0.5, maxval=0.5))
    prior = gaussian(mu0.reshape(-1), v * np.eye(mu0.size))
    prior_score = lambda x, tt: prior.score_fn(sde)(x.reshape(x.shape[0], -1), tt).reshape(x.shape)  # noqa: E731
    forward, aat = guidance.grayscale_operator(3)
    x0 = mu0 + np.sqrt(v) * np.asarray(jax.random.normal(jax.random.PRNGKey(4), (B, *shape)))
    y = x0.mean(-1, keepdims=True) + noise_std * np.asarray(jax.random.normal(jax.random.PRNGKey(5), (B, 2, 2, 1)))
    guided = guidance.pigdm(prior_score, sde, forward, y, noise_std=noise_std, aat=aat, data_var=v)
    tt = jnp.full((B,), t)
    alpha, sigma = (float(np.asarray(c)[0]) for c in sde.marginal_coefs(tt))
    x = alpha * x0 + sigma * np.asarray(jax.random.normal(jax.random.PRNGKey(6), (B, *shape)))
    a = np.full(3, 1.0 / 3)
    gain = v * a / (v * a @ a + noise_std**2)
    mean = mu0 + gain * (y - mu0 @ a[:, None])  # [B, 2, 2, 3]
    cov = v * np.eye(3) - np.outer(v * a, v * a) / (v * a @ a + noise_std**2)
    want = -np.linalg.solve(alpha**2 * cov + sigma**2 * np.eye(3), (x - alpha * mean)[..., None])[..., 0]
    got = np.asarray(jax.jit(guided)(jnp.asarray(x, jnp.float32), tt))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-4 * np.abs(want).max())


def test_dps_matches_the_posterior_only_as_t_goes_to_zero():
    """DPS drops the r_t^2 A A^T covariance: exact as t -> 0, over-weighting the data at large t."""
    sde, d, v, noise_std = VPSDE(), 2, 1.0, 0.3
    mu0, mask = np.zeros(d), np.array([1.0, 0.0])
    prior = gaussian(mu0, v * np.eye(d))
    forward, aat = guidance.mask_operator(mask)
    B = 16
    y = np.tile(np.array([[1.5, 0.0]]), (B, 1))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (B, d)))
    mean, var = _mask_posterior(mu0, v, mask, y, noise_std)

    def rel_error(t):
        tt = jnp.full((B,), t)
        alpha, sigma = (np.asarray(c)[:, None] for c in sde.marginal_coefs(tt))
        xt = alpha * x
        want = -(xt - alpha * mean) / (alpha**2 * var + sigma**2)
        got = np.asarray(guidance.dps(prior.score_fn(sde), sde, forward, y, noise_std=noise_std)(jnp.asarray(xt), tt))
        return np.linalg.norm(got - want) / np.linalg.norm(want)

    assert rel_error(sde.t_min) < 1e-2
    assert rel_error(0.5) > 0.1


def test_pigdm_posterior_sampling_matches_the_closed_form():
    """Inpainting one coordinate of a 2-D Gaussian: samples have the exact posterior moments."""
    sde, v, noise_std, n = VPSDE(), 1.0, 0.1, 4096
    mu0, mask = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    cov0 = np.array([[1.0, 0.0], [0.0, 1.0]]) * v
    prior = gaussian(mu0, cov0)
    forward, aat = guidance.mask_operator(mask)
    y = np.tile(np.array([[1.2, 0.0]], np.float32), (n, 1))
    guided = guidance.pigdm(prior.score_fn(sde), sde, forward, y, noise_std=noise_std, aat=aat, data_var=v)
    x = np.asarray(jax.jit(lambda key: sample(key, guided, sde, (n, 2), "dpmpp_2m", steps=30))(jax.random.PRNGKey(1)))
    mean, var = _mask_posterior(mu0, v, mask, y[0], noise_std)
    np.testing.assert_allclose(x.mean(0), mean, atol=5 * np.sqrt(var.max() / n))
    np.testing.assert_allclose(x.std(0), np.sqrt(var), rtol=0.06)


# slow: 12 s on 2 cores
@pytest.mark.slow
def test_sdedit_keeps_the_guide_at_small_t_and_preserves_the_distribution():
    """Guides drawn from the ring, exact score: SDEdit's output is again ring-distributed (the
    reverse SDE from p_t0 gives p_0), and at small t0 each output stays in its guide's mode."""
    sde, n = VPSDE(), 2048
    guides = RING.sample(jax.random.PRNGKey(3), n)
    labels_in = np.argmin(np.linalg.norm(np.asarray(guides)[:, None] - np.asarray(RING.means)[None], axis=-1), -1)
    run = jax.jit(lambda key, g, t0: guidance.sdedit(key, RING.score_fn(sde), sde, g, t0, steps=100), static_argnums=2)
    for t0, same_mode in ((0.1, 0.97), (0.6, None)):
        out = np.asarray(run(jax.random.PRNGKey(4), guides, t0))
        labels_out = np.argmin(np.linalg.norm(out[:, None] - np.asarray(RING.means)[None], axis=-1), -1)
        w_hat = np.bincount(labels_out, minlength=RING.num_components) / n
        assert 0.5 * np.abs(w_hat - np.asarray(RING.weights)).sum() < 0.06  # mode TV (MC floor ~0.02)
        if same_mode is not None:
            assert np.mean(labels_out == labels_in) > same_mode


def test_guidance_input_errors():
    sde = VPSDE()
    prior = gaussian(np.zeros(2), np.eye(2))
    forward, aat = guidance.mask_operator(np.array([1.0, 0.0]))
    x, t = jnp.zeros((4, 2)), jnp.full((4,), 0.5)
    with pytest.raises(ValueError, match=r"y: expected shape \(4, 2\)"):
        guidance.pigdm(prior.score_fn(sde), sde, forward, np.zeros((4, 3)), noise_std=0.1, aat=aat)(x, t)
    with pytest.raises(ValueError, match="noise_std"):
        guidance.dps(prior.score_fn(sde), sde, forward, np.zeros((4, 2)), noise_std=0.0)
    score, _ = _labeled_score(RING, sde)
    with pytest.raises(TypeError, match="integer class indices"):
        guidance.with_labels(score, 1.5)(x, t)
    with pytest.raises(ValueError, match=r"labels: expected a scalar or shape \[B\]"):
        guidance.classifier_free(score, jnp.zeros((3,), jnp.int32), null_label=8, scale=2.0)(x, t)
    with pytest.raises(ValueError, match="t_start"):
        guidance.sdedit(jax.random.PRNGKey(0), prior.score_fn(sde), sde, x, 1.5)
    with pytest.raises(TypeError, match=r"^key: expected a PRNG key.*pass jax\.random\.key\(0\)"):
        guidance.sdedit(0, prior.score_fn(sde), sde, x, 0.5)
    with pytest.raises(ValueError, match="3 channels"):
        guidance.grayscale_operator(3)[0](jnp.zeros((1, 2, 2, 4)))


def test_drop_labels_rate_and_null():
    labels = jnp.arange(200_000, dtype=jnp.int32) % 10
    out = np.asarray(guidance.drop_labels(jax.random.PRNGKey(0), labels, rate=0.1, null_label=10))
    dropped = out == 10
    assert abs(dropped.mean() - 0.1) < 4 * np.sqrt(0.1 * 0.9 / labels.size)  # binomial: 4 standard errors
    np.testing.assert_array_equal(out[~dropped], np.asarray(labels)[~dropped])
    np.testing.assert_array_equal(np.asarray(guidance.drop_labels(jax.random.PRNGKey(0), labels, rate=0.0, null_label=10)),
                                  np.asarray(labels))
    with pytest.raises(ValueError, match="rate"):
        guidance.drop_labels(jax.random.PRNGKey(0), labels, rate=1.0, null_label=10)


# --- bad values and shapes at trace time (issue 11) ----------------------------------------------

def test_noise_std_scale_and_data_var_checked():
    """pigdm: noise_std >= 0 (0 allowed: the r_t^2 term keeps the covariance positive for t > 0),
    data_var > 0; dps: noise_std > 0; every guide: a finite scale. All at construction."""
    sde = VPSDE()
    prior = gaussian(np.zeros(2), np.eye(2))
    forward, aat = guidance.mask_operator(np.array([1.0, 0.0]))
    y = np.zeros((4, 2), np.float32)
    sf = prior.score_fn(sde)
    with pytest.raises(ValueError, match=r"^noise_std: expected a finite number >= 0 .*got -0.1"):
        guidance.pigdm(sf, sde, forward, y, noise_std=-0.1, aat=aat)
    with pytest.raises(ValueError, match=r"^noise_std: expected a finite number >= 0 .*got nan"):
        guidance.pigdm(sf, sde, forward, y, noise_std=float("nan"), aat=aat)
    with pytest.raises(ValueError, match=r"^data_var: expected a finite number > 0 .*got 0.0"):
        guidance.pigdm(sf, sde, forward, y, noise_std=0.1, aat=aat, data_var=0.0)
    with pytest.raises(ValueError, match=r"^noise_std: expected a finite number > 0 \(DPS divides by sigma_y\^2\), "
                                         r"got -0.1"):
        guidance.dps(sf, sde, forward, y, noise_std=-0.1)
    with pytest.raises(ValueError, match=r"^noise_std: expected a finite number > 0 .*got nan"):
        guidance.dps(sf, sde, forward, y, noise_std=float("nan"))
    score, _ = _labeled_score(RING, sde)
    for make in (lambda s: guidance.pigdm(sf, sde, forward, y, noise_std=0.1, aat=aat, scale=s),
                 lambda s: guidance.dps(sf, sde, forward, y, noise_std=0.1, scale=s),
                 lambda s: guidance.classifier_free(score, 0, null_label=RING.num_components, scale=s),
                 lambda s: guidance.classifier_guidance(sf, lambda x, t: jnp.zeros(x.shape[:1]), scale=s)):
        with pytest.raises(ValueError, match=r"^scale: expected a finite number, got nan"):
            make(float("nan"))
        with pytest.raises(ValueError, match=r"^scale: expected a finite number, got inf"):
            make(float("inf"))
    # noise_std = 0 is ΠGDM's noiseless limit, also with a mask (today: NaN, 0/0 on the unobserved
    # entries, where A A^T = 0): the limit of noise_std -> 0
    x, t = jnp.ones((4, 2)), jnp.full((4,), 0.5)
    noiseless = np.asarray(guidance.pigdm(sf, sde, forward, y, noise_std=0.0, aat=aat)(x, t))
    near = np.asarray(guidance.pigdm(sf, sde, forward, y, noise_std=1e-5, aat=aat)(x, t))
    assert np.all(np.isfinite(noiseless))
    np.testing.assert_allclose(noiseless, near, rtol=1e-4, atol=1e-5)


def test_mask_of_other_data_refused_at_trace_time():
    """A mask made for other data is a ValueError naming both shapes (today: jnp's "Incompatible
    shapes for broadcasting: shapes=[(2, 4, 4, 3), (8, 8, 1)]", naming no argument)."""
    sde = VPSDE()
    prior = gaussian(np.zeros(48), np.eye(48))
    sf48 = lambda x, t: prior.score_fn(sde)(x.reshape(x.shape[0], -1), t).reshape(x.shape)  # noqa: E731
    x, t = jnp.zeros((2, 4, 4, 3)), jnp.full((2,), 0.5)
    forward, aat = guidance.mask_operator(np.ones((8, 8, 1)))  # a mask for 8x8 images
    pattern = r"^mask: expected a shape that broadcasts to \(2, 4, 4, 3\) .*got \(8, 8, 1\)"
    with pytest.raises(ValueError, match=pattern):
        jax.eval_shape(forward, x)
    with pytest.raises(ValueError, match=pattern):
        jax.eval_shape(guidance.pigdm(sf48, sde, forward, np.zeros((2, 4, 4, 3)), noise_std=0.1, aat=aat), x, t)
    with pytest.raises(ValueError, match=pattern):
        jax.eval_shape(guidance.dps(sf48, sde, forward, np.zeros((2, 4, 4, 3)), noise_std=0.1), x, t)
    # the shapes that fit: one example's [H, W, 1], a whole per-example batch [B, H, W, C]
    for good in (np.ones((4, 4, 1)), np.ones((2, 4, 4, 3))):
        assert jax.eval_shape(guidance.mask_operator(good)[0], x).shape == x.shape
    # pigdm's aat (the diagonal of A A^T) must fit A x as well
    fwd_ok, _ = guidance.mask_operator(np.ones((4, 4, 1)))
    with pytest.raises(ValueError, match=r"^aat: expected a shape that broadcasts to \(2, 4, 4, 3\) .*got \(8, 8, 1\)"):
        jax.eval_shape(guidance.pigdm(sf48, sde, fwd_ok, np.zeros((2, 4, 4, 3)), noise_std=0.1, aat=aat), x, t)
