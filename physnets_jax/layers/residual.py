"""Residual updates of the stream: `add` (x + y)."""

from __future__ import annotations

import jax
from flax import nnx

from physnets_jax.config import ModelConfig


class AddResidual(nnx.Module):
    """x + y: stream (B, T, D) plus sublayer output (B, T, D). No parameters."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        del cfg, layer_idx, rngs

    def __call__(self, x_BxTxD: jax.Array, y_BxTxD: jax.Array) -> jax.Array:
        return x_BxTxD + y_BxTxD
