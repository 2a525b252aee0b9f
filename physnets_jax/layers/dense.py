"""Linear layers with the GPT initialisation (normal kernels, zero biases)."""

from __future__ import annotations

import jax
from flax import nnx


class Linear(nnx.Linear):
    """nnx.Linear over the last axis, computed as one 2-D matmul: (..., in) -> (..., out).

    The leading axes are merged into one row axis first. The kernel's gradient is then x^T dy
    with a single contracting axis, which XLA on CPU runs as a plain matmul; contracting over
    (batch, seq) instead made it transpose dy (and recompute whatever elementwise op produced
    dy) into a copy first: ~40% of a dense layer's backward time.
    """

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        if inputs.ndim <= 2:
            return super().__call__(inputs, out_sharding=out_sharding)
        flat = super().__call__(inputs.reshape(-1, inputs.shape[-1]), out_sharding=out_sharding)
        return flat.reshape(inputs.shape[:-1] + (flat.shape[-1],))


def matmul_last(x: jax.Array, kernel_IxO: jax.Array) -> jax.Array:
    """x @ kernel over x's last axis as one 2-D matmul (see Linear): (..., I) -> (..., O)."""
    if x.ndim <= 2:
        return x @ kernel_IxO
    return (x.reshape(-1, x.shape[-1]) @ kernel_IxO).reshape(x.shape[:-1] + (kernel_IxO.shape[-1],))


def dense(
    in_features: int, out_features: int, *, bias: bool, std: float, rngs: nnx.Rngs
) -> Linear:
    """Linear (in -> out) with kernel ~ N(0, std) and zero bias."""
    return Linear(
        in_features,
        out_features,
        use_bias=bias,
        kernel_init=nnx.initializers.normal(stddev=std),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )
