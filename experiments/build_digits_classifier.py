"""Train the digits feature classifier and write the shipped weights (deterministic).

    python experiments/build_digits_classifier.py [--out PATH] [--seed 0] [--steps N]

Trains :func:`jaxscore.evaluation.digits_classifier.train_digits_classifier` on the digits train
split (the first 1617 of scikit-learn's 1797 images) and writes
``jaxscore/evaluation/weights/digits_classifier.npz`` (``--out`` to write elsewhere). Prints the
held-out accuracy on the last 180 images, the parameter count, the file size and the training time.
The same seed and steps give the same weights on the same platform (fixed keys and batch order).
"""

from __future__ import annotations

import argparse
import os
import time

import jax

from jaxscore.data.images import load_digits
from jaxscore.evaluation.digits_classifier import (
    DIGITS_SPEC,
    SHIPPED_WEIGHTS,
    accuracy,
    digits_extractor,
    load_classifier,
    param_count,
    save_classifier,
    train_digits_classifier,
)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=SHIPPED_WEIGHTS, help="where to write the .npz (default: the shipped file)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=DIGITS_SPEC.steps)
    args = parser.parse_args(argv)

    train, test = load_digits("train"), load_digits("test")
    start = time.perf_counter()
    params = jax.block_until_ready(
        train_digits_classifier(train["images"], train["labels"], seed=args.seed, steps=args.steps)
    )
    seconds = time.perf_counter() - start
    save_classifier(args.out, params, 8)
    reloaded = digits_extractor(load_classifier(args.out, 8))

    print(f"wrote {args.out}")
    print(f"spec: {DIGITS_SPEC}, seed {args.seed}, steps {args.steps}")
    print(f"parameters: {param_count(params)}")
    print(f"file size: {os.path.getsize(args.out)} bytes")
    print(f"training time: {seconds:.1f} s (compile included; {jax.device_count()} {jax.default_backend()} device(s))")
    for name, split in (("train", train), ("test", test)):
        acc = accuracy(reloaded, split["images"], split["labels"])
        print(f"{name} accuracy: {acc:.4f} ({split['images'].shape[0]} images)")


if __name__ == "__main__":
    main()
