"""RippleGPT attention: softmax attention plus a learned per-head linear distance decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from physnets_core.config import ModelConfig
from physnets_jax.layers.attention import attend_with_cache, init_kv_cache
from physnets_jax.layers.dense import dense, matmul_last
from physnets_jax.layers.dropout import Dropout


class RippleAttention(nnx.Module):
    """s_ij = q_i.k_j/sqrt(d) + |lambda_h| min(j - i, 0), causal softmax, heads concatenated.

    (B, T, n_embd) -> (B, T, n_embd). No positional embedding is needed, so any length T works.
    The reference has no output projection (cfg.attn_out_proj=False); one can be added.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        n = cfg.n_embd
        self.query = dense(n, n, bias=cfg.bias, std=cfg.init_std, rngs=rngs)
        self.key = dense(n, n, bias=cfg.bias, std=cfg.init_std, rngs=rngs)
        self.value = dense(n, n, bias=cfg.bias, std=cfg.init_std, rngs=rngs)
        self.decay = nnx.Param(jnp.full((cfg.n_head,), cfg.ripple.decay_init, jnp.float32))
        self.attn_drop = Dropout(cfg.dropout, rngs=rngs)
        if cfg.attn_out_proj:
            self.out = dense(n, n, bias=cfg.bias, std=cfg.residual_init_std, rngs=rngs)
            self.resid_drop = Dropout(cfg.dropout, rngs=rngs)
        else:
            self.out = None

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, jax.Array]:
        """Empty KV cache for `max_len` positions (may exceed block_size)."""
        return init_kv_cache(self.cfg, batch, max_len, dtype, device)

    def _project_qkv(self, x_BxTxD: jax.Array) -> jax.Array:
        """[query(x), key(x), value(x)] as one matmul (B, T, 3 n_embd).

        One dot instead of three: the input gradient is then a single matmul too (XLA on CPU
        otherwise sums three transposed partial gradients, a fifth of a layer's backward).
        """
        layers = (self.query, self.key, self.value)
        kernel = jnp.concatenate([layer.kernel[...] for layer in layers], axis=1)
        out = matmul_last(x_BxTxD, kernel.astype(jnp.result_type(x_BxTxD, kernel)))
        if self.cfg.bias:
            out = out + jnp.concatenate([layer.bias[...] for layer in layers])
        return out

    def __call__(self, x_BxTxD: jax.Array, cache=None):
        q, k, v = rearrange(
            self._project_qkv(x_BxTxD), "b t (three h d) -> three b h t d", three=3, h=self.cfg.n_head
        )
        out, new_cache = attend_with_cache(
            q, k, v, cache, decay=self.decay[...], weights_dropout=self.attn_drop, cfg=self.cfg
        )
        y = rearrange(out, "b h t d -> b t (h d)")
        if self.out is not None:
            y = self.resid_drop(self.out(y))
        return y if cache is None else (y, new_cache)
