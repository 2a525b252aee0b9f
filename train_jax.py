"""Train a physnets model with JAX: `python train_jax.py` trains the default preset on the
embedded Shakespeare corpus, shows progress and prints a sample. `--help` lists the options."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    from physnets_jax.config import preset_names

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="ripplegpt", help=f"one of: {', '.join(preset_names())}")
    p.add_argument("--size", default="micro", help="preset size (nano, micro, small = the seed's size)")
    p.add_argument("--data", default=None, help="local text file or folder; default: embedded Shakespeare plays")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--block-size", type=int, default=None, help="training context (default: the preset's)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup-steps", type=int, default=30)
    p.add_argument("--dropout", type=float, default=None, help="override the preset's dropout")
    p.add_argument("--eval-interval", type=int, default=100)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--sample-tokens", type=int, default=300, help="length of the printed sample")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parse options, train, print the final losses and a sample."""
    args = build_parser().parse_args(argv)
    import jax
    import numpy as np

    from physnets_jax.config import preset
    from physnets_jax.data import CharTokenizer, TokenData, embedded_shakespeare, read_text_source
    from physnets_jax.generate import generate
    from physnets_jax.model import build_model, count_params
    from physnets_jax.train import TrainConfig, train

    text = embedded_shakespeare() if args.data is None else read_text_source(args.data)
    tokenizer = CharTokenizer.train(text)
    overrides = {"vocab_size": tokenizer.vocab_size}
    if args.block_size is not None:
        overrides["block_size"] = args.block_size
    if args.dropout is not None:
        overrides["dropout"] = args.dropout
    cfg = preset(args.preset, args.size, **overrides)
    tc = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        eval_interval=args.eval_interval, seed=args.seed,
    )
    data = TokenData(tokenizer.encode(text))
    model = build_model(cfg, seed=args.seed)
    print(
        f"{args.preset}-{args.size}: {count_params(model):,} parameters, {len(text):,} characters "
        f"(vocab {tokenizer.vocab_size}), {tc.steps} steps of {tc.batch_size}x{cfg.block_size} tokens "
        f"on {jax.devices()[0].platform}",
        flush=True,
    )
    summary = train(model, data, tc, progress=not args.no_progress)
    print(
        f"done: train loss {summary['train_loss']:.4f}, val loss {summary['val_loss']:.4f}, "
        f"{summary['tokens_per_s']:,.0f} tokens/s, {summary['seconds']:.0f} s"
    )
    prompt = np.asarray(tokenizer.encode("ROMEO:\n"))[None]
    sample = generate(model, prompt, args.sample_tokens, key=jax.random.key(args.seed), temperature=0.8, top_k=20)
    print("-" * 60 + "\n" + tokenizer.decode(np.asarray(sample)[0]) + "\n" + "-" * 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
