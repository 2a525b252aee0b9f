"""Linear layers with the GPT initialisation (normal weights, zero biases)."""

from __future__ import annotations

from torch import nn


def dense(in_features: int, out_features: int, *, bias: bool, std: float) -> nn.Linear:
    """nn.Linear (in -> out) with weight ~ N(0, std) and zero bias."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    nn.init.normal_(layer.weight, mean=0.0, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer

