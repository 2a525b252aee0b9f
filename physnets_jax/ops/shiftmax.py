"""ShiftMax: an exponential-free, shift-invariant probability normaliser (physnets' own design).

lof310 publishes only ShiftMax's goals (the formula is proprietary). physnets defines, along `axis`
(n entries):

    z_i = x_i - mean(x)                               centre: removes any common shift
    f(z) = (z + sqrt(z^2 + 4)) / 2                    the "algebraic exponential"
    q_i = f(z_i) / sum_j f(z_j)
    shiftmax(x)_i = floor / n + (1 - floor) * q_i     floor in [0, 1), default 0.01

f is smooth, strictly positive and strictly increasing, f(0) = 1 and f(z) f(-z) = 1 like exp,
but grows linearly (f(z) ~ z) and decays like 1 / |z| instead of exponentially, so probability
ratios grow polynomially with logit gaps: heavy tails, hence no over-confidence. The floor makes
the bounds hold in floating point: floor/n <= p_i <= 1 - floor (n-1)/n.
It is evaluated in the cancellation-free form h = (|z| + hypot(z, 2)) / 2 >= 1,
f = h for z >= 0 and 1 / h for z < 0, so f never rounds to 0 and the gradient is finite.

Non-finite input: NaN propagation (documented, jit-friendly, no host sync). A NaN or +-inf
anywhere in a slice along `axis` makes that whole slice NaN; other slices are unaffected.
Use `check_finite` (eager) or `jax.debug_nans` to turn that into an error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_FLOOR = 0.01


def check_floor(floor: float) -> None:
    """Raise ValueError unless 0 <= floor < 1 (a Python number)."""
    if not 0.0 <= float(floor) < 1.0:
        raise ValueError(f"floor={floor} must be in [0, 1)")


def algebraic_exp(z: jax.Array) -> jax.Array:
    """(z + sqrt(z^2 + 4)) / 2 elementwise, evaluated without cancellation: (...) -> (...)."""
    u = jnp.where(z >= 0, z, -z)  # |z|, with derivative +1 at 0 (jnp.abs would give 0)
    h = 0.5 * u + 0.5 * jnp.hypot(u, 2.0)
    return jnp.where(z >= 0, h, 1.0 / h)


def shiftmax(x: jax.Array, axis: int = -1, *, floor: float = DEFAULT_FLOOR) -> jax.Array:
    """ShiftMax probabilities along `axis` (same shape as x; sums to 1 along axis)."""
    check_floor(floor)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"shiftmax needs floating-point input, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"shiftmax needs at least one axis, got shape {x.shape}")
    n = x.shape[axis]
    z = x - jnp.sum(x / n, axis=axis, keepdims=True)  # mean as sum(x / n): no overflow
    f = algebraic_exp(z)
    q = f / jnp.sum(f, axis=axis, keepdims=True)
    if floor == 0:
        return q
    return floor / n + (1.0 - floor) * q


def check_finite(x) -> None:
    """Raise ValueError if x (concrete, not traced) holds NaN or inf; for eager input checks."""
    values = np.asarray(x)
    bad = ~np.isfinite(values)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"shiftmax input must be finite, got {values[index]} at index {index} "
            f"({int(bad.sum())} non-finite entries of {values.size})"
        )
