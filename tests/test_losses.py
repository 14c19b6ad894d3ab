"""Denoising / continuous-time / eps-x0-v / EDM losses against closed forms, plus the API contract.

Closed forms: for Gaussian data N(mu, Sigma) with eigenvalues l_i, the diffused marginal is
N(alpha mu, alpha^2 Sigma + sigma^2 I), and at the exact score
E||sigma_t s + eps||^2 = sum_i alpha^2 l_i / (alpha^2 l_i + sigma^2); the losses' expectations are
1-D integrals over t of such terms, computed here in float64 by quadrature with independent
(numpy) formulas for the VP and VE schedules.

Monte-Carlo comparisons assert agreement within 5 standard errors estimated from the draws.
Data come from numpy and the Monte-Carlo keys are "rbg" keys (the losses take any key; on
XLA:CPU each jitted function that hashes with the default partitionable threefry compiles
for seconds). ``test_every_loss_jits_vmaps_and_grads`` uses the default threefry keys.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from jaxscore import losses as L
from jaxscore.data import toy
from jaxscore.parameterization import edm_preconditioning
from jaxscore.sde import VESDE, VPSDE

Z_BOUND = 5.0


def _key(seed):
    return jax.random.key(seed, impl="rbg")


def _keys(seed, num):
    return jax.vmap(lambda s: jax.random.key(s, impl="rbg"))(seed * 100_003 + jnp.arange(num))


def _within(estimates, reference, *, what=""):
    estimates = np.asarray(estimates, np.float64)
    mean, se = estimates.mean(), np.sqrt(estimates.var(ddof=1) / estimates.size)
    assert abs(mean - reference) < Z_BOUND * se, f"{what}: MC mean {mean:.5f} vs {reference:.5f} (se {se:.2g})"
    return se


def _clearly_greater(a, b, what=""):
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    assert diff.mean() > Z_BOUND * diff.std(ddof=1) / np.sqrt(diff.size), f"{what}: {diff.mean():.3g}"


# ----------------------------------------------------------------------------------------
# closed forms (numpy, float64)
# ----------------------------------------------------------------------------------------
def _vp(t, bmin=0.1, bmax=20.0):
    b = bmin * t + 0.5 * (bmax - bmin) * t**2
    return np.exp(-0.5 * b), 1.0 - np.exp(-b), bmin + t * (bmax - bmin)  # alpha, sigma^2, g^2


def _ve(t, smin=0.01, smax=50.0):
    s2 = (smin * (smax / smin) ** t) ** 2
    return np.ones_like(t), s2, 2.0 * s2 * np.log(smax / smin)


def _time_average(f, lo, hi=1.0, n=40001):
    """(1/(hi-lo)) * integral_lo^hi f(t) dt on a log-spaced grid (integrands peak near lo)."""
    u = np.linspace(0.0, 1.0, n)
    t = lo * (hi / lo) ** u
    return np.trapezoid(f(t) * t * np.log(hi / lo), u) / (hi - lo)


COV2 = np.array([[1.2, 0.4], [0.4, 0.5]])
MEAN2 = np.array([1.0, -0.5])
EIG2 = np.linalg.eigvalsh(COV2)


def _gaussian_sample(seed, n, mean=MEAN2, cov=COV2):
    """n points whose empirical mean and (1/n) covariance are exactly ``mean`` and ``cov``.

    With the exact (affine) Gaussian networks every loss here is, per t, quadratic in x0, so
    its expectation over (t, eps) on this fixed sample equals the population expectation."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / n)).T
    return jnp.asarray(mean + z @ np.linalg.cholesky(cov).T, jnp.float32)


def _ring_sample(seed, n):
    gm = toy.ring_mixture()
    rng = np.random.default_rng(seed)
    w = np.asarray(gm.weights, np.float64)
    comp = rng.choice(gm.num_components, size=n, p=w / w.sum())
    std = np.sqrt(np.asarray(gm.eigvals))[comp]
    return jnp.asarray(np.asarray(gm.means)[comp] + std * rng.standard_normal((n, 2)), jnp.float32)


