"""The GateLoop scan by physnets_jax's associative scan inside torch autograd
(physnets_torch.ops.gate_loop.gate_loop_scan(..., scan_backend="jax"))."""

from __future__ import annotations

import torch
import torch.utils.dlpack

from physnets_torch.bridge.interop import _Bridge

# ---------------------------------------------------------------------------------------------
# 5. The GateLoop scan through the bridge (scan_backend="jax")
# ---------------------------------------------------------------------------------------------


def _jax_gate_loop(a, kv, axis, h0):
    from physnets_jax.ops.gate_loop import gate_loop_scan

    return gate_loop_scan(a, kv, axis=axis, h0=h0)


_GATE_LOOP = _Bridge(_jax_gate_loop, jit=True)


def gate_loop_scan_jax(
    a: torch.Tensor, kv: torch.Tensor, *, axis: int = 1, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """States h (kv's shape) of h_t = a_t h_{t-1} + kv_t along `axis` (h_{-1} = h0), computed by
    physnets_jax's jax.lax.associative_scan through the bridge, forward and backward; same
    arguments and validation as physnets_torch.ops.gate_loop.gate_loop_scan."""
    for name, t in (("a", a), ("kv", kv)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if h0 is not None:
        h0 = h0.to(kv.dtype)
    return _GATE_LOOP(a, kv, int(axis), h0)

