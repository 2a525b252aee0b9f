"""Causal softmax attention (with the optional ripple bias) computed `block` queries at a time.

Each block of queries sees all keys at once, so its softmax is exact (the same algorithm as
ops.attention.causal_attention, row by row); the block function is wrapped in jax.checkpoint and
mapped over blocks with lax.map, so neither the forward nor the backward ever holds more than one
(B, H, block, T) score tile: memory grows linearly in T (the dense path holds (B, H, T, T)). The
ripple bias |lambda_h| * min(j - i, 0) is computed inside each tile from positions, never stored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def blockwise_causal_attention(
    q_BxHxTxD: jax.Array, k_BxHxTxD: jax.Array, v_BxHxTxD: jax.Array, *, decay_H: jax.Array | None = None,
    block: int = 256,
) -> jax.Array:
    """softmax(q k^T / sqrt(D) + ripple bias, causal mask) v per head, block queries at a time: (B, H, T, D)."""
    B, H, T, D = q_BxHxTxD.shape
    if k_BxHxTxD.shape != (B, H, T, D) or v_BxHxTxD.shape[:3] != (B, H, T):
        raise ValueError(
            f"q {q_BxHxTxD.shape}, k {k_BxHxTxD.shape}, v {v_BxHxTxD.shape}: blockwise attention needs "
            "q and k of one shape (B, H, T, D) and v (B, H, T, Dv) (no cache)"
        )
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise ValueError(f"block={block!r} must be a positive integer")
    C = min(block, T)
    n_blocks = -(-T // C)
    pad = n_blocks * C - T
    q = jnp.pad(q_BxHxTxD, ((0, 0), (0, 0), (0, pad), (0, 0)))
    q_blocks = jnp.moveaxis(q.reshape(B, H, n_blocks, C, D), 2, 0)  # (n, B, H, C, D)
    scale = D**-0.5
    k_pos = jnp.arange(T)
    slopes = None if decay_H is None else jnp.abs(decay_H)

    @jax.checkpoint
    def one_block(q_BxHxCxD, start):
        q_pos = start + jnp.arange(C)
        scores = jnp.einsum("bhcd,bhsd->bhcs", q_BxHxCxD, k_BxHxTxD) * scale
        if slopes is not None:
            dist = jnp.minimum(k_pos[None, :] - q_pos[:, None], 0).astype(scores.dtype)
            scores = scores + slopes[None, :, None, None] * dist[None, None]
        scores = jnp.where(k_pos[None, :] <= q_pos[:, None], scores, -jnp.inf)
        return jnp.einsum("bhcs,bhsd->bhcd", jax.nn.softmax(scores, axis=-1), v_BxHxTxD)

    out = jax.lax.map(lambda args: one_block(*args), (q_blocks, jnp.arange(n_blocks) * C))
    return jnp.moveaxis(out, 0, 2).reshape(B, H, n_blocks * C, -1)[:, :, :T]
