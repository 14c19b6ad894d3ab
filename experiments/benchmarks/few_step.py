r"""Few-step generation benchmark (issue 12): fixed vs fitted time grids, sampler defaults, k-diffusion.

Error measure: :func:`jaxscore.metrics.mixture_sample_error` (``error = max(std error, mean error with its
Monte-Carlo part removed)``, per mode in true stds), on ``--num`` samples (default 40,000) from the exact
score of each Gaussian mixture under the VP SDE; the exact-draw floor
(:func:`jaxscore.metrics.exact_draw_floor`, same number of draws) is reported beside every figure.
Every run starts from the same standard-normal draw ``z`` (``x_init`` for ours; the same ``z`` for
k-diffusion).

Mixtures: the sampler benchmark's ``ring2d`` (``ring_mixture()``) and ``mix16d``
(``random_mixture(PRNGKey(0), 16, 8)``) and two nobody tuned on: ``mix8d_k3`` (8-D, 3 anisotropic modes,
stds 0.1-0.5, separation 3) and ``mix32d_iso`` (32-D, 4 isotropic modes).

(a) Error vs NFE (1, 2, 4, 5, 8, 10, 20): for ``dpmpp_2m`` and ``unipc``, the best of 12 fixed grids
(``logsnr``, ``edm``, ``logsnr_power`` x ``t_min`` in {1e-3, 5e-3} x start in {T, sigma_ratio = 20}, picked
on the evaluation batch itself: optimistic for the fixed grids), then the same sampler on a grid fitted by
:func:`jaxscore.samplers.fit_grid` (initialised at that best fixed grid, same endpoints; ``--fit-start`` also
frees the start in [t(sigma_ratio = 3), T]; calibration batch of fresh prior draws, evaluation on ``z``). Also the best
deterministic sampler at its *default options* (whatever ``js.sample(..., steps=steps_for_nfe)`` does).
Fitting cost (score evaluations, VJPs, seconds) is recorded per fit, and separately for a toy MLP
(``mlp_toy``, untrained) and the digits U-Net (``experiments/configs/digits.py``'s ``unet_tiny`` ch=16,
untrained): seconds on this machine's CPU are upper bounds (shared machine).

(b) k-diffusion 0.1.1 side by side: run in a separate torch environment (``--torch-python``, default
``/work/venv-torch/bin/python``; not a project dependency) as a worker of this script. The mixture's
parameters are exported to ``.npz`` and its denoiser :math:`D(\tilde x;\tilde\sigma) = E[x_0\mid \tilde x]`
written in torch float64 (VP in EDM's variables: :math:`\tilde x = x/\alpha_t`,
:math:`\tilde\sigma = \sigma_t/\alpha_t`, start :math:`\tilde x = z\sqrt{1 + \tilde\sigma_{max}^2}`, i.e. the
same ``z`` our VP samplers start from). Samplers ``euler``, ``heun``, ``dpmpp_2m``, ``dpmpp_2m_sde`` x schedules
``karras`` (rho 7), ``exponential``, ``polyexponential`` (rho 2; rho 1 is ``exponential``) x
sigma_max in {sigma_ratio(T) = 152, 20, 10}, sigma_min = sigma_ratio(1e-3) = 0.0105; its best at 10 and 20 NFE
(picked on the evaluation batch) vs ours. Goal: ours <= 0.5x its error at 10 NFE, not above at 20 NFE.
(k-diffusion's package ``__init__`` pulls in CLIP / wandb; the worker imports only ``k_diffusion.sampling``.)

Distilled students: ``students.py`` trains and measures them (same mixtures, sample count and start noise);
``--attach-students results/students.json`` copies its rows into this run's table and plot.

k-diffusion's side depends only on the mixture, ``--num`` and ``--seed`` (the start noise), not on our code:
``--kd-only`` runs it alone into a JSON that ``--kd-from`` reads back (refused unless num and seed match).
``--fit-nfes`` restricts the (costly) grid fits to some NFEs; the others are measured first.

Writes ``experiments/benchmarks/results/few_step.json`` and ``few_step.png``. ``--quick``: 4,000 samples,
NFE 5/10/20, two mixtures, fewer fit iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TORCH_PYTHON = "/work/venv-torch/bin/python"
OUR_SAMPLERS = ("dpmpp_2m", "unipc")
TUNED = ("ring2d", "mix16d")  # the sampler benchmark's mixtures (its defaults were tuned on them)
DEFAULT_SAMPLERS = ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "heun")
NFES = (1, 2, 4, 5, 8, 10, 20)
KD_SAMPLERS = ("euler", "heun", "dpmpp_2m", "dpmpp_2m_sde")
KD_SCHEDULES = ("karras", "exponential", "polyexponential")
KD_SIGMA_MAX = ("T", 20.0, 10.0)
KD_SIGMA_MIN = ("t_min",)  # sigma_ratio(1e-3) = 0.0105 (0.002 was never better at 10-20 NFE in a pilot)


# --- mixtures ------------------------------------------------------------------------------------

def mixtures(names=None) -> dict:
    import jax

    from jaxscore.data.toy import random_mixture, ring_mixture

    table = {
        "ring2d": lambda: ring_mixture(),
        "mix16d": lambda: random_mixture(jax.random.PRNGKey(0), 16, 8),
        "mix8d_k3": lambda: random_mixture(jax.random.PRNGKey(11), 8, 3, separation=3.0, std_range=(0.1, 0.5)),
        "mix32d_iso": lambda: random_mixture(jax.random.PRNGKey(12), 32, 4, anisotropic=False),
    }
    names = list(table) if names is None else names
    return {n: table[n]() for n in names}


def export_mixture(mix, path: str, z) -> None:
    """Mixture parameters (float64) and the start noise ``z`` for the k-diffusion worker."""
    np.savez(path, weights=np.asarray(mix.weights, np.float64), means=np.asarray(mix.means, np.float64),
             eigvals=np.asarray(mix.eigvals, np.float64), eigvecs=np.asarray(mix.eigvecs, np.float64),
             z=np.asarray(z, np.float64))


# --- ours ------------------------------------------------------------------------------------------

class Ours:
    """Our samplers on one mixture: compiled once per (sampler, steps, options), grid and start traced."""

    def __init__(self, mix, num: int, key):
        import jax

        from jaxscore.sde import VPSDE

        self.jax = jax
        self.mix, self.num = mix, num
        self.sde = VPSDE()
        self.score_fn = mix.score_fn(self.sde)
        self.z = jax.random.normal(key, (num, mix.dim))
        self._fns = {}

    def draw(self, sampler: str, steps: int, grid=None, **options):
        from jaxscore.samplers import sample

        jax = self.jax
        static = (sampler, steps, grid is None, tuple(sorted(options.items())))
        if static not in self._fns:
            sde, score_fn, shape = self.sde, self.score_fn, (self.num, self.mix.dim)
            if grid is None:
                fn = jax.jit(lambda z: sample(jax.random.key(0), score_fn, sde, shape, sampler, steps, x_init=z,
                                              **options))
            else:
                fn = jax.jit(lambda g, z: sample(jax.random.key(0), score_fn, sde, shape, sampler, steps, grid=g,
                                                 x_init=z, **options))
            self._fns[static] = fn
        fn = self._fns[static]
        x = fn(self.z) if grid is None else fn(grid, self.z)
        return np.asarray(x)

    def error(self, x) -> dict:
        from jaxscore.metrics import mixture_sample_error

        e = mixture_sample_error(x, self.mix)
        return {k: e[k] for k in ("error", "std", "mean_corrected", "tv")}


def candidate_grids(sde, steps: int) -> dict:
    from jaxscore.samplers import time_grid

    t20 = float(sde.t_from_sigma_ratio(np.float32(20.0)))
    out = {}
    for name in ("logsnr", "edm", "logsnr_power"):
        for t_min in (1e-3, 5e-3):
            for t_max, tag in ((1.0, "T"), (t20, "s20")):
                out[f"{name}/tmin={t_min:g}/start={tag}"] = np.asarray(time_grid(sde, steps, name, t_min=t_min,
                                                                                 t_max=t_max))
    return out


def run_fixed_and_fitted(ours: Ours, nfes, *, fit_batch: int, fit_iters: int, key, fit_start: bool = False,
                         objective: str | None = None, log=print, fit_nfes=None) -> dict:
    """Per NFE: the best fixed grid of each sampler, the best sampler's fitted grid (with cost; only at
    ``fit_nfes`` when given, else at every NFE: elsewhere the row's ``fitted`` is None). ``objective``: fit_grid's
    (``None``: its default)."""
    import jax

    from jaxscore.samplers import fit_grid, nfe_for_steps, steps_for_nfe

    sde = ours.sde
    t3 = float(sde.t_from_sigma_ratio(np.float32(3.0)))
    rows = []
    for nfe in nfes:
        best = None
        per_sampler = {}
        for s in OUR_SAMPLERS:
            steps = steps_for_nfe(s, nfe)
            if nfe_for_steps(s, steps) > nfe:
                continue
            results = {}
            for label, g in candidate_grids(sde, steps).items():
                results[label] = ours.error(ours.draw(s, steps, g))
            lab = min(results, key=lambda k: results[k]["error"])
            per_sampler[s] = {"grid": lab, **results[lab]}
            if best is None or results[lab]["error"] < best[2]["error"]:
                best = (s, lab, results[lab], steps)
        if best is None:
            continue
        s, lab, fixed_err, steps = best
        if fit_nfes is not None and nfe not in fit_nfes:
            rows.append({"nfe": nfe, "sampler": s, "steps": steps, "fixed": {"grid": lab, **fixed_err},
                         "fixed_per_sampler": per_sampler, "fitted": None})
            log(f"  NFE {nfe:2d} {s:9s} best fixed {fixed_err['error']:.4f} ({lab}); not fitted (--fit-nfes)")
            continue
        init = candidate_grids(sde, steps)[lab]
        fit_shape = (fit_batch, ours.mix.dim)
        t0, c0 = time.perf_counter(), time.process_time()
        ts, info = fit_grid(jax.random.fold_in(key, nfe), ours.score_fn, sde, fit_shape, sampler=s, steps=steps,
                            init=init, t_max_range=(t3, 1.0) if fit_start else None, iters=fit_iters,
                            **({} if objective is None else {"objective": objective}), return_info=True)
        ts = np.asarray(jax.block_until_ready(ts))
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        fitted_err = ours.error(ours.draw(s, steps, ts))
        row = {"nfe": nfe, "sampler": s, "steps": steps, "fixed": {"grid": lab, **fixed_err},
               "fixed_per_sampler": per_sampler,
               "fitted": {**fitted_err, "ts": ts.tolist(), "init_ts": init.tolist(),
                          "start_sigma_ratio": float(sde.sigma_ratio(np.float32(ts[0]))),
                          "loss_init": info["loss_init"], "loss": info["loss"],
                          "score_evals": info["score_evals"], "score_vjps": info["score_vjps"],
                          "calibration_batch": fit_batch, "iters": fit_iters, "reference_steps": info["reference_steps"],
                          "seconds": secs, "cpu_seconds": cpu}}
        rows.append(row)
        log(f"  NFE {nfe:2d} {s:9s} best fixed {fixed_err['error']:.4f} ({lab}) -> fitted {fitted_err['error']:.4f} "
            f"(start sigma~ {row['fitted']['start_sigma_ratio']:.3g}; fit {secs:.0f} s, "
            f"{info['score_evals']} evals + {info['score_vjps']} VJPs)")
    return rows


def run_defaults(ours: Ours, nfes, log=print) -> list:
    """The deterministic samplers at their default options (grid, t_min, ...), same start noise."""
    from jaxscore.samplers import nfe_for_steps, steps_for_nfe

    rows = []
    for nfe in nfes:
        errs = {}
        for s in DEFAULT_SAMPLERS:
            steps = steps_for_nfe(s, nfe)
            if nfe_for_steps(s, steps) > nfe:
                continue
            errs[s] = {"steps": steps, "nfe": nfe_for_steps(s, steps), **ours.error(ours.draw(s, steps))}
        if not errs:
            continue
        best = min(errs, key=lambda k: errs[k]["error"])
        rows.append({"nfe": nfe, "best": best, "error": errs[best]["error"], "samplers": errs})
        log(f"  NFE {nfe:2d} defaults: best {best} {errs[best]['error']:.4f}  "
            + " ".join(f"{k} {v['error']:.3f}" for k, v in errs.items()))
    return rows


# --- students (trained in students.py) -----------------------------------------------------------------

def attach_students(out: dict, path: str, log=print) -> None:
    """Copy the student rows of ``path`` (``students.py``'s JSON: same mixtures, sample count and start noise
    ``z``) into ``out["mixtures"][m]["students"]``, for the mixtures both hold."""
    with open(path) as fh:
        st = json.load(fh)
    if st.get("num") != out.get("num"):
        raise ValueError(f"{path}: students measured on {st.get('num')} samples, this run on {out.get('num')}.")
    for mname, res in out["mixtures"].items():
        if mname in st["mixtures"]:
            res["students"] = st["mixtures"][mname]["students"]
            res["students_meta"] = {"from": os.path.relpath(path), "settings": st["settings"],
                                    "train_seconds": st["mixtures"][mname].get("train_seconds")}
            log(f"  {mname}: {len(res['students'])} student rows from {path}")


# --- fitting cost with networks --------------------------------------------------------------------

def fit_cost(config_path: str, batch: int, steps: int, iters: int, sampler: str = "dpmpp_2m", log=print) -> dict:
    """Seconds and score evaluations of ``fit_grid`` for the (untrained) network of a config: the first call
    (compile + run) and a second, cached call (run only)."""
    import jax

    from jaxscore.config import load_config
    from jaxscore.experiment import build_model_from_config, build_sde, make_init_fn, model_score_fn
    from jaxscore.samplers import fit_grid

    config = load_config(config_path, [])
    model = build_model_from_config(config.model)
    sde = build_sde(config.sde)
    data_shape = (config.data.image_size, config.data.image_size, 1) if config.data.name == "digits" else (2,)
    params = make_init_fn(model, data_shape)(jax.random.key(0))
    score_fn = model_score_fn(config, model, params, sde)
    n_params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
    reference_steps = max(10 * steps, 100)
    out = {"config": os.path.relpath(config_path), "model": config.model.name, "params": n_params,
           "batch": batch, "steps": steps, "iters": iters, "sampler": sampler, "reference_steps": reference_steps}
    for what in ("first_call", "second_call"):
        t0, c0 = time.perf_counter(), time.process_time()
        ts, info = fit_grid(jax.random.key(1), score_fn, sde, (batch, *data_shape), sampler=sampler, steps=steps,
                            iters=iters, return_info=True)
        jax.block_until_ready(ts)
        out[what] = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    out.update(score_evals=info["score_evals"], score_vjps=info["score_vjps"], loss_init=info["loss_init"],
               loss=info["loss"])
    run_s = out["second_call"]["seconds"]
    out["seconds_per_score_eval"] = run_s / (info["score_evals"] + info["score_vjps"])
    log(f"  {config.model.name} ({n_params} params), batch {batch}, {steps} steps, {iters} iters: first call "
        f"{out['first_call']['seconds']:.1f} s (compile + run), second {run_s:.1f} s; {info['score_evals']} evals + "
        f"{info['score_vjps']} VJPs; loss {info['loss_init']:.4g} -> {info['loss']:.4g}")
    return out


# --- k-diffusion (worker runs in the torch environment) --------------------------------------------

def kd_worker(npz_path: str, out_path: str, nfes, sigma_T: float, sigma_tmin: float, samplers=KD_SAMPLERS) -> None:
    """Run k-diffusion's samplers on the exported mixture (torch float64); write errors as JSON."""
    import importlib.util
    import types

    import torch

    spec = importlib.util.find_spec("k_diffusion")
    pkg = types.ModuleType("k_diffusion")  # skip the package __init__ (CLIP, wandb, ...): sampling + utils only
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    import k_diffusion.sampling as ks

    from jaxscore.data.toy import GaussianMixture
    from jaxscore.metrics import mixture_sample_error

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    f = np.load(npz_path)
    w, mu, lam, U = (torch.from_numpy(f[k]) for k in ("weights", "means", "eigvals", "eigvecs"))
    z = torch.from_numpy(f["z"])
    mix = GaussianMixture(*(np.asarray(f[k], np.float32) for k in ("weights", "means", "eigvals", "eigvecs")))
    version = getattr(ks, "__version__", None)
    try:
        from importlib.metadata import version as _v

        version = _v("k-diffusion")
    except Exception:  # noqa: BLE001
        pass

    def denoiser(x, sigma):
        r"""E[x0 | x~ = x0 + sigma eps] for the mixture: posterior-weighted mu_k + Sigma_k (Sigma_k + s^2)^-1 (x~ - mu_k)."""
        s2 = (sigma**2)[:, None, None]  # [B, 1, 1]
        diff = x[:, None, :] - mu[None]  # [B, K, d]
        y = torch.einsum("kji,bkj->bki", U, diff)  # eigen-coordinates
        var = lam[None] + s2  # [B, K, d]
        logp = -0.5 * (torch.log(var).sum(-1) + (y**2 / var).sum(-1)) + torch.log(w)[None]
        r = torch.softmax(logp, dim=-1)  # [B, K]
        post = mu[None] + torch.einsum("kij,bkj->bki", U, lam[None] / var * y)
        return torch.einsum("bk,bki->bi", r, post)

    schedules = {
        "karras": lambda n, lo, hi: ks.get_sigmas_karras(n, lo, hi, rho=7.0),
        "exponential": lambda n, lo, hi: ks.get_sigmas_exponential(n, lo, hi),
        "polyexponential": lambda n, lo, hi: ks.get_sigmas_polyexponential(n, lo, hi, rho=2.0),
    }
    fns = {"euler": ks.sample_euler, "heun": ks.sample_heun, "dpmpp_2m": ks.sample_dpmpp_2m,
           "dpmpp_2m_sde": ks.sample_dpmpp_2m_sde}
    rows = []
    for nfe in nfes:
        for name in samplers:
            n = (nfe + 1) // 2 if name == "heun" else nfe  # heun: 2 per step, the last (to sigma = 0) Euler
            used = 2 * n - 1 if name == "heun" else n
            for sched in KD_SCHEDULES:
                for smax in KD_SIGMA_MAX:
                    hi = sigma_T if smax == "T" else float(smax)
                    for smin in KD_SIGMA_MIN:
                        lo = sigma_tmin if smin == "t_min" else float(smin)
                        sigmas = schedules[sched](n, lo, hi).to(torch.float64)
                        x = z * (1.0 + hi**2) ** 0.5
                        torch.manual_seed(0)
                        with torch.no_grad():
                            out = fns[name](denoiser, x, sigmas, disable=True)
                        e = mixture_sample_error(out.numpy(), mix)
                        rows.append({"nfe_budget": nfe, "nfe": used, "sampler": name, "schedule": sched,
                                     "sigma_max": hi, "sigma_min": lo,
                                     **{k: e[k] for k in ("error", "std", "mean_corrected", "tv")}})
    with open(out_path, "w") as fh:
        json.dump({"k_diffusion_version": version, "rows": rows}, fh)


