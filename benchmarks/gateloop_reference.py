"""Whole-model training steps against the published GateLoop package (gateloop-transformer 0.2.5).

    python benchmarks/gateloop_reference.py --peer-site <site-packages holding gateloop-transformer 0.2.5>

The issue's reference figures: the package's `Transformer` at dim 256, depth 4, batch 8, 256-token
vocabulary trains at 4.7k tokens/s with gate-looped attention and 5.4k with softmax attention at
seq 256 on this machine (4.9k and 1.5k at seq 1024). This script times, round-robin in one run:

  peer gateloop : Transformer(use_gate_looped_attn=True), the package defaults (its attention
                  block is gradient-checkpointed by default)
  peer softmax  : Transformer(use_gate_looped_attn=False) (8 heads of 64, no rotary: its defaults)
  physnets torch / jax gateloop : the `gateloop` preset at dim 256, depth 4 (the same
                  architecture as the peer's gate-looped Transformer; tests/test_reference_fidelity.py)
  physnets torch / jax softmax  : the same preset with mixer="attention" (n_embd 256, 4 heads)

A step is forward + cross entropy + backward + AdamW (lr 1e-3). Each turn runs a contender's step
twice and times the second, so every model is timed right after its own step, as in a training
run (timed right after the torch models' steps, the JAX gateloop step at seq 1024 took 1.3 s
instead of 0.9 s). Install the package outside the
project environment (`pip download --no-deps gateloop-transformer==0.2.5 rotary-embedding-torch`
and unzip both wheels into one folder): its import needs only torch and einops.
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

DIM, DEPTH, VOCAB = 256, 4, 256


def _physnets_cfg(mixer: str, seq: int):
    from physnets_core.config import preset

    return preset("gateloop", "small", n_embd=DIM, n_layer=DEPTH, n_head=4, vocab_size=VOCAB,
                  block_size=seq, mixer=mixer)


def physnets_torch_step(mixer: str, tokens):
    import torch

    from benchmarks.train_steps import torch_train_step
    from physnets_torch.losses import cross_entropy
    from physnets_torch.model import Decoder, count_params

    torch.manual_seed(0)
    model = Decoder(_physnets_cfg(mixer, tokens.shape[1]))
    return torch_train_step(model, tokens, lambda f, x: cross_entropy(f(x), x)), count_params(model)


def physnets_jax_step(mixer: str, tokens):
    import jax

    from benchmarks.train_steps import JaxTrainStep

    step = JaxTrainStep(_physnets_cfg(mixer, tokens.shape[1]), tokens.numpy())
    return (lambda: jax.block_until_ready(step())), step.n_params


def peer_step(gate_looped: bool, tokens):
    import torch
    from gateloop_transformer import Transformer

    from benchmarks.train_steps import torch_train_step

    torch.manual_seed(0)
    model = Transformer(num_tokens=VOCAB, dim=DIM, depth=DEPTH, use_gate_looped_attn=gate_looped)
    # The package's own loss shifts inside (return_loss=True): T - 1 predicted positions.
    step = torch_train_step(model, tokens, lambda f, x: f(x, return_loss=True))
    return step, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer-site", default=None, help="folder holding gateloop_transformer (and rotary_embedding_torch)")
    parser.add_argument("--seqs", default="256,1024")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    add_malloc_option(parser)
    add_cpu_time_option(parser)
    args = parser.parse_args()
    malloc_line = apply_malloc_option(args)
    if args.peer_site:
        sys.path.append(args.peer_site)
    try:
        import gateloop_transformer  # noqa: F401
    except ImportError as err:
        parser.error(f"gateloop_transformer is not importable ({err}); pass --peer-site (see the docstring)")

    import numpy as np
    import torch

    rows = []
    for seq in (int(s) for s in args.seqs.split(",")):
        tokens = torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, (args.batch, seq)))
        contenders = {
            "peer gateloop": peer_step(True, tokens),
            "physnets torch gateloop": physnets_torch_step("gateloop", tokens),
            "physnets jax gateloop": physnets_jax_step("gateloop", tokens),
            "peer softmax": peer_step(False, tokens),
            "physnets torch softmax": physnets_torch_step("attention", tokens),
            "physnets jax softmax": physnets_jax_step("attention", tokens),
        }
        secs = interleaved_median_seconds({k: v[0] for k, v in contenders.items()}, repeats=args.repeats,
                                            cpu_time=args.cpu_time, calls_per_turn=2)
        for name, (_, n_params) in contenders.items():
            peer = "peer gateloop" if "gateloop" in name else "peer softmax"
            rows.append([seq, name, f"{n_params:,}", f"{args.batch * seq / secs[name]:,.0f}",
                         f"{secs[peer] / secs[name]:.2f}x"])
        print(f"  done seq {seq}", file=sys.stderr, flush=True)
    print(f"machine: {machine_line()}; torch threads {torch.get_num_threads()}; {malloc_line}; "
          f"{'CPU' if args.cpu_time else 'wall'} time")
    print(f"training step (forward + backward + AdamW), dim {DIM}, depth {DEPTH}, batch {args.batch}, "
          f"median of {args.repeats} interleaved turns (the second of two steps each)\n")
    print(markdown_table(["seq", "model", "params", "tokens/s", "vs peer"], rows))


if __name__ == "__main__":
    main()
