"""Forward SDEs against their closed forms."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from jaxscore.data.toy import ring_mixture
from jaxscore.sde import LinearSDE, SubVPSDE, VESDE, VPSDE

SDES = [VESDE(), VPSDE(), SubVPSDE(), VESDE(sigma_min=0.1, sigma_max=5.0), VPSDE(beta_min=0.5, beta_max=8.0)]
IDS = ["ve", "vp", "subvp", "ve_small", "vp_custom"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_coefficients_satisfy_the_sde(sde):
    """d alpha/dt = f(t) alpha and d sigma^2/dt = 2 f(t) sigma^2 + g(t)^2 (moment ODEs of a linear SDE)."""
    t = jnp.linspace(0.01, 0.99, 17)
    alpha, sigma = sde.marginal_coefs(t)
    dalpha = jax.vmap(jax.grad(lambda s: sde.marginal_coefs(s)[0]))(t)
    dvar = jax.vmap(jax.grad(lambda s: sde.marginal_coefs(s)[1] ** 2))(t)
    np.testing.assert_allclose(dalpha, sde.drift_coef(t) * alpha, rtol=1e-4, atol=1e-6)
    g2 = sde.diffusion(t) ** 2
    np.testing.assert_allclose(dvar, 2 * sde.drift_coef(t) * sigma**2 + g2, rtol=1e-3, atol=1e-6 * float(jnp.max(g2)))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_log_snr_inverts(sde):
    t = jnp.linspace(sde.t_min, sde.T, 33)
    np.testing.assert_allclose(sde.t_from_log_snr(sde.log_snr(t)), t, atol=2e-5)
    np.testing.assert_allclose(sde.t_from_sigma_ratio(sde.sigma_ratio(t)), t, atol=2e-5)
    assert jnp.all(jnp.diff(sde.log_snr(t)) < 0), "log-SNR must decrease in t"


class TestMarginalsUnderJit(chex.TestCase):
    """The closed forms give the same numbers traced under jit as run eagerly (chex.variants)."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_marginals_and_transitions(self):
        t = jnp.linspace(0.01, 1.0, 17)
        for sde in (VPSDE(), SubVPSDE(), VESDE()):
            alpha, sigma = self.variant(sde.marginal_coefs)(t)
            chex.assert_shape((alpha, sigma), (17,))
            a_st, v_st = self.variant(sde.transition_coefs)(t[:-1], t[1:])
            # composing s -> t with 0 -> s gives 0 -> t: alpha_t = a alpha_s, sigma_t^2 = a^2 sigma_s^2 + v
            np.testing.assert_allclose(a_st * alpha[:-1], alpha[1:], rtol=1e-5)
            np.testing.assert_allclose(a_st**2 * sigma[:-1] ** 2 + v_st, sigma[1:] ** 2, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_euler_maruyama_forward_matches_marginal(sde):
    """Simulate dx = f x dt + g dW from the mixture (at t=0) and compare mean/std with alpha_t, sigma_t."""
    mix = ring_mixture()
    key = jax.random.key(0)
    n, steps = 20000, 400
    x0 = mix.sample(key, n)
    alpha0, sigma0 = sde.marginal_coefs(jnp.zeros(()))
    x0 = alpha0 * x0 + sigma0 * jax.random.normal(jax.random.key(7), x0.shape)  # p_0 of the SDE (VE: smoothed by sigma_min)
    t_end = 0.5
    dt = t_end / steps

    def step(x, i):
        t = jnp.full((n,), i * dt)
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape)
        x = x + sde.drift(x, t) * dt + sde.diffusion(t)[:, None] * jnp.sqrt(dt) * noise
        return x, None

    xt, _ = jax.lax.scan(step, x0, jnp.arange(steps))
    alpha, sigma = sde.marginal_coefs(jnp.asarray(t_end))
    true_mean = alpha * mix.mean
    true_cov = alpha**2 * mix.covariance + sigma**2 * jnp.eye(2)
    emp_mean = xt.mean(0)
    emp_std = jnp.sqrt(jnp.diag(jnp.cov(xt.T)))
    true_std = jnp.sqrt(jnp.diag(true_cov))
    se_mean = true_std / np.sqrt(n)
    # 5 Monte-Carlo standard errors, plus O(dt) Euler bias (relative dt * |f| ~ 1e-2 at most over the run)
    assert np.all(np.abs(emp_mean - true_mean) < 5 * se_mean + 0.01 * np.abs(true_mean) + 1e-3)
    np.testing.assert_allclose(emp_std, true_std, rtol=0.03)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_prior_log_prob_normalises(sde):
    """The prior density integrates to 1 (1-D quadrature per axis, product form) and matches its samples' scale."""
    s = float(sde.prior_std)
    grid = np.linspace(-12 * s, 12 * s, 20001)
    dens = np.exp(np.asarray(sde.prior_log_prob(jnp.asarray(grid[:, None], jnp.float32)), np.float64))
    total = integrate.trapezoid(dens, grid)
    assert abs(total - 1.0) < 1e-4
    z = sde.prior_sample(jax.random.key(1), (20000, 3))
    np.testing.assert_allclose(jnp.std(z), s, rtol=0.02)
    # 2-D density is the product of 1-D ones
    pts = jnp.array([[0.3 * s, -1.1 * s]])
    lp2 = sde.prior_log_prob(pts)
    lp1 = sde.prior_log_prob(pts[:, :1]) + sde.prior_log_prob(pts[:, 1:])
    np.testing.assert_allclose(lp2, lp1, rtol=1e-6)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_transition_is_consistent_with_marginals(sde):
    """x_t|x_0 composed from x_s|x_0 and x_t|x_s gives the marginal kernel (linear SDE semigroup)."""
    s, t = jnp.array([0.2]), jnp.array([0.7])
    a_s, sig_s = sde.marginal_coefs(s)
    a_t, sig_t = sde.marginal_coefs(t)
    a_ts, var_ts = sde.transition_coefs(s, t)
    np.testing.assert_allclose(a_ts * a_s, a_t, rtol=1e-5)
    np.testing.assert_allclose(a_ts**2 * sig_s**2 + var_ts, sig_t**2, rtol=1e-5)
    x = jnp.ones((1, 3))
    f, g = sde.discretize(x, t, s)
    np.testing.assert_allclose(f, (a_ts - 1.0) * x, rtol=1e-6)
    np.testing.assert_allclose(g, jnp.sqrt(var_ts), rtol=1e-6)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_marginal_sample_and_kernel_score(sde):
    key = jax.random.key(3)
    x0 = jnp.ones((50000, 2)) * jnp.array([1.0, -2.0])
    t = jnp.full((50000,), 0.4)
    xt, eps = sde.marginal_sample(key, x0, t)
    alpha, sigma = sde.marginal_coefs(t[:1])
    np.testing.assert_allclose(xt.mean(0), alpha * x0[0], atol=5 * float(sigma[0]) / np.sqrt(50000) + 1e-6)
    np.testing.assert_allclose(xt.std(0), sigma[0] * jnp.ones(2), rtol=0.02)
    np.testing.assert_allclose(sde.marginal_score(xt, x0, t), -eps / sigma[0], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_probability_flow_and_reverse_drift_formulas(sde):
    mix = ring_mixture()
    x = mix.sample(jax.random.key(0), 8)
    t = jnp.linspace(0.1, 0.9, 8)
    score_fn = mix.score_fn(sde)
    g2 = sde.diffusion(t)[:, None] ** 2
    np.testing.assert_allclose(
        sde.probability_flow_drift(score_fn, x, t), sde.drift(x, t) - 0.5 * g2 * score_fn(x, t), rtol=1e-5
    )
    np.testing.assert_allclose(sde.reverse_drift(score_fn, x, t), sde.drift(x, t) - g2 * score_fn(x, t), rtol=1e-5)


def test_probability_flow_preserves_the_marginal_fokker_planck():
    """For a single Gaussian, the probability-flow ODE moves the mean and variance exactly as the marginals do."""
    sde = VPSDE()
    from jaxscore.data.toy import gaussian

    g = gaussian([1.5], [[0.25]])
    t = jnp.linspace(0.05, 0.95, 9)
    alpha, sigma = sde.marginal_coefs(t)
    mean_t = alpha * 1.5
    # a point one std above the mean stays one std above the mean along the flow: d/dt (mean + std) = flow drift
    std_t = jnp.sqrt(alpha**2 * 0.25 + sigma**2)
    x = (mean_t + std_t)[:, None]
    drift = sde.probability_flow_drift(g.score_fn(sde), x, t)[:, 0]
    d_point = jax.vmap(jax.grad(lambda s: (lambda a, sg: a * 1.5 + jnp.sqrt(a**2 * 0.25 + sg**2))(*sde.marginal_coefs(s))))(t)
    np.testing.assert_allclose(drift, d_point, rtol=1e-4)


def test_sdes_are_pytrees_that_pass_through_jit_and_vmap():
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    leaves = jax.tree.leaves(sde)
    assert len(leaves) == 2
    f = jax.jit(lambda s, t: s.marginal_coefs(t)[1])
    np.testing.assert_allclose(f(sde, jnp.array([0.5])), sde.marginal_coefs(jnp.array([0.5]))[1])
    # vmap over a batch of SDEs with different beta_max
    batched = VPSDE(beta_min=jnp.array([0.1, 0.1]), beta_max=jnp.array([10.0, 20.0]))
    sig = jax.vmap(lambda s: s.marginal_coefs(jnp.asarray(0.5))[1])(batched)
    assert sig[0] < sig[1]
    with pytest.raises(Exception):
        sde.beta_min = 1.0  # immutable


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: VESDE(sigma_min=5.0, sigma_max=1.0), r"VESDE: expected sigma_min < sigma_max, got sigma_min=5.0, sigma_max=1.0"),
        (lambda: VESDE(sigma_min=0.0), r"VESDE: sigma_min must be > 0, got 0.0"),
        (lambda: VESDE(sigma_max=float("inf")), r"VESDE: expected finite sigma_min and sigma_max, got sigma_min=0.01, sigma_max=inf"),
        (lambda: VPSDE(beta_min=-0.1), r"VPSDE: beta_min must be >= 0, got -0.1"),
        (lambda: VPSDE(beta_min=0.0, beta_max=0.0), r"VPSDE: beta_max must be > 0, got 0.0"),
        (lambda: VPSDE(beta_max=float("nan")), r"VPSDE: expected finite beta_min and beta_max, got beta_min=0.1, beta_max=nan"),
        (lambda: SubVPSDE(beta_min=5.0, beta_max=1.0), r"SubVPSDE: expected beta_min <= beta_max, got beta_min=5.0, beta_max=1.0"),
        (lambda: VPSDE(t_min=2.0), r"VPSDE: expected 0 <= t_min < T, got t_min=2.0"),
        (lambda: VESDE(T=0.0), r"VESDE: T must be finite and > 0, got 0.0"),
        (lambda: SubVPSDE(T=float("inf")), r"SubVPSDE: T must be finite and > 0, got inf"),
        # one bad entry in a batch of SDEs
        (lambda: VPSDE(beta_min=jnp.array([0.1, 0.1]), beta_max=jnp.array([20.0, -1.0])), r"VPSDE: beta_max must be > 0, got \[20. -1.\]"),
        (lambda: VPSDE().replace(beta_min=30.0), r"VPSDE: expected beta_min <= beta_max, got beta_min=30.0, beta_max=20.0"),
    ],
)
def test_invalid_parameters_raise_naming_the_field_and_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_time_outside_range_and_bad_shapes_raise():
    sde = VPSDE()
    x = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match=r"expected values in \[0.0, 1.0\]"):
        sde.drift(x, jnp.array([0.1, 0.5, 1.5]))
    with pytest.raises(ValueError, match=r"expected shape \[B\]"):
        sde.drift(x, jnp.zeros((4,)))
    with pytest.raises(TypeError, match="floating-point"):
        sde.marginal_sample(jax.random.key(0), jnp.zeros((3, 2), jnp.int32), jnp.zeros(3))


