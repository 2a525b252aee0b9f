"""Residual stream updates (pure functions): the lof310 orthogonal-parallel split.

Torch twin of physnets_jax/ops/residual.py (same formulas, same names).
"""

from __future__ import annotations

import torch

from physnets_core.checks import NORM_FLOOR, VARIANTS, check_residual_args

__all__ = ["VARIANTS", "orthogonal_parallel_update", "projection_coefficient"]


def projection_coefficient(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """<x, y> / max(||x||^2, 1e-8) over the last axis: (..., D), (..., D) -> (..., 1)."""
    dot = torch.sum(x * y, dim=-1, keepdim=True)
    norm2 = torch.sum(x * x, dim=-1, keepdim=True)
    return dot / torch.clamp(norm2, min=NORM_FLOOR)


def orthogonal_parallel_update(
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    variant: str = "projection",
) -> torch.Tensor:
    """x + alpha (y - proj x) + beta parallel per token over the last axis: (..., D) -> (..., D)."""
    check_residual_args(x.shape, y.shape, torch.as_tensor(alpha).shape,
                        torch.as_tensor(beta).shape, variant)
    proj = projection_coefficient(x, y)
    orth = y - proj * x
    if variant == "projection":
        parallel = proj * x
    else:  # "reference": divides by sum_d(y) with no epsilon, as the published notebook does
        parallel = proj * y / torch.sum(y, dim=-1, keepdim=True)
    return x + alpha * orth + beta * parallel
