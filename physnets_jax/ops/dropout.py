"""Applying a dropout keep mask, shared by the hand-written backward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def apply_keep_mask(x: jax.Array, keep: jax.Array | None, keep_prob: float) -> jax.Array:
    """x with the entries where `keep` is False set to 0 and the others divided by keep_prob
    (a Dropout layer's form); x itself when keep is None. keep: bool, x's shape."""
    if keep is None:
        return x
    return jax.lax.select(keep, x / keep_prob, jnp.zeros_like(x))
