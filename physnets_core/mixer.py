"""The mixer contract: what every token mixer (the `mixer` slot) implements in both backends.

A mixer is built as ``MIXERS[name](cfg, layer_idx, *, rngs)`` (JAX) or ``MIXERS[name](cfg,
layer_idx)`` (torch) and then satisfies `Mixer`:

- ``mixer(x_BxTxD)`` -> y_BxTxD: the whole sequence at once (training, scoring). Causal: output t
  depends on inputs 0..t only.
- ``mixer.init_cache(batch, max_len, dtype, device=None)`` -> cache: an empty decoding state for
  up to ``max_len`` positions (recurrent mixers ignore max_len: their state has a fixed size).
  A dict of arrays (nested dicts allowed), the same keys and shapes in both backends; attention
  caches carry their write position as an int32 scalar ``'pos'``.
- ``mixer(x_BxTxD, cache=cache)`` -> (y_BxTxD, new_cache): the next T positions given the state
  after the earlier ones. Running a sequence in pieces with the cache equals one pass over it.

`tests/test_mixer_contract.py` checks these rules for every registered mixer and its options, and
float64 cross-backend parity of outputs and gradients.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Mixer(Protocol):
    """Structural type of a token mixer (see the module docstring for the rules)."""

    def init_cache(self, batch: int, max_len: int, dtype: Any, device: Any = None) -> dict[str, Any]:
        """Empty decoding state for `batch` sequences of up to `max_len` positions."""
        ...

    def __call__(self, x_BxTxD: Any, cache: dict[str, Any] | None = None) -> Any:
        """y (B, T, D) without a cache; (y, new_cache) with one."""
        ...
