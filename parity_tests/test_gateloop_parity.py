"""JAX vs torch for GateLoop: the scan, the reversed SimpleGateLoopLayer and whole presets; forward
values and gradients w.r.t. parameters and inputs, float64 and float32. The registered mixers
(gateloop, simple_gateloop, hybrid and their options, caches included) are covered by
tests/test_mixer_contract.py.

Tolerances: float64 1e-10 (DESIGN section 3). float32 1e-4, not 1e-5: the two backends scan with
different algorithms (JAX: associative_scan's tree order; torch: a chunked two-level scan), so
the sums differ in summation order; over 33-position recurrences this moves forward values by
~1e-6 and gradients, which run the recurrence backwards, by up to ~2e-5 relative to scale.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from parity_tests.harness import assert_close, compare, twin
from physnets_core.config import ModelConfig, preset
from physnets_jax import losses as jlosses
from physnets_jax.layers import gateloop as jgl
from physnets_jax.model import Decoder as JDecoder
from physnets_jax.ops.gate_loop import gate_loop_scan as jscan
from physnets_torch import losses as tlosses
from physnets_torch.layers import gateloop as tgl
from physnets_torch.model import Decoder as TDecoder
from physnets_torch.ops.gate_loop import gate_loop_scan as tscan

TOL = {"float64": 1e-10, "float32": 1e-4}



@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_scan_parity(dtype, complex_):
    """gate_loop_scan: states and gradients w.r.t. a, kv and h0 (loss Re sum(w h))."""
    rng = np.random.default_rng(0)
    B, T, H = 2, 33, 5
    np_real = np.float64 if dtype == "float64" else np.float32
    if complex_:
        a = (0.5 + 0.5 * rng.uniform(size=(B, T, H))) * np.exp(1j * rng.uniform(-3, 3, (B, T, H)))
        kv = rng.normal(size=(B, T, H)) + 1j * rng.normal(size=(B, T, H))
        h0 = rng.normal(size=(B, H)) + 1j * rng.normal(size=(B, H))
        w = rng.normal(size=(B, T, H)) + 1j * rng.normal(size=(B, T, H))
        np_dtype = np.complex128 if dtype == "float64" else np.complex64
    else:
        a = 1 / (1 + np.exp(-rng.normal(size=(B, T, H))))
        kv, h0, w = rng.normal(size=(B, T, H)), rng.normal(size=(B, H)), rng.normal(size=(B, T, H))
        np_dtype = np_real
    a, kv, h0, w = (x.astype(np_dtype) for x in (a, kv, h0, w))

    def jloss(a_, kv_, h0_):
        h = jscan(a_, kv_, h0=h0_)
        return jnp.sum(jnp.real(w * h)), h

    (jl, jh), jg = jax.value_and_grad(jloss, argnums=(0, 1, 2), has_aux=True)(
        jnp.asarray(a), jnp.asarray(kv), jnp.asarray(h0))
    ts = [torch.from_numpy(x.copy()).requires_grad_() for x in (a, kv, h0)]
    th = tscan(*ts[:2], h0=ts[2])
    tl = (torch.from_numpy(w) * th).real.sum()
    tg = torch.autograd.grad(tl, ts)
    tol = TOL[dtype]
    assert_close(jl, tl.item(), tol, "loss", scale=float(np.abs(w).sum()))
    assert_close(np.asarray(jh), th.detach().numpy(), tol, "states")
    for name, g_j, g_t in zip(("a", "kv", "h0"), jg, tg, strict=True):
        # JAX returns the conjugate of torch's gradient for complex inputs (its convention for
        # real losses of complex arguments); both describe the same derivative.
        assert_close(np.conj(np.asarray(g_j)), g_t.numpy(), tol, f"grad {name}")


def _sum_sq(m, x):
    y = m(x)
    return ((y**2).sum() if isinstance(y, torch.Tensor) else jnp.sum(y**2)), y


def _cfg(**kw):
    base = dict(vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=16, embedding="token",
                tie_embeddings=False, norm="rmsnorm", init_std=0.2)
    return ModelConfig.from_dict({**base, **kw})


def test_simple_reverse_parity(dtype):
    """SimpleGateLoopLayer(reverse=True) (built directly: reverse is a layer option)."""
    cfg = _cfg()
    jm = jgl.SimpleGateLoopLayer(cfg, rngs=nnx.Rngs(0), reverse=True)
    tm = tgl.SimpleGateLoopLayer(cfg, reverse=True)
    twin(jm, tm, dtype)
    x = np.random.default_rng(2).normal(size=(2, 9, 16)).astype(np.float64 if dtype == "float64" else np.float32)
    compare(jm, tm, _sum_sq, _sum_sq, [x], dtype, tol=TOL[dtype])


def _lm_loss_jax(m, tokens):
    logits = m(tokens)
    return jlosses.cross_entropy(logits[:, :-1], tokens[:, 1:]), logits


def _lm_loss_torch(m, tokens):
    logits = m(tokens)
    return tlosses.cross_entropy(logits[:, :-1], tokens[:, 1:]), logits


MODELS = {
    "gateloop-nano": lambda: preset("gateloop", "nano"),
    "gateloop-enwik8-nano": lambda: preset("gateloop-enwik8", "nano"),
    "hybrid-nano": lambda: preset("gateloop", "nano", mixer="hybrid", gateloop_hybrid_layers=1),
    "simple_gateloop-nano": lambda: preset("gateloop", "nano", mixer="simple_gateloop"),
}


# Every preset in float64 and once in float32 (each whole-model compile costs seconds on CPU). The
# scans (associative, chunked, chunked_matmul, heinsen) are compared per layer, float64 and float32,
# by tests/test_mixer_contract.py, which also runs a chunked_matmul Decoder through its cache.
MODEL_CASES = [("gateloop-nano", (1, 1), "float32"), ("gateloop-nano", (2, 13), "float64"),
               ("gateloop-enwik8-nano", (2, 13), "float64"), ("hybrid-nano", (2, 13), "float64"),
               ("simple_gateloop-nano", (2, 5), "float64")]


@pytest.mark.parametrize("name,shape,dtype", MODEL_CASES, indirect=["dtype"],
                         ids=[f"{n}-b{s[0]}t{s[1]}-{d}" for n, s, d in MODEL_CASES])
def test_model_parity(dtype, name, shape):
    """Whole presets through physnets_torch.convert: loss, logits and every parameter gradient."""
    cfg = MODELS[name]()
    jm = JDecoder(cfg, rngs=nnx.Rngs(0))
    tm = TDecoder(cfg)
    twin(jm, tm, dtype)
    tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, shape)
    if shape[1] == 1:  # no next-token target: compare sum of squared logits instead
        compare(jm, tm, _sum_sq, _sum_sq, [tokens], dtype, tol=TOL[dtype])
    else:
        compare(jm, tm, _lm_loss_jax, _lm_loss_torch, [tokens], dtype, tol=TOL[dtype])
