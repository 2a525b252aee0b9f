"""physnets_torch.bridge.jax_to_torch: conversions, autograd semantics, bad input, upstream.

References are independent of the bridge: the same math written in torch and differentiated
by torch.autograd, torch.autograd.gradcheck (finite differences), or hand-derived gradients.
Tolerances: float64 1e-12 (same math, different libraries); float32 1e-6 relative.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_torch import bridge
from physnets_torch.bridge import interop, jax_to_tensor, jax_to_torch, tensor_to_jax


@pytest.fixture
def x32():
    """Run one test with jax_enable_x64 off (the default), restoring the previous setting."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


# --------------------------------------------------------------------------- upstream package


def test_upstream_is_the_version_we_patch():
    from importlib.metadata import version

    assert version("jax2torch") == "0.0.7", "bridge.py documents 0.0.7's defects; re-check them"


def test_upstream_capsule_path_still_raises_on_current_jax():
    """jax2torch.t2j passes a DLPack capsule; current JAX refuses it. When this test fails,
    upstream or JAX changed: reconsider _UPSTREAM_REPLACEMENTS['t2j']."""
    up = bridge.upstream_module()
    with pytest.raises(TypeError, match="__dlpack__ and __dlpack_device__"):
        up.t2j(torch.ones(2))


def test_upstream_j2t_still_raises_on_current_jax():
    """jax2torch.j2t calls jax.dlpack.to_dlpack, which current JAX no longer has."""
    up = bridge.upstream_module()
    with pytest.raises(AttributeError, match="to_dlpack"):
        up.j2t(jnp.ones(2))


def test_torch_still_refuses_to_export_tensors_that_require_grad():
    """Why tensor_to_jax detaches first."""
    with pytest.raises((BufferError, RuntimeError), match="require"):
        jnp.from_dlpack(torch.ones(2, requires_grad=True))


def test_patched_upstream_jax2torch_runs_forward_and_backward():
    up = bridge.upstream_module()
    previous = bridge.patch_jax2torch()
    try:
        f = up.jax2torch(lambda x, y: jnp.sum(jnp.sin(x) * y))
        x, y = torch.randn(5, requires_grad=True), torch.randn(5, requires_grad=True)
        f(x, y).backward()
        np.testing.assert_allclose(x.grad, torch.cos(x.detach()) * y.detach(), rtol=1e-6)
        np.testing.assert_allclose(y.grad, torch.sin(x.detach()), rtol=1e-6)
    finally:
        bridge.unpatch_jax2torch(previous)
    assert up.t2j is previous["t2j"] and up.j2t is previous["j2t"]


def test_patched_upstream_still_mishandles_pytrees_and_static_arguments():
    """Why jax_to_torch has its own autograd.Function: upstream's (even with working
    converters) detaches nested outputs from the graph and hands strings to jax.vjp."""
    up = bridge.upstream_module()
    previous = bridge.patch_jax2torch()
    try:
        x = torch.randn(3, requires_grad=True)
        _, (inner, _) = up.jax2torch(lambda x: (x * 2, (x * 3, x * 4)))(x)
        assert inner.grad_fn is None and not inner.requires_grad
        with pytest.raises(TypeError, match="not a valid JAX type"):
            up.jax2torch(lambda x, mode: x * 2 if mode == "a" else x)(x, "a")
    finally:
        bridge.unpatch_jax2torch(previous)


# --------------------------------------------------------------------------- zero copy


def test_conversions_share_memory_on_cpu():
    t = torch.randn(4, 8)
    a = tensor_to_jax(t)
    assert a.unsafe_buffer_pointer() == t.data_ptr()
    back = jax_to_tensor(a)
    assert back.data_ptr() == t.data_ptr()
    b = jnp.arange(6.0).reshape(2, 3)
    assert jax_to_tensor(b).data_ptr() == b.unsafe_buffer_pointer()
    # a tensor that requires grad is exported through a detached view: still no copy
    p = torch.randn(3, 3, requires_grad=True)
    assert tensor_to_jax(p).unsafe_buffer_pointer() == p.data_ptr()


def test_fast_paths_match_the_public_dlpack_functions():
    t = torch.randn(3, 5)
    fast = tensor_to_jax(t)
    public = jnp.from_dlpack(t)
    assert interop._FAST_IMPORT is not None, "jaxlib fast import path unavailable: check jaxlib"
    assert fast.unsafe_buffer_pointer() == public.unsafe_buffer_pointer() == t.data_ptr()
    assert fast.dtype == public.dtype and fast.sharding == public.sharding
    assert fast.committed == public.committed
    a = jnp.ones((2, 2))
    assert interop._FAST_EXPORT is not None
    assert jax_to_tensor(a).data_ptr() == torch.from_dlpack(a).data_ptr()


