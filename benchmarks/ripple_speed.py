"""Forward+backward tokens/s of ripplegpt: JAX (jitted) vs torch (eager) vs the published
per-head formulation (torch eager), timed side by side in one run.

    python benchmarks/ripple_speed.py            # seed size: n_embd 384, 6 layers, batch 8, seq 256
    python benchmarks/ripple_speed.py --quick    # nano size, for a smoke run
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.timing import (  # noqa: E402
    add_cpu_time_option,
    add_malloc_option,
    apply_malloc_option,
    interleaved_median_seconds,
    machine_line,
    markdown_table,
)
from physnets_core.config import preset  # noqa: E402
from physnets_jax.losses import cross_entropy as jax_ce  # noqa: E402
from physnets_jax.model import Decoder as JaxDecoder  # noqa: E402
from physnets_torch.convert import load_jax_into_torch  # noqa: E402
from physnets_torch.losses import cross_entropy as torch_ce  # noqa: E402
from physnets_torch.model import Decoder as TorchDecoder  # noqa: E402
from tests.reference_models import ReferenceRippleGPT  # noqa: E402


def main() -> None:
    """Print one markdown table of tokens/s and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    add_malloc_option(parser)
    add_cpu_time_option(parser)
    args = parser.parse_args()
    malloc_line = apply_malloc_option(args)
    size = "nano" if args.quick else "small"
    cfg = preset("ripplegpt", size, dropout=0.0, block_size=args.seq)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.seq + 1))
    x, y = tokens[:, :-1], tokens[:, 1:]
    n_tokens = args.batch * args.seq

    jm = JaxDecoder(cfg, rngs=nnx.Rngs(0))
    jm.eval()
    graphdef, params, rest = nnx.split(jm, nnx.Param, ...)

    @jax.jit
    def jax_grads(params, x, y):
        return jax.value_and_grad(lambda p: jax_ce(nnx.merge(graphdef, p, rest)(x), y))(params)

    jx, jy = jax.numpy.asarray(x), jax.numpy.asarray(y)

    tm = TorchDecoder(cfg)
    load_jax_into_torch(jm, tm)
    ref = ReferenceRippleGPT(cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.n_embd).load_from_physnets(tm.state_dict())
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step(model):
        model.zero_grad(set_to_none=True)
        torch_ce(model(tx), ty).backward()

    times = interleaved_median_seconds(
        {
            "jax": lambda: jax.block_until_ready(jax_grads(params, jx, jy)),
            "torch": lambda: torch_step(tm),
            "reference": lambda: torch_step(ref),
        },
        repeats=args.repeats,
        cpu_time=args.cpu_time,
        calls_per_turn=2,  # each timed right after its own previous call, as in a training loop
    )
    t_jax, t_torch, t_ref = times["jax"], times["torch"], times["reference"]

    rows = [
        ["physnets_jax (jit)", f"{n_tokens / t_jax:,.0f}", f"{t_torch / t_jax:.2f}x"],
        ["physnets_torch (eager)", f"{n_tokens / t_torch:,.0f}", "1.00x"],
        ["published per-head formulation (torch eager)", f"{n_tokens / t_ref:,.0f}", f"{t_torch / t_ref:.2f}x"],
    ]
    print(f"ripplegpt-{size}: n_embd {cfg.n_embd}, {cfg.n_layer} layers, batch {args.batch}, seq {args.seq}, "
          f"forward+backward, median of {args.repeats} interleaved turns (the second of two calls each), {'CPU' if args.cpu_time else 'wall'} time, "
          f"{torch.get_num_threads()} torch threads")
    print(f"machine: {machine_line()}; {malloc_line}\n")
    print(markdown_table(["implementation", "tokens/s", "vs physnets_torch"], rows))


if __name__ == "__main__":
    main()
