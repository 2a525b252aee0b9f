"""torch optimizers and optimizer wrappers, twins of physnets_jax.optim."""

from physnets_torch.optim.conditioning import ConditionedOptimizer
from physnets_torch.optim.rgd import RGD

__all__ = ["RGD", "ConditionedOptimizer"]
