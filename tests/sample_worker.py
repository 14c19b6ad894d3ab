"""Subprocess worker for the 2-process sampling test (tests/test_sample_sharded.py).

Run as ``python tests/sample_worker.py --out DIR --devices N --num_processes 2 --process_id I --port P``:
starts ``jax.distributed`` on 127.0.0.1 (gloo CPU collectives), draws this process's share of
every case in :data:`CASES` with ``sample_local_shard`` (process index and count from
``jax.process_index()`` / ``jax.process_count()``), and the first case again with a score over
parameters replicated across processes (:func:`global_params_score`), saves ``DIR/process_I.npz``
with ``<case>_samples`` and ``<case>_indices`` (``<case>`` the sampler name or ``global_params``)
and prints one JSON line ``RESULT {...}``.
The problem is importable so the test builds the identical one-process reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# (sampler, steps, options): a deterministic fixed-step solver and the stochastic diffrax reverse SDE
CASES = (("dpmpp_2m", 4, {}), ("sde", 4, {}))
GLOBAL_BATCH = 10  # 2 processes: 5 rows each per global batch, padded to their device counts
NUM = 23  # not a multiple of the global batch: the last batch has 3 rows (all on process 0)
SEED = 5


def problem():
    """``(key, sde, score_fn)``: the exact score of the ring mixture under the VP SDE."""
    import jax

    from jaxscore.data.toy import ring_mixture
    from jaxscore.sde import VPSDE

    sde = VPSDE()
    return jax.random.key(SEED), sde, ring_mixture().score_fn(sde)


def global_params_score(score_fn):
    """``Partial(scaled, scale)`` with ``scale = 1`` a multi-process array replicated over every
    process's devices, like the parameters of a multi-host training state: ``scale * score_fn``."""
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    def scaled(scale, x, t):
        return scale * score_fn(x, t)

    mesh = Mesh(np.asarray(jax.devices()), ("all",))
    scale = jax.make_array_from_callback((), NamedSharding(mesh, PartitionSpec()), lambda _: np.float32(1.0))
    assert not scale.is_fully_addressable
    return jax.tree_util.Partial(scaled, scale)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--devices", type=int, default=2, help="fake CPU devices in this process")
    p.add_argument("--num_processes", type=int, default=2)
    p.add_argument("--process_id", type=int, default=0)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)

    import jax

    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", args.devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes,
                               process_id=args.process_id)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import numpy as np

    from jaxscore.samplers.api import sample_local_shard

    key, sde, score_fn = problem()
    arrays, counts = {}, {}
    for sampler, steps, options in CASES:
        x, idx = sample_local_shard(key, score_fn, sde, (GLOBAL_BATCH, 2), NUM, sampler, steps, progress=False,
                                    **options)
        arrays[f"{sampler}_samples"] = np.asarray(x)
        arrays[f"{sampler}_indices"] = idx
        counts[sampler] = int(idx.size)
    # the eval-hook case: a score over parameters that live on all processes' devices
    x, idx = sample_local_shard(key, global_params_score(score_fn), sde, (GLOBAL_BATCH, 2), NUM, CASES[0][0],
                                CASES[0][1], progress=False, **CASES[0][2])
    arrays["global_params_samples"], arrays["global_params_indices"] = np.asarray(x), idx
    np.savez(os.path.join(args.out, f"process_{jax.process_index()}.npz"), **arrays)
    summary = {"process_index": jax.process_index(), "process_count": jax.process_count(),
               "local_devices": jax.local_device_count(), "rows": counts}
    print("RESULT " + json.dumps(summary), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
