"""Causal softmax attention with an optional ripple (linear distance decay) bias."""

from __future__ import annotations

from collections.abc import Callable

import torch


def ripple_bias(decay_H: torch.Tensor, q_pos_T: torch.Tensor, k_pos_S: torch.Tensor) -> torch.Tensor:
    """Ripple field |lambda_h| * min(j - i, 0) for query positions i and key positions j: (H, T, S)."""
    dist_TxS = (k_pos_S[None, :] - q_pos_T[:, None]).clamp(max=0).to(decay_H.dtype)
    return decay_H.abs()[:, None, None] * dist_TxS[None]


def causal_attention(
    q_BxHxTxD: torch.Tensor,
    k_BxHxSxD: torch.Tensor,
    v_BxHxSxD: torch.Tensor,
    *,
    q_pos_T: torch.Tensor | None = None,
    k_pos_S: torch.Tensor | None = None,
    kv_len: torch.Tensor | int | None = None,
    decay_H: torch.Tensor | None = None,
    weights_dropout: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + ripple bias, causal mask) v, per head: (B, H, T, D).

    Positions default to 0..T-1 and 0..S-1. Key j is visible to query i when pos_j <= pos_i and
    j < kv_len (the filled part of a preallocated KV cache). With `decay_H` the per-head ripple
    bias |lambda_h| * (pos_j - pos_i) is added before the softmax.
    """
    T, S = q_BxHxTxD.shape[2], k_BxHxSxD.shape[2]
    device = q_BxHxTxD.device
    q_pos_T = torch.arange(T, device=device) if q_pos_T is None else q_pos_T
    k_pos_S = torch.arange(S, device=device) if k_pos_S is None else k_pos_S
    scale = q_BxHxTxD.shape[-1] ** -0.5
    scores_BxHxTxS = torch.einsum("bhtd,bhsd->bhts", q_BxHxTxD, k_BxHxSxD) * scale
    if decay_H is not None:
        scores_BxHxTxS = scores_BxHxTxS + ripple_bias(decay_H, q_pos_T, k_pos_S)[None]
    visible_TxS = k_pos_S[None, :] <= q_pos_T[:, None]
    if kv_len is not None:
        visible_TxS = visible_TxS & (torch.arange(S, device=device) < kv_len)[None, :]
    scores_BxHxTxS = scores_BxHxTxS.masked_fill(~visible_TxS, float("-inf"))
    weights_BxHxTxS = torch.softmax(scores_BxHxTxS, dim=-1)
    if weights_dropout is not None:
        weights_BxHxTxS = weights_dropout(weights_BxHxTxS)
    return torch.einsum("bhts,bhsd->bhtd", weights_BxHxTxS, v_BxHxSxD)