def _eval_points():
    return jnp.linspace(0.05, 1.0, 7)


@pytest.mark.parametrize(
    "sde, params",
    [(VESDE(sigma_min=0.1, sigma_max=5.0), [0.1, 5.0]), (VPSDE(beta_min=0.5, beta_max=8.0), [0.5, 8.0]),
     (SubVPSDE(beta_min=0.2, beta_max=3.0), [0.2, 3.0])],
    ids=["ve", "vp", "subvp"],
)
def test_sde_pytree_leaves_are_the_schedule_parameters(sde, params):
    """Leaves are exactly the parameters; T and t_min are static (part of the tree structure)."""
    assert jax.tree.leaves(sde) == params
    assert jax.tree.structure(sde) != jax.tree.structure(sde.replace(t_min=0.5 * sde.t_min))
    doubled = jax.tree.map(lambda p: 2 * p, sde)
    assert type(doubled) is type(sde) and jax.tree.leaves(doubled) == [2 * p for p in params]
    assert (doubled.T, doubled.t_min) == (sde.T, sde.t_min)
    # unflattening does not re-validate: transforms may put anything in the leaves
    assert jax.tree.leaves(jax.tree.map(lambda p: -p, sde)) == [-p for p in params]
    sentinel = object()
    assert jax.tree.leaves(jax.tree.map(lambda p: sentinel, sde)) == [sentinel, sentinel]


