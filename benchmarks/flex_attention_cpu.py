"""Is FlexAttention worth using on this CPU? Ripple attention forward (inference: torch 2.13's
FlexAttention has no CPU backward), dense vs FlexAttention, eager and torch.compile'd.

    python benchmarks/flex_attention_cpu.py            # batch 4, 6 heads of 64, T 256 and 1024

Prints one markdown table of median milliseconds per call (interleaved runs).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _variants(q, k, v, decay):
    """The four callables timed at one shape."""
    import torch

    from physnets_torch.ops.attention import causal_attention
    from physnets_torch.ops.pallas_attention import pallas_causal_attention

    dense_c = torch.compile(lambda q, k, v: causal_attention(q, k, v, decay_H=decay))
    flex_c = torch.compile(lambda q, k, v: pallas_causal_attention(q, k, v, decay_H=decay))
    return {
        "dense eager": lambda: causal_attention(q, k, v, decay_H=decay),
        "dense compiled": lambda: dense_c(q, k, v),
        "flex eager": lambda: pallas_causal_attention(q, k, v, decay_H=decay),
        "flex compiled": lambda: flex_c(q, k, v),
    }


def main() -> None:
    """Time the four variants at each length and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", default="256,1024")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from benchmarks.timing import interleaved_median_seconds, machine_line, markdown_table

    torch.set_num_threads(args.threads)
    decay = torch.full((6,), -0.8)
    rows = []
    for T in (int(s) for s in args.seqs.split(",")):
        q, k, v = (torch.randn(args.batch, 6, T, 64) for _ in range(3))
        fns = _variants(q, k, v, decay)
        with torch.no_grad():
            for fn in fns.values():
                fn()  # compile outside the timing
            ms = {name: 1e3 * s for name, s in interleaved_median_seconds(fns, warmup=1, repeats=5).items()}
        rows.append([T] + [f"{ms[name]:.1f}" for name in fns])
    print(f"machine: {machine_line()}, torch threads {args.threads}")
    print(f"ripple attention forward, batch {args.batch}, 6 heads of 64, float32, median ms per call\n")
    print(markdown_table(["T", *fns], rows))


if __name__ == "__main__":
    main()
