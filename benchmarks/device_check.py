"""One prepared accelerator check: training tokens/s, peak memory and MFU of the main token mixers
in both backends, as one markdown table, after a short correctness check of the fused attention
kernels on the device.

    python benchmarks/device_check.py                   # on a GPU or TPU machine: under 8 minutes
    python benchmarks/device_check.py --rows ripplegpt-dense,ripplegpt-pallas --seqs 4096
    python benchmarks/device_check.py --json out.json   # also keep every number

Rows (--rows; "small" sizes): gpt; ripplegpt with attention_impl "dense" and "pallas" (JAX: the
Pallas flash kernel, torch: FlexAttention); gateloop at the reference's enwik8 size (dim 512,
6 layers) with 512 heads (head dim 1) on the associative and on the sequential scan, and with
head dim 64 (8 heads) on gateloop.scan="chunked_matmul" when this version has that scan;
wave_gpt's pure wave attention in its quadratic and linear modes. Each row runs in JAX and torch
(eager; the torch pallas row compiles FlexAttention), at sequence 1024 and 4096 with 16,384 tokens
per step, in bfloat16 (parameters, activations and AdamW state all bf16) and float32 (each
framework's default matmul precision: TF32 in JAX on GPU, IEEE float32 in torch).

One training step = forward, cross-entropy, backward, AdamW. tokens/s is the median-free mean of
enough timed steps to fill ~1.5 s, after a compile step and a warm step. Peak memory: torch's
max_memory_allocated over those steps; JAX's compiled step as XLA plans it (arguments + outputs -
donated aliases + temporaries). MFU: training FLOPs per token (6 N + 12 L W d,
benchmarks/throughput.py) times tokens/s over the device's matmul peak in that dtype, measured here
(8192^2 products; the larger of the two frameworks').

Each backend runs in its own worker process; JAX compiles the next cells in threads (--jax-prefetch)
while the torch worker runs, and a file lock gives every timed section the device to itself. A cell that raises is reported with its error; one that runs
past --cell-timeout is killed (its worker restarts for the remaining cells); cells left when the
--budget runs out are listed as not run. Without an accelerator it exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import queue
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# PHYSNETS_DEVICE_CHECK_SMOKE=1: a dry run of the machinery on a CPU (nano sizes, tiny shapes,
# JAX's kernel in interpret mode); its numbers mean nothing.
SMOKE = os.environ.get("PHYSNETS_DEVICE_CHECK_SMOKE") == "1"
SIZE = "nano" if SMOKE else "small"
TOKENS_PER_STEP = 128 if SMOKE else 16_384
GATELOOP_HEAD_DIM = 64
# key: (label, preset, overrides); sizes are "small"
ROWS = {
    "gpt": ("gpt", "gpt", {}),
    "ripplegpt-dense": ("ripplegpt, dense attention", "ripplegpt", {"attention_impl": "dense"}),
    "ripplegpt-pallas": ("ripplegpt, pallas (torch: FlexAttention)", "ripplegpt",
                         {"attention_impl": "pallas", "attention_block": 128}),
    "gateloop-associative": ("gateloop 512 heads, associative scan", "gateloop-enwik8", {"gateloop.scan": "associative"}),
    "gateloop-sequential": ("gateloop 512 heads, sequential scan", "gateloop-enwik8", {"gateloop.scan": "sequential"}),
    "gateloop-chunked": (f"gateloop head_dim {GATELOOP_HEAD_DIM}, chunked_matmul", "gateloop-enwik8",
                         {"gateloop.heads": 512 // GATELOOP_HEAD_DIM, "gateloop.scan": "chunked_matmul"}),
    "wave-quadratic": ("wave_gpt pure, quadratic", "wave_gpt", {"wave.attention": "pure", "wave.mode": "quadratic"}),
    "wave-linear": ("wave_gpt pure, linear", "wave_gpt", {"wave.attention": "pure", "wave.mode": "linear"}),
}
BACKENDS = ("jax", "torch")
DTYPES = ("bfloat16", "float32")
SEQS = (32, 64) if SMOKE else (1024, 4096)
PEAK_N = 256 if SMOKE else 8192


def row_config(key: str, seq: int):
    """The ModelConfig of a row at a sequence length (dropout 0, block_size = seq)."""
    from physnets_core.config import preset

    _, name, overrides = ROWS[key]
    return preset(name, SIZE, dropout=0.0, block_size=seq, **overrides)


def row_unavailable(key: str) -> str | None:
    """Why a row cannot run in this version of physnets (None: it can)."""
    from physnets_core.config import GATELOOP_SCANS

    scan = ROWS[key][2].get("gateloop.scan")
    if scan is not None and scan not in GATELOOP_SCANS:
        return f"skipped: gateloop.scan={scan!r} is not in this version (scans: {', '.join(GATELOOP_SCANS)})"
    return None


# ------------------------------------------------------------------------------------------------
# worker side (one process per backend)


def _emit(**event) -> None:
    print("@@" + json.dumps(event), flush=True)


@contextlib.contextmanager
def _exclusive(lock_path: str):
    """Hold the device for a timed section (the other backend's worker may be compiling)."""
    import fcntl

    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _time_steps(step, sync, target_s: float = 1.5, max_steps: int = 20) -> float:
    """Mean seconds per step over enough steps to fill ~target_s (at least 2)."""
    start = time.perf_counter()
    step()
    step()
    sync()
    per = (time.perf_counter() - start) / 2
    n = max(2, min(max_steps, int(target_s / max(per, 1e-6))))
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync()
    return (time.perf_counter() - start) / n


def _rel_err(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# The ripplegpt rows' attention at seq 1024 (batch 16, 6 heads of 64), so that torch compiles
# FlexAttention once for the check and the cells; ripple bias in both dtypes, plain causal in fp32.
CHECK_SHAPE = (2, 6, 40, 64) if SMOKE else (16, 6, 1024, 64)
CHECK_CASES = (("bfloat16", True), ("float32", True), ("float32", False))


def _check_inputs():
    import numpy as np

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(CHECK_SHAPE).astype(np.float32) for _ in range(3))
    return q, k, v, np.array([-0.8, 0.3, 1.7, 0.05, 0.5, 2.5], np.float32)


class JaxWorker:
    """Runs cells with the JAX backend."""

    name = "jax"

    def __init__(self):
        import jax

        self.jax = jax
        self.platform = jax.default_backend()
        if SMOKE:
            from physnets_jax.ops.pallas_attention import pallas_interpret_mode

            self._interpret = pallas_interpret_mode()  # kept: the context ends when collected
            self._interpret.__enter__()

    def thread_init(self) -> None:
        """Per compile thread: the interpret-mode switch of a smoke run is thread-local."""
        if SMOKE:
            from physnets_jax.ops.pallas_attention import pallas_interpret_mode

            _THREAD_CONTEXTS.append(pallas_interpret_mode())
            _THREAD_CONTEXTS[-1].__enter__()

    def describe(self) -> dict:
        dev = self.jax.devices()[0]
        return {"accelerator": self.platform in ("gpu", "tpu") or SMOKE, "device": f"{dev.platform}: {dev.device_kind}",
                "version": f"jax {self.jax.__version__}"}

    def peak(self, lock) -> dict:
        import jax.numpy as jnp

        out = {}
        for dtype in DTYPES:
            a = jnp.ones((PEAK_N, PEAK_N), dtype)
            mm = self.jax.jit(lambda x: x @ x)
            mm(a).block_until_ready()
            with lock():
                best = min(_timed(lambda mm=mm, a=a: mm(a).block_until_ready()) for _ in range(10))
            out[dtype] = 2 * PEAK_N**3 / best
        return out

    def check(self) -> list[dict]:
        import functools

        import jax.numpy as jnp

        from physnets_jax.ops.attention import causal_attention
        from physnets_jax.ops.pallas_attention import pallas_causal_attention

        q, k, v, decay = _check_inputs()

        def values_and_grads(fn, dtype, with_decay):
            def loss(q, k, v, d):
                # the decay in the model's dtype too, as a model cast to bf16 holds it
                o = fn(q.astype(dtype), k.astype(dtype), v.astype(dtype), decay_H=d.astype(dtype) if with_decay else None)
                o = o.astype(jnp.float32)
                return jnp.sum(o * jnp.cos(o)), o

            (_, o), g = self.jax.jit(self.jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, decay)
            return [o, *g]

        rows = []
        for with_decay in (True, False):
            with self.jax.default_matmul_precision("highest"):
                ref = values_and_grads(causal_attention, jnp.float32, with_decay)
            for dtype in (d for d, decay in CHECK_CASES if decay == with_decay):
                for kernel, fn in (("pallas", functools.partial(pallas_causal_attention, block=128)),
                                   ("dense", causal_attention)):
                    try:
                        got = values_and_grads(fn, jnp.dtype(dtype), with_decay)
                        errs = [_rel_err(a, b) for a, b in zip(got, ref, strict=True)]
                        rows.append(dict(kernel=kernel, dtype=dtype, decay=with_decay, errs=errs))
                    except Exception as e:  # noqa: BLE001 - reported in the table
                        rows.append(dict(kernel=kernel, dtype=dtype, decay=with_decay, error=_short(e)))
        return rows

    def prepare(self, cfg, cell: dict):
        """Build the model and compile its training step (no step runs yet: safe in a thread)."""
        import jax.numpy as jnp
        import numpy as np

        from benchmarks.train_steps import JaxTrainStep

        tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (cell["batch"], cell["seq"]))
        start = time.perf_counter()
        step = JaxTrainStep(cfg, tokens, dtype=jnp.dtype(cell["dtype"])).compile()
        return step, time.perf_counter() - start

    def measure(self, prepared, cell: dict, lock) -> dict:
        """Warm up and time the prepared step with the device to ourselves."""
        step, setup_s = prepared
        losses = []

        def run():
            losses.append(step())

        with lock():
            step_s = _time_steps(run, lambda: self.jax.block_until_ready(losses[-1]))
        return dict(params=step.n_params, step_s=step_s, setup_s=setup_s,
                    memory_bytes=step.compiled_memory_bytes(), loss=float(losses[-1]))

    def cleanup(self) -> None:
        import gc

        gc.collect()


