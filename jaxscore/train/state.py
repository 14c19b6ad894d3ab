"""Training state, optimizer and EMA.

``TrainState`` is a plain pytree (a ``flax.struct`` dataclass) holding everything a
run needs to continue bit-for-bit after a restart:

- ``step``: int32 scalar, the number of optimizer steps taken (also the data position,
  since batches are a pure function of ``(seed, step)``);
- ``params``: the model parameters being optimized;
- ``ema_params``: exponential moving average of ``params`` (used for sampling);
- ``opt_state``: the optax state;
- ``key``: the run's PRNG key stored as raw ``uint32`` key data (``jax.random.key_data``),
  so it checkpoints like any array. Step ``n`` uses ``fold_in(key, n)``; the stored key
  never changes.

The optimizer follows score_sde's defaults: Adam (beta1 0.9, beta2 0.999, eps 1e-8),
learning rate 2e-4 with a linear warmup over 5000 steps, gradient clipping at global
norm 1.0, EMA rate 0.9999 — with an EMA warm-up (``optim.ema_warmup``, see :func:`ema_decay`)
so that short runs do not sample from parameters that are still mostly the initialisation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxscore.train.settings import DEFAULTS, cfg_get

OPTIM_DEFAULTS = DEFAULTS["optim"]


@flax.struct.dataclass
class TrainState:
    """Everything that evolves during training; a pytree (see module docstring).

    Shapes: ``step`` [] int32, ``key`` [2] uint32 (threefry key data), others as the model.
    """

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    key: jax.Array


def key_to_data(key) -> jax.Array:
    """Raw ``uint32`` key data of ``key`` (a typed key or a legacy ``uint32[2]`` key)."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise TypeError(
            "key: expected a typed PRNG key (jax.random.key) or raw uint32[2] key data "
            f"(jax.random.PRNGKey), got dtype {key.dtype} shape {tuple(key.shape)}."
        )
    return key


def create_train_state(key, params, tx: optax.GradientTransformation) -> TrainState:
    """Fresh state at step 0: ``ema_params = params``, ``opt_state = tx.init(params)``.

    ``key`` is the run's training key (typed or raw); it is stored as ``uint32`` data.
    ``params`` are copied (twice: params and EMA) so donating the state to a compiled step
    never invalidates the caller's arrays.
    """
    params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree.map(lambda x: jnp.array(x, copy=True), params),
        opt_state=tx.init(params),
        key=key_to_data(key),
    )


@functools.partial(jax.jit, static_argnums=(2, 3))
def _init_state(init_key, train_key, init_fn, tx) -> TrainState:
    return create_train_state(train_key, init_fn(init_key), tx)


def init_train_state(key, init_fn: Callable[[jax.Array], Any], tx: optax.GradientTransformation) -> TrainState:
    """``init_key, train_key = split(key)``; ``create_train_state(train_key, init_fn(init_key), tx)``.

    Compiled once per ``(init_fn, tx)`` pair (both static, by identity). ``key``: an int seed,
    a typed key or raw key data. This is how ``train`` builds a fresh run's state.
    """
    if isinstance(key, int):
        key = jax.random.key(key)
    elif not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.wrap_key_data(key_to_data(key))
    init_key, train_key = jax.random.split(key)
    return _init_state(init_key, train_key, init_fn, tx)


def ema_decay(step, rate, warmup: bool = True) -> jax.Array:
    """The EMA decay of the update made at optimizer step ``n = step`` (0 for the first update).

    With ``warmup``: ``d_n = min(rate, (1 + n) / (10 + n))`` — the ``num_updates`` rule of
    ``tf.train.ExponentialMovingAverage`` (also diffusers' ``EMAModel``); without: ``d_n = rate``.
    After ``N`` updates the EMA keeps weight ``prod_{n<N} d_n`` on the initial parameters:
    ``rate**N`` without warm-up (0.999**300 = 0.74: a 300-step run with ``rate=0.999`` samples
    from parameters that are 74% initialisation) and, while ``(1+n)/(10+n) <= rate``,
    ``prod_{n<N} (1+n)/(10+n) = 1 / binom(N + 9, 9)`` with it (1e-17 at ``N = 300``). The warm-up
    ends at ``n = (10 rate - 1) / (1 - rate)`` (8990 steps for 0.999, 89990 for 0.9999).

    ``step``: int scalar (traced or not), the state's step before the update; a pure function
    of it, so a resumed run computes the same decays. Returns a float32 scalar.
    """
    rate = jnp.asarray(rate, jnp.float32)
    if not warmup:
        return rate
    n = jnp.asarray(step).astype(jnp.float32)
    return jnp.minimum(rate, (1.0 + n) / (10.0 + n))


