"""Language-model losses on logits (B, T, V) and integer targets (B, T)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits_BxTxV: torch.Tensor, targets_BxT: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (natural log) over all positions: scalar."""
    if logits_BxTxV.shape[:-1] != targets_BxT.shape:
        raise ValueError(
            f"logits shape {tuple(logits_BxTxV.shape)} does not match targets shape "
            f"{tuple(targets_BxT.shape)} (logits must be targets' shape plus a vocabulary axis)"
        )
    return F.cross_entropy(logits_BxTxV.reshape(-1, logits_BxTxV.shape[-1]), targets_BxT.reshape(-1))
