"""GateLoop mixers, torch twin of physnets_jax/layers/gateloop.py (same names and numerics).

GateLoopedAttention (mixer "gateloop"), SimpleGateLoopLayer (mixer "simple_gateloop") and
HybridMixer (mixer "hybrid"); the formulas are in the JAX module's docstring and docs/gateloop.md.
The recurrence runs on physnets_torch.ops.gate_loop.gate_loop_scan (a chunked parallel scan) for
gateloop_scan auto / associative / chunked / sequential, on gate_loop_scan_heinsen for "heinsen",
and as physnets_torch.ops.gate_loop_chunked.gate_loop_chunked_matmul for "chunked_matmul".
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from physnets_core.config import ModelConfig
from physnets_torch.layers.attention import CausalSelfAttention
from physnets_torch.layers.dense import dense
from physnets_torch.layers.norm import RMSNorm
from physnets_torch.ops.gate_loop import gate_loop_scan, gate_loop_scan_heinsen
from physnets_torch.ops.gate_loop_chunked import gate_loop_chunked_matmul


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """complex128 for float64 inputs, complex64 otherwise (bf16/fp16 are computed in complex64)."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _check_cache_batch(cache: dict[str, torch.Tensor], batch: int, what: str) -> None:
    for key, value in cache.items():
        if value.shape[0] != batch:
            raise ValueError(
                f"{what} cache was made for another batch size: cache[{key!r}] has shape "
                f"{tuple(value.shape)}, input has batch {batch}"
            )


