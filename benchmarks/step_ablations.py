"""Whole JAX training steps with one of issue 14's changes undone, timed side by side (CPU time).

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1 python benchmarks/step_ablations.py

Each row is one training step (forward + loss + backward + AdamW, benchmarks/train_steps.py) of the
same model and tokens, median of interleaved rounds of the process's CPU time (one thread per
framework with the flags above, so a loaded machine changes the figures little):

  gateloop (dim 256, depth 4, batch 8 x 256, the gateloop_reference.py model):
    as built   : the state transition's exp(i angle z) as z / |z|
    atan2 form : sigmoid(|z|) (cos + i sin)(angle z), the textbook form it replaced
  ripplegpt-small and gpt-small with their dropout (batch 8 x 256), JAX and torch:
    as built   : 16-bit dropout draws (layers/dropout.py), attention-weight dropout inside the
                 custom-vjp attention (and the MLP's hidden dropout inside mlp_core for wave_gpt)
    nnx.Dropout + autodiff attention : what these replaced
    dropout 0  : the same model without dropout (what dropout costs at all)
  torch rows: physnets_torch eager with and without dropout, for the same ratio.
  ripplegpt-small at seq 1024 (batch 2 x 1024, dropout 0):
    as built   : the hand-written attention over query tiles, each against the keys it sees
    one tile   : the whole (T, T) score matrix, masked half included
  wave_gpt+linear-small (pure wave attention, chunked linear mode, batch 8 x 256, dropout 0):
    as built   : the attention from its projections rematerialised in the backward
    no remat   : XLA's autodiff residuals, stacked per layer by the layer scan

`--quick` runs nano sizes (a smoke test of the script).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import (  # noqa: E402
    add_malloc_option,
    apply_malloc_option,
    interleaved_median_seconds,
    machine_line,
    markdown_table,
)


def _atan2_state_transition(z, *, ablate_complex, ablate_state_transition, frac_gradient=0.9):
    """The state transition's textbook form (before issue 14): sigmoid(|z|) exp(i atan2(im, re))."""
    import jax
    import jax.numpy as jnp

    from physnets_jax.layers import gateloop

    if ablate_complex or ablate_state_transition:
        return gateloop.state_transition(z, ablate_complex=ablate_complex,
                                         ablate_state_transition=ablate_state_transition, frac_gradient=frac_gradient)
    z = z * frac_gradient + jax.lax.stop_gradient(z) * (1.0 - frac_gradient)
    z = z.reshape(z.shape[:-1] + (z.shape[-1] // 2, 2))
    zc = jax.lax.complex(z[..., 0], z[..., 1])
    magnitude, phase = jax.nn.sigmoid(jnp.abs(zc)), jnp.angle(zc)
    return jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))


def _undo_dropout_changes():
    """Context: nnx.Dropout's draws and the autodiff attention / MLP paths while models are built and traced."""
    import contextlib

    from flax import nnx

    from physnets_jax.layers import attention, dropout, wave

    @contextlib.contextmanager
    def undone():
        saved = (dropout.Dropout.__call__, attention._attention_without_cache)

        def autodiff_attention(q, k, v, decay, weights_dropout, cfg):
            if attention._weight_dropout_active(weights_dropout):
                return attention.causal_attention(q, k, v, decay_H=decay, weights_dropout=weights_dropout)
            return saved[1](q, k, v, decay, weights_dropout, cfg)

        dropout.Dropout.__call__ = nnx.Dropout.__call__
        attention._attention_without_cache = autodiff_attention
        wave_call = wave.WaveMLP.__call__
        wave.WaveMLP.__call__ = lambda self, x: self.drop(self.fc2(self.drop(wave.wave_activation(self.fc1(x), self.kind))))
        try:
            yield
        finally:
            dropout.Dropout.__call__, attention._attention_without_cache = saved
            wave.WaveMLP.__call__ = wave_call

    return undone()


