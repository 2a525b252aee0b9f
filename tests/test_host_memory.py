"""keep_freed_host_memory: freed large blocks are reused instead of faulting in fresh pages."""

import pathlib
import subprocess
import sys
import textwrap

import pytest

MODULE = pathlib.Path(__file__).resolve().parent.parent / "physnets_jax" / "training" / "host_memory.py"

SCRIPT = textwrap.dedent("""
    import ctypes, importlib.util, resource, sys
    if sys.argv[1] == "keep":  # the module alone: importing the package would load JAX
        spec = importlib.util.spec_from_file_location("host_memory", sys.argv[2])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.keep_freed_host_memory() is True
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    def touch():
        block = libc.malloc(64 << 20)
        ctypes.memset(block, 1, 64 << 20)
        libc.free(block)
    touch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        touch()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings: Linux only")
def test_freed_memory_is_reused_without_page_faults():
    # A fresh process per mode (the settings are process-wide): allocate, fill and free 64 MB
    # blocks, as XLA does with a step's temporaries, and count the repeats' minor page faults.
    faults = {
        mode: int(subprocess.run([sys.executable, "-c", SCRIPT, mode, str(MODULE)], capture_output=True, text=True,
                                 check=True).stdout.split()[-1])
        for mode in ("keep", "system")
    }
    pages = 3 * (64 << 20) // 4096
    assert faults["system"] > pages // 2  # glibc's default: every 64 MB block is a fresh mmap
    assert faults["keep"] < pages // 20