def _exact_apply(gm, sde, kind):
    """The exact network for each parameterization, from the mixture's exact score."""

    def apply(params, x, t):
        s = gm.score_t(x, t, sde)
        alpha, sigma = (c[:, None] for c in sde.marginal_coefs(t))
        eps, x0 = -sigma * s, (x + sigma**2 * s) / alpha
        return {"score": s, "eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[kind]

    return apply


def _exact_edm_apply(gm, sde, sigma_data):
    """F(c_in x~, c_noise) whose preconditioned denoiser is Tweedie's E[x0 | x_t]."""

    def apply(params, x_in, c_noise):
        sigma_r = jnp.exp(4.0 * c_noise)
        c_skip, c_out, c_in, _ = edm_preconditioning(sigma_r, sigma_data)
        x_tilde = x_in / c_in[:, None]
        t = sde.t_from_sigma_ratio(sigma_r)
        alpha, _ = sde.marginal_coefs(t)
        x0 = sde.denoise(alpha[:, None] * x_tilde, gm.score_t(alpha[:, None] * x_tilde, t, sde), t)
        return (x0 - c_skip[:, None] * x_tilde) / c_out[:, None]

    return apply


# ----------------------------------------------------------------------------------------
# Vincent: single-sigma DSM and NCSN's ladder
# ----------------------------------------------------------------------------------------
def test_dsm_linear_fit_gives_the_smoothed_gaussian_score():
    # For x ~ N(mu, s^2) the DSM minimiser is the score of N(mu, s^2 + sigma^2):
    # s(x) = a x + b with a = -1/(s^2+sigma^2), b = mu/(s^2+sigma^2). DSM is quadratic in (a, b),
    # so one Newton step gives the empirical minimiser exactly.
    mu, s, sigma = 1.5, 0.7, 0.5
    x = jnp.asarray(mu + s * np.random.default_rng(0).standard_normal((200_000, 1)), jnp.float32)
    flat0, unravel = ravel_pytree({"a": jnp.zeros(()), "b": jnp.zeros(())})
    apply = lambda p, y: p["a"] * y + p["b"]  # noqa: E731
    loss = lambda f: L.dsm_loss(apply, unravel(f), _key(1), x, sigma)  # noqa: E731
    fit = jax.jit(lambda f: f - jnp.linalg.solve(jax.hessian(loss)(f), jax.grad(loss)(f)))(flat0)
    p = unravel(fit)
    var = s**2 + sigma**2
    np.testing.assert_allclose([float(p["a"]), float(p["b"])], [-1 / var, mu / var], rtol=1.5e-2)


def test_dsm_and_multiscale_at_the_exact_smoothed_score():
    # E 1/2||sigma s_sigma + eps||^2 = 1/2 sum_i l_i/(l_i + sigma^2) at the exact score of p_sigma,
    # and the NCSN loss averages that over the ladder; perturbing the score raises the loss.
    x = _gaussian_sample(2, 512)
    sigmas = jnp.array([0.1, 0.5, 1.0, 3.0])
    gauss = toy.gaussian(MEAN2, COV2)
    exact = lambda p, y, sig: p * gauss.score_at(y, jnp.ones_like(sig), sig)  # noqa: E731
    by_index = lambda p, y, i: exact(p, y, sigmas[i])  # noqa: E731
    fixed = lambda p, y: exact(p, y, jnp.full(y.shape[:1], 0.5))  # noqa: E731

    @jax.jit
    def run(keys):
        one = lambda k: jnp.stack([  # noqa: E731
            L.dsm_loss(fixed, 1.0, k, x, 0.5),
            L.dsm_loss(fixed, 1.1, k, x, 0.5),
            L.dsm_loss(fixed, 0.9, k, x, 0.5),
            L.multiscale_dsm_loss(exact, 1.0, k, x, sigmas),
            L.multiscale_dsm_loss(by_index, 1.0, k, x, sigmas, noise_input="index"),
            L.multiscale_dsm_loss(exact, 1.0, k, x, sigmas, anneal_power=1.0),
        ])
        return jax.vmap(one)(keys)

    out = np.asarray(run(_keys(3, 400)))
    half = lambda sig: 0.5 * np.sum(EIG2 / (EIG2 + sig**2))  # noqa: E731
    _within(out[:, 0], half(0.5), what="dsm")
    _clearly_greater(out[:, 1], out[:, 0], "scaled score x1.1")
    _clearly_greater(out[:, 2], out[:, 0], "scaled score x0.9")
    sig = np.asarray(sigmas, np.float64)
    _within(out[:, 3], np.mean([half(v) for v in sig]), what="ncsn")
    np.testing.assert_allclose(out[:, 4], out[:, 3], rtol=1e-6)  # index input: same draws, same loss
    _within(out[:, 5], np.mean([half(v) / v for v in sig]), what="anneal_power=1")


# ----------------------------------------------------------------------------------------
# continuous-time DSM, eps / x0 / v
# ----------------------------------------------------------------------------------------
def _reference(kind, coefs, t_min):
    d = len(EIG2)

    def f(t):
        alpha, s2, g2 = coefs(t)
        a2 = alpha[:, None] ** 2
        post = np.sum(EIG2 * s2[:, None] / (s2[:, None] + a2 * EIG2), -1)  # tr Cov(x0 | x_t)
        m = np.sum(a2 * EIG2 / (a2 * EIG2 + s2[:, None]), -1)  # E||sigma s + eps||^2
        return {
            "sigma2": m,
            "likelihood": g2 / s2 * m,
            "x0": post,
            "v": (alpha**2 + s2) ** 2 / s2 * post,
        }[kind] / d

    return _time_average(f, t_min)


@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_continuous_losses_match_closed_forms(sde_name):
    sde, coefs = (VPSDE(), _vp) if sde_name == "vp" else (VESDE(), _ve)
    gauss = toy.gaussian(MEAN2, COV2)
    x = _gaussian_sample(4, 256)
    score, eps, x0, v = (_exact_apply(gauss, sde, k) for k in ("score", "eps", "x0", "v"))
    cases = {  # name -> (loss(key), reference)
        "sigma2/uniform": (lambda k: L.continuous_dsm_loss(score, None, k, x, sde), "sigma2"),
        "sigma2/importance": (
            lambda k: L.continuous_dsm_loss(score, None, k, x, sde, t_sampling="importance"), "sigma2"),
        "likelihood/uniform": (
            lambda k: L.continuous_dsm_loss(score, None, k, x, sde, weighting="likelihood"), "likelihood"),
        "likelihood/importance": (
            lambda k: L.continuous_dsm_loss(
                score, None, k, x, sde, weighting="likelihood", t_sampling="importance"), "likelihood"),
        "eps_loss": (lambda k: L.eps_loss(eps, None, k, x, sde), "sigma2"),
        "x0_loss": (lambda k: L.x0_loss(x0, None, k, x, sde), "x0"),
        "v_loss": (lambda k: L.v_loss(v, None, k, x, sde), "v"),
    }
    if sde_name == "ve":  # v and x0 are well defined for VE too, but keep the VE compile small
        cases = {k: cases[k] for k in ("sigma2/uniform", "likelihood/uniform", "likelihood/importance")}
    fns = [fn for fn, _ in cases.values()]
    out = np.asarray(jax.jit(jax.vmap(lambda k: jnp.stack([f(k) for f in fns])))(_keys(5, 600)))
    for i, (name, (_, kind)) in enumerate(cases.items()):
        _within(out[:, i], _reference(kind, coefs, sde.t_min), what=f"{sde_name} {name}")


def test_importance_and_uniform_sampling_agree_on_a_mixture():
    # Same expectation (Song et al. 2021 importance weights), much lower variance.
    sde, gm = VPSDE(), toy.ring_mixture()
    x = _ring_sample(6, 512)
    apply = _exact_apply(gm, sde, "score")

    @jax.jit
    def run(keys):
        f = lambda k, ts: L.continuous_dsm_loss(apply, None, k, x, sde, weighting="likelihood", t_sampling=ts)  # noqa: E731
        return jax.vmap(lambda k: (f(k, "uniform"), f(k, "importance")))(keys)

    uni, imp = (np.asarray(a, np.float64) for a in run(_keys(7, 1000)))
    se = np.sqrt(uni.var() / uni.size + imp.var() / imp.size)
    assert abs(uni.mean() - imp.mean()) < Z_BOUND * se
    assert imp.var() < 0.25 * uni.var()


def test_importance_sample_t_follows_g2_over_sigma2():
    # CDF of q(t) ∝ g^2/sigma^2 = -d/dt log SNR is (lambda(t_min) - lambda(t)) / (lambda(t_min) - lambda(T)).
    sde = VPSDE()
    t, q = jax.jit(lambda k: L.importance_sample_t(k, sde, 20000))(_key(8))
    t, q = np.asarray(t, np.float64), np.asarray(q, np.float64)
    assert t.min() >= sde.t_min and t.max() <= sde.T
    lam = lambda s: np.log(_vp(s)[0] ** 2 / _vp(s)[1])  # noqa: E731
    z = lam(sde.t_min) - lam(1.0)
    alpha, s2, g2 = _vp(t)
    np.testing.assert_allclose(q, g2 / s2 / z, rtol=2e-3)
    grid = np.array([0.002, 0.01, 0.05, 0.2, 0.6])
    cdf = (lam(sde.t_min) - lam(grid)) / z
    emp = np.mean(t[:, None] <= grid, axis=0)
    assert np.all(np.abs(emp - cdf) < 5 * np.sqrt(cdf * (1 - cdf) / t.size) + 1e-3)


def test_exact_score_minimises_continuous_dsm():
    # L(s* + delta h) - L(s*) = delta^2 E||sigma h||^2/d + (zero-mean cross term): for random
    # directions h and both signs, the exact diffused mixture score is lower, by the predicted gap.
    sde, gm = VPSDE(), toy.ring_mixture()
    x = _ring_sample(9, 1024)
    rng = np.random.default_rng(10)
    directions = [(jnp.asarray(rng.standard_normal((2, 2)), jnp.float32),
                   jnp.asarray(rng.standard_normal(2), jnp.float32)) for _ in range(3)]
    delta = 0.3

    def perturbed(params, y, t):
        w, c, sign = params
        return gm.score_t(y, t, sde) + sign * delta * (y @ w.T + c)

    @jax.jit
    def run(keys):
        def one(k):
            base = L.continuous_dsm_loss(perturbed, (directions[0][0], directions[0][1], 0.0), k, x, sde)
            gaps = [L.continuous_dsm_loss(perturbed, (w, c, sgn), k, x, sde) - base
                    for w, c in directions for sgn in (1.0, -1.0)]
            # predicted gap from an independent draw: E_t sigma_t^2 delta^2 ||h(x_t)||^2 / d
            k_t, k_x = jax.random.split(jax.random.fold_in(k, 1))
            t = jax.random.uniform(k_t, x.shape[:1], minval=sde.t_min, maxval=sde.T)
            x_t, _ = sde.marginal_sample(k_x, x, t)
            sig2 = sde.marginal_coefs(t)[1][:, None] ** 2
            pred = [jnp.mean(sig2 * (delta * (x_t @ w.T + c)) ** 2) for w, c in directions]
            return jnp.stack(gaps), jnp.stack(pred)

        return jax.vmap(one)(keys)

    gaps, pred = (np.asarray(a, np.float64) for a in run(_keys(11, 64)))
    assert np.all(gaps.mean(0) > 0)
    for i in range(3):
        for j in (2 * i, 2 * i + 1):
            se = np.sqrt(gaps[:, j].var() / len(gaps) + pred[:, i].var() / len(pred))
            assert abs(gaps[:, j].mean() - pred[:, i].mean()) < Z_BOUND * se + 0.02 * pred[:, i].mean()


def test_parameterizations_agree_at_the_exact_network():
    # score / eps / x0 / v / edm networks built from the same exact score give the same loss
    # (same key, same draws); eps_loss equals the eps-parameterised sigma2-weighted DSM.
    sde, gm = VPSDE(), toy.ring_mixture()
    x = _ring_sample(12, 256)
    key = _key(13)

    @jax.jit
    def run():
        vals = [L.continuous_dsm_loss(_exact_apply(gm, sde, kind), None, key, x, sde, parameterization=kind)
                for kind in ("score", "eps", "x0", "v")]
        vals.append(L.continuous_dsm_loss(_exact_edm_apply(gm, sde, 0.5), None, key, x, sde, parameterization="edm"))
        eps = _exact_apply(gm, sde, "eps")
        return jnp.stack(vals), L.eps_loss(eps, None, key, x, sde), L.continuous_dsm_loss(
            eps, None, key, x, sde, parameterization="eps", reduce_mean=False)

    vals, eps_simple, summed = run()
    np.testing.assert_allclose(vals, vals[0], rtol=2e-3)
    np.testing.assert_allclose(eps_simple, vals[1], rtol=1e-6)
    np.testing.assert_allclose(summed, 2 * vals[1], rtol=1e-5)  # reduce_mean=False sums over d = 2


def test_edm_loss_unit_target_variance_and_optimum():
    # Data N(0, sigma_d^2 I): the optimal denoiser is c_skip x, i.e. F = 0, and then
    # lambda(sigma) E||c_skip (y+n) - y||^2 / d = 1 for every sigma (EDM's unit-variance target).
    sigma_data, d = 0.5, 4
    x = jnp.asarray(sigma_data * np.random.default_rng(14).standard_normal((512, d)), jnp.float32)

    def apply(p, x_in, c_noise, *, labels):
        assert labels.shape == x_in.shape[:1]
        return p * x_in

    @jax.jit
    def run(keys):
        f = lambda k, p: L.edm_loss(apply, p, k, x, sigma_data=sigma_data, labels=jnp.zeros(512))  # noqa: E731
        return jax.vmap(lambda k: jnp.stack([f(k, 0.0), f(k, 0.2), f(k, -0.2)]))(keys)

    out = np.asarray(run(_keys(15, 300)))
    _within(out[:, 0], 1.0, what="edm F=0")
    _clearly_greater(out[:, 1], out[:, 0], "F = 0.2 x_in")
    _clearly_greater(out[:, 2], out[:, 0], "F = -0.2 x_in")


# ----------------------------------------------------------------------------------------
# API contract: jit / vmap / grad, trace-time errors, any apply function
# ----------------------------------------------------------------------------------------
def _mlp_init(seed, d=2, hidden=16):
    rng = np.random.default_rng(seed)
    f32 = lambda *s: jnp.asarray(rng.standard_normal(s) / np.sqrt(s[0]), jnp.float32)  # noqa: E731
    return {"w1": f32(d + 1, hidden), "w2": f32(hidden, d)}


def _mlp(p, x, t=None, **kw):
    t = jnp.zeros(x.shape[:1]) if t is None else jnp.asarray(t, x.dtype)
    return jnp.tanh(jnp.concatenate([x, t[:, None]], -1) @ p["w1"]) @ p["w2"] - x


def _mlp_no_t(p, x):
    return _mlp(p, x)



VP = VPSDE()
SIGMAS = jnp.array([0.05, 0.3, 1.0])
ALL_LOSSES = {  # name -> loss(m, params, key, x) for a model m(params, x, t=None, **kw)
    "esm": lambda m, p, k, x: L.explicit_score_matching(_no_t(m), p, x, lambda y: -y),
    "ism_exact": lambda m, p, k, x: L.implicit_score_matching(_no_t(m), p, x),
    "ism_hutchinson": lambda m, p, k, x: L.implicit_score_matching(_no_t(m), p, x, divergence="hutchinson", key=k),
    "ssm": lambda m, p, k, x: L.sliced_score_matching(_no_t(m), p, k, x),
    "ssm_vr": lambda m, p, k, x: L.sliced_score_matching(_no_t(m), p, k, x, variance_reduced=True),
    "dsm": lambda m, p, k, x: L.dsm_loss(m, p, k, x, 0.3, t=0.3),
    "multiscale": lambda m, p, k, x: L.multiscale_dsm_loss(m, p, k, x, SIGMAS, labels=x[:, 0]),
    "continuous": lambda m, p, k, x: L.continuous_dsm_loss(
        m, p, k, x, VP, weighting="likelihood", t_sampling="importance", labels=x[:, 0]),
    "continuous_edm": lambda m, p, k, x: L.continuous_dsm_loss(m, p, k, x, VESDE(), parameterization="edm"),
    "eps": lambda m, p, k, x: L.eps_loss(m, p, k, x, VP),
    "x0": lambda m, p, k, x: L.x0_loss(m, p, k, x, VP),
    "v": lambda m, p, k, x: L.v_loss(m, p, k, x, VP),
    "edm": lambda m, p, k, x: L.edm_loss(m, p, k, x),
}


def _no_t(m):
    return lambda p, x: m(p, x)


def _wrong_shape_model(p, x, t=None, **kw):
    return jnp.zeros((x.shape[0], 3), x.dtype)


BY_PARAMS = ("ism_exact", "continuous", "edm")  # vmapped over parameters too (one of each kind)


def test_every_loss_jits_vmaps_and_grads():
    # One compiled function: for each loss, vmap over a batch of keys of value_and_grad, plus
    # the loss on a vmapped batch of parameters.
    p = _mlp_init(0)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((16, 2)), jnp.float32)
    keys = _keys(2, 3)
    stacked = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), p)

    @jax.jit
    def run(p, keys, stacked):
        out = {}
        for name, loss in ALL_LOSSES.items():
            vals, grads = jax.vmap(jax.value_and_grad(lambda q, k: loss(_mlp, q, k, x)), in_axes=(None, 0))(p, keys)
            by_params = jax.vmap(lambda q: loss(_mlp, q, keys[0], x))(stacked) if name in BY_PARAMS else vals[:2]
            out[name] = (vals, grads, by_params)
        return out

    out = run(p, keys, stacked)
    for name, (vals, grads, by_params) in out.items():
        assert vals.shape == (3,) and by_params.shape == (2,), name
        assert np.all(np.isfinite(vals)) and np.all(np.isfinite(by_params)), name
        flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grads)])
        assert np.all(np.isfinite(flat)) and np.any(flat != 0), name
        np.testing.assert_allclose(by_params[0], vals[0], rtol=1e-5, err_msg=name)
        if name not in ("esm", "ism_exact"):
            assert np.ptp(np.asarray(vals)) > 0, f"{name}: the key is not used"


