"""The trainer and its tools: train (the loop), cli (`physnets` / train_jax.py), data, checkpoint,
sharding, compare (fair comparisons), wave_ablations, diagnostics, plotting."""

from importlib import import_module

_SUBMODULES = ("train", "cli", "data", "checkpoint", "sharding", "compare", "wave_ablations", "diagnostics",
               "plotting", "memory")


def __getattr__(name):
    # physnets_jax.training.data etc. work after `import physnets_jax` alone (imported on first use)
    if name in _SUBMODULES:
        return import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'physnets_jax.training' has no attribute {name!r}")
