"""Output heads: a bias-free linear projection to the vocabulary."""

from __future__ import annotations

import torch
from torch import nn

from physnets_core.config import ModelConfig
from physnets_torch.layers.dense import dense


class LinearHead(nn.Module):
    """(B, T, n_embd) -> (B, T, vocab) logits, bias-free, untied."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.proj = dense(cfg.n_embd, cfg.vocab_size, bias=False, std=cfg.init_std)

    def forward(self, x_BxTxD: torch.Tensor) -> torch.Tensor:
        return self.proj(x_BxTxD)
