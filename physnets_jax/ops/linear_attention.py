"""Causal kernel (linear) attention: chunked form (memory linear in T) and the quadratic reference.

Given non-negative feature maps q' = phi(q), k' = phi(k) of shape (B, H, T, F) and values
(B, H, T, D), causal linear attention is

    num_t = sum_{s <= t} (q'_t . k'_s) v_s          den_t = sum_{s <= t} q'_t . k'_s
    out_t = num_t / (den_t + eps)    (normalize=True; Wave-Native GPT's pure_wave linear mode)
    out_t = num_t                    (normalize=False; the identity kernel)

The seed computes it as q'_t . cumsum_s(k'_s v_s^T), which materialises a (B, H, T, F, D)
tensor. Here T is split into chunks of C positions: inside a chunk the (C, C) masked score
matrix is used (quadratic, exact), across chunks the running state S = sum k' v^T (F, D) and
z = sum k' (F) is passed. Only chunk-boundary states (B, H, T/C, F, D) are stored, so memory is
O(T (C + F D / C)) rather than O(T F D), and no (B, H, T, F, D) tensor is ever formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def feature_map(x: jax.Array, kernel: str) -> jax.Array:
    """Kernel feature map phi(x), elementwise: elu1 -> elu(x) + 1, sigmoid, exp, linear/identity -> x."""
    if kernel == "elu1":
        return jax.nn.elu(x) + 1.0
    if kernel == "sigmoid":
        return jax.nn.sigmoid(x)
    if kernel == "exp":
        return jnp.exp(x)
    if kernel in ("linear", "identity"):
        return x
    raise ValueError(f"kernel={kernel!r} is not a known kernel; valid choices: elu1, sigmoid, exp, linear, identity")


def causal_linear_attention_quadratic(
    q_BxHxTxF: jax.Array, k_BxHxTxF: jax.Array, v_BxHxTxD: jax.Array, *, normalize: bool = True,
    eps: float = 1e-6,
) -> jax.Array:
    """Reference O(T^2) form: masked (q' k'^T) v, divided by its row sums + eps: (B, H, T, D)."""
    T = q_BxHxTxF.shape[2]
    scores = jnp.einsum("bhtf,bhsf->bhts", q_BxHxTxF, k_BxHxTxF)
    scores = jnp.where(jnp.tril(jnp.ones((T, T), dtype=bool)), scores, 0.0)
    num = jnp.einsum("bhts,bhsd->bhtd", scores, v_BxHxTxD)
    if not normalize:
        return num
    return num / (jnp.sum(scores, axis=-1, keepdims=True) + eps)


def causal_linear_attention(
    q_BxHxTxF: jax.Array,
    k_BxHxTxF: jax.Array,
    v_BxHxTxD: jax.Array,
    *,
    normalize: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 64,
    state: tuple[jax.Array, jax.Array] | None = None,
    return_state: bool = False,
):
    """Chunked causal linear attention (see module doc): (B, H, T, D), or (out, (S, z)).

    `state` = (S (B, H, F, D), z (B, H, F)) carries keys/values seen before these T positions
    (a decoding cache); with return_state the state after the last position is returned too.
    """
    B, H, T, F = q_BxHxTxF.shape
    D = v_BxHxTxD.shape[-1]
    if k_BxHxTxF.shape != (B, H, T, F) or v_BxHxTxD.shape[:3] != (B, H, T):
        raise ValueError(
            f"q {q_BxHxTxF.shape}, k {k_BxHxTxF.shape}, v {v_BxHxTxD.shape}: q and k must share "
            "(B, H, T, F) and v must be (B, H, T, D)"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:
        widths = ((0, 0), (0, 0), (0, pad), (0, 0))
        q_BxHxTxF, k_BxHxTxF, v_BxHxTxD = (jnp.pad(a, widths) for a in (q_BxHxTxF, k_BxHxTxF, v_BxHxTxD))
    N = (T + pad) // C
    q = q_BxHxTxF.reshape(B, H, N, C, F)
    k = k_BxHxTxF.reshape(B, H, N, C, F)
    v = v_BxHxTxD.reshape(B, H, N, C, D)

    # intra-chunk: exact masked scores (C, C)
    scores = jnp.einsum("bhncf,bhnsf->bhncs", q, k)
    scores = jnp.where(jnp.tril(jnp.ones((C, C), dtype=bool)), scores, 0.0)
    num = jnp.einsum("bhncs,bhnsd->bhncd", scores, v)

    # inter-chunk: exclusive prefix sums of the per-chunk states
    kv = jnp.einsum("bhnsf,bhnsd->bhnfd", k, v)  # (B, H, N, F, D)
    S_incl = jnp.cumsum(kv, axis=2)
    S_excl = jnp.concatenate([jnp.zeros_like(S_incl[:, :, :1]), S_incl[:, :, :-1]], axis=2)
    if state is not None:
        S_excl = S_excl + state[0][:, :, None]
    num = num + jnp.einsum("bhncf,bhnfd->bhncd", q, S_excl)
    if normalize or return_state:
        ks = jnp.sum(k, axis=3)  # (B, H, N, F)
        z_incl = jnp.cumsum(ks, axis=2)
        z_excl = jnp.concatenate([jnp.zeros_like(z_incl[:, :, :1]), z_incl[:, :, :-1]], axis=2)
        if state is not None:
            z_excl = z_excl + state[1][:, :, None]
    if normalize:
        den = jnp.sum(scores, axis=-1) + jnp.einsum("bhncf,bhnf->bhnc", q, z_excl)
        out = num / (den[..., None] + eps)
    else:
        out = num
    out = out.reshape(B, H, N * C, D)[:, :, :T]
    if not return_state:
        return out
    S_last = S_excl[:, :, -1] + kv[:, :, -1]
    z_last = z_excl[:, :, -1] + ks[:, :, -1]
    return out, (S_last, z_last)
