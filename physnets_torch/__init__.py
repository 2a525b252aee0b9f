"""physnets_torch: the PyTorch mirror of physnets_jax (same classes, parameter names, numerics)."""

from importlib import import_module

from physnets_core import ModelConfig, preset, preset_names

__all__ = ["ModelConfig", "preset", "preset_names", "Decoder", "build_model", "generate", "load_pretrained", "save_pretrained", "JaxModule", "jax_to_torch"]

_LAZY = {
    "load_pretrained": "physnets_torch.export",
    "save_pretrained": "physnets_torch.export",
    "Decoder": "physnets_torch.model",
    "build_model": "physnets_torch.model",
    "generate": "physnets_torch.generate",
    "cross_entropy": "physnets_torch.losses",
    "JaxModule": "physnets_torch.bridge",
    "jax_to_torch": "physnets_torch.bridge",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'physnets_torch' has no attribute {name!r}")
