"""The framework-free ModelConfig and presets, shared with physnets_jax (one source of truth)."""

from physnets_jax.config import *  # noqa: F401,F403
from physnets_jax.config import ModelConfig, preset, preset_names, preset_sizes, register_preset  # noqa: F401
