"""Alias of physnets_jax.training.train (moved there with the other trainer modules); this module
*is* that one, so earlier imports keep working."""

import sys

import physnets_jax.training.train as _moved

sys.modules[__name__] = _moved
