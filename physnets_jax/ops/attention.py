"""Causal softmax attention with an optional ripple (linear distance decay) bias."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def ripple_bias(decay_H: jax.Array, q_pos_T: jax.Array, k_pos_S: jax.Array) -> jax.Array:
    """Ripple field |lambda_h| * min(j - i, 0) for query positions i and key positions j: (H, T, S)."""
    dist_TxS = jnp.minimum(k_pos_S[None, :] - q_pos_T[:, None], 0).astype(decay_H.dtype)
    return jnp.abs(decay_H)[:, None, None] * dist_TxS[None]


def _add_ripple_bias(scores_BxHxTxS, decay_H, q_pos_T, k_pos_S):
    # Written as an einsum with the batch axis present, so that the decays' gradient (a sum
    # over batch, queries and keys) becomes a matrix-vector product; the broadcast form's
    # reduction over the batch axis was a third of a ripplegpt layer's backward pass on CPU.
    dist_TxS = jnp.minimum(k_pos_S[None, :] - q_pos_T[:, None], 0).astype(decay_H.dtype)
    slopes_BxH = jnp.broadcast_to(jnp.abs(decay_H), scores_BxHxTxS.shape[:2])
    return scores_BxHxTxS + jnp.einsum("bh,ts->bhts", slopes_BxH, dist_TxS)


def causal_attention(
    q_BxHxTxD: jax.Array,
    k_BxHxSxD: jax.Array,
    v_BxHxSxD: jax.Array,
    *,
    q_pos_T: jax.Array | None = None,
    k_pos_S: jax.Array | None = None,
    kv_len: jax.Array | int | None = None,
    decay_H: jax.Array | None = None,
    weights_dropout: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """softmax(q k^T / sqrt(D) + ripple bias, causal mask) v, per head: (B, H, T, D).

    Positions default to 0..T-1 and 0..S-1. Key j is visible to query i when pos_j <= pos_i and
    j < kv_len (the filled part of a preallocated KV cache). With `decay_H` the per-head ripple
    bias |lambda_h| * (pos_j - pos_i) is added before the softmax.
    """
    T, S = q_BxHxTxD.shape[2], k_BxHxSxD.shape[2]
    q_pos_T = jnp.arange(T) if q_pos_T is None else q_pos_T
    k_pos_S = jnp.arange(S) if k_pos_S is None else k_pos_S
    scale = q_BxHxTxD.shape[-1] ** -0.5
    scores_BxHxTxS = jnp.einsum("bhtd,bhsd->bhts", q_BxHxTxD, k_BxHxSxD) * scale
    if decay_H is not None:
        scores_BxHxTxS = _add_ripple_bias(scores_BxHxTxS, decay_H, q_pos_T, k_pos_S)
    visible_TxS = k_pos_S[None, :] <= q_pos_T[:, None]
    if kv_len is not None:
        visible_TxS = visible_TxS & (jnp.arange(S) < kv_len)[None, :]
    scores_BxHxTxS = jnp.where(visible_TxS, scores_BxHxTxS, -jnp.inf)
    weights_BxHxTxS = jax.nn.softmax(scores_BxHxTxS, axis=-1)
    if weights_dropout is not None:
        weights_BxHxTxS = weights_dropout(weights_BxHxTxS)
    return jnp.einsum("bhts,bhsd->bhtd", weights_BxHxTxS, v_BxHxSxD)
