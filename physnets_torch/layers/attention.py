"""Causal multi-head softmax self-attention (nanoGPT): fused qkv projection and output projection."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from physnets_core.config import ModelConfig
from physnets_torch.layers.dense import dense
from physnets_torch.ops.attention import causal_attention
from physnets_torch.ops.blockwise_attention import blockwise_causal_attention
from physnets_torch.ops.pallas_attention import native_flex_available, pallas_causal_attention


def init_kv_cache(cfg: ModelConfig, batch: int, max_len: int, dtype, device=None) -> dict:
    """Empty KV cache {'k', 'v': (B, H, max_len, head_size), 'pos': int scalar tensor}."""
    shape = (batch, cfg.n_head, max_len, cfg.head_size)
    return {
        "k": torch.zeros(shape, dtype=dtype, device=device),
        "v": torch.zeros(shape, dtype=dtype, device=device),
        "pos": torch.zeros((), dtype=torch.int32, device=device),
    }


def _weight_dropout_active(weights_dropout) -> bool:
    return weights_dropout is not None and weights_dropout.p > 0 and weights_dropout.training


def _check_no_weight_dropout(weights_dropout, impl: str) -> None:
    if _weight_dropout_active(weights_dropout):
        raise ValueError(
            f"attention_impl={impl!r} applies no dropout to the attention weights: set dropout=0 "
            "or run in eval mode (or use attention_impl='dense')"
        )


def _attention_without_cache(q, k, v, decay, weights_dropout, cfg: ModelConfig | None):
    """The configured attention path over a whole sequence (no KV cache): (B, H, T, D)."""
    impl = "dense" if cfg is None else cfg.attention_impl
    if impl == "auto":  # FlexAttention where it runs fused (CUDA) and applies, else dense
        native = native_flex_available(q.device, q.dtype) and not _weight_dropout_active(weights_dropout)
        impl = "pallas" if native else "dense"
    if impl == "blockwise":
        _check_no_weight_dropout(weights_dropout, impl)
        return blockwise_causal_attention(q, k, v, decay_H=decay, block=cfg.attention_block)
    if impl == "pallas":
        _check_no_weight_dropout(weights_dropout, impl)
        return pallas_causal_attention(q, k, v, decay_H=decay, block=cfg.attention_block)
    return causal_attention(q, k, v, decay_H=decay, weights_dropout=weights_dropout)


def attend_with_cache(q, k, v, cache, *, decay=None, weights_dropout=None, cfg: ModelConfig | None = None):
    """Attention of new q/k/v (B, H, T, D), with or without a KV cache; returns (out, new_cache).

    The cache's buffers are written in place (the returned dict shares them) and attention reads
    only the filled prefix, so one decoding step costs O(prefix).
    """
    if cache is None:
        return _attention_without_cache(q, k, v, decay, weights_dropout, cfg), None
    pos, T = int(cache["pos"]), q.shape[2]
    batch, max_len = cache["k"].shape[0], cache["k"].shape[2]
    if batch != q.shape[0]:
        raise ValueError(f"cache was made for batch {batch}, input has batch {q.shape[0]}")
    if pos + T > max_len:
        raise ValueError(f"cache holds {max_len} positions; pos {pos} + {T} new tokens overflow it")
    cache["k"][:, :, pos : pos + T] = k.to(cache["k"].dtype)
    cache["v"][:, :, pos : pos + T] = v.to(cache["v"].dtype)
    k_all, v_all = cache["k"][:, :, : pos + T], cache["v"][:, :, : pos + T]
    q_pos = pos + torch.arange(T, device=q.device)
    out = causal_attention(q, k_all, v_all, q_pos_T=q_pos, decay_H=decay, weights_dropout=weights_dropout)
    return out, {"k": cache["k"], "v": cache["v"], "pos": cache["pos"] + T}


class CausalSelfAttention(nn.Module):
    """x (B, T, n_embd) -> causal softmax attention over n_head heads -> output projection."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.cfg = cfg
        self.qkv = dense(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias, std=cfg.init_std)
        self.out = dense(cfg.n_embd, cfg.n_embd, bias=cfg.bias, std=cfg.residual_init_std)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict:
        """Empty KV cache for `max_len` positions."""
        return init_kv_cache(self.cfg, batch, max_len, dtype, device)

    def forward(self, x_BxTxD: torch.Tensor, cache=None):
        qkv = rearrange(self.qkv(x_BxTxD), "b t (three h d) -> three b h t d", three=3, h=self.cfg.n_head)
        out, new_cache = attend_with_cache(qkv[0], qkv[1], qkv[2], cache, weights_dropout=self.attn_drop, cfg=self.cfg)
        y = self.resid_drop(self.out(rearrange(out, "b h t d -> b t (h d)")))
        return y if cache is None else (y, new_cache)
