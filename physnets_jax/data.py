"""Alias of physnets_jax.training.data (moved there with the other trainer modules); this module
*is* that one, so earlier imports keep working."""

import sys

import physnets_jax.training.data as _moved

sys.modules[__name__] = _moved