def run_kdiffusion(mix, ours: Ours, nfes, torch_python: str, log=print, samplers=KD_SAMPLERS) -> dict | None:
    """Launch :func:`kd_worker` in the torch environment; best config per NFE budget."""
    sde = ours.sde
    sigma_T = float(sde.sigma_ratio(np.float32(sde.T)))
    sigma_tmin = float(sde.sigma_ratio(np.float32(1e-3)))
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = os.path.join(tmp, "mix.npz"), os.path.join(tmp, "kd.json")
        export_mixture(mix, npz, ours.z)
        cmd = [torch_python, os.path.abspath(__file__), "--kd-worker", npz, out, "--nfes", ",".join(map(str, nfes)),
               "--kd-sigmas", f"{sigma_T},{sigma_tmin}", "--kd-samplers", ",".join(samplers)]
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            log(f"  k-diffusion worker failed ({torch_python}):\n{proc.stderr[-2000:]}")
            return {"failed": proc.stderr[-2000:]}
        with open(out) as fh:
            data = json.load(fh)
    best = {}
    for nfe in nfes:
        rows = [r for r in data["rows"] if r["nfe_budget"] == nfe]
        b = min(rows, key=lambda r: r["error"])
        per_sampler = {s: min((r for r in rows if r["sampler"] == s), key=lambda r: r["error"]) for s in samplers}
        best[str(nfe)] = {"best": b, "best_per_sampler": per_sampler}
        log(f"  k-diffusion NFE {nfe}: best {b['sampler']} {b['schedule']} sigma_max {b['sigma_max']:.3g} "
            f"sigma_min {b['sigma_min']:.3g}: {b['error']:.4f}  ("
            + ", ".join(f"{s} {r['error']:.3f}" for s, r in per_sampler.items()) + ")")
    return {"version": data["k_diffusion_version"], "samplers": list(samplers), "best": best, "rows": data["rows"]}


