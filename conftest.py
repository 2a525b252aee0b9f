"""Shared pytest fixtures for tests/ and parity_tests/."""

import os
import sys

# The suite compiles hundreds of small XLA programs and runs most of them once: on CPU, LLVM's
# optimisation passes cost more time than they save (parity_tests/ took a third less CPU time at
# level 0). Codegen optimisation only: XLA's graph passes and the numerics (no fast-math) stay.
# One thread per framework: the tests' tensors are tiny, and `pytest -n 2` runs one worker per core;
# torch's idle OpenMP threads otherwise spin for the CPU (8 s instead of 0.2 s for one generation
# test on a busy machine). Set before JAX creates its CPU backend and before torch loads OpenMP;
# subprocesses inherit them. Explicit settings in the environment win.
_FLAGS = {"xla_backend_optimization_level": "0", "xla_cpu_multi_thread_eigen": "false"}
_xla = os.environ.get("XLA_FLAGS", "")
os.environ["XLA_FLAGS"] = " ".join([_xla] + [f"--{k}={v}" for k, v in _FLAGS.items() if k not in _xla]).strip()
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
