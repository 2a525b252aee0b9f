"""The composable decoder-only LM: embedding -> n_layer x Block -> final norm -> head."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from physnets_core.config import ModelConfig, preset
from physnets_jax import layers
from physnets_jax.layers.norm import make_norm


class Block(nnx.Module):
    """Pre-norm: x = res1(x, mixer(norm1(x))); x = res2(x, mlp(norm2(x))). Post-norm applies
    the norm after each residual instead: x = norm1(res1(x, mixer(x)))."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        self.prenorm = cfg.prenorm
        self.norm1 = make_norm(cfg, rngs=rngs)
        self.mixer = layers.MIXERS[cfg.mixer](cfg, layer_idx, rngs=rngs)
        self.res1 = layers.RESIDUALS[cfg.residual](cfg, layer_idx, rngs=rngs)
        self.norm2 = make_norm(cfg, rngs=rngs)
        self.mlp = layers.MLPS[cfg.mlp](cfg, layer_idx, rngs=rngs)
        self.res2 = layers.RESIDUALS[cfg.residual](cfg, layer_idx, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array, cache=None):
        """(B, T, D) -> (B, T, D); with a mixer cache returns (y, new_cache)."""
        mixer_in = self.norm1(x_BxTxD) if self.prenorm else x_BxTxD
        mixed = self.mixer(mixer_in) if cache is None else self.mixer(mixer_in, cache=cache)
        if cache is not None:
            mixed, cache = mixed
        x = self.res1(x_BxTxD, mixed)
        if not self.prenorm:
            x = self.norm1(x)
        mlp_in = self.norm2(x) if self.prenorm else x
        x = self.res2(x, self.mlp(mlp_in))
        if not self.prenorm:
            x = self.norm2(x)
        return x if cache is None else (x, cache)


class Decoder(nnx.Module):
    """Decoder-only LM: tokens (B, T) int -> logits (B, T, vocab_size)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embedding = layers.EMBEDDINGS[cfg.embedding](cfg, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, i, rngs=rngs) for i in range(cfg.n_layer)])
        self.norm_f = make_norm(cfg, rngs=rngs) if cfg.prenorm and cfg.final_norm else None
        self.head = None if cfg.tie_embeddings else layers.HEADS[cfg.head](cfg, rngs=rngs)

    def init_cache(self, batch: int, max_len: int, dtype=jnp.float32, device=None) -> dict[str, Any]:
        """Empty decoding cache for `max_len` positions: {'pos': int32, 'layers': [per block]}."""
        if not self.cfg.extrapolates and max_len > self.cfg.block_size:
            raise ValueError(
                f"max_len={max_len} exceeds block_size={self.cfg.block_size}: "
                f"embedding={self.cfg.embedding!r} has no positions beyond block_size"
            )
        return {
            "pos": jnp.zeros((), jnp.int32, device=device),
            "layers": [b.mixer.init_cache(batch, max_len, dtype, device) for b in self.blocks],
        }

    def __call__(self, tokens_BxT: jax.Array, cache: dict[str, Any] | None = None):
        """Logits (B, T, vocab); with a cache, (logits, new_cache) for tokens after cache['pos']."""
        check_tokens(tokens_BxT, self.cfg, None if cache is None else cache["pos"])
        start = 0 if cache is None else cache["pos"]
        x = self.embedding(tokens_BxT, start)
        new_layers = []
        if cache is None and self.cfg.scan_layers and len(self.blocks) > 1:
            x = self._scan_blocks(x)
        else:
            for i, block in enumerate(self.blocks):
                if cache is None:
                    x = block(x)
                else:
                    x, layer_cache = block(x, cache=cache["layers"][i])
                    new_layers.append(layer_cache)
        if self.norm_f is not None:
            x = self.norm_f(x)
        logits = self.embedding.attend(x) if self.head is None else self.head(x)
        if cache is None:
            return logits
        return logits, {"pos": cache["pos"] + tokens_BxT.shape[1], "layers": new_layers}


    def _scan_blocks(self, x_BxTxD: jax.Array) -> jax.Array:
        """Run identical blocks with jax.lax.scan over their stacked states (same result as the
        loop; cfg.scan_layers=True). Compile time then stays flat in depth, but each step stacks
        the blocks' weights, zero-fills the stacked buffers of the residuals the backward reads
        and unstacks the weight gradients: 3-15% of a seed-size training step on CPU, so the
        unrolled loop is the default. Blocks that differ (hybrid mixers) fall back to the loop."""
        graphdef, _ = nnx.split(self.blocks[0])
        states = [nnx.split(block)[1] for block in self.blocks]
        if any(nnx.split(block)[0] != graphdef for block in self.blocks[1:]):
            for block in self.blocks:
                x_BxTxD = block(x_BxTxD)
            return x_BxTxD
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)

        def body(h, state):
            block = nnx.merge(graphdef, state)
            return block(h), nnx.state(block)

        x_BxTxD, new_states = jax.lax.scan(body, x_BxTxD, stacked)
        if _draws_random_numbers(self.blocks[0]):  # active dropout advanced its RNG counters
            rng_states = nnx.filter_state(new_states, nnx.RngState)
            for i, block in enumerate(self.blocks):
                nnx.update(block, jax.tree.map(lambda s, i=i: s[i], rng_states))
        return x_BxTxD


def _draws_random_numbers(module: nnx.Module) -> bool:
    return any(
        isinstance(m, nnx.Dropout) and not m.deterministic and m.rate > 0
        for _, m in nnx.iter_graph(module)
    )


def check_tokens(tokens_BxT, cfg: ModelConfig, start_pos=None) -> None:
    """Raise ValueError for token arrays of the wrong rank, dtype, range or length."""
    shape = getattr(tokens_BxT, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"tokens must have shape (batch, seq), got shape {shape}")
    if not jnp.issubdtype(tokens_BxT.dtype, jnp.integer):
        raise ValueError(f"tokens must be an integer array, got dtype {tokens_BxT.dtype}")
    if shape[1] == 0:
        raise ValueError(f"tokens must have at least one position, got shape {tuple(shape)}")
    if not cfg.extrapolates:
        start = 0 if start_pos is None or isinstance(start_pos, jax.core.Tracer) else int(start_pos)
        if start + shape[1] > cfg.block_size:
            raise ValueError(
                f"sequence of {start + shape[1]} positions exceeds block_size={cfg.block_size}; "
                f"embedding={cfg.embedding!r} (learned absolute positions) cannot extrapolate"
            )
    if not isinstance(tokens_BxT, jax.core.Tracer):
        values = np.asarray(tokens_BxT)
        low, high = values.min(), values.max()
        if low < 0 or high >= cfg.vocab_size:
            raise ValueError(
                f"token ids must be in [0, vocab_size={cfg.vocab_size}), got min {low} and max {high}"
            )


def build_model(cfg: ModelConfig | str, *, seed: int = 0, **overrides) -> Decoder:
    """A Decoder from a ModelConfig or a preset name (with field overrides), seeded."""
    if isinstance(cfg, str):
        cfg = preset(cfg, **overrides)
    elif overrides:
        cfg = cfg.replace(**overrides)
    return Decoder(cfg, rngs=nnx.Rngs(seed))


def count_params(model: nnx.Module) -> int:
    """Total number of parameter entries."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def cast_params(model: nnx.Module, dtype) -> nnx.Module:
    """Cast every floating-point parameter of `model` to `dtype` in place; returns the model."""
    state = nnx.state(model, nnx.Param)
    cast = jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, state
    )
    nnx.update(model, cast)
    return model
