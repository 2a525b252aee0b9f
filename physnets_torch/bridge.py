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

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.utils.dlpack

__all__ = [
    "jax_to_torch",
    "JaxModule",
    "tensor_to_jax",
    "jax_to_tensor",
    "jax_device_for",
    "gate_loop_scan_jax",
    "patch_jax2torch",
    "unpatch_jax2torch",
]

# ---------------------------------------------------------------------------------------------
# 1. tensor <-> array through the __dlpack__ protocol (replaces upstream t2j / j2t)
# ---------------------------------------------------------------------------------------------

_SUPPORTED_DTYPES = (
    torch.bool,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.uint16,
    torch.uint32,
    torch.uint64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
)
_WIDE_INEXACT = (torch.float64, torch.complex128)
_DIFFERENTIABLE = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
    torch.complex128,
)


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)


def _name(name) -> str:
    return name() if callable(name) else name


def _check_tensor(tensor: torch.Tensor, name) -> None:
    """Raise ValueError (naming the argument) for tensors JAX cannot import as they are."""
    if tensor.layout != torch.strided:
        raise ValueError(
            f"{_name(name)} has layout {tensor.layout}; only dense (strided) tensors convert"
        )
    if tensor.dtype not in _SUPPORTED_DTYPES:
        hint = ".to(torch.complex64)" if tensor.is_complex() else ".float()"
        raise ValueError(
            f"{_name(name)} has torch dtype {tensor.dtype}, which JAX cannot import through "
            f"DLPack; supported: {', '.join(str(d).removeprefix('torch.') for d in _SUPPORTED_DTYPES)}. "
            f"Convert it first (e.g. {hint})"
        )
    if tensor.dtype in _WIDE_INEXACT and not _x64():
        raise ValueError(
            f"{_name(name)} has dtype {tensor.dtype} but JAX runs in 32-bit mode "
            f"(jax_enable_x64 is off), so it would be rounded silently; call "
            f"jax.config.update('jax_enable_x64', True) or pass a 32-bit tensor"
        )