def ema_update(ema_params, params, rate):
    """``ema <- rate * ema + (1 - rate) * params`` leaf by leaf (pure; ``rate`` in [0, 1])."""
    rate = jnp.asarray(rate, jnp.float32)
    return jax.tree.map(
        lambda e, p: (rate * e + (1.0 - rate) * p).astype(e.dtype), ema_params, params
    )


def _optim_value(config, name):
    # Accept a full config (with an ``optim`` section) or the optim section itself.
    for path in (f"optim.{name}", name):
        value = cfg_get(config, path, None)
        if value is not None and not hasattr(value, "keys"):
            return value
    if name == "ema_rate":  # score_sde keeps it under model.ema_rate
        value = cfg_get(config, "model.ema_rate", None)
        if value is not None:
            return value
    return OPTIM_DEFAULTS[name]


def optim_settings(config=None, **overrides) -> dict:
    """Resolved optimizer settings: score_sde defaults < ``config.optim`` < ``overrides``."""
    out = {name: _optim_value(config, name) for name in OPTIM_DEFAULTS}
    unknown = set(overrides) - set(OPTIM_DEFAULTS)
    if unknown:
        raise TypeError(
            f"make_optimizer: unknown setting(s) {sorted(unknown)}; expected some of {sorted(OPTIM_DEFAULTS)}."
        )
    out.update(overrides)
    return out


def make_lr_schedule(config=None, **overrides) -> optax.Schedule:
    """Learning rate at optimizer step ``n``: ``lr * min(n / warmup, 1)`` (``lr`` if warmup is 0).

    Matches score_sde's ``optimization_manager`` (the first update, at ``n = 0``, has rate 0).
    """
    s = optim_settings(config, **overrides)
    lr, warmup = float(s["lr"]), int(s["warmup"])
    if warmup < 0:
        raise ValueError(f"optim.warmup: expected >= 0 steps, got {warmup}.")
    if warmup == 0:
        return optax.constant_schedule(lr)
    return optax.linear_schedule(init_value=0.0, end_value=lr, transition_steps=warmup)


def lr_at(step: int, config=None, **overrides) -> float:
    """``make_lr_schedule(config)(step)`` in plain Python (no device work; for logging)."""
    s = optim_settings(config, **overrides)
    lr, warmup = float(s["lr"]), int(s["warmup"])
    return lr if warmup <= 0 else lr * min(int(step) / warmup, 1.0)


def make_optimizer(config=None, **overrides) -> optax.GradientTransformation:
    """Adam(W) with linear warmup and global-norm clipping, from ``config.optim``.

    Update: ``g <- g * min(1, grad_clip / ||g||_2)`` (skipped if ``grad_clip <= 0``), then
    Adam(beta1, beta2, eps) scaled by ``-lr_schedule(n)``; decoupled weight decay when
    ``optimizer == "adamw"`` or ``weight_decay > 0``. Settings: score_sde defaults
    (``settings.DEFAULTS["optim"]``) overridden by ``config.optim.*`` then keyword ``overrides``.
    The EMA rate is not part of the transformation (see ``ema_update``).
    """
    s = optim_settings(config, **overrides)
    name = str(s["optimizer"]).lower()
    if name not in ("adam", "adamw"):
        raise ValueError(f"optim.optimizer: expected 'adam' or 'adamw', got {s['optimizer']!r}.")
    schedule = make_lr_schedule(config, **overrides)
    chain = []
    if float(s["grad_clip"]) > 0:
        chain.append(optax.clip_by_global_norm(float(s["grad_clip"])))
    wd = float(s["weight_decay"])
    if name == "adamw" or wd > 0:
        chain.append(
            optax.adamw(schedule, b1=float(s["beta1"]), b2=float(s["beta2"]), eps=float(s["eps"]), weight_decay=wd)
        )
    else:
        chain.append(optax.adam(schedule, b1=float(s["beta1"]), b2=float(s["beta2"]), eps=float(s["eps"])))
    return optax.chain(*chain)


def ema_warmup_from_config(config=None) -> bool:
    """``config.optim.ema_warmup`` (default ``True``): whether the EMA decay warms up (:func:`ema_decay`)."""
    value = _optim_value(config, "ema_warmup")
    if not isinstance(value, (bool, int)) or isinstance(value, int) and value not in (0, 1):
        raise ValueError(f"optim.ema_warmup: expected True or False, got {value!r}.")
    return bool(value)


def ema_rate_from_config(config=None) -> float:
    """``config.optim.ema_rate`` (or score_sde's ``config.model.ema_rate``), default 0.9999."""
    rate = float(_optim_value(config, "ema_rate"))
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"optim.ema_rate: expected a value in [0, 1], got {rate}.")
    return rate
