"""Token embeddings: `token` (no positions, RippleGPT) and `learned` (token + absolute position)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from physnets_core.config import ModelConfig
from physnets_jax.layers.dense import matmul_last
from physnets_jax.layers.dropout import Dropout


class Embed(nnx.Module):
    """Lookup table (num, dim) ~ N(0, std): ids (...) -> (..., dim), in the table's own dtype.

    (nnx.Embed fixes its compute dtype at construction, which breaks casting a model to float64.)
    """

    def __init__(self, num: int, dim: int, std: float, rngs: nnx.Rngs):
        self.embedding = nnx.Param(nnx.initializers.normal(stddev=std)(rngs.params(), (num, dim)))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        """x @ table^T: (..., dim) -> (..., num)."""
        return matmul_last(x, self.embedding[...].T)


def _embed(num: int, dim: int, std: float, rngs: nnx.Rngs) -> Embed:
    return Embed(num, dim, std, rngs)


class TokenEmbedding(nnx.Module):
    """Token table only: tokens (B, T) -> (B, T, n_embd). Position comes from the mixer."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.wte = _embed(cfg.vocab_size, cfg.n_embd, cfg.init_std, rngs)

    def __call__(self, tokens_BxT: jax.Array, start_pos: jax.Array | int = 0) -> jax.Array:
        del start_pos
        return self.wte(tokens_BxT)

    def attend(self, x_BxTxD: jax.Array) -> jax.Array:
        """Tied output projection x @ wte^T: (B, T, n_embd) -> (B, T, vocab)."""
        return self.wte.attend(x_BxTxD)


class LearnedEmbedding(nnx.Module):
    """Token + learned absolute position (block_size rows), then dropout (nanoGPT)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.wte = _embed(cfg.vocab_size, cfg.n_embd, cfg.init_std, rngs)
        self.wpe = _embed(cfg.block_size, cfg.n_embd, cfg.init_std, rngs)
        self.drop = Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, tokens_BxT: jax.Array, start_pos: jax.Array | int = 0) -> jax.Array:
        positions_T = start_pos + jnp.arange(tokens_BxT.shape[1])
        return self.drop(self.wte(tokens_BxT) + self.wpe(positions_T)[None])

    def attend(self, x_BxTxD: jax.Array) -> jax.Array:
        """Tied output projection x @ wte^T: (B, T, n_embd) -> (B, T, vocab)."""
        return self.wte.attend(x_BxTxD)