def _long_rows(steps: dict, jax_step, torch_step, size: str, rng) -> None:
    """The query-tile and wave-remat rows (see the module doc); patches hold while models are traced."""
    from unittest import mock

    from benchmarks.throughput import _cfg
    from physnets_jax.layers import wave
    from physnets_jax.ops import attention

    seq = 256 if size == "nano" else 1024
    cfg = _cfg("ripplegpt", size, seq)
    tokens = rng.integers(0, cfg.vocab_size, (2, seq))
    model = f"ripplegpt, seq {seq}"
    steps[(model, "jax, as built (query tiles)")] = jax_step(cfg, tokens)
    with mock.patch.multiple(attention, MIN_QUERY_TILE=seq, MAX_QUERY_TILES=1):
        steps[(model, "jax, one tile (whole score matrix)")] = jax_step(cfg, tokens)
    steps[(model, "torch eager")] = torch_step(cfg, tokens)
    cfg = _cfg("wave_gpt+linear", size, 256)
    tokens = rng.integers(0, cfg.vocab_size, (2 if size == "nano" else 8, 256))
    steps[("wave_gpt+linear", "jax, as built (rematerialised)")] = jax_step(cfg, tokens)
    with mock.patch.multiple(wave, _pure_linear_attention=wave._pure_linear_attention.__wrapped__):
        steps[("wave_gpt+linear", "jax, no remat")] = jax_step(cfg, tokens)
    steps[("wave_gpt+linear", "torch eager")] = torch_step(cfg, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="nano sizes, batch 2 x 64 (smoke test)")
    parser.add_argument("--presets", default="ripplegpt,gpt", help="dropout rows: comma-separated presets")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--long-rows", action="store_true", help="with --quick: also the query-tile and wave "
                        "remat rows (always on without --quick)")
    add_malloc_option(parser)
    args = parser.parse_args()
    malloc_line = apply_malloc_option(args)

    import jax
    import numpy as np
    import torch

    from benchmarks.train_steps import JaxTrainStep, torch_train_step
    from physnets_core.config import preset
    from physnets_jax.layers import gateloop
    from physnets_torch.losses import cross_entropy
    from physnets_torch.model import Decoder as TorchDecoder

    size, batch, seq = ("nano", 2, 64) if args.quick else ("small", 8, 256)
    rng = np.random.default_rng(0)
    steps: dict[tuple[str, str], object] = {}

    def jax_step(cfg, tokens):
        step = JaxTrainStep(cfg, tokens).compile()  # traced and compiled now, under any patch in force
        return lambda: jax.block_until_ready(step())

    def torch_step(cfg, tokens):
        torch.manual_seed(0)
        return torch_train_step(TorchDecoder(cfg), torch.from_numpy(tokens), lambda f, x: cross_entropy(f(x), x))

    width = 64 if args.quick else 256
    cfg = preset("gateloop", size, n_embd=width, n_layer=4, n_head=4, vocab_size=256, block_size=seq, mixer="gateloop")
    tokens = rng.integers(0, 256, (batch, seq))
    steps[("gateloop", "jax, as built (z divided by its modulus)")] = jax_step(cfg, tokens)
    built = gateloop.state_transition
    gateloop.state_transition = _atan2_state_transition
    try:
        steps[("gateloop", "jax, atan2 form")] = jax_step(cfg, tokens)
    finally:
        gateloop.state_transition = built
    for name in args.presets.split(","):
        cfg = preset(name, size, block_size=seq)
        tokens = rng.integers(0, cfg.vocab_size, (batch, seq))
        steps[(name, f"jax, as built (dropout {cfg.dropout})")] = jax_step(cfg, tokens)
        with _undo_dropout_changes():
            steps[(name, "jax, nnx.Dropout + autodiff attention")] = jax_step(cfg, tokens)
        steps[(name, "jax, dropout 0")] = jax_step(dataclasses.replace(cfg, dropout=0.0), tokens)
        steps[(name, f"torch eager (dropout {cfg.dropout})")] = torch_step(cfg, tokens)
        steps[(name, "torch eager, dropout 0")] = torch_step(dataclasses.replace(cfg, dropout=0.0), tokens)
    if not args.quick or args.long_rows:
        _long_rows(steps, jax_step, torch_step, size, rng)
    secs = interleaved_median_seconds(steps, repeats=args.repeats, cpu_time=True)
    rows = []
    for (model, variant), s in secs.items():
        first = next(v for (m, _), v in secs.items() if m == model)
        rows.append([model, variant, f"{1000 * s:,.0f}", f"{s / first:.2f}x"])
    print(f"machine: {machine_line()}; torch threads {torch.get_num_threads()}; {malloc_line}; CPU time")
    print(f"training step (forward + backward + AdamW), {size} sizes, batch {batch} x {seq}, median of "
          f"{args.repeats} interleaved\n")
    print(markdown_table(["model", "variant", "step ms", "vs first row"], rows))


if __name__ == "__main__":
    main()