@pytest.mark.parametrize("sde", SDES[:3], ids=IDS[:3])
def test_sde_as_jit_argument_and_static_argument(sde):
    t = _eval_points()
    expected = sde.log_snr(t)
    np.testing.assert_allclose(jax.jit(lambda s, u: s.log_snr(u))(sde, t), expected, rtol=1e-6)
    np.testing.assert_allclose(eqx.filter_jit(lambda s, u: s.log_snr(u))(sde, t), expected, rtol=1e-6)
    traces = []

    def static_fn(s, u):
        traces.append(1)
        return s.marginal_coefs(u)[1]

    static_jit = jax.jit(static_fn, static_argnums=0)
    same = jax.tree.map(float, sde)  # an equal SDE, a different object
    assert same == sde and hash(same) == hash(sde)
    np.testing.assert_allclose(static_jit(sde, t), sde.marginal_coefs(t)[1], rtol=1e-6)
    static_jit(same, t)
    assert len(traces) == 1, "an equal SDE must hit the compilation cache"
    assert sde != sde.replace(t_min=0.5 * sde.t_min)


def test_batch_of_vp_sdes_under_vmap_matches_each_sde():
    beta_max = jnp.array([5.0, 10.0, 20.0])
    batched = VPSDE(beta_min=jnp.full((3,), 0.1), beta_max=beta_max)
    t = _eval_points()
    got_alpha, got_sigma = jax.vmap(lambda s: s.marginal_coefs(t))(batched)
    got_lam = jax.jit(jax.vmap(lambda s: s.log_snr(t)))(batched)
    for i, b in enumerate([5.0, 10.0, 20.0]):
        one = VPSDE(beta_max=b)
        np.testing.assert_allclose(got_alpha[i], one.marginal_coefs(t)[0], rtol=1e-6)
        np.testing.assert_allclose(got_sigma[i], one.marginal_coefs(t)[1], rtol=1e-6)
        np.testing.assert_allclose(got_lam[i], one.log_snr(t), rtol=1e-6)
    # SDEs built inside vmap / jit from traced parameters (not checkable there) work too
    built = jax.jit(jax.vmap(lambda b: VPSDE(beta_max=b).log_snr(t)))(beta_max)
    np.testing.assert_allclose(built, got_lam, rtol=1e-6)
    # gradient with respect to an SDE parameter: d sigma_t^2 / d beta_max = e^{-B} t^2 / 2
    dvar = jax.grad(lambda s: s.marginal_coefs(jnp.asarray(0.5))[1] ** 2)(VPSDE())
    b = VPSDE().integrated_beta(0.5)
    np.testing.assert_allclose(dvar.beta_max, np.exp(-b) * 0.5**2 / 2, rtol=1e-5)