class TorchWorker:
    """Runs cells with the torch backend (eager modules on CUDA)."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda") if self.cuda else (torch.device("cpu") if SMOKE else None)

    def describe(self) -> dict:
        t = self.torch
        name = t.cuda.get_device_name(0) if self.cuda else ("cpu (smoke run)" if SMOKE else "no CUDA device")
        return {"accelerator": self.device is not None, "device": name, "version": f"torch {t.__version__}"}

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def peak(self, lock) -> dict:
        t = self.torch
        out = {}
        for dtype in DTYPES:
            a = t.ones((PEAK_N, PEAK_N), dtype=getattr(t, dtype), device=self.device)
            a @ a
            self._sync()
            with lock():
                best = min(_timed(lambda a=a: (a @ a, self._sync())) for _ in range(10))
            out[dtype] = 2 * PEAK_N**3 / best
        return out

    def check(self) -> list[dict]:
        t = self.torch
        from physnets_torch.ops.attention import causal_attention
        from physnets_torch.ops.pallas_attention import pallas_causal_attention

        arrays = _check_inputs()

        def values_and_grads(fn, dtype, with_decay):
            q, k, v, d = (t.tensor(a, device=self.device, requires_grad=True) for a in arrays)
            o = fn(q.to(dtype), k.to(dtype), v.to(dtype), decay_H=d.to(dtype) if with_decay else None).float()
            (o * o.cos()).sum().backward()
            grads = [x.grad if x.grad is not None else t.zeros_like(x) for x in (q, k, v, d)]
            return [y.detach().cpu().numpy() for y in (o, *grads)]

        rows = []
        for with_decay in (True, False):
            ref = values_and_grads(causal_attention, t.float32, with_decay)  # IEEE float32 (TF32 off)
            for dtype in (d for d, decay in CHECK_CASES if decay == with_decay):
                for kernel, fn in (("pallas", pallas_causal_attention), ("dense", causal_attention)):
                    try:
                        got = values_and_grads(fn, getattr(t, dtype), with_decay)
                        errs = [_rel_err(a, b) for a, b in zip(got, ref, strict=True)]
                        rows.append(dict(kernel=kernel, dtype=dtype, decay=with_decay, errs=errs))
                    except Exception as e:  # noqa: BLE001 - reported in the table
                        rows.append(dict(kernel=kernel, dtype=dtype, decay=with_decay, error=_short(e)))
        return rows

    def thread_init(self) -> None:
        """(No compile threads for torch.)"""

    def prepare(self, cfg, cell: dict):
        """Build the model (on the device) and the training step; nothing runs yet."""
        import numpy as np

        t = self.torch
        from benchmarks.train_steps import torch_train_step
        from physnets_torch.losses import cross_entropy
        from physnets_torch.model import Decoder

        t.manual_seed(0)
        start = time.perf_counter()
        model = Decoder(cfg).to(device=self.device, dtype=getattr(t, cell["dtype"]))
        tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (cell["batch"], cell["seq"]))
        x = t.from_numpy(tokens).to(self.device)
        losses = []

        def loss_fn(forward, tokens_BxT):
            loss = cross_entropy(forward(tokens_BxT), tokens_BxT)
            losses.append(loss.detach())
            return loss

        step = torch_train_step(model, x, loss_fn)
        return model, step, losses, start

    def measure(self, prepared, cell: dict, lock) -> dict:
        """Warm up (FlexAttention compiles here) and time the step, the device to ourselves."""
        t = self.torch
        from physnets_torch.model import count_params

        model, step, losses, start = prepared
        if self.cuda:
            t.cuda.reset_peak_memory_stats()
        with lock():
            step()  # the first step (pallas row: FlexAttention compiles here)
            self._sync()
            setup_s = time.perf_counter() - start
            step_s = _time_steps(step, self._sync)
        memory = t.cuda.max_memory_allocated() if self.cuda else 0  # (smoke run: not measured)
        return dict(params=count_params(model), step_s=step_s, setup_s=setup_s, memory_bytes=int(memory),
                    loss=float(losses[-1]))

    def cleanup(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _short(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
    return text[:240]


_THREAD_CONTEXTS: list = []


def run_worker(backend: str, cells: list[dict], lock_path: str, first: bool, prefetch: int) -> None:
    """Worker process: describe the device, (first start only) check kernels and measure the matmul
    peak, then run the cells, one event line each."""
    worker = JaxWorker() if backend == "jax" else TorchWorker()
    info = worker.describe()
    _emit(event="hello", **info)
    if not info["accelerator"]:
        return
    def lock():
        return _exclusive(lock_path)

    if first:
        try:
            _emit(event="check", rows=worker.check())
        except Exception as e:  # noqa: BLE001 - reported, the table still runs
            _emit(event="check", rows=[dict(kernel="all", dtype="-", decay="-", error=_short(e))])
        try:
            _emit(event="peak", flops=worker.peak(lock))
        except Exception as e:  # noqa: BLE001
            _emit(event="peak", flops={}, error=_short(e))
    # JAX compiles the next `prefetch` cells in threads while this one is timed (XLA compiles in
    # parallel; the timed sections stay exclusive).
    pool = ThreadPoolExecutor(max(1, prefetch), initializer=worker.thread_init) if prefetch > 0 else None
    futures = {}

    def submit(i: int) -> None:
        if pool is not None and i < len(cells) and i not in futures:
            futures[i] = pool.submit(worker.prepare, row_config(cells[i]["row"], cells[i]["seq"]), cells[i])

    for i in range(prefetch):
        submit(i)
    for i, cell in enumerate(cells):
        _emit(event="start", id=cell["id"])
        prepared = None
        try:
            if pool is None:
                prepared = worker.prepare(row_config(cell["row"], cell["seq"]), cell)
            else:
                submit(i)
                future = futures.pop(i)
                submit(i + prefetch)
                prepared = future.result()
            _emit(event="result", id=cell["id"], **worker.measure(prepared, cell, lock))
        except Exception as e:  # noqa: BLE001 - one failing cell must not end the table
            _emit(event="error", id=cell["id"], error=_short(e))
        finally:
            del prepared
            worker.cleanup()


# ------------------------------------------------------------------------------------------------
# parent side


class Runner:
    """One backend's worker process and the cells it still owes."""

    def __init__(self, backend: str, cells: list[dict], lock_path: str, log_dir: str, events: queue.Queue,
                 prefetch: int):
        self.backend, self.pending, self.lock_path, self.prefetch = backend, list(cells), lock_path, prefetch
        self.log_dir, self.events = log_dir, events
        self.proc = None
        self.current, self.current_start = None, 0.0
        self.starts = 0
        self.done = False

    def start(self) -> None:
        env = dict(os.environ)
        if self.backend == "jax":
            env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the device with torch
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        log = open(os.path.join(self.log_dir, f"{self.backend}-{self.starts}.log"), "w")  # noqa: SIM115
        cmd = [sys.executable, __file__, "--worker", self.backend, "--lock", self.lock_path,
               "--prefetch", str(self.prefetch if self.backend == "jax" else 0),
               "--cells", json.dumps(self.pending)] + ([] if self.starts == 0 else ["--restarted"])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, env=env)
        self.log_path = log.name
        self.starts += 1
        proc = self.proc

        def read():
            for line in proc.stdout:
                if line.startswith("@@"):
                    self.events.put((self, proc, json.loads(line[2:])))
            proc.wait()
            self.events.put((self, proc, None))

        threading.Thread(target=read, daemon=True).start()

    def last_log_line(self) -> str:
        try:
            lines = [ln.strip() for ln in open(self.log_path).read().splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()


def plan_cells(rows: list[str], backends: list[str], seqs: list[int], dtypes: list[str]) -> list[dict]:
    """Cells in the order they run: every row at the first (dtype, seq) before any at the next."""
    cells = []
    for dtype in dtypes:
        for seq in seqs:
            for row in rows:
                for backend in backends:
                    cells.append(dict(id=len(cells), row=row, backend=backend, seq=seq, dtype=dtype,
                                      batch=max(1, TOKENS_PER_STEP // seq)))
    return cells


def orchestrate(cells: list[dict], backends: list[str], args) -> dict:
    """Run the cells in one worker per backend; returns {'results', 'hello', 'checks', 'peaks', ...}."""
    deadline = time.monotonic() + args.budget
    results: dict[int, dict] = {}
    hello, checks, peaks = {}, {}, {}
    events: queue.Queue = queue.Queue()
    tmp = tempfile.mkdtemp(prefix="device_check_")
    lock_path = os.path.join(tmp, "device.lock")
    runners = {b: Runner(b, [c for c in cells if c["backend"] == b], lock_path, tmp, events, args.jax_prefetch)
               for b in backends}
    order = list(runners.values())
    if args.serial:
        order[0].start()
    else:
        for r in order:
            r.start()
    while not all(r.done for r in order):
        now = time.monotonic()
        if now > deadline:
            for r in order:
                r.kill()
                for c in r.pending:
                    results.setdefault(c["id"], {"note": f"not run: time budget ({args.budget:.0f} s) spent"})
                r.done = True
            break
        for r in order:
            if r.current is not None and now - r.current_start > args.cell_timeout:
                results[r.current] = {"note": f"timeout after {args.cell_timeout:.0f} s"}
                r.pending = [c for c in r.pending if c["id"] != r.current]
                r.current = None
                r.kill()  # its reader reports the exit; the runner restarts there
        try:
            runner, proc, event = events.get(timeout=1.0)
        except queue.Empty:
            continue
        if proc is not runner.proc:
            continue  # a killed worker's late lines
        if event is None:  # the worker exited
            if runner.backend not in hello:  # before saying hello: it could not even start
                why = runner.last_log_line() or f"exit status {proc.returncode}"
                hello[runner.backend] = {"accelerator": False, "device": f"worker failed: {why}", "version": "?"}
                for c in runner.pending:
                    results[c["id"]] = {"note": f"worker failed to start: {why}"[:240]}
                runner.pending = []
            if runner.current is not None:
                why = runner.last_log_line() or f"exit status {proc.returncode}"
                results[runner.current] = {"note": f"worker died: {why}"[:240]}
                runner.pending = [c for c in runner.pending if c["id"] != runner.current]
                runner.current = None
            if runner.pending and hello.get(runner.backend, {}).get("accelerator"):
                runner.start()
            else:
                runner.done = True
                if args.serial:
                    nxt = next((r for r in order if r.proc is None), None)
                    if nxt is not None:
                        nxt.start()
            continue
        kind = event.pop("event")
        if kind == "hello":
            hello[runner.backend] = event
            if not event["accelerator"]:
                for c in runner.pending:
                    results[c["id"]] = {"note": f"n/a: {runner.backend} sees no accelerator ({event['device']})"}
                runner.pending = []
        elif kind == "check":
            checks[runner.backend] = event["rows"]
        elif kind == "peak":
            peaks[runner.backend] = event
        elif kind == "start":
            runner.current, runner.current_start = event["id"], time.monotonic()
        elif kind in ("result", "error"):
            cid = event.pop("id")
            results[cid] = event if kind == "result" else {"note": f"error: {event['error']}"}
            runner.pending = [c for c in runner.pending if c["id"] != cid]
            runner.current = None
            print(f"  [{time.monotonic() - deadline + args.budget:5.0f} s] {runner.backend} cell {cid} "
                  f"{'ok' if kind == 'result' else 'error'}", file=sys.stderr, flush=True)
    return dict(results=results, hello=hello, checks=checks, peaks=peaks, log_dir=tmp)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def render(cells: list[dict], run: dict, notes: dict[str, str], elapsed: float, seqs, dtypes) -> str:
    """The markdown report: devices, peaks, the kernel check and the throughput table."""
    from benchmarks.throughput import train_flops_per_token
    from benchmarks.timing import markdown_table

    lines = []
    for backend, h in run["hello"].items():
        lines.append(f"- {backend}: {h['version']}, {h['device']}")
    peak = {}
    for dtype in DTYPES:
        per = {b: v for b, p in run["peaks"].items() if (v := p.get("flops", {}).get(dtype))}
        if per:
            peak[dtype] = max(per.values())
            lines.append(f"- {dtype} matmul peak ({PEAK_N}^2): " + ", ".join(
                f"{b} {v / 1e12:.1f} TFLOP/s" for b, v in per.items()) + "; MFU uses the larger")
    lines.append(f"- wall time {elapsed:.0f} s\n")
    if run["checks"]:
        lines.append(f"Kernel check: attention {CHECK_SHAPE}, max |x - ref| / max |ref| against the dense path "
                     "in IEEE float32 (inputs cast to the dtype, outputs and gradients compared in float32)\n")
        rows = []
        for backend, entries in run["checks"].items():
            for e in entries:
                head = [backend, e["kernel"], e["dtype"], "ripple" if e["decay"] is True else
                        ("causal" if e["decay"] is False else "-")]
                rows.append(head + ([f"{x:.1e}" for x in e["errs"]] if "errs" in e else [e["error"], "", "", "", ""]))
        lines.append(markdown_table(["backend", "attention", "dtype", "bias", "out", "dq", "dk", "dv", "dlambda"], rows))
        lines.append("")
    rows = []
    by_id = run["results"]
    for dtype in dtypes:
        for seq in seqs:
            for c in (c for c in cells if c["dtype"] == dtype and c["seq"] == seq):
                label = ROWS[c["row"]][0]
                head = [label, c["backend"], dtype, seq, c["batch"]]
                r = by_id.get(c["id"], {"note": notes.get(c["row"]) or "not run"})
                if "step_s" not in r:
                    rows.append(head + ["", "", "", "", "", "", r.get("note", "")])
                    continue
                tok_s = c["batch"] * seq / r["step_s"]
                cfg = row_config(c["row"], seq)
                mfu = tok_s * train_flops_per_token(cfg, r["params"], seq) / peak[dtype] if dtype in peak else None
                rows.append(head + [f"{r['params']:,}", f"{tok_s:,.0f}", f"{1e3 * r['step_s']:.1f}",
                                    _mib(r["memory_bytes"]), "" if mfu is None else f"{100 * mfu:.1f}%",
                                    f"{r['setup_s']:.0f}", f"loss {r['loss']:.2f}"])
    lines.append(markdown_table(["model", "backend", "dtype", "seq", "batch", "params", "train tok/s", "step ms",
                                 "peak MiB", "MFU", "compile+warm s", "note"], rows))
    return "\n".join(lines)


def main() -> None:
    """Plan the cells, run them in the two workers, print the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma list of rows (default all: {', '.join(ROWS)})")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--seqs", default=",".join(map(str, SEQS)))
    parser.add_argument("--dtypes", default=",".join(DTYPES))
    parser.add_argument("--budget", type=float, default=450, help="seconds for the whole run (default 450)")
    parser.add_argument("--cell-timeout", type=float, default=150, help="seconds before a cell is killed")
    parser.add_argument("--serial", action="store_true", help="one backend after the other (no overlap)")
    parser.add_argument("--jax-prefetch", type=int, default=2,
                        help="JAX cells compiled ahead in threads while one is timed (0: none)")
    parser.add_argument("--json", default=None, help="also write every number to this file")
    parser.add_argument("--prefetch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cells", default="[]", help=argparse.SUPPRESS)
    parser.add_argument("--lock", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--restarted", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, json.loads(args.cells), args.lock, first=not args.restarted, prefetch=args.prefetch)
        return

    rows = args.rows.split(",")
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; valid: {', '.join(ROWS)}")
    backends = args.backends.split(",")
    seqs = [int(s) for s in args.seqs.split(",")]
    dtypes = args.dtypes.split(",")
    if any(d not in DTYPES for d in dtypes):
        parser.error(f"--dtypes {args.dtypes!r}: valid dtypes are {', '.join(DTYPES)}")
    notes = {r: why for r in rows if (why := row_unavailable(r))}
    cells = plan_cells([r for r in rows if r not in notes], backends, seqs, dtypes)
    cells_all = cells + [dict(id=f"skip-{r}-{b}-{s}-{d}", row=r, backend=b, seq=s, dtype=d,
                              batch=max(1, TOKENS_PER_STEP // s))
                         for r in notes for b in backends for s in seqs for d in dtypes]
    started = time.monotonic()
    run = orchestrate(cells, backends, args)
    if not any(h.get("accelerator") for h in run["hello"].values()):
        seen = "; ".join(f"{b}: {h['device']}" for b, h in run["hello"].items()) or "no worker answered"
        print(f"device_check.py needs an accelerator (a GPU or TPU) and found none ({seen}). Run it on a "
              "GPU/TPU machine; for CPU figures use benchmarks/throughput.py.", file=sys.stderr)
        sys.exit(2)
    cells_all.sort(key=lambda c: (list(ROWS).index(c["row"]), c["backend"]))
    report = render(cells_all, run, notes, time.monotonic() - started, seqs, dtypes)
    print(report)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(dict(cells=cells_all, **run), indent=1, default=str))


if __name__ == "__main__":
    main()
