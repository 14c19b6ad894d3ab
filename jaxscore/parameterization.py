r"""What a network predicts, and how that becomes a score.

With :math:`x_t = \alpha_t x_0 + \sigma_t \varepsilon` the four usual targets are
one affine map apart (Tweedie: :math:`\nabla\log p_t(x) = (\alpha_t \hat x_0 - x)/\sigma_t^2
= -\hat\varepsilon/\sigma_t`):

================  ==========================================================
``"score"``       :math:`s`
``"eps"``         :math:`s = -\hat\varepsilon/\sigma_t`
``"x0"``          :math:`s = (\alpha_t \hat x_0 - x)/\sigma_t^2`
``"v"``           :math:`\hat x_0 = (\alpha_t x - \sigma_t \hat v)/(\alpha_t^2+\sigma_t^2)`,
                  :math:`v = \alpha_t\varepsilon - \sigma_t x_0` (Salimans & Ho)
``"edm"``         :math:`\hat x_0 = c_{skip} \tilde x + c_{out} F(c_{in}\tilde x, c_{noise})`
                  on :math:`\tilde x = x/\alpha_t` at :math:`\tilde\sigma=\sigma_t/\alpha_t` (Karras et al.)
================  ==========================================================

These are pure functions of the SDE's coefficients; :func:`make_score_fn` turns
any ``apply(params, x, t, **kw)`` into the ``score_fn(x, t)`` every sampler takes.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp

from jaxscore._checks import broadcast_to_data, check_batch

Parameterization = Literal["score", "eps", "x0", "v", "edm"]
PARAMETERIZATIONS = ("score", "eps", "x0", "v", "edm")
ApplyFn = Callable[..., jax.Array]


def edm_preconditioning(sigma: jax.Array, sigma_data: float = 0.5):
    r"""EDM (Karras et al. 2022, Table 1) for noise level :math:`\sigma` [B]:

    :math:`c_{skip} = \sigma_d^2/(\sigma^2+\sigma_d^2)`, :math:`c_{out} = \sigma\sigma_d/\sqrt{\sigma^2+\sigma_d^2}`,
    :math:`c_{in} = 1/\sqrt{\sigma^2+\sigma_d^2}`, :math:`c_{noise} = \tfrac14\ln\sigma`.
    """
    s2 = sigma**2 + sigma_data**2
    return sigma_data**2 / s2, sigma * sigma_data / jnp.sqrt(s2), 1.0 / jnp.sqrt(s2), 0.25 * jnp.log(sigma)


def edm_denoise(apply: ApplyFn, params: Any, x_tilde: jax.Array, sigma: jax.Array, sigma_data: float = 0.5, **kw):
    r"""EDM denoiser :math:`D(\tilde x;\sigma) = c_{skip}\tilde x + c_{out} F(c_{in}\tilde x, c_{noise})`."""
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data)
    out = apply(params, broadcast_to_data(c_in, x_tilde) * x_tilde, c_noise, **kw)
    return broadcast_to_data(c_skip, x_tilde) * x_tilde + broadcast_to_data(c_out, x_tilde) * out


def output_to_score(output: jax.Array, x: jax.Array, t: jax.Array, sde, parameterization: Parameterization):
    """Convert a network's ``output`` [B, *D] at ``(x, t)`` to a score (not for ``"edm"``, which wraps the call)."""
    alpha, sigma = sde.marginal_coefs(t)
    a, s = broadcast_to_data(alpha, x), broadcast_to_data(sigma, x)
    if parameterization == "score":
        return output
    if parameterization == "eps":
        return -output / s
    if parameterization == "x0":
        return (a * output - x) / s**2
    if parameterization == "v":
        x0 = (a * x - s * output) / (a**2 + s**2)
        return (a * x0 - x) / s**2
    raise ValueError(f"parameterization: expected one of {PARAMETERIZATIONS}, got {parameterization!r}.")


def score_to_output(score: jax.Array, x: jax.Array, t: jax.Array, sde, parameterization: Parameterization):
    r"""The inverse of :func:`output_to_score`: the output [B, *D] a network of ``parameterization`` must give at
    ``(x, t)`` to have ``score``. With :math:`\hat x_0 = (x + \sigma^2 s)/\alpha`: ``"eps"`` :math:`-\sigma s`,
    ``"x0"`` :math:`\hat x_0`, ``"v"`` :math:`(\alpha x - (\alpha^2+\sigma^2)\hat x_0)/\sigma`. Not for
    ``"edm"`` (its network sees scaled inputs)."""
    alpha, sigma = sde.marginal_coefs(t)
    a, s = broadcast_to_data(alpha, x), broadcast_to_data(sigma, x)
    if parameterization == "score":
        return score
    if parameterization == "eps":
        return -s * score
    x0 = sde.denoise(x, score, t)
    if parameterization == "x0":
        return x0
    if parameterization == "v":
        return (a * x - (a**2 + s**2) * x0) / s
    raise ValueError(f"parameterization: expected one of {PARAMETERIZATIONS[:-1]} (not 'edm'), got {parameterization!r}.")


def make_score_fn(
    apply: ApplyFn,
    params: Any,
    sde,
    parameterization: Parameterization = "eps",
    *,
    sigma_data: float = 0.5,
    **apply_kwargs,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Turn a network ``apply(params, x, t, **kw) -> [B, *D]`` into ``score_fn(x, t)``.

    For ``"edm"`` the network is called as ``F(c_in x/alpha, c_noise)`` (EDM preconditioning
    on the SDE's sigma-ratio); otherwise as ``apply(params, x, t)`` and its output is
    converted with :func:`output_to_score`. ``apply_kwargs`` (e.g. ``labels=``) pass through.
    """
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization: expected one of {PARAMETERIZATIONS}, got {parameterization!r}.")

    def score_fn(x, t):
        x, t = check_batch(x, t)
        if parameterization == "edm":
            alpha, sigma = sde.marginal_coefs(t)
            x0 = edm_denoise(apply, params, x / broadcast_to_data(alpha, x), sigma / alpha, sigma_data, **apply_kwargs)
            return (broadcast_to_data(alpha, x) * x0 - x) / broadcast_to_data(sigma**2, x)
        return output_to_score(apply(params, x, t, **apply_kwargs), x, t, sde, parameterization)

    return score_fn
