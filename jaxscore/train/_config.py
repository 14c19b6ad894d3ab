"""Small helpers to read training settings from a config of any mapping kind.

The training code accepts an ``ml_collections.ConfigDict``, a nested ``dict`` or
``None``; a missing key falls back to the documented default, so a config only
has to state what it changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_MISSING = object()


def cfg_get(config: Any, dotted: str, default: Any = None) -> Any:
    """``config.a.b`` for ``dotted="a.b"``; ``default`` when any level is missing or ``None``."""
    node = config
    for part in dotted.split("."):
        if node is None:
            return default
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        else:
            try:
                node = node[part]  # ConfigDict supports item access
            except (KeyError, TypeError, AttributeError):
                node = getattr(node, part, _MISSING)
        if node is _MISSING:
            return default
    return default if node is None else node


def config_to_dict(config: Any) -> dict:
    """A JSON-normalised plain ``dict`` of ``config`` (tuples become lists, odd objects ``str``)."""
    if config is None:
        return {}
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return json.loads(json.dumps(config, default=_json_default, sort_keys=True))


def _json_default(obj):
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return repr(obj)


def flatten_dict(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: Mapping, new: Mapping, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """Sorted ``(key, old_value, new_value)`` for every dotted key whose value differs.

    A key present on one side only shows the other side as ``"<missing>"``. Keys in
    ``ignore`` (exact dotted names) are skipped.
    """
    fo, fn = flatten_dict(old), flatten_dict(new)
    diffs = []
    for key in sorted(set(fo) | set(fn)):
        if key in ignore:
            continue
        a, b = fo.get(key, "<missing>"), fn.get(key, "<missing>")
        if a != b:
            diffs.append((key, a, b))
    return diffs
