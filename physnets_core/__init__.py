"""physnets_core: what both backends share, with no deep-learning framework (numpy + stdlib).

- `config`: ModelConfig, its option groups (RippleConfig, WaveConfig, GateLoopConfig), the slot
  choices (`SLOTS`), presets and typed `--set` parsing;
- `checks`: argument checks and constants both backends' ops and layers call;
- `naming`: the JAX <-> torch parameter naming and layout rules of conversion;
- `export_format`: the cross-backend export folder (config.json + model.safetensors).
"""

from physnets_core.config import (
    GateLoopConfig,
    ModelConfig,
    RippleConfig,
    WaveConfig,
    preset,
    preset_names,
    preset_sizes,
    register_preset,
)

__all__ = [
    "ModelConfig", "RippleConfig", "WaveConfig", "GateLoopConfig",
    "preset", "preset_names", "preset_sizes", "register_preset",
]
