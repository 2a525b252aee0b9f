"""Feed-forward layers: MLP (gelu/relu, 4x) and GatedMLP (RippleMLP and SwiGLU)."""

from __future__ import annotations

import jax
from flax import nnx

from physnets_core.config import ModelConfig
from physnets_jax.layers.dense import dense

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
}


class MLP(nnx.Module):
    """fc2(act(fc1(x))) then dropout; hidden 4 n_embd by default: (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        hidden = cfg.mlp_width
        self.act_name = cfg.mlp
        self.fc1 = dense(cfg.n_embd, hidden, bias=cfg.mlp_bias, std=cfg.init_std, rngs=rngs)
        self.fc2 = dense(hidden, cfg.n_embd, bias=cfg.mlp_bias, std=cfg.residual_init_std, rngs=rngs)
        self.drop = nnx.Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        return self.drop(self.fc2(ACTIVATIONS[self.act_name](self.fc1(x_BxTxD))))


class GatedMLP(nnx.Module):
    """fc2(value * silu(gate)) with (value, gate) = halves of fc1(x), in that order; then dropout.

    mlp='ripple' is RippleGPT's RippleMLP (biases, reference width); mlp='swiglu' the LLaMA form.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        hidden = cfg.mlp_width
        self.fc1 = dense(cfg.n_embd, 2 * hidden, bias=cfg.mlp_bias, std=cfg.init_std, rngs=rngs)
        self.fc2 = dense(hidden, cfg.n_embd, bias=cfg.mlp_bias, std=cfg.residual_init_std, rngs=rngs)
        self.drop = nnx.Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        value, gate = jax.numpy.split(self.fc1(x_BxTxD), 2, axis=-1)
        return self.drop(self.fc2(value * jax.nn.silu(gate)))
