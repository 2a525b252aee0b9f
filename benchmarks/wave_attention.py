"""Wave-Native GPT mixers vs softmax attention: forward+backward tokens/s and peak memory, JAX and
torch; and the RGD optimizer step against AdamW on the seed-size model.

    python benchmarks/wave_attention.py            # seq 256, 1024, 4096 (+16384 for the linear mode)
    python benchmarks/wave_attention.py --quick    # seq 256, 1024 (+4096 linear), fewer repeats

Width: the seed size (n_embd 384, 8 heads, 48 waves), batch 1, float32, dropout off.
Memory: JAX = XLA's buffer assignment for the jitted fwd+bwd (arguments + outputs + temporaries);
torch = bytes saved for backward (activations) plus the output, in a fresh subprocess per case
(torch on CPU has no peak-allocation counter).
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIXERS = {
    "softmax attention": dict(mixer="attention"),
    "wave interference": dict(mixer="wave", wave_attention="interference"),
    "wave physics": dict(mixer="wave", wave_attention="physics"),
    "wave pure (quadratic, elu1)": dict(mixer="wave", wave_attention="pure", wave_mode="quadratic"),
    "wave pure (linear, elu1)": dict(mixer="wave", wave_attention="pure", wave_mode="linear"),
}
LINEAR = "wave pure (linear, elu1)"


def _cfg(name):
    from physnets_core.config import preset

    return preset("wave_gpt", "small", dropout=0.0, block_size=16384, **MIXERS[name])


def jax_case(name: str, T: int, repeats: int) -> tuple[float, float]:
    """(tokens/s, peak MiB) of a jitted fwd+bwd of one mixer in JAX."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import physnets_jax.layers as jl
    from benchmarks.timing import median_seconds

    cfg = _cfg(name)
    mixer = jl.MIXERS[cfg.mixer](cfg, 0, rngs=nnx.Rngs(0))
    mixer.eval()
    graphdef, params, rest = nnx.split(mixer, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(0), (1, T, cfg.n_embd))

    def loss(p, x):
        return jnp.sum(nnx.merge(graphdef, p, rest)(x) ** 2)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
    mem = compiled.memory_analysis()
    peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2**20
    seconds = median_seconds(lambda: jax.block_until_ready(compiled(params, x)), warmup=1, repeats=repeats)
    return T / seconds, peak


def torch_case(name: str, T: int, repeats: int) -> tuple[float, float]:
    """(tokens/s, MiB saved for backward) of fwd+bwd of one mixer in torch (run in a subprocess)."""
    out = subprocess.run(
        [sys.executable, __file__, "--torch-case", name, str(T), str(repeats)],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["tokens_per_s"], result["peak_mib"]


def _torch_case_child(name: str, T: int, repeats: int) -> None:
    import torch

    import physnets_torch.layers as tl
    from benchmarks.timing import median_seconds

    torch.manual_seed(0)
    cfg = _cfg(name)
    mixer = tl.MIXERS[cfg.mixer](cfg, 0).eval()
    x = torch.randn(1, T, cfg.n_embd, requires_grad=True)

    def step():
        mixer.zero_grad(set_to_none=True)
        x.grad = None
        (mixer(x) ** 2).sum().backward()

    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = mixer(x)
    saved = sum(storages.values()) + y.numel() * y.element_size()
    del y
    seconds = median_seconds(step, warmup=1, repeats=repeats)
    print(json.dumps({"tokens_per_s": T / seconds, "peak_mib": saved / 2**20}))


def optimizer_rows(repeats: int) -> list[list[object]]:
    """RGD vs AdamW update time on the wave_gpt small (seed-size) parameter tree, both backends."""
    import jax
    import optax
    import torch
    from flax import nnx

    from benchmarks.timing import interleaved_median_seconds
    from physnets_core.config import preset
    from physnets_jax.model import Decoder
    from physnets_jax.optim import rgd
    from physnets_torch.model import Decoder as TDecoder
    from physnets_torch.optim import RGD

    cfg = preset("wave_gpt", "small")
    params = nnx.state(Decoder(cfg, rngs=nnx.Rngs(0)), nnx.Param)
    grads = jax.tree.map(lambda p: p * 1e-3, params)
    fns = {}
    for label, tx in (("AdamW", optax.adamw(1e-3, weight_decay=0.01)), ("RGD", rgd(1e-3))):
        state = tx.init(params)

        @jax.jit
        def update(params, state, grads, tx=tx):
            u, s = tx.update(grads, state, params)
            return optax.apply_updates(params, u), s

        update(params, state, grads)
        fns[f"jax {label}"] = lambda update=update, state=state: jax.block_until_ready(update(params, state, grads))
    model = TDecoder(cfg)
    for p in model.parameters():
        p.grad = p.detach() * 1e-3
    opts = {"AdamW": torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01),
            "RGD": RGD(model.parameters(), lr=1e-3)}
    for label, opt in opts.items():
        fns[f"torch {label}"] = opt.step
    times = interleaved_median_seconds(fns, warmup=1, repeats=repeats)
    rows = []
    for backend in ("jax", "torch"):
        a, r = times[f"{backend} AdamW"], times[f"{backend} RGD"]
        rows.append([backend, f"{a * 1e3:.1f}", f"{r * 1e3:.1f}", f"{r / a:.2f}x"])
    return rows


def main(argv=None) -> int:
    """Run every case and print the tables."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="shorter sequences and fewer repeats")
    p.add_argument("--backends", default="jax,torch")
    p.add_argument("--no-optim", action="store_true", help="skip the RGD vs AdamW table")
    p.add_argument("--torch-case", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torch_case:
        _torch_case_child(args.torch_case[0], int(args.torch_case[1]), int(args.torch_case[2]))
        return 0
    import torch

    from benchmarks.timing import machine_line, markdown_table

    torch.set_num_threads(os.cpu_count() or 1)
    seqs = [256, 1024] if args.quick else [256, 1024, 4096]
    long = [4096] if args.quick else [16384]
    repeats = 2 if args.quick else 3
    print(f"machine: {machine_line()}\n")
    rows = []
    for backend in args.backends.split(","):
        case = jax_case if backend == "jax" else torch_case
        for name in MIXERS:
            for T in seqs + (long if name == LINEAR else []):
                tok_s, mib = case(name, T, repeats)
                rows.append([backend, name, T, f"{tok_s:,.0f}", f"{mib:,.0f}"])
                print(f"  {backend} {name} T={T}: {tok_s:,.0f} tok/s, {mib:,.0f} MiB", file=sys.stderr, flush=True)
    print("fwd+bwd of one mixer, batch 1, n_embd 384, 8 heads, 48 waves, float32\n")
    print(markdown_table(["backend", "mixer", "seq", "tokens/s", "peak MiB"], rows))
    if not args.no_optim:
        print("\noptimizer update on wave_gpt small (15.5M parameters), median ms per step\n")
        print(markdown_table(["backend", "AdamW ms", "RGD ms", "RGD / AdamW"], optimizer_rows(repeats + 2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