def test_default_threefry_keys():
    # the default keys (raw uint32 jax.random.PRNGKey, threefry) under jit and vmap
    p = _mlp_init(0)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((16, 2)), jnp.float32)
    loss = jax.jit(jax.vmap(lambda k: L.continuous_dsm_loss(_mlp, p, k, x, VP)))
    raw = loss(jax.random.split(jax.random.PRNGKey(4), 2))
    assert np.all(np.isfinite(raw)) and raw[0] != raw[1]


def _trace(fn):
    return jax.eval_shape(fn)  # trace only: errors must come before anything is computed


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_integer_data_is_a_type_error(name):
    x = jnp.zeros((4, 2), jnp.int32)
    with pytest.raises(TypeError, match=r"x0?: expected a floating-point array, got dtype int32"):
        _trace(lambda: ALL_LOSSES[name](_mlp, _mlp_init(0), jax.random.PRNGKey(0), x))


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_wrong_model_output_shape_names_both_shapes(name):
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match=r"returned shape \(4, 3\), expected the shape of its input x, \(4, 2\)"):
        _trace(lambda: ALL_LOSSES[name](_wrong_shape_model, None, jax.random.PRNGKey(0), x))


def test_argument_errors_are_clear():
    p, k, x = _mlp_init(0), jax.random.PRNGKey(0), jnp.zeros((4, 2))
    cases = [
        (lambda: L.continuous_dsm_loss(_mlp, p, k, x, VP, weighting="snr"), r"weighting: expected one of"),
        (lambda: L.continuous_dsm_loss(_mlp, p, k, x, VP, t_sampling="lognormal"), r"t_sampling: expected"),
        (lambda: L.continuous_dsm_loss(_mlp, p, k, x, VP, parameterization="flow"), r"parameterization"),
        (lambda: L.continuous_dsm_loss(_mlp, p, k, x, VP, t_min=1.0), r"t_min: expected 0 <= t_min < T"),
        (lambda: L.implicit_score_matching(_mlp_no_t, p, x, divergence="hutchinson"), r"needs a PRNG key"),
        (lambda: L.implicit_score_matching(_mlp_no_t, p, x, divergence="approx"), r"divergence: expected"),
        (lambda: L.sliced_score_matching(_mlp_no_t, p, k, x, num_projections=0), r"num_projections"),
        (lambda: L.multiscale_dsm_loss(_mlp, p, k, x, SIGMAS[None]), r"sigmas: expected a 1-D ladder"),
        (lambda: L.multiscale_dsm_loss(_mlp, p, k, x, SIGMAS, noise_input="t"), r"noise_input"),
        (lambda: L.dsm_loss(_mlp_no_t, p, k, x, jnp.ones(3)), r"sigma: expected a scalar or shape \[B\] = \(4,\)"),
        (lambda: L.dsm_loss(_mlp, p, k, x, 0.1, t=jnp.ones(3)), r"t: expected shape \[B\] = \(4,\)"),
        (lambda: L.explicit_score_matching(_mlp_no_t, p, x, jnp.zeros((4, 3))), r"true_score: expected shape \(4, 2\)"),
        (lambda: L.eps_loss(_mlp, p, k, jnp.zeros(4), VP), r"at least one data axis"),
    ]
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            _trace(fn)


