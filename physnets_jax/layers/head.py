"""Output heads: a bias-free linear projection to the vocabulary."""

from __future__ import annotations

import jax
from flax import nnx

from physnets_core.config import ModelConfig
from physnets_jax.layers.dense import dense


class LinearHead(nnx.Module):
    """(B, T, n_embd) -> (B, T, vocab) logits, bias-free, untied."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.proj = dense(cfg.n_embd, cfg.vocab_size, bias=False, std=cfg.init_std, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        return self.proj(x_BxTxD)