def tensor_to_jax(tensor: torch.Tensor, name: str = "tensor") -> jax.Array:
    """A JAX array sharing the memory of `tensor` (detached; contiguous copy if strided)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{_name(name)} must be a torch.Tensor, got {type(tensor).__name__}")
    _check_tensor(tensor, name)
    device = jax_device_for(tensor.device, name=name)
    tensor = tensor.detach()
    if tensor.is_conj():
        tensor = tensor.resolve_conj()
    if tensor.is_neg():
        tensor = tensor.resolve_neg()
    if not tensor.is_contiguous():
        tensor = tensor.contiguous()
    return _import_dlpack(tensor, device)


def jax_to_tensor(array: jax.Array) -> torch.Tensor:
    """A torch tensor sharing the memory of the JAX array (on the matching torch device)."""
    if not isinstance(array, jax.Array):
        array = jnp.asarray(array)
    if jnp.issubdtype(array.dtype, jax.dtypes.prng_key) or array.dtype == jax.dtypes.float0:
        raise ValueError(f"a JAX array of dtype {array.dtype} has no torch equivalent")
    devices = array.devices()
    if len(devices) != 1:
        raise ValueError(
            f"a JAX array sharded over {len(devices)} devices cannot become one torch tensor; "
            f"gather it first (jax.device_get or a single-device sharding)"
        )
    return _export_dlpack(array, next(iter(devices)))


# Fast paths. jax.dlpack.from_dlpack spends ~100 us per call in Python (backend lookups, a
# no-op jnp.asarray) and Array.__dlpack__ ~10 us; their jaxlib cores cost ~10 us and ~2 us.
# They are private API: any failure switches to the public path for good, and the tests check
# that both paths return the same zero-copy buffers.
def _load_fast_paths():
    try:
        from jax._src.lib import _jax, jaxlib_extension_version

        if jaxlib_extension_version < 467:  # pragma: no cover - older jaxlib signature
            return None, None
        return _jax.dlpack_managed_tensor_to_buffer, _jax.buffer_to_dlpack_managed_tensor
    except Exception:  # pragma: no cover - depends on the jaxlib build
        return None, None


_FAST_IMPORT, _FAST_EXPORT = _load_fast_paths()


def _import_dlpack(tensor: torch.Tensor, device) -> jax.Array:
    """jax.dlpack.from_dlpack(tensor), same result, through jaxlib directly when possible."""
    global _FAST_IMPORT
    if _FAST_IMPORT is not None:
        try:
            dl_type, _ = tensor.__dlpack_device__()
            # The stream JAX would pass (jax._src.dlpack.from_dlpack): none on CPU.
            stream = None if device.platform == "cpu" else device.get_stream_for_external_ready_events()
            array = _FAST_IMPORT(tensor.__dlpack__(stream=stream), device, stream, None, int(dl_type))
            canonical = jax.dtypes.canonicalize_dtype(array.dtype)
            return array if array.dtype == canonical else jnp.asarray(array, dtype=canonical)
        except Exception:  # pragma: no cover - a jaxlib whose private API changed
            _FAST_IMPORT = None
    return jnp.from_dlpack(tensor)


def _export_dlpack(array: jax.Array, device) -> torch.Tensor:
    """torch.from_dlpack(array), same result; the capsule fast path only on CPU (on GPUs the
    protocol call lets JAX order its stream before torch's)."""
    global _FAST_EXPORT
    if _FAST_EXPORT is not None and device.platform == "cpu":
        try:
            return torch.utils.dlpack.from_dlpack(_FAST_EXPORT(array, stream=None))
        except Exception:  # pragma: no cover - a jaxlib whose private API changed
            _FAST_EXPORT = None
    return torch.from_dlpack(array)


_DEVICE_CACHE: dict[torch.device, Any] = {}


def jax_device_for(device: torch.device | str, *, name="tensor"):
    """The JAX device that addresses torch `device` (ValueError naming both when there is none)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    found = _DEVICE_CACHE.get(device)
    if found is not None:
        return found
    candidates = []
    if device.type == "cpu":
        candidates = jax.devices("cpu")[:1]
    elif device.type == "cuda":
        try:
            candidates = [d for d in jax.devices("gpu") if d.local_hardware_id == device.index]
        except RuntimeError:
            candidates = []
    if not candidates:
        available = ", ".join(f"{d.platform}:{d.id}" for d in jax.devices())
        raise ValueError(
            f"{_name(name)} is on torch device {device}, which JAX cannot address (JAX devices: "
            f"{available}); move the tensor (e.g. .cpu()) or install a jaxlib for that device"
        )
    _DEVICE_CACHE[device] = candidates[0]
    return candidates[0]


# ---------------------------------------------------------------------------------------------
# 2. The upstream package: what we replace, in one place
# ---------------------------------------------------------------------------------------------


def _upstream_t2j(x_torch):
    return tensor_to_jax(x_torch)


def _upstream_j2t(x_jax):
    return jax_to_tensor(x_jax)


# Upstream names in jax2torch.jax2torch -> our replacement. Upstream's tree_t2j/tree_j2t and
# jax2torch look these names up as module globals at call time, so replacing them suffices.
_UPSTREAM_REPLACEMENTS = {"t2j": _upstream_t2j, "j2t": _upstream_j2t}


def upstream_module():
    """The upstream module `jax2torch.jax2torch` (the package this bridge depends on)."""
    return importlib.import_module("jax2torch.jax2torch")


def patch_jax2torch() -> dict[str, Callable]:
    """Install our DLPack converters into jax2torch 0.0.7 so `jax2torch.jax2torch(fn)` runs on
    current JAX/torch (positional float tensors; its other limits stay, see module docs).
    Returns the replaced upstream functions (pass them to `unpatch_jax2torch` to restore)."""
    module = upstream_module()
    previous = {}
    for attr, replacement in _UPSTREAM_REPLACEMENTS.items():
        previous[attr] = getattr(module, attr)
        setattr(module, attr, replacement)
    return previous


def unpatch_jax2torch(previous: dict[str, Callable]) -> None:
    """Restore the upstream functions returned by `patch_jax2torch`."""
    module = upstream_module()
    for attr, original in previous.items():
        setattr(module, attr, original)


# ---------------------------------------------------------------------------------------------
# 3. jax_to_torch: pytrees in and out, jitted jax.vjp, torch autograd semantics
# ---------------------------------------------------------------------------------------------

_DIFF, _ARRAY, _STATIC = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class _InSpec:
    """Hashable description of one call's inputs: tree structure, leaf kinds, static leaves."""

    treedef: Any
    kinds: tuple[int, ...]
    statics: tuple[tuple[type, Any], ...]  # (type, value): 1, 1.0 and True compile apart

    def rebuild(self, diff, arrays):
        it_d, it_a, it_s = iter(diff), iter(arrays), (v for _, v in self.statics)
        pick = {_DIFF: it_d, _ARRAY: it_a, _STATIC: it_s}
        leaves = [next(pick[k]) for k in self.kinds]
        return jax.tree.unflatten(self.treedef, leaves)


@dataclasses.dataclass(frozen=True)
class _OutSpec:
    """Hashable description of the outputs: tree structure and, per leaf, float0 shape or None."""

    treedef: Any
    float0_shapes: tuple[tuple[int, ...] | None, ...]
    complex_in: tuple[bool, ...]


def _is_differentiable_dtype(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.inexact)


def _leaf_name(treedef, index: int) -> str:
    """Human-readable path of leaf `index` of the (args, kwargs) tree, for error messages."""
    dummy = jax.tree.unflatten(treedef, list(range(treedef.num_leaves)))
    for path, leaf in jax.tree_util.tree_flatten_with_path(dummy)[0]:
        if leaf == index:
            keys = jax.tree_util.keystr(path)
            if keys.startswith("[0]"):
                return "args" + keys[3:]
            if keys.startswith("[1]"):
                return "kwargs" + keys[3:]
            return keys
    return f"leaf {index}"


class _Bridge:
    """The torch callable returned by `jax_to_torch` (one per wrapped function)."""

    def __init__(self, fn: Callable, *, jit: bool, has_aux: bool = False):
        self.fn = fn
        self.jit = jit
        self.has_aux = has_aux
        self._higher_bridge = None
        self._fwd_vjp = jax.jit(self._fwd_vjp_impl, static_argnums=0) if jit else self._fwd_vjp_impl
        self._fwd = jax.jit(self._fwd_impl, static_argnums=0) if jit else self._fwd_impl
        self._bwd = jax.jit(self._bwd_impl, static_argnums=0) if jit else self._bwd_impl
        functools.update_wrapper(self, fn)

    # --- pure JAX parts (jitted) ---
    def _call_fn(self, spec: _InSpec, diff, arrays):
        args, kwargs = spec.rebuild(diff, arrays)
        out = self.fn(*args, **kwargs)
        return out if self.has_aux else (out, None)

    def _fwd_impl(self, spec: _InSpec, diff, arrays):
        return self._call_fn(spec, diff, arrays)

    def _fwd_vjp_impl(self, spec: _InSpec, diff, arrays):
        out, vjp_fn, aux = jax.vjp(lambda *d: self._call_fn(spec, d, arrays), *diff, has_aux=True)
        return out, aux, vjp_fn

    @staticmethod
    def _bwd_impl(spec: _OutSpec, vjp_fn, cts):
        it = iter(cts)
        leaves = []
        for shape in spec.float0_shapes:
            if shape is None:
                ct = next(it)
                leaves.append(jnp.conj(ct) if jnp.iscomplexobj(ct) else ct)
            else:
                leaves.append(np.zeros(shape, dtype=jax.dtypes.float0))
        grads = vjp_fn(jax.tree.unflatten(spec.treedef, leaves))
        return tuple(jnp.conj(g) if c else g for g, c in zip(grads, spec.complex_in, strict=True))

    def _vjp_of_fn(self, spec: _InSpec, out_spec: _OutSpec, diff, arrays, cts):
        _, vjp_fn = jax.vjp(lambda *d: self._call_fn(spec, d, arrays)[0], *diff)
        return self._bwd_impl(out_spec, vjp_fn, cts)

    def _higher(self) -> _Bridge:
        """The bridged VJP of fn (torch-convention cotangents in, gradients out), for
        differentiable backward passes (create_graph=True); built on first use."""
        if self._higher_bridge is None:
            self._higher_bridge = _Bridge(self._vjp_of_fn, jit=self.jit)
        return self._higher_bridge

    # --- the torch side ---
    def __call__(self, *args, **kwargs):
        leaves, treedef = jax.tree.flatten((args, kwargs))
        grad_on = torch.is_grad_enabled()
        kinds, statics, tensors, devices = [], [], [], {}
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                differentiable = grad_on and leaf.requires_grad and leaf.dtype in _DIFFERENTIABLE
                kinds.append(_DIFF if differentiable else _ARRAY)
                tensors.append(leaf)
                devices.setdefault(leaf.device, i)
            elif isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
                kinds.append(_ARRAY)
            else:
                try:
                    if self.jit:
                        hash(leaf)
                except TypeError:
                    raise TypeError(
                        f"{_leaf_name(treedef, i)} of type {type(leaf).__name__} is neither a "
                        f"tensor nor an array and is not hashable; the bridge passes such "
                        f"arguments to jax.jit as static values (use jit=False, or close over "
                        f"it with functools.partial)"
                    ) from None
                kinds.append(_STATIC)
                statics.append((type(leaf), leaf))
        if len(devices) > 1:
            (d1, i1), (d2, i2) = list(devices.items())[:2]
            raise ValueError(
                f"{_leaf_name(treedef, i1)} is on torch device {d1} but "
                f"{_leaf_name(treedef, i2)} is on {d2}; move them to one device"
            )
        spec = _InSpec(treedef, tuple(kinds), tuple(statics))
        diff, arrays = [], []
        for i, (leaf, kind) in enumerate(zip(leaves, kinds, strict=True)):
            if kind == _STATIC:
                continue
            if isinstance(leaf, torch.Tensor):
                value = tensor_to_jax(leaf, functools.partial(_leaf_name, treedef, i))
            elif isinstance(leaf, jax.Array):
                value = leaf
            else:
                value = jnp.asarray(leaf)
            (diff if kind == _DIFF else arrays).append(value)
        if devices:
            self._check_jax_devices(arrays, next(iter(devices)), treedef, kinds)
        if not diff:
            out, aux = self._fwd(spec, tuple(diff), tuple(arrays))
            leaves, out_treedef = jax.tree.flatten(out)
            out = jax.tree.unflatten(out_treedef, _outputs_to_torch(leaves, tensors))
            return (out, aux) if self.has_aux else out
        box = {}
        diff_mask = [k == _DIFF for k, leaf in zip(kinds, leaves, strict=True) if isinstance(leaf, torch.Tensor)]
        flat_out = _JaxFunction.apply(self, spec, tuple(diff), tuple(arrays), diff_mask, box, *tensors)
        out = jax.tree.unflatten(box["treedef"], flat_out)
        return (out, box["aux"]) if self.has_aux else out

    def _check_jax_devices(self, arrays, torch_device, treedef, kinds) -> None:
        expected = jax_device_for(torch_device)
        array_indices = [i for i, k in enumerate(kinds) if k == _ARRAY]
        for index, value in zip(array_indices, arrays, strict=True):
            if isinstance(value, jax.Array) and value.committed:
                devs = value.devices()
                if devs != {expected}:
                    raise ValueError(
                        f"{_leaf_name(treedef, index)} is a JAX array on "
                        f"{', '.join(str(d) for d in devs)} but the torch tensors are on "
                        f"{torch_device} (JAX device {expected}); put them on one device"
                    )


def _outputs_to_torch(leaves, inputs) -> list[torch.Tensor]:
    """Output arrays as tensors (zero-copy); one that aliases an input's memory is cloned (jit
    forwards an input returned unchanged, and torch must not see two owners of one buffer)."""
    in_ptrs = {t.data_ptr() for t in inputs if t.numel()}
    outs = []
    for leaf in leaves:
        t = jax_to_tensor(leaf)
        if t.numel() and t.data_ptr() in in_ptrs:
            t = t.clone()
        outs.append(t)
    return outs


class _JaxFunction(torch.autograd.Function):
    """torch autograd node whose forward is the jitted JAX function and backward its VJP."""

    @staticmethod
    def forward(ctx, bridge: _Bridge, spec: _InSpec, diff, arrays, diff_mask, box, *tensors):
        out, aux, vjp_fn = bridge._fwd_vjp(spec, diff, arrays)
        leaves, treedef = jax.tree.flatten(out)
        outs = _outputs_to_torch(leaves, tensors)
        float0_shapes = [
            None if _is_differentiable_dtype(leaf.dtype) else tuple(leaf.shape) for leaf in leaves
        ]
        non_diff = [t for t, s in zip(outs, float0_shapes, strict=True) if s is not None]
        if non_diff:
            ctx.mark_non_differentiable(*non_diff)
        ctx.save_for_backward(*tensors, *outs)
        ctx.bridge, ctx.vjp_fn, ctx.diff_mask = bridge, vjp_fn, diff_mask
        ctx.spec, ctx.arrays = spec, arrays
        complex_in = tuple(t.is_complex() for t, d in zip(tensors, diff_mask, strict=True) if d)
        ctx.out_spec = _OutSpec(treedef, tuple(float0_shapes), complex_in)
        box["treedef"], box["aux"] = treedef, aux
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors  # torch raises here on a second backward without retain_graph
        n_in = len(ctx.diff_mask)
        inputs, outs = saved[:n_in], saved[n_in:]
        ct_tensors = tuple(
            g if g is not None else torch.zeros_like(o)
            for g, o, s in zip(grads, outs, ctx.out_spec.float0_shapes, strict=True)
            if s is None
        )
        if torch.is_grad_enabled():
            # create_graph=True: the backward is itself a bridged JAX function (the VJP of fn,
            # recomputed from the primals), so torch can differentiate it again.
            diff_in = tuple(t for t, d in zip(inputs, ctx.diff_mask, strict=True) if d)
            jax_grads = iter(ctx.bridge._higher()(ctx.spec, ctx.out_spec, diff_in, ctx.arrays, ct_tensors))
            result = [next(jax_grads) if d else None for d in ctx.diff_mask]
        else:
            cts = tuple(
                tensor_to_jax(g, f"gradient of output {i}") for i, g in enumerate(ct_tensors)
            )
            jax_grads = iter(ctx.bridge._bwd(ctx.out_spec, ctx.vjp_fn, cts))
            result = [jax_to_tensor(next(jax_grads)) if d else None for d in ctx.diff_mask]
        return (None, None, None, None, None, None, *result)


def jax_to_torch(fn: Callable, *, jit: bool = True) -> Callable:
    """A torch callable computing `fn` (a JAX function of pytrees) whose backward is jax.vjp.

    Tensor leaves that require grad are differentiated; other tensors (integer tokens, masks,
    tensors without grad) are non-differentiable array inputs; other leaves (ints, floats,
    strings, dtypes) are static values (a new value recompiles when `jit`). Outputs may be any
    pytree of arrays; integer/bool outputs are non-differentiable. `jit=False` runs `fn`
    eagerly (for functions that cannot be traced by jax.jit).
    """
    return _Bridge(fn, jit=jit)


# ---------------------------------------------------------------------------------------------
# 4. JaxModule: an NNX model as a torch.nn.Module
# ---------------------------------------------------------------------------------------------


class _ParamGroup(torch.nn.Module):
    """Container that gives JaxModule's parameters their dotted physnets_torch names."""


def _model_bridge(graphdef, treedef, names: tuple[str, ...], jit: bool) -> _Bridge:
    """The bridged pure function of an NNX model split as (graphdef, params, rest): one per
    graph structure, shared by every JaxModule of that structure (one compile per process)."""
    key = (graphdef, treedef, names, jit)
    found = _MODEL_BRIDGES.get(key)
    if found is None:
        from flax import nnx

        from physnets_torch.convert import swap_layout  # an involution: also the inverse

        def apply(torch_params, rest, args, kwargs):
            leaves = [swap_layout(n, v) for n, v in zip(names, torch_params, strict=True)]
            model = nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves), rest)
            out = model(*args, **kwargs)
            return out, nnx.split(model, nnx.Param, ...)[2]

        found = _MODEL_BRIDGES[key] = _Bridge(apply, jit=jit, has_aux=True)
    return found


