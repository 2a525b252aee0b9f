"""Per-token cost of cached generation as the prefix grows, for ripple (KV cache) and gateloop
(recurrent state), in both backends.

    python benchmarks/generation_scaling.py
    python benchmarks/generation_scaling.py --prefixes 128,1024,4096 --size nano

A decoding step of ripple attention reads every cached key, so its cost grows linearly with the
prefix; a gate-loop step updates a fixed-size state, so its cost should not grow at all. The
per-token time is the slope between two generation lengths after the same prompt,
(t(prompt, long) - t(prompt, short)) / (long - short): the prompt's encoding and the fixed
per-call overheads cancel. Greedy decoding, batch 1, median of 3 after a warmup call (which also
compiles the JAX shapes).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import machine_line, markdown_table, median_seconds  # noqa: E402


def per_token_ms(generate_fn, prompt_len: int, short: int, long: int) -> float:
    """Slope of generation wall time in new tokens, in milliseconds per token."""
    t_short = median_seconds(lambda: generate_fn(prompt_len, short), warmup=1, repeats=3)
    t_long = median_seconds(lambda: generate_fn(prompt_len, long), warmup=1, repeats=3)
    return 1000 * (t_long - t_short) / (long - short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="ripplegpt,gateloop")
    parser.add_argument("--size", default="small")
    parser.add_argument("--prefixes", default="128,512,2048", help="prompt lengths (comma list)")
    parser.add_argument("--short", type=int, default=16, help="new tokens of the short run")
    parser.add_argument("--long", type=int, default=80, help="new tokens of the long run")
    args = parser.parse_args()
    if not 0 < args.short < args.long:
        parser.error(f"need 0 < --short ({args.short}) < --long ({args.long})")
    prefixes = [int(p) for p in args.prefixes.split(",")]

    import jax
    import numpy as np
    import torch
    from flax import nnx

    from physnets_core.config import preset
    from physnets_jax.generate import generate as jax_generate
    from physnets_jax.model import Decoder as JaxDecoder
    from physnets_torch.generate import generate as torch_generate
    from physnets_torch.model import Decoder as TorchDecoder

    rows = []
    for name in args.presets.split(","):
        cfg = preset(name, args.size, dropout=0.0)
        if not cfg.extrapolates:
            parser.error(f"{name} has learned positions: it cannot decode past block_size={cfg.block_size}")
        jax_model = JaxDecoder(cfg, rngs=nnx.Rngs(0))
        torch.manual_seed(0)
        torch_model = TorchDecoder(cfg).eval()
        rng = np.random.default_rng(0)
        prompts = {p: rng.integers(0, cfg.vocab_size, (1, p)) for p in prefixes}

        def run_jax(p, n, model=jax_model, prompts=prompts):
            return jax.block_until_ready(jax_generate(model, prompts[p], n, greedy=True))

        def run_torch(p, n, model=torch_model, prompts=prompts):
            with torch.no_grad():
                return torch_generate(model, torch.from_numpy(prompts[p]), n, greedy=True)

        for backend, fn in (("jax", run_jax), ("torch", run_torch)):
            costs = [per_token_ms(fn, p, args.short, args.long) for p in prefixes]
            rows.append([f"{name}-{args.size}", backend] + [f"{c:.2f}" for c in costs]
                        + [f"{costs[-1] / costs[0]:.2f}x"])
            print(f"  done {name} {backend}", file=sys.stderr, flush=True)
    print(f"machine: {machine_line()}\n")
    print(markdown_table(
        ["model", "backend"] + [f"ms/token after {p}" for p in prefixes] + [f"{prefixes[-1]} vs {prefixes[0]}"],
        rows,
    ))


if __name__ == "__main__":
    main()
