"""Timing helpers shared by the benchmark scripts: median wall time of a callable after warmup."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable

# Untimed calls before timing: compilation, then the first executions, which run slower while the
# process's heap grows to the step's peak (a JAX ripplegpt-small step: 628 ms for calls 3-7, 400 ms
# from call 8 on; both frameworks get the same number).
WARMUP_CALLS = 5


def median_seconds(fn: Callable[[], object], *, warmup: int = WARMUP_CALLS, repeats: int = 5) -> float:
    """Median wall time of fn() over `repeats` calls after `warmup` calls (fn must block)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_median_seconds(
    fns: dict[str, Callable[[], object]], *, warmup: int = WARMUP_CALLS, repeats: int = 5, cpu_time: bool = False,
    calls_per_turn: int = 1,
) -> dict[str, float]:
    """Median wall time of each callable, timed round-robin so that load changes on a shared
    machine hit every contender alike; with cpu_time, the process's CPU time (all threads, user
    + system) instead: the work a call did, without the time it waited for a core.

    calls_per_turn > 1: each turn calls the contender that many times in a row and times only the
    last call, which then finds the caches holding its own working set, as in a loop that runs one
    program (a call timed right after another contender's ran up to 15% slower: gpt-small's JAX
    forward 178 vs 154 ms after a forward + backward)."""
    if calls_per_turn < 1:
        raise ValueError(f"calls_per_turn must be >= 1, got {calls_per_turn}")
    clock = time.process_time if cpu_time else time.perf_counter
    # Warm up in the same rotation as the timed rounds: the heap settles to the rotation's pattern
    # (warmed one contender at a time, the first timed rounds of ripple_speed.py page-faulted 170-330
    # MB into the JAX call after the torch models' turns, 627-916 ms instead of ~380 ms).
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            for _ in range(calls_per_turn - 1):
                fn()
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def add_cpu_time_option(parser) -> None:
    """--cpu-time: time by process CPU time (for loaded machines; run one thread per framework)."""
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="time each call by the process's CPU time instead of wall time: on a loaded machine it "
        "counts the work, not the waiting. Run with one thread per framework: XLA_FLAGS="
        "--xla_cpu_multi_thread_eigen=false OMP_NUM_THREADS=1",
    )


def machine_line() -> str:
    """One line describing the machine: CPU model, core count, Python, JAX and torch versions."""
    import os

    import jax
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}"
    )


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def add_malloc_option(parser) -> None:
    """--system-malloc: time with glibc's default malloc instead of the trainer's setting."""
    parser.add_argument(
        "--system-malloc", action="store_true",
        help="leave glibc malloc at its defaults; by default the script keeps freed host memory "
        "as train_jax.py does (physnets_jax.training.host_memory)",
    )


def apply_malloc_option(args) -> str:
    """Apply the trainer's host-memory setting unless --system-malloc; a line saying which."""
    if getattr(args, "system_malloc", False):
        return "host malloc: glibc defaults (--system-malloc)"
    from physnets_jax.training.host_memory import keep_freed_host_memory

    applied = keep_freed_host_memory()
    return "host malloc: freed memory kept, as train_jax.py" + ("" if applied else " (not glibc: unchanged)")
