"""Bit-exactness guard: SHA-256 of sampler outputs, losses and likelihoods on the exact ring-mixture score.

For every sampler name in :data:`jaxscore.samplers.api.SAMPLERS` and each of the VP, VE and sub-VP SDEs
(score_sde defaults) it runs ``js.sample(jax.random.key(0), score_fn, sde, (64, 2), sampler=name,
steps=8)`` (``annealed_langevin`` with ``n_steps_each=3``) where ``score_fn`` is the exact score of
``jaxscore.data.toy.ring_mixture()`` diffused by that SDE, and hashes the float32 output bytes. A sampler
that refuses an SDE (annealed Langevin needs a variance-exploding one) records ``"error: <Type>"``
instead, so a change in what it accepts also shows. It also hashes

* ``sample_options/vp/<label>``: the samplers with non-default options (:data:`VARIANTS`: higher /
  lower orders, final correctors, explicit grids, ``x_init``, trajectories) on the VP SDE, hashing
  the samples and, where returned, the trajectory;
* ``sde_methods/<sde>``: marginal_coefs, log_snr, t_from_log_snr, sigma_ratio, t_from_sigma_ratio,
  drift, diffusion, transition_coefs, discretize, prior_log_prob and denoise on a fixed grid;
* ``continuous_dsm_loss``: the loss values of every SDE x parameterization x weighting (one hash);
* ``log_likelihood/<sde>``: ``log_likelihood`` of 4 points (exact divergence, tsit5).

Usage:
  python experiments/benchmarks/sampler_hashes.py           # print and write the JSON
  python experiments/benchmarks/sampler_hashes.py --check   # compare with the saved JSON; exit 1 on mismatch

Hashes are of one machine's float32 bits (CPU, this jax/XLA version): they guard refactors that must
not change numbers, not portability. The saved baseline is HEAD 6a3c5b3 (after issue 12 changed the
default grid and end of the deterministic solvers ``ddim`` / ``dpmpp_2m`` / ``dpmpp_3m`` / ``unipc`` on
purpose: ``grids.default_range``; before it, HEAD 77497f7 after issue 10 changed the keys of the diffrax
``ode`` / ``sde`` samplers), so every sampler must now match bit for bit. Samplers listed in ``INTENTIONALLY_CHANGING`` (none now) would
be reported separately by ``--check`` and not fail it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxscore as js
from jaxscore.data.toy import ring_mixture
from jaxscore.losses import continuous_dsm_loss
from jaxscore.samplers.api import SAMPLERS
from jaxscore.sde import SubVPSDE, VESDE, VPSDE

RESULTS = os.path.join(os.path.dirname(__file__), "results", "sampler_hashes.json")
SHAPE = (64, 2)
STEPS = 8
OPTIONS = {"annealed_langevin": {"n_steps_each": 3}}
_GRID = (1.0, 0.7, 0.4, 0.2, 0.1, 0.05, 0.02, 0.01, 0.001)  # an explicit grid of STEPS + 1 times
_X_INIT = np.linspace(-2.0, 2.0, SHAPE[0] * SHAPE[1], dtype=np.float32).reshape(SHAPE)
VARIANTS = {  # label -> (sampler, options); run on the VP SDE (annealed Langevin on VE)
    "unipc_order1": ("unipc", {"order": 1}),
    "unipc_order3": ("unipc", {"order": 3}),
    "unipc_final_corrector": ("unipc", {"order": 3, "final_corrector": True, "lower_order_final": False}),
    "unip_alone": ("unipc", {"corrector": False}),
    "dpmpp_3m_no_lower_order_final": ("dpmpp_3m", {"lower_order_final": False}),
    "dpmpp_2m_power_tmin": ("dpmpp_2m", {"grid": "power", "rho": 1.75, "t_min": 5e-3}),
    "dpmpp_2m_trajectory": ("dpmpp_2m", {"return_info": True, "return_trajectory": True, "denoise": True}),
    "dpmpp_2m_sde_final_noise": ("dpmpp_2m_sde", {"final_noise": True, "lower_order_final": False}),
    "ddim_eta": ("ddim", {"eta": 0.5}),
    "ddim_x_init": ("ddim", {"x_init": _X_INIT}),
    "euler_maruyama_explicit_grid": ("euler_maruyama", {"grid": _GRID}),
    "unipc_explicit_grid": ("unipc", {"grid": _GRID, "order": 3}),
    "heun_lower_order_final_denoise": ("heun", {"lower_order_final": True, "denoise": True}),
    "edm_stochastic_lower_order_final": ("edm_stochastic", {"lower_order_final": True, "S_churn": 10.0}),
    "pc_langevin_only": ("pc", {"predictor": "none", "corrector_steps": 2}),
    "pc_em_snr": ("pc", {"predictor": "euler_maruyama", "step_size": "snr", "final_noise": True}),
    "pc_ancestral_snr_batch": ("pc", {"predictor": "ancestral", "step_size": "snr_batch"}),
    "annealed_langevin_final_noise": ("annealed_langevin", {"n_steps_each": 2, "final_noise": False, "_sde": "ve"}),
    "ode_heun_logsnr_power": ("ode", {"solver": "heun", "grid": "logsnr_power"}),
    "ode_adaptive": ("ode", {"steps": None, "rtol": 1e-3, "atol": 1e-3}),
    "ode_euler_trajectory": ("ode", {"solver": "euler", "return_trajectory": True}),
    "sde_heun_edm": ("sde", {"solver": "heun", "grid": "edm", "denoise": True}),
    "sde_trajectory": ("sde", {"return_trajectory": 3}),
    # the extrapolated final step (the default from 14 steps on; forced here at STEPS = 8)
    "unipc_extrapolate": ("unipc", {"denoise": "extrapolate"}),
    "ddim_extrapolate": ("ddim", {"denoise": "extrapolate"}),
}
INTENTIONALLY_CHANGING: frozenset[str] = frozenset()
"""Samplers being changed on purpose by some issue: a mismatch there is reported, not counted as a
regression. Empty: issue 12's default-grid change is in the baseline (HEAD 6a3c5b3)."""


