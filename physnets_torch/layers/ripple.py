"""RippleGPT attention: softmax attention plus a learned per-head linear distance decay."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from physnets_core.config import ModelConfig
from physnets_torch.layers.attention import attend_with_cache, init_kv_cache
from physnets_torch.layers.dense import dense


class RippleAttention(nn.Module):
    """s_ij = q_i.k_j/sqrt(d) + |lambda_h| min(j - i, 0), causal softmax, heads concatenated.

    (B, T, n_embd) -> (B, T, n_embd). No positional embedding is needed, so any length T works.
    The reference has no output projection (cfg.attn_out_proj=False); one can be added.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.cfg = cfg
        n = cfg.n_embd
        self.query = dense(n, n, bias=cfg.bias, std=cfg.init_std)
        self.key = dense(n, n, bias=cfg.bias, std=cfg.init_std)
        self.value = dense(n, n, bias=cfg.bias, std=cfg.init_std)
        self.decay = nn.Parameter(torch.full((cfg.n_head,), cfg.ripple.decay_init))
        self.attn_drop = nn.Dropout(cfg.dropout)
        if cfg.attn_out_proj:
            self.out = dense(n, n, bias=cfg.bias, std=cfg.residual_init_std)
            self.resid_drop = nn.Dropout(cfg.dropout)
        else:
            self.out = None

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict:
        """Empty KV cache for `max_len` positions (may exceed block_size)."""
        return init_kv_cache(self.cfg, batch, max_len, dtype, device)

    def forward(self, x_BxTxD: torch.Tensor, cache=None):
        heads = lambda t: rearrange(t, "b t (h d) -> b h t d", h=self.cfg.n_head)  # noqa: E731
        q, k, v = heads(self.query(x_BxTxD)), heads(self.key(x_BxTxD)), heads(self.value(x_BxTxD))
        out, new_cache = attend_with_cache(q, k, v, cache, decay=self.decay, weights_dropout=self.attn_drop, cfg=self.cfg)
        y = rearrange(out, "b h t d -> b t (h d)")
        if self.out is not None:
            y = self.resid_drop(self.out(y))
        return y if cache is None else (y, new_cache)
