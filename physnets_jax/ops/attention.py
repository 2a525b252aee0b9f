"""Causal softmax attention with an optional ripple (linear distance decay) bias."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from physnets_jax.ops.dropout import apply_keep_mask


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


def causal_self_attention(
    q_BxHxTxD: jax.Array,
    k_BxHxTxD: jax.Array,
    v_BxHxTxD: jax.Array,
    *,
    decay_H: jax.Array | None = None,
    keep_BxHxTxT: jax.Array | None = None,
    keep_prob: float = 1.0,
) -> jax.Array:
    """causal_attention over one whole sequence (positions 0..T-1, no cache), with a hand-written
    backward pass: (B, H, T, D).

    Same forward as causal_attention. With `keep_BxHxTxT` (bool) the attention weights are dropped
    out as a Dropout layer does: kept entries divided by `keep_prob`, the others 0 (the mask is drawn
    by the caller: physnets_jax.layers.dropout.keep_mask). The backward recomputes the attention weights from
    q, k and the saved row log-sum-exp (B, H, T) instead of keeping the (B, H, T, T) weights and
    the softmax's intermediates: under jax.grad of a layer scan, XLA on CPU stacked all of them per
    layer into fresh zero-filled buffers, which cost more than the extra q k^T matmul. Only the
    boolean keep mask is kept from the forward. Both passes run over the query tiles of
    `query_tiles(T)`, each against the keys it can see, so most of the masked half of the (T, T)
    scores is never computed.
    """
    T = q_BxHxTxD.shape[2]
    if k_BxHxTxD.shape[2] != T or v_BxHxTxD.shape[2] != T:
        raise ValueError(
            f"q {q_BxHxTxD.shape}, k {k_BxHxTxD.shape}, v {v_BxHxTxD.shape}: self-attention needs "
            "one sequence length for queries, keys and values"
        )
    B, H = q_BxHxTxD.shape[:2]
    if keep_BxHxTxT is not None and (keep_BxHxTxT.shape != (B, H, T, T) or keep_BxHxTxT.dtype != jnp.bool_):
        raise ValueError(f"keep mask {keep_BxHxTxT.dtype}{list(keep_BxHxTxT.shape)}: must be bool of shape "
                         f"(B, H, T, T) = {(B, H, T, T)}")
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob={keep_prob} must be in (0, 1]")
    with_decay = decay_H is not None
    slopes_H = jnp.abs(decay_H) if with_decay else jnp.zeros((), q_BxHxTxD.dtype)
    return _self_attention(q_BxHxTxD, k_BxHxTxD, v_BxHxTxD, slopes_H, keep_BxHxTxT, with_decay, float(keep_prob))


# Query rows per tile of the hand-written attention. Tile i (queries iC..(i+1)C) computes scores
# against keys 0..(i+1)C only, so the (T, T) work above the diagonal is skipped except inside the
# diagonal tiles: with n tiles, (n + 1) / (2n) of the dense work. Measured on CPU (forward +
# backward of one layer, 6 heads of 64, batch x T = 2048): T=256, 4 tiles: 14.4 vs 18.7 ms dense;
# T=1024, 16 tiles: 41 vs 73 ms; T=4096, 16 tiles: 300 vs 892 ms. At most 16 tiles, since every
# tile is its own set of ops in the compiled step.
MIN_QUERY_TILE = 64
MAX_QUERY_TILES = 16


def query_tiles(T: int) -> list[tuple[int, int]]:
    """The (start, stop) query rows of each tile causal_self_attention computes separately."""
    size = max(MIN_QUERY_TILE, -(-T // MAX_QUERY_TILES))
    return [(start, min(start + size, T)) for start in range(0, T, size)]


def _tile_scores(q_tile, k_visible, slopes_H, with_decay, start):
    """Scaled, ripple-biased scores (B, H, C, S) of the queries start..start+C against keys 0..S,
    the causal mask (C, S) and the distance min(j - i, 0) (C, S)."""
    C, S = q_tile.shape[2], k_visible.shape[2]
    q_pos, k_pos = start + jnp.arange(C), jnp.arange(S)
    scores = jnp.einsum("bhtd,bhsd->bhts", q_tile, k_visible) * q_tile.shape[-1] ** -0.5
    dist_CxS = jnp.minimum(k_pos[None, :] - q_pos[:, None], 0).astype(scores.dtype)
    if with_decay:
        scores = scores + slopes_H.astype(scores.dtype)[None, :, None, None] * dist_CxS
    return scores, k_pos[None, :] <= q_pos[:, None], dist_CxS


def _tile_keep(keep, start, stop):
    return None if keep is None else keep[:, :, start:stop, :stop]


def _self_attention_fwd(q, k, v, slopes_H, keep, with_decay, keep_prob):
    outs, lses = [], []
    for start, stop in query_tiles(q.shape[2]):
        scores, visible, _ = _tile_scores(q[:, :, start:stop], k[:, :, :stop], slopes_H, with_decay, start)
        scores = jnp.where(visible, scores, -jnp.inf)
        row_max = jnp.max(scores, axis=-1, keepdims=True)
        unnormalised = jnp.exp(scores - row_max)
        row_sum = jnp.sum(unnormalised, axis=-1, keepdims=True)
        weights = apply_keep_mask(unnormalised / row_sum, _tile_keep(keep, start, stop), keep_prob)
        outs.append(jnp.einsum("bhts,bhsd->bhtd", weights, v[:, :, :stop]))
        lses.append((row_max + jnp.log(row_sum))[..., 0])
    out = jnp.concatenate(outs, axis=2)
    return out, (q, k, v, slopes_H, keep, out, jnp.concatenate(lses, axis=2))


def _self_attention_bwd(with_decay, keep_prob, residuals, dout):
    q, k, v, slopes_H, keep, out, lse = residuals
    # The barrier keeps XLA from merging the recomputed scores with the forward's identical ones
    # when forward and backward share one program (unrolled layers), which would keep forward
    # values alive into the backward, the memory the recompute exists to save (ripplegpt-small,
    # 8 x 256: 488 -> 462 MB of temporaries with it).
    q, k = jax.lax.optimization_barrier((q, k))
    scale = q.shape[-1] ** -0.5
    # sum_s weights * dweights = sum_d dout * out holds with dropout too (out = dropped weights v)
    row_dot = jnp.sum(dout * out, axis=-1, keepdims=True)
    dq_tiles, dk, dv = [], jnp.zeros_like(k), jnp.zeros_like(v)
    dslopes = jnp.zeros(slopes_H.shape, jnp.result_type(q.dtype, slopes_H.dtype))
    for start, stop in query_tiles(q.shape[2]):
        q_tile, dout_tile, tile_keep = q[:, :, start:stop], dout[:, :, start:stop], _tile_keep(keep, start, stop)
        scores, visible, dist_CxS = _tile_scores(q_tile, k[:, :, :stop], slopes_H, with_decay, start)
        weights = jnp.exp(jnp.where(visible, scores - lse[:, :, start:stop, None], -jnp.inf))
        dv = dv.at[:, :, :stop].add(
            jnp.einsum("bhts,bhtd->bhsd", apply_keep_mask(weights, tile_keep, keep_prob), dout_tile))
        dweights = apply_keep_mask(jnp.einsum("bhtd,bhsd->bhts", dout_tile, v[:, :, :stop]), tile_keep, keep_prob)
        dscores = weights * (dweights - row_dot[:, :, start:stop])
        dq_tiles.append(jnp.einsum("bhts,bhsd->bhtd", dscores, k[:, :, :stop]) * scale)
        dk = dk.at[:, :, :stop].add(jnp.einsum("bhts,bhtd->bhsd", dscores, q_tile) * scale)
        if with_decay:
            B, H, C, S = dscores.shape
            # a matrix-vector product over the flattened (t, s) axis, then a sum over the batch
            dslopes = dslopes + jnp.sum(dscores.reshape(B, H, C * S) @ dist_CxS.reshape(C * S), axis=0)
    return jnp.concatenate(dq_tiles, axis=2), dk, dv, dslopes.astype(slopes_H.dtype), None


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _self_attention(q, k, v, slopes_H, keep, with_decay, keep_prob):
    return _self_attention_fwd(q, k, v, slopes_H, keep, with_decay, keep_prob)[0]


_self_attention.defvjp(_self_attention_fwd, _self_attention_bwd)
