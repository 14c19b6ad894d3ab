r"""Divergence of a batched vector field :math:`v: [B, *D] \to [B, *D]`.

:math:`\nabla\cdot v(x) = \operatorname{tr} \partial v/\partial x`, per example.

* :func:`value_and_exact_divergence` sums :math:`e_i^\top J e_i` over the d basis
  vectors with forward-mode JVPs, ``chunk_size`` of them at a time (vmapped)
  and the chunks in a ``lax.map``. Memory is ``chunk_size`` x one forward pass,
  never the full d x d Jacobian, so it stays sane for images (d = 3072 with a
  chunk of 64 holds 64 tangents, not 3072).
* :func:`value_and_hutchinson_divergence` is the unbiased estimator
  :math:`E_\varepsilon[\varepsilon^\top J \varepsilon]` for probes with
  :math:`E[\varepsilon\varepsilon^\top] = I` (Gaussian or Rademacher), one JVP per probe.

The field must act on each example independently (true for score functions:
the Jacobian is block diagonal), so a JVP with the batch of basis vectors gives
every example's diagonal entry at once.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from jaxscore._checks import check_float_array

VectorField = Callable[[jax.Array], jax.Array]
ProbeKind = Literal["rademacher", "gaussian"]


def _flat_fn(fn: VectorField, shape: tuple[int, ...]):
    def flat(x_flat):
        return fn(x_flat.reshape(shape)).reshape(shape[0], -1)

    return flat


def value_and_exact_divergence(
    fn: VectorField, x: jax.Array, *, chunk_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
    r"""``(v(x), div v(x))`` with the exact Jacobian trace. x: [B, *D] -> ([B, *D], [B]).

    ``chunk_size`` basis directions are pushed through one vmapped JVP; default
    ``min(d, 64)``. Cost: d JVPs; memory: ``chunk_size`` tangents.
    """
    x = check_float_array("x", x, min_ndim=1)
    batch, d = x.shape[0], math.prod(x.shape[1:])
    chunk = min(d, 64) if chunk_size is None else int(chunk_size)
    if chunk < 1:
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size}.")
    flat = _flat_fn(fn, x.shape)
    x_flat = x.reshape(batch, d)
    value = flat(x_flat)
    num_chunks = -(-d // chunk)
    index = jnp.arange(num_chunks * chunk).reshape(num_chunks, chunk)

    def diag_entries(idx):  # idx: [chunk] -> [B, chunk] entries J_ii (0 for padding)
        tangents = jax.nn.one_hot(idx, d, dtype=x.dtype)  # [chunk, d]; padding rows are zero

        def one(tangent):
            _, jv = jax.jvp(flat, (x_flat,), (jnp.broadcast_to(tangent, x_flat.shape),))
            return jnp.sum(jv * tangent, axis=-1)  # [B]

        return jax.vmap(one, out_axes=1)(tangents)

    if num_chunks == 1:
        div = jnp.sum(diag_entries(index[0]), axis=-1)
    else:
        div = jnp.sum(jax.lax.map(diag_entries, index), axis=(0, 2))
    return value.reshape(x.shape), div


def exact_divergence(fn: VectorField, x: jax.Array, *, chunk_size: int | None = None) -> jax.Array:
    """Exact divergence [B] of ``fn`` at ``x: [B, *D]`` (see :func:`value_and_exact_divergence`)."""
    return value_and_exact_divergence(fn, x, chunk_size=chunk_size)[1]


def sample_probes(
    key: jax.Array, shape: tuple[int, ...], *, kind: ProbeKind = "rademacher", num_probes: int = 1, dtype=jnp.float32
) -> jax.Array:
    r"""Probe vectors with :math:`E[\varepsilon\varepsilon^\top] = I`: shape ``[num_probes, *shape]``."""
    full = (num_probes, *shape)
    if kind == "rademacher":
        return jax.random.rademacher(key, full, dtype=dtype)
    if kind == "gaussian":
        return jax.random.normal(key, full, dtype=dtype)
    raise ValueError(f"probe kind: expected 'rademacher' or 'gaussian', got {kind!r}.")


def value_and_hutchinson_divergence(
    fn: VectorField, x: jax.Array, probes: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""``(v(x), mean_p eps_p^T J eps_p)``: Hutchinson's unbiased trace estimate.

    x: [B, *D]; probes: [P, B, *D] (from :func:`sample_probes`). Returns ([B, *D], [B]).
    """
    x = check_float_array("x", x, min_ndim=1)
    if probes.shape[1:] != x.shape:
        raise ValueError(f"probes: expected shape [P, *{tuple(x.shape)}], got {tuple(probes.shape)}.")

    def one(probe):
        value, jv = jax.jvp(fn, (x,), (probe.astype(x.dtype),))
        return value, jnp.sum((jv * probe).reshape(x.shape[0], -1), axis=-1)

    values, ests = jax.vmap(one)(probes)
    return values[0], jnp.mean(ests, axis=0)


def hutchinson_divergence(
    fn: VectorField, x: jax.Array, key: jax.Array, *, kind: ProbeKind = "rademacher", num_probes: int = 1
) -> jax.Array:
    """Hutchinson divergence estimate [B] with fresh probes drawn from ``key``."""
    probes = sample_probes(key, x.shape, kind=kind, num_probes=num_probes, dtype=x.dtype)
    return value_and_hutchinson_divergence(fn, x, probes)[1]
