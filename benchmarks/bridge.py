"""Cost of the jax2torch bridge (physnets_torch.bridge): per-call overhead on a tiny op, and
forward+backward tokens/s of a preset three ways (native torch, torch via the bridge, pure JAX).

    python benchmarks/bridge.py            # ripplegpt small (n_embd 384, 6 layers), batch 4, seq 128
    python benchmarks/bridge.py --quick    # ripplegpt nano, batch 4, seq 32: a smoke run
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

from benchmarks.timing import interleaved_median_seconds, machine_line, markdown_table  # noqa: E402
from physnets_core.config import preset  # noqa: E402
from physnets_jax.losses import cross_entropy as jax_ce  # noqa: E402
from physnets_jax.model import Decoder as JaxDecoder  # noqa: E402
from physnets_torch.bridge import JaxModule, jax_to_torch  # noqa: E402
from physnets_torch.convert import load_jax_into_torch  # noqa: E402
from physnets_torch.losses import cross_entropy as torch_ce  # noqa: E402
from physnets_torch.model import Decoder as TorchDecoder  # noqa: E402


def overhead_rows(repeats: int, calls: int) -> list[list[str]]:
    """Microseconds per call of y = 2x on a 16-element tensor: torch, bridge, jitted JAX."""
    x = torch.ones(16, requires_grad=True)
    a = jnp.ones(16)
    bridged = jax_to_torch(lambda x: x * 2)
    jit_fwd = jax.jit(lambda x: x * 2)
    jit_grad = jax.jit(jax.grad(lambda x: jnp.sum(x * 2)))

    def many(fn):
        def run():
            for _ in range(calls):
                fn()

        return run

    def torch_fb():
        (x * 2).sum().backward()

    def bridge_fb():
        bridged(x).sum().backward()

    def bridge_nograd():
        with torch.no_grad():
            bridged(x)

    times = interleaved_median_seconds(
        {
            "torch fwd": many(lambda: x * 2),
            "torch fwd+bwd": many(torch_fb),
            "jax fwd": many(lambda: jit_fwd(a).block_until_ready()),
            "jax grad": many(lambda: jit_grad(a).block_until_ready()),
            "bridge fwd (no_grad)": many(bridge_nograd),
            "bridge fwd (grad on)": many(lambda: bridged(x)),
            "bridge fwd+bwd": many(bridge_fb),
        },
        warmup=1,
        repeats=repeats,
    )
    us = {k: v / calls * 1e6 for k, v in times.items()}
    return [
        ["forward, grad off", f"{us['torch fwd']:.0f}", f"{us['jax fwd']:.0f}", f"{us['bridge fwd (no_grad)']:.0f}",
         f"{us['bridge fwd (no_grad)'] - us['jax fwd']:.0f}"],
        ["forward, grad on (jax.vjp)", f"{us['torch fwd']:.0f}", f"{us['jax fwd']:.0f}", f"{us['bridge fwd (grad on)']:.0f}",
         f"{us['bridge fwd (grad on)'] - us['jax fwd']:.0f}"],
        ["forward + backward", f"{us['torch fwd+bwd']:.0f}", f"{us['jax grad']:.0f}", f"{us['bridge fwd+bwd']:.0f}",
         f"{us['bridge fwd+bwd'] - us['jax grad']:.0f}"],
    ]


def model_rows(size: str, batch: int, seq: int, repeats: int) -> tuple[str, list[list[str]]]:
    """Forward+backward tokens/s of ripplegpt-`size` (dropout off), three ways."""
    cfg = preset("ripplegpt", size, dropout=0.0, block_size=seq)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    n_tokens = batch * seq

    jm = JaxDecoder(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(jm, nnx.Param, ...)

    @jax.jit
    def jax_grads(params, x, y):
        return jax.value_and_grad(lambda p: jax_ce(nnx.merge(graphdef, p, rest)(x), y))(params)

    jx, jy = jnp.asarray(x), jnp.asarray(y)
    native = TorchDecoder(cfg)
    load_jax_into_torch(jm, native)
    bridged = JaxModule(jm)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step(model):
        model.zero_grad(set_to_none=True)
        torch_ce(model(tx), ty).backward()

    times = interleaved_median_seconds(
        {
            "jax": lambda: jax.block_until_ready(jax_grads(params, jx, jy)),
            "native": lambda: torch_step(native),
            "bridge": lambda: torch_step(bridged),
        },
        repeats=repeats,
    )
    rows = [
        ["physnets_torch (native, eager)", f"{n_tokens / times['native']:,.0f}", f"{times['native'] * 1e3:.1f}", "1.00x"],
        ["physnets_jax via JaxModule (bridge)", f"{n_tokens / times['bridge']:,.0f}", f"{times['bridge'] * 1e3:.1f}",
         f"{times['native'] / times['bridge']:.2f}x"],
        ["physnets_jax (pure JAX, jit)", f"{n_tokens / times['jax']:,.0f}", f"{times['jax'] * 1e3:.1f}",
         f"{times['native'] / times['jax']:.2f}x"],
    ]
    title = (f"ripplegpt-{size}: n_embd {cfg.n_embd}, {cfg.n_layer} layers, batch {batch}, seq {seq}, "
             f"forward+backward of the cross-entropy, median of {repeats} interleaved")
    return title, rows


def main() -> None:
    """Print the two markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", default=None, help="ripplegpt size (default: small; nano with --quick)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads (on a shared, oversubscribed CPU 1 is steadier)")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    size = args.size or ("nano" if args.quick else "small")
    seq = args.seq or (32 if args.quick else 128)
    calls = 200 if args.quick else 1000

    print(f"machine: {machine_line()}, {torch.get_num_threads()} torch threads\n")
    print(f"Per-call cost, y = 2x on a 16-element float32 tensor, microseconds per call "
          f"(median of {args.repeats} interleaved runs of {calls} calls):\n")
    print(markdown_table(["call", "torch", "pure JAX (jit)", "bridge", "bridge - JAX"],
                         overhead_rows(args.repeats, calls)))
    title, rows = model_rows(size, args.batch, seq, args.repeats)
    print(f"\n{title}:\n")
    print(markdown_table(["implementation", "tokens/s", "ms/step", "vs native torch"], rows))


if __name__ == "__main__":
    main()
