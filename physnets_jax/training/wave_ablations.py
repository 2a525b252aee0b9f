"""The Wave-Native GPT seed's ablation suite (spectral_gpt/wave_experiments.py), framework-free.

Each entry names the preset and config overrides, the optimizer ("rgd" or "adamw"), the loss
("qfe" or "ce") and the seed's hyper-parameters (lr with 500 warmup steps then cosine decay,
weight decay 0.01, RGD strength 0.3 and warmup 500, QFE threshold 0.01). `make_ablation(name)`
returns them; a trainer builds `physnets_jax.optim.rgd(lr, resonance_strength=..., warmup_steps=...)`
or `optax.adamw(lr, weight_decay=0.01)` and `physnets_jax.losses.qfe_loss(..., lambda_coherence=...)`
or `cross_entropy` from it.
"""

from __future__ import annotations

from typing import Any

_PURE = {"wave.attention": "pure", "wave.mode": "quadratic"}

ABLATIONS: dict[str, dict[str, Any]] = {
    # the seed's "standard_transformer" (its true control)
    "classic": dict(preset="classic", overrides={}, optimizer="adamw", loss="ce", lr=6e-4, dropout=0.1),
    # the seed's "wave_baseline"
    "baseline": dict(preset="wave_gpt", overrides={}, optimizer="adamw", loss="ce", lr=6e-4, dropout=0.1),
    "rgd_only": dict(preset="wave_gpt", overrides={}, optimizer="rgd", loss="ce", lr=1e-3, dropout=0.1),
    "full_physics": dict(preset="wave_gpt", overrides={}, optimizer="rgd", loss="qfe", lr=1e-3, dropout=0.0,
                         qfe_lambda=0.1),
    "qfe_only": dict(preset="wave_gpt", overrides={}, optimizer="adamw", loss="qfe", lr=6e-4, dropout=0.1),
    "pure_wave": dict(preset="wave_gpt", overrides={**_PURE, "wave.kernel": "elu1"}, optimizer="rgd", loss="qfe",
                      lr=1e-3, dropout=0.1),
    "pure_wave_linear": dict(preset="wave_gpt", overrides={**_PURE, "wave.kernel": "elu1", "wave.mode": "linear"},
                             optimizer="rgd", loss="qfe", lr=1e-3, dropout=0.1),
    "pure_wave_sigmoid": dict(preset="wave_gpt", overrides={**_PURE, "wave.kernel": "sigmoid"}, optimizer="rgd",
                              loss="qfe", lr=1e-3, dropout=0.1),
    "pure_wave_exp": dict(preset="wave_gpt", overrides={**_PURE, "wave.kernel": "exp"}, optimizer="rgd",
                          loss="qfe", lr=1e-3, dropout=0.1),
}
_DEFAULTS = dict(weight_decay=0.01, warmup_steps=500, rgd_strength=0.3, rgd_warmup=500, qfe_lambda=0.05,
                 qfe_threshold=0.01)


def ablation_names() -> tuple[str, ...]:
    """Names of the seed's ablation experiments."""
    return tuple(ABLATIONS)


def make_ablation(name: str) -> dict[str, Any]:
    """The full settings of one ablation (defaults filled in); ValueError lists the valid names."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; valid choices: {', '.join(ABLATIONS)}")
    return {**_DEFAULTS, **ABLATIONS[name], "name": name}
