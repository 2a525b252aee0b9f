"""Where a training step's time goes: forward alone vs forward + backward, JAX vs torch eager.

    python benchmarks/backward_cost.py                       # gpt micro, batch 4 x 256
    python benchmarks/backward_cost.py --preset ripplegpt --size small --batch 8

Prints the loss forward and the loss forward + backward (gradients of every parameter) in
milliseconds, median of --repeats interleaved turns after warmup (JAX jitted, compilation
excluded; each turn times the second of two calls in a row, so every program is timed with its own
working set in the caches, as in a training loop), and the backward's cost as a multiple of the
forward: (forward + backward - forward) / forward, the measure issue 14 states its 2.5x target in.
A matmul-bound network's backward does twice its forward's matmul FLOPs, so that ratio is about 2
(plus attention's recomputed scores); a larger one means the backward spends time outside matmuls.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import (  # noqa: E402
    add_cpu_time_option,
    add_malloc_option,
    apply_malloc_option,
    interleaved_median_seconds,
    machine_line,
    markdown_table,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt")
    parser.add_argument("--size", default="micro")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7, help="timed turns per contender (median)")
    add_malloc_option(parser)
    add_cpu_time_option(parser)
    args = parser.parse_args()
    malloc_line = apply_malloc_option(args)

    import jax
    import numpy as np
    import torch
    from flax import nnx

    from physnets_core.config import preset
    from physnets_jax.losses import cross_entropy as jax_ce
    from physnets_jax.model import Decoder as JaxDecoder
    from physnets_torch.losses import cross_entropy as torch_ce
    from physnets_torch.model import Decoder as TorchDecoder

    cfg = preset(args.preset, args.size, dropout=0.0, block_size=args.seq)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.seq))

    graphdef, params, rest = nnx.split(JaxDecoder(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
    x = jax.device_put(tokens.astype(np.int32))

    def jax_loss(p, r, x):
        return jax_ce(nnx.merge(graphdef, p, r)(x), x)

    jax_forward = jax.jit(jax_loss)
    jax_grad = jax.jit(jax.grad(jax_loss))

    torch.manual_seed(0)
    model = TorchDecoder(cfg)
    tx = torch.from_numpy(tokens)

    def torch_forward():
        with torch.no_grad():
            return torch_ce(model(tx), tx)

    def torch_grad():
        model.zero_grad(set_to_none=True)
        torch_ce(model(tx), tx).backward()

    secs = interleaved_median_seconds({
        "jax forward": lambda: jax.block_until_ready(jax_forward(params, rest, x)),
        "jax forward+backward": lambda: jax.block_until_ready(jax_grad(params, rest, x)),
        "torch forward": torch_forward,
        "torch forward+backward": torch_grad,
    }, repeats=args.repeats, cpu_time=args.cpu_time, calls_per_turn=2)
    rows = []
    for backend in ("jax", "torch"):
        fwd, both = secs[f"{backend} forward"], secs[f"{backend} forward+backward"]
        rows.append([backend, f"{1000 * fwd:.1f}", f"{1000 * both:.1f}", f"{(both - fwd) / fwd:.2f}x"])
    print(f"machine: {machine_line()}; {malloc_line}")
    print(f"{args.preset}-{args.size}, batch {args.batch} x {args.seq} tokens, median of {args.repeats} interleaved, "
          f"{'CPU' if args.cpu_time else 'wall'} time, {torch.get_num_threads()} torch threads\n")
    print(markdown_table(["backend", "forward ms", "forward + backward ms", "backward / forward"], rows))


if __name__ == "__main__":
    main()
