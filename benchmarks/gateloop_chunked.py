"""GateLoopedAttention with head dim > 1: the current scan over (T, dk, dv) states against the
chunked matmul form (gateloop_scan="chunked_matmul"). Prints a markdown table (docs/gateloop.md).

    python benchmarks/gateloop_chunked.py              # head dim 1, 16, 64 at seq 1024 and 4096
    python benchmarks/gateloop_chunked.py --quick      # seq 1024 only, 3 repeats

One step = forward + backward (w.r.t. parameters and input) of one GateLoopedAttention layer,
dim 256 (heads = 256 / head dim), batch 1, loss mean(y^2), float32. Contenders:
  jax current   : gateloop_scan="auto" (lax.scan over positions on CPU, associative_scan on GPU/TPU)
  jax chunked   : gateloop_scan="chunked_matmul", chunk --chunk (default 64)
  torch current : the blocked two-level scan (torch's scan for every scan name but heinsen/chunked_matmul)
  torch chunked : gateloop_scan="chunked_matmul"
The four are timed round-robin (benchmarks/timing.py) and each cell is a median, so load changes on a
shared machine hit all alike; the ratio columns (chunked / current) are the figures to read. The JAX
memory columns are XLA's compiled temporaries for the step.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.timing import interleaved_median_seconds, machine_line, markdown_table  # noqa: E402
from physnets_core.config import ModelConfig  # noqa: E402
from physnets_jax.layers import gateloop as jgl  # noqa: E402
from physnets_torch.layers import gateloop as tgl  # noqa: E402


def _cfg(dim: int, head_dim: int, scan: str, chunk: int) -> ModelConfig:
    return ModelConfig.from_dict(dict(n_embd=dim, n_head=1, gateloop={"heads": dim // head_dim, "scan": scan,
                                                                     "chunk_size": chunk}))


def jax_step(cfg: ModelConfig, batch: int, T: int):
    """Jitted forward+backward of the JAX layer; returns (blocking callable, temp MiB)."""
    layer = jgl.GateLoopedAttention(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)
    x = jax.random.normal(jax.random.key(0), (batch, T, cfg.n_embd))

    def loss(p, x):
        return jnp.mean(nnx.merge(graphdef, p)(x) ** 2)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    mem = compiled.memory_analysis()
    mib = mem.temp_size_in_bytes / 2**20 if mem is not None else float("nan")
    return (lambda: jax.block_until_ready(compiled(params, x))), mib


def torch_step(cfg: ModelConfig, batch: int, T: int):
    """Forward+backward of the torch layer (params and input gradients)."""
    torch.manual_seed(0)
    layer = tgl.GateLoopedAttention(cfg)
    x = torch.randn(batch, T, cfg.n_embd, requires_grad=True)

    def run():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).square().mean().backward()

    return run


def table(head_dims, lengths, *, dim: int, batch: int, chunk: int, repeats: int) -> str:
    rows = []
    for hd in head_dims:
        for T in lengths:
            j_cur, j_cur_mib = jax_step(_cfg(dim, hd, "auto", chunk), batch, T)
            j_chk, j_chk_mib = jax_step(_cfg(dim, hd, "chunked_matmul", chunk), batch, T)
            fns = {
                "jax current": j_cur,
                "jax chunked": j_chk,
                "torch current": torch_step(_cfg(dim, hd, "auto", chunk), batch, T),
                "torch chunked": torch_step(_cfg(dim, hd, "chunked_matmul", chunk), batch, T),
            }
            secs = interleaved_median_seconds(fns, warmup=1, repeats=repeats)
            tps = {name: batch * T / s for name, s in secs.items()}
            rows.append([
                hd, dim // hd, T,
                f"{tps['jax current'] / 1e3:.1f}k", f"{tps['jax chunked'] / 1e3:.1f}k",
                f"{tps['jax chunked'] / tps['jax current']:.2f}x",
                f"{tps['torch current'] / 1e3:.1f}k", f"{tps['torch chunked'] / 1e3:.1f}k",
                f"{tps['torch chunked'] / tps['torch current']:.2f}x",
                f"{j_cur_mib:.0f}", f"{j_chk_mib:.0f}",
            ])
            print("  " + " | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
    return markdown_table(
        ["head dim", "heads", "seq", "jax current", "jax chunked", "jax ratio", "torch current", "torch chunked",
         "torch ratio", "jax current temp MiB", "jax chunked temp MiB"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seq 1024 only, 3 repeats")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=64, help="gateloop_chunk_size of the chunked form")
    parser.add_argument("--head-dims", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [1024] if args.quick else [1024, 4096]
    repeats = args.repeats or (3 if args.quick else 5)
    print(f"Machine: {machine_line()}; torch threads {torch.get_num_threads()}")
    print(f"\nGateLoopedAttention forward+backward, dim {args.dim}, batch {args.batch}, chunk {args.chunk}: "
          f"tokens/s (higher is better), medians of {repeats} interleaved repeats\n")
    print(table(args.head_dims, lengths, dim=args.dim, batch=args.batch, chunk=args.chunk, repeats=repeats))
    print(f"\nCommand: python benchmarks/gateloop_chunked.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
