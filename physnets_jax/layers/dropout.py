"""Dropout with 16-bit random draws: nnx.Dropout's behaviour at a third of its mask cost on CPU.

nnx.Dropout draws one 32-bit word per element (jax.random.bernoulli); on XLA:CPU the threefry
words were ~10% of a ripplegpt / gpt / wave_gpt training step (docs/performance.md). Here each
32-bit word gives two 16-bit draws, so the keep probability is a multiple of 1/65536: the draw is
kept when it is below keep_threshold(p) = round(65536 p), and kept values are scaled by
65536 / keep_threshold(p), so the expectation is exactly the input's (for dropout 0.2 the keep
probability is 0.8000031 instead of 0.8). The torch backend uses torch.nn.Dropout: the two
backends' masks are different random streams either way, and parity is checked without dropout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

KEEP_RESOLUTION = 1 << 16  # draws are 16-bit: keep probabilities are multiples of 1 / 65536


def keep_threshold(keep_prob: float) -> int:
    """The number of the 65536 draw values that keep an element: round(65536 keep_prob), >= 1."""
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob={keep_prob} must be in (0, 1]")
    return max(1, min(KEEP_RESOLUTION, round(keep_prob * KEEP_RESOLUTION)))


def effective_keep_prob(keep_prob: float) -> float:
    """The keep probability keep_mask realises: keep_threshold(keep_prob) / 65536."""
    return keep_threshold(keep_prob) / KEEP_RESOLUTION


def keep_mask(key: jax.Array, keep_prob: float, shape: tuple[int, ...]) -> jax.Array:
    """Bool mask of `shape`, True (kept) with probability effective_keep_prob(keep_prob), from
    two 16-bit draws per 32-bit random word of `key`."""
    n = math.prod(shape)
    words = jax.random.bits(key, (-(-n // 2),), jnp.uint32)
    draws = jnp.concatenate([words >> 16, words & 0xFFFF])[:n].reshape(shape)
    return draws < jnp.uint32(keep_threshold(keep_prob))


class Dropout(nnx.Dropout):
    """nnx.Dropout (same constructor, stream, `deterministic` and broadcast_dims) with keep_mask's
    16-bit draws; (...) -> (...)."""

    def draw_keep_mask(self, shape: tuple[int, ...]) -> tuple[jax.Array | None, float]:
        """(the keep mask this layer would apply next to an input of `shape`, drawn from its stream,
        and the keep probability its kept values are divided by); (None, 1.0) when it is inactive.
        For hand-written backward passes that apply the dropout themselves and keep the bool mask."""
        if self.rate == 0.0 or self.deterministic:
            return None, 1.0
        if self.rngs is None or self.broadcast_dims or self.rate == 1.0:
            raise ValueError("draw_keep_mask needs a Dropout with rngs, no broadcast_dims and rate < 1")
        keep_prob = 1.0 - self.rate
        return keep_mask(self.rngs(), keep_prob, shape), effective_keep_prob(keep_prob)

    def __call__(self, inputs, *, deterministic: bool | None = None, rngs=None):
        deterministic = self.deterministic if deterministic is None else deterministic
        if self.rate == 0.0 or deterministic:
            return inputs
        if self.rate == 1.0:
            return jnp.zeros_like(inputs)
        stream = self.rngs if rngs is None else rngs
        if stream is None:
            raise ValueError("Dropout is active (deterministic=False, rate > 0) but has no rngs: pass rngs= to "
                             "its constructor or call")
        if isinstance(stream, nnx.Rngs):
            key = stream[self.rng_collection]()
        elif isinstance(stream, nnx.RngStream):
            key = stream()
        else:
            key = stream
        keep_prob = 1.0 - self.rate
        shared = {axis % inputs.ndim for axis in self.broadcast_dims}
        shape = tuple(1 if axis in shared else size for axis, size in enumerate(inputs.shape))
        keep = jnp.broadcast_to(keep_mask(key, keep_prob, shape), inputs.shape)
        scale = jnp.asarray(1.0 / effective_keep_prob(keep_prob), inputs.dtype)
        return jax.lax.select(keep, inputs * scale, jnp.zeros_like(inputs))
