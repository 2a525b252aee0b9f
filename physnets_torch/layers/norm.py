"""Normalisation layers: LayerNorm (with shift) and the GateLoop-style RMSNorm."""

from __future__ import annotations

import torch
from torch import nn

from physnets_core.config import ModelConfig


class RMSNorm(nn.Module):
    """x / max(||x||_2, 1e-12) * sqrt(dim) * gamma over the last axis: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.square().sum(dim=-1, keepdim=True).sqrt()
        return x / norm.clamp_min(1e-12) * (self.dim**0.5) * self.gamma


def make_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The config's norm over `dim` features (default n_embd)."""
    dim = cfg.n_embd if dim is None else dim
    if cfg.norm == "rmsnorm":
        return RMSNorm(dim)
    return nn.LayerNorm(dim, eps=cfg.norm_eps)
