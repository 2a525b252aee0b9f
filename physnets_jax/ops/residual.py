"""Residual stream updates (pure functions): the lof310 orthogonal-parallel split.

Per token, over the feature axis D:
    proj     = <x, y> / max(||x||^2, 1e-8)
    orth     = y - proj * x                       (the part of y orthogonal to x)
    parallel = proj * x                           (variant "projection", default)
             = proj * y / sum_d(y)                (variant "reference", the notebook's numerics)
    x'       = x + alpha * orth + beta * parallel
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from physnets_core.checks import NORM_FLOOR, check_residual_args


def projection_coefficient(x: jax.Array, y: jax.Array) -> jax.Array:
    """<x, y> / max(||x||^2, 1e-8) over the last axis: (..., D), (..., D) -> (..., 1)."""
    dot = jnp.sum(x * y, axis=-1, keepdims=True)
    norm2 = jnp.sum(x * x, axis=-1, keepdims=True)
    return dot / jnp.maximum(norm2, NORM_FLOOR)


def orthogonal_parallel_update(
    x: jax.Array, y: jax.Array, alpha: jax.Array, beta: jax.Array, variant: str = "projection"
) -> jax.Array:
    """x + alpha (y - proj x) + beta parallel per token over the last axis: (..., D) -> (..., D)."""
    check_residual_args(jnp.shape(x), jnp.shape(y), jnp.shape(alpha), jnp.shape(beta), variant)
    proj = projection_coefficient(x, y)
    orth = y - proj * x
    if variant == "projection":
        parallel = proj * x
    else:  # "reference": divides by sum_d(y) with no epsilon, as the published notebook does
        parallel = proj * y / jnp.sum(y, axis=-1, keepdims=True)
    return x + alpha * orth + beta * parallel