def _log_snr_closed_form(sde, t):
    """log(alpha^2/sigma^2) in float64 numpy from the textbook closed forms."""
    t = np.asarray(t, np.float64)
    if isinstance(sde, VESDE):
        return -2.0 * np.log(sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** (t / sde.T))
    u = t / sde.T
    big_b = sde.T * (sde.beta_min * u + 0.5 * (sde.beta_max - sde.beta_min) * u**2)
    sigma2 = -np.expm1(-big_b) if isinstance(sde, VPSDE) else np.expm1(-big_b) ** 2
    return -big_b - np.log(sigma2)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_log_snr_matches_closed_form_and_round_trips(sde):
    t = jnp.linspace(sde.t_min, sde.T, 65)
    lam = sde.log_snr(t)
    np.testing.assert_allclose(lam, _log_snr_closed_form(sde, t), rtol=2e-6, atol=2e-6)
    # round trip both ways, over the whole range of log-SNR the SDE spans
    np.testing.assert_allclose(sde.t_from_log_snr(lam), t, rtol=1e-5, atol=2e-6)
    lam_grid = jnp.linspace(float(lam[-1]), float(lam[0]), 33)
    np.testing.assert_allclose(sde.log_snr(sde.t_from_log_snr(lam_grid)), lam_grid, rtol=1e-4, atol=1e-4)


