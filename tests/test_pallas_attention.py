"""attention_impl='pallas': the JAX flash kernel (Pallas, interpret mode on this CPU) and its torch
twin (FlexAttention) equal the dense path (itself checked against a per-query loop in
test_attention_ops), values and gradients; the kernel lowers for GPU (Triton) and TPU (Mosaic);
bad settings raise ValueErrors that name the field and the rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from physnets_jax.config import preset
from physnets_jax.layers.attention import attend_with_cache as jax_attend
from physnets_jax.model import Decoder as JDecoder
from physnets_jax.ops.attention import causal_attention as jax_dense
from physnets_jax.ops.pallas_attention import pallas_causal_attention as jax_pallas
from physnets_jax.ops.pallas_attention import pallas_interpret_mode
from physnets_torch.layers.attention import attend_with_cache as torch_attend
from physnets_torch.model import Decoder as TDecoder
from physnets_torch.ops.attention import causal_attention as torch_dense
from physnets_torch.ops.pallas_attention import pallas_causal_attention as torch_pallas

# T = 37 with 16-query tiles: three tiles, the last one ragged (5 real rows), and the decay's
# gradient is exercised across tiles. Head dim 4 is padded to the kernel's 16 lanes.
T, BLOCK = 37, 16
DECAY = np.array([-0.8, 0.3, 1.7])


def _inputs(T=T, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((2, 3, T, 4)) for _ in range(3))
    return q, k, v, DECAY


def _jax_value_and_grads(fn, ripple, dtype):
    q, k, v, decay = (jnp.asarray(a, dtype) for a in _inputs())

    def loss(q, k, v, decay):
        out = fn(q, k, v, decay_H=decay if ripple else None)
        return jnp.sum(out * jnp.cos(out)), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, decay)
    return out, grads


# float64: same algorithm up to summation order (1e-12); float32: online vs one-shot softmax
# and different summation orders (~1e-6 forward, a few 1e-6 in gradients whose scale is ~10).
@pytest.mark.parametrize("dtype,atol,ripple", [
    ("float64", 1e-12, True), ("float32", 2e-5, True), ("float64", 1e-12, False)])
def test_jax_pallas_equals_dense(x64, dtype, atol, ripple):
    o_d, g_d = _jax_value_and_grads(jax_dense, ripple, dtype)
    o_p, g_p = _jax_value_and_grads(
        lambda *a, **kw: jax_pallas(*a, block=BLOCK, interpret=True, **kw), ripple, dtype)
    assert o_p.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(o_p, o_d, atol=atol, rtol=0)
    for name, a, b in zip("qkvd", g_p, g_d, strict=True):
        np.testing.assert_allclose(a, b, atol=atol, rtol=0, err_msg=f"grad {name}")
    if ripple:  # the decay gradient is exercised, not trivially zero
        assert np.abs(g_d[3]).max() > 1e-2


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_jax_pallas_lowers_for_gpu_and_tpu(platform):
    """The forward and both backward kernels lower to Triton (cuda) and Mosaic (tpu) from this CPU,
    in bfloat16 with a ragged sequence and a decay."""

    def f(q, k, v, decay):
        def loss(q, k, v, decay):
            return jnp.sum(jax_pallas(q, k, v, decay_H=decay, block=32, interpret=False).astype(jnp.float32) ** 2)

        return jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, decay)

    qkv = jax.ShapeDtypeStruct((2, 2, 40, 64), jnp.bfloat16)
    decay = jax.ShapeDtypeStruct((2,), jnp.float32)
    exported = jax.export.export(
        jax.jit(f), platforms=[platform],
        # Triton kernels are custom calls without a stability guarantee across jaxlib versions
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(qkv, qkv, qkv, decay)
    text = exported.mlir_module()
    kernel_call = {"cuda": "__gpu$xla.gpu.triton", "tpu": "tpu_custom_call"}[platform]
    assert text.count(kernel_call) >= 3  # forward, dK/dV and dQ kernels
    assert [str(o.dtype) for o in exported.out_avals] == ["bfloat16"] * 3 + ["float32"]


def test_torch_pallas_forward_equals_dense_on_cpu():
    """FlexAttention (eager reference on CPU, inference only there) equals the dense path in float64."""
    q, k, v, decay = (torch.tensor(a) for a in _inputs())
    with torch.no_grad():
        for d in (decay, None):
            torch.testing.assert_close(
                torch_pallas(q, k, v, decay_H=d, block=BLOCK), torch_dense(q, k, v, decay_H=d), atol=1e-12, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward needs CUDA (none here)")
@pytest.mark.parametrize("ripple", [True, False])
def test_torch_pallas_grads_equal_dense_on_cuda(ripple):
    def run(fn):
        q, k, v, decay = (torch.tensor(a, dtype=torch.float32, device="cuda", requires_grad=True) for a in _inputs(T=300))
        out = fn(q, k, v, decay_H=decay if ripple else None)
        (out * torch.cos(out)).sum().backward()
        return out.detach(), [t.grad if t.grad is not None else torch.zeros_like(t) for t in (q, k, v, decay)]

    o_d, g_d = run(torch_dense)
    o_p, g_p = run(torch_pallas)
    # float32 (TF32 off, torch's default), a fused online softmax vs a one-shot one at T = 300
    torch.testing.assert_close(o_p, o_d, atol=1e-4, rtol=0)
    for name, a, b in zip("qkvd", g_p, g_d, strict=True):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4, msg=f"grad {name}")


def test_auto_is_dense_on_cpu_in_both_backends():
    """attention_impl='auto' computes exactly the dense path here (pallas would raise on this CPU),
    and trains in torch (FlexAttention has no CPU backward)."""
    dense, auto = preset("ripplegpt", "nano"), preset("ripplegpt", "nano", attention_impl="auto")
    q, k, v, decay = _inputs()
    jq, jk, jv, jd = (jnp.asarray(a, jnp.float32) for a in (q, k, v, decay))
    np.testing.assert_array_equal(
        jax_attend(jq, jk, jv, None, decay=jd, cfg=auto)[0], jax_attend(jq, jk, jv, None, decay=jd, cfg=dense)[0])
    tq, tk, tv, td = (torch.tensor(a, requires_grad=True) for a in (q, k, v, decay))
    out = torch_attend(tq, tk, tv, None, decay=td, cfg=auto)[0]
    out.square().sum().backward()
    torch.testing.assert_close(out, torch_dense(tq, tk, tv, decay_H=td), atol=0, rtol=0)
    assert td.grad is not None and td.grad.abs().max() > 0


def test_pallas_bad_settings_raise_named_value_errors(x64):
    with pytest.raises(ValueError, match=r"attention_block=24 breaks the pallas tile rule.*power of two >= 16"):
        preset("ripplegpt", "nano", attention_impl="pallas", attention_block=24)
    with pytest.raises(ValueError, match=r"attention_block=8 breaks the pallas tile rule"):
        preset("gpt", "nano", attention_impl="auto", attention_block=8)
    preset("ripplegpt", "nano", attention_impl="blockwise", attention_block=24)  # blockwise: any size
    q, k, v, decay = (jnp.asarray(a, jnp.float32) for a in _inputs(T=8))
    with pytest.raises(ValueError, match="attention_block=48 breaks the pallas tile rule"):
        jax_pallas(q, k, v, block=48, interpret=True)
    with pytest.raises(ValueError, match=r"needs a GPU or TPU.*'cpu' backend.*attention_impl='auto'"):
        jax_pallas(q, k, v)
    with pytest.raises(ValueError, match=r"dtype int32: attention_impl='pallas' takes float32, bfloat16, float16"):
        jax_pallas(*(x.astype(jnp.int32) for x in (q, k, v)), interpret=True)
    with pytest.raises(ValueError, match=r"dtype float64.*float64 only in interpret mode"):
        jax_pallas(*(x.astype(jnp.float64) for x in (q, k, v)), interpret=False)
    with pytest.raises(ValueError, match=r"decay_H \(2,\) must have shape \(n_head,\) = \(3,\)"):
        jax_pallas(q, k, v, decay_H=decay[:2], interpret=True)
    tq, tk, tv, tdecay = (torch.tensor(a, dtype=torch.float32) for a in _inputs(T=8))
    with pytest.raises(ValueError, match="attention_block=100 breaks the pallas tile rule"):
        torch_pallas(tq, tk, tv, block=100)
    with pytest.raises(ValueError, match=r"no backward on 'cpu'.*attention_impl='auto'"):
        torch_pallas(tq.requires_grad_(), tk, tv)
    with pytest.raises(ValueError, match=r"dtype torch.int32: attention_impl='pallas' takes"):
        torch_pallas(*(x.detach().to(torch.int32) for x in (tq, tk, tv)))

    cfg = preset("ripplegpt", "nano", dropout=0.1, attention_impl="pallas", attention_block=16)
    tokens = np.zeros((1, 8), np.int64)
    jm = JDecoder(cfg, rngs=nnx.Rngs(0))
    with pallas_interpret_mode(), pytest.raises(ValueError, match="attention_impl='pallas' applies no dropout"):
        jm(tokens)
    tm = TDecoder(cfg)
    with pytest.raises(ValueError, match="attention_impl='pallas' applies no dropout"):
        tm(torch.from_numpy(tokens))
    jm.eval()
    with pytest.raises(ValueError, match="attention_impl='auto'"):  # no interpret mode: a clear error
        jm(tokens)
