"""Alias of physnets_jax.training.cli (moved there with the other trainer modules); this module
*is* that one, so earlier imports keep working."""

import sys

import physnets_jax.training.cli as _moved

sys.modules[__name__] = _moved
