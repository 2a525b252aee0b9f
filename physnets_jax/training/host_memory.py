"""Keep freed host memory mapped, so XLA on CPU stops page-faulting its temporaries every step.

XLA's CPU runtime allocates a step's temporaries (activations, the layer scan's stacked
residuals: hundreds of MB at the seed sizes) with malloc on every execution and frees them at
the end. glibc serves blocks above 32 MB with a fresh mmap and returns them to the kernel on
free, so every training step faulted its whole working set in again: at ripplegpt-small,
batch 8 x 256, 425 MB of fresh pages and 280 ms of kernel time per step (~17% of the step;
torch's step faulted none, its tensors are smaller and stay on the heap). Keeping freed memory
in the process removes that cost; the process's resident memory then stays at its peak, which
a training run reaches every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
SETTINGS = (
    (_M_ARENA_MAX, 1),  # one heap: per-thread arenas are capped at 64 MB and unmapped when they shrink
    (_M_MMAP_MAX, 0),  # large blocks from the heap, not from one-off mmaps
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # never hand the heap's top back to the kernel
    (_M_TOP_PAD, 2**29),  # grow the heap in large steps
)


def keep_freed_host_memory() -> bool:
    """Set glibc malloc to keep freed memory in the process (see the module docstring).

    Returns True when every setting was applied, False where the C library is not glibc (macOS,
    musl) or refused one. Best called before JAX runs its first computation: threads that
    allocated before keep their own arenas. Process-wide and not undone.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
