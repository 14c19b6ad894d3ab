"""The pure training step and its ``lax.scan`` multi-step form.

``train_step`` knows nothing of devices: data parallelism wraps it (see ``parallel.py``),
passing ``axis_name`` so gradients are averaged with ``lax.pmean`` across replicas.

Randomness: step ``n`` uses ``k_n = fold_in(key, n)`` (``key`` = ``state.key``), and the loss
is evaluated *per example*: global row ``i`` of the step's batch gets its own key
``fold_in(k_n, i)`` and ``loss_fn`` sees it as a one-row batch (``jax.vmap`` over rows; the
step's loss is the mean of the per-row losses, aux entries likewise). So the noise an
example gets depends only on ``(key, step, global row)``: not on how steps are grouped into
compiled calls, where a run was interrupted and resumed, nor on how the batch is split over
devices. Single-device, ``pmap`` and sharded training therefore compute the same numbers
for stochastic losses too (up to float summation order). Under ``pmap`` a replica's rows
start at ``lax.axis_index(axis_name) * rows_per_replica`` (the layout ``parallel.py`` uses).

Contract this implies: ``loss_fn`` must be a mean over examples of a per-example loss (every
loss in :mod:`jaxscore.losses` is) — the same assumption data-parallel averaging of
per-replica losses already makes. Batch-norm-like statistics across the batch are not
supported.

Non-finite guard: if the loss or any gradient entry is NaN/Inf (after the cross-replica
mean, so every replica agrees), the update is skipped: params, EMA and optimizer state
stay as they were, ``step`` still increments (the bad batch is consumed, not retried) and
``metrics["skipped"] = 1``. (The optimizer's own count, and so the warmup schedule,
advances only on applied updates.)

Mixed precision: the step is dtype-agnostic. A network with a bfloat16 compute dtype
(``model.dtype``, :mod:`jaxscore.models.precision`) keeps float32 parameters and returns float32
outputs, so gradients (cotangents of float32 parameters), the optimizer state and the EMA are
float32; the per-example losses are promoted to at least float32 before their mean, and aux
entries are cast to float32. bfloat16 has float32's exponent range, so no loss scaling is done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxscore._keys import example_keys
from jaxscore.train.state import TrainState, ema_decay, ema_update

LossFn = Callable[[Any, jax.Array, Any], Any]  # (params, key, batch) -> loss | (loss, aux)


def _as_loss_and_aux(loss_fn: LossFn) -> Callable:
    def wrapped(params, key, batch):
        out = loss_fn(params, key, batch)
        if isinstance(out, tuple):
            if len(out) != 2 or not isinstance(out[1], Mapping):
                raise TypeError(
                    "loss_fn: expected it to return a scalar loss or (loss, aux_dict), got a "
                    f"tuple of length {len(out)} with types {[type(o).__name__ for o in out]}."
                )
            loss, aux = out
        else:
            loss, aux = out, {}
        loss = jnp.asarray(loss)
        aux = {k: jnp.asarray(v, jnp.float32) for k, v in dict(aux).items()}  # means stay means under pmean
        for k, v in aux.items():
            if v.shape != ():
                raise ValueError(f"loss_fn aux[{k!r}]: expected a scalar, got shape {tuple(v.shape)}.")
        if loss.shape != ():
            raise ValueError(f"loss_fn: expected a scalar loss, got shape {tuple(loss.shape)}.")
        if not jnp.issubdtype(loss.dtype, jnp.floating):
            raise TypeError(f"loss_fn: expected a floating-point loss, got dtype {loss.dtype}.")
        # the reduction over examples (and replicas) in at least float32, whatever the compute dtype
        return loss.astype(jnp.promote_types(loss.dtype, jnp.float32)), dict(aux)

    return wrapped


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def step_key(state: TrainState) -> jax.Array:
    """Typed key for the step about to run: ``fold_in(key, step)`` (the same on every replica)."""
    return jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)


def _num_rows(batch) -> int:
    leaves = jax.tree.leaves(batch)
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if not leaves or len(sizes) != 1 or None in sizes:
        raise ValueError(
            "train_step: expected batch to be a pytree of arrays sharing a leading example axis [B, ...], "
            f"got leading sizes {sizes or '{} (empty batch)'}."
        )
    return sizes.pop()


def _per_example_loss(wrapped: Callable, batch, key: jax.Array, axis_name) -> Callable:
    """``params -> (mean loss, mean aux)`` with row ``i`` of the global batch using ``fold_in(key, i)``."""
    n = _num_rows(batch)
    offset = 0 if axis_name is None else lax.axis_index(axis_name).astype(jnp.uint32) * jnp.uint32(n)
    keys = example_keys(key, n, offset)

    def one(params, k, example):
        return wrapped(params, k, jax.tree.map(lambda x: x[None], example))

    def loss(params):
        losses, aux = jax.vmap(one, in_axes=(None, 0, 0))(params, keys, batch)
        return jnp.mean(losses), {name: jnp.mean(v) for name, v in aux.items()}

    return loss


def train_step(
    state: TrainState,
    batch: Any,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    ema_rate: float,
    ema_warmup: bool = True,
    axis_name=None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step on ``batch`` (a pytree of arrays; this replica's slice under pmap).

    ``loss = mean_i loss_fn(params, fold_in(k_n, i), batch[i:i+1])`` over this slice's global rows
    ``i`` (aux likewise), ``g = grad(loss)``; with ``axis_name``,
    ``loss, aux, g <- pmean(loss, aux, g)``. If all finite:
    ``updates, opt_state = tx.update(g, opt_state, params)``; ``params += updates``;
    ``ema = d_n * ema + (1 - d_n) * params`` with ``d_n = ema_decay(n, ema_rate, ema_warmup)``
    (``min(ema_rate, (1 + n) / (10 + n))`` with warm-up, else ``ema_rate``; ``n = state.step``).
    Otherwise nothing but ``step`` changes.

    ``loss_fn(params, key, batch)`` returns a scalar loss or ``(loss, aux)`` with ``aux`` a
    dict of scalars (cast to float32). Returns ``(new_state, metrics)`` with metrics ``loss``,
    ``grad_norm`` (global L2 norm of the averaged gradient, before clipping), ``skipped``
    (int32 0/1) and every ``aux`` entry — scalars.
    """
    loss_of_params = _per_example_loss(_as_loss_and_aux(loss_fn), batch, step_key(state), axis_name)
    (loss, aux), grads = jax.value_and_grad(loss_of_params, has_aux=True)(state.params)
    if axis_name is not None:
        loss, aux, grads = lax.pmean((loss, aux, grads), axis_name)
    finite = jnp.isfinite(loss) & _all_finite(grads)

    def apply(operand):
        params, ema, opt_state, g = operand
        updates, new_opt_state = tx.update(g, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        decay = ema_decay(state.step, ema_rate, ema_warmup)
        return new_params, ema_update(ema, new_params, decay), new_opt_state

    def skip(operand):
        params, ema, opt_state, _ = operand
        return params, ema, opt_state

    params, ema_params, opt_state = lax.cond(
        finite, apply, skip, (state.params, state.ema_params, state.opt_state, grads)
    )
    new_state = state.replace(
        step=state.step + 1, params=params, ema_params=ema_params, opt_state=opt_state
    )
    metrics = {
        "loss": loss,
        "grad_norm": optax.tree.norm(grads),
        "skipped": jnp.logical_not(finite).astype(jnp.int32),
    }
    for name, value in aux.items():
        if name in metrics:
            raise ValueError(f"loss_fn aux: key {name!r} clashes with a built-in metric {sorted(metrics)}.")
        metrics[name] = value
    return new_state, metrics


def multi_step(
    state: TrainState,
    batches: Any,
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    ema_rate: float,
    ema_warmup: bool = True,
    axis_name=None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """``K`` consecutive ``train_step`` calls via ``lax.scan`` over the leading ``[K]`` axis.

    ``batches``: the per-step batches stacked on a new leading axis (every leaf ``[K, B, ...]``).
    Returns the state after ``K`` steps and metrics stacked to shape ``[K]``.
    """
    leaves = jax.tree.leaves(batches)
    if not leaves:
        raise ValueError("multi_step: batches is empty; expected a pytree of [K, B, ...] arrays.")
    ks = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if len(ks) != 1 or None in ks:
        raise ValueError(
            f"multi_step: expected every batch leaf to have the same leading [K] axis, got leading sizes {ks}."
        )

    def body(carry, batch):
        return train_step(carry, batch, loss_fn=loss_fn, tx=tx, ema_rate=ema_rate, ema_warmup=ema_warmup,
                          axis_name=axis_name)

    if ks == {1}:
        # No loop for one step: XLA:CPU runs convolutions several times slower inside a
        # while-loop body.
        state, metrics = body(state, jax.tree.map(lambda x: x[0], batches))
        return state, jax.tree.map(lambda m: m[None], metrics)
    return lax.scan(body, state, batches)
