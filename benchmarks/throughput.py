"""Training and generation throughput of every preset in both backends, in one markdown table.

    python benchmarks/throughput.py --quick      # micro sizes, seq 256, ~minutes on 2 CPU cores
    python benchmarks/throughput.py              # small (seed) sizes, seq 256/1024/4096, 16384 for the
                                                 # linear-time mixers, plus a torch.compile column

Each cell (preset x backend x sequence length) runs in a fresh subprocess so that its peak
resident memory (ru_maxrss, which includes the ~0.4-0.6 GB of the imported frameworks) is its
own. Training is a full optimizer step (forward, backward, AdamW); generation is tokens/s of
greedy decoding with and without the decoding cache. MFU divides the training FLOPs (6 N per
token for the weights plus 12 L W d for the mixer, the usual estimate: train_flops_per_token) by
the float32 matmul peak measured in the same run (the larger of JAX's and torch's).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.timing import WARMUP_CALLS, median_seconds  # noqa: E402

VARIANTS = {
    "op": dict(residual="orthogonal_parallel"),  # lof310's orthogonal-parallel residuals
    "linear": dict(wave_attention="pure", wave_mode="linear"),  # chunked causal linear attention
    "blockwise": dict(attention_impl="blockwise"),  # flash-style row blocks, O(T) memory
}


def _cfg(preset_name: str, size: str, seq: int):
    """The benchmarked config: `name[+variant...]` at `size`, dropout 0, block_size = seq."""
    from physnets_core.config import preset

    name, *variants = preset_name.split("+")
    overrides = {"dropout": 0.0, "block_size": seq}
    for variant in variants:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} in {preset_name!r}; valid: {', '.join(VARIANTS)}")
        overrides.update(VARIANTS[variant])
    return preset(name, size, **overrides)


GATE_LOOP_MIXERS = ("gateloop", "simple_gateloop")


def is_linear_time(cfg) -> bool:
    """Whether the token mixer runs in O(T) time and memory (so it gets a 16384 column)."""
    if cfg.mixer in GATE_LOOP_MIXERS:
        return True
    return cfg.mixer == "wave" and cfg.wave.attention == "pure" and cfg.wave.mode == "linear"


def train_flops_per_token(cfg, n_params: int, seq: int) -> float:
    """Training FLOPs per token: 6 N for the weights plus 12 L W d for the token mixer's
    score-times-value products, W being the positions each token mixes with: the whole
    sequence for softmax-style attention, one chunk for chunked linear attention, none for the
    gate-loop recurrence (elementwise, no matmul)."""
    if cfg.mixer in GATE_LOOP_MIXERS:
        window = 0
    elif is_linear_time(cfg):
        window = min(cfg.wave.chunk_size, seq)
    else:
        window = seq
    return 6.0 * n_params + 12.0 * cfg.n_layer * window * cfg.n_embd


def _cell_jax(cfg, batch: int, seq: int, steps: int, gen_tokens: int) -> dict:
    import jax
    import numpy as np

    from benchmarks.train_steps import JaxTrainStep
    from physnets_jax.generate import generate

    step = JaxTrainStep(cfg, np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq)),
                        total_steps=steps + WARMUP_CALLS)
    train_s = median_seconds(lambda: jax.block_until_ready(step()), repeats=steps)
    model = step.model()
    out = {"params": step.n_params, "train_tok_s": batch * seq / train_s, "train_step_s": train_s}
    out.update(_generation(lambda p, n, cache: generate(model, p, n, greedy=True, use_cache=cache),
                           cfg, gen_tokens, lambda t: np.asarray(t)))
    return out


def _cell_torch(cfg, batch: int, seq: int, steps: int, gen_tokens: int, compiled: bool) -> dict:
    import numpy as np
    import torch

    from benchmarks.train_steps import torch_train_step
    from physnets_torch.generate import generate
    from physnets_torch.losses import cross_entropy
    from physnets_torch.model import Decoder, count_params

    torch.manual_seed(0)
    model = Decoder(cfg)
    n_params = count_params(model)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, cfg.vocab_size, (batch, seq)))
    step = torch_train_step(model, x, lambda f, t: cross_entropy(f(t), t),
                            forward=torch.compile(model) if compiled else None)

    train_s = median_seconds(step, repeats=steps)
    out = {"params": n_params, "train_tok_s": batch * seq / train_s, "train_step_s": train_s}
    if not compiled:
        out.update(_generation(lambda p, n, cache: generate(model, torch.from_numpy(p), n, greedy=True, use_cache=cache),
                               cfg, gen_tokens, lambda t: t))
    return out


def _generation(run, cfg, gen_tokens: int, to_host) -> dict:
    import numpy as np

    if gen_tokens <= 0:
        return {}
    prompt_len = 16
    if not cfg.extrapolates:
        gen_tokens = min(gen_tokens, cfg.block_size - prompt_len)
    prompt = np.zeros((1, prompt_len), dtype=np.int64)
    result = {}
    for cache in (True, False):
        to_host(run(prompt, gen_tokens, cache))  # compile / warm up at the timed shapes (JAX caches are
        # preallocated for prompt + new tokens, so another length would compile again)
        best = float("inf")
        for _ in range(3):  # best of 3: a short run is easily hit by one hiccup of a busy machine
            start = time.perf_counter()
            to_host(run(prompt, gen_tokens, cache))
            best = min(best, time.perf_counter() - start)
        result[f"gen_tok_s_{'cache' if cache else 'nocache'}"] = gen_tokens / best
    return result


def run_cell(spec: dict) -> dict:
    """Measure one (preset, backend, seq) cell in this process; adds peak RSS in MB."""
    from benchmarks.timing import apply_malloc_option

    apply_malloc_option(argparse.Namespace(system_malloc=spec.get("system_malloc", False)))
    cfg = _cfg(spec["preset"], spec["size"], spec["seq"])
    if spec["backend"] == "jax":
        out = _cell_jax(cfg, spec["batch"], spec["seq"], spec["steps"], spec["gen_tokens"])
    else:
        out = _cell_torch(cfg, spec["batch"], spec["seq"], spec["steps"], spec["gen_tokens"],
                          compiled=spec["backend"] == "torch.compile")
    out["flops_per_token"] = train_flops_per_token(cfg, out["params"], spec["seq"])
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> dict:
    """Float32 matmul GFLOP/s of an n x n product, in JAX and torch (best of repeats).

    The machine's peak is the larger of the two: MFU of both backends is taken against it, so
    a backend with a slower matmul library does not get a flattering denominator.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    ja = jnp.asarray(a)
    mm = jax.jit(lambda x: x @ x)
    mm(ja).block_until_ready()
    ta = torch.from_numpy(a)
    best = {"jax": 1e9, "torch": 1e9}
    for _ in range(repeats):
        t = time.perf_counter()
        mm(ja).block_until_ready()
        best["jax"] = min(best["jax"], time.perf_counter() - t)
        t = time.perf_counter()
        ta @ ta
        best["torch"] = min(best["torch"], time.perf_counter() - t)
    peak = {k: 2 * n**3 / v / 1e9 for k, v in best.items()}
    peak["machine"] = max(peak.values())
    return peak


