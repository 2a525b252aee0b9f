"""Causal softmax attention (with the optional ripple bias) computed `block` queries at a time.

Torch twin of physnets_jax/ops/blockwise_attention.py. Each block of queries sees its visible keys
at once (exact softmax); every block runs under torch.utils.checkpoint, so the backward recomputes
its (B, H, block, keys) score tile instead of keeping it: memory grows linearly in T. The ripple
bias is computed inside each tile from positions.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def _one_block(q_BxHxCxD, k_BxHxSxD, v_BxHxSxD, slopes_H, start: int, scale: float):
    C, S = q_BxHxCxD.shape[2], k_BxHxSxD.shape[2]
    q_pos = start + torch.arange(C, device=q_BxHxCxD.device)
    k_pos = torch.arange(S, device=q_BxHxCxD.device)
    scores = torch.einsum("bhcd,bhsd->bhcs", q_BxHxCxD, k_BxHxSxD) * scale
    if slopes_H is not None:
        dist = (k_pos[None, :] - q_pos[:, None]).clamp(max=0).to(scores.dtype)
        scores = scores + slopes_H[None, :, None, None] * dist[None, None]
    scores = scores.masked_fill(k_pos[None, :] > q_pos[:, None], float("-inf"))
    return torch.einsum("bhcs,bhsd->bhcd", torch.softmax(scores, dim=-1), v_BxHxSxD)


def blockwise_causal_attention(
    q_BxHxTxD: torch.Tensor, k_BxHxTxD: torch.Tensor, v_BxHxTxD: torch.Tensor, *,
    decay_H: torch.Tensor | None = None, block: int = 256,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + ripple bias, causal mask) v per head, block queries at a time: (B, H, T, D)."""
    B, H, T, D = q_BxHxTxD.shape
    if tuple(k_BxHxTxD.shape) != (B, H, T, D) or tuple(v_BxHxTxD.shape[:3]) != (B, H, T):
        raise ValueError(
            f"q {tuple(q_BxHxTxD.shape)}, k {tuple(k_BxHxTxD.shape)}, v {tuple(v_BxHxTxD.shape)}: blockwise "
            "attention needs q and k of one shape (B, H, T, D) and v (B, H, T, Dv) (no cache)"
        )
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise ValueError(f"block={block!r} must be a positive integer")
    slopes = None if decay_H is None else decay_H.abs()
    scale = D**-0.5
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q_BxHxTxD, k_BxHxTxD, v_BxHxTxD, decay_H))
    outs = []
    for start in range(0, T, block):
        end = min(start + block, T)
        args = (q_BxHxTxD[:, :, start:end], k_BxHxTxD[:, :, :end], v_BxHxTxD[:, :, :end], slopes, start, scale)
        outs.append(checkpoint(_one_block, *args, use_reentrant=False) if needs_grad else _one_block(*args))
    return torch.cat(outs, dim=2)
