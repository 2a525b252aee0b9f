"""Normalisation layers: LayerNorm (with shift) and the GateLoop-style RMSNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from physnets_core.config import ModelConfig


class RMSNorm(nnx.Module):
    """x / max(||x||_2, 1e-12) * sqrt(dim) * gamma over the last axis: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.gamma = nnx.Param(jnp.ones((dim,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
        return x / jnp.maximum(norm, 1e-12) * (self.dim**0.5) * self.gamma[...]


def make_norm(cfg: ModelConfig, dim: int | None = None, *, rngs: nnx.Rngs) -> nnx.Module:
    """The config's norm over `dim` features (default n_embd)."""
    dim = cfg.n_embd if dim is None else dim
    if cfg.norm == "rmsnorm":
        return RMSNorm(dim)
    return nnx.LayerNorm(dim, epsilon=cfg.norm_eps, use_fast_variance=False, rngs=rngs)