def run_kd_only(args, log=print) -> dict:
    """k-diffusion's rows alone (``--kd-only``): per mixture, the same start noise ``z`` as :func:`run` draws
    (``seed``, ``num``), at ``args.nfes``; written to ``args.out`` for a later ``--kd-from``."""
    import jax

    key = jax.random.key(args.seed)
    out = {"num": args.num, "seed": args.seed, "nfes": args.nfes, "mixtures": {}}
    for mname, mix in mixtures(args.mixtures).items():
        log(f"[{mname}] k-diffusion, {args.num} samples, NFE {args.nfes}")
        t0 = time.perf_counter()
        ours = Ours(mix, args.num, jax.random.fold_in(key, 1))
        kd = run_kdiffusion(mix, ours, args.nfes, args.torch_python, log=log, samplers=args.kd_samplers.split(","))
        out["mixtures"][mname] = {"k_diffusion": kd,
                                  "seconds": time.perf_counter() - t0}
        save(out, args.out)
    return out


def load_kdiffusion(path: str, mname: str, args, nfes, log=print) -> dict:
    """k-diffusion's rows for ``mname`` from a ``--kd-only`` JSON; refused unless its ``num`` and ``seed`` (hence
    the start noise) are this run's and it holds every NFE asked for."""
    with open(path) as fh:
        data = json.load(fh)
    if (data["num"], data["seed"]) != (args.num, args.seed):
        raise ValueError(f"--kd-from {path}: expected num={args.num}, seed={args.seed} (the same start noise), got "
                         f"num={data['num']}, seed={data['seed']}.")
    kd = data["mixtures"][mname]["k_diffusion"]
    missing = [n for n in nfes if str(n) not in kd["best"]]
    if missing:
        raise ValueError(f"--kd-from {path}: no k-diffusion rows for {mname} at NFE {missing}.")
    for n in nfes:
        b = kd["best"][str(n)]["best"]
        log(f"  k-diffusion NFE {n} (from {os.path.basename(path)}): best {b['sampler']} {b['schedule']} sigma_max "
            f"{b['sigma_max']:.3g}: {b['error']:.4f}")
    return {**kd, "from": os.path.relpath(path)}


