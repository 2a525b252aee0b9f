"""Causal multi-head softmax self-attention (nanoGPT): fused qkv projection and output projection."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from physnets_core.config import ModelConfig
from physnets_jax.layers.dense import dense
from physnets_jax.layers.dropout import Dropout
from physnets_jax.ops.attention import causal_attention, causal_self_attention
from physnets_jax.ops.blockwise_attention import blockwise_causal_attention
from physnets_jax.ops.pallas_attention import native_pallas_available, pallas_causal_attention


def init_kv_cache(cfg: ModelConfig, batch: int, max_len: int, dtype, device=None) -> dict[str, jax.Array]:
    """Empty KV cache {'k', 'v': (B, H, max_len, head_size), 'pos': int32 scalar}."""
    shape = (batch, cfg.n_head, max_len, cfg.head_size)
    return {"k": jnp.zeros(shape, dtype, device=device), "v": jnp.zeros(shape, dtype, device=device), "pos": jnp.zeros((), jnp.int32, device=device)}


def _weight_dropout_active(weights_dropout) -> bool:
    return weights_dropout is not None and weights_dropout.rate > 0 and not weights_dropout.deterministic


def _check_no_weight_dropout(weights_dropout, impl: str) -> None:
    if _weight_dropout_active(weights_dropout):
        raise ValueError(
            f"attention_impl={impl!r} applies no dropout to the attention weights: set dropout=0 "
            "or run in eval mode (or use attention_impl='dense')"
        )


def _attention_without_cache(q, k, v, decay, weights_dropout, cfg: ModelConfig | None):
    """The configured attention path over a whole sequence (no KV cache): (B, H, T, D)."""
    impl = "dense" if cfg is None else cfg.attention_impl
    if impl == "auto":  # the fused kernel where it runs natively and applies, else dense
        native = native_pallas_available(q.dtype) and not _weight_dropout_active(weights_dropout)
        impl = "pallas" if native else "dense"
    if impl == "blockwise":
        _check_no_weight_dropout(weights_dropout, impl)
        return blockwise_causal_attention(q, k, v, decay_H=decay, block=cfg.attention_block)
    if impl == "pallas":
        _check_no_weight_dropout(weights_dropout, impl)
        return pallas_causal_attention(q, k, v, decay_H=decay, block=cfg.attention_block)
    if not _weight_dropout_active(weights_dropout):
        return causal_self_attention(q, k, v, decay_H=decay)
    if not isinstance(weights_dropout, Dropout) or weights_dropout.rngs is None or weights_dropout.broadcast_dims:
        return causal_attention(q, k, v, decay_H=decay, weights_dropout=weights_dropout)
    # The mask the Dropout layer would draw (same stream, same key), applied inside the custom-
    # gradient attention, which keeps it (bool) instead of the dropped (B, H, T, T) weights.
    B, H, T, _ = q.shape
    keep, keep_prob = weights_dropout.draw_keep_mask((B, H, T, T))
    return causal_self_attention(q, k, v, decay_H=decay, keep_BxHxTxT=keep, keep_prob=keep_prob)


def attend_with_cache(q, k, v, cache, *, decay=None, weights_dropout=None, cfg: ModelConfig | None = None):
    """Attention of new q/k/v (B, H, T, D), with or without a KV cache; returns (out, new_cache).

    The cache is preallocated (static shapes for XLA): a step attends over all max_len slots with
    the unfilled ones masked, so its cost is O(max_len) rather than O(prefix).
    """
    if cache is None:
        return _attention_without_cache(q, k, v, decay, weights_dropout, cfg), None
    if cache["k"].shape[0] != q.shape[0]:
        raise ValueError(f"cache was made for batch {cache['k'].shape[0]}, input has batch {q.shape[0]}")
    pos = cache["pos"]
    zero = jnp.zeros_like(pos)
    k_all = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (zero, zero, pos, zero))
    v_all = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (zero, zero, pos, zero))
    T = q.shape[2]
    out = causal_attention(
        q, k_all, v_all, q_pos_T=pos + jnp.arange(T), kv_len=pos + T, decay_H=decay,
        weights_dropout=weights_dropout,
    )
    return out, {"k": k_all, "v": v_all, "pos": pos + T}


class CausalSelfAttention(nnx.Module):
    """x (B, T, n_embd) -> causal softmax attention over n_head heads -> output projection."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.qkv = dense(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias, std=cfg.init_std, rngs=rngs)
        self.out = dense(
            cfg.n_embd, cfg.n_embd, bias=cfg.bias, std=cfg.residual_init_std, rngs=rngs
        )
        self.attn_drop = Dropout(cfg.dropout, rngs=rngs)
        self.resid_drop = Dropout(cfg.dropout, rngs=rngs)

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, jax.Array]:
        """Empty KV cache for `max_len` positions."""
        return init_kv_cache(self.cfg, batch, max_len, dtype, device)

    def __call__(self, x_BxTxD: jax.Array, cache=None):
        qkv = rearrange(self.qkv(x_BxTxD), "b t (three h d) -> three b h t d", three=3, h=self.cfg.n_head)
        out, new_cache = attend_with_cache(qkv[0], qkv[1], qkv[2], cache, weights_dropout=self.attn_drop, cfg=self.cfg)
        y = self.resid_drop(self.out(rearrange(out, "b h t d -> b t (h d)")))
        return y if cache is None else (y, new_cache)
