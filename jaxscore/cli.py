"""``jaxscore`` command line: train / sample / likelihood over ml-collections configs.

    jaxscore train --config experiments/configs/toy2d.py --workdir runs/toy2d [--config.training.num_steps=500]
    jaxscore sample --workdir runs/toy2d --sampler dpmpp_2m --steps 20 --num 4096 --out samples.npz
    jaxscore likelihood --workdir runs/digits --data digits:test --num 256

``sample`` and ``likelihood`` use the EMA parameters of the latest checkpoint in the workdir.
This is the edge of the library: names (samplers, presets, datasets) are resolved here
and in :mod:`jaxscore.experiment`, never inside the numerics.
"""

from __future__ import annotations

import argparse
import sys


def _train(args, overrides) -> int:
    from jaxscore.config import load_config
    from jaxscore.experiment import train_and_evaluate

    config = load_config(args.config, overrides)
    train_and_evaluate(config, args.workdir, allow_config_change=args.allow_config_change)
    return 0


def _sample(args, overrides) -> int:
    from jaxscore.experiment import sample_from_workdir

    if overrides:
        raise SystemExit(f"sample: unexpected arguments {overrides}")
    path = sample_from_workdir(
        args.workdir, sampler=args.sampler, steps=args.steps, num=args.num, out=args.out,
        batch_size=args.batch_size, seed=args.seed,
    )
    print(f"wrote {path}")
    return 0


def _likelihood(args, overrides) -> int:
    from jaxscore.experiment import likelihood_from_workdir

    if overrides:
        raise SystemExit(f"likelihood: unexpected arguments {overrides}")
    result = likelihood_from_workdir(
        args.workdir, data=args.data, num=args.num, divergence=args.divergence, batch_size=args.batch_size,
        seed=args.seed,
    )
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxscore", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train (or resume) a model from a config file")
    train.add_argument("--config", required=True, help="config file (path.py or path.py:arg)")
    train.add_argument("--workdir", required=True, help="run directory: checkpoints, metrics, pictures")
    train.add_argument("--allow-config-change", action="store_true", help="resume even if the config differs from the saved one")
    train.set_defaults(run=_train)

    sample = sub.add_parser("sample", help="draw samples with the EMA parameters of the latest checkpoint")
    sample.add_argument("--workdir", required=True)
    sample.add_argument("--sampler", default="dpmpp_2m")
    sample.add_argument("--steps", type=int, default=20)
    sample.add_argument("--num", type=int, default=64)
    sample.add_argument("--batch-size", type=int, default=1024)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--out", default="samples.npz", help="npz file (key 'samples'); a PNG is written beside it")
    sample.set_defaults(run=_sample)

    lik = sub.add_parser("likelihood", help="mean NLL (nats) and bits/dim through the probability-flow ODE")
    lik.add_argument("--workdir", required=True)
    lik.add_argument("--data", default=None, help="'train', 'test' (the run's dataset) or an .npy/.npz file")
    lik.add_argument("--num", type=int, default=256)
    lik.add_argument("--batch-size", type=int, default=128)
    lik.add_argument("--divergence", choices=("exact", "hutchinson"), default="exact")
    lik.add_argument("--seed", type=int, default=0)
    lik.set_defaults(run=_likelihood)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    overrides = [a for a in rest if a.startswith("--config.")]
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from jaxscore.config import ConfigError

    try:
        return args.run(args, overrides)
    except ConfigError as e:
        print(f"jaxscore: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
