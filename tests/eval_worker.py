"""The evaluation problem of tests/test_evaluation_pipeline.py, and its 2-process worker.

Run as ``python tests/eval_worker.py --out DIR --process_id I --port P``: starts ``jax.distributed``
on 127.0.0.1 (gloo CPU collectives, 2 fake devices per process), computes the merged statistics
of :func:`statistics` (each process sampling its own example indices), writes
``DIR/process_I.npz`` (``FeatureStats.to_arrays``) and prints ``RESULT {"fid": ...}`` against
:func:`reference`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax  # configured in main() before any operation initialises a backend
import jax.numpy as jnp
import numpy as np

SHAPE = (4, 4, 1)
NUM = 45  # batches of 12: the last one partial
DATA_STD = 0.5


def gaussian_score(sde):
    """Exact score of N(0, DATA_STD² I) diffused by the linear ``sde``: -x / (α² s² + σ²)."""
    def score(x, t):
        alpha, sigma = sde.marginal_coefs(t)
        var = (alpha * DATA_STD) ** 2 + sigma**2
        return -x / var.reshape((-1,) + (1,) * (x.ndim - 1))

    return score


def _features(params, images):
    w, v = params
    feats = jnp.tanh(images.reshape(images.shape[0], -1) @ w)
    return feats, feats @ v


def extractor():
    """A fixed random feature map: 16 pixels -> 6 features (tanh) -> 3 logits."""
    rng = np.random.default_rng(7)
    params = (np.asarray(rng.normal(size=(16, 6)) / 2, np.float32), np.asarray(rng.normal(size=(6, 3)), np.float32))
    return jax.tree_util.Partial(_features, params)


def statistics(devices=None):
    from jaxscore.evaluation.streaming import stats_of_samples
    from jaxscore.sde import VPSDE

    sde = VPSDE()
    return stats_of_samples(jax.random.key(5), gaussian_score(sde), sde, SHAPE, NUM, extractor(), sampler="dpmpp_2m",
                            steps=4, batch_size=12, keep=NUM, devices=devices)


def reference():
    """Statistics of 300 uint8 images of N(0, DATA_STD²) pixels."""
    from jaxscore.evaluation.streaming import stats_of_images

    rng = np.random.default_rng(8)
    images = np.clip(np.round((rng.normal(0, DATA_STD, (300, *SHAPE)) + 1) * 127.5), 0, 255).astype(np.uint8)
    return stats_of_images(images, extractor(), batch_size=100)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--process_id", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}", num_processes=2, process_id=args.process_id)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from jaxscore.evaluation.stats import fid_from_stats

    stats = statistics()
    np.savez(os.path.join(args.out, f"process_{args.process_id}.npz"), **stats.to_arrays())
    print("RESULT " + json.dumps({"fid": fid_from_stats(stats, reference()), "count": stats.count}), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
