"""Named model configurations and a builder for configs (the registry lives here, at the edge).

``get_preset(name)`` returns the constructor kwargs (a fresh dict) and ``preset_class(name)`` the
class; ``build_model(name_or_config, **overrides)`` builds the Flax module from a preset name, a
class name (``"ddpmpp"``, ``"ncsnpp"``, ``"unet"``, ``"mlp"``/``"ScoreMLP"``), or a
dict / ``ml_collections.ConfigDict`` with a ``name`` field plus overrides.

=======================  ==========================================================================
``mlp_toy``              ScoreMLP 3x128, Fourier embedding: 2-D / low-dim toy data
``unet_tiny``            DDPM++ ch=32, ch_mult=(1,2), 1 res block, attention at 4x4: 8x8 digits on CPU
``unet_small``           DDPM++ ch=64, ch_mult=(1,2,2), 2 res blocks, attention at 8x8 / 7x7:
                         16x16 (16->8->4) or 28x28 (28->14->7) images
``ddpmpp_cifar10``       score_sde DDPM++ cont. (VP): ch=128, (1,2,2,2), 4 res blocks, attn 16, dropout 0.1
``ddpmpp_deep_cifar10``  same with 8 res blocks
``ncsnpp_cifar10``       score_sde NCSN++ cont. (VE): as DDPM++ + Fourier embedding, FIR, input pyramid
``ncsnpp_deep_cifar10``  same with 8 res blocks
=======================  ==========================================================================
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxscore.models.mlp import ScoreMLP
from jaxscore.models.unet import DDPMpp, NCSNpp, UNet

MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "mlp": ScoreMLP,
    "scoremlp": ScoreMLP,
    "score_mlp": ScoreMLP,
    "unet": UNet,
    "ddpmpp": DDPMpp,
    "ddpm++": DDPMpp,
    "ncsnpp": NCSNpp,
    "ncsn++": NCSNpp,
}

_PRESETS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "mlp_toy": (
        ScoreMLP,
        dict(hidden_dims=(128, 128, 128), embedding="fourier", embedding_dim=64, fourier_scale=16.0, dropout=0.0),
    ),
    "unet_tiny": (
        DDPMpp,
        dict(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0),
    ),
    "unet_small": (
        DDPMpp,
        dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(8, 7), dropout=0.1),
    ),
    "ddpmpp_cifar10": (
        DDPMpp,
        dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.1),
    ),
    "ddpmpp_deep_cifar10": (
        DDPMpp,
        dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=8, attn_resolutions=(16,), dropout=0.1),
    ),
    "ncsnpp_cifar10": (
        NCSNpp,
        dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,), dropout=0.1),
    ),
    "ncsnpp_deep_cifar10": (
        NCSNpp,
        dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=8, attn_resolutions=(16,), dropout=0.1),
    ),
}

PRESET_NAMES = tuple(_PRESETS)


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"model: unknown name {name!r}; expected a preset {list(PRESET_NAMES)} "
        f"or a class {sorted(set(MODEL_CLASSES))}."
    )


def get_preset(name: str) -> dict[str, Any]:
    """Constructor kwargs of preset ``name`` (a fresh dict; pair it with :func:`preset_class`)."""
    if name not in _PRESETS:
        raise _unknown(name)
    return copy.deepcopy(_PRESETS[name][1])


def preset_class(name: str) -> type[nn.Module]:
    """The module class of preset ``name``."""
    if name not in _PRESETS:
        raise _unknown(name)
    return _PRESETS[name][0]


def _freeze(value):
    """Lists (e.g. from a ConfigDict / JSON) -> tuples, so module fields stay hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def build_model(name_or_config: Any, *, ignore_unknown: bool = False, **overrides) -> nn.Module:
    """Build a score network.

    ``name_or_config``: a preset name, a class name, or a mapping / ``ConfigDict`` with field
    ``name`` (preset or class name) and any constructor fields as overrides; keyword
    ``overrides`` are applied last. Unknown fields raise (``ignore_unknown=True`` drops them,
    for config sections that also hold e.g. ``ema_rate``).
    """
    if isinstance(name_or_config, str):
        name, fields = name_or_config, {}
    else:
        cfg = name_or_config.to_dict() if hasattr(name_or_config, "to_dict") else dict(name_or_config)
        if "name" not in cfg:
            raise ValueError(f"build_model: the config needs a 'name' field (preset or class name), got fields {sorted(cfg)}.")
        name = cfg.pop("name")
        fields = cfg
    fields = {**fields, **overrides}
    if name in _PRESETS:
        cls, kwargs = preset_class(name), get_preset(name)
    elif name.lower() in MODEL_CLASSES:
        cls, kwargs = MODEL_CLASSES[name.lower()], {}
    else:
        raise _unknown(name)
    valid = {f.name for f in dataclasses.fields(cls) if f.init and f.name not in ("parent", "name")}
    bad = sorted(set(fields) - valid)
    if bad and not ignore_unknown:
        raise ValueError(f"build_model: {cls.__name__} has no field(s) {bad}; valid fields: {sorted(valid)}.")
    kwargs.update({k: _freeze(v) for k, v in fields.items() if k in valid})
    return cls(**kwargs)


def count_params(params: Any) -> int:
    """Number of scalars in a pytree of arrays (or ``jax.ShapeDtypeStruct`` from ``jax.eval_shape``)."""
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(params)))


def init_shapes(model: nn.Module, x_shape: tuple[int, ...]) -> Any:
    """Parameter shapes of ``model`` for inputs of shape ``x_shape`` without computing anything
    (``jax.eval_shape`` of ``init``); returns the ``params`` pytree of ``ShapeDtypeStruct``."""
    def _init(key):
        x = jnp.zeros(x_shape, jnp.float32)
        t = jnp.zeros(x_shape[:1], jnp.float32)
        return model.init({"params": key, "dropout": key}, x, t, train=False)

    return jax.eval_shape(_init, jax.random.key(0))["params"]