def test_no_copies_through_forward_and_backward():
    """The array fn sees is the input's memory, the output tensor is fn's result buffer and
    the gradient tensor is the VJP's buffer (eager mode so that fn can look at pointers)."""
    seen = {}

    @jax.custom_vjp
    def double(x):
        return 2 * x

    def double_fwd(x):  # called with the concrete primal under eager jax.vjp
        seen["in"] = x.unsafe_buffer_pointer()
        y = 2 * x
        seen["out"] = y
        return y, None

    def double_bwd(_, g):
        grad = 2 * g
        seen["grad"] = grad
        return (grad,)

    double.defvjp(double_fwd, double_bwd)
    f = jax_to_torch(double, jit=False)
    x = torch.randn(16, requires_grad=True)
    y = f(x)
    assert seen["in"] == x.data_ptr()
    assert y.data_ptr() == seen["out"].unsafe_buffer_pointer()
    (gx,) = torch.autograd.grad(y, x, torch.ones(16))
    assert gx.data_ptr() == seen["grad"].unsafe_buffer_pointer()
    np.testing.assert_array_equal(gx, np.full(16, 2.0, np.float32))


def test_output_aliasing_an_input_is_copied():
    f = jax_to_torch(lambda x, y: (x, y * 2))
    x, y = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    out_x, _ = f(x, y)
    assert out_x.data_ptr() != x.data_ptr()
    torch.testing.assert_close(out_x, x.detach())
    with torch.no_grad():
        out_x, _ = f(x, y)
    assert out_x.data_ptr() != x.data_ptr()


# --------------------------------------------------------------------------- gradients


def _mlp_jax(x, w, b, *, power):
    h = jnp.tanh(x @ w + b)
    return {"sum": jnp.sum(h**power), "parts": (h, [jnp.mean(h, axis=0)])}


def _mlp_torch(x, w, b, *, power):
    h = torch.tanh(x @ w + b)
    return {"sum": torch.sum(h**power), "parts": (h, [torch.mean(h, dim=0)])}


def test_nested_outputs_kwargs_and_gradients_match_torch_autograd(x64):
    gen = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(s, generator=gen, dtype=torch.float64) for s in ((4, 3), (3, 5), (5,)))
    f = jax_to_torch(_mlp_jax)
    xs, ws, bs = _leaf(x), _leaf(w), _leaf(b)
    out = f(xs, ws, b=bs, power=3)
    xr, wr, br = _leaf(x), _leaf(w), _leaf(b)
    ref = _mlp_torch(xr, wr, br, power=3)
    assert set(out) == {"sum", "parts"} and isinstance(out["parts"], tuple)
    assert isinstance(out["parts"][1], list) and out["parts"][1][0].shape == (5,)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    def loss(o):  # uses every output, with different weights
        return o["sum"] + 0.5 * (o["parts"][0] ** 2).sum() - 3 * o["parts"][1][0].sum()

    loss(out).backward()
    loss(ref).backward()
    for got, want in ((xs, xr), (ws, wr), (bs, br)):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-12, atol=1e-12)


def test_gradients_pass_torch_gradcheck(x64):
    f = jax_to_torch(lambda a, b: (jnp.sin(a) * jnp.exp(b)).sum(axis=-1) + a @ b.T @ a[:, 0])
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(f, (a, b))


def test_unused_outputs_get_zero_cotangents():
    f = jax_to_torch(lambda x: (x * 3, jnp.sin(x)))
    x = torch.randn(5, requires_grad=True)
    y, _ = f(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((5,), 3.0))


def test_non_differentiable_arguments():
    """Static Python values, integer tensors, tensors without grad and numpy/JAX arrays."""

    def fn(table, tokens, mask, offset, *, scale, label, extra):
        assert isinstance(scale, float) and label == "rows"  # static values arrive unchanged
        rows = table[tokens] * mask[:, None] + offset
        return rows * scale + extra.sum()

    f = jax_to_torch(fn)
    gen = torch.Generator().manual_seed(2)
    table = torch.randn(7, 3, generator=gen)
    tokens = torch.tensor([0, 3, 3, 6])  # int64: converted to int32 in 32-bit JAX
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])  # a float tensor that does not require grad
    offset = np.float32(0.25)
    extra = jnp.ones(2)
    t1 = _leaf(table)
    out = f(t1, tokens, mask, offset, scale=1.5, label="rows", extra=extra)
    t2 = _leaf(table)
    ref = t2[tokens] * mask[:, None] + 0.25
    ref = ref * 1.5 + 2.0
    torch.testing.assert_close(out, ref)
    (out**2).sum().backward()
    (ref**2).sum().backward()
    torch.testing.assert_close(t1.grad, t2.grad)
    assert mask.grad is None and not tokens.requires_grad


