"""Train a physnets model with JAX: `python train_jax.py` trains the default preset (ripplegpt,
micro size) on the embedded Shakespeare corpus, shows progress, validation losses and samples,
writes checkpoints, metrics.jsonl and loss.png to runs/, and prints a final sample.
`--help` lists the options; docs/training.md documents them. Same as `physnets train`."""

from __future__ import annotations

import sys


def build_parser():
    """The command-line options (physnets_jax.training.cli.build_train_parser)."""
    from physnets_jax.training.cli import build_train_parser

    return build_train_parser()


def main(argv: list[str] | None = None) -> int:
    """Parse options and train (physnets_jax.training.cli.train_main)."""
    from physnets_jax.training.cli import train_main

    return train_main(argv)


if __name__ == "__main__":
    sys.exit(main())
