"""Shared pytest fixtures for tests/ and parity_tests/."""

import os
import sys

# The suite compiles hundreds of small XLA programs and runs most of them once, so compilation is
# most of its time: on CPU, LLVM's optimisation passes cost more time than they save (parity_tests/
# took a third less CPU time at level 0), and XLA:CPU's MLIR fusion emitters compile a training step
# 2.5x slower than the classic elemental emitters (ripplegpt+gateloop+wave_gpt nano steps: 9.8 s vs
# 3.8 s). Code generation only: XLA's graph passes and the numerics (no fast-math) stay.
# One thread per framework: the tests' tensors are tiny, and `pytest -n 2` runs one worker per core;
# torch's idle OpenMP threads otherwise spin for the CPU (8 s instead of 0.2 s for one generation
# test on a busy machine). Set before JAX creates its CPU backend and before torch loads OpenMP;
# subprocesses inherit them. Explicit settings in the environment win.
_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false",
          "xla_cpu_multi_thread_eigen": "false"}
_xla = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join([_xla] + [f"--{k}={v}" for k, v in _FLAGS.items() if k not in _xla]).strip()
os.environ.setdefault("OMP_NUM_THREADS", "1")

# One XLA compilation cache for the whole run (both xdist workers and every subprocess a test
# starts): the CLI, checkpoint and multi-process tests train the same nano models in new processes,
# which would otherwise compile the same programs again. A fresh folder per run, removed at exit, so
# a run never depends on an earlier one. Set by the first process (the xdist controller or the
# single pytest process) before any JAX import; workers and subprocesses inherit the variables.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="physnets-tests-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

if "torch" in sys.modules:  # already loaded by a plugin: the environment variable came too late
    sys.modules["torch"].set_num_threads(1)


@pytest.fixture
def x64():
    """Enable float64 in JAX for one test and restore the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="session")
def shared_tinyshakespeare():
    """Path of the shared TinyShakespeare copy (../shared/data), or skip when it is absent."""
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "shared" / "data" / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip(f"shared corpus not found at {path} (tests read it from ../shared/data only)")
    return path