def test_integer_and_bool_outputs_are_non_differentiable():
    f = jax_to_torch(lambda x: (jnp.sum(x**2), jnp.argmax(x), x > 0))
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    s, idx, pos = f(x)
    assert idx.dtype == torch.int32 and int(idx) == 2 and not idx.requires_grad
    assert pos.dtype == torch.bool and not pos.requires_grad
    s.backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())


def test_int64_tokens_convert_to_int32_in_32_bit_mode(x32):
    t = torch.tensor([[1, 2], [3, 2**20]], dtype=torch.int64)
    a = tensor_to_jax(t)
    assert a.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(a), t.numpy())


def test_float16_and_bfloat16_run_on_cpu():
    """JAX CPU supports both, so they pass through (zero-copy); gradients keep the dtype."""
    f = jax_to_torch(lambda x: jnp.sum(jnp.sin(x) * x))
    for dtype in (torch.float16, torch.bfloat16):
        base = torch.linspace(-1, 1, 8)
        x = base.to(dtype).requires_grad_(True)
        f(x).backward()
        assert x.grad.dtype == dtype
        xf = base.to(dtype).float()
        want = torch.cos(xf) * xf + torch.sin(xf)
        torch.testing.assert_close(x.grad.float(), want, rtol=2e-2, atol=2e-2)


