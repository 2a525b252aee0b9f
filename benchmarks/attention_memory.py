"""Memory and speed of the ripple attention paths: dense ((B, H, T, T) scores) vs blockwise
(attention_impl='blockwise', memory linear in T), one RippleAttention layer, forward + backward.

    python benchmarks/attention_memory.py             # n_embd 384, 6 heads, batch 1; T = 1k, 4k, 16k
    python benchmarks/attention_memory.py --quick     # T = 256, 1024

JAX memory: XLA's buffer assignment of the jitted forward + backward (arguments, outputs and
temporaries; compiled, not run, so the dense path at 16k is reported without allocating it).
Speed: median tokens/s of forward + backward, JAX jitted and torch eager, where the dense path fits.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.timing import machine_line, markdown_table, median_seconds  # noqa: E402
from physnets_core.config import preset  # noqa: E402
from physnets_jax.layers.ripple import RippleAttention as JaxRipple  # noqa: E402
from physnets_torch.convert import load_jax_into_torch  # noqa: E402
from physnets_torch.layers.ripple import RippleAttention as TorchRipple  # noqa: E402

MiB = 2**20


def _jax_fwd_bwd(layer):
    graphdef, params, rest = nnx.split(layer, nnx.Param, ...)

    @jax.jit
    def step(params, x):
        def loss(params, x):
            return jnp.sum(nnx.merge(graphdef, params, rest)(x) ** 2)

        return jax.grad(loss, argnums=(0, 1))(params, x)

    return step, params


def _row(T: int, impl: str, block: int, *, time_it: bool) -> list:
    """[T, path, JAX MiB, JAX temp MiB, JAX tokens/s, torch tokens/s] of one layer's fwd + bwd."""
    cfg = preset("ripplegpt", "small", dropout=0.0, block_size=T, attention_impl=impl, attention_block=block)
    layer = JaxRipple(cfg, 0, rngs=nnx.Rngs(0))
    step, params = _jax_fwd_bwd(layer)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, T, cfg.n_embd)), jnp.float32)
    mem = step.lower(params, x).compile().memory_analysis()
    total = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes) / MiB
    row = [T, impl, f"{total:,.0f}", f"{mem.temp_size_in_bytes / MiB:,.0f}"]
    if not time_it:
        return row + ["-", "-"]
    jax_s = median_seconds(lambda: jax.block_until_ready(step(params, x)), warmup=1, repeats=3)
    tl = TorchRipple(cfg, 0)
    load_jax_into_torch(layer, tl)
    xt = torch.from_numpy(np.asarray(x)).requires_grad_(True)

    def torch_step():
        tl.zero_grad(set_to_none=True)
        xt.grad = None
        (tl(xt) ** 2).sum().backward()

    torch_s = median_seconds(torch_step, warmup=1, repeats=3)
    return row + [f"{T / jax_s:,.0f}", f"{T / torch_s:,.0f}"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--block", type=int, default=256)
    args = p.parse_args()
    lengths = [256, 1024] if args.quick else [1024, 4096, 16384]
    time_max = 1024 if args.quick else 4096  # the dense path's timing beyond this needs > 10 GB
    torch.set_num_threads(2)
    rows = []
    for T in lengths:
        for impl in ("dense", "blockwise"):
            rows.append(_row(T, impl, args.block, time_it=T <= time_max))
            print(f"  done T={T} {impl}", file=sys.stderr, flush=True)
    print(machine_line())
    print(f"RippleAttention n_embd 384, 6 heads, batch 1, float32, forward + backward; blockwise block {args.block}\n")
    print(markdown_table(["T", "path", "JAX MiB (args+out+temp)", "JAX temp MiB", "JAX tokens/s", "torch tokens/s"],
                         rows))


if __name__ == "__main__":
    main()
