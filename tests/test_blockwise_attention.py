"""The blockwise attention fast path (attention_impl='blockwise') equals the plain dense path
(itself checked against independent references in test_attention_ops / test_reference_fidelity),
values and gradients, in each backend; models switch paths without changing their function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from physnets_core.config import preset
from physnets_jax.model import Decoder as JDecoder
from physnets_jax.ops.attention import causal_attention as jax_dense
from physnets_jax.ops.blockwise_attention import blockwise_causal_attention as jax_blockwise
from physnets_torch.convert import load_jax_into_torch
from physnets_torch.model import Decoder as TDecoder
from physnets_torch.ops.attention import causal_attention as torch_dense
from physnets_torch.ops.blockwise_attention import blockwise_causal_attention as torch_blockwise

CASES = [(1, 5, True), (7, 3, True), (37, 8, True), (37, 8, False), (16, 16, True), (9, 64, True)]


def _inputs(T, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((2, 3, T, 4)) for _ in range(3))
    decay = np.array([-0.8, 0.3, 1.7])
    return q, k, v, decay


@pytest.mark.parametrize("T,block,ripple", CASES)
def test_jax_blockwise_equals_dense(x64, T, block, ripple):
    q, k, v, decay = (jnp.asarray(a) for a in _inputs(T))

    def loss(fn, q, k, v, decay):
        out = fn(q, k, v, decay_H=decay if ripple else None)
        return jnp.sum(out * jnp.cos(out)), out

    (l_d, o_d), g_d = jax.value_and_grad(lambda *a: loss(jax_dense, *a), argnums=(0, 1, 2, 3), has_aux=True)(
        q, k, v, decay)
    (l_b, o_b), g_b = jax.value_and_grad(
        lambda *a: loss(lambda *x, **kw: jax_blockwise(*x, block=block, **kw), *a), argnums=(0, 1, 2, 3),
        has_aux=True)(q, k, v, decay)
    np.testing.assert_allclose(o_b, o_d, atol=1e-12, rtol=0)
    for name, a, b in zip("qkvd", g_b, g_d, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-11, rtol=0, err_msg=f"grad {name}")
    if ripple and T > 1:  # the decay gradient is exercised, not trivially zero (T = 1: one key)
        assert np.abs(g_d[3]).max() > 1e-3


@pytest.mark.parametrize("T,block,ripple", CASES)
def test_torch_blockwise_equals_dense(T, block, ripple):
    def run(fn):
        q, k, v, decay = (torch.tensor(a, requires_grad=True) for a in _inputs(T))
        out = fn(q, k, v, decay_H=decay if ripple else None)
        (out * torch.cos(out)).sum().backward()
        return out.detach(), [t.grad if t.grad is not None else torch.zeros_like(t) for t in (q, k, v, decay)]

    o_d, g_d = run(torch_dense)
    o_b, g_b = run(lambda *x, **kw: torch_blockwise(*x, block=block, **kw))
    torch.testing.assert_close(o_b, o_d, atol=1e-12, rtol=0)
    for name, a, b in zip("qkvd", g_b, g_d, strict=True):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0, msg=f"grad {name}")


def test_models_give_the_same_logits_on_either_path():
    dense = preset("ripplegpt", "nano", dropout=0.0)
    fast = dense.replace(attention_impl="blockwise", attention_block=8)
    tokens = np.random.default_rng(1).integers(0, 65, (2, 50))
    jd, jb = JDecoder(dense, rngs=nnx.Rngs(0)), JDecoder(fast, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(jb(tokens)), np.asarray(jd(tokens)), atol=2e-6, rtol=0)
    td, tb = TDecoder(dense), TDecoder(fast)
    load_jax_into_torch(jd, td)
    load_jax_into_torch(jd, tb)
    t = torch.from_numpy(tokens)
    torch.testing.assert_close(tb(t), td(t), atol=2e-6, rtol=0)


def test_blockwise_refuses_active_weight_dropout_and_bad_settings():
    cfg = preset("ripplegpt", "nano", dropout=0.1, attention_impl="blockwise")
    tokens = np.zeros((1, 8), np.int64)
    jm = JDecoder(cfg, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="attention_impl='blockwise' applies no dropout"):
        jm(tokens)
    jm.eval()
    assert np.isfinite(np.asarray(jm(tokens))).all()
    tm = TDecoder(cfg)
    with pytest.raises(ValueError, match="attention_impl='blockwise' applies no dropout"):
        tm(torch.from_numpy(tokens))
    tm.eval()
    assert torch.isfinite(tm(torch.from_numpy(tokens))).all()
    with pytest.raises(ValueError, match="attention_impl='flash' is not known; valid choices: dense, blockwise, pallas, auto"):
        preset("ripplegpt", "nano", attention_impl="flash")
    with pytest.raises(ValueError, match="attention_block=0"):
        preset("ripplegpt", "nano", attention_block=0)
