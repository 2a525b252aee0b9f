"""Language-model losses on logits (B, T, V) and integer targets (B, T)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (natural log) over all positions: scalar."""
    if logits_BxTxV.shape[:-1] != targets_BxT.shape:
        raise ValueError(
            f"logits shape {logits_BxTxV.shape} does not match targets shape {targets_BxT.shape} "
            "(logits must be targets' shape plus a vocabulary axis)"
        )
    losses = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
    return jnp.mean(losses)
