"""Language-model losses on logits (B, T, V) and integer targets (B, T)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy (natural log) over all positions: scalar."""
    if logits_BxTxV.shape[:-1] != targets_BxT.shape:
        raise ValueError(
            f"logits shape {logits_BxTxV.shape} does not match targets shape {targets_BxT.shape} "
            "(logits must be targets' shape plus a vocabulary axis)"
        )
    losses = optax.softmax_cross_entropy_with_integer_labels(logits_BxTxV, targets_BxT)
    return jnp.mean(losses)


# --- Wave-Native GPT: Quantum Field Entanglement (QFE) loss (spectral_gpt/physics_optim.py) ---

QFE_PROJECTION_DIM = 256


def qfe_projection(vocab_size: int, projection_dim: int = QFE_PROJECTION_DIM, seed: int = 0) -> np.ndarray:
    """Fixed random projection (vocab_size, projection_dim) / sqrt(projection_dim), float64 numpy,
    drawn with numpy's default_rng(seed): identical in both backends (the seed draws it lazily
    from torch's global RNG)."""
    return _qfe_projection(int(vocab_size), int(projection_dim), int(seed))


@functools.lru_cache(maxsize=4)
def _qfe_projection(vocab_size: int, projection_dim: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((vocab_size, projection_dim)) / np.sqrt(projection_dim)
    matrix.setflags(write=False)
    return matrix


def qfe_coherence(
    logits_BxTxV: jax.Array, targets_BxT: jax.Array, *, amplitude_threshold: float = 0.01,
    temperature: float = 1.0, projection=None, projection_dim: int | None = QFE_PROJECTION_DIM, projection_seed: int = 0,
) -> jax.Array:
    """QFE phase-coherence term: scalar.

    p = softmax(logits / temperature), y = one-hot(targets); when V > projection_dim (or a
    projection P (V, d) is given) p <- p P and y <- P[targets]; projection_dim=None never projects
    (the headline run's c04e261 version: full one-hot at any vocabulary). Real FFT over the sequence axis:
    a = rfft(p), b = rfft(y); mask = |a| > thr and |b| > thr;
    coherence = sum(|a| |b| (1 - cos(angle a - angle b)) mask) / (sum(mask) + 1e-8).
    """
    V = logits_BxTxV.shape[-1]
    if logits_BxTxV.shape[:-1] != targets_BxT.shape:
        raise ValueError(
            f"logits shape {logits_BxTxV.shape} does not match targets shape {targets_BxT.shape}"
        )
    dtype = logits_BxTxV.dtype
    probs = jax.nn.softmax(logits_BxTxV / temperature, axis=-1)
    if projection is None and projection_dim is not None and V > projection_dim:
        projection = qfe_projection(V, projection_dim, projection_seed)
    if projection is not None:
        if projection.ndim != 2 or projection.shape[0] != V:
            raise ValueError(
                f"QFE projection has shape {tuple(projection.shape)} but the logits have vocab {V}: "
                f"the projection must be (vocab={V}, d)"
            )
        P = jnp.asarray(projection, dtype)
        signal_out = probs @ P
        signal_tgt = jnp.take(P, targets_BxT, axis=0)
    else:
        signal_out = probs
        signal_tgt = jax.nn.one_hot(targets_BxT, V, dtype=dtype)
    a = jnp.fft.rfft(signal_out, axis=1)
    b = jnp.fft.rfft(signal_tgt, axis=1)
    mask = (jnp.abs(a) > amplitude_threshold) & (jnp.abs(b) > amplitude_threshold)
    # masked-out entries contribute exactly 0; swapping them for 1 keeps abs/angle gradients finite
    a = jnp.where(mask, a, 1.0)
    b = jnp.where(mask, b, 1.0)
    penalty = 1.0 - jnp.cos(jnp.angle(a) - jnp.angle(b))
    weighted = jnp.where(mask, jnp.abs(a) * jnp.abs(b) * penalty, 0.0)
    return jnp.sum(weighted) / (jnp.sum(mask.astype(dtype)) + 1e-8)


def qfe_loss(
    logits_BxTxV: jax.Array, targets_BxT: jax.Array, *, lambda_coherence: float = 0.05,
    amplitude_threshold: float = 0.01, temperature: float = 1.0, projection=None,
    projection_dim: int | None = QFE_PROJECTION_DIM, projection_seed: int = 0,
) -> jax.Array:
    """QFE loss = cross_entropy + lambda_coherence * qfe_coherence (defaults as physics_optim.py)."""
    ce = cross_entropy(logits_BxTxV, targets_BxT)
    coherence = qfe_coherence(
        logits_BxTxV, targets_BxT, amplitude_threshold=amplitude_threshold, temperature=temperature,
        projection=projection, projection_dim=projection_dim, projection_seed=projection_seed,
    )
    return ce + lambda_coherence * coherence