_MODEL_BRIDGES: dict[tuple, _Bridge] = {}


class JaxModule(torch.nn.Module):
    """A physnets_jax NNX model as a torch.nn.Module: one nn.Parameter per nnx.Param, named and
    laid out as in the physnets_torch twin's state_dict (physnets_torch.convert's rule set);
    forward(*args, **kwargs) runs the jitted JAX model, backward its VJP.

    Training mode follows torch: `.train()` / `.eval()` switch the JAX model's dropout.
    Non-parameter NNX state (dropout RNG streams, statistics) stays on the JAX side and is
    carried from call to call. `to_jax()` returns the NNX model with the current torch values.
    """

    def __init__(self, model, *, jit: bool = True):
        super().__init__()
        from flax import nnx

        from physnets_torch import convert

        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        # jax names in the order of the params pytree's leaves (a state of name strings)
        flat = nnx.to_flat_state(params)
        names_state = nnx.from_flat_state([(p, v.replace(".".join(map(str, p)))) for p, v in flat])
        jax_names = tuple(jax.tree.leaves(names_state))
        values = dict(zip(jax_names, (np.asarray(a) for a in jax.tree.leaves(params)), strict=True))
        state_dict = convert.jax_to_torch(values)
        self._graphdef = graphdef
        self._treedef = jax.tree.structure(params)
        self._jax_names = jax_names
        self._torch_names = tuple(state_dict)
        self._rest = rest
        self._jit = jit
        self._modes: dict[bool, _Bridge] = {}
        self._model_type = type(model).__name__
        for name, value in state_dict.items():
            *parents, leaf = name.split(".")
            owner = self
            for part in parents:
                child = owner._modules.get(part)
                if child is None:
                    if hasattr(owner, part):
                        raise ValueError(f"parameter {name!r}: {part!r} clashes with a torch.nn.Module attribute")
                    child = _ParamGroup()
                    owner.add_module(part, child)
                owner = child
            if hasattr(owner, leaf) and leaf not in owner._parameters:
                raise ValueError(f"parameter {name!r}: {leaf!r} clashes with a torch.nn.Module attribute")
            trainable = value.is_floating_point() or value.is_complex()
            owner.register_parameter(leaf, torch.nn.Parameter(value, requires_grad=trainable))

    def extra_repr(self) -> str:
        """One line: the wrapped NNX class and the parameter count."""
        return f"jax_model={self._model_type}, params={sum(p.numel() for p in self.parameters())}"

    def _bridge(self) -> _Bridge:
        """The bridge for torch's current training flag (the JAX model's .train()/.eval())."""
        training = self.training
        if training not in self._modes:
            from flax import nnx

            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), self._params_like())
            model = nnx.merge(self._graphdef, abstract, self._rest)
            model.train() if training else model.eval()
            graphdef = nnx.split(model, nnx.Param, ...)[0]
            self._modes[training] = _model_bridge(graphdef, self._treedef, self._jax_names, self._jit)
        return self._modes[training]

    def _params_like(self):
        """A params pytree (JAX layout, zeros) with the structure of the wrapped model's."""
        from physnets_torch.convert import swap_layout

        leaves = [
            swap_layout(n, np.zeros(tuple(self.get_parameter(t).shape), np.float32))
            for n, t in zip(self._jax_names, self._torch_names, strict=True)
        ]
        return jax.tree.unflatten(self._treedef, leaves)

    def forward(self, *args, **kwargs):
        """The JAX model's output for torch inputs (e.g. tokens (B, T) -> logits (B, T, V))."""
        params = tuple(self.get_parameter(n) for n in self._torch_names)
        rest = self._rest_on(params[0].device if params else torch.device("cpu"))
        out, self._rest = self._bridge()(params, rest, args, kwargs)
        return out

    def _rest_on(self, device: torch.device):
        target = jax_device_for(device, name="JaxModule parameters")
        leaves = jax.tree.leaves(self._rest)
        # committed to the parameters' device, as the state that forward returns will be
        # (an uncommitted first state would cost a second compile)
        if any(not leaf.committed or leaf.devices() != {target} for leaf in leaves):
            self._rest = jax.device_put(self._rest, target)
        return self._rest

    def to_jax(self):
        """The NNX model with this module's current parameter values (copied)."""
        from flax import nnx

        from physnets_torch import convert

        flat = convert.torch_to_jax(self.state_dict(), self._jax_names)
        params = jax.tree.unflatten(self._treedef, [jnp.asarray(flat[n]) for n in self._jax_names])
        return nnx.merge(self._graphdef, params, self._rest)


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
