"""Run JAX functions and physnets_jax models inside PyTorch autograd (jax2torch, made to work).

Public API:

- ``jax_to_torch(fn, *, jit=True)``: a torch callable running the JAX function ``fn``; its
  gradients flow through ``jax.vjp`` (forward and backward are jitted once per input signature).
- ``JaxModule(model)``: any physnets_jax NNX model as a ``torch.nn.Module`` whose parameters are
  ``nn.Parameter``s named like the physnets_torch twin's state_dict.
- ``tensor_to_jax`` / ``jax_to_tensor``: the zero-copy converters (DLPack protocol).
- ``jax_device_for(torch_device)``: the JAX device that addresses a torch device, or ValueError.
- ``gate_loop_scan_jax(a, kv, *, axis, h0)``: the GateLoop scan by JAX's associative scan, in
  torch autograd (``physnets_torch.ops.gate_loop.gate_loop_scan(..., scan_backend="jax")``).
- ``patch_jax2torch()`` / ``unpatch_jax2torch(previous)``: make the upstream
  ``jax2torch.jax2torch`` usable again (for code that already calls it, e.g. the published
  gateloop-transformer), and undo that.

Why a compatibility layer. jax2torch 0.0.7 (2021) is a thin wrapper of mattjj's gist; on
jax 0.10 / torch 2.13 it fails in five ways, each handled here:

1. ``t2j`` passes a DLPack *capsule* to ``jax.dlpack.from_dlpack``, which now accepts only
   objects with ``__dlpack__``/``__dlpack_device__`` (TypeError). We pass the tensor itself.
2. ``j2t`` calls ``jax.dlpack.to_dlpack``, which no longer exists (AttributeError). We call
   ``torch.from_dlpack(array)`` (the array implements ``__dlpack__``).
3. torch refuses to export a tensor that requires grad (BufferError). We ``detach()`` first
   (a view: same memory), and resolve lazy conjugate/negative bits.
4. Its autograd.Function passes every argument to ``jax.vjp`` (strings break it) and returns
   nested outputs detached from the graph (no gradient reaches them). We flatten arguments and outputs as
   pytrees, differentiate only w.r.t. tensors that require grad, pass other tensors as
   non-differentiable arrays and other leaves as static values, and give integer outputs
   float0 cotangents.
5. It re-traces ``fn`` on every call. We jit ``jax.vjp`` (the VJP closure is a pytree that a
   jitted function may return) and its pullback, cached per signature.

Upstream replacements live in one place, ``_UPSTREAM_REPLACEMENTS``; tests assert that the
upstream behaviour they replace is still broken, so we notice when it is fixed.

Conversion rules (``tensor_to_jax``):

- Zero-copy for contiguous, suitably aligned tensors of a supported dtype on a device JAX
  can address (CPU always; CUDA when a CUDA jaxlib sees the same GPU).
- Non-contiguous tensors (transposes, strided slices, expanded views) are copied with
  ``.contiguous()`` first: JAX's DLPack import rejects most strides.
- Supported dtypes: bool, (u)int8/16/32/64, float16, bfloat16, float32, float64, complex64,
  complex128. Others (complex32, float8, quantized) raise ValueError naming the argument.
- With ``jax_enable_x64`` off, float64/complex128 tensors raise ValueError (JAX would
  silently round them and the gradients would come back in float32); int64/uint64 are
  converted to int32/uint32 (a copy), as JAX itself does with 64-bit integers.
- Complex numbers: torch's gradient of a real loss is the conjugate of JAX's, so complex
  cotangents are conjugated going in and complex gradients coming out.

Autograd semantics match torch's own functions: inputs and outputs are saved for backward,
so an in-place change before ``backward()`` raises torch's "modified by an inplace
operation" error; a second backward without ``retain_graph=True`` raises torch's "backward
through the graph a second time" error. With ``create_graph=True`` the backward pass is
itself a bridged JAX function (the VJP, recomputed from the inputs), so higher derivatives
work (gradient penalties, Hessian-vector products), at the cost of one extra forward.
Outputs are JAX buffers shared with torch (zero-copy); an output that would alias an
input's memory is cloned.
"""

from physnets_torch.bridge.gate_loop import gate_loop_scan_jax
from physnets_torch.bridge.interop import jax_device_for, jax_to_tensor, jax_to_torch, tensor_to_jax
from physnets_torch.bridge.jax2torch_compat import (
    patch_jax2torch,
    unpatch_jax2torch,
    upstream_module,
)
from physnets_torch.bridge.jax_module import JaxModule

__all__ = [
    "jax_to_torch",
    "JaxModule",
    "tensor_to_jax",
    "jax_to_tensor",
    "jax_device_for",
    "gate_loop_scan_jax",
    "patch_jax2torch",
    "unpatch_jax2torch",
    "upstream_module",
]
