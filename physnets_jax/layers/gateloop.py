"""GateLoop mixers (Katsch 2023; reference lucidrains/gateloop-transformer 0.2.5).

GateLoopedAttention (mixer "gateloop"), per head h with head dim d = dim_inner / heads:
    q, k, v = split(x W_qkv)                                  (bias-free, in that order)
    z       = x W_a + b_a  (2 heads features, adjacent (re, im) pairs per head)
    z       = 0.9 z + 0.1 stop_gradient(z)                    (gradient scaled by 0.9, value kept)
    a_t     = sigmoid(|z_t|) exp(i angle(z_t))                (|a| in [0.5, 1))
    S_t     = a_t S_{t-1} + k_t v_t^T                         (complex d x d state per head)
    o_t     = q_t^T Re(S_t)
    out     = W_out( SiLU(x W_g) * sub_ln(o) )
Max heads (heads = dim_inner, d = 1) is the default: the state is one complex number per channel
and memory grows linearly in T. ablate_complex keeps only Re z (a = sign(Re z) sigmoid|Re z|,
real), ablate_state_transition sets a = 1 (a cumulative sum). swish_gating=False (the reference's
add_swish_gating=False) drops SiLU(x W_g), and W_out too when dim_inner == dim.

SimpleGateLoopLayer (mixer "simple_gateloop"):
    x = RMSNorm(x);  q, kv, a = split(x W, 3);  h_t = sigmoid(a_t) h_{t-1} + kv_t;  out = q * h
optionally without the RMSNorm (prenorm=False), LayerNorm(out) (post_ln) and reversed in time
(reverse; not with a cache).

HybridMixer (mixer "hybrid"): softmax attention with a SimpleGateLoopLayer in front of it in the
first cfg.gateloop.hybrid_layers blocks: g = gateloop(x); y = g + attention(x + g).

cfg.gateloop.scan picks how the recurrence runs (resolve_scan / resolve_operator): the scans of
physnets_jax/ops/gate_loop.py, or "chunked_matmul", the whole operator as masked matmuls inside
chunks (physnets_jax/ops/gate_loop_chunked.py; for head dim > 1).

Every mixer takes a cache (decoding state) and returns (y, new_cache): running a sequence in
pieces gives the same outputs as one pass over the whole sequence.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from physnets_core.config import ModelConfig
from physnets_jax.layers.attention import CausalSelfAttention
from physnets_jax.layers.dense import dense
from physnets_jax.layers.norm import RMSNorm
from physnets_jax.ops.gate_loop import (
    gate_loop_scan,
    gate_loop_scan_chunked,
    gate_loop_scan_heinsen,
    gate_loop_scan_sequential,
)
from physnets_jax.ops.gate_loop_chunked import gate_loop_chunked_matmul

SCANS = {
    "associative": gate_loop_scan,
    "chunked": gate_loop_scan_chunked,
    "sequential": gate_loop_scan_sequential,
    "heinsen": gate_loop_scan_heinsen,
}


def resolve_scan(name: str, chunk: int = 64):
    """The scan function for a config's gateloop_scan: "auto" is lax.scan on CPU (fastest there in
    benchmarks/gateloop_scan.py at 256-16384 positions) and jax.lax.associative_scan on GPU/TPU;
    "chunked" runs chunks of `chunk` positions. ("chunked_matmul" is an operator: resolve_operator.)"""
    if name == "auto":
        name = "sequential" if jax.default_backend() == "cpu" else "associative"
    if name == "chunked":
        return partial(gate_loop_scan_chunked, chunk=chunk)
    if name not in SCANS:
        raise ValueError(f"gateloop_scan={name!r} is not a scan; valid choices: auto, {', '.join(SCANS)}")
    return SCANS[name]


def resolve_operator(name: str, chunk: int = 64):
    """(q, k, v, a, h0) -> (o, last state) for a config's gateloop_scan: the chunked matmul form
    for "chunked_matmul", else gate_loop_operator over resolve_scan(name, chunk)."""
    if name == "chunked_matmul":
        return partial(gate_loop_chunked_matmul, chunk=chunk)
    return partial(gate_loop_operator, scan=resolve_scan(name, chunk))


def _complex_dtype(dtype) -> jnp.dtype:
    """complex128 for float64 inputs, complex64 otherwise (bf16/fp16 are computed in complex64)."""
    return jnp.complex128 if jnp.dtype(dtype) == jnp.float64 else jnp.complex64


def _apply_2d(layer: nnx.Linear, x: jax.Array) -> jax.Array:
    """layer(x) on (..., in) with the leading axes flattened first: XLA's CPU backward of a dense
    layer (x^T dy over one merged row axis) runs ~1.4x faster than contracting over (B, T)."""
    return layer(x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1] + (-1,))


def _check_cache_batch(cache: dict[str, jax.Array], batch: int, what: str) -> None:
    for key, value in cache.items():
        if value.shape[0] != batch:
            raise ValueError(
                f"{what} cache was made for another batch size: cache[{key!r}] has shape "
                f"{tuple(value.shape)}, input has batch {batch}"
            )


def state_transition(z_BxTx2H: jax.Array, *, ablate_complex: bool, ablate_state_transition: bool,
                     frac_gradient: float = 0.9) -> jax.Array:
    """a (B, T, H) from the transition projection z (B, T, 2H) read as adjacent (re, im) pairs:
    sigmoid(|z|) exp(i angle z) (complex), or real when an ablation is on."""
    z = z_BxTx2H * frac_gradient + jax.lax.stop_gradient(z_BxTx2H) * (1.0 - frac_gradient)
    z = z.reshape(z.shape[:-1] + (z.shape[-1] // 2, 2))
    re, im = z[..., 0], z[..., 1]
    if re.dtype != jnp.float64:  # complex numbers exist in float32/float64 only: bf16/fp16 go up
        re, im = re.astype(jnp.float32), im.astype(jnp.float32)
    if ablate_state_transition:
        return jnp.ones_like(re)
    if ablate_complex:
        # The reference keeps Re z as a complex number with zero imaginary part: its angle is pi
        # for negative values, so a = sign(Re z) * sigmoid(|Re z|) (sign(0) -> +1), a real number.
        return jnp.where(re < 0, -1.0, 1.0).astype(re.dtype) * jax.nn.sigmoid(jnp.abs(re))
    # exp(i angle z) = z / |z|: no atan2, cos or sin, which XLA:CPU evaluates element by element
    # (they were 21% of a gateloop training step, docs/performance.md). z = 0 has angle 0: a = 1/2.
    squared = re * re + im * im
    nonzero = squared > 0
    radius = jnp.sqrt(jnp.where(nonzero, squared, 1.0))  # the where keeps sqrt's gradient finite at 0
    scale = jax.nn.sigmoid(radius) / radius
    return jax.lax.complex(jnp.where(nonzero, scale * re, 0.5), jnp.where(nonzero, scale * im, 0.0))


def gate_loop_operator(q, k, v, a, h0=None, *, scan=gate_loop_scan):
    """o_t = q_t^T Re(S_t), S_t = a_t S_{t-1} + k_t v_t^T: q, k (B, T, H, dk), v (B, T, H, dv),
    a (B, T, H) complex or real; returns (o (B, T, H, dv), last state S (B, H, dk, dv))."""
    dk, dv = k.shape[-1], v.shape[-1]
    if jnp.iscomplexobj(a):
        cdtype = a.dtype
    else:
        cdtype = jnp.result_type(q.dtype, a.dtype)
    if dk == 1 and dv == 1:  # max heads: scalar state per head, no outer product
        kv = (k[..., 0] * v[..., 0]).astype(cdtype)
        h = scan(a, kv, axis=1, h0=None if h0 is None else h0[..., 0, 0])
        h_re = h.real if jnp.iscomplexobj(h) else h
        out = (q[..., 0] * h_re.astype(q.dtype))[..., None]
        last = h[:, -1][..., None, None]
    else:
        kv = (k[..., :, None] * v[..., None, :]).astype(cdtype)
        h = scan(a[..., None, None], kv, axis=1, h0=h0)
        h_re = h.real if jnp.iscomplexobj(h) else h
        out = jnp.einsum("bthd,bthde->bthe", q, h_re.astype(q.dtype))
        last = h[:, -1]
    return out, last


class GateLoopedAttention(nnx.Module):
    """Data-controlled complex linear recurrence as attention: x (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0, *, rngs: nnx.Rngs):
        dim = cfg.n_embd
        dim_inner = cfg.gateloop.dim_inner or dim
        heads = cfg.gateloop.heads or dim_inner
        self.dim_inner, self.heads = dim_inner, heads
        self.frac_gradient = cfg.gateloop.frac_gradient
        self.ablate_complex = cfg.gateloop.ablate_complex
        self.ablate_state_transition = cfg.gateloop.ablate_state_transition
        self.checkpoint = cfg.gateloop.checkpoint
        self.scan_name, self.chunk_size = cfg.gateloop.scan, cfg.gateloop.chunk_size
        self.to_qkv = dense(dim, 3 * dim_inner, bias=False, std=cfg.init_std, rngs=rngs)
        self.to_a = dense(dim, 2 * heads, bias=True, std=cfg.init_std, rngs=rngs)
        self.sub_ln = (
            nnx.LayerNorm(dim_inner, epsilon=cfg.norm_eps, use_fast_variance=False, rngs=rngs)
            if cfg.gateloop.sub_ln else None
        )
        gating = cfg.gateloop.swish_gating
        self.to_gates = dense(dim, dim_inner, bias=False, std=cfg.init_std, rngs=rngs) if gating else None
        self.to_out = (
            dense(dim_inner, dim, bias=False, std=cfg.residual_init_std, rngs=rngs)
            if gating or dim_inner != dim else None
        )

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, jax.Array]:
        """Recurrent state {'h_re', 'h_im': (B, heads, dk, dv)}; its size does not depend on max_len."""
        d = self.dim_inner // self.heads
        shape = (batch, self.heads, d, d)
        return {"h_re": jnp.zeros(shape, dtype, device=device), "h_im": jnp.zeros(shape, dtype, device=device)}

    def __call__(self, x_BxTxD: jax.Array, cache: dict[str, Any] | None = None):
        B, T, _ = x_BxTxD.shape
        d = self.dim_inner // self.heads
        qkv = _apply_2d(self.to_qkv, x_BxTxD).reshape(B, T, 3, self.heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        a = state_transition(
            _apply_2d(self.to_a, x_BxTxD), ablate_complex=self.ablate_complex,
            ablate_state_transition=self.ablate_state_transition, frac_gradient=self.frac_gradient,
        )
        if not jnp.iscomplexobj(a):
            a = a.astype(jnp.result_type(q.dtype, jnp.float32))
        elif a.dtype != _complex_dtype(q.dtype):
            a = a.astype(_complex_dtype(q.dtype))
        h0 = None
        if cache is not None:
            _check_cache_batch(cache, B, "GateLoopedAttention")
            h0 = (jax.lax.complex(cache["h_re"], cache["h_im"]) if jnp.iscomplexobj(a) else cache["h_re"])
            h0 = h0.astype(a.dtype)
        op = resolve_operator(self.scan_name, self.chunk_size)
        if self.checkpoint:
            op = jax.checkpoint(op)
        out, last = op(q, k, v, a, h0)
        out = out.reshape(B, T, self.dim_inner)
        if self.sub_ln is not None:
            out = self.sub_ln(out)
        if self.to_gates is not None:
            out = jax.nn.silu(_apply_2d(self.to_gates, x_BxTxD)) * out
        y = out if self.to_out is None else _apply_2d(self.to_out, out)
        if cache is None:
            return y
        dtype = cache["h_re"].dtype
        if jnp.iscomplexobj(last):
            new = {"h_re": last.real.astype(dtype), "h_im": last.imag.astype(dtype)}
        else:
            new = {"h_re": last.astype(dtype), "h_im": jnp.zeros_like(cache["h_im"])}
        return y, new


class SimpleGateLoopLayer(nnx.Module):
    """RMSNorm, then h_t = sigmoid(a_t) h_{t-1} + kv_t per channel, out = q * h: (B, T, D) -> (B, T, D).

    No residual inside (the caller adds it). `dim`, `prenorm`, `post_ln` and `reverse` default to
    the config (n_embd, cfg.gateloop.prenorm, cfg.gateloop.post_ln, no reverse); prenorm=False
    drops the RMSNorm (and its parameter).
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0, *, dim: int | None = None,
                 prenorm: bool | None = None, post_ln: bool | None = None, reverse: bool = False,
                 rngs: nnx.Rngs):
        dim = cfg.n_embd if dim is None else dim
        prenorm = cfg.gateloop.prenorm if prenorm is None else prenorm
        post_ln = cfg.gateloop.post_ln if post_ln is None else post_ln
        self.dim, self.reverse = dim, reverse
        self.scan_name, self.chunk_size = cfg.gateloop.scan, cfg.gateloop.chunk_size
        self.norm = RMSNorm(dim) if prenorm else None
        self.to_qkva = dense(dim, 3 * dim, bias=False, std=cfg.init_std, rngs=rngs)
        self.post_ln = (
            nnx.LayerNorm(dim, epsilon=cfg.norm_eps, use_fast_variance=False, rngs=rngs) if post_ln else None
        )

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, jax.Array]:
        """Recurrent state {'h': (B, D)}; its size does not depend on max_len."""
        return {"h": jnp.zeros((batch, self.dim), dtype, device=device)}

    def __call__(self, x_BxTxD: jax.Array, cache: dict[str, Any] | None = None):
        if cache is not None and self.reverse:
            raise ValueError(
                "SimpleGateLoopLayer(reverse=True) cannot take a cache: the reversed scan runs from "
                "the last position backwards, so its state depends on tokens that have not arrived yet"
            )
        if cache is not None:
            _check_cache_batch(cache, x_BxTxD.shape[0], "SimpleGateLoopLayer")
        x = jnp.flip(x_BxTxD, axis=1) if self.reverse else x_BxTxD
        if self.norm is not None:
            x = self.norm(x)
        q, kv, a = jnp.split(_apply_2d(self.to_qkva, x), 3, axis=-1)
        h0 = None if cache is None else cache["h"].astype(kv.dtype)
        if self.scan_name == "chunked_matmul":  # out = q * h is the operator with k = 1, v = kv
            out, last = gate_loop_chunked_matmul(
                q[..., None], jnp.ones_like(q)[..., None], kv[..., None], jax.nn.sigmoid(a),
                None if h0 is None else h0[..., None, None], chunk=self.chunk_size,
            )
            out, last = out[..., 0], last[..., 0, 0]
        else:
            h = resolve_scan(self.scan_name, self.chunk_size)(jax.nn.sigmoid(a), kv, axis=1, h0=h0)
            out, last = q * h, h[:, -1]
        if self.post_ln is not None:
            out = self.post_ln(out)
        if self.reverse:
            out = jnp.flip(out, axis=1)
        if cache is None:
            return out
        return out, {"h": last.astype(cache["h"].dtype)}


class HybridMixer(nnx.Module):
    """Softmax attention, preceded in the first cfg.gateloop.hybrid_layers blocks by a
    SimpleGateLoopLayer: g = gateloop(x); y = g + attention(x + g). (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        self.gateloop = (
            SimpleGateLoopLayer(cfg, layer_idx, rngs=rngs) if layer_idx < cfg.gateloop.hybrid_layers else None
        )
        self.attn = CausalSelfAttention(cfg, layer_idx, rngs=rngs)

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, Any]:
        """{'attn': KV cache, 'gateloop': recurrent state (only in blocks that have one)}."""
        cache = {"attn": self.attn.init_cache(batch, max_len, dtype, device)}
        if self.gateloop is not None:
            cache["gateloop"] = self.gateloop.init_cache(batch, max_len, dtype, device)
        return cache

    def __call__(self, x_BxTxD: jax.Array, cache: dict[str, Any] | None = None):
        new_cache: dict[str, Any] = {}
        g = None
        if self.gateloop is not None:
            if cache is None:
                g = self.gateloop(x_BxTxD)
            else:
                g, new_cache["gateloop"] = self.gateloop(x_BxTxD, cache=cache["gateloop"])
        inner = x_BxTxD if g is None else x_BxTxD + g
        if cache is None:
            y = self.attn(inner)
        else:
            y, new_cache["attn"] = self.attn(inner, cache=cache["attn"])
        if g is not None:
            y = y + g
        return y if cache is None else (y, new_cache)
