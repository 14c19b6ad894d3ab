r"""Convert pytorch-fid's Inception weights (a torch ``state_dict``) to :class:`FIDInceptionV3` variables.

    convert_pytorch_fid_weights("pt_inception-2015-12-05-6726825d.pth", "inception_fid.npz")

Torch is imported only by :func:`convert_pytorch_fid_weights` (an optional extra); the mapping
:func:`state_dict_to_variables` takes any mapping of array-likes. Per torch key
``<module path>.<leaf>`` (the module path ``Mixed_5b.branch1x1`` becomes ``Mixed_5b/branch1x1``):

    conv.weight        [O, I, kh, kw]  ->  params/<path>/conv/kernel   [kh, kw, I, O]  (OIHW -> HWIO)
    bn.weight / bias   [C]             ->  params/<path>/bn/scale, bn/bias
    bn.running_mean    [C]             ->  batch_stats/<path>/bn/mean
    bn.running_var     [C]             ->  batch_stats/<path>/bn/var
    bn.num_batches_tracked             ->  dropped (training counter)
    fc.weight          [1008, 2048]    ->  params/fc/kernel [2048, 1008]  (transposed)
    fc.bias            [1008]          ->  params/fc/bias
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxscore.evaluation.inception import (
    PYTORCH_FID_WEIGHTS_URL,
    check_variables,
    save_inception_params,
    unflatten_variables,
)

_DROPPED_SUFFIXES = ("num_batches_tracked",)


def _to_numpy(value) -> np.ndarray:
    """A torch tensor (without importing torch) or any array-like as a float32 NumPy array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _flax_entry(torch_key: str, value: np.ndarray) -> tuple[str, np.ndarray]:
    """Map one torch ``state_dict`` entry to its ``"/"``-joined Flax variable path and array."""
    *module_path, leaf = torch_key.split(".")
    path = "/".join(module_path)
    owner = module_path[-1] if module_path else ""
    if owner == "conv" and leaf == "weight":
        if value.ndim != 4:
            raise ValueError(f"{torch_key}: expected a 4-axis OIHW conv weight, got shape {value.shape}.")
        return f"params/{path}/kernel", np.transpose(value, (2, 3, 1, 0))
    if owner == "bn":
        collection, name = {
            "weight": ("params", "scale"),
            "bias": ("params", "bias"),
            "running_mean": ("batch_stats", "mean"),
            "running_var": ("batch_stats", "var"),
        }.get(leaf, (None, None))
        if collection is not None:
            return f"{collection}/{path}/{name}", value
    if path == "fc" and leaf == "weight":
        if value.ndim != 2:
            raise ValueError(f"{torch_key}: expected a 2-axis [out, in] weight, got shape {value.shape}.")
        return "params/fc/kernel", value.T
    if path == "fc" and leaf == "bias":
        return "params/fc/bias", value
    raise ValueError(
        f"state_dict key {torch_key!r} is not part of pytorch-fid's FID Inception-v3 "
        "(expected <module>.conv.weight, <module>.bn.{weight,bias,running_mean,running_var}, fc.weight, fc.bias)."
    )


def state_dict_to_variables(state_dict: Mapping, *, source: str = "state_dict") -> dict:
    """Map a pytorch-fid ``fid_inception_v3()`` ``state_dict`` (torch tensors or arrays) to
    ``{"params": ..., "batch_stats": ...}`` of :class:`~jaxscore.evaluation.inception.FIDInceptionV3`.

    Every key must map and every variable must be present with the right shape (else a clear
    error naming ``source`` and the key). Values become float32.
    """
    flat = {}
    for key, value in state_dict.items():
        if key.endswith(_DROPPED_SUFFIXES):
            continue
        flax_key, array = _flax_entry(key, _to_numpy(value))
        flat[flax_key] = np.ascontiguousarray(array)
    check_variables(flat, source=source)
    return unflatten_variables(flat)


def convert_pytorch_fid_weights(src_pth: str | os.PathLike, out_npz: str | os.PathLike) -> Path:
    """Read pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` and write the Flax variables to ``out_npz``.

    Loads with ``torch.load(src, map_location="cpu", weights_only=True)`` (tensors only, no pickled
    code) and returns the path written. Needs torch (``pip install 'jaxscore[torch]'``).
    """
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "convert_pytorch_fid_weights needs torch to read the .pth file: pip install 'jaxscore[torch]' "
            "(or pip install torch)."
        ) from err
    src_pth = Path(src_pth)
    if not src_pth.is_file():
        raise FileNotFoundError(f"No pytorch-fid weights at {str(src_pth)!r}; download {PYTORCH_FID_WEIGHTS_URL}")
    state_dict = torch.load(src_pth, map_location="cpu", weights_only=True)
    variables = state_dict_to_variables(state_dict, source=str(src_pth))
    return save_inception_params(variables, out_npz)