def test_complex_gradients_follow_torch_convention():
    """torch's gradient of a real loss is the conjugate of JAX's; the bridge converts."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, dtype=torch.complex64, generator=gen)
    w = torch.randn(4, dtype=torch.complex64, generator=gen)
    # holomorphic complex output, real loss computed in torch
    f = jax_to_torch(lambda z, w: z * w + jnp.conj(z) ** 2)
    z1, w1, z2, w2 = _leaf(z), _leaf(w), _leaf(z), _leaf(w)
    (f(z1, w1).abs() ** 2).sum().backward()
    ((z2 * w2 + z2.conj() ** 2).abs() ** 2).sum().backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-5, atol=1e-5)
    # real output of a complex input: |z|^2 has torch gradient 2z
    g = jax_to_torch(lambda z: jnp.sum(jnp.abs(z) ** 2))
    z3 = _leaf(z)
    g(z3).backward()
    torch.testing.assert_close(z3.grad, 2 * z, rtol=1e-6, atol=1e-6)


def test_conjugate_view_inputs_are_resolved():
    z = torch.randn(3, dtype=torch.complex64)
    f = jax_to_torch(lambda z: z * 1)
    torch.testing.assert_close(f(z.conj()), z.conj().resolve_conj())


def test_non_contiguous_inputs_are_copied_and_get_gradients():
    base = torch.randn(6, 4, requires_grad=True)
    f = jax_to_torch(lambda a, b, c: jnp.sum(a * 2) + jnp.sum(b**2) + jnp.sum(c * 3))
    a = base.T  # transposed
    b = base[::2]  # strided
    c = torch.ones(1, 4).expand(5, 4)  # broadcast (stride 0), no grad
    assert not (a.is_contiguous() or b.is_contiguous() or c.is_contiguous())
    f(a, b, c).backward()
    want = torch.full((6, 4), 2.0)
    want[::2] += 2 * base.detach()[::2]
    torch.testing.assert_close(base.grad, want)


def test_zero_size_inputs():
    f = jax_to_torch(lambda x: jnp.sum(x) + 1.0)
    x = torch.zeros(0, 3, requires_grad=True)
    out = f(x)
    out.backward()
    assert float(out.detach()) == 1.0 and x.grad.shape == (0, 3)


# --------------------------------------------------------------------------- autograd semantics


def test_backward_twice_behaves_as_torch():
    f = jax_to_torch(lambda x: jnp.sum(x**3))
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = f(x)
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()
    x.grad = None
    y = f(x)
    y.backward(retain_graph=True)
    y.backward()
    torch.testing.assert_close(x.grad, 2 * 3 * x.detach() ** 2)  # accumulated twice


def test_double_backward_matches_torch(x64):
    """create_graph=True: a gradient penalty differentiated again (gradgradcheck and by hand)."""
    f = jax_to_torch(lambda x, w: jnp.sum(jnp.sin(x) * w))
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, generator=gen, requires_grad=True)
    (gx,) = torch.autograd.grad(f(x, w), x, create_graph=True)
    (gx**2).sum().backward()
    xd, wd = x.detach(), w.detach()
    torch.testing.assert_close(x.grad, -2 * torch.cos(xd) * torch.sin(xd) * wd**2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(w.grad, 2 * torch.cos(xd) ** 2 * wd, rtol=1e-12, atol=1e-12)
    g = jax_to_torch(lambda a, b: (jnp.tanh(a) * b**2, jnp.sum(a * b)))
    a = torch.randn(3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradgradcheck(g, (a, b))


def test_inplace_change_before_backward_is_detected():
    f = jax_to_torch(lambda x, w: jnp.sum(jnp.exp(x) * w))
    x = torch.randn(3, requires_grad=True)
    w = torch.randn(3)
    y = f(x * 1, w)
    w.add_(1.0)  # w's memory is a JAX residual of the VJP
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_no_grad_mode_returns_plain_tensors():
    calls = []
    f = jax_to_torch(lambda x: (calls.append(1), x * 2)[1])
    x = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        y = f(x)
    assert y.grad_fn is None and not y.requires_grad
    assert f(x).grad_fn is not None


def test_jit_traces_once_per_signature():
    traces = []

    def fn(x, *, n):
        traces.append(n)
        return jnp.sum(x**n)

    f = jax_to_torch(fn)
    for _ in range(3):
        x = torch.randn(4, requires_grad=True)
        f(x, n=2).backward()
    assert traces == [2]
    f(torch.randn(4, requires_grad=True), n=3).backward()  # a new static value retraces
    f(torch.randn(5, requires_grad=True), n=2).backward()  # so does a new shape
    f(torch.randn(5, requires_grad=True), n=2.0).backward()  # and a new static type
    assert traces == [2, 3, 2, 2.0] and isinstance(traces[-1], float)


def test_jit_false_runs_eagerly():
    """jit=False: fn runs op by op (side effects every call, unhashable static arguments)."""
    calls = []

    class Options:  # unhashable: fine without jit
        __hash__ = None
        scale = 2.0

    def fn(x, options):
        calls.append(options.scale)
        return x * options.scale

    f = jax_to_torch(fn, jit=False)
    x = torch.ones(3, requires_grad=True)
    for _ in range(2):
        f(x, Options()).sum().backward()
    assert calls == [2.0, 2.0]
    torch.testing.assert_close(x.grad, torch.full((3,), 4.0))


# --------------------------------------------------------------------------- bad input


def test_float64_without_x64_is_rejected_with_a_clear_message(x32):
    f = jax_to_torch(lambda x: x * 2)
    with pytest.raises(ValueError, match=r"args\[0\] has dtype torch.float64.*jax_enable_x64"):
        f(torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"kwargs\['z'\].*complex128"):
        jax_to_torch(lambda z: z)(z=torch.ones(2, dtype=torch.complex128))


def test_unsupported_dtypes_are_rejected_with_a_clear_message():
    f = jax_to_torch(lambda x: x)
    with warnings.catch_warnings():  # torch: "ComplexHalf support is experimental"
        warnings.simplefilter("ignore", UserWarning)
        chalf = torch.ones(2, dtype=torch.complex32)
    with pytest.raises(ValueError, match=r"args\[0\]\[1\] has torch dtype torch.complex32.*complex64"):
        f((torch.ones(1), chalf))
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        f(torch.ones(2).to(torch.float8_e4m3fn))
    with pytest.raises(ValueError, match="layout torch.sparse_coo"):
        f(torch.eye(2).to_sparse())


def test_unhashable_static_argument_is_rejected():
    class Unhashable:
        __hash__ = None

    f = jax_to_torch(lambda x, cfg: x)
    with pytest.raises(TypeError, match=r"args\[1\] of type Unhashable.*static"):
        f(torch.ones(1), Unhashable())


# --------------------------------------------------------------------------- devices


def test_device_mapping_cpu_and_missing_cuda():
    assert bridge.jax_device_for(torch.device("cpu")).platform == "cpu"
    has_gpu = any(d.platform == "gpu" for d in jax.devices())
    if not has_gpu:
        with pytest.raises(ValueError, match=r"torch device cuda:0.*JAX devices: cpu:0"):
            bridge.jax_device_for(torch.device("cuda", 0))


def test_tensor_on_a_device_jax_cannot_address_is_rejected():
    f = jax_to_torch(lambda x: x)
    with pytest.raises(ValueError, match=r"args\[0\] is on torch device meta.*JAX devices"):
        f(torch.empty(2, device="meta"))


def test_tensors_on_different_devices_are_rejected_naming_both():
    f = jax_to_torch(lambda x, y: x + y)
    with pytest.raises(ValueError, match=r"args\[0\] is on torch device cpu but args\[1\] is on meta"):
        f(torch.ones(2), torch.empty(2, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_round_trip_is_zero_copy():  # pragma: no cover - no GPU on the CI machine
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("torch sees a GPU but this jaxlib does not")
    x = torch.randn(8, device="cuda", requires_grad=True)
    assert tensor_to_jax(x).unsafe_buffer_pointer() == x.data_ptr()
    f = jax_to_torch(lambda x: jnp.sum(jnp.sin(x)))
    f(x).backward()
    assert x.grad.device == x.device
    torch.testing.assert_close(x.grad, torch.cos(x.detach()))


# --------------------------------------------------------------------------- gate-loop scan


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_gate_loop_scan_through_jax_matches_a_sequential_loop(x64, dtype):
    """scan_backend="jax": the JAX associative scan in torch autograd, against the torch
    sequential loop (independent reference), values and gradients of a, kv and h0; `a`
    broadcasts over kv's last axis as in GateLoopedAttention."""
    from physnets_torch.bridge import gate_loop_scan_jax
    from physnets_torch.ops.gate_loop import gate_loop_scan_sequential

    gen = torch.Generator().manual_seed(5)

    def rand(*shape):
        x = torch.rand(*shape, dtype=torch.float64, generator=gen) * 0.9
        if dtype.is_complex:
            x = torch.polar(x, torch.rand(*shape, dtype=torch.float64, generator=gen) * 6)
        return x

    a, kv, h0 = rand(2, 7, 3, 1), rand(2, 7, 3, 4) - 0.4, rand(2, 3, 4)
    ins1 = [_leaf(t) for t in (a, kv, h0)]
    ins2 = [_leaf(t) for t in (a, kv, h0)]
    h1 = gate_loop_scan_jax(ins1[0], ins1[1], axis=1, h0=ins1[2])
    h2 = gate_loop_scan_sequential(ins2[0], ins2[1], axis=1, h0=ins2[2])
    torch.testing.assert_close(h1, h2, rtol=1e-12, atol=1e-12)
    weights = rand(2, 7, 3, 4)
    (h1.abs() ** 2 * weights.real).sum().backward()
    (h2.abs() ** 2 * weights.real).sum().backward()
    for x1, x2, name in zip(ins1, ins2, ("a", "kv", "h0"), strict=True):
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-11, atol=1e-11, msg=name)


