r"""Few-step students of exact mixture scores (issue 12, trained side): progressive distillation, consistency
distillation and consistency training, against the training-free defaults at the same NFE.

    python experiments/benchmarks/students.py                      # ring2d, mix16d + the held-out mixtures
    python experiments/benchmarks/students.py --mixtures ring2d --fresh   # also fresh (not teacher-initialised)
    python experiments/benchmarks/students.py --hidden 128,128,128 --methods progressive \
        --out /tmp/students_pd_3x128.json                                   # a narrower student, PD only

Teacher: the exact VP score of each mixture of ``samplers.py`` (``ring2d``, ``mix16d`` and mixtures nobody tuned
on). Student network: ``mlp_toy`` with ``--hidden`` widths (default 4x256). Students, each measured at NFE 1, 2, 4, 8 on ``--num`` samples
(default 40,000) from one standard-normal draw ``z`` (the same for every row), error =
:func:`jaxscore.metrics.mixture_sample_error`'s ``error`` with the exact-draw floor of the same size beside it:

* ``progressive``: Salimans & Ho, v-prediction, the teacher's DDIM on ``--pd-base-steps`` uniform-time steps
  (default 256) halved stage by stage down to 1 (``--pd-iters`` Adam steps per stage, each stage starting from
  the previous one), sampled with DDIM on the stage's grid;
* ``consistency distillation``: Heun steps of the exact teacher, iCT curriculum 10 -> 320 levels, ``--cm-iters``;
* ``consistency training``: no teacher, same recipe at its own ``--ct-lr`` (default 3e-4).

Distilled students are **teacher-initialised** (:mod:`jaxscore.distill.residual`: teacher output + a zero-gain
correction), the analogue of both papers' copying of the teacher's weights when the teacher is an exact score;
``--fresh`` adds freshly initialised ones, trained as long, for the comparison. Beside them: the best of the
training-free samplers ``dpmpp_2m`` / ``unipc`` at default options at the same NFE (``steps_for_nfe``).

Writes ``experiments/benchmarks/results/students.json`` and ``students.png`` (rows of earlier runs with the same
settings are kept, so mixtures can be run in parts). Seconds are upper bounds (shared 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from samplers import CHECK, HELD_OUT, RESULTS, mixture_errors, mixtures  # noqa: E402

from jaxscore.distill import (consistency_loss, consistency_score_fn, halving_grids, ict_levels,  # noqa: E402
                              progressive_distillation_loss, residual_apply, residual_consistency_apply,
                              residual_params)
from jaxscore.metrics import exact_draw_floor  # noqa: E402
from jaxscore.models import build_model  # noqa: E402
from jaxscore.parameterization import make_score_fn  # noqa: E402
from jaxscore.samplers import sample, steps_for_nfe  # noqa: E402
from jaxscore.sde import VPSDE  # noqa: E402

NFES = (1, 2, 4, 8)
METHODS = ("progressive", "consistency_distillation", "consistency_training")
MIXTURES = ["ring2d", "mix16d"] + HELD_OUT + CHECK
TRAINING_FREE = ("dpmpp_2m", "unipc")
# ct_lr: consistency training (3x128) on the ring at 8,000 steps gave 0.94 / 0.33 / 0.59 at 4 NFE with lr 1e-3 / 3e-4 / 1e-4
SETTINGS = {"pd_base_steps": 256, "pd_iters": 4000, "pd_lr": 1e-3, "cm_iters": 8000, "cm_lr": 1e-3, "ct_lr": 3e-4,
            "batch": 256, "cm_levels": [10, 320], "hidden": [256, 256, 256, 256], "methods": list(METHODS)}


def adam_scan(loss, params, iters: int, lr: float, seed: int):
    """``iters`` Adam steps (cosine decay from ``lr``) of ``loss(params, key, i)`` in one compiled scan.
    Returns ``(params, losses [iters])``."""
    tx = optax.adam(optax.cosine_decay_schedule(lr, iters))

    @jax.jit
    def run(p):
        def body(carry, i):
            p, o = carry
            value, g = jax.value_and_grad(loss)(p, jax.random.fold_in(jax.random.key(seed), i), i)
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o), value

        (p, _), values = jax.lax.scan(body, (p, tx.init(p)), jnp.arange(iters))
        return p, values

    return run(params)


def _nets(d: int, hidden):
    hidden = tuple(hidden)
    pd_model = build_model("mlp_toy", hidden_dims=hidden)
    cm_model = build_model("mlp_toy", hidden_dims=hidden, fourier_scale=1.0)
    pd_apply = lambda p, x, t: pd_model.apply({"params": p}, x, t)  # noqa: E731
    cm_apply = lambda p, x, t: cm_model.apply({"params": p}, x, t)  # noqa: E731
    pd_init = pd_model.init(jax.random.key(1), jnp.zeros((1, d)), jnp.ones((1,)))["params"]
    cm_init = cm_model.init(jax.random.key(3), jnp.zeros((1, d)), jnp.ones((1,)))["params"]
    return pd_apply, pd_init, cm_apply, cm_init


def student_fns(mix, settings: dict, fresh: bool, log=print):
    """Train the students of ``mix`` (``settings`` as :data:`SETTINGS`); returns ``({label: score_fn_of_nfe},
    {label: seconds}, params)`` where ``score_fn_of_nfe(nfe) -> (score_fn, sampler, grid or None)`` or None."""
    sde, d = VPSDE(), mix.dim
    exact = mix.score_fn(sde)
    pd_apply, pd_init, cm_apply, cm_init = _nets(d, settings["hidden"])
    grids = [np.asarray(g) for g in halving_grids(sde, settings["pd_base_steps"])]
    b = settings["batch"]
    variants = [("teacher-initialised", True)] + ([("fresh", False)] if fresh else [])
    fns, secs = {}, {}
    for tag, residual in variants if "progressive" in settings["methods"] else []:
        apply = residual_apply(pd_apply, exact, sde, "v") if residual else pd_apply
        params, teacher, stages = (residual_params(pd_init) if residual else pd_init), exact, {}
        t0 = time.perf_counter()
        for k in range(1, len(grids)):
            def loss(p, key, i, teacher=teacher, grid=jnp.asarray(grids[k - 1])):
                kd, kl = jax.random.split(key)
                return progressive_distillation_loss(apply, p, kl, mix.sample(kd, b), sde, teacher, grid,
                                                     parameterization="v")

            params, _ = adam_scan(loss, params, settings["pd_iters"], settings["pd_lr"], k)
            teacher = make_score_fn(apply, params, sde, "v")
            stages[len(grids[k]) - 1] = (teacher, "ddim", jnp.asarray(grids[k]))
        label = f"progressive, {tag}"
        secs[label] = time.perf_counter() - t0
        fns[label] = stages.get
        log(f"  {label}: {len(grids) - 1} stages in {secs[label]:.0f} s")
    levels = jnp.asarray([ict_levels(i, settings["cm_iters"], *settings["cm_levels"])
                          for i in range(settings["cm_iters"])], jnp.int32)
    max_levels = settings["cm_levels"][1] + 1
    cm_variants = [("consistency distillation, " + tag, exact, residual, settings["cm_lr"]) for tag, residual in variants
                   if "consistency_distillation" in settings["methods"]]
    ct = ([("consistency training", None, False, settings["ct_lr"])] if "consistency_training" in settings["methods"]
          else [])
    for label, teacher_fn, residual, lr in cm_variants + ct:
        apply = residual_consistency_apply(cm_apply, exact, sde) if residual else cm_apply

        def loss(p, key, i, teacher_fn=teacher_fn, apply=apply):
            kd, kl = jax.random.split(key)
            return consistency_loss(apply, p, kl, mix.sample(kd, b), sde, levels[i], teacher_score_fn=teacher_fn,
                                    max_levels=max_levels)

        t0 = time.perf_counter()
        params, _ = adam_scan(loss, residual_params(cm_init) if residual else cm_init, settings["cm_iters"], lr, 11)
        jax.block_until_ready(params)
        secs[label] = time.perf_counter() - t0
        score = consistency_score_fn(apply, params, sde)
        fns[label] = lambda nfe, score=score: (score, "consistency", None)
        log(f"  {label}: {settings['cm_iters']} steps in {secs[label]:.0f} s")
    return fns, secs


def _draw(score_fn, sde, z, sampler: str, steps: int, grid=None):
    kw = {} if grid is None else {"grid": grid}
    return np.asarray(jax.jit(lambda z: sample(jax.random.key(0), score_fn, sde, z.shape, sampler, steps=steps,
                                               x_init=z, **kw))(z))


def run_mixture(mname: str, mix, num: int, settings: dict, fresh: bool, log=print) -> dict:
    sde = VPSDE()
    key = jax.random.key(0)
    z = jax.random.normal(jax.random.fold_in(key, 1), (num, mix.dim))
    floor = exact_draw_floor(jax.random.fold_in(key, 2), mix, num)
    log(f"[{mname}] d = {mix.dim}, K = {mix.num_components}: exact-draw floor {floor['error']:.4f}")
    out = {"dim": mix.dim, "modes": mix.num_components, "floor": floor["error"], "students": {}, "training_free": {}}
    exact = mix.score_fn(sde)
    for nfe in NFES + (5,):
        best = None
        for name in TRAINING_FREE:
            steps = steps_for_nfe(name, nfe)
            e = mixture_errors(_draw(exact, sde, z, name, steps), mix)
            if best is None or e["error"] < best["error"]:
                best = {"sampler": name, "steps": steps, **e}
        out["training_free"][str(nfe)] = best
        log(f"  training-free best at {nfe} NFE: {best['sampler']} {best['error']:.4f}")
    fns, secs = student_fns(mix, settings, fresh, log)
    out["train_seconds"] = secs
    for label, fn in fns.items():
        rows = []
        for nfe in NFES:
            got = fn(nfe)
            if got is None:
                continue
            score, sampler, grid = got
            e = mixture_errors(_draw(score, sde, z, sampler, nfe, grid), mix)
            rows.append({"nfe": nfe, **e})
            log(f"  {label} NFE {nfe}: {e['error']:.4f} (std {e['std']:.4f} mean {e['mean_corrected']:.4f})")
        out["students"][label] = rows
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import matplotlib.ticker

    names = list(result["mixtures"])
    labels = sorted({label for res in result["mixtures"].values() for label in res["students"]})
    colors = {label: f"C{i}" for i, label in enumerate(labels)}
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        res = result["mixtures"][name]
        tf = sorted((int(n), r["error"]) for n, r in res["training_free"].items())
        ax.plot(*zip(*tf), "k^--", label="training-free default (best)")
        for label, rs in res["students"].items():
            ax.plot([r["nfe"] for r in rs], [r["error"] for r in rs], marker="o", ms=4, color=colors[label], label=label,
                    ls="--" if "fresh" in label else "-")
        ax.axhline(res["floor"], color="gray", ls=":", label="exact-draw floor")
        ax.axhline(0.10, color="r", ls=":", lw=0.8)
        ax.set(xscale="log", yscale="log", title=f"{name} (d={res['dim']}, K={res['modes']})")
        ax.set_xticks([1, 2, 4, 5, 8], ["1", "2", "4", "5", "8"])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("error (mode stds)")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines()}
    fig.legend([handles[k] for k in handles if not k.startswith("_")], [k for k in handles if not k.startswith("_")],
               loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mixtures", default=",".join(MIXTURES))
    ap.add_argument("--num", type=int, default=40000)
    ap.add_argument("--fresh", action="store_true", help="also freshly initialised PD and CD students")
    ap.add_argument("--out", default=os.path.join(RESULTS, "students.json"))
    for k, v in SETTINGS.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    ap.add_argument("--plot-only", action="store_true", help="redraw students.png from --out")
    ap.add_argument("--hidden", default=",".join(map(str, SETTINGS["hidden"])), help="the MLP's hidden widths")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    args = ap.parse_args(argv)
    args.hidden = [int(h) for h in args.hidden.split(",")]
    args.methods = args.methods.split(",")
    if not set(args.methods) <= set(METHODS):
        ap.error(f"--methods: expected a comma-separated subset of {METHODS}, got {args.methods}")
    if args.plot_only:
        plot(json.load(open(args.out)), os.path.splitext(args.out)[0] + ".png")
        return
    settings = {k: getattr(args, k, v) for k, v in SETTINGS.items()}
    result = json.load(open(args.out)) if os.path.exists(args.out) else {}
    if result.get("settings") not in (None, settings) or result.get("num") not in (None, args.num):
        result = {}  # other settings: start a new file rather than mix rows
    result.update({"settings": settings, "num": args.num, "nfes": list(NFES)})
    result.setdefault("mixtures", {})
    for mname, mix in mixtures(args.mixtures.split(",")).items():
        t0 = time.perf_counter()
        result["mixtures"][mname] = run_mixture(mname, mix, args.num, settings, args.fresh)
        result["mixtures"][mname]["seconds"] = time.perf_counter() - t0
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1, default=float)
        plot(result, os.path.splitext(args.out)[0] + ".png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
