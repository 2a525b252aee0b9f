"""GateLoop speed and memory: SimpleGateLoopLayer forward+backward tokens/s and the peak memory of
max-heads GateLoopedAttention. Prints markdown tables (docs/gateloop.md has a copy).

    python benchmarks/gateloop_scan.py                # seq 256, 1024, 4096, 16384
    python benchmarks/gateloop_scan.py --quick        # seq 256, 1024; fewer repeats
    python benchmarks/gateloop_scan.py --peer-site <site-packages holding gateloop-transformer>

Contenders (dim 256, batch 8, loss = mean(y^2), one step = forward + backward w.r.t. params and x):
  jax associative | jax chunked | jax sequential : physnets_jax SimpleGateLoopLayer, jitted, with
      gateloop_scan = associative / chunked / sequential ("auto", the default, is sequential on CPU
      and associative on GPU/TPU: chosen from this benchmark)
  torch blocked | doubling : physnets_torch SimpleGateLoopLayer with that scan method
  peer : gateloop_transformer.SimpleGateLoopLayer (the published package's default torch path),
      when importable; --peer-site adds a site-packages folder (a separate venv) to sys.path.
Timings are interleaved round-robin (benchmarks/timing.py) so load changes hit all alike.
"""

from __future__ import annotations

import argparse
import os
import subprocess
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
from physnets_torch.ops import gate_loop as tops  # noqa: E402

DIM, BATCH = 256, 8


def _cfg(**kw) -> ModelConfig:
    return ModelConfig.from_dict(dict(n_embd=DIM, n_head=1, **kw))


def jax_step(scan: str, T: int):
    """Jitted forward+backward of the JAX SimpleGateLoopLayer; returns a blocking callable."""
    layer = jgl.SimpleGateLoopLayer(_cfg(gateloop_scan=scan), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)
    x = jax.random.normal(jax.random.key(0), (BATCH, T, DIM))

    @jax.jit
    def step(params, x):
        def loss(p, x):
            return jnp.mean(nnx.merge(graphdef, p)(x) ** 2)

        return jax.grad(loss, argnums=(0, 1))(params, x)

    return lambda: jax.block_until_ready(step(params, x))


def torch_step(layer: torch.nn.Module, T: int):
    """Forward+backward of a torch layer (params and input gradients)."""
    x = torch.randn(BATCH, T, DIM, requires_grad=True)

    def run():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).square().mean().backward()

    return run


class _TorchMethod(torch.nn.Module):
    """physnets_torch SimpleGateLoopLayer with a chosen scan method."""

    def __init__(self, method: str):
        super().__init__()
        self.layer = tgl.SimpleGateLoopLayer(_cfg())
        self.method = method

    def forward(self, x):
        original = tgl.gate_loop_scan
        tgl.gate_loop_scan = lambda a, kv, **kw: tops.gate_loop_scan(a, kv, method=self.method, **kw)
        try:
            return self.layer(x)
        finally:
            tgl.gate_loop_scan = original


def peer_layer():
    """The published package's SimpleGateLoopLayer, or None when it is not importable."""
    try:
        from gateloop_transformer import SimpleGateLoopLayer
    except Exception:  # noqa: BLE001 - any import problem means "not available"
        return None
    torch.manual_seed(0)
    return SimpleGateLoopLayer(DIM)


def speed_table(lengths, repeats: int) -> str:
    peer = peer_layer()
    rows = []
    for T in lengths:
        fns = {
            "jax associative": jax_step("associative", T),
            "jax chunked": jax_step("chunked", T),
            "jax sequential": jax_step("sequential", T),
            "torch blocked (default)": torch_step(_TorchMethod("blocked"), T),
            "torch doubling": torch_step(_TorchMethod("doubling"), T),
        }
        if peer is not None:
            fns["peer (gateloop-transformer)"] = torch_step(peer, T)
        reps = repeats if T <= 4096 else max(2, repeats // 2)
        secs = interleaved_median_seconds(fns, warmup=1, repeats=reps)
        row = [T] + [f"{BATCH * T / secs[name] / 1e3:.1f}k" for name in fns]
        rows.append(row)
        print(f"  seq {T}: " + ", ".join(f"{n} {BATCH * T / s / 1e3:.1f}k" for n, s in secs.items()),
              file=sys.stderr, flush=True)
    headers = ["seq"] + list(fns)
    return markdown_table(headers, rows)


_TORCH_MEM = """
import os, sys, threading, time, torch
sys.path.insert(0, {root!r})
from physnets_core.config import ModelConfig
from physnets_torch.layers.gateloop import GateLoopedAttention
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
torch.manual_seed(0)
layer = GateLoopedAttention(ModelConfig(n_embd={dim}, n_head=1))
layer(torch.randn(1, 64, {dim})).sum().backward()  # warm up allocator and kernels
x = torch.randn(1, {T}, {dim}, requires_grad=True)
base, peak, done = rss(), [0], [False]
def sample():
    while not done[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.0005)
thread = threading.Thread(target=sample)
thread.start()
layer(x).square().mean().backward()
done[0] = True
thread.join()
print((max(peak[0], rss()) - base) / 2**20)
"""


def memory_table(lengths, dim: int) -> str:
    """Peak extra memory of one forward+backward of max-heads GateLoopedAttention (batch 1)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for T in lengths:
        layer = jgl.GateLoopedAttention(ModelConfig(n_embd=dim, n_head=1), rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(layer)

        def loss(p, x, graphdef=graphdef):
            return jnp.mean(nnx.merge(graphdef, p)(x) ** 2)

        x = jax.ShapeDtypeStruct((1, T, dim), jnp.float32)
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile()
        mem = compiled.memory_analysis()
        jax_mb = mem.temp_size_in_bytes / 2**20 if mem is not None else float("nan")
        out = subprocess.run(
            [sys.executable, "-c", _TORCH_MEM.format(root=root, dim=dim, T=T)],
            capture_output=True, text=True, check=True,
        )
        torch_mb = float(out.stdout.strip().splitlines()[-1])
        act_mb = T * dim * 4 / 2**20
        rows.append([T, f"{jax_mb:.0f}", f"{torch_mb:.0f}", f"{jax_mb / act_mb:.1f}", f"{torch_mb / act_mb:.1f}"])
    return markdown_table(
        ["tokens", "JAX temp MiB (XLA)", "torch peak RSS growth MiB", "JAX / (T*D*4 B)", "torch / (T*D*4 B)"], rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seq 256 and 1024 only, fewer repeats")
    parser.add_argument("--peer-site", default=None, help="site-packages with gateloop_transformer")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true")
    args = parser.parse_args()
    if args.peer_site:
        sys.path.append(args.peer_site)
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [256, 1024] if args.quick else [256, 1024, 4096, 16384]
    print(f"Machine: {machine_line()}; torch threads {torch.get_num_threads()}")
    print(f"\nSimpleGateLoopLayer forward+backward, dim {DIM}, batch {BATCH}: tokens/s (higher is better)\n")
    print(speed_table(lengths, repeats=3 if args.quick else 5))
    if not args.no_memory:
        mem_lengths = [4096, 16384] if args.quick else [4096, 8192, 16384]
        print("\nMax-heads GateLoopedAttention (dim 256, batch 1) forward+backward: peak memory; the last "
              "two columns divide by one (T, D) float32 activation, so a constant ratio is linear growth\n")
        print(memory_table(mem_lengths, 256))
    print(f"\nCommand: python benchmarks/gateloop_scan.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