def state_transition(z_BxTx2H: torch.Tensor, *, ablate_complex: bool, ablate_state_transition: bool,
                     frac_gradient: float = 0.9) -> torch.Tensor:
    """a (B, T, H) from the transition projection z (B, T, 2H) read as adjacent (re, im) pairs:
    sigmoid(|z|) exp(i angle z) (complex), or real when an ablation is on."""
    z = z_BxTx2H * frac_gradient + z_BxTx2H.detach() * (1.0 - frac_gradient)
    z = z.unflatten(-1, (z.shape[-1] // 2, 2))
    re, im = z[..., 0], z[..., 1]
    if re.dtype != torch.float64:  # complex numbers exist in float32/float64 only: bf16/fp16 go up
        re, im = re.float(), im.float()
    if ablate_state_transition:
        return torch.ones_like(re)
    if ablate_complex:
        sign = torch.where(re < 0, -1.0, 1.0).to(re.dtype)
        return sign * torch.sigmoid(re.abs())
    # exp(i angle z) = z / |z|, as the JAX twin computes it (no atan2, cos or sin). z = 0: a = 1/2.
    squared = re * re + im * im
    nonzero = squared > 0
    radius = torch.sqrt(torch.where(nonzero, squared, torch.ones_like(squared)))
    scale = torch.sigmoid(radius) / radius
    return torch.complex(torch.where(nonzero, scale * re, 0.5), torch.where(nonzero, scale * im, 0.0))


def _scan_fn(scan: str):
    """The torch scan for a config's gateloop_scan (every name but heinsen: the blocked scan)."""
    return gate_loop_scan_heinsen if scan == "heinsen" else gate_loop_scan


def gate_loop_operator(q, k, v, a, h0=None, *, scan: str = "auto", chunk: int = 64):
    """o_t = q_t^T Re(S_t), S_t = a_t S_{t-1} + k_t v_t^T: q, k (B, T, H, dk), v (B, T, H, dv),
    a (B, T, H) complex or real; returns (o (B, T, H, dv), last state S (B, H, dk, dv)).
    `scan` is a config's gateloop_scan ("chunked_matmul": gate_loop_chunked_matmul with `chunk`)."""
    if scan == "chunked_matmul":
        return gate_loop_chunked_matmul(q, k, v, a, h0, chunk=chunk)
    scan_fn = _scan_fn(scan)
    dk, dv = k.shape[-1], v.shape[-1]
    cdtype = a.dtype if a.is_complex() else torch.promote_types(q.dtype, a.dtype)
    if dk == 1 and dv == 1:  # max heads: scalar state per head, no outer product
        kv = (k[..., 0] * v[..., 0]).to(cdtype)
        h = scan_fn(a, kv, axis=1, h0=None if h0 is None else h0[..., 0, 0])
        h_re = h.real if h.is_complex() else h
        out = (q[..., 0] * h_re.to(q.dtype)).unsqueeze(-1)
        last = h[:, -1][..., None, None]
    else:
        kv = (k[..., :, None] * v[..., None, :]).to(cdtype)
        h = scan_fn(a[..., None, None], kv, axis=1, h0=h0)
        h_re = h.real if h.is_complex() else h
        out = torch.einsum("bthd,bthde->bthe", q, h_re.to(q.dtype))
        last = h[:, -1]
    return out, last


class GateLoopedAttention(nn.Module):
    """Data-controlled complex linear recurrence as attention: x (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0):
        super().__init__()
        dim = cfg.n_embd
        dim_inner = cfg.gateloop.dim_inner or dim
        heads = cfg.gateloop.heads or dim_inner
        self.dim_inner, self.heads = dim_inner, heads
        self.frac_gradient = cfg.gateloop.frac_gradient
        self.ablate_complex = cfg.gateloop.ablate_complex
        self.ablate_state_transition = cfg.gateloop.ablate_state_transition
        self.checkpoint = cfg.gateloop.checkpoint
        self.scan_name, self.chunk_size = cfg.gateloop.scan, cfg.gateloop.chunk_size
        self.to_qkv = dense(dim, 3 * dim_inner, bias=False, std=cfg.init_std)
        self.to_a = dense(dim, 2 * heads, bias=True, std=cfg.init_std)
        self.sub_ln = nn.LayerNorm(dim_inner, eps=cfg.norm_eps) if cfg.gateloop.sub_ln else None
        gating = cfg.gateloop.swish_gating
        self.to_gates = dense(dim, dim_inner, bias=False, std=cfg.init_std) if gating else None
        self.to_out = (
            dense(dim_inner, dim, bias=False, std=cfg.residual_init_std) if gating or dim_inner != dim else None
        )

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, torch.Tensor]:
        """Recurrent state {'h_re', 'h_im': (B, heads, dk, dv)}; its size does not depend on max_len."""
        d = self.dim_inner // self.heads
        shape = (batch, self.heads, d, d)
        return {
            "h_re": torch.zeros(shape, dtype=dtype, device=device),
            "h_im": torch.zeros(shape, dtype=dtype, device=device),
        }

    def forward(self, x_BxTxD: torch.Tensor, cache: dict[str, Any] | None = None):
        B, T, _ = x_BxTxD.shape
        d = self.dim_inner // self.heads
        qkv = self.to_qkv(x_BxTxD).reshape(B, T, 3, self.heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        a = state_transition(
            self.to_a(x_BxTxD), ablate_complex=self.ablate_complex,
            ablate_state_transition=self.ablate_state_transition, frac_gradient=self.frac_gradient,
        )
        if not a.is_complex():
            a = a.to(torch.promote_types(q.dtype, torch.float32))
        elif a.dtype != _complex_dtype(q.dtype):
            a = a.to(_complex_dtype(q.dtype))
        h0 = None
        if cache is not None:
            _check_cache_batch(cache, B, "GateLoopedAttention")
            h0 = torch.complex(cache["h_re"], cache["h_im"]) if a.is_complex() else cache["h_re"]
            h0 = h0.to(a.dtype)
        op = partial(gate_loop_operator, scan=self.scan_name, chunk=self.chunk_size)
        if self.checkpoint and torch.is_grad_enabled() and any(
            t.requires_grad for t in (q, k, v, a)
        ):
            out, last = checkpoint(op, q, k, v, a, h0, use_reentrant=False)
        else:
            out, last = op(q, k, v, a, h0)
        out = out.reshape(B, T, self.dim_inner)
        if self.sub_ln is not None:
            out = self.sub_ln(out)
        if self.to_gates is not None:
            out = F.silu(self.to_gates(x_BxTxD)) * out
        y = out if self.to_out is None else self.to_out(out)
        if cache is None:
            return y
        dtype = cache["h_re"].dtype
        if last.is_complex():
            new = {"h_re": last.real.to(dtype).clone(), "h_im": last.imag.to(dtype).clone()}
        else:
            new = {"h_re": last.to(dtype).clone(), "h_im": torch.zeros_like(cache["h_im"])}
        return y, new


class SimpleGateLoopLayer(nn.Module):
    """RMSNorm, then h_t = sigmoid(a_t) h_{t-1} + kv_t per channel, out = q * h: (B, T, D) -> (B, T, D).

    No residual inside (the caller adds it). `dim`, `prenorm`, `post_ln` and `reverse` default to
    the config (n_embd, cfg.gateloop.prenorm, cfg.gateloop.post_ln, no reverse); prenorm=False
    drops the RMSNorm (and its parameter).
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int = 0, *, dim: int | None = None,
                 prenorm: bool | None = None, post_ln: bool | None = None, reverse: bool = False):
        super().__init__()
        dim = cfg.n_embd if dim is None else dim
        prenorm = cfg.gateloop.prenorm if prenorm is None else prenorm
        post_ln = cfg.gateloop.post_ln if post_ln is None else post_ln
        self.dim, self.reverse = dim, reverse
        self.scan_name, self.chunk_size = cfg.gateloop.scan, cfg.gateloop.chunk_size
        self.norm = RMSNorm(dim) if prenorm else None
        self.to_qkva = dense(dim, 3 * dim, bias=False, std=cfg.init_std)
        self.post_ln = nn.LayerNorm(dim, eps=cfg.norm_eps) if post_ln else None

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, torch.Tensor]:
        """Recurrent state {'h': (B, D)}; its size does not depend on max_len."""
        return {"h": torch.zeros((batch, self.dim), dtype=dtype, device=device)}

    def forward(self, x_BxTxD: torch.Tensor, cache: dict[str, Any] | None = None):
        if cache is not None and self.reverse:
            raise ValueError(
                "SimpleGateLoopLayer(reverse=True) cannot take a cache: the reversed scan runs from "
                "the last position backwards, so its state depends on tokens that have not arrived yet"
            )
        if cache is not None:
            _check_cache_batch(cache, x_BxTxD.shape[0], "SimpleGateLoopLayer")
        x = torch.flip(x_BxTxD, dims=(1,)) if self.reverse else x_BxTxD
        if self.norm is not None:
            x = self.norm(x)
        q, kv, a = self.to_qkva(x).chunk(3, dim=-1)
        h0 = None if cache is None else cache["h"].to(kv.dtype)
        if self.scan_name == "chunked_matmul":  # out = q * h is the operator with k = 1, v = kv
            out, last = gate_loop_chunked_matmul(
                q[..., None], torch.ones_like(q)[..., None], kv[..., None], torch.sigmoid(a),
                None if h0 is None else h0[..., None, None], chunk=self.chunk_size,
            )
            out, last = out[..., 0], last[..., 0, 0]
        else:
            h = _scan_fn(self.scan_name)(torch.sigmoid(a), kv, axis=1, h0=h0)
            out, last = q * h, h[:, -1]
        if self.post_ln is not None:
            out = self.post_ln(out)
        if self.reverse:
            out = torch.flip(out, dims=(1,))
        if cache is None:
            return out
        return out, {"h": last.to(cache["h"].dtype).clone()}


class HybridMixer(nn.Module):
    """Softmax attention, preceded in the first cfg.gateloop.hybrid_layers blocks by a
    SimpleGateLoopLayer: g = gateloop(x); y = g + attention(x + g). (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.gateloop = SimpleGateLoopLayer(cfg, layer_idx) if layer_idx < cfg.gateloop.hybrid_layers else None
        self.attn = CausalSelfAttention(cfg, layer_idx)

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, Any]:
        """{'attn': KV cache, 'gateloop': recurrent state (only in blocks that have one)}."""
        cache = {"attn": self.attn.init_cache(batch, max_len, dtype, device)}
        if self.gateloop is not None:
            cache["gateloop"] = self.gateloop.init_cache(batch, max_len, dtype, device)
        return cache

    def forward(self, x_BxTxD: torch.Tensor, cache: dict[str, Any] | None = None):
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
