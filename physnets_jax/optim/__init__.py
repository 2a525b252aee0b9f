"""Optimizers and gradient transforms (optax): one file per transform."""

from physnets_jax.optim.conditioning import condition_gradients
from physnets_jax.optim.rgd import resonant, rgd

__all__ = ["resonant", "rgd", "condition_gradients"]