def test_linear_sde_is_abstract_and_user_subclasses_get_the_derived_methods():
    with pytest.raises(TypeError, match="abstract"):
        LinearSDE()

    class Incomplete(LinearSDE):
        T: float = eqx.field(static=True, default=1.0)
        t_min: float = eqx.field(static=True, default=1e-3)

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()

    class BrownianSDE(LinearSDE):
        """dx = sqrt(c) dW from x_0 smoothed by s0: alpha = 1, sigma_t^2 = s0^2 + c t."""

        c: float = 2.0
        s0: float = 0.1
        T: float = eqx.field(static=True, default=1.0)
        t_min: float = eqx.field(static=True, default=1e-3)

        @property
        def prior_std(self):
            return jnp.sqrt(self.s0**2 + self.c * self.T)

        def drift_coef(self, t):
            return jnp.zeros_like(jnp.asarray(t, jnp.result_type(float)))

        def diffusion(self, t):
            return jnp.sqrt(self.c) * jnp.ones_like(t)

        def marginal_coefs(self, t):
            sigma = jnp.sqrt(self.s0**2 + self.c * t)
            return jnp.ones_like(sigma), sigma

        def log_snr(self, t):
            return -jnp.log(self.s0**2 + self.c * t)

        def t_from_log_snr(self, log_snr):
            return (jnp.exp(-log_snr) - self.s0**2) / self.c

    sde = BrownianSDE()
    assert sde.is_variance_exploding() and jax.tree.leaves(sde) == [2.0, 0.1]
    s, t = jnp.array([0.2]), jnp.array([0.7])
    a, var = sde.transition_coefs(s, t)
    np.testing.assert_allclose(a, 1.0)
    np.testing.assert_allclose(var, 2.0 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(sde.t_from_sigma_ratio(sde.sigma_ratio(t)), t, rtol=1e-5)
    with pytest.raises(ValueError, match="BrownianSDE: expected 0 <= t_min < T, got t_min=-1.0"):
        BrownianSDE(t_min=-1.0)
