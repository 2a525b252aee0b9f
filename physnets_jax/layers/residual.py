"""Residual updates of the stream: `add` (x + y) and lof310's `orthogonal_parallel`."""

from __future__ import annotations

import jax
from flax import nnx

from physnets_core.checks import ALPHA_INIT, BETA_INIT
from physnets_core.config import ModelConfig
from physnets_jax.ops.residual import orthogonal_parallel_update


class AddResidual(nnx.Module):
    """x + y: stream (B, T, D) plus sublayer output (B, T, D). No parameters."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        del cfg, layer_idx, rngs

    def __call__(self, x_BxTxD: jax.Array, y_BxTxD: jax.Array) -> jax.Array:
        return x_BxTxD + y_BxTxD


class OrthogonalParallelResidual(nnx.Module):
    """x + alpha (y - proj x) + beta parallel per token: (B, T, D), (B, T, D) -> (B, T, D).

    proj = <x, y> / max(||x||^2, 1e-8); parallel = proj x ("projection", default) or
    proj y / sum_d(y) ("reference", the notebook's numerics), chosen by cfg.residual_variant.
    alpha, beta: per-feature vectors (n_embd,), init N(0.25, 0.5) and N(0.15, 0.25), unconstrained.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        del layer_idx
        self.variant = cfg.residual_variant
        dim = cfg.n_embd
        alpha_mean, alpha_std = ALPHA_INIT
        beta_mean, beta_std = BETA_INIT
        self.alpha = nnx.Param(alpha_mean + alpha_std * jax.random.normal(rngs.params(), (dim,)))
        self.beta = nnx.Param(beta_mean + beta_std * jax.random.normal(rngs.params(), (dim,)))

    def __call__(self, x_BxTxD: jax.Array, y_BxTxD: jax.Array) -> jax.Array:
        return orthogonal_parallel_update(
            x_BxTxD, y_BxTxD, self.alpha[...], self.beta[...], self.variant
        )
