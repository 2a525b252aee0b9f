"""ShiftMax: an exponential-free, shift-invariant probability normaliser (physnets' own design).

lof310 publishes only ShiftMax's goals (the formula is proprietary). physnets defines, along `axis`
(n entries):

    z_i = x_i - mean(x)                               centre: removes any common shift
    f(z) = (z + sqrt(z^2 + 4)) / 2                    the "algebraic exponential"
    q_i = f(z_i)^k / sum_j f(z_j)^k                   k = power, a small integer (default 2)
    shiftmax(x)_i = floor / n + (1 - floor) * q_i     floor in [0, 1), default 0.01

f is smooth, strictly positive and strictly increasing, f(0) = 1 and f(z) f(-z) = 1 like exp,
but grows linearly (f(z) ~ z) and decays like 1 / |z| instead of exponentially, so probability
ratios grow polynomially (like |z|^(2k)) with logit gaps: heavy tails, hence no over-confidence.
Equivalently q = softmax(k asinh(z / 2)), which the tests use as an independent reference; the
code never evaluates exp, log or pow (f^k is k-1 multiplications). The floor makes the bounds
hold in floating point: floor/n <= p_i <= 1 - floor (n-1)/n.
Numerics: f is evaluated in the cancellation-free form h = (|z| + hypot(z, 2)) / 2 >= 1, f = h for
z >= 0 and 1 / h for z < 0 (both branches finite, so gradients are too), and f is divided by its
gradient-stopped max before the power (q is invariant to that), so nothing overflows for any
input with |x_i| < finfo.max / 2.

Non-finite input: NaN propagation (documented, jit-friendly, no host sync). A NaN or +-inf
anywhere in a slice along `axis` makes that whole slice NaN; other slices are unaffected.
Use `check_finite` (eager) or `jax.debug_nans` to turn that into an error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from physnets_core.checks import (
    DEFAULT_FLOOR,
    DEFAULT_POWER,
    GATE_NORMALISERS,
    check_floor,
    int_power,
)


def algebraic_exp(z: jax.Array) -> jax.Array:
    """(z + sqrt(z^2 + 4)) / 2 elementwise, evaluated without cancellation: (...) -> (...)."""
    u = jnp.where(z >= 0, z, -z)  # |z|, with derivative +1 at 0 (jnp.abs would give 0)
    h = 0.5 * u + 0.5 * jnp.hypot(u, 2.0)
    return jnp.where(z >= 0, h, 1.0 / h)


def shiftmax(
    x: jax.Array, axis: int = -1, *, floor: float = DEFAULT_FLOOR, power: int = DEFAULT_POWER
) -> jax.Array:
    """ShiftMax probabilities along `axis` (same shape as x; sums to 1 along axis)."""
    check_floor(floor, power)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"shiftmax needs floating-point input, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError(f"shiftmax needs at least one axis, got shape {x.shape}")
    n = x.shape[axis]
    z = x - jnp.sum(x / n, axis=axis, keepdims=True)  # mean as sum(x / n): no overflow
    f = algebraic_exp(z)
    # q is invariant to rescaling f, so divide by its (gradient-stopped) max first: f^k can
    # then neither overflow nor make the sum overflow, for any finite centred input.
    f = int_power(f / jax.lax.stop_gradient(jnp.max(f, axis=axis, keepdims=True)), power)
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




def gate_normaliser(name: str):
    """fn(x, axis=-1) -> probabilities for a gate / mixture-weight normaliser named `name`.

    For mixers that mix branches or experts (e.g. a `hybrid` gate): 'softmax' or 'shiftmax'
    (default floor and power). Not meant for attention scores or the training loss.
    """
    if name == "softmax":
        return lambda x, axis=-1: jax.nn.softmax(x, axis=axis)
    if name == "shiftmax":
        return lambda x, axis=-1: shiftmax(x, axis=axis)
    raise ValueError(
        f"gate normaliser {name!r} is not known; valid choices: {', '.join(GATE_NORMALISERS)}"
    )