def _train_with_continuous_dsm(apply, params, steps=150):
    """Adam on the eps-parameterised continuous DSM (lax.scan); returns the loss before and after."""
    sde, opt = VPSDE(), optax.adam(1e-2)
    data = _ring_sample(16, 4096) / 4.0
    loss = lambda q, k, xb: L.continuous_dsm_loss(apply, q, k, xb, sde, parameterization="eps")  # noqa: E731

    def step(carry, inputs):
        (q, s), (i, k) = carry, inputs
        xb = jax.lax.dynamic_slice_in_dim(data, (i * 256) % 4096, 256)
        upd, s = opt.update(jax.grad(loss)(q, k, xb), s, q)
        return (optax.apply_updates(q, upd), s), None

    @jax.jit
    def run(params, step_keys):
        (trained, _), _ = jax.lax.scan(step, (params, opt.init(params)), (jnp.arange(steps), step_keys))
        both = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, trained)
        return jax.vmap(lambda q: loss(q, _key(17), data))(both)  # same eval draws for both

    before, after = np.asarray(run(params, _keys(18, steps)))
    assert after < 0.8 * before, (before, after)


def test_equinox_model_trains_with_continuous_dsm():
    # A non-Linen model plugs in through apply(params, x, t): Equinox via eqx.partition / combine.
    import equinox as eqx

    mlp = eqx.nn.MLP(3, 2, width_size=32, depth=2, activation=jax.nn.silu, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(mlp, eqx.is_array)

    def apply(params, x, t):
        return jax.vmap(eqx.combine(params, static))(jnp.concatenate([x, t[:, None]], -1))

    _train_with_continuous_dsm(apply, params)


@pytest.mark.slow
def test_nnx_model_trains_with_continuous_dsm():
    # flax.nnx via nnx.split / nnx.merge.
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.l2, self.l3 = (nnx.Linear(3, 32, rngs=rngs), nnx.Linear(32, 32, rngs=rngs),
                                         nnx.Linear(32, 2, rngs=rngs))

        def __call__(self, x, t):
            h = jnp.concatenate([x, t[:, None]], -1)
            return self.l3(nnx.silu(self.l2(nnx.silu(self.l1(h)))))

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)))
    _train_with_continuous_dsm(lambda p, x, t: nnx.merge(graphdef, p)(x, t), params)
