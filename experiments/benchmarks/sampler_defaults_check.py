"""The cells of issue 12: the deterministic solvers at DEFAULT options, 5 / 10 / (15) / 20 NFE, on the sampler
benchmark's nine mixtures (two tuned; four held out from the grid rule, then used to choose the final step; three
fresh ones made after that choice: ``samplers.CHECK``), 40,000 samples, VP, exact scores, with the exact-draw floor.

Leaner than ``samplers.py`` (no 200-step prior-floor solve: its figures, which do not depend on the defaults, are
carried over from the previous ``samplers.json``): runs ``dpmpp_2m`` and ``unipc`` at their defaults and writes
``results/samplers.json`` / ``samplers.png`` in ``samplers.py``'s format (configs ``dpmpp_2m``, ``unipc``).
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from samplers import (CHECK, HELD_OUT, RESULTS, SDES, TUNED, best_at, mixture_errors, mixtures,  # noqa: E402
                      plot, prior_floor, targets)

from jaxscore.metrics import exact_draw_floor  # noqa: E402
from jaxscore.samplers import nfe_for_steps, sample, steps_for_nfe  # noqa: E402

NFES = (5, 10, 15, 20)  # the targets are at 5 / 10 / 20; 15 shows the first budget with the extrapolated final step
ALL = TUNED + HELD_OUT + CHECK
CONFIGS = ("dpmpp_2m", "unipc")


def run(names, num: int = 40000) -> dict:
    """The accuracy rows of ``names`` (mixture names) in ``samplers.py``'s format."""
    key = jax.random.PRNGKey(0)
    sde = SDES["vp"]
    acc = {}
    t0 = time.perf_counter()
    for mname, mix in mixtures(names).items():
        exact = exact_draw_floor(jax.random.fold_in(key, 99), mix, num)
        acc[mname] = {"exact": exact, "held_out": mname not in TUNED, "check": mname in CHECK, "samplers": {}}
        print(f"[{mname}] exact-draw floor {exact['error']:.4f}", flush=True)
        sf = mix.score_fn(sde)
        for name in CONFIGS:
            rows = []
            for nfe in NFES:
                steps = steps_for_nfe(name, nfe)
                assert nfe_for_steps(name, steps) <= nfe
                x, info = jax.jit(lambda k: sample(k, sf, sde, (num, mix.dim), name, steps=steps, return_info=True))(key)
                err = mixture_errors(x, mix)
                rows.append({"nfe_budget": nfe, "steps": steps, "nfe": int(info["nfe"]), **err})
                print(f"[{mname}] {name:9s} nfe {nfe:2d}: error {err['error']:.4f} (std {err['std']:.4f} mean "
                      f"{err['mean_corrected']:.4f}) tv {err['tv']:.4f} [{time.perf_counter() - t0:.0f} s]", flush=True)
            acc[mname]["samplers"][name] = rows
    return acc


def _previous(out: str) -> dict:
    """The results file being replaced (its prior floors and speed section are carried over), or {}."""
    if not os.path.exists(out):
        return {}
    with open(out) as f:
        return json.load(f)


def merge(parts, out: str = os.path.join(RESULTS, "samplers.json")):
    """Merge per-mixture part files (written by ``--part``) into ``samplers.json`` / ``.png``."""
    acc = {}
    for path in parts:
        with open(path) as f:
            acc.update(json.load(f))
    write({m: acc[m] for m in ALL if m in acc}, _previous(out), out)


def write(acc, previous, out, wall_s: float | None = None):
    """Write ``acc`` (with each mixture's prior floor carried over from ``previous``) as ``out`` and its plot."""
    for mname in acc:
        floor = previous.get("accuracy", {}).get(mname, {}).get("prior_floor")
        if floor is None:  # a mixture new to the file: its own 200-step solve from the prior
            floor = prior_floor(mixtures([mname])[mname], SDES["vp"], acc[mname]["exact"]["num"], jax.random.PRNGKey(0))
        acc[mname]["prior_floor"] = floor
    num = next(iter(acc.values()))["exact"]["num"]
    result = {"settings": {"num_samples": num, "nfes": list(NFES), "sde": "VPSDE(beta 0.1-20, t_min 1e-3)",
                           "configs": {c: [c, {}] for c in CONFIGS},
                           "note": "default options only (sampler_defaults_check.py); prior_floor carried over "
                                   "(computed for mixtures new to the file)"},
              "accuracy": acc, "best_at_5": best_at(acc, 5), "best_at_10": best_at(acc, 10),
              "best_at_20": best_at(acc, 20)}
    result["targets"] = targets(acc)
    if "speed" in previous:
        result["speed"] = {**previous["speed"], "note": "carried over from the previous full run"}
    if wall_s is not None:
        result["wall_s"] = wall_s
    with open(out, "w") as f:
        json.dump(result, f, indent=1, default=float)
    plot(acc, os.path.splitext(out)[0] + ".png")
    print(f"wrote {out}")


