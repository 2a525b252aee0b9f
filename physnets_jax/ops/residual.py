"""Residual stream updates (pure functions): the lof310 orthogonal-parallel split.

Per token, over the feature axis D:
    proj     = <x, y> / max(||x||^2, 1e-8)
    orth     = y - proj * x                       (the part of y orthogonal to x)
    parallel = proj * x                           (variant "projection", default)
             = proj * y / sum_d(y)                (variant "reference", the notebook's numerics)
    x'       = x + alpha * orth + beta * parallel
"""

from __future__ import annotations

import functools

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
    """x + alpha (y - proj x) + beta parallel per token over the last axis: (..., D) -> (..., D).

    alpha and beta: () or (D,). Differentiable in all four, with a hand-written backward (below).
    """
    check_residual_args(jnp.shape(x), jnp.shape(y), jnp.shape(alpha), jnp.shape(beta), variant)
    return _update(x, y, jnp.asarray(alpha), jnp.asarray(beta), variant)


def _update_fwd(x, y, alpha, beta, variant):
    proj = projection_coefficient(x, y)
    orth = y - proj * x
    if variant == "projection":
        parallel = proj * x
    else:  # "reference": divides by sum_d(y) with no epsilon, as the published notebook does
        parallel = proj * y / jnp.sum(y, axis=-1, keepdims=True)
    return x + alpha * orth + beta * parallel, (x, y, alpha, beta)


def _sum_to(g, shape):
    """g (..., D) summed over its leading axes (and over D too for a () shape), reshaped to shape."""
    g = jnp.sum(g.reshape(-1, g.shape[-1]), axis=0)
    return g.reshape(shape) if g.shape == shape else jnp.sum(g).reshape(shape)


def _update_bwd(variant, residuals, g):
    """Gradients of the update for the cotangent g (..., D), per token:
    dproj = <g, d out / d proj>; d proj / dx = (y - 2 proj x [||x||^2 > floor]) / max(||x||^2, floor);
    d proj / dy = x / max(||x||^2, floor).

    Written by hand because, with the blocks unrolled (scan_layers=False), the training step with
    XLA's own backward of this update was up to 6% slower (ripplegpt+op-small, 8 x 256: 439 vs
    413 ms; docs/performance.md, fifth round).
    """
    x, y, alpha, beta = residuals
    dot = jnp.sum(x * y, axis=-1, keepdims=True)
    norm2 = jnp.sum(x * x, axis=-1, keepdims=True)
    inv_norm2 = 1.0 / jnp.maximum(norm2, NORM_FLOOR)
    proj = dot * inv_norm2
    alpha_g = alpha * g
    if variant == "projection":
        parallel = proj * x
        beta_g = beta * g
        dproj = jnp.sum((beta_g - alpha_g) * x, axis=-1, keepdims=True)
        dx = g + proj * (beta_g - alpha_g)
        dy = alpha_g
    else:
        inv_sum = 1.0 / jnp.sum(y, axis=-1, keepdims=True)
        parallel = proj * y * inv_sum
        beta_g = beta * g
        beta_g_y = jnp.sum(beta_g * y, axis=-1, keepdims=True)
        dproj = beta_g_y * inv_sum - jnp.sum(alpha_g * x, axis=-1, keepdims=True)
        dx = g - proj * alpha_g
        dy = alpha_g + proj * inv_sum * (beta_g - beta_g_y * inv_sum)
    above_floor = (norm2 > NORM_FLOOR).astype(x.dtype)
    dscaled = dproj * inv_norm2
    dx = dx + dscaled * (y - 2.0 * above_floor * proj * x)
    dy = dy + dscaled * x
    dalpha = _sum_to(g * (y - proj * x), jnp.shape(alpha)).astype(alpha.dtype)
    dbeta = _sum_to(g * parallel, jnp.shape(beta)).astype(beta.dtype)
    return dx.astype(x.dtype), dy.astype(y.dtype), dalpha, dbeta


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _update(x, y, alpha, beta, variant):
    return _update_fwd(x, y, alpha, beta, variant)[0]


_update.defvjp(_update_fwd, _update_bwd)
