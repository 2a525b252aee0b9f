"""Residual updates of the stream: `add` (x + y)."""

from __future__ import annotations

import torch
from torch import nn

from physnets_jax.config import ModelConfig


class AddResidual(nn.Module):
    """x + y: stream (B, T, D) plus sublayer output (B, T, D). No parameters."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        del cfg, layer_idx

    def forward(self, x_BxTxD: torch.Tensor, y_BxTxD: torch.Tensor) -> torch.Tensor:
        return x_BxTxD + y_BxTxD
