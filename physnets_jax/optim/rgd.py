"""Resonant gating (Wave-Native GPT's RGD, spectral_gpt/physics_optim.py) as an optax transform.

For every update U of rank >= 2 (reshaped to (shape[0], -1)) with its parameter W (same shape):

    Wn  = |FFT2 W| / (max |FFT2 W| + eps)        Un = |FFT2 U| / (max |FFT2 U| + eps)
    rho = alpha * sqrt(Wn * Un + eps) + (1 - alpha)
    U  <- Re(IFFT2(FFT2(U) * rho))
    alpha = min(1, step / warmup_steps) * resonance_strength   (step counts from 1; warmup <= 0: 1)

Rank 0/1 updates, and every update while alpha == 0, pass through unchanged. `resonant` gates
whatever update reaches it, so

    optax.chain(optax.scale_by_adam(b1, b2, eps), resonant(...), optax.add_decayed_weights(wd),
                optax.scale_by_learning_rate(lr))

is RGD (`rgd(...)` builds exactly that) and other chains are possible. The 2-D DFT commutes with
transposition, so Flax's (in, out) kernels are gated exactly like torch's (out, in) weights.
The FFT runs in the update's precision, promoted to at least float32 (the seed casts to float32).
Numeric arguments may be injected with `optax.inject_hyperparams`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ResonantState(NamedTuple):
    """Number of updates seen so far (int32)."""

    count: jax.Array


def resonance_alpha(count, resonance_strength, warmup_steps) -> jax.Array:
    """alpha = min(1, count / warmup_steps) * resonance_strength (resonance_strength if warmup <= 0)."""
    fdtype = jnp.promote_types(jnp.result_type(float), jnp.float32)  # float64 when x64 is on
    count = jnp.asarray(count).astype(fdtype)
    warmup = jnp.asarray(warmup_steps).astype(fdtype)
    ramp = jnp.where(warmup > 0, jnp.minimum(1.0, count / jnp.maximum(warmup, 1.0)), 1.0)
    return ramp * jnp.asarray(resonance_strength).astype(fdtype)


def resonant_gate(update: jax.Array, param: jax.Array, alpha, eps: float = 1e-8) -> jax.Array:
    """The gated update Re(IFFT2(FFT2(U) rho)) of one tensor (unchanged for rank < 2 or alpha == 0)."""
    if update.ndim < 2:
        return update
    shape, dtype = update.shape, update.dtype
    ct = jnp.promote_types(dtype, jnp.float32)
    alpha = jnp.asarray(alpha).astype(ct)
    u_fft = jnp.fft.fft2(update.reshape(shape[0], -1).astype(ct))
    w_fft = jnp.fft.fft2(param.reshape(shape[0], -1).astype(ct))
    u_mag, w_mag = jnp.abs(u_fft), jnp.abs(w_fft)
    u_n = u_mag / (jnp.max(u_mag) + eps)
    w_n = w_mag / (jnp.max(w_mag) + eps)
    rho = alpha * jnp.sqrt(w_n * u_n + eps) + (1 - alpha)
    gated = jnp.real(jnp.fft.ifft2(u_fft * rho)).reshape(shape).astype(dtype)
    return jnp.where(alpha > 0, gated, update)


def resonant(
    resonance_strength: float = 0.5, warmup_steps: int = 1000, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Gate each incoming update by its resonance with the parameter's 2-D spectrum (module doc)."""

    def init_fn(params):
        del params
        return ResonantState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("resonant needs params: tx.update(updates, state, params) (the gate uses W's spectrum)")
        count = optax.safe_increment(state.count)
        alpha = resonance_alpha(count, resonance_strength, warmup_steps)
        updates = jax.tree.map(lambda u, p: resonant_gate(u, p, alpha, eps), updates, params)
        return updates, ResonantState(count=count)

    return optax.GradientTransformation(init_fn, update_fn)


def rgd(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    resonance_strength: float = 0.5,
    warmup_steps: int = 1000,
    weight_decay: float = 0.01,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """Resonant Gradient Descent: bias-corrected Adam direction, resonant gate, decoupled weight
    decay (every parameter), learning rate: p <- p (1 - lr wd) - lr gate(m_hat / (sqrt(v_hat) + eps)).
    Defaults as physics_optim.py (its helper create_physics_optimizer uses lr 3e-4, strength 0.3,
    warmup 500)."""
    return optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
        resonant(resonance_strength=resonance_strength, warmup_steps=warmup_steps, eps=eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
