"""Linear layers with the GPT initialisation (normal kernels, zero biases)."""

from __future__ import annotations

from flax import nnx


def dense(
    in_features: int, out_features: int, *, bias: bool, std: float, rngs: nnx.Rngs
) -> nnx.Linear:
    """nnx.Linear (in -> out) with kernel ~ N(0, std) and zero bias."""
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=bias,
        kernel_init=nnx.initializers.normal(stddev=std),
        bias_init=nnx.initializers.zeros_init(),
        rngs=rngs,
    )

