"""Token embeddings: `token` (no positions, RippleGPT) and `learned` (token + absolute position)."""

from __future__ import annotations

import torch
from torch import nn

from physnets_core.config import ModelConfig


def _embed(num: int, dim: int, std: float) -> nn.Embedding:
    table = nn.Embedding(num, dim)
    nn.init.normal_(table.weight, mean=0.0, std=std)
    return table


class TokenEmbedding(nn.Module):
    """Token table only: tokens (B, T) -> (B, T, n_embd). Position comes from the mixer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wte = _embed(cfg.vocab_size, cfg.n_embd, cfg.init_std)

    def forward(self, tokens_BxT: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        del start_pos
        return self.wte(tokens_BxT)

    def attend(self, x_BxTxD: torch.Tensor) -> torch.Tensor:
        """Tied output projection x @ wte^T: (B, T, n_embd) -> (B, T, vocab)."""
        return x_BxTxD @ self.wte.weight.t()


class LearnedEmbedding(nn.Module):
    """Token + learned absolute position (block_size rows), then dropout (nanoGPT)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wte = _embed(cfg.vocab_size, cfg.n_embd, cfg.init_std)
        self.wpe = _embed(cfg.block_size, cfg.n_embd, cfg.init_std)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, tokens_BxT: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        positions_T = start_pos + torch.arange(tokens_BxT.shape[1], device=tokens_BxT.device)
        return self.drop(self.wte(tokens_BxT) + self.wpe(positions_T)[None])

    def attend(self, x_BxTxD: torch.Tensor) -> torch.Tensor:
        """Tied output projection x @ wte^T: (B, T, n_embd) -> (B, T, vocab)."""
        return x_BxTxD @ self.wte.weight.t()