# --- the run -----------------------------------------------------------------------------------------

def run(args, log=print) -> dict:
    import jax

    from jaxscore.metrics import exact_draw_floor
    from jaxscore.samplers.fit_grid import DEFAULT_OBJECTIVE

    key = jax.random.key(args.seed)
    out = {"num": args.num, "seed": args.seed, "nfes": args.nfes, "fit_iters": args.fit_iters, "fit_start": args.fit_start,
           "objective": args.objective or DEFAULT_OBJECTIVE,
           "mixtures": {}}
    for mname, mix in mixtures(args.mixtures).items():
        nfes = args.nfes if mname in TUNED else [n for n in args.nfes if n >= 5]
        log(f"[{mname}] d = {mix.dim}, K = {mix.num_components}, NFE {nfes}")
        t_start = time.perf_counter()
        ours = Ours(mix, args.num, jax.random.fold_in(key, 1))
        floor = exact_draw_floor(jax.random.fold_in(key, 2), mix, args.num)
        log(f"  exact-draw floor ({args.num} draws): error {floor['error']:.4f} (std {floor['std']:.4f}, "
            f"mean {floor['mean_corrected']:.4f}, tv {floor['tv']:.4f})")
        res = {"dim": mix.dim, "modes": mix.num_components, "floor": {k: floor[k] for k in ("error", "std",
                                                                                         "mean_corrected", "tv")}}
        fit_batch = args.fit_batch or (1024 if mix.dim <= 2 else 512)
        out["mixtures"][mname] = res
        # 10 and 20 NFE first (with k-diffusion), then the rest; saved after each step (long runs on shared CPUs)
        first = [n for n in (10, 20) if n in nfes]
        rest = [n for n in (5, 4, 8, 2, 1) if n in nfes] + [n for n in nfes if n not in (10, 20, 5, 4, 8, 2, 1)]
        if args.fit_nfes is not None:  # the NFEs without a fit first (cheap): a run cut short keeps them
            rest.sort(key=lambda n: n in args.fit_nfes)
        res["grids"], res["defaults"] = [], []
        for part in [first] + [[n] for n in rest]:
            res["grids"] += run_fixed_and_fitted(ours, part, fit_batch=fit_batch, fit_iters=args.fit_iters,
                                                 key=jax.random.fold_in(key, 3), fit_start=args.fit_start,
                                                 objective=args.objective, log=log,
                                                 fit_nfes=[] if args.fits_last else args.fit_nfes)
            res["defaults"] += run_defaults(ours, [n for n in part if n >= 5], log=log)
            res["grids"].sort(key=lambda r: r["nfe"])
            res["defaults"].sort(key=lambda r: r["nfe"])
            if part is first and not args.no_kdiff:
                if args.kd_from:  # k-diffusion's rows of an earlier --kd-only run: same mixture, num, seed, z
                    res["k_diffusion"] = load_kdiffusion(args.kd_from, mname, args, first, log=log)
                else:
                    res["k_diffusion"] = run_kdiffusion(mix, ours, first, args.torch_python, log=log)
                res["versus_k_diffusion"] = compare(res, first)
                for row in res["versus_k_diffusion"]:
                    log(f"  vs k-diffusion NFE {row['nfe']}: ours fitted {row['ours_fitted']:.4f}, ours best fixed "
                        f"{row['ours_fixed']:.4f}, ours defaults {row['ours_defaults']:.4f}, k-diffusion best "
                        f"{row['k_diffusion']:.4f}: ratio (fitted) {row['ratio_fitted']:.2f}")
            res["seconds"] = time.perf_counter() - t_start
            save(out, args.out)
        for n in (args.fit_nfes or []) if args.fits_last else []:  # --fits-last: the costly fits after every cheap row
            if n not in nfes:
                continue
            row = run_fixed_and_fitted(ours, [n], fit_batch=fit_batch, fit_iters=args.fit_iters,
                                       key=jax.random.fold_in(key, 3), fit_start=args.fit_start,
                                       objective=args.objective, log=log, fit_nfes=[n])
            res["grids"] = sorted([r for r in res["grids"] if r["nfe"] != n] + row, key=lambda r: r["nfe"])
            if res.get("k_diffusion"):
                res["versus_k_diffusion"] = compare(res, first)
            res["seconds"] = time.perf_counter() - t_start
            save(out, args.out)
        res["seconds"] = time.perf_counter() - t_start
        save(out, args.out)
    if not args.no_cost:
        log("[fitting cost with networks, untrained]")
        out["cost"] = {
            "mlp_toy": fit_cost(os.path.join(CONFIGS, "toy2d.py"), batch=256, steps=10, iters=args.cost_iters, log=log),
            "digits_unet": fit_cost(os.path.join(CONFIGS, "digits.py"), batch=args.unet_batch, steps=10,
                                    iters=max(2, args.cost_iters // 10), log=log),
        }
    save(out, args.out)
    if out["mixtures"]:
        plot(out, os.path.splitext(args.out)[0] + ".png")
    return out


CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def refresh_defaults(path: str, log=print) -> dict:
    """Recompute the ``defaults`` rows of the finished run in ``path`` with the current library (same mixtures,
    sample count, seed and start noise as :func:`run`), redo the k-diffusion comparison, save and re-plot. The
    grid, fitted-grid, student and k-diffusion rows are kept as they were."""
    import jax

    with open(path) as fh:
        out = json.load(fh)
    key = jax.random.key(out.get("seed", 0))
    for mname, mix in mixtures(list(out["mixtures"])).items():
        res = out["mixtures"][mname]
        ours = Ours(mix, out["num"], jax.random.fold_in(key, 1))
        log(f"[{mname}] defaults")
        res["defaults"] = run_defaults(ours, [r["nfe"] for r in res.get("defaults", [])], log=log)
        if (res.get("k_diffusion") or {}).get("best"):
            res["versus_k_diffusion"] = compare(res, [n for n in (10, 20) if n in out["nfes"]])
            for row in res["versus_k_diffusion"]:
                log(f"  vs k-diffusion NFE {row['nfe']}: defaults {row['ours_defaults']:.4f} "
                    f"(ratio {row['ratio_defaults']:.2f}), k-diffusion {row['k_diffusion']:.4f}")
    out["defaults_refreshed"] = ("defaults rows and versus_k_diffusion recomputed by --refresh-defaults after the "
                                 "final-step default (grids.default_range); other rows from the earlier run")
    save(out, path)
    plot(out, os.path.splitext(path)[0] + ".png")
    return out


def compare(res: dict, nfes) -> list:
    rows = []
    grids = {r["nfe"]: r for r in res["grids"]}
    defaults = {r["nfe"]: r for r in res["defaults"]}
    kd = res.get("k_diffusion") or {}
    for nfe in nfes:
        if "best" not in kd or str(nfe) not in kd["best"] or nfe not in grids:
            continue
        k = kd["best"][str(nfe)]["best"]["error"]
        fixed = grids[nfe]["fixed"]["error"]
        fitted = grids[nfe]["fitted"]["error"] if grids[nfe]["fitted"] else float("nan")
        d = defaults[nfe]["error"] if nfe in defaults else float("nan")
        rows.append({"nfe": nfe, "ours_fitted": fitted, "ours_fixed": fixed, "ours_defaults": d, "k_diffusion": k,
                     "ratio_fitted": fitted / k, "ratio_fixed": fixed / k, "ratio_defaults": d / k,
                     "goal": "<= 0.5" if nfe == 10 else "<= 1.0"})
    return rows


def save(out: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)


def plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(out["mixtures"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        res = out["mixtures"][name]
        g = res["grids"]
        ax.plot([r["nfe"] for r in g], [r["fixed"]["error"] for r in g], "o-", label="best fixed grid")
        gf = [r for r in g if r["fitted"]]
        ax.plot([r["nfe"] for r in gf], [r["fitted"]["error"] for r in gf], "s-", label="fitted grid")
        d = res.get("defaults", [])
        ax.plot([r["nfe"] for r in d], [r["error"] for r in d], "^--", label="defaults (best sampler)")
        kd = (res.get("k_diffusion") or {}).get("best", {})
        if kd:
            ax.plot([int(n) for n in kd], [v["best"]["error"] for v in kd.values()], "kx", ms=9,
                    label="k-diffusion best")
        for label, rows in res.get("students", {}).items():
            ax.plot([r["nfe"] for r in rows], [r["error"] for r in rows], "d-", label=label)
        ax.axhline(res["floor"]["error"], color="gray", ls=":", label="exact-draw floor")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(f"{name} (d={res['dim']}, K={res['modes']})")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("error = max(std, corrected mean error)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--num", type=int, default=40000)
    p.add_argument("--nfes", default=",".join(map(str, NFES)))
    p.add_argument("--mixtures", default="ring2d,mix16d,mix8d_k3,mix32d_iso")
    p.add_argument("--fit-iters", type=int, default=60)
    p.add_argument("--objective", default=None, help="fit_grid's objective, mse or log_mse (default: fit_grid's)")
    p.add_argument("--fit-start", action="store_true", help="also fit the start time in [t(sigma_ratio=3), T]")
    p.add_argument("--fit-batch", type=int, default=None, help="default 1024 (d <= 2) or 512")
    p.add_argument("--cost-iters", type=int, default=50)
    p.add_argument("--unet-batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-kdiff", action="store_true")
    p.add_argument("--no-cost", action="store_true")
    p.add_argument("--torch-python", default=TORCH_PYTHON)
    p.add_argument("--out", default=os.path.join(RESULTS, "few_step.json"))
    p.add_argument("--merge", nargs="+", default=None, help="merge result JSONs (of mixture subsets) into --out")
    p.add_argument("--attach-students", default=None, metavar="JSON",
                   help="copy the student rows of students.py's JSON into the finished --out and re-plot")
    p.add_argument("--kd-samplers", default=",".join(KD_SAMPLERS), help="k-diffusion samplers to try")
    p.add_argument("--kd-only", action="store_true", help="run only k-diffusion's side (for a later --kd-from)")
    p.add_argument("--kd-from", default=None, help="k-diffusion's rows from a --kd-only JSON (same num and seed)")
    p.add_argument("--attach-kd", nargs="+", default=None, help="attach --kd-only JSONs to the finished --out")
    p.add_argument("--fits-last", action="store_true", help="every row without a fit first, then the --fit-nfes fits")
    p.add_argument("--fit-nfes", default=None, help="fit grids only at these NFEs (comma list; default all)")
    p.add_argument("--kd-worker", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--kd-sigmas", default=None, help=argparse.SUPPRESS)
    p.add_argument("--refresh-defaults", action="store_true",
                   help="recompute only the defaults rows of --out (same mixtures, samples, seed and start noise) "
                        "and the k-diffusion comparison, after a change of the samplers' defaults")
    args = p.parse_args(argv)
    args.nfes = [int(n) for n in args.nfes.split(",")]
    if args.kd_worker:
        sigma_T, sigma_tmin = (float(v) for v in args.kd_sigmas.split(","))
        kd_worker(*args.kd_worker, args.nfes, sigma_T, sigma_tmin, samplers=args.kd_samplers.split(","))
        return
    if args.attach_students:
        with open(args.out) as fh:
            out = json.load(fh)
        attach_students(out, args.attach_students)
        save(out, args.out)
        plot(out, os.path.splitext(args.out)[0] + ".png")
        return
    if args.refresh_defaults:  # the "defaults" rows of a finished --out recomputed with the library as it is now
        refresh_defaults(args.out)
        return
    if args.attach_kd:  # k-diffusion's rows (--kd-only JSONs) attached to a finished run's --out, compared, re-plotted
        with open(args.out) as fh:
            out = json.load(fh)
        for path in args.attach_kd:
            with open(path) as fh:
                kd_mixtures = json.load(fh)["mixtures"]
            for mname, res in out["mixtures"].items():
                if mname in kd_mixtures and (kd_mixtures[mname].get("k_diffusion") or {}).get("best"):
                    nfes = [n for n in (10, 20) if n in out["nfes"]]
                    args.num, args.seed = out["num"], out.get("seed", args.seed)
                    res["k_diffusion"] = load_kdiffusion(path, mname, args, nfes)
                    res["versus_k_diffusion"] = compare(res, nfes)
                    for row in res["versus_k_diffusion"]:
                        print(f"  {mname} vs k-diffusion NFE {row['nfe']}: ours fitted {row['ours_fitted']:.4f}, fixed "
                              f"{row['ours_fixed']:.4f}, defaults {row['ours_defaults']:.4f}, k-diffusion "
                              f"{row['k_diffusion']:.4f}")
        save(out, args.out)
        plot(out, os.path.splitext(args.out)[0] + ".png")
        return
    if args.merge:
        merged = {"mixtures": {}}
        for path in args.merge:
            with open(path) as fh:
                part = json.load(fh)
            merged["mixtures"].update(part.pop("mixtures"))
            merged.update(part)
        save(merged, args.out)
        plot(merged, os.path.splitext(args.out)[0] + ".png")
        return
    args.mixtures = [] if args.mixtures == "none" else args.mixtures.split(",")
    if args.fit_nfes is not None:
        args.fit_nfes = [int(n) for n in args.fit_nfes.split(",")]
    if args.kd_only:
        run_kd_only(args)
        return
    if args.quick:
        args.num, args.nfes, args.fit_iters, args.cost_iters = 4000, [5, 10, 20], 60, 10
        args.mixtures = args.mixtures[:2]
        if args.out == os.path.join(RESULTS, "few_step.json"):
            args.out = os.path.join(RESULTS, "few_step_quick.json")
    run(args)

if __name__ == "__main__":
    main()
