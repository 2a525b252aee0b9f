"""physnets_jax: Flax NNX modules and optax transforms for physics-inspired transformer parts.

`physnets_jax.config` is framework-free; everything else imports JAX lazily, so importing the
config (as the torch backend does) does not start JAX.
"""

from importlib import import_module

from physnets_jax.config import ModelConfig, preset, preset_names

__all__ = ["ModelConfig", "preset", "preset_names", "Decoder", "build_model", "generate", "load_pretrained", "save_pretrained"]

_LAZY = {
    "load_pretrained": "physnets_jax.export",
    "save_pretrained": "physnets_jax.export",
    "Decoder": "physnets_jax.model",
    "build_model": "physnets_jax.model",
    "generate": "physnets_jax.generate",
    "cross_entropy": "physnets_jax.losses",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'physnets_jax' has no attribute {name!r}")
