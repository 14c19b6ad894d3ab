r"""Samplers by name (the edge of the library: CLI and configs) and batched sampling with progress.

``sample(key, score_fn, sde, shape, sampler="dpmpp_2m", steps=20, **options)`` looks the name up
in :data:`SAMPLERS` and calls it. Library code should call the sampler functions directly.
:data:`SAMPLERS` maps each name to its :class:`~jaxscore.samplers.base.Sampler`, which carries the
sampler's facts (NFE, determinism, options); ``nfe_for_steps`` / ``steps_for_nfe`` /
``evals_per_step`` read them.

Batched sampling: :func:`sample_in_batches` draws ``num`` samples in batches spread over all local
devices; :func:`sample_local_shard` / :func:`iter_sample_batches` draw only this process's share
of them (multi-host), with their global example indices. Every sampler draws example ``g`` from
``fold_in(key, g)``, so none of this changes a sample.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxscore._checks import check_choice, check_key, check_shape, check_steps, format_indices, nonfinite_rows
from jaxscore.samplers import diffrax_samplers, edm, langevin, sde_samplers, solvers
from jaxscore.samplers.base import Sampler
from jaxscore.samplers.consistency import CONSISTENCY


def _registry(*samplers: Sampler) -> dict[str, Sampler]:
    names = [s.name for s in samplers]
    if len(set(names)) != len(names):
        raise ValueError(f"sampler registry: expected distinct names, got {names}.")
    return {s.name: s for s in samplers}


SAMPLERS: dict[str, Sampler] = _registry(
    sde_samplers.EULER_MARUYAMA,
    sde_samplers.REVERSE_DIFFUSION,
    sde_samplers.ANCESTRAL,
    langevin.PC,
    langevin.ANNEALED_LANGEVIN,
    solvers.DDIM,
    solvers.DPMPP_2M,
    solvers.DPMPP_3M,
    solvers.DPMPP_2M_SDE,
    solvers.UNIPC,
    edm.HEUN,
    edm.EDM_STOCHASTIC,
    diffrax_samplers.ODE,
    diffrax_samplers.SDE,
    CONSISTENCY,
)
"""name -> :class:`jaxscore.samplers.base.Sampler` (the function and its facts). A new sampler is one
module with its function and ``Sampler`` plus one line here."""


def available_samplers() -> tuple[str, ...]:
    """All registered names."""
    return tuple(SAMPLERS)


def get_sampler(name: str) -> Sampler:
    """The :class:`~jaxscore.samplers.base.Sampler` registered under ``name``: callable as its function
    (``get_sampler(name)(key, score_fn, sde, shape, steps=..., **options)``), with its facts
    (``.nfe``, ``.evals_per_step``, ``.deterministic``, ``.options``, ``.adaptive``) and ``.fn``."""
    check_choice("sampler", name, SAMPLERS)
    return SAMPLERS[name]


def sample(key, score_fn, sde, shape, sampler: str = "dpmpp_2m", steps: int | None = 20, **options):
    r"""Draw ``shape = (B, *D)`` samples with the named sampler: ``get_sampler(sampler)(key, score_fn, sde,
    shape, steps=steps, **options)``. Options are the sampler's keyword arguments (``grid``, ``t_min``,
    ``denoise``, ``return_info`` ...); unknown ones raise ``TypeError``. ``key`` is one PRNG key
    (``jax.random.key(seed)`` or a legacy ``jax.random.PRNGKey(seed)``; an int seed is a ``TypeError``).
    With ``return_info=True``, ``info["nonfinite"]`` counts the sample rows holding a NaN or inf
    (no error is raised here, so this stays jit-able; batched sampling raises on them).

    jit-able with ``score_fn``, ``sde`` closed over (or ``sde`` passed as an argument) and ``shape``,
    ``steps``, ``sampler`` static.
    """
    return get_sampler(sampler).fn(key, score_fn, sde, shape, steps=steps, **options)


def evals_per_step(sampler: str, **options) -> int:
    """Score evaluations per step of a fixed-step run (for matching NFE budgets); ``denoise`` adds one
    evaluation in total, not per step (:meth:`Sampler.evals_per_step`)."""
    return get_sampler(sampler).evals_per_step(**options)


def nfe_for_steps(sampler: str, steps: int, **options) -> int:
    """Score evaluations of a fixed-step run (what ``info["nfe"]`` reports; :meth:`Sampler.nfe`)."""
    return get_sampler(sampler).nfe(steps, **options)


def steps_for_nfe(sampler: str, nfe: int, **options) -> int:
    """Largest ``steps`` whose NFE (:func:`nfe_for_steps`) does not exceed ``nfe``; at least 1."""
    return get_sampler(sampler).steps_for_nfe(nfe, **options)


# --- batched sampling over local devices and processes ------------------------------------
# Each batch is a ``jax.shard_map`` over a 1-D mesh of local devices rather than ``jit`` with a
# sharded output: every device then provably runs the one-device sampler on its own block of rows
# (with its ``example_offset``), with no partitioner decisions inside the sampler's scan / diffrax
# loops and no communication, which is what makes the samples those of a one-device call.
# Processes never communicate either: each draws its own global indices (process_rows).
_BATCH_AXIS = "batch"


def _sampling_mesh(devices) -> Mesh:
    """1-D mesh the batch rows are split over: ``None`` -> all of ``jax.local_devices()``; an int
    ``n`` -> the first ``n`` local devices; a sequence of local ``jax.Device``; or a 1-D ``Mesh``."""
    local = jax.local_devices()
    if isinstance(devices, Mesh):
        if devices.devices.ndim != 1:
            raise ValueError(f"devices: expected a 1-D Mesh (one batch axis), got axes {devices.axis_names} "
                             f"of shape {devices.devices.shape}.")
        devs = list(devices.devices.flat)
    elif devices is None:
        devs = local
    elif isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(local):
            raise ValueError(f"devices: expected an int in [1, {len(local)}] (local devices), got {devices}.")
        devs = local[:devices]
    else:
        try:
            devs = list(devices)
        except TypeError:
            raise TypeError(f"devices: expected None, an int, a sequence of jax.Device or a 1-D Mesh, "
                            f"got {type(devices).__name__}.") from None
        if not devs or not all(isinstance(d, jax.Device) for d in devs) or len(set(devs)) != len(devs):
            raise ValueError(f"devices: expected a non-empty sequence of distinct jax.Device, got {devices!r}.")
    foreign = [d for d in devs if d not in local]
    if foreign:
        raise ValueError(f"devices: expected devices of this process (jax.local_devices()), got {foreign}.")
    if isinstance(devices, Mesh):
        return devices
    return Mesh(np.asarray(devs), (_BATCH_AXIS,))


def _check_process(process_index, process_count) -> tuple[int, int]:
    """``(p, P)``, each defaulting to ``jax.process_index()`` / ``jax.process_count()``."""
    p = jax.process_index() if process_index is None else process_index
    count = jax.process_count() if process_count is None else process_count
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"process_count: expected an int >= 1, got {count!r}.")
    if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < count:
        raise ValueError(f"process_index: expected an int in [0, {count}) (process_count={count}), got {p!r}.")
    return p, count


def process_rows(num: int, global_batch: int, process_index: int, process_count: int) -> list[tuple[int, int]]:
    r"""This process's rows of each global batch: ``[(first global index, count)]``, one pair per
    batch ``j < ceil(num / B)``.

    Global batch ``j`` covers the indices :math:`[jB, \min((j+1)B, num))`; process ``p`` of ``P``
    takes the contiguous share :math:`[jB + ps, jB + (p+1)s)` of it, :math:`s = \lceil B/P \rceil`
    (clipped to the batch and to ``num``; a count may be 0). Over all processes every index in
    ``[0, num)`` appears exactly once. Pure Python, the same on every process.
    """
    share = -(-global_batch // process_count)
    rows = []
    for j in range(math.ceil(num / global_batch)):
        first = j * global_batch + process_index * share
        end = min(first + share, (j + 1) * global_batch, num)
        rows.append((first, max(end - first, 0)))
    return rows


def _replicated_on(mesh: Mesh, tree):
    """Every ``jax.Array`` leaf of ``tree`` (a key, the parameters inside a ``Partial`` score)
    replicated over ``mesh``. A leaf of a multi-process array (e.g. parameters of a multi-host
    training state) must be replicated across processes; its local copy is used."""

    def local(x):
        if not isinstance(x, jax.Array) or isinstance(x, jax.core.Tracer):
            return x
        if not x.is_fully_addressable:
            if not x.sharding.is_fully_replicated:
                raise ValueError(f"score_fn: expected arrays that are replicated (or local to this process), got "
                                 f"a {x.shape} array sharded across processes ({x.sharding}); gather or replicate it.")
            x = x.addressable_data(0)
        return jax.device_put(x, NamedSharding(mesh, P()))

    return jax.tree_util.tree_map(local, tree)


@eqx.filter_jit
def _sample_batch(fn, key, offset, score_fn, sde, shape, steps, mesh, options):
    """Rows ``[offset, offset + shape[0])`` of ``fn(key, score_fn, sde, ...)``, split contiguously
    over ``mesh``'s one axis: device ``d`` samples ``shape[0] / mesh.size`` rows with
    ``example_offset = offset + d * shape[0] / mesh.size`` (``jax.shard_map``; no communication).
    ``key``, ``offset`` and the arrays inside ``score_fn`` / ``sde`` (e.g. the parameters of a
    ``jax.tree_util.Partial`` score) are traced and replicated, the rest is static, so this compiles
    once per (sampler, ``score_fn``, shape, steps, mesh, options). Returns ``(samples [shape[0], *D],
    nonfinite [shape[0]] bool)``, both sharded over the mesh (``nonfinite``: the row holds a NaN or
    inf, :func:`jaxscore._checks.nonfinite_rows`)."""
    (axis,) = mesh.axis_names
    rows = shape[0] // mesh.size

    # the arrays among key / score_fn / sde enter the per-device body as replicated inputs (closed
    # over, they would carry the outer mesh's sharding into the manual region and fail there)
    arrays, static = eqx.partition((key, score_fn, sde), eqx.is_array)

    def per_device(offset, arrays):
        key, score_fn, sde = eqx.combine(arrays, static)
        device_offset = offset + jax.lax.axis_index(axis).astype(jnp.uint32) * jnp.uint32(rows)
        x = fn(key, score_fn, sde, (rows, *shape[1:]), steps=steps, example_offset=device_offset, **options)
        return x, nonfinite_rows(x)

    # check_vma=False: the samplers' scans / diffrax loops mix replicated constants into carries
    # that become per-device; nothing is reduced across devices, so there is nothing to check.
    return jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P()), out_specs=(P(axis), P(axis)),
                         check_vma=False)(offset, arrays)


def _raise_if_nonfinite(sampler: str, nonfinite, indices: np.ndarray) -> None:
    """``FloatingPointError`` naming ``sampler``, the count and the first global example indices of
    the rows whose samples hold a NaN or inf (``nonfinite``: [n] bool, host-checked)."""
    bad = indices[np.asarray(nonfinite)]
    if bad.size:
        raise FloatingPointError(
            f"sampler {sampler!r}: {bad.size} of {indices.size} samples of this batch hold NaN or inf "
            f"(global example indices {format_indices(bad)}); the score_fn returned non-finite values or the "
            f"sampler diverged (check the model, the guidance scale and the sampler's options)."
        )


def iter_sample_batches(key, score_fn, sde, shape_per_batch, num: int, sampler: str = "dpmpp_2m",
                        steps: int | None = 20, *, process_index: int | None = None,
                        process_count: int | None = None, devices=None, progress: bool = True,
                        desc: str | None = None, **options):
    r"""Yield ``(samples [n_j, *D], indices [n_j])`` for this process's rows of each global batch
    (see :func:`sample_local_shard`; use this to stream batches into statistics without holding
    all samples). ``indices`` are global example indices (numpy int64); batches where this process
    has no rows are skipped.

    Every batch is checked on the host before it is yielded (while the next one is already
    dispatched): a sample holding a NaN or inf raises ``FloatingPointError`` naming the sampler, the
    number of such rows and their first global indices (non-finite samples are never returned)."""
    check_key(key)
    shape_per_batch = check_shape(shape_per_batch, name="shape_per_batch")
    check_steps(num, name="num")
    fn = get_sampler(sampler).fn  # every sampler takes example_offset (the Sampler contract)
    if options.get("return_info") or options.get("return_trajectory"):
        raise ValueError("batched sampling returns samples only; call sample(..., return_info=True) for info.")
    if "example_offset" in options:
        raise ValueError("example_offset: batched sampling sets it per batch and device; pass the key only.")
    if options.get("x_init") is not None:
        raise ValueError("x_init: batched sampling draws x_T per example from the key; call sample(..., x_init=...) "
                         "to start from given states.")
    p, count = _check_process(process_index, process_count)
    mesh = _sampling_mesh(devices)
    key, score_fn = _replicated_on(mesh, (key, score_fn))
    rows = [(first, n) for first, n in process_rows(num, shape_per_batch[0], p, count) if n > 0]
    share = -(-shape_per_batch[0] // count)
    local_shape = (-(-share // mesh.size) * mesh.size, *shape_per_batch[1:])  # padded to the device count
    iterator = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, desc=desc or f"sampling ({sampler})", unit="batch")
    pending = None  # the batch dispatched last, checked and yielded after the next one is dispatched
    for first, n in iterator:
        out, nonfinite = _sample_batch(fn, key, jnp.asarray(first, jnp.uint32), score_fn, sde, local_shape, steps,
                                       mesh, options)
        if pending is not None:
            yield _checked(sampler, *pending)
        pending = (out, nonfinite, first, n)
    if pending is not None:
        yield _checked(sampler, *pending)


def _checked(sampler: str, out, nonfinite, first: int, n: int) -> tuple[jax.Array, np.ndarray]:
    """``(samples [n, *D], indices [n])`` of one batch (its first ``n`` rows: the rest are padding),
    after the host check of :func:`_raise_if_nonfinite`."""
    indices = np.arange(first, first + n, dtype=np.int64)
    _raise_if_nonfinite(sampler, np.asarray(nonfinite)[:n], indices)
    return (out if n == out.shape[0] else out[:n]), indices


def sample_local_shard(key, score_fn, sde, shape_per_batch, num: int, sampler: str = "dpmpp_2m",
                       steps: int | None = 20, *, process_index: int | None = None,
                       process_count: int | None = None, devices=None, progress: bool = True,
                       desc: str | None = None, **options) -> tuple[jax.Array, np.ndarray]:
    r"""This process's share of ``num`` samples: ``(samples [n_local, *D], indices [n_local])``.

    Multi-host sampling without communication: ``shape_per_batch[0] = B`` is the *global* batch;
    global batch ``j`` covers example indices :math:`[jB, (j+1)B)`, of which process ``p`` (of
    ``P``; defaults ``jax.process_index()``, ``jax.process_count()``) draws the contiguous share of
    :math:`s = \lceil B/P \rceil` rows (:func:`process_rows`), spread over its local ``devices``
    (as in :func:`sample_in_batches`). Example ``g`` is drawn with the per-example key
    ``fold_in(key, g)``, so putting every process's ``samples`` at its ``indices`` gives
    ``sample_in_batches(key, ..., num)`` = ``sample(key, ..., (num, *D))`` of one process (up to
    float round-off, see :func:`sample_in_batches`). ``indices`` (numpy int64, increasing) are those
    global indices; ``samples`` live on the first of ``devices``.

    Example (each host of a pod; gather only if the samples fit on one host)::

        x, idx = sample_local_shard(key, score_fn, sde, (512, 32, 32, 3), 50_000, "dpmpp_2m", 20)
        # e.g. multihost_utils.process_allgather((x, idx)) then full[idx] = x,
        # or fold x into per-host statistics and merge those (jaxscore.evaluation)

    ``process_index`` / ``process_count`` may also be given without ``jax.distributed`` (e.g. the
    tasks of a job array each drawing a share); every process must pass the same ``key``, ``B``,
    ``num`` and options.

    Raises ``FloatingPointError`` (naming the sampler, the count and the first global indices) as
    soon as a batch holds a sample with a NaN or inf (:func:`iter_sample_batches`).
    """
    home = _sampling_mesh(devices).devices.flat[0]  # the result lives on one device, as a one-device call's
    samples, indices = [], []
    for x, idx in iter_sample_batches(key, score_fn, sde, shape_per_batch, num, sampler, steps,
                                      process_index=process_index, process_count=process_count, devices=devices,
                                      progress=progress, desc=desc, **options):
        samples.append(jax.device_put(x, home))  # asynchronous: the next batch is dispatched meanwhile
        indices.append(idx)
    if not samples:  # more processes than rows in every batch
        data_shape = check_shape(shape_per_batch)[1:]
        return jax.device_put(jnp.zeros((0, *data_shape), jnp.result_type(float)), home), np.zeros((0,), np.int64)
    return jnp.concatenate(samples, axis=0), np.concatenate(indices)


def sample_in_batches(key, score_fn, sde, shape_per_batch, num: int, sampler: str = "dpmpp_2m",
                      steps: int | None = 20, *, devices=None, progress: bool = True, desc: str | None = None,
                      **options) -> jax.Array:
    r"""Draw ``num`` samples ``[num, *D]`` (in order) in batches of ``B = shape_per_batch[0]``, each
    batch spread over ``devices`` (default: all of ``jax.local_devices()``; ``devices=1`` for one
    device, an int ``n`` for the first ``n``, or a sequence of devices / a 1-D ``Mesh``).

    A Python loop over batches (with a tqdm bar when ``progress``); each batch is one compiled call
    in which device ``d`` of ``n`` samples rows ``[d B/n, (d+1) B/n)`` with its own
    ``example_offset`` (``jax.shard_map``, no communication). A ``B`` that is not a multiple of
    ``n`` is padded up to one (the extra rows are computed and dropped, as are the rows of the last
    batch beyond ``num``).

    Example ``g`` (global index) is drawn with the per-example key ``fold_in(key, g)`` by every
    sampler, so the result depends neither on ``B`` nor on the devices: it equals
    ``sample(key, ..., (num, *D))`` to float round-off. Bitwise when ``score_fn`` treats rows
    independently and XLA computes a row the same way for these batch sizes (measured on CPU with
    an analytic score: the fixed-step samplers from 2 rows per device up; the diffrax ``ode`` /
    ``sde`` differ by ~1e-6, their loops being compiled differently for a multi-device program).
    ``info`` is not returned; use :func:`sample` for it. Every process of a multi-host job that
    calls this draws all ``num`` samples; use :func:`sample_local_shard` to split them. A batch
    holding a sample with a NaN or inf raises ``FloatingPointError`` naming the sampler, the count
    and the first global example indices (:func:`iter_sample_batches`).

    Compilation is cached across calls by the identity of ``score_fn``. To sample with new
    parameters without recompiling (an eval hook during training), pass the score as
    ``jax.tree_util.Partial(score_with_params, params)`` over one function object
    ``score_with_params(params, x, t)``: the parameters are then traced, not baked in.
    """
    samples, _ = sample_local_shard(key, score_fn, sde, shape_per_batch, num, sampler, steps, process_index=0,
                                    process_count=1, devices=devices, progress=progress, desc=desc, **options)
    return samples