def test_gate_loop_scan_through_jax_rejects_bad_shapes_with_the_shared_message():
    from physnets_torch.bridge import gate_loop_scan_jax

    with pytest.raises(ValueError, match=r"a shape \(1, 4, 3\) does not match kv shape \(1, 4, 2\)"):
        gate_loop_scan_jax(torch.rand(1, 4, 3), torch.rand(1, 4, 2))


def test_ops_gate_loop_scan_accepts_scan_backend_jax():
    """The hook in physnets_torch.ops.gate_loop: scan_backend="jax" gives the torch scan's
    values and gradients (float32; associative vs chunked scan order: 1e-5)."""
    from physnets_torch.ops.gate_loop import gate_loop_scan

    gen = torch.Generator().manual_seed(6)
    a = torch.rand(2, 9, 4, generator=gen) * 0.9
    kv = torch.randn(2, 9, 4, generator=gen)
    outs, grads = [], []
    for backend in ("torch", "jax"):
        a1, kv1 = _leaf(a), _leaf(kv)
        h = gate_loop_scan(a1, kv1, axis=1, scan_backend=backend)
        (h**2).sum().backward()
        outs.append(h.detach())
        grads.append((a1.grad, kv1.grad))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for g_jax, g_torch in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_jax, g_torch, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="scan_backend='cuda' is not a known scan backend"):
        gate_loop_scan(a, kv, scan_backend="cuda")
