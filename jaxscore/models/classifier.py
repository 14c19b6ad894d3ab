r"""Noise-conditional classifiers :math:`p_t(y \mid x_t)` for classifier guidance.

Dhariwal & Nichol (2021, "Diffusion models beat GANs", the classifier is the U-Net's encoder half
with a pooled head) and score_sde's controllable generation (Song et al. 2021, section 5 / appendix
I: a time-dependent classifier trained on perturbed data). The classifier sees diffused data

.. math:: x_t = \alpha_t x_0 + \sigma_t\varepsilon,\qquad t \sim U(t_{min}, T),

and is trained by cross-entropy :math:`-\log p_\phi(y \mid x_t, t)` against the label of
:math:`x_0`; its log-softmax at the wanted class is then the ``log_likelihood_fn(x, t)`` of
:func:`jaxscore.guidance.classifier_guidance`:
:math:`\tilde s(x, t) = s(x, t) + \gamma\,\nabla_x \log p_\phi(y \mid x, t)`.

* :class:`NoiseConditionalClassifier`: Flax Linen, ``apply(params, x [B, H, W, C], t [B]) -> logits [B, K]``
  (the time embedding of the U-Net, ``conv3x3``, per level ``num_res_blocks`` BigGAN residual blocks
  and a downsampling block, a middle block, ``act(GroupNorm)``, global mean pooling and a linear head).
* :func:`classifier_loss`: the cross-entropy on diffused data (pure; explicit key).
* :func:`classifier_log_likelihood`: the ``log_likelihood_fn`` for guidance, for one label or a batch.
* :func:`train_classifier`: a short training loop (optax Adam, orbax checkpoints, resume from the
  workdir, metrics as JSONL, accuracy per noise level at the end); :func:`load_classifier` restores one.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscore._checks import check_batch, check_key
from jaxscore.models.embeddings import make_embedding
from jaxscore.models.layers import ResnetBlockBigGAN, conv3x3, dense, get_activation, group_count
from jaxscore.models.unet import resolve_embedding_scale

Array = jax.Array

__all__ = [
    "NoiseConditionalClassifier",
    "accuracy_by_time",
    "build_classifier",
    "classifier_log_likelihood",
    "classifier_loss",
    "load_classifier",
    "train_classifier",
]


class NoiseConditionalClassifier(nn.Module):
    r"""The U-Net's encoder half with a pooled linear head: logits of :math:`p_\phi(y \mid x_t, t)`.

    ``x: [B, H, W, C]`` (NHWC, ~[-1, 1] at t = 0), ``t: [B]`` -> ``[B, num_classes]`` logits.
    Fields: ``num_classes``; ``ch`` base channels; ``ch_mult`` per-level multipliers (H and W
    divisible by ``2 ** (len(ch_mult) - 1)``); ``num_res_blocks`` per level; ``dropout``;
    ``embedding`` ``"positional"`` (of ``1000 t``) or ``"fourier"``; ``activation``.
    """

    num_classes: int = 10
    ch: int = 32
    ch_mult: Sequence[int] = (1, 2)
    num_res_blocks: int = 1
    dropout: float = 0.0
    embedding: str = "positional"
    embedding_scale: float | None = None
    num_groups: int | None = None
    activation: str | Callable[[Array], Array] = "silu"

    @nn.compact
    def __call__(self, x: Array, t: Array, train: bool = False) -> Array:
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"NoiseConditionalClassifier: expected images x of shape [B, H, W, C], got {tuple(x.shape)}.")
        x, t = check_batch(x, t)
        factor = 2 ** (len(self.ch_mult) - 1)
        if x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"NoiseConditionalClassifier: image size {x.shape[1]}x{x.shape[2]} must be divisible by "
                             f"2**(len(ch_mult)-1) = {factor} (ch_mult={tuple(self.ch_mult)}).")
        act = get_activation(self.activation)
        ch = self.ch
        scale = resolve_embedding_scale(self.embedding, self.embedding_scale)
        temb = make_embedding(self.embedding, ch)(scale * t)
        temb = dense(4 * ch, name="Dense_temb_0")(temb)
        temb = dense(4 * ch, name="Dense_temb_1")(act(temb))
        block = dict(dropout=self.dropout, act=act, num_groups=self.num_groups)
        h = conv3x3(ch, name="Conv_in")(x)
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = ResnetBlockBigGAN(ch * mult, **block)(h, temb, train)
            if level != len(self.ch_mult) - 1:
                h = ResnetBlockBigGAN(down=True, **block)(h, temb, train)
        h = ResnetBlockBigGAN(**block)(h, temb, train)  # middle
        h = act(nn.GroupNorm(group_count(h.shape[-1], self.num_groups), epsilon=1e-6, name="GroupNorm_out")(h))
        return dense(self.num_classes, name="Dense_out")(jnp.mean(h, axis=(1, 2)))


def classifier_loss(apply_fn, params, key: Array, x0: Array, labels: Array, sde, *, t_min: float | None = None,
                    train: bool = True) -> tuple[Array, dict]:
    r"""Cross-entropy on diffused data: :math:`E_{t \sim U(t_{min}, T),\,\varepsilon}[-\log p_\phi(y \mid
    \alpha_t x_0 + \sigma_t\varepsilon, t)]`. ``apply_fn(params, x, t, train=..., rngs=...)``;
    x0: [B, H, W, C], labels: [B] int. Returns ``(loss, {"accuracy": ...})``."""
    check_key(key)
    k_t, k_eps, k_drop = jax.random.split(key, 3)
    t_lo = sde.t_min if t_min is None else t_min
    t = jax.random.uniform(k_t, x0.shape[:1], x0.dtype, t_lo, sde.T)
    x_t, _ = sde.marginal_sample(k_eps, x0, t)
    logits = apply_fn(params, x_t, t, train=train, rngs={"dropout": k_drop})
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}


def classifier_log_likelihood(apply_fn, params, labels) -> Callable[[Array, Array], Array]:
    r"""``log_likelihood_fn(x [B, *D], t [B]) -> [B]``: :math:`\log p_\phi(y \mid x, t)` (log-softmax at the
    wanted class), for :func:`jaxscore.guidance.classifier_guidance`. ``labels``: one int or [B] ints."""

    def log_lik(x, t):
        x, t = check_batch(x, t)
        logp = jax.nn.log_softmax(apply_fn(params, x, t), axis=-1)
        y = jnp.broadcast_to(jnp.asarray(labels, jnp.int32), x.shape[:1])
        return jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]

    return log_lik


# --- config -> classifier, training, restore --------------------------------------------------------

def build_classifier(cfg) -> NoiseConditionalClassifier:
    """``config.classifier`` (ml_collections section or dict) -> the module."""
    get = cfg.get
    return NoiseConditionalClassifier(
        num_classes=int(get("num_classes", 10)), ch=int(get("ch", 32)), ch_mult=tuple(get("ch_mult", (1, 2))),
        num_res_blocks=int(get("num_res_blocks", 1)), dropout=float(get("dropout", 0.0)),
        embedding=get("embedding", "positional"))


def _images(dataset) -> np.ndarray:
    return dataset["images"].astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def accuracy_by_time(apply_fn, params, sde, x0, labels, times, key, *, batch: int = 512) -> dict[float, float]:
    """Accuracy on ``x0`` [N, H, W, C] diffused to each time in ``times`` (one noise draw per example)."""
    out = {}
    fn = jax.jit(lambda p, x, t: jnp.argmax(apply_fn(p, x, t), -1))
    for i, t in enumerate(times):
        correct = 0
        for j in range(0, len(x0), batch):
            xb = jnp.asarray(x0[j:j + batch])
            tb = jnp.full(xb.shape[:1], float(t), xb.dtype)
            xt, _ = sde.marginal_sample(jax.random.fold_in(jax.random.fold_in(key, i), j), xb, tb)
            correct += int(jnp.sum(fn(params, xt, tb) == jnp.asarray(labels[j:j + batch])))
        out[float(t)] = correct / len(x0)
    return out


def _checkpoint_manager(workdir: str):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                 options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def train_classifier(config, workdir: str, *, progress: bool = True) -> dict:
    """Train (or resume) a noise-conditional classifier from ``config`` in ``workdir``.

    Reads ``config.data`` (an image dataset with labels), ``config.sde`` and ``config.classifier``
    (``num_classes``, model fields, ``batch_size``, ``n_iters``, ``lr``, ``t_min``, ``log_every``,
    ``checkpoint_every``, ``eval_times``). Writes ``config.json``, orbax checkpoints under
    ``checkpoints/``, ``metrics.jsonl`` and ``accuracy.json`` (held-out accuracy per noise level).
    Returns the final summary (step, loss, accuracy per time)."""
    import orbax.checkpoint as ocp

    from jaxscore.experiment import build_sde, load_data

    c = config.classifier
    data = load_data(config)
    if not data["image"] or "labels" not in data["train"]:
        raise ValueError(f"train_classifier: expected a labelled image dataset, got config.data.name={config.data.name!r}.")
    x_train, y_train = _images(data["train"]), np.asarray(data["train"]["labels"], np.int32)
    x_test, y_test = _images(data["test"]), np.asarray(data["test"]["labels"], np.int32)
    num_classes = int(c.num_classes)
    if y_train.max() >= num_classes:
        raise ValueError(f"classifier.num_classes: the data has labels up to {int(y_train.max())}, got {num_classes}.")
    sde = build_sde(config.sde)
    model = build_classifier(c)
    t_min = float(c.get("t_min", sde.t_min))
    batch, n_iters = int(c.batch_size), int(c.n_iters)
    tx = optax.adam(float(c.lr))
    key = jax.random.key(int(config.seed))
    params = model.init({"params": key}, jnp.asarray(x_train[:1]), jnp.ones((1,)))
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.asarray(0, jnp.int32)}

    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    mngr = _checkpoint_manager(workdir)
    if mngr.latest_step() is not None:
        state = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(state))
    start = int(state["step"])

    def loss_fn(p, k, xb, yb):
        return classifier_loss(model.apply, p, k, xb, yb, sde, t_min=t_min)

    @jax.jit
    def train_step(st, k, xb, yb):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(st["params"], k, xb, yb)
        updates, opt_state = tx.update(grads, st["opt_state"], st["params"])
        return ({"params": optax.apply_updates(st["params"], updates), "opt_state": opt_state, "step": st["step"] + 1},
                {"loss": loss, **aux})

    log_every, ckpt_every = int(c.get("log_every", 100)), int(c.get("checkpoint_every", 500))
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    t0, metrics = time.time(), {}
    for step in range(start, n_iters):
        idx = np.random.default_rng([int(config.seed), step]).integers(0, len(x_train), batch)
        state, metrics = train_step(state, jax.random.fold_in(key, step), jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx]))
        if (step + 1) % log_every == 0 or step + 1 == n_iters:
            row = {"step": step + 1, **{k: float(v) for k, v in metrics.items()}, "seconds": time.time() - t0}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            if progress:
                print(f"step {row['step']}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.3f}", flush=True)
        if (step + 1) % ckpt_every == 0 or step + 1 == n_iters:
            mngr.save(step + 1, args=ocp.args.StandardSave(state))
    mngr.wait_until_finished()
    times = [float(t) for t in c.get("eval_times", (t_min, 0.1, 0.25, 0.5, 0.75, 1.0))]
    acc = accuracy_by_time(model.apply, state["params"], sde, x_test, y_test, times, jax.random.fold_in(key, 2**30))
    summary = {"step": int(state["step"]), "num_test": len(x_test), "chance": 1.0 / num_classes,
               "accuracy_by_t": {f"{t:g}": a for t, a in acc.items()},
               **({"train_loss": float(metrics["loss"])} if metrics else {})}
    with open(os.path.join(workdir, "accuracy.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def load_classifier(workdir: str):
    """``(config, model, params, sde)`` of the latest checkpoint of a ``train_classifier`` run in ``workdir``."""
    import orbax.checkpoint as ocp
    from ml_collections import ConfigDict

    from jaxscore.experiment import build_sde, load_data

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no config.json; is {workdir!r} a classifier run (jaxscore train-classifier)?")
    with open(path) as f:
        config = ConfigDict(json.load(f))
    if "classifier" not in config:
        raise ValueError(f"{workdir!r} is not a classifier run: its config.json has no 'classifier' section.")
    model = build_classifier(config.classifier)
    shape = tuple(load_data(config)["shape"])
    params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, *shape)), jnp.ones((1,)))
    mngr = _checkpoint_manager(workdir)
    step = mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir!r}: no classifier checkpoint under checkpoints/.")
    abstract = {"params": params, "opt_state": optax.adam(1.0).init(params), "step": jnp.asarray(0, jnp.int32)}
    state = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    return config, model, state["params"], build_sde(config.sde)