NOTE = ("SHA-256 of float32 outputs (see sampler_hashes.py). Baseline: HEAD 6a3c5b3 after issue 12's "
        "intentional change of the deterministic solvers' default grid and end (grids.default_range; "
        "sample_options/* recorded with the same code); every hash must match. The final-step change (denoise='auto', "
        "extrapolated from 14 steps) left all 75 bit-identical (they run 8 steps); its two variants were added then.")


def sdes() -> dict:
    return {"vp": VPSDE(), "ve": VESDE(), "subvp": SubVPSDE()}


def sha256(*arrays) -> str:
    """SHA-256 over the float32 (C-order) bytes of the arrays, in order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, np.float32)).tobytes())
    return h.hexdigest()


def sampler_hash(name: str, sde, score_fn) -> str:
    try:
        x = js.sample(jax.random.key(0), score_fn, sde, SHAPE, sampler=name, steps=STEPS, **OPTIONS.get(name, {}))
    except Exception as err:  # a refusal is a fact to guard too
        return f"error: {type(err).__name__}"
    return sha256(jax.block_until_ready(x))


def variant_hash(label: str, cases: dict) -> str:
    name, options = VARIANTS[label]
    options = dict(options)
    sde = cases[options.pop("_sde", "vp")]
    steps = options.pop("steps", STEPS)
    out = js.sample(jax.random.key(0), ring_mixture().score_fn(sde), sde, SHAPE, sampler=name, steps=steps, **options)
    x, info = out if isinstance(out, tuple) else (out, {})
    return sha256(*jax.block_until_ready([x, *([info["trajectory"]] if "trajectory" in info else [])]))


def sde_method_hash(sde) -> str:
    t = jnp.linspace(sde.t_min, 1.0, 9)
    s = jnp.maximum(t - 0.1, 0.0)
    x = jnp.stack([jnp.linspace(-3.0, 3.0, 9), jnp.linspace(2.0, -1.0, 9)], axis=-1)
    score = -x / 2.0
    alpha, sigma = sde.marginal_coefs(t)
    lam = sde.log_snr(t)
    ratio = sde.sigma_ratio(t)
    a, v = sde.transition_coefs(s, t)
    f, g = sde.discretize(x, t, s)
    return sha256(
        alpha, sigma, lam, sde.t_from_log_snr(lam), ratio, sde.t_from_sigma_ratio(ratio),
        sde.drift(x, t), sde.diffusion(t), a, v, f, g, sde.prior_log_prob(x), sde.denoise(x, score, t),
    )


def loss_hash(cases) -> str:
    x0 = ring_mixture().sample(jax.random.key(1), 32)

    def apply(params, x, t):  # the exact score of the data's diffusion, scaled by a parameter
        return params * score_fn(x, t)

    values = []
    for name, sde in cases.items():
        score_fn = ring_mixture().score_fn(sde)
        for parameterization in ("score", "eps"):
            for weighting in ("sigma2", "likelihood", "uniform"):
                values.append(continuous_dsm_loss(apply, 1.0, jax.random.key(2), x0, sde,
                                                  parameterization=parameterization, weighting=weighting))
    return sha256(jnp.stack(values))


def likelihood_hash(sde) -> str:
    x = ring_mixture().sample(jax.random.key(3), 4)
    return sha256(js.log_likelihood(jax.random.key(4), ring_mixture().score_fn(sde), sde, x))


def compute() -> dict[str, str]:
    cases = sdes()
    hashes = {}
    for sde_name, sde in cases.items():
        score_fn = ring_mixture().score_fn(sde)
        for name in SAMPLERS:
            hashes[f"sample/{sde_name}/{name}"] = sampler_hash(name, sde, score_fn)
        hashes[f"sde_methods/{sde_name}"] = sde_method_hash(sde)
        hashes[f"log_likelihood/{sde_name}"] = likelihood_hash(sde)
    for label in VARIANTS:
        hashes[f"sample_options/vp/{label}"] = variant_hash(label, cases)
    hashes["continuous_dsm_loss"] = loss_hash(cases)
    return hashes


def is_intentional(key: str) -> bool:
    parts = key.split("/")
    return parts[0] in ("sample", "sample_options") and parts[-1] in INTENTIONALLY_CHANGING


def check(hashes: dict[str, str], saved: dict[str, str]) -> int:
    regressions, intentional = [], []
    for key in sorted(set(hashes) | set(saved)):
        if hashes.get(key) != saved.get(key):
            (intentional if is_intentional(key) else regressions).append(key)
    same = len(set(hashes) | set(saved)) - len(regressions) - len(intentional)
    print(f"{same} hashes match.")
    if intentional:
        print("changed on purpose (INTENTIONALLY_CHANGING, not a regression):", ", ".join(intentional))
    if regressions:
        print("MISMATCH:")
        for key in regressions:
            print(f"  {key}: saved {saved.get(key)} now {hashes.get(key)}")
        return 1
    print("OK: every other hash is bit-identical.")
    return 0


def source_state() -> dict:
    """The commit and the uncommitted files under jaxscore/ the hashes were recorded with."""
    def git(*args):
        try:
            # rstrip, not strip: porcelain lines start with a status column (" M path")
            return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.rstrip()
        except (OSError, subprocess.CalledProcessError):
            return None
    dirty = git("status", "--porcelain", "--", ":/jaxscore")
    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted": [line[3:] for line in dirty.splitlines()] if dirty else []}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the saved JSON; exit 1 on mismatch")
    args = parser.parse_args()
    hashes = compute()
    for key, value in hashes.items():
        print(f"{key:40s} {value}")
    if args.check:
        with open(RESULTS) as f:
            saved = json.load(f)["hashes"]
        return check(hashes, saved)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump({
            "note": NOTE,
            "intentionally_changing": sorted(INTENTIONALLY_CHANGING),
            "shape": list(SHAPE), "steps": STEPS, "options": OPTIONS,
            "source": source_state(),
            "jax": jax.__version__, "backend": jax.default_backend(), "platform": platform.platform(),
            "hashes": hashes,
        }, f, indent=1)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
