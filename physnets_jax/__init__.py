"""physnets_jax: Flax NNX modules and optax transforms for physics-inspired transformer parts.

The model library lives at the top level (layers, ops, optim, model, losses, generate, export);
the trainer and its tools live in `physnets_jax.training`. This package imports physnets_core and
JAX, never torch. The model entry points below are imported lazily, so `import physnets_jax`
does not start JAX.
"""

from importlib import import_module

from physnets_core import ModelConfig, preset, preset_names

__all__ = ["ModelConfig", "preset", "preset_names", "Decoder", "build_model", "generate", "load_pretrained", "save_pretrained"]

_LAZY = {
    "load_pretrained": "physnets_jax.export",
    "save_pretrained": "physnets_jax.export",
    "Decoder": "physnets_jax.model",
    "build_model": "physnets_jax.model",
    "generate": "physnets_jax.generate",
    "cross_entropy": "physnets_jax.losses",
}


# Submodules reachable as attributes after a plain `import physnets_jax` (physnets_jax.data.load_tokenizer,
# physnets_jax.training.data, ...), imported on first use like the names above.
_SUBMODULES = ("config", "data", "train", "cli", "state", "training", "layers", "ops", "optim", "model", "losses",
               "generate", "export")


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'physnets_jax' has no attribute {name!r}")
