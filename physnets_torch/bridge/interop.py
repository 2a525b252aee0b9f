"""Tensor <-> array conversion through DLPack and `jax_to_torch`: JAX functions inside torch
autograd (see physnets_torch.bridge for the rules)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.utils.dlpack

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


