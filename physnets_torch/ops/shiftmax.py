"""ShiftMax: exponential-free, shift-invariant probability normaliser (torch twin).

Same definition as physnets_jax/ops/shiftmax.py (see there for the formula and the guarantees).
Non-finite input: NaN propagation; `check_finite` raises ValueError eagerly.
"""

from __future__ import annotations

import torch

from physnets_core.checks import (
    DEFAULT_FLOOR,
    DEFAULT_POWER,
    GATE_NORMALISERS,
    check_floor,
    int_power,
)


def algebraic_exp(z: torch.Tensor) -> torch.Tensor:
    """(z + sqrt(z^2 + 4)) / 2 elementwise, evaluated without cancellation: (...) -> (...)."""
    u = torch.where(z >= 0, z, -z)  # |z|, with derivative +1 at 0
    h = 0.5 * u + 0.5 * torch.hypot(u, torch.full_like(u, 2.0))
    return torch.where(z >= 0, h, 1.0 / h)


def shiftmax(
    x: torch.Tensor, dim: int = -1, *, floor: float = DEFAULT_FLOOR, power: int = DEFAULT_POWER
) -> torch.Tensor:
    """ShiftMax probabilities along `dim` (same shape as x; sums to 1 along dim)."""
    check_floor(floor, power)
    if not torch.is_floating_point(x):
        raise ValueError(f"shiftmax needs floating-point input, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"shiftmax needs at least one axis, got shape {tuple(x.shape)}")
    n = x.shape[dim]
    z = x - torch.sum(x / n, dim=dim, keepdim=True)
    f = algebraic_exp(z)
    f = int_power(f / torch.amax(f, dim=dim, keepdim=True).detach(), power)  # no overflow
    q = f / torch.sum(f, dim=dim, keepdim=True)
    if floor == 0:
        return q
    return floor / n + (1.0 - floor) * q


def check_finite(x: torch.Tensor) -> None:
    """Raise ValueError if x holds NaN or inf (eager input check, host sync)."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        index = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise ValueError(
            f"shiftmax input must be finite, got {float(x[index])} at index {index} "
            f"({int(bad.sum())} non-finite entries of {x.numel()})"
        )


def gate_normaliser(name: str):
    """fn(x, dim=-1) -> probabilities for a gate / mixture-weight normaliser named `name`.

    Twin of physnets_jax.ops.shiftmax.gate_normaliser: 'softmax' or 'shiftmax'.
    """
    if name == "softmax":
        return lambda x, dim=-1: torch.softmax(x, dim=dim)
    if name == "shiftmax":
        return lambda x, dim=-1: shiftmax(x, dim=dim)
    raise ValueError(
        f"gate normaliser {name!r} is not known; valid choices: {', '.join(GATE_NORMALISERS)}"
    )
