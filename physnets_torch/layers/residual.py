"""Residual updates of the stream: `add` (x + y) and lof310's `orthogonal_parallel`."""

from __future__ import annotations

import torch
from torch import nn

from physnets_core.checks import ALPHA_INIT, BETA_INIT
from physnets_core.config import ModelConfig
from physnets_torch.ops.residual import orthogonal_parallel_update


class AddResidual(nn.Module):
    """x + y: stream (B, T, D) plus sublayer output (B, T, D). No parameters."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        del cfg, layer_idx

    def forward(self, x_BxTxD: torch.Tensor, y_BxTxD: torch.Tensor) -> torch.Tensor:
        return x_BxTxD + y_BxTxD


class OrthogonalParallelResidual(nn.Module):
    """x + alpha (y - proj x) + beta parallel per token: (B, T, D), (B, T, D) -> (B, T, D).

    Twin of physnets_jax.layers.residual.OrthogonalParallelResidual (params 'alpha', 'beta').
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        del layer_idx
        self.variant = cfg.residual_variant
        dim = cfg.n_embd
        self.alpha = nn.Parameter(torch.empty(dim).normal_(*ALPHA_INIT))
        self.beta = nn.Parameter(torch.empty(dim).normal_(*BETA_INIT))

    def forward(self, x_BxTxD: torch.Tensor, y_BxTxD: torch.Tensor) -> torch.Tensor:
        return orthogonal_parallel_update(x_BxTxD, y_BxTxD, self.alpha, self.beta, self.variant)
