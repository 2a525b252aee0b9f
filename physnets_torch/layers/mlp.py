"""Feed-forward layers: MLP (gelu/relu, 4x) and GatedMLP (RippleMLP and SwiGLU)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from physnets_core.config import ModelConfig
from physnets_torch.layers.dense import dense

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "relu": F.relu,
}


class MLP(nn.Module):
    """fc2(act(fc1(x))) then dropout; hidden 4 n_embd by default: (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        hidden = cfg.mlp_width
        self.act_name = cfg.mlp
        self.fc1 = dense(cfg.n_embd, hidden, bias=cfg.mlp_bias, std=cfg.init_std)
        self.fc2 = dense(hidden, cfg.n_embd, bias=cfg.mlp_bias, std=cfg.residual_init_std)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BxTxD: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(ACTIVATIONS[self.act_name](self.fc1(x_BxTxD))))


class GatedMLP(nn.Module):
    """fc2(value * silu(gate)) with (value, gate) = halves of fc1(x), in that order; then dropout.

    mlp='ripple' is RippleGPT's RippleMLP (biases, reference width); mlp='swiglu' the LLaMA form.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        hidden = cfg.mlp_width
        self.fc1 = dense(cfg.n_embd, 2 * hidden, bias=cfg.mlp_bias, std=cfg.init_std)
        self.fc2 = dense(hidden, cfg.n_embd, bias=cfg.mlp_bias, std=cfg.residual_init_std)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BxTxD: torch.Tensor) -> torch.Tensor:
        value, gate = self.fc1(x_BxTxD).chunk(2, dim=-1)
        return self.drop(self.fc2(value * F.silu(gate)))