def fit_from_defaults(names, nfes=(10, 20), num: int = 40000, iters: int = 60,
                      out: str = os.path.join(RESULTS, "fit_from_defaults.json"), objectives=("mse", "log_mse")):
    """``js.fit_grid`` started from each sampler's own default grid (and final step) at ``nfes``, once per
    ``objectives``: the fitted grid's error on ``num`` held-out samples against the default's, same start noise;
    calibration batch 1,024 (2-D) or 512 from another key, ``iters`` Adam steps. Writes ``out`` after each mixture
    (rows of other mixtures or NFEs are kept when they were fitted the same way: same objectives and reference)."""
    from jaxscore.samplers import fit_grid
    from jaxscore.samplers.fit_grid import REFERENCE_SAMPLER

    sde = SDES["vp"]
    key = jax.random.fold_in(jax.random.PRNGKey(0), 1)
    reference = f"{REFERENCE_SAMPLER} to the SDE's t_min + extrapolated step (the flow map to the data)"
    previous = _previous(out)
    same = previous.get("objectives") == list(objectives) and previous.get("reference") == reference
    rows = [r for r in previous.get("rows", []) if r["mixture"] not in names or r["nfe"] not in nfes] if same else []
    for mname, mix in mixtures(names).items():
        sf = mix.score_fn(sde)
        for nfe in nfes:
            for name in CONFIGS:
                steps = steps_for_nfe(name, nfe)
                run = jax.jit(lambda k, g: sample(k, sf, sde, (num, mix.dim), name, steps=steps, grid=g))
                row = {"mixture": mname, "nfe": nfe, "sampler": name, "steps": steps, "fits": {}}
                for objective in objectives:
                    t0 = time.perf_counter()
                    ts, info = fit_grid(jax.random.key(3), sf, sde, (1024 if mix.dim <= 2 else 512, mix.dim),
                                        sampler=name, steps=steps, iters=iters, objective=objective, return_info=True)
                    secs = time.perf_counter() - t0
                    row.setdefault("default", mixture_errors(run(key, info["init_grid"]), mix)["error"])
                    row["fits"][objective] = {"fitted": mixture_errors(run(key, ts), mix)["error"],
                                              "loss_init": info["loss_init"], "loss": info["loss"],
                                              "score_evals": info["score_evals"], "seconds": secs,
                                              "ts": np.asarray(ts).tolist()}
                rows.append(row)
                print(f"[{mname}] {name:9s} nfe {nfe}: default {row['default']:.4f} -> " + ", ".join(
                    f"{o} {f['fitted']:.4f}" for o, f in row["fits"].items()), flush=True)
        worse = {o: sum(r["fits"][o]["fitted"] > r["default"] for r in rows) for o in objectives}
        with open(out, "w") as f:  # after each mixture: a long run cut short keeps what it measured
            json.dump({"num": num, "iters": iters, "objectives": list(objectives), "reference": reference,
                       "worse_than_default": worse, "cases": len(rows), "rows": rows}, f, indent=1, default=float)
        print(f"wrote {out}: fits worse than the default grid, of {len(rows)}: {worse}", flush=True)


def main(num: int = 40000, out: str = os.path.join(RESULTS, "samplers.json")):
    t0 = time.perf_counter()
    acc = run(ALL, num)
    write(acc, _previous(out), out, wall_s=time.perf_counter() - t0)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", default=None, help="comma-separated mixtures: run them and write --out (a part file)")
    p.add_argument("--merge", default=None, help="comma-separated part files: merge into samplers.json")
    p.add_argument("--out", default=os.path.join(RESULTS, "samplers.json"))
    p.add_argument("--fit", default=None, help="comma-separated mixtures: fit_grid from the defaults at --fit-nfes "
                                               "(results/fit_from_defaults.json)")
    p.add_argument("--fit-nfes", default="10,20", help="comma-separated NFE budgets of --fit")
    a = p.parse_args()
    if a.fit:
        fit_from_defaults(a.fit.split(","), tuple(int(n) for n in a.fit_nfes.split(",")))
    elif a.part:
        with open(a.out, "w") as f:
            json.dump(run(a.part.split(",")), f, default=float)
    elif a.merge:
        merge(a.merge.split(","), a.out)
    else:
        main(out=a.out)
