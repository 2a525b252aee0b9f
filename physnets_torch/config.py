"""Alias of physnets_core.config (the framework-free ModelConfig and presets), kept so that
earlier imports keep working: this module *is* physnets_core.config."""

import sys

import physnets_core.config as _core_config

sys.modules[__name__] = _core_config