def main() -> None:
    """Run every cell in a subprocess and print one markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="micro/nano sizes, seq 256, no torch.compile")
    parser.add_argument("--presets", default=None, help="comma list of preset[+variant] "
                        f"(variants: {', '.join(VARIANTS)}; default: every registered preset, gpt+op, "
                        "ripplegpt+op and wave_gpt+linear)")
    parser.add_argument("--seqs", default=None, help="comma list of sequence lengths (default 256,1024,4096; "
                        "linear-time mixers also 16384)")
    parser.add_argument("--batch", type=int, default=None, help="sequences per step at seq 256 (fewer at longer seqs: "
                        "tokens per step stay batch x 256)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per cell (median; default 5, "
                        f"after {WARMUP_CALLS} untimed)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column of the full run")
    parser.add_argument("--cell-timeout", type=float, default=1200, help="seconds before a cell is abandoned")
    parser.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    from benchmarks.timing import add_malloc_option, apply_malloc_option

    add_malloc_option(parser)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))))
        return

    from benchmarks.timing import machine_line, markdown_table
    from physnets_core.config import preset_names, preset_sizes

    presets = args.presets.split(",") if args.presets else list(preset_names()) + [
        "gpt+op", "ripplegpt+op", "wave_gpt+linear"]
    seqs = [int(s) for s in args.seqs.split(",")] if args.seqs else ([256] if args.quick else [256, 1024, 4096])
    batch = args.batch or (4 if args.quick else 8)
    steps = args.steps or 5
    backends = ["jax", "torch"] + ([] if args.quick or args.no_compile else ["torch.compile"])
    peak = matmul_peak_gflops(1024 if args.quick else 2048)
    rows = []
    started = time.perf_counter()
    for name in presets:
        base = name.partition("+")[0]
        sizes = preset_sizes(base)
        size = "micro" if args.quick and "micro" in sizes else ("nano" if args.quick else "small")
        cfg_probe = _cfg(name, size, 256)
        cell_seqs = list(seqs)
        if not args.quick and not args.seqs and is_linear_time(cfg_probe):
            cell_seqs.append(16384)
        for seq in cell_seqs:
            per_backend = {}
            for backend in backends:
                spec = dict(preset=name, size=size, seq=seq, backend=backend, batch=max(1, batch * 256 // seq),
                            steps=steps, gen_tokens=0 if seq > 256 else (32 if args.quick else 128),
                            system_malloc=args.system_malloc)
                label = [f"{name}-{size}", backend, seq]
                try:
                    proc = subprocess.run([sys.executable, __file__, "--cell", json.dumps(spec)],
                                          capture_output=True, text=True, cwd=ROOT, timeout=args.cell_timeout)
                except subprocess.TimeoutExpired:
                    rows.append(label + ["-", f"timeout after {args.cell_timeout:.0f} s", "", "", "", "", ""])
                    continue
                if proc.returncode != 0:
                    err = (proc.stderr.strip().splitlines() or ["failed"])[-1][:80]
                    rows.append(label + ["-", f"error: {err}", "", "", "", "", ""])
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                per_backend[backend] = r
                mfu = r["train_tok_s"] * r["flops_per_token"] / (peak["machine"] * 1e9)
                rows.append(label + [
                    f"{r['params']:,}", f"{r['train_tok_s']:,.0f}",
                    "" if backend == "jax" or "jax" not in per_backend else f"{per_backend['jax']['train_tok_s'] / r['train_tok_s']:.2f}x",
                    f"{100 * mfu:.1f}%", f"{r.get('gen_tok_s_cache', 0):,.0f}" if "gen_tok_s_cache" in r else "",
                    f"{r.get('gen_tok_s_nocache', 0):,.0f}" if "gen_tok_s_nocache" in r else "",
                    f"{r['peak_rss_mb']:,.0f}",
                ])
            print(f"  done {name} seq {seq} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    print(f"machine: {machine_line()}; {apply_malloc_option(args) if args.system_malloc else 'host malloc: freed memory kept in each cell, as train_jax.py'}")
    print(f"float32 matmul peak ({'1024' if args.quick else '2048'}^2): JAX {peak['jax']:.0f} GFLOP/s, torch "
          f"{peak['torch']:.0f} GFLOP/s; MFU is against the larger; wall time {time.perf_counter() - started:.0f} s\n")
    print(markdown_table(
        ["model", "backend", "seq", "params", "train tok/s", "JAX / this", "MFU", "gen tok/s (cache)",
         "gen tok/s (no cache)", "peak RSS MB"], rows))


if __name__ == "__main__":
    main()
