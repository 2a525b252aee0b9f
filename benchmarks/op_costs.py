"""One layer's ops alone: forward vs forward + backward, JAX (jitted) vs torch eager, CPU time.

    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1 python benchmarks/op_costs.py

Shapes of ripplegpt/gpt-small (batch 8 x 256, n_embd 384, 6 heads); gradients w.r.t. inputs and
parameters of sum(out * a fixed random cotangent). Each row is the median over 7 interleaved
rounds of the process's CPU time (one thread per framework: run it with the flags above), so a
loaded machine changes the figures little. JAX rows compare the hand-written backward passes
(custom vjp) with XLA's autodiff of the plain formulation, and the dense layer as one 2-D matmul
with the 3-D form it replaced (docs/performance.md).
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import add_malloc_option, apply_malloc_option, machine_line, markdown_table  # noqa: E402


def main() -> None:
    """Print one markdown table: op, backend, forward ms, forward + backward ms, ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    add_malloc_option(parser)
    args = parser.parse_args()
    malloc_line = apply_malloc_option(args)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    import physnets_jax.layers as jax_layers
    import physnets_torch.layers as torch_layers
    from physnets_core.config import preset
    from physnets_jax.layers.dense import matmul_last
    from physnets_jax.layers.mlp import ACTIVATIONS
    from physnets_jax.layers.norm import make_norm as jax_norm
    from physnets_jax.ops.attention import causal_attention, causal_self_attention
    from physnets_torch.layers.norm import make_norm as torch_norm
    from physnets_torch.ops.attention import causal_attention as torch_attention

    B, T, D, H = 8, 256, 384, 6
    rng = np.random.default_rng(0)
    rows: dict[str, tuple] = {}

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def add_jax(name, f, *args):
        cotangent = jnp.asarray(arr(*jax.eval_shape(f, *args).shape))
        forward = jax.jit(f)
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * cotangent), argnums=tuple(range(len(args)))))
        rows[(name, "jax")] = (lambda: jax.block_until_ready(forward(*args)),
                               lambda: jax.block_until_ready(grads(*args)))

    def add_torch(name, f, *args):
        cotangent = torch.from_numpy(arr(*f(*args).shape))

        def forward():
            with torch.no_grad():
                f(*args)

        def grads():
            for a in args:
                a.grad = None
            (f(*args) * cotangent).sum().backward()

        rows[(name, "torch")] = (forward, grads)

    x = arr(B, T, D)
    x_jax, x_torch = jnp.asarray(x), torch.from_numpy(x).requires_grad_()
    for name in ("ripplegpt", "gpt"):
        cfg = preset(name, "small", dropout=0.0)
        graphdef, params, rest = nnx.split(jax_layers.MLPS[cfg.mlp](cfg, 0, rngs=nnx.Rngs(0)), nnx.Param, ...)
        act = "gated" if cfg.mlp == "ripple" else cfg.mlp

        def plain(p, x, graphdef=graphdef, rest=rest, act=act):
            m = nnx.merge(graphdef, p, rest)
            return m.fc2(ACTIVATIONS[act](m.fc1(x)))

        add_jax(f"{name} mlp (custom vjp)", lambda p, x, g=graphdef, r=rest: nnx.merge(g, p, r)(x), params, x_jax)
        add_jax(f"{name} mlp (autodiff)", plain, params, x_jax)
        add_torch(f"{name} mlp", torch_layers.MLPS[cfg.mlp](cfg, 0), x_torch)
    cfg = preset("gpt", "small", dropout=0.0)
    graphdef, params = nnx.split(jax_norm(cfg, rngs=nnx.Rngs(0)))
    add_jax("layernorm", lambda p, x: nnx.merge(graphdef, p)(x), params, x_jax)
    add_torch("layernorm", torch_norm(cfg), x_torch)
    w = arr(D, 3 * D)
    add_jax("dense 384 -> 1152 (2-D rows)", lambda w, x: matmul_last(x, w), jnp.asarray(w), x_jax)
    add_jax("dense 384 -> 1152 (3-D, before)", lambda w, x: x @ w, jnp.asarray(w), x_jax)
    add_torch("dense 384 -> 1152", torch.nn.functional.linear, x_torch, torch.from_numpy(w.T.copy()).requires_grad_())
    qkv = [arr(B, H, T, D // H) for _ in range(3)]
    decay = np.full(H, -0.8, np.float32)
    qkv_jax, decay_jax = [jnp.asarray(a) for a in qkv], jnp.asarray(decay)
    qkv_torch = [torch.from_numpy(a).requires_grad_() for a in qkv]
    add_jax("ripple attention (custom vjp)", lambda q, k, v, d: causal_self_attention(q, k, v, decay_H=d), *qkv_jax, decay_jax)
    add_jax("ripple attention (autodiff)", lambda q, k, v, d: causal_attention(q, k, v, decay_H=d), *qkv_jax, decay_jax)
    add_torch("ripple attention", lambda q, k, v, d: torch_attention(q, k, v, decay_H=d), *qkv_torch,
              torch.from_numpy(decay).requires_grad_())
    add_jax("softmax attention (custom vjp)", causal_self_attention, *qkv_jax)
    add_jax("softmax attention (autodiff)", causal_attention, *qkv_jax)
    add_torch("softmax attention", torch_attention, *qkv_torch)

    for forward, grads in rows.values():
        for _ in range(2):
            forward()
            grads()
    times = {key: ([], []) for key in rows}
    for _ in range(args.rounds):
        for key, fns in rows.items():
            for fn, bucket in zip(fns, times[key], strict=True):
                start = time.process_time()
                fn()
                bucket.append(time.process_time() - start)
    table = []
    for (name, backend), (fwd, both) in times.items():
        f, b = 1000 * statistics.median(fwd), 1000 * statistics.median(both)
        table.append([name, backend, f"{f:.1f}", f"{b:.1f}", f"{b / f:.1f}x"])
    print(f"machine: {machine_line()}; {malloc_line}; torch threads {torch.get_num_threads()}")
    print(f"one layer's ops, batch {B} x {T}, n_embd {D}, {H} heads; CPU time, median of {args.rounds} interleaved\n")
    print(markdown_table(["op", "backend", "forward ms", "forward + backward ms", "ratio"], table))


if __name__ == "__main__":
    main()
