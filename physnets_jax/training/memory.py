"""Memory a request needs, estimated before anything is allocated, and the refusal when it cannot fit.

`physnets sample --tokens N` allocates a decoding cache for every position and N sampling keys;
`physnets eval --eval-lengths L` (and `train --eval-lengths`) runs the model on sequences of L
tokens, whose attention scores alone grow as L^2. Both are estimated first: the forward pass
from XLA's own memory analysis of the compiled evaluation (compiled for the shapes only, nothing
allocated), the decoding cache from the shapes `init_cache` would allocate. A request above what
the device has free is refused with both numbers in the message.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class MemoryRequestTooLarge(ValueError):
    """A request whose estimated memory exceeds what the device has available."""


def format_bytes(n: float) -> str:
    """'690.4 GB', '12.0 MB', '512 bytes'."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


def available_bytes(device=None) -> tuple[int | None, str]:
    """(bytes the device can still allocate, what was measured): an accelerator's bytes_limit
    minus bytes_in_use, or on CPU the host's available memory (MemAvailable, else free pages).
    (None, reason) when nothing can be measured."""
    device = device or jax.local_devices()[0]
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # some backends do not implement it
        stats = None
    if stats and "bytes_limit" in stats:
        free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
        return free, f"free on {device.platform} device {device.id}"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available host memory"
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"), "free host memory"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def _tree_bytes(tree) -> int:
    return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def forward_bytes(model, batch: int, length: int) -> int | None:
    """Bytes one evaluation of `model` on (batch, length) tokens needs: arguments (parameters,
    tokens), outputs and temporaries, from XLA's memory analysis (None if the backend gives none)."""
    from physnets_jax.training.train import eval_loss

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    compiled = eval_loss.lower(graphdef, params, rest, tokens, tokens).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes)


def sample_bytes(model, batch: int, prompt_len: int, new_tokens: int) -> int:
    """Bytes `generate` allocates for `new_tokens` after a prompt of `prompt_len`: the decoding
    cache for every position (models that extrapolate or fit in block_size), one PRNG key per new
    token and the token buffers."""
    total = prompt_len + new_tokens
    cfg = model.cfg
    cache = 0
    if cfg.extrapolates or total <= cfg.block_size:
        dtype = jax.tree.leaves(nnx.state(model, nnx.Param))[0].dtype
        cache = _tree_bytes(jax.eval_shape(lambda: model.init_cache(batch, total, dtype)))
    n_keys = max(new_tokens, 1)
    keys = _tree_bytes(jax.eval_shape(lambda: jax.random.key_data(jax.random.split(jax.random.key(0), n_keys))))
    buffers = 3 * batch * total * 4  # host output, device result, the joined copy
    return cache + keys + buffers


def check_fits(needed: int | None, what: str, advice: str, device=None) -> None:
    """Raise MemoryRequestTooLarge when `needed` bytes exceed what the device has available."""
    if needed is None:
        return
    free, source = available_bytes(device)
    if free is not None and needed > free:
        raise MemoryRequestTooLarge(
            f"{what} needs about {format_bytes(needed)}, but only {format_bytes(free)} is {source}; {advice}"
        )


def check_length_eval_fits(model, lengths, batch: int) -> None:
    """Refuse, before running any, the evaluation lengths whose forward pass cannot fit (lengths
    a model with learned positions cannot run are skipped by length_eval and not estimated)."""
    cfg = model.cfg
    for length in lengths:
        if not cfg.extrapolates and length > cfg.block_size:
            continue
        check_fits(forward_bytes(model, batch, int(length)), f"--eval-lengths {length} (batch {batch})",
                   "ask for shorter lengths or a smaller --batch-size")
